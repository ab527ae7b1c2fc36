//! Exactness: for random events and random tasks, the store after execution equals a simple
//! in-memory model of the same deletion, the counts equal the preview, and the catalog counts
//! equal what remains.

use std::collections::BTreeMap;
use std::sync::Arc;

use lethe_delete::{execute, submit, Clause, QueuedTask, TaskSpec};
use lethe_event::{Event, ParsedEvent, DAY_MS};
use lethe_meta::{CatalogKind, MetaStore};
use lethe_store::tail::Layout;
use lethe_store::{DataDir, Store, StoreConfig};
use proptest::prelude::*;

const TYPES: &[&str] = &["open", "click", "buy", "close"];
const EVENT_KEYS: &[&str] = &["p1", "p2", "p3", "p4"];
const USER_KEYS: &[&str] = &["u1", "u2", "u3"];
const GROUP_KEYS: &[&str] = &["g1", "g2", "g3"];
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
        prop::collection::vec((0..EVENT_KEYS.len(), any::<u8>()), 0..4),
        prop::collection::vec((0..USER_KEYS.len(), any::<u8>()), 0..3),
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

fn clause() -> impl Strategy<Value = Clause> {
    let types = prop::collection::vec(0..TYPES.len(), 1..3);
    let maybe_types = prop::option::of(prop::collection::vec(0..TYPES.len(), 1..3));
    prop_oneof![
        types.prop_map(|t| Clause::Event {
            event_types: names(TYPES, &t)
        }),
        (
            prop::collection::vec(0..EVENT_KEYS.len(), 1..3),
            maybe_types.clone()
        )
            .prop_map(|(p, t)| {
                Clause::EventProperty {
                    properties: names(EVENT_KEYS, &p),
                    event_types: t.map(|t| names(TYPES, &t)),
                }
            }),
        (
            prop::collection::vec(0..USER_KEYS.len(), 1..3),
            maybe_types.clone()
        )
            .prop_map(|(p, t)| Clause::UserProperty {
                properties: names(USER_KEYS, &p),
                event_types: t.map(|t| names(TYPES, &t)),
                from_profiles: false,
            }),
        (
            prop::collection::vec(0..GROUP_KEYS.len(), 1..3),
            maybe_types
        )
            .prop_map(|(p, t)| {
                Clause::GroupProperty {
                    properties: names(GROUP_KEYS, &p),
                    event_types: t.map(|t| names(TYPES, &t)),
                    from_profiles: false,
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

/// The model: the same deletion applied to plain events.
fn model(events: &[Event], spec: &TaskSpec) -> Vec<Event> {
    let in_range =
        |e: &Event| e.server_upload_time >= spec.start && e.server_upload_time < spec.end;
    let matches = |types: &Option<Vec<String>>, e: &Event| {
        types.as_ref().is_none_or(|t| t.contains(&e.event_type))
    };
    events
        .iter()
        .filter(|e| {
            !(in_range(e)
                && spec.clauses.iter().any(|c| matches!(c, Clause::Event { event_types } if event_types.contains(&e.event_type))))
        })
        .map(|e| {
            let mut e = e.clone();
            if in_range(&e) {
                for c in &spec.clauses {
                    match c {
                        Clause::EventProperty { properties, event_types } if matches(event_types, &e) => {
                            e.event_properties.retain(|(k, _)| !properties.contains(k));
                        }
                        Clause::UserProperty { properties, event_types, .. } if matches(event_types, &e) => {
                            let kept: Vec<_> = e.user_properties.iter().filter(|(k, _)| !properties.contains(k)).cloned().collect();
                            e.user_properties = Arc::new(kept);
                        }
                        Clause::GroupProperty { properties, event_types, .. } if matches(event_types, &e) => {
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
        let config = StoreConfig {
            layout: Layout { dense_one_in: 0, max_dense_keys },
            ..StoreConfig::default()
        };
        let store = Store::open(dir, meta.clone(), config).unwrap();
        // Part in segments, part still in the WAL and memtable: the task must cover both.
        let split = split.min(inputs.len());
        store.import(1, inputs[..split].iter().map(parsed).collect()).unwrap();
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
        let result = execute(&store, &meta, &task).unwrap();
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
        let again = execute(&store, &meta, &stored).unwrap();
        prop_assert_eq!(again.totals, result.totals);
        prop_assert_eq!(all_events(&store, 1), expected);
        store.shutdown().unwrap();
    }
}
