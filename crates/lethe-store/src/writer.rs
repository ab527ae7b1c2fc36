//! The segment writer: the one way a segment is made, used by flush, bulk import,
//! compaction and rewrites. It asks the catalog for every id a segment needs in one round
//! trip, encodes the segment and writes its object through the storage seam; the caller
//! commits the record it returns (or discards it).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::RecordBatch;
use lethe_event::{Day, Event};
use lethe_meta::{CatalogDelta, CatalogIds, CatalogKind, CountDelta, MetaStore, SegmentRecord};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::memtable::Tagged;
use crate::parallel::parallel_map;
use crate::rewrite::Output;
use crate::schema::PropertyKind;
use crate::segment::{
    events_to_batch, rewrite_columns, rewrite_row_groups, sort_for_segment, write_batch,
};
use crate::storage::{SegmentLocation, Storage};
use crate::tail::Layout;
use crate::Result;

/// Writes segments into the storage, with ids from the catalog.
pub(crate) struct SegmentWriter {
    pub storage: Arc<Storage>,
    pub meta: Arc<MetaStore>,
    /// Which keys get their own column.
    pub layout: Layout,
}

impl SegmentWriter {
    /// Writes one segment per project and day of `events`, days in parallel (one per core).
    /// Nothing is visible until the caller commits them.
    pub fn write_groups(&self, events: impl Iterator<Item = Tagged>) -> Result<Written> {
        let mut groups: BTreeMap<(i64, Day), Vec<Arc<Event>>> = BTreeMap::new();
        for (project, event) in events {
            groups
                .entry((project, Day::of_ms(event.server_upload_time)))
                .or_default()
                .push(event);
        }
        let results = parallel_map(
            groups.into_iter().collect(),
            |((project_id, day), mut events)| {
                sort_for_segment(&mut events);
                self.write_events(project_id, &day.to_string(), &events)
            },
        );
        let mut written = Written::default();
        let mut failure = None;
        for result in results {
            match result {
                Ok((record, delta)) => {
                    written.catalog.push((record.project_id, delta));
                    written.records.push(record);
                }
                Err(e) => failure = Some(e),
            }
        }
        match failure {
            None => Ok(written),
            Some(e) => {
                self.discard(&written.records);
                Err(e)
            }
        }
    }

    /// Deletes objects written for a commit that did not happen (one that cannot be deleted
    /// now is tried again later, and the next start removes every object the manifest does
    /// not name).
    pub fn discard(&self, records: &[SegmentRecord]) {
        let keys = records
            .iter()
            .map(|r| Storage::key(&SegmentLocation::of(r)))
            .collect();
        if let Err(e) = self.storage.delete_segments(keys) {
            tracing::warn!(error = %e, "cannot delete uncommitted segments; they are tried again");
        }
    }

    /// Writes `batch` as a new segment object and returns its manifest record; `type_ids`
    /// are the catalog ids of its event types.
    fn write_new_segment(
        &self,
        project_id: i64,
        day: &str,
        batch: &RecordBatch,
        type_ids: &CatalogIds,
        keys: PropertyIds,
    ) -> Result<SegmentRecord> {
        let (bytes, stats) = write_batch(batch)?;
        let record = SegmentRecord {
            id: new_segment_id(),
            project_id,
            day: day.to_string(),
            rows: stats.rows as i64,
            bytes: stats.bytes as i64,
            min_time: stats.min_time,
            max_time: stats.max_time,
            event_types: sorted_ids(type_ids),
            event_properties: sorted_ids(keys.event),
            user_properties: sorted_ids(keys.user),
            group_properties: sorted_ids(keys.group),
            crc32: Some(stats.crc32),
            sha256: Some(stats.sha256.clone()),
        };
        self.storage
            .put(&Storage::key(&SegmentLocation::of(&record)), bytes)?;
        Ok(record)
    }

    /// Writes the new contents of a rewritten segment; its record keeps the source's
    /// partition, bounds and event types, which stay valid (conservative) bounds, minus the
    /// dropped columns. `None` when no row is left.
    pub fn write_output(&self, output: &Output) -> Result<Option<SegmentRecord>> {
        let (source, drop, (bytes, stats)) = match output {
            Output::Columns {
                source,
                drop,
                replace,
            } => (
                source,
                &drop[..],
                rewrite_columns(&source.bytes, drop, replace)?,
            ),
            Output::RowGroups { source, replaced } => (
                source,
                &[][..],
                rewrite_row_groups(&source.bytes, replaced)?,
            ),
        };
        if stats.rows == 0 {
            return Ok(None);
        }
        let old = &source.segment.record;
        let kept = |kind: PropertyKind| -> Vec<i64> {
            kind.ids(old)
                .iter()
                .copied()
                .filter(|id| !drop.contains(&kind.column(*id)))
                .collect()
        };
        let record = SegmentRecord {
            id: new_segment_id(),
            rows: stats.rows as i64,
            bytes: stats.bytes as i64,
            event_properties: kept(PropertyKind::Event),
            user_properties: kept(PropertyKind::User),
            group_properties: kept(PropertyKind::Group),
            crc32: Some(stats.crc32),
            sha256: Some(stats.sha256.clone()),
            ..old.clone()
        };
        self.storage
            .put(&Storage::key(&SegmentLocation::of(&record)), bytes)?;
        Ok(Some(record))
    }

    /// Writes sorted `events` as a new segment and returns its record and catalog counts.
    pub fn write_events(
        &self,
        project_id: i64,
        day: &str,
        events: &[Arc<Event>],
    ) -> Result<(SegmentRecord, CatalogDelta)> {
        // Every name the segment needs an id for, asked of the catalog at once.
        let types = distinct(events.iter().map(|e| e.event_type.as_str()));
        let mut wanted = vec![(CatalogKind::Event, types)];
        for kind in PropertyKind::ALL {
            let keys = distinct(
                events
                    .iter()
                    .flat_map(|e| kind.of_event(e).iter().map(|(k, _)| k.as_str())),
            );
            wanted.push((kind.catalog(), keys));
        }
        let mut ids = self
            .meta
            .ensure_catalog_ids(project_id, &wanted)?
            .into_iter();
        let mut next = || ids.next().expect("one map per kind asked");
        let (type_ids, eprop_ids, uprop_ids, gprop_ids) = (next(), next(), next(), next());
        let batch = events_to_batch(events, &eprop_ids, &uprop_ids, &gprop_ids, self.layout)?;
        let ids = PropertyIds {
            event: &eprop_ids,
            user: &uprop_ids,
            group: &gprop_ids,
        };
        let record = self.write_new_segment(project_id, day, &batch, &type_ids, ids)?;
        Ok((record, catalog_delta(events, &type_ids, ids)))
    }
}

/// Segments written but not yet committed, with the catalog counts they add.
#[derive(Default)]
pub(crate) struct Written {
    pub records: Vec<SegmentRecord>,
    pub catalog: Vec<(i64, CatalogDelta)>,
}

/// A new segment's id: time-ordered, never reused (so never an object key reused).
fn new_segment_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// The distinct names among `names`, sorted (a hash set first: names repeat on every event).
fn distinct<'a>(names: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let set: FxHashSet<&str> = names.collect();
    let mut v: Vec<&str> = set.into_iter().collect();
    v.sort_unstable();
    v
}

fn sorted_ids(ids: &CatalogIds) -> Vec<i64> {
    let mut v: Vec<i64> = ids.values().copied().collect();
    v.sort_unstable();
    v
}

/// Catalog ids of the property keys of the events written into one segment.
#[derive(Clone, Copy)]
struct PropertyIds<'a> {
    event: &'a CatalogIds,
    user: &'a CatalogIds,
    group: &'a CatalogIds,
}

/// Catalog counts contributed by `events`.
fn catalog_delta(events: &[Arc<Event>], type_ids: &CatalogIds, ids: PropertyIds) -> CatalogDelta {
    let (eprop_ids, uprop_ids) = (ids.event, ids.user);
    let mut counts: FxHashMap<(CatalogKind, i64), (i64, i64, i64)> = FxHashMap::default();
    let mut pairs: FxHashMap<(i64, i64), i64> = FxHashMap::default();
    let mut bump = |kind, id: i64, t: i64| {
        let c = counts.entry((kind, id)).or_insert((0, t, t));
        c.0 += 1;
        c.1 = c.1.min(t);
        c.2 = c.2.max(t);
    };
    for e in events {
        let t = e.server_upload_time;
        let type_id = type_ids[&e.event_type];
        bump(CatalogKind::Event, type_id, t);
        for (k, _) in &e.event_properties {
            bump(CatalogKind::EventProperty, eprop_ids[k], t);
            *pairs.entry((type_id, eprop_ids[k])).or_default() += 1;
        }
        for (k, _) in e.user_properties.iter() {
            bump(CatalogKind::UserProperty, uprop_ids[k], t);
        }
        for (k, _) in &e.group_properties {
            bump(CatalogKind::GroupProperty, ids.group[k], t);
        }
    }
    // Sorted, so every writer updates catalog rows in the same order.
    let mut counts: Vec<_> = counts.into_iter().collect();
    counts.sort_unstable_by_key(|&(key, _)| key);
    let mut pairs: Vec<_> = pairs.into_iter().map(|((t, p), c)| (t, p, c)).collect();
    pairs.sort_unstable();
    CatalogDelta {
        counts: counts
            .into_iter()
            .map(|((kind, id), (count, first, last))| CountDelta {
                kind,
                id,
                count,
                seen: Some((first, last)),
            })
            .collect(),
        pairs,
    }
}
