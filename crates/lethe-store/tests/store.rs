//! The store's durability and visibility promises, through its public API.

mod common;

use std::sync::Arc;

use arrow_array::{Array, StringArray};
use common::{files_under, open_with, segment_files};
use lethe_event::{parse_event, ParsedEvent, Shape};
use lethe_meta::{Commit, MetaStore, ProfileRecord, Shard};
use lethe_store::{
    base_column, AckDeadline, CompactionPolicy, DataDir, PropertyKind, ScanRequest, Store,
    StoreConfig, StoreError, Unavailable, WalPlace,
};

fn open(dir: &std::path::Path) -> (Arc<MetaStore>, Store) {
    open_with(dir, StoreConfig::default())
}

fn event(json: &str) -> ParsedEvent {
    parse_event(json, 5, Shape::Event).unwrap()
}

fn all_events(store: &Store, project: i64) -> Vec<lethe_event::Event> {
    store.events(project, None).unwrap()
}

/// Stages, for each segment of `rewrite`, its contents without its first event-property
/// column (the first key by name: catalog ids are given in name order).
fn stage_without_first_property(rewrite: &lethe_store::PartitionRewrite) {
    for segment in rewrite.live() {
        let source = segment.open().unwrap();
        let column = PropertyKind::Event.column(source.segment.record.event_properties[0]);
        let output = lethe_store::Output::Columns {
            source,
            drop: vec![column],
            replace: Default::default(),
        };
        rewrite.stage(output).unwrap();
    }
}

#[test]
fn events_survive_flush_and_reopen_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, store) = open(tmp.path());
    let batch = vec![
        event(
            r#"{"event_type":"signup","user_id":"user-1","event_properties":{"plan":"pro","n":3},"user_properties":{"$set":{"age":30}},"platform":"iOS","price":1.5,"session_id":7}"#,
        ),
        event(
            r#"{"event_type":"click","device_id":"device-1","event_properties":{"button":"ok"}}"#,
        ),
    ];
    assert_eq!(store.ingest(1, batch).unwrap().stored, 2);
    let before = all_events(&store, 1);
    assert_eq!(before.len(), 2);
    assert!(
        store.snapshot(1, None).segments.is_empty(),
        "not flushed yet"
    );

    store.flush().unwrap();
    let snap = store.snapshot(1, None);
    assert_eq!(snap.segments.len(), 1);
    assert!(snap.memtable.is_empty());
    assert_eq!(all_events(&store, 1), before, "flush changes no event");
    store.shutdown().unwrap();

    let (_, store) = open(tmp.path());
    assert_eq!(all_events(&store, 1), before, "reopen changes no event");
    let signup = before.iter().find(|e| e.event_type == "signup").unwrap();
    assert_eq!(
        signup.user_properties.as_slice(),
        &[("age".to_string(), "30".to_string())]
    );
}

#[test]
fn insert_ids_in_segments_keep_deduplicating_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    // No compaction: the start reads more segments than it holds while its resolver loads.
    let config = || StoreConfig {
        compaction: CompactionPolicy {
            min_segments: usize::MAX,
            ..CompactionPolicy::default()
        },
        ..StoreConfig::default()
    };
    let (_, store) = open_with(tmp.path(), config());
    // Keyed by device, and by user for events without a device.
    let batch = || {
        (0..300)
            .map(|i| {
                let who = match i % 2 {
                    0 => format!(r#""device_id":"device-{i}""#),
                    _ => format!(r#""user_id":"user-{i}""#),
                };
                event(&format!(
                    r#"{{"event_type":"e","insert_id":"id-{i}",{who}}}"#
                ))
            })
            .collect::<Vec<_>>()
    };
    let mut events = batch().into_iter();
    for _ in 0..20 {
        let part: Vec<_> = events.by_ref().take(15).collect();
        assert_eq!(store.ingest(1, part).unwrap().stored, 15);
        store.flush().unwrap();
    }
    assert_eq!(store.snapshot(1, None).segments.len(), 20);
    store.shutdown().unwrap();

    let (meta, store) = open_with(tmp.path(), config());
    let again = store.ingest(1, batch()).unwrap();
    assert_eq!((again.stored, again.duplicates), (0, 300));
    // The same insert_id from another device is another event.
    let other = event(r#"{"event_type":"e","insert_id":"id-0","device_id":"device-x"}"#);
    assert_eq!(store.ingest(1, vec![other]).unwrap().stored, 1);
    assert_eq!(all_events(&store, 1).len(), 301);
    store.shutdown().unwrap();

    // A start whose metadata cannot load stops the segment reads it began (they wait for
    // the resolver), and fails rather than hangs.
    let damaged = ProfileRecord {
        project_id: 1,
        amplitude_id: 999_999,
        user_id: None,
        properties: "{".into(),
        as_of: 0,
    };
    meta.commit(&Commit {
        profiles: vec![damaged],
        ..Default::default()
    })
    .unwrap();
    let failed = Store::open(DataDir::new(tmp.path()), meta, config());
    assert!(matches!(failed, Err(StoreError::CorruptMetadata { .. })));
}

#[test]
fn wal_replay_restores_unflushed_events_and_profiles() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let (_, store) = open(tmp.path());
        store
            .ingest(1, vec![event(r#"{"event_type":"a","user_id":"user-1","user_properties":{"$add":{"n":2}},"insert_id":"x1"}"#)])
            .unwrap();
        // Dropped without shutdown: as after kill -9, only the WAL has the event.
        std::mem::forget(store);
    }
    let (_, store) = open(tmp.path());
    let events = all_events(&store, 1);
    assert_eq!(events.len(), 1);
    let retry = store
        .ingest(
            1,
            vec![event(
                r#"{"event_type":"a","user_id":"user-1","insert_id":"x1"}"#,
            )],
        )
        .unwrap();
    assert_eq!(retry.duplicates, 1, "insert_id survives the restart");
    store
        .ingest(
            1,
            vec![event(
                r#"{"event_type":"b","user_id":"user-1","user_properties":{"$add":{"n":3}}}"#,
            )],
        )
        .unwrap();
    let b = all_events(&store, 1)
        .into_iter()
        .find(|e| e.event_type == "b")
        .unwrap();
    assert_eq!(
        b.user_properties.as_slice(),
        &[("n".to_string(), "5".to_string())]
    );
}

#[test]
fn compaction_merges_small_segments_of_a_day() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, store) = open(tmp.path());
    for i in 0..5 {
        let json = format!(
            r#"{{"event_type":"e{i}","user_id":"user-{i}","event_properties":{{"k{i}":{i}}}}}"#
        );
        store.ingest(1, vec![event(&json)]).unwrap();
        store.flush().unwrap();
    }
    let before = all_events(&store, 1);
    assert_eq!(store.snapshot(1, None).segments.len(), 5);
    store.compact().unwrap();
    let snap = store.snapshot(1, None);
    assert_eq!(snap.segments.len(), 1);
    drop(snap);
    assert_eq!(all_events(&store, 1), before);
    let files = segment_files(&tmp.path().join("segments"));
    assert_eq!(files.len(), 1, "retired segments are unlinked: {files:?}");
    let manifests = files_under(&tmp.path().join("segments/manifests"));
    assert_eq!(manifests.len(), 1, "older published manifests are removed");
    let published: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifests[0]).unwrap()).unwrap();
    assert_eq!(published["version"], 6, "five flushes and a compaction");
    let named: Vec<std::path::PathBuf> = published["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["path"].as_str().unwrap().into())
        .collect();
    assert_eq!(
        named, files,
        "the published manifest names exactly the live files"
    );
}

/// A segment this process wrote is read by byte ranges (its footer, then the column chunks a
/// read needs); a reopened store reads each segment whole first, to check its checksum.
/// Both must return every value, whatever the segment's size.
#[test]
fn large_segments_read_the_same_by_ranges_and_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, store) = open(tmp.path());
    let batch: Vec<ParsedEvent> = (0..40_000)
        .map(|i| {
            event(&format!(
                r#"{{"event_type":"e{}","user_id":"user-{i}","event_properties":{{"k{}":"v{i}-{}"}}}}"#,
                i % 7,
                i % 13,
                "x".repeat(i % 50)
            ))
        })
        .collect();
    store.ingest(1, batch).unwrap();
    store.flush().unwrap();
    let segments = store.snapshot(1, None).segments;
    assert!(
        segments[0].record.bytes > 256 << 10,
        "larger than one footer fetch"
    );
    let by_ranges = all_events(&store, 1);
    assert_eq!(by_ranges.len(), 40_000);
    let columns = ["event_type".to_string()];
    assert_eq!(
        segments[0].read_batches(Some(&columns)).unwrap()[0].num_columns(),
        1
    );
    drop(segments);
    store.shutdown().unwrap();
    let (_, store) = open(tmp.path());
    assert_eq!(
        all_events(&store, 1),
        by_ranges,
        "whole reads equal range reads"
    );
}

/// A partition rewrite is invisible until its commit: dropped before it, it deletes what it
/// staged and changes nothing; committed, it swaps the segments and the old object goes.
#[test]
fn a_rewrite_changes_nothing_until_its_commit_and_an_abandoned_one_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, store) = open(tmp.path());
    let batch = vec![
        event(
            r#"{"event_type":"a","user_id":"user-1","event_properties":{"email":"x@y","plan":"pro"}}"#,
        ),
        event(r#"{"event_type":"b","user_id":"user-2","event_properties":{"plan":"free"}}"#),
    ];
    store.ingest(1, batch).unwrap();
    store.flush().unwrap();
    let before = all_events(&store, 1);
    let objects = || segment_files(&tmp.path().join("segments"));
    let live = objects();
    assert_eq!(live.len(), 1);
    let day = store.snapshot(1, None).segments[0].record.day.clone();
    // A rewrite that drops the `email` column (catalog ids are given in name order: `email`
    // has the segment's first key id), staged and not yet committed.
    let staged_without_email = || {
        let rewrite = store.begin_rewrite(1, &day);
        stage_without_first_property(&rewrite);
        rewrite
    };
    {
        let _rewrite = staged_without_email();
        assert_eq!(objects().len(), 2, "staged: written, not live");
        assert_eq!(all_events(&store, 1), before, "invisible before the commit");
    }
    assert_eq!(
        objects(),
        live,
        "an abandoned rewrite deletes what it staged"
    );
    assert_eq!(all_events(&store, 1), before);

    let rewrite = staged_without_email();
    let retired = rewrite.commit(Default::default(), None).unwrap();
    store.await_unlinked(retired).unwrap();
    let after = objects();
    assert_eq!(after.len(), 1);
    assert_ne!(after, live, "a new object replaced the old one");
    let changed: Vec<_> = all_events(&store, 1)
        .into_iter()
        .map(|e| (e.event_type, e.event_properties))
        .collect();
    assert_eq!(
        changed,
        vec![
            (
                "a".to_string(),
                vec![("plan".to_string(), "\"pro\"".to_string())]
            ),
            (
                "b".to_string(),
                vec![("plan".to_string(), "\"free\"".to_string())]
            ),
        ]
    );
}

/// A rewrite reads and stages without holding the manifest: a compaction that merges its
/// source meanwhile wins, and the rewrite's commit then changes nothing (`StaleManifest`),
/// deletes what it staged, and leaves the merged events whole, so that the caller plans
/// the partition again instead of bringing back what the merge replaced.
/// A rewrite's retired objects go as soon as nobody reads them: those no reader holds at
/// once (in one request), one a reader still holds once the reader lets go, and until then
/// the reader still reads it whole.
#[test]
fn a_retired_segment_goes_when_its_last_reader_lets_go() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, store) = open(tmp.path());
    for user in ["user-1", "user-2"] {
        let json = format!(
            r#"{{"event_type":"a","user_id":"{user}","event_properties":{{"email":"x@y"}}}}"#
        );
        store.ingest(1, vec![event(&json)]).unwrap();
        store.flush().unwrap();
    }
    let objects = || segment_files(&tmp.path().join("segments"));
    let live = objects();
    assert_eq!(live.len(), 2);
    let day = store.snapshot(1, None).segments[0].record.day.clone();
    let rewrite = store.begin_rewrite(1, &day);
    stage_without_first_property(&rewrite);
    let reader = store.snapshot(1, None).segments[0].clone();
    let retired = rewrite.commit(Default::default(), None).unwrap();
    std::thread::scope(|scope| {
        let unlinking = scope.spawn(|| store.await_unlinked(retired));
        let rows: usize = reader
            .read_batches(None)
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(rows, 1, "a reader still reads a retired segment it holds");
        assert!(
            !unlinking.is_finished(),
            "the wait lasts while a reader holds a retired segment"
        );
        drop(reader);
        unlinking.join().unwrap().unwrap();
    });
    let after = objects();
    assert_eq!(after.len(), 2, "the two new objects, and nothing else");
    assert!(after.iter().all(|o| !live.contains(o)), "{after:?}");
}

/// A store that deletes a retired segment under its readers at once (no grace).
fn open_without_reader_grace(dir: &std::path::Path) -> (Arc<MetaStore>, Store) {
    let config = StoreConfig {
        reader_grace: std::time::Duration::ZERO,
        ..StoreConfig::default()
    };
    open_with(dir, config)
}

/// A reader that holds a retired segment past the readers' grace (a slow client's export)
/// does not keep it on disk: the object is deleted under it, and its next read fails (an
/// error, not a damaged segment).
#[test]
fn a_reader_past_its_grace_does_not_keep_a_retired_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, store) = open_without_reader_grace(tmp.path());
    let json = r#"{"event_type":"a","user_id":"user-1","event_properties":{"email":"x@y"}}"#;
    store.ingest(1, vec![event(json)]).unwrap();
    store.flush().unwrap();
    let objects = || segment_files(&tmp.path().join("segments"));
    let old = objects();
    let day = store.snapshot(1, None).segments[0].record.day.clone();
    let rewrite = store.begin_rewrite(1, &day);
    stage_without_first_property(&rewrite);
    let reader = store.snapshot(1, None).segments[0].clone();
    let retired = rewrite.commit(Default::default(), None).unwrap();
    store.await_unlinked(retired).unwrap();
    let now = objects();
    assert_eq!(now.len(), 1);
    assert!(!old.contains(&now[0]), "the retired object is gone");
    assert!(
        reader.read_batches(None).is_err(),
        "the reader's next read fails"
    );
    assert!(store.damaged_segments().is_empty(), "gone, not damaged");
    drop(reader);
    assert_eq!(objects(), now);
}

/// A segment that compaction merged away, still held by a reader, still holds its events:
/// a deletion task's last step (`await_no_leftovers`) waits for it as for its own, and past
/// the readers' grace deletes it under the reader.
#[test]
fn a_task_does_not_end_while_a_merged_segment_is_held() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, store) = open_without_reader_grace(tmp.path());
    for i in 0..4 {
        let json = format!(r#"{{"event_type":"a","user_id":"user-{i}"}}"#);
        store.ingest(1, vec![event(&json)]).unwrap();
        store.flush().unwrap();
    }
    let objects = || segment_files(&tmp.path().join("segments"));
    let small = objects();
    let reader = store.snapshot(1, None).segments[0].clone();
    store.compact().unwrap();
    let merged = store.snapshot(1, None).segments;
    assert_eq!(merged.len(), 1);
    assert_eq!(
        objects().len(),
        2,
        "the merged segment, and the one a reader holds"
    );
    store.await_no_leftovers(2).unwrap();
    assert_eq!(
        objects().len(),
        2,
        "another project's task leaves it to its reader"
    );
    store.await_no_leftovers(1).unwrap();
    let now = objects();
    assert_eq!(now.len(), 1, "{now:?}");
    assert!(!small.contains(&now[0]));
    assert!(reader.read_batches(None).is_err());
}

#[test]
fn a_rewrite_whose_source_was_merged_meanwhile_commits_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, store) = open(tmp.path());
    for i in 0..4 {
        let json = format!(
            r#"{{"event_type":"e{i}","user_id":"user-{i}","event_properties":{{"email":"{i}@x","plan":"pro"}}}}"#
        );
        store.ingest(1, vec![event(&json)]).unwrap();
        store.flush().unwrap();
    }
    let before = all_events(&store, 1);
    let day = store.snapshot(1, None).segments[0].record.day.clone();
    let rewrite = store.begin_rewrite(1, &day);
    assert_eq!(rewrite.live().len(), 4);
    let source = rewrite.live()[0].open().unwrap();
    rewrite
        .stage(lethe_store::Output::Columns {
            source,
            drop: vec![],
            replace: Default::default(),
        })
        .unwrap();
    store.compact().unwrap();
    assert_eq!(store.snapshot(1, None).segments.len(), 1, "merged");
    let stale = rewrite.commit(Default::default(), None);
    assert!(
        matches!(
            stale,
            Err(StoreError::Meta(lethe_meta::MetaError::StaleManifest(_)))
        ),
        "{:?}",
        stale.map(|r| r.len())
    );
    assert_eq!(store.snapshot(1, None).segments.len(), 1);
    assert_eq!(
        segment_files(&tmp.path().join("segments")).len(),
        1,
        "the staged object is deleted, and the merged sources once the rewrite let them go"
    );
    assert_eq!(all_events(&store, 1), before);
}

/// The values of `key` over every scanned batch, sorted, with the event type of each row.
fn scanned_values(
    store: &Store,
    kind: PropertyKind,
    key: &str,
    time: &'static str,
    window: (i64, i64),
) -> Vec<(String, String)> {
    let scanned = store
        .scan(
            1,
            &ScanRequest {
                columns: &[base_column::EVENT_TYPE],
                properties: &[(kind, key)],
                time,
                window,
            },
        )
        .unwrap();
    let mut found = Vec::new();
    for batch in &scanned.batches {
        let types = batch
            .column_by_name(base_column::EVENT_TYPE)
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap()
            .clone();
        if let Some(values) = scanned.values(batch, kind, key) {
            for row in 0..batch.num_rows() {
                if values.is_valid(row) {
                    found.push((types.value(row).to_string(), values.value(row).to_string()));
                }
            }
        }
    }
    found.sort();
    found
}

#[test]
fn a_scan_reads_segments_and_unflushed_events_through_one_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, store) = open(tmp.path());
    let flushed = vec![
        event(r#"{"event_type":"a","user_id":"user-1","event_properties":{"plan":"pro"}}"#),
        event(r#"{"event_type":"b","user_id":"user-2","event_properties":{"other":1}}"#),
    ];
    store.ingest(1, flushed).unwrap();
    store.flush().unwrap();
    // Unflushed: a key the catalog has, and one it does not know yet.
    let unflushed = vec![event(
        r#"{"event_type":"c","user_id":"user-3","event_properties":{"plan":"free","fresh":"x"},"user_properties":{"tier":"gold"}}"#,
    )];
    store.ingest(1, unflushed).unwrap();
    let all = (i64::MIN, i64::MAX);
    let upload = base_column::SERVER_UPLOAD_TIME;
    assert_eq!(
        scanned_values(&store, PropertyKind::Event, "plan", upload, all),
        [
            ("a".into(), "\"pro\"".into()),
            ("c".into(), "\"free\"".into())
        ]
    );
    assert_eq!(
        scanned_values(&store, PropertyKind::Event, "fresh", upload, all),
        [("c".to_string(), "\"x\"".to_string())]
    );
    assert_eq!(
        scanned_values(
            &store,
            PropertyKind::User,
            "tier",
            base_column::EVENT_TIME,
            all
        ),
        [("c".to_string(), "\"gold\"".to_string())]
    );
    assert!(scanned_values(&store, PropertyKind::Event, "never", upload, all).is_empty());
    // A window on upload time before every event reads no partition and no unflushed event.
    assert!(scanned_values(&store, PropertyKind::Event, "plan", upload, (0, 1)).is_empty());
}

#[test]
fn a_writer_whose_lease_ran_out_acknowledges_nothing_and_the_next_replays_what_it_did() {
    use std::time::{Duration, Instant};
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::new(tmp.path());
    data.create().unwrap();
    let meta = Arc::new(MetaStore::open(&data.meta_db()).unwrap());
    meta.bootstrap("admin@localhost", Some("pw")).unwrap();
    let lease = AckDeadline::default();
    let config = StoreConfig {
        wal: WalPlace::Segments,
        ack_deadline: Some(lease.clone()),
        ..StoreConfig::default()
    };
    let store = Store::open(data.clone(), meta.clone(), config.clone()).unwrap();
    let send = |name: &str| {
        store.ingest(
            1,
            vec![event(&format!(
                r#"{{"event_type":"{name}","user_id":"user-1","insert_id":"{name}"}}"#
            ))],
        )
    };
    lease.extend_to(Instant::now() + Duration::from_secs(60));
    send("before").unwrap();
    lease.extend_to(Instant::now());
    let refused = send("lapsed").unwrap_err();
    assert_eq!(refused.unavailable(), Some(Unavailable::NotWriter));
    lease.extend_to(Instant::now() + Duration::from_secs(60));
    send("renewed").unwrap();
    // The node dies; the next writer replays the WAL objects beside the segments.
    std::mem::forget(store);
    let next = Store::open(data, meta, config).unwrap();
    let mut types: Vec<String> = all_events(&next, 1)
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    types.sort();
    assert_eq!(types, vec!["before", "renewed"]);
    assert!(tmp.path().join("segments/wal").read_dir().unwrap().count() >= 2);
}

/// Two shards' writers on one bucket and one metadata database: each stores its own
/// projects alone, and a start of one (a crash, a takeover) removes nothing of the other's:
/// not its WAL objects, not a segment it may be uploading.
#[test]
fn shards_on_one_bucket_store_their_own_projects_and_leave_each_others_objects() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::new(tmp.path());
    data.create().unwrap();
    let connect = |shard: Shard| {
        let meta = Arc::new(MetaStore::open(&data.meta_db()).unwrap());
        let epoch = meta.take_writer(shard, "node", "http://node", 0, i64::MAX / 2);
        meta.fence(shard, epoch.unwrap().unwrap());
        meta
    };
    let admin = MetaStore::open(&data.meta_db()).unwrap();
    admin.bootstrap("admin@localhost", Some("pw")).unwrap();
    // Project 1 is in shard 1 of 2, project 2 in shard 0.
    let second = admin.create_project("two", "admin@localhost").unwrap();
    assert_eq!(second.project.id, 2);
    let config = StoreConfig {
        wal: WalPlace::Segments,
        shard_count: 2,
        ..StoreConfig::default()
    };
    let open = |shard: u32| Store::open(data.clone(), connect(Shard(shard)), config.clone());
    let send = |store: &Store, project: i64, name: &str| {
        let line =
            format!(r#"{{"event_type":"{name}","user_id":"u-{name}","insert_id":"{name}"}}"#);
        store.ingest(project, vec![event(&line)])
    };
    let types = |store: &Store, project: i64| -> Vec<String> {
        let mut types: Vec<String> = all_events(store, project)
            .into_iter()
            .map(|e| e.event_type)
            .collect();
        types.sort();
        types
    };

    let shard_0 = open(0).unwrap();
    let shard_1 = open(1).unwrap();
    send(&shard_0, 2, "flushed-2").unwrap();
    shard_0.flush().unwrap();
    send(&shard_0, 2, "unflushed-2").unwrap();
    send(&shard_1, 1, "unflushed-1").unwrap();
    let refused = send(&shard_0, 1, "elsewhere").unwrap_err();
    assert_eq!(
        refused.unavailable(),
        Some(Unavailable::NotWriter),
        "a project of another shard is its writer's alone"
    );

    // Objects of a commit in flight, one for each shard's project.
    let plant = |project: i64| {
        let path = tmp
            .path()
            .join(format!("segments/{project}/2026-01-01/in-flight.parquet"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"PAR1").unwrap();
        path
    };
    let (of_1, of_2) = (plant(1), plant(2));

    // Shard 0's writer dies and starts again while shard 1's runs on.
    std::mem::forget(shard_0);
    let shard_0 = open(0).unwrap();
    assert_eq!(types(&shard_0, 2), ["flushed-2", "unflushed-2"]);
    assert!(!of_2.exists(), "its own unreferenced object is removed");
    assert!(
        of_1.exists(),
        "another shard's object is that shard's to judge"
    );
    assert!(
        shard_0.snapshot(1, None).segments.is_empty() && all_events(&shard_0, 1).is_empty(),
        "it holds nothing of another shard's projects"
    );

    // Shard 1's writer dies too: its WAL objects were left alone, so nothing is lost.
    std::mem::forget(shard_1);
    let shard_1 = open(1).unwrap();
    assert_eq!(types(&shard_1, 1), ["unflushed-1"]);
    assert!(!of_1.exists());
    assert!(all_events(&shard_1, 2).is_empty());
    let shard_0_checkpoint = admin.wal_checkpoint(Shard(0)).unwrap();
    let shard_1_checkpoint = admin.wal_checkpoint(Shard(1)).unwrap();
    shard_1.flush().unwrap();
    assert_eq!(
        admin.wal_checkpoint(Shard(0)).unwrap(),
        shard_0_checkpoint,
        "shard 1's flush moves its own checkpoint only"
    );
    assert!(admin.wal_checkpoint(Shard(1)).unwrap() > shard_1_checkpoint);
    let wal = tmp.path().join("segments/wal");
    assert!(
        !wal.join("1").exists(),
        "shard 1's flush removed its WAL objects"
    );
    assert!(!files_under(&wal).is_empty(), "and left shard 0's");
    shard_0.shutdown().unwrap();
    shard_1.shutdown().unwrap();
}

#[test]
fn one_users_events_are_read_from_the_segments_that_may_hold_them_and_the_memtable() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, store) = open(tmp.path());
    let send = |user: &str, n: usize| {
        let batch = (0..n)
            .map(|i| event(&format!(r#"{{"event_type":"e{i}","user_id":"{user}"}}"#)))
            .collect();
        store.ingest(1, batch).unwrap();
    };
    // Three segments: one with only another user, two with both; then unflushed events.
    send("someone-else", 5);
    store.flush().unwrap();
    for _ in 0..2 {
        send("the-subject", 3);
        send("someone-else", 2);
        store.flush().unwrap();
    }
    send("the-subject", 1);
    send("someone-else", 1);
    let all = all_events(&store, 1);
    let subject = all
        .iter()
        .find(|e| e.user_id.as_deref() == Some("the-subject"))
        .unwrap()
        .amplitude_id;
    let mut theirs = Vec::new();
    store
        .for_each_day(1, None, Some(&[subject]), |day| {
            theirs.extend(day);
            Ok(())
        })
        .unwrap();
    let expected: Vec<_> = all
        .into_iter()
        .filter(|e| e.amplitude_id == subject)
        .collect();
    assert_eq!(expected.len(), 7);
    assert_eq!(theirs, expected);
}
