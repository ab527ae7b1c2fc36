//! A partition rewrite whose disk fills up half-way (one new segment staged, the next cannot
//! be written) changes nothing and leaves nothing behind, and a later rewrite of the same
//! partition commits. One test in its own process, since the fault plan is read once per
//! process.

mod common;

use common::{open_with, segment_files};
use lethe_event::{parse_event, ParsedEvent, Shape};
use lethe_store::{OpenSegment, Output, StoreConfig};

/// Ten export lines of one day, for users `user-<part>-<n>`: one import, one segment.
fn part(part: usize) -> Vec<ParsedEvent> {
    (0..10)
        .map(|i| {
            let line = format!(
                r#"{{"event_type":"a","user_id":"user-{part}-{i}","server_upload_time":"2026-11-30 12:00:00.000000"}}"#
            );
            parse_event(&line, 5, Shape::Export).unwrap()
        })
        .collect()
}

/// New contents of `source` with every row and column kept.
fn unchanged(source: OpenSegment) -> Output {
    Output::Columns {
        source,
        drop: Vec::new(),
        replace: Default::default(),
    }
}

#[test]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature (scripts/test.sh)"
)]
fn a_rewrite_that_cannot_write_its_second_segment_leaves_nothing_behind() {
    // The three imports write segments 1 to 3; the rewrite's second new segment is the fifth.
    std::env::set_var("LETHE_FAULTS", "segment_write@5-5");
    let tmp = tempfile::tempdir().unwrap();
    let (_, store) = open_with(tmp.path(), StoreConfig::default());
    for p in 0..3 {
        store.import(1, part(p)).unwrap();
    }
    let before = store.events(1, None).unwrap();
    let objects = || segment_files(&tmp.path().join("segments"));
    let live = objects();
    assert_eq!(live.len(), 3);
    let day = store.snapshot(1, None).segments[0].record.day.clone();
    {
        let rewrite = store.begin_rewrite(1, &day);
        assert_eq!(rewrite.live().len(), 3);
        let first = rewrite.live()[0].open().unwrap();
        rewrite.stage(unchanged(first)).unwrap();
        assert_eq!(objects().len(), 4, "the first new segment is staged");
        let second = rewrite.live()[1].open().unwrap();
        let full = rewrite.stage(unchanged(second)).unwrap_err();
        assert!(full.unavailable().is_some(), "{full}");
    }
    assert_eq!(objects(), live, "what the rewrite staged went with it");
    assert_eq!(store.events(1, None).unwrap(), before);

    // With room again, the same partition is rewritten and committed.
    let rewrite = store.begin_rewrite(1, &day);
    for segment in rewrite.live().to_vec() {
        rewrite.stage(unchanged(segment.open().unwrap())).unwrap();
    }
    let retired = rewrite.commit(Default::default(), None).unwrap();
    store.await_unlinked(retired).unwrap();
    let after = objects();
    assert_eq!(after.len(), 3);
    assert!(after.iter().all(|f| !live.contains(f)), "three new objects");
    assert_eq!(store.events(1, None).unwrap(), before);
    store.shutdown().unwrap();
}
