//! The live catalog: what names a project has data for now, with counts and seen ranges:
//! the committed catalog counts plus the events not yet flushed. What the taxonomy shows and
//! what a deletion task may name.

use std::collections::BTreeMap;
use std::sync::Arc;

use lethe_event::Event;
use lethe_meta::{CatalogKind, MetaStore};

use crate::Result;

/// Count and seen-range of one name.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Seen {
    pub count: i64,
    pub first: Option<i64>,
    pub last: Option<i64>,
}

impl Seen {
    fn add(&mut self, count: i64, first: Option<i64>, last: Option<i64>) {
        self.count += count;
        self.first = [self.first, first].into_iter().flatten().min();
        self.last = [self.last, last].into_iter().flatten().max();
    }
}

/// How much of the live catalog to gather.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogDetail {
    /// Names with counts and seen ranges: what validating a task needs.
    Names,
    /// Also the (event type, event property) pairs: a project with thousands of keys has
    /// hundreds of thousands of them.
    WithPairs,
}

/// The catalog as it is now: committed counts plus the events not yet flushed.
#[derive(Debug, Default)]
pub struct LiveCatalog {
    pub kinds: BTreeMap<CatalogKind, BTreeMap<String, Seen>>,
    /// (event type, event property) → events of that type carrying it.
    pub pairs: BTreeMap<(String, String), i64>,
}

impl LiveCatalog {
    /// Names of one kind that have data, with their counts.
    pub fn entries(&self, kind: CatalogKind) -> impl Iterator<Item = (&String, &Seen)> {
        self.kinds
            .get(&kind)
            .into_iter()
            .flatten()
            .filter(|(_, seen)| seen.count > 0)
    }
}

/// Reads the live catalog of a project.
pub(crate) fn live_catalog(
    meta: &MetaStore,
    memtable: &[Arc<Event>],
    project_id: i64,
    detail: CatalogDetail,
) -> Result<LiveCatalog> {
    let with_pairs = detail == CatalogDetail::WithPairs;
    let mut live = LiveCatalog::default();
    let mut names = BTreeMap::new();
    for kind in [
        CatalogKind::Event,
        CatalogKind::EventProperty,
        CatalogKind::UserProperty,
        CatalogKind::GroupProperty,
    ] {
        let map = live.kinds.entry(kind).or_default();
        for e in meta.list_catalog(project_id, kind)? {
            map.entry(e.name.clone())
                .or_default()
                .add(e.event_count, e.first_seen, e.last_seen);
            names.insert((kind, e.id), e.name);
        }
    }
    let pairs = match with_pairs {
        true => meta.event_property_pairs(project_id)?,
        false => Vec::new(),
    };
    for (type_id, prop_id, count) in pairs {
        let t = names.get(&(CatalogKind::Event, type_id));
        let p = names.get(&(CatalogKind::EventProperty, prop_id));
        if let (Some(t), Some(p)) = (t, p) {
            *live.pairs.entry((t.clone(), p.clone())).or_default() += count;
        }
    }
    for e in memtable {
        let t = Some(e.server_upload_time);
        let mut bump = |kind, name: &str| {
            live.kinds
                .entry(kind)
                .or_default()
                .entry(name.to_string())
                .or_default()
                .add(1, t, t)
        };
        bump(CatalogKind::Event, &e.event_type);
        for (k, _) in &e.event_properties {
            bump(CatalogKind::EventProperty, k);
        }
        for (k, _) in e.user_properties.iter() {
            bump(CatalogKind::UserProperty, k);
        }
        for (k, _) in &e.group_properties {
            bump(CatalogKind::GroupProperty, k);
        }
        for (k, _) in e.event_properties.iter().filter(|_| with_pairs) {
            *live
                .pairs
                .entry((e.event_type.clone(), k.clone()))
                .or_default() += 1;
        }
    }
    Ok(live)
}
