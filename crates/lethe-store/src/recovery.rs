//! Recovery at start-up: segment objects the manifest does not name are deleted, the WAL
//! after the checkpoint is replayed into the memtable and the resolver, and the resolver
//! relearns what recent days stored (insert ids for deduplication, keys for the daily limits).

use std::collections::BTreeMap;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use arrow_array::{Array, StringArray, TimestampMillisecondArray};
use lethe_event::Day;
use lethe_meta::{now_ms, CatalogKind, MetaStore};

use crate::live::{LiveSet, Segment};
use crate::memtable::Memtable;
use crate::parallel::{parallel_reads, READS_IN_FLIGHT};
use crate::resolver::{dedup_key, KeyKind, Resolver, StoredKeys};
use crate::schema::base_column;
use crate::storage::Storage;
use crate::wal::{Damage, WalRoot};
use crate::{Result, StoreError};

/// Replays the WAL files left after the checkpoint into the memtable and the resolver;
/// returns the last file's sequence number. A torn tail of the last file (a crash cut its
/// last write short: never acknowledged) is cut off with a warning; damage anywhere else
/// stops the start, naming the file and offset, unless `salvage`.
pub(crate) fn replay_wal(
    root: &WalRoot,
    salvage: bool,
    resolver: &mut Resolver,
    memtable: &mut Memtable,
) -> Result<Option<u64>> {
    let seqs = root.list()?;
    let last = seqs.last().copied();
    let (mut events, mut identifications) = (0, 0);
    root.read_each(&seqs, |seq, replay| {
        let file = root.name(seq);
        let kept = replay.records.len();
        match replay.damage {
            None => {}
            Some(Damage::TornTail { offset, bytes }) if Some(seq) == last => {
                tracing::warn!(file = %file.display(), offset, bytes, records_kept = kept,
                    "WAL ends in a torn record (a write cut short by a crash, never acknowledged): cutting it off");
                root.truncate(seq, replay.valid_len)?;
            }
            Some(Damage::TornTail { offset, bytes } | Damage::Corrupt { offset, bytes }) => {
                if !salvage {
                    return Err(StoreError::WalDamaged {
                        path: file,
                        offset,
                        records_before: kept,
                    });
                }
                tracing::error!(file = %file.display(), offset, bytes_dropped = bytes, records_kept = kept,
                    "salvaging a damaged WAL file: keeping the records before the damage, dropping the rest");
                root.truncate(seq, replay.valid_len)?;
            }
        }
        for record in replay.records {
            for event in record.events {
                resolver.observe(record.project_id, &event);
                match event.profile_only {
                    true => identifications += 1,
                    false => {
                        events += 1;
                        memtable.push(record.project_id, [event]);
                    }
                }
            }
        }
        Ok(())
    })?;
    if identifications > 0 {
        memtable.await_flush();
    }
    if events + identifications > 0 {
        tracing::info!(events, identifications, "replayed WAL");
    }
    Ok(last)
}

/// Deletes every segment object of the storage's projects the manifest does not name
/// (written by a commit that never happened, or retired by one whose deletion a crash
/// interrupted), in bulk. If the storage refuses, the start goes on and the background
/// deletes them again: no reader sees an object the manifest does not name, and no task
/// completes while one is there.
pub(crate) fn remove_unreferenced_segments(storage: &Storage, live: &LiveSet) -> Result<()> {
    let unreferenced = storage.unreferenced(live.all().map(|s| &s.key).collect())?;
    for key in &unreferenced {
        tracing::debug!(object = %storage.describe(key), "removing an unreferenced segment");
    }
    if unreferenced.is_empty() {
        return Ok(());
    }
    let count = unreferenced.len();
    match storage.delete_segments(unreferenced) {
        Ok(()) => tracing::info!(count, "removed unreferenced segments"),
        Err(e) => tracing::error!(count, error = %e,
            "cannot remove unreferenced segments; they are tried again in the background"),
    }
    Ok(())
}

/// The daily key limits count what recent days already stored: the manifest records name
/// each segment's property keys by catalog id, so no file is read.
pub(crate) fn remember_recent_keys(
    resolver: &mut Resolver,
    live: &LiveSet,
    meta: &MetaStore,
) -> Result<()> {
    let since = Day::of_ms(now_ms()).plus(-8).to_string();
    for project_id in live.projects() {
        let recent: Vec<&Arc<Segment>> = live
            .of_project(project_id)
            .iter()
            .filter(|s| s.record.day >= since)
            .collect();
        if recent.is_empty() {
            continue;
        }
        let names = [
            (KeyKind::Event, CatalogKind::EventProperty),
            (KeyKind::User, CatalogKind::UserProperty),
            (KeyKind::Group, CatalogKind::GroupProperty),
        ];
        for (kind, catalog) in names {
            let names = meta.catalog_names(project_id, catalog)?;
            for segment in &recent {
                let ids = match kind {
                    KeyKind::Event => &segment.record.event_properties,
                    KeyKind::User => &segment.record.user_properties,
                    KeyKind::Group => &segment.record.group_properties,
                };
                let day = partition_day(&segment.record.day)?;
                let keys = ids
                    .iter()
                    .filter_map(|id| names.get(id).map(String::as_str));
                resolver.admit_stored_keys(project_id, day, kind, keys);
            }
        }
    }
    Ok(())
}

/// The day a partition name in the manifest names.
fn partition_day(name: &str) -> Result<Day> {
    Day::parse(name).ok_or_else(|| {
        StoreError::Io(std::io::Error::other(format!(
            "the manifest names a partition {name:?} that is not a date"
        )))
    })
}

/// Insert ids of the last days must keep deduplicating after a restart: sends the dedup
/// keys of each recent segment's rows (only the four columns that make one are read, 8
/// segments at a time) to `keys`, for the resolver to remember once it is loaded. Stops
/// early, without error, when the receiver is gone.
pub(crate) fn recent_dedup_keys(live: &LiveSet, keys: SyncSender<StoredKeys>) -> Result<()> {
    let since = Day::of_ms(now_ms()).plus(-8).to_string();
    let columns: Vec<String> = [
        base_column::INSERT_ID,
        base_column::DEVICE_ID,
        base_column::USER_ID,
        base_column::SERVER_UPLOAD_TIME,
    ]
    .map(String::from)
    .to_vec();
    let recent: Vec<&Arc<Segment>> = live.all().filter(|s| s.record.day >= since).collect();
    for chunk in recent.chunks(READS_IN_FLIGHT) {
        let read = parallel_reads(chunk.to_vec(), |segment| {
            match segment.read_batches(Some(&columns)) {
                Ok(batches) => dedup_keys(segment.record.project_id, batches).map(Some),
                // A damaged segment is quarantined and skipped: the server starts and serves
                // the rest.
                Err(StoreError::Corrupt { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        });
        for stored in read {
            if let Some(stored) = stored? {
                if keys.send(stored).is_err() {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

/// Row `r` of a text column, if the column exists and the row holds a value.
fn text_at(column: Option<&StringArray>, r: usize) -> Option<&str> {
    column.filter(|c| c.is_valid(r)).map(|c| c.value(r))
}

/// The dedup key of every row of `batches` (a segment's four dedup columns), by upload day.
fn dedup_keys(project_id: i64, batches: Vec<arrow_array::RecordBatch>) -> Result<StoredKeys> {
    let mut stored = StoredKeys {
        project_id,
        by_day: BTreeMap::new(),
    };
    for batch in batches {
        let text = |name| {
            batch
                .column_by_name(name)
                .and_then(|a| a.as_any().downcast_ref::<StringArray>())
        };
        let (Some(insert_ids), devices, users) = (
            text(base_column::INSERT_ID),
            text(base_column::DEVICE_ID),
            text(base_column::USER_ID),
        ) else {
            continue;
        };
        let times = batch
            .column_by_name(base_column::SERVER_UPLOAD_TIME)
            .and_then(|a| a.as_any().downcast_ref::<TimestampMillisecondArray>())
            .ok_or_else(|| {
                StoreError::Io(std::io::Error::other("segment lacks server_upload_time"))
            })?;
        for r in (0..batch.num_rows()).filter(|r| insert_ids.is_valid(*r)) {
            stored
                .by_day
                .entry(Day::of_ms(times.value(r)))
                .or_default()
                .push(dedup_key(
                    text_at(devices, r),
                    text_at(users, r),
                    insert_ids.value(r),
                ));
        }
    }
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::SegmentLocation;
    use bytes::Bytes;
    use lethe_meta::SegmentRecord;
    use object_store::path::Path as Key;

    #[test]
    fn objects_the_manifest_does_not_name_are_deleted_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Arc::new(Storage::local(dir.path()).unwrap());
        let record = |id: &str| SegmentRecord {
            id: id.into(),
            project_id: 1,
            day: "2026-12-01".into(),
            ..Default::default()
        };
        for id in ["live", "stray"] {
            let key = Storage::key(&SegmentLocation::of(&record(id)));
            storage.put(&key, Bytes::from_static(b"bytes")).unwrap();
        }
        storage
            .put(&Key::from("not/a/segment/key"), Bytes::from_static(b"x"))
            .unwrap();
        let mut live = LiveSet::default();
        live.add(&storage, vec![record("live")], true);
        remove_unreferenced_segments(&storage, &live).unwrap();
        let left: Vec<_> = storage.list().unwrap();
        assert_eq!(left, vec![Ok(SegmentLocation::of(&record("live")))]);
    }
}
