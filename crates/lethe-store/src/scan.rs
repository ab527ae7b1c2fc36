//! One scan over a project's stored events: its live segments and the events not yet flushed,
//! as record batches of the segment schema. A reader (segmentation, and whatever query comes
//! next) names the base columns and the property keys it needs and a time window; it never
//! builds batches from the memtable or looks catalog ids up itself, so the unflushed events
//! and the segments are read through one schema.

use std::collections::hash_map::Entry;
use std::sync::Arc;

use arrow_array::{RecordBatch, StringArray};
use lethe_meta::{CatalogIds, MetaStore};
use rustc_hash::FxHashMap;

use crate::live::Segment;
use crate::schema::{base_column, PropertyKind};
use crate::segment::events_to_batch;
use crate::tail::Layout;
use crate::{parallel_reads, Result, Snapshot};

/// What a scan reads.
pub struct ScanRequest<'a> {
    /// Base columns (`base_column::*`, or a standard field's column) to read.
    pub columns: &'a [&'a str],
    /// Property keys whose values the reader needs (`Scanned::values`).
    pub properties: &'a [(PropertyKind, &'a str)],
    /// The timestamp column the window is on: `base_column::SERVER_UPLOAD_TIME` (which also
    /// chooses the partitions read) or `base_column::EVENT_TIME`.
    pub time: &'static str,
    /// `[from, to)` of `time`. Row groups wholly outside it are not read; rows outside it
    /// may still be in the batches, for the reader to skip.
    pub window: (i64, i64),
}

/// The batches a scan read, and where each requested property is in them.
pub struct Scanned {
    /// Segment batches first, then (at most one) batch of unflushed events.
    pub batches: Vec<RecordBatch>,
    /// The id a requested key has in the batches: its catalog id, or for a key the catalog
    /// does not know yet (only unflushed events can hold it) a negative id of this scan.
    ids: FxHashMap<(PropertyKind, String), i64>,
}

impl Scanned {
    /// A requested property's values in one of the scan's batches, one per row (`None` when
    /// no row of the batch has it).
    pub fn values(
        &self,
        batch: &RecordBatch,
        kind: PropertyKind,
        key: &str,
    ) -> Option<StringArray> {
        let id = *self.ids.get(&(kind, key.to_string()))?;
        kind.values(batch, id).ok().flatten()
    }
}

/// Reads `request` from `snapshot` (one project's, taken by the store).
pub(crate) fn scan(
    meta: &MetaStore,
    project_id: i64,
    snapshot: Snapshot,
    request: &ScanRequest,
) -> Result<Scanned> {
    let mut catalogs: FxHashMap<PropertyKind, CatalogIds> = FxHashMap::default();
    let mut ids = FxHashMap::default();
    for &(kind, key) in request.properties {
        let catalog = match catalogs.entry(kind) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(slot) => slot.insert(meta.catalog_ids(project_id, kind.catalog())?),
        };
        let unknown = -(ids.len() as i64) - 1;
        let id = catalog.get(key).copied().unwrap_or(unknown);
        ids.insert((kind, key.to_string()), id);
    }
    let mut read: Vec<String> = request.columns.iter().map(|c| c.to_string()).collect();
    read.push(request.time.to_string());
    for (&(kind, _), &id) in &ids {
        read.extend(kind.columns_of(id).iter().cloned());
    }
    read.sort();
    read.dedup();
    let mut batches = Vec::new();
    let segments: Vec<&Arc<Segment>> = snapshot.segments.iter().collect();
    for read_one in parallel_reads(segments, |s| {
        s.read_between(&read, request.time, request.window)
    }) {
        batches.extend(read_one?);
    }
    if !snapshot.memtable.is_empty() {
        let of = |kind: PropertyKind| -> CatalogIds {
            ids.iter()
                .filter(|((k, _), _)| *k == kind)
                .map(|((_, key), id)| (key.clone(), *id))
                .collect()
        };
        let batch = events_to_batch(
            &snapshot.memtable,
            &of(PropertyKind::Event),
            &of(PropertyKind::User),
            &of(PropertyKind::Group),
            Layout::default(),
        )?;
        batches.push(batch);
    }
    Ok(Scanned { batches, ids })
}

/// Whether a scan on `time` chooses partitions by its window (upload time does: it is what
/// partitions the store; event time may lie anywhere).
pub(crate) fn partitions(request: &ScanRequest) -> Option<(i64, i64)> {
    (request.time == base_column::SERVER_UPLOAD_TIME).then_some(request.window)
}
