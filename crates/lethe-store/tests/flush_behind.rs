//! Ingestion past the limit of unflushed events waits until a flush makes room, however long
//! flushes keep failing, rather than let the memtable grow: it returns only once a segment
//! holds what was waiting. One test in its own process, since the fault plan is read once per
//! process.

mod common;

use std::time::Duration;

use common::{open_with, user_events};
use lethe_store::StoreConfig;

#[test]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature (scripts/test.sh)"
)]
fn ingestion_at_the_unflushed_limit_waits_for_a_flush_to_make_room() {
    // The first three segment writes fail: the background flush retries with backoff.
    std::env::set_var("LETHE_FAULTS", "segment_write@1-3");
    let tmp = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        flush_events: 10,
        max_unflushed: 10,
        flush_behind_wait: Duration::from_secs(3600),
        ..StoreConfig::default()
    };
    let (_, store) = open_with(tmp.path(), config);
    store.ingest(1, user_events(0..10)).unwrap();
    // At the limit: this batch waits for the flush that finally succeeds.
    store.ingest(1, user_events(10..15)).unwrap();
    let segments = store.snapshot(1, None).segments;
    assert_eq!(
        segments.iter().map(|s| s.record.rows).sum::<i64>(),
        10,
        "the batch went in only once a flush had written the first ten events"
    );
    assert_eq!(store.events(1, None).unwrap().len(), 15);
    store.shutdown().unwrap();
}
