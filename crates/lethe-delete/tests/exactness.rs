//! Exactness: for random events and random tasks (with value predicates), the store after
//! execution equals a simple in-memory model of the same deletion, the counts equal the
//! preview, and the catalog counts equal what remains, also while compaction merges the
//! segments the task is rewriting.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lethe_delete::{
    execute, submit, Clause, MemoryBudget, Op, Predicate, QueuedTask, Subject, TaskSpec,
};
use lethe_event::{Event, ParsedEvent, DAY_MS};
use lethe_meta::{CatalogKind, MetaStore};
use lethe_store::tail::Layout;
use lethe_store::{CompactionPolicy, DataDir, Store, StoreConfig};
use proptest::prelude::*;

const TYPES: &[&str] = &["open", "click", "buy", "close"];
const EVENT_KEYS: &[&str] = &["p1", "p2", "p3", "p4"];
const USER_KEYS: &[&str] = &["u1", "u2", "u3"];
const GROUP_KEYS: &[&str] = &["g1", "g2", "g3"];
/// Property values are the numbers below this (few, so that predicates match some events).
const VALUES: u8 = 6;
const BASE: i64 = 1_700_000_000_000 - 1_700_000_000_000 % DAY_MS;

#[derive(Debug, Clone)]
struct Input {
    event_type: usize,
    user: usize,
    offset: i64,
    event_keys: Vec<(usize, u8)>,
    user_keys: Vec<(usize, u8)>,
    /// The group (of two) the event names, with group-property changes it makes.
    group: Option<(usize, Vec<(usize, u8)>)>,
}

fn input() -> impl Strategy<Value = Input> {
    (
        0..TYPES.len(),
        0..5usize,
        0..3 * DAY_MS,
        prop::collection::vec((0..EVENT_KEYS.len(), 0..VALUES), 0..4),
        prop::collection::vec((0..USER_KEYS.len(), 0..VALUES), 0..3),
        prop::option::of((
            0..2usize,
            prop::collection::vec((0..GROUP_KEYS.len(), any::<u8>()), 0..3),
        )),
    )
        .prop_map(
            |(event_type, user, offset, event_keys, user_keys, group)| Input {
                event_type,
                user,
                offset,
                event_keys,
                user_keys,
                group,
            },
        )
}

fn names(all: &[&str], picks: &[usize]) -> Vec<String> {
    let mut v: Vec<String> = picks
        .iter()
        .map(|i| all[*i % all.len()].to_string())
        .collect();
    v.sort();
    v.dedup();
    v
}

/// An optional `where` on an event property, a user property or the built-in `user_id`.
fn predicate() -> impl Strategy<Value = Option<Predicate>> {
    let subject = prop_oneof![
        (0..EVENT_KEYS.len()).prop_map(|k| Subject::Event(EVENT_KEYS[k].into())),
        (0..USER_KEYS.len()).prop_map(|k| Subject::User(USER_KEYS[k].into())),
        Just(Subject::BuiltIn("user_id".into())),
    ];
    let values = prop::collection::vec(0..VALUES, 1..3);
    prop::option::weighted(
        0.6,
        (subject, 0..Op::ALL.len(), values).prop_map(|(property, op, values)| {
            let op = Op::ALL[op];
            let values = match (op.takes_values(), &property) {
                (false, _) => Vec::new(),
                (true, Subject::BuiltIn(_)) => values.iter().map(|v| format!("user-{v}")).collect(),
                (true, _) => values.iter().map(u8::to_string).collect(),
            };
            Predicate {
                property,
                op,
                values,
                value_digests: Vec::new(),
            }
        }),
    )
}

fn clause() -> impl Strategy<Value = Clause> {
    let types = prop::collection::vec(0..TYPES.len(), 1..3);
    let maybe_types = prop::option::of(prop::collection::vec(0..TYPES.len(), 1..3));
    prop_oneof![
        (types, predicate()).prop_map(|(t, filter)| Clause::Event {
            event_types: names(TYPES, &t),
            filter,
        }),
        (
            prop::collection::vec(0..EVENT_KEYS.len(), 1..3),
            maybe_types.clone(),
            predicate(),
        )
            .prop_map(|(p, t, filter)| {
                Clause::EventProperty {
                    properties: names(EVENT_KEYS, &p),
                    event_types: t.map(|t| names(TYPES, &t)),
                    filter,
                }
            }),
        (
            prop::collection::vec(0..USER_KEYS.len(), 1..3),
            maybe_types.clone(),
            predicate(),
        )
            .prop_map(|(p, t, filter)| Clause::UserProperty {
                properties: names(USER_KEYS, &p),
                event_types: t.map(|t| names(TYPES, &t)),
                from_profiles: false,
                filter,
            }),
        (
            prop::collection::vec(0..GROUP_KEYS.len(), 1..3),
            maybe_types,
            predicate(),
        )
            .prop_map(|(p, t, filter)| {
                Clause::GroupProperty {
                    properties: names(GROUP_KEYS, &p),
                    event_types: t.map(|t| names(TYPES, &t)),
                    from_profiles: false,
                    filter,
                }
            }),
    ]
}

fn parsed(i: &Input) -> ParsedEvent {
    let props = |keys: &[(usize, u8)], all: &[&str]| -> Vec<(String, String)> {
        let map: BTreeMap<String, String> = keys
            .iter()
            .map(|(k, v)| (all[*k].to_string(), v.to_string()))
            .collect();
        map.into_iter().collect()
    };
    ParsedEvent {
        event_type: TYPES[i.event_type].to_string(),
        user_id: Some(format!("user-{}", i.user)),
        server_upload_time: Some(BASE + i.offset),
        event_properties: props(&i.event_keys, EVENT_KEYS),
        user_property_ops: props(&i.user_keys, USER_KEYS)
            .into_iter()
            .map(|(k, v)| (k, serde_json::from_str(&v).unwrap()))
            .collect(),
        groups: i
            .group
            .as_ref()
            .map(|(g, _)| serde_json::json!({ "org": format!("org-{g}") }).to_string()),
        group_property_ops: i
            .group
            .as_ref()
            .map(|(_, keys)| props(keys, GROUP_KEYS))
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, serde_json::from_str(&v).unwrap()))
            .collect(),
        ..Default::default()
    }
}

fn all_events(store: &Store, project: i64) -> Vec<Event> {
    store.events(project, None).unwrap()
}

/// The model of a predicate, on the values this test stores (numbers, and `user-N` ids):
/// a value compares as its text.
fn passes(filter: &Option<Predicate>, e: &Event) -> bool {
    let Some(p) = filter else { return true };
    let find = |props: &[(String, String)], key: &str| {
        props.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    };
    let value = match &p.property {
        Subject::Event(key) => find(&e.event_properties, key),
        Subject::User(key) => find(&e.user_properties, key),
        Subject::BuiltIn(_) => e.user_id.clone(),
    };
    let is = |v: &String| p.values.contains(v);
    let contains = |v: &String| p.values.iter().any(|n| v.contains(n.as_str()));
    match p.op {
        Op::IsSet => value.is_some(),
        Op::IsNotSet => value.is_none(),
        Op::Is => value.as_ref().is_some_and(is),
        Op::IsNot => !value.as_ref().is_some_and(is),
        Op::Contains => value.as_ref().is_some_and(contains),
        Op::DoesNotContain => !value.as_ref().is_some_and(contains),
    }
}

/// The model: the same deletion applied to plain events. Every predicate reads the event as
/// it was stored, whatever other clauses remove from it.
fn model(events: &[Event], spec: &TaskSpec) -> Vec<Event> {
    let in_range =
        |e: &Event| e.server_upload_time >= spec.start && e.server_upload_time < spec.end;
    let matches =
        |types: &Option<Vec<String>>, filter: &Option<Predicate>, e: &Event, stored: &Event| {
            types.as_ref().is_none_or(|t| t.contains(&e.event_type)) && passes(filter, stored)
        };
    events
        .iter()
        .filter(|e| {
            !(in_range(e)
                && spec.clauses.iter().any(|c| matches!(c, Clause::Event { event_types, filter } if event_types.contains(&e.event_type) && passes(filter, e))))
        })
        .map(|stored| {
            let mut e = stored.clone();
            if in_range(&e) {
                for c in &spec.clauses {
                    match c {
                        Clause::EventProperty { properties, event_types, filter } if matches(event_types, filter, &e, stored) => {
                            e.event_properties.retain(|(k, _)| !properties.contains(k));
                        }
                        Clause::UserProperty { properties, event_types, filter, .. } if matches(event_types, filter, &e, stored) => {
                            let kept: Vec<_> = e.user_properties.iter().filter(|(k, _)| !properties.contains(k)).cloned().collect();
                            e.user_properties = Arc::new(kept);
                        }
                        Clause::GroupProperty { properties, event_types, filter, .. } if matches(event_types, filter, &e, stored) => {
                            e.group_properties.retain(|(k, _)| !properties.contains(k));
                        }
                        _ => {}
                    }
                }
            }
            e
        })
        .collect()
}

fn catalog_counts(meta: &MetaStore, kind: CatalogKind) -> BTreeMap<String, i64> {
    meta.list_catalog(1, kind)
        .unwrap()
        .into_iter()
        .filter(|e| e.event_count != 0)
        .map(|e| (e.name, e.event_count))
        .collect()
}

fn model_counts(events: &[Event], f: impl Fn(&Event) -> Vec<String>) -> BTreeMap<String, i64> {
    let mut m = BTreeMap::new();
    for e in events {
        for k in f(e) {
            *m.entry(k).or_default() += 1;
        }
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, .. ProptestConfig::default() })]

    #[test]
    fn execution_equals_the_model(
        inputs in prop::collection::vec(input(), 1..120),
        split in 0usize..120,
        clauses in prop::collection::vec(clause(), 1..=5),
        range in (0..3 * DAY_MS, 1..3 * DAY_MS),
        dense in 0usize..5,
        imports in 1usize..=4,
        compacting in any::<bool>(),
        memory in prop_oneof![Just(1u64), Just(256u64 << 20)],
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path());
        dir.create().unwrap();
        let meta = Arc::new(MetaStore::open(&dir.meta_db()).unwrap());
        meta.bootstrap("admin@localhost", Some("pw")).unwrap();
        // Keys all in the tail column (0), all in their own columns (4), or a mix (the most
        // frequent `dense` keys of each kind get columns): every task must be exact whatever
        // the layout.
        let max_dense_keys = if dense == 4 { usize::MAX } else { dense };
        // Up to four segments a day, which a compaction merges two at a time.
        let config = StoreConfig {
            layout: Layout { dense_one_in: 0, max_dense_keys },
            compaction: CompactionPolicy { min_segments: 2, ..CompactionPolicy::default() },
            ..StoreConfig::default()
        };
        let store = Store::open(dir, meta.clone(), config).unwrap();
        // Part in segments, part still in the WAL and memtable: the task must cover both.
        let split = split.min(inputs.len());
        for part in inputs[..split].chunks(split.div_ceil(imports).max(1)) {
            store.import(1, part.iter().map(parsed).collect()).unwrap();
        }
        store.ingest(1, inputs[split..].iter().map(parsed).collect()).unwrap();

        let spec = TaskSpec {
            name: "prop".into(),
            start: BASE + range.0,
            end: BASE + range.0 + range.1,
            clauses,
            keep_blocking: false,
        };
        let before = all_events(&store, 1);
        let expected = model(&before, &spec);
        let (task, shown) = submit(&store, &meta, 1, &spec, "test").unwrap();
        prop_assert_eq!(shown.totals.events_deleted as usize, before.len() - expected.len());
        // Partitions are read and planned without holding the manifest: a compaction that
        // merges one's segments meanwhile makes it plan again, never count twice.
        let stop = AtomicBool::new(false);
        let result = std::thread::scope(|s| {
            if compacting {
                s.spawn(|| {
                    while !stop.load(Ordering::Acquire) {
                        store.compact().unwrap();
                        std::thread::sleep(Duration::from_millis(1));
                    }
                });
            }
            // A budget of one byte rewrites one segment at a time, over every partition.
            let result = execute(&store, &meta, &task, &MemoryBudget::new(memory));
            stop.store(true, Ordering::Release);
            result
        })
        .unwrap();
        prop_assert!(result.matches_preview, "result {:?} preview {:?}", result, shown);

        let after = all_events(&store, 1);
        prop_assert_eq!(&after, &expected);
        prop_assert_eq!(catalog_counts(&meta, CatalogKind::Event), model_counts(&expected, |e| vec![e.event_type.clone()]));
        prop_assert_eq!(catalog_counts(&meta, CatalogKind::EventProperty),
            model_counts(&expected, |e| e.event_properties.iter().map(|(k, _)| k.clone()).collect()));
        prop_assert_eq!(catalog_counts(&meta, CatalogKind::UserProperty),
            model_counts(&expected, |e| e.user_properties.iter().map(|(k, _)| k.clone()).collect()));
        prop_assert_eq!(catalog_counts(&meta, CatalogKind::GroupProperty),
            model_counts(&expected, |e| e.group_properties.iter().map(|(k, _)| k.clone()).collect()));
        // Running it again (as after a crash) changes nothing.
        let stored = QueuedTask::decode(meta.task(task.row.id).unwrap().unwrap()).unwrap();
        let again = execute(&store, &meta, &stored, &MemoryBudget::new(memory)).unwrap();
        prop_assert_eq!(again.totals, result.totals);
        prop_assert_eq!(all_events(&store, 1), expected);
        store.shutdown().unwrap();
    }
}
