//! A flush that fails (the disk is full) loses nothing and leaves nothing behind: every retry
//! finds the same WAL file, and the next flush that can write commits every event. One test
//! in its own process, since the fault plan is read once per process.

use std::sync::Arc;

use lethe_event::{parse_event, Shape};
use lethe_meta::MetaStore;
use lethe_store::{DataDir, Store, StoreConfig};

#[test]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature (scripts/test.sh)"
)]
fn failed_flushes_leave_no_wal_files_behind_and_lose_nothing() {
    // The first three segment files cannot be created.
    std::env::set_var("LETHE_FAULTS", "segment_write@1-3");
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::new(tmp.path());
    data.create().unwrap();
    let meta = Arc::new(MetaStore::open(&data.meta_db()).unwrap());
    meta.bootstrap("admin@localhost", Some("pw")).unwrap();
    let store = Store::open(data, meta, StoreConfig::default()).unwrap();
    let events = (0..10)
        .map(|i| {
            parse_event(
                &format!(r#"{{"event_type":"a","user_id":"user-{i:03}"}}"#),
                5,
                Shape::Event,
            )
            .unwrap()
        })
        .collect();
    store.ingest(1, events).unwrap();
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
