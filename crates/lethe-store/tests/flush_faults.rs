//! A flush that fails (the disk is full) loses nothing and leaves nothing behind: every retry
//! finds the same WAL file, and the next flush that can write commits every event. One test
//! in its own process, since the fault plan is read once per process.

mod common;

use common::{open_with, user_events};
use lethe_store::StoreConfig;

#[test]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature (scripts/test.sh)"
)]
fn failed_flushes_leave_no_wal_files_behind_and_lose_nothing() {
    // The first three segment files cannot be created.
    std::env::set_var("LETHE_FAULTS", "segment_write@1-3");
    let tmp = tempfile::tempdir().unwrap();
    let (_, store) = open_with(tmp.path(), StoreConfig::default());
    store.ingest(1, user_events(0..10)).unwrap();
    let wal_files = || std::fs::read_dir(tmp.path().join("wal")).unwrap().count();
    for _ in 0..3 {
        let failed = store.flush().unwrap_err();
        assert!(failed.unavailable().is_some(), "{failed}");
        assert_eq!(
            wal_files(),
            2,
            "the sealed file and one empty successor, not one per retry"
        );
    }
    store.flush().unwrap();
    assert_eq!(wal_files(), 1);
    assert_eq!(store.events(1, None).unwrap().len(), 10);
    assert_eq!(store.snapshot(1, None).segments.len(), 1);
    store.shutdown().unwrap();
}
