//! The live segment set: the segments the manifest says are committed, per project, and
//! the handle through which every read of a segment's bytes goes (checked against the
//! manifest's checksum, quarantined when damaged, deleted once retired and let go).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arrow_array::RecordBatch;
use bytes::Bytes;
use lethe_event::Event;
use lethe_meta::SegmentRecord;
use object_store::path::Path as Key;
use parquet::file::metadata::ParquetMetaDataReader;

use crate::fetched::{coalesce, SegmentBytes};
use crate::health::{DamagedSegment, Quarantine};
use crate::segment::{
    footer_len, may_hold_users, ranges_needed, read_batches, read_batches_between, read_row_groups,
    read_segment, ColumnNames, Need,
};
use crate::storage::{SegmentLocation, Storage};
use crate::{lock, Result, StoreError};

/// A live segment. When the manifest retires it, its object is deleted as soon as the last
/// reader holding it lets go. Every read of its bytes goes through here, so a damaged
/// object is never decoded: it is quarantined and named in the error.
#[derive(Debug)]
pub struct Segment {
    pub record: SegmentRecord,
    pub(crate) key: Key,
    storage: Arc<Storage>,
    retired: AtomicBool,
    check: Mutex<Check>,
    quarantine: Arc<Quarantine>,
}

/// What is known of a segment's bytes.
#[derive(Debug, Clone)]
enum Check {
    Unchecked,
    /// They matched the manifest's checksum (or this process wrote them).
    Good,
    /// They did not, or could not be read: quarantined, with the reason.
    Damaged(String),
}

/// A segment's whole bytes, checked against its checksum when fetched: what a rewrite or
/// a compaction reads, and copies column chunks from, so that it never starts from bytes
/// that went bad since they were last read.
pub struct OpenSegment {
    pub segment: Arc<Segment>,
    pub(crate) bytes: SegmentBytes,
}

/// How much of a segment's end one request fetches to find its footer.
const FOOTER_GUESS: u64 = 64 << 10;

impl Segment {
    /// Reads the segment's batches; `columns` restricts the read (and what is fetched) to
    /// those columns.
    pub fn read_batches(&self, columns: Option<&[String]>) -> Result<Vec<RecordBatch>> {
        read_batches(&self.fetch(Need::Columns(columns))?, columns)
    }

    /// Reads `columns` of the row groups whose timestamp column `time` may hold a value in
    /// `[from, to)`: queries by event time leave the rest unfetched.
    pub fn read_between(
        &self,
        columns: &[String],
        time: &str,
        window: (i64, i64),
    ) -> Result<Vec<RecordBatch>> {
        let bytes = self.fetch(Need::Between(columns, time, window))?;
        read_batches_between(&bytes, columns, time, window)
    }

    /// Whether the segment may hold any of `amplitude_ids`, from its bloom filters alone.
    pub fn may_hold_users(&self, amplitude_ids: &[i64]) -> Result<bool> {
        may_hold_users(&self.fetch(Need::UserIndex)?, amplitude_ids)
    }

    /// Fails if the segment is known damaged or its bytes are found damaged now (the first
    /// time it is used).
    pub fn ensure_readable(&self) -> Result<()> {
        let check = lock(&self.check).clone();
        match check {
            Check::Good => Ok(()),
            Check::Unchecked => self.fetch_whole().map(drop),
            Check::Damaged(reason) => Err(self.corrupt(reason)),
        }
    }

    /// The whole segment, checked against its checksum now.
    pub fn open(self: &Arc<Self>) -> Result<OpenSegment> {
        Ok(OpenSegment {
            segment: self.clone(),
            bytes: self.fetch_whole()?,
        })
    }

    /// Whether the segment was found damaged.
    pub fn is_damaged(&self) -> bool {
        matches!(*lock(&self.check), Check::Damaged(_))
    }

    /// What `need` decodes: the whole object (checked) the first time the segment is used,
    /// only the needed ranges once its bytes are known good.
    fn fetch(&self, need: Need) -> Result<SegmentBytes> {
        let check = lock(&self.check).clone();
        match check {
            Check::Unchecked => self.fetch_whole(),
            Check::Good => self.fetch_ranges(need),
            Check::Damaged(reason) => Err(self.corrupt(reason)),
        }
    }

    fn fetch_ranges(&self, need: Need) -> Result<SegmentBytes> {
        let storage = &self.storage;
        let mut tail = storage.tail(&self.key, FOOTER_GUESS)?;
        let footer = footer_len(&tail.bytes)?;
        if footer > tail.bytes.len() as u64 {
            tail = storage.tail(&self.key, footer)?;
        }
        let tail_start = tail.size - tail.bytes.len() as u64;
        let footer_only = SegmentBytes::sparse(tail.size, [(tail_start, tail.bytes.clone())]);
        let metadata = ParquetMetaDataReader::new().parse_and_finish(&footer_only)?;
        // Ranges inside the tail are served from it; one that starts before it is fetched
        // whole, since a read must find each column chunk in one piece.
        let ranges: Vec<Range<u64>> = coalesce(ranges_needed(&metadata, need))
            .into_iter()
            .filter(|r| r.start < tail_start)
            .collect();
        let fetched = storage.get_ranges(&self.key, &ranges)?;
        let parts = ranges.iter().map(|r| r.start).zip(fetched);
        Ok(SegmentBytes::sparse(
            tail.size,
            parts.chain([(tail_start, tail.bytes)]),
        ))
    }

    fn fetch_whole(&self) -> Result<SegmentBytes> {
        let mut check = lock(&self.check);
        if let Check::Damaged(reason) = &*check {
            return Err(self.corrupt(reason.clone()));
        }
        let reason = match self.storage.get(&self.key) {
            Ok(bytes) => match self.record.crc32 {
                // Written before checksums existed, or matching.
                None => return Ok(self.good(&mut check, bytes)),
                Some(expected) => match crc32fast::hash(&bytes) {
                    actual if actual == expected => return Ok(self.good(&mut check, bytes)),
                    actual => {
                        format!("its CRC-32 is {actual:08x}, the manifest recorded {expected:08x}")
                    }
                },
            },
            Err(e) => format!("it cannot be read: {e}"),
        };
        self.quarantine.add(DamagedSegment {
            id: self.record.id.clone(),
            project_id: self.record.project_id,
            day: self.record.day.clone(),
            path: self.storage.describe(&self.key),
            reason: reason.clone(),
        });
        *check = Check::Damaged(reason.clone());
        Err(self.corrupt(reason))
    }

    /// The events with server upload time in `[from, to)` (all when `None`).
    pub(crate) fn read_events(
        &self,
        names: &ColumnNames,
        range: Option<(i64, i64)>,
    ) -> Result<Vec<Event>> {
        read_segment(&self.fetch(Need::Columns(None))?, names, range)
    }

    fn good(&self, check: &mut Check, bytes: Bytes) -> SegmentBytes {
        *check = Check::Good;
        SegmentBytes::whole(bytes)
    }

    fn corrupt(&self, what: String) -> StoreError {
        StoreError::Corrupt {
            path: self.storage.describe(&self.key),
            what,
        }
    }
}

impl OpenSegment {
    /// The segment's batches, `columns` only when given.
    pub fn read_batches(&self, columns: Option<&[String]>) -> Result<Vec<RecordBatch>> {
        read_batches(&self.bytes, columns)
    }

    /// The whole row groups whose row range `wanted` accepts, with their indexes.
    pub fn read_row_groups(
        &self,
        wanted: impl Fn(Range<usize>) -> bool,
    ) -> Result<Vec<(usize, RecordBatch)>> {
        read_row_groups(&self.bytes, wanted)
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        if self.retired.load(Ordering::Acquire) {
            if let Err(e) = self.storage.delete(&self.key) {
                tracing::error!(error = %e, "cannot delete a retired segment; it is removed at the next start");
            }
        }
    }
}

/// The committed segments of every project, and the quarantine they report to.
#[derive(Default)]
pub(crate) struct LiveSet {
    by_project: HashMap<i64, Vec<Arc<Segment>>>,
    quarantine: Arc<Quarantine>,
}

impl LiveSet {
    /// Makes committed segments visible to readers. `written` objects were just written by
    /// this process, with the checksum their records carry: known good.
    pub fn add(&mut self, storage: &Arc<Storage>, records: Vec<SegmentRecord>, written: bool) {
        for record in records {
            let key = Storage::key(&SegmentLocation::of(&record));
            let check = Mutex::new(if written {
                Check::Good
            } else {
                Check::Unchecked
            });
            self.by_project
                .entry(record.project_id)
                .or_default()
                .push(Arc::new(Segment {
                    record,
                    key,
                    storage: storage.clone(),
                    retired: AtomicBool::new(false),
                    check,
                    quarantine: self.quarantine.clone(),
                }));
        }
    }

    /// Replaces `retired` segments of a project by committed `added` ones; the retired
    /// objects are deleted once no reader holds them.
    pub fn swap(
        &mut self,
        storage: &Arc<Storage>,
        project_id: i64,
        retired: &[Arc<Segment>],
        added: Vec<SegmentRecord>,
    ) {
        if let Some(list) = self.by_project.get_mut(&project_id) {
            list.retain(|s| !retired.iter().any(|r| Arc::ptr_eq(s, r)));
        }
        for s in retired {
            s.retired.store(true, Ordering::Release);
        }
        self.add(storage, added, true);
    }

    /// The segments of one project.
    pub fn of_project(&self, project_id: i64) -> &[Arc<Segment>] {
        self.by_project.get(&project_id).map_or(&[], Vec::as_slice)
    }

    /// Every live segment, of every project.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Segment>> {
        self.by_project.values().flatten()
    }

    /// The projects that have segments.
    pub fn projects(&self) -> impl Iterator<Item = i64> + '_ {
        self.by_project.keys().copied()
    }

    /// The segments found damaged so far.
    pub fn damaged(&self) -> Vec<DamagedSegment> {
        self.quarantine.list()
    }

    /// How many segments there are and their bytes, for the gauges.
    pub fn totals(&self) -> (usize, i64) {
        (self.all().count(), self.all().map(|s| s.record.bytes).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, bytes: &[u8]) -> SegmentRecord {
        SegmentRecord {
            id: id.into(),
            project_id: 1,
            day: "2026-12-01".into(),
            rows: 1,
            bytes: bytes.len() as i64,
            crc32: Some(crc32fast::hash(bytes)),
            ..Default::default()
        }
    }

    #[test]
    fn a_retired_segment_is_deleted_when_its_last_reader_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Arc::new(Storage::local(dir.path()).unwrap());
        let old = record("old", b"old bytes");
        storage
            .put(
                &Storage::key(&SegmentLocation::of(&old)),
                Bytes::from_static(b"old bytes"),
            )
            .unwrap();
        let mut live = LiveSet::default();
        live.add(&storage, vec![old.clone()], false);
        let reader = live.of_project(1)[0].clone();
        let retired = live.of_project(1).to_vec();
        live.swap(&storage, 1, &retired, vec![]);
        drop(retired);
        assert!(live.of_project(1).is_empty(), "no longer visible");
        let key = Storage::key(&SegmentLocation::of(&old));
        assert!(
            storage.size(&key).unwrap().is_some(),
            "a reader still holds it"
        );
        drop(reader);
        assert_eq!(
            storage.size(&key).unwrap(),
            None,
            "deleted with its last holder"
        );
    }

    #[test]
    fn bytes_that_do_not_match_the_checksum_are_quarantined_and_never_decoded() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Arc::new(Storage::local(dir.path()).unwrap());
        let mut bad = record("bad", b"the bytes written");
        bad.crc32 = Some(crc32fast::hash(b"other bytes"));
        let key = Storage::key(&SegmentLocation::of(&bad));
        storage
            .put(&key, Bytes::from_static(b"the bytes written"))
            .unwrap();
        let mut live = LiveSet::default();
        live.add(&storage, vec![bad], false);
        let segment = live.of_project(1)[0].clone();
        assert!(matches!(
            segment.ensure_readable(),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(segment.is_damaged());
        assert_eq!(live.damaged().len(), 1);
        assert!(
            matches!(segment.open(), Err(StoreError::Corrupt { .. })),
            "stays refused"
        );
    }
}
