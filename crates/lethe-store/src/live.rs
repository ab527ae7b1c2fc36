//! The live segment set: the segments the manifest says are committed, per project, and
//! the handle through which every read of a segment's bytes goes (checked against the
//! manifest's checksum, quarantined when damaged, deleted once retired and let go).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

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
    /// The segment's footer (metadata and trailer), kept once read while the cache has room,
    /// so that later reads fetch only the chunks they decode: one request instead of two,
    /// which is what a read from a bucket costs. It goes with the segment.
    footer: OnceLock<Bytes>,
    footers: Arc<FooterCache>,
}

/// The memory the live segments' cached footers may take together. A footer is a few to a
/// few tens of KiB, so this holds those of thousands of segments; past it, reads fetch the
/// footer each time, as they did before there was a cache.
const FOOTER_CACHE_BYTES: usize = 64 << 20;

/// How much of [`FOOTER_CACHE_BYTES`] the live segments' footers take.
#[derive(Debug, Default)]
pub(crate) struct FooterCache {
    used: AtomicUsize,
}

impl FooterCache {
    /// Reserves room for `len` bytes, if there is.
    fn reserve(&self, len: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used + len <= FOOTER_CACHE_BYTES).then_some(used + len)
            })
            .is_ok()
    }

    fn release(&self, len: usize) {
        self.used.fetch_sub(len, Ordering::AcqRel);
    }
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

    /// What a rewrite reads of the segment first: the `columns` it matches on, and, from a
    /// bucket, where one more request costs more than the bytes it carries, the whole object
    /// (checked) at once, so that a segment that matches needs no second request. Locally
    /// the whole object is read only for a segment that matches.
    pub fn read_to_match(
        self: &Arc<Self>,
        columns: &[String],
    ) -> Result<(Vec<RecordBatch>, Option<OpenSegment>)> {
        if self.storage.is_local() {
            return Ok((self.read_batches(Some(columns))?, None));
        }
        let open = self.open()?;
        Ok((open.read_batches(Some(columns))?, Some(open)))
    }

    /// Takes over the deletion of a retired segment that nobody else holds: its key, which
    /// the caller deletes (in one request with others, which from a bucket is one round trip
    /// instead of one per object). A segment a reader still holds comes back, and its object
    /// is deleted when the last holder lets go.
    pub(crate) fn take_unheld(self: Arc<Self>) -> std::result::Result<Key, Arc<Self>> {
        if !self.retired.load(Ordering::Acquire) {
            return Err(self);
        }
        let segment = Arc::try_unwrap(self)?;
        segment.retired.store(false, Ordering::Release);
        Ok(segment.key.clone())
    }

    /// Whether a commit retired the segment.
    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
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
        // The bytes at hand before the read: the cached footer, or the object's last bytes.
        let (size, have) = match self.footer.get() {
            Some(footer) => (self.record.bytes as u64, footer.clone()),
            None => {
                let mut tail = storage.tail(&self.key, FOOTER_GUESS)?;
                let len = footer_len(&tail.bytes)? as usize;
                if len > tail.bytes.len() {
                    tail = storage.tail(&self.key, len as u64)?;
                }
                self.keep_footer(tail.size, &tail.bytes.slice(tail.bytes.len() - len..));
                (tail.size, tail.bytes)
            }
        };
        let have_start = size - have.len() as u64;
        let footer_only = SegmentBytes::sparse(size, [(have_start, have.clone())]);
        let metadata = ParquetMetaDataReader::new().parse_and_finish(&footer_only)?;
        // Ranges inside the bytes at hand are served from them; one that starts before is
        // fetched whole, since a read must find each column chunk in one piece.
        let ranges: Vec<Range<u64>> = coalesce(ranges_needed(&metadata, need))
            .into_iter()
            .filter(|r| r.start < have_start)
            .collect();
        let fetched = storage.get_ranges(&self.key, &ranges)?;
        let parts = ranges.iter().map(|r| r.start).zip(fetched);
        Ok(SegmentBytes::sparse(
            size,
            parts.chain([(have_start, have)]),
        ))
    }

    /// Caches the footer of the object of `size` bytes, if the cache has room (and the size
    /// is the manifest's: the footer is found from the end).
    fn keep_footer(&self, size: u64, footer: &Bytes) {
        if size == self.record.bytes as u64
            && self.footer.get().is_none()
            && self.footers.reserve(footer.len())
        {
            // Copied out of the read's buffer, so that only the footer is kept.
            if let Err(unused) = self.footer.set(Bytes::copy_from_slice(footer)) {
                self.footers.release(unused.len());
            }
        }
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
        if let Ok(len) = footer_len(&bytes) {
            if let Some(start) = bytes.len().checked_sub(len as usize) {
                self.keep_footer(bytes.len() as u64, &bytes.slice(start..));
            }
        }
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
        if let Some(footer) = self.footer.get() {
            self.footers.release(footer.len());
        }
        if self.retired.load(Ordering::Acquire) {
            if let Err(e) = self.storage.delete_segments(vec![self.key.clone()]) {
                tracing::error!(error = %e, "cannot delete a retired segment; it is tried again");
            }
        }
    }
}

/// The committed segments of every project, and the quarantine they report to.
#[derive(Default)]
pub(crate) struct LiveSet {
    by_project: HashMap<i64, Vec<Arc<Segment>>>,
    quarantine: Arc<Quarantine>,
    footers: Arc<FooterCache>,
    /// Segments retired here (their project and key), whose objects go when their last
    /// holder lets go; kept until the next swap after that.
    retired: Vec<(i64, Key, Weak<Segment>)>,
}

impl LiveSet {
    /// No segments yet, of the store of `scope`'s projects.
    pub fn for_scope(scope: lethe_meta::ShardScope) -> LiveSet {
        LiveSet {
            quarantine: Arc::new(Quarantine::of(scope)),
            ..LiveSet::default()
        }
    }

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
                    footer: OnceLock::new(),
                    footers: self.footers.clone(),
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
        self.retired.retain(|(_, _, s)| s.strong_count() > 0);
        for s in retired {
            s.retired.store(true, Ordering::Release);
            self.retired
                .push((project_id, s.key.clone(), Arc::downgrade(s)));
        }
        self.add(storage, added, true);
    }

    /// The segments of a project retired lately: those someone still holds (a reader, or
    /// the commit's caller until it lets go), whose objects are still there, and those let
    /// go since the last swap, whose deletion may have failed or be under way.
    pub fn retired_of(&self, project_id: i64) -> Vec<(Key, Weak<Segment>)> {
        self.retired
            .iter()
            .filter(|(project, _, _)| *project == project_id)
            .map(|(_, key, segment)| (key.clone(), segment.clone()))
            .collect()
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

    /// A stored segment of three columns, 2 000 rows, and its record.
    fn stored_segment(storage: &Storage, id: &str) -> (SegmentRecord, RecordBatch) {
        use arrow_array::{Int64Array, StringArray, TimestampMillisecondArray};
        let rows = 2_000;
        let batch = RecordBatch::try_from_iter([
            (
                crate::base_column::SERVER_UPLOAD_TIME,
                Arc::new(TimestampMillisecondArray::from_iter_values(0..rows)) as _,
            ),
            (
                "a",
                Arc::new(StringArray::from_iter_values(
                    (0..rows).map(|i| format!("value {i}")),
                )) as _,
            ),
            ("b", Arc::new(Int64Array::from_iter_values(0..rows)) as _),
        ])
        .unwrap();
        let (bytes, _) = crate::segment::write_batch(&batch).unwrap();
        let stored = record(id, &bytes);
        storage
            .put(&Storage::key(&SegmentLocation::of(&stored)), bytes)
            .unwrap();
        (stored, batch)
    }

    #[test]
    fn reads_through_the_cached_footer_equal_the_first_and_the_cache_goes_with_the_segment() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Arc::new(Storage::local(dir.path()).unwrap());
        let (checked, batch) = stored_segment(&storage, "checked");
        let (written, _) = stored_segment(&storage, "written");
        let mut live = LiveSet::default();
        // One read for the first time (whole, checked), one known good (ranges).
        live.add(&storage, vec![checked], false);
        live.add(&storage, vec![written], true);
        let segments = live.of_project(1).to_vec();
        let columns = ["a".to_string()];
        let expected = vec![batch.project(&[1]).unwrap()];
        for segment in &segments {
            assert!(segment.footer.get().is_none());
            let first = segment.read_batches(Some(&columns)).unwrap();
            let footer = segment
                .footer
                .get()
                .expect("kept after the first read")
                .clone();
            assert_eq!(
                &footer[footer.len() - 4..],
                b"PAR1",
                "the footer and its trailer"
            );
            let again = segment.read_batches(Some(&columns)).unwrap();
            let concat = |b: &[RecordBatch]| {
                arrow_select::concat::concat_batches(&b[0].schema(), b).unwrap()
            };
            assert_eq!(concat(&first), concat(&expected));
            assert_eq!(
                concat(&again),
                concat(&expected),
                "through the cached footer"
            );
        }
        let held: usize = segments.iter().map(|s| s.footer.get().unwrap().len()).sum();
        assert_eq!(live.footers.used.load(Ordering::Acquire), held);
        live.swap(&storage, 1, &segments, vec![]);
        drop(segments);
        assert_eq!(
            live.footers.used.load(Ordering::Acquire),
            0,
            "released with the retired segments"
        );
    }

    #[test]
    fn the_footer_cache_takes_no_more_than_its_budget() {
        let cache = FooterCache::default();
        assert!(cache.reserve(FOOTER_CACHE_BYTES - 10));
        assert!(cache.reserve(10));
        assert!(!cache.reserve(1), "full");
        cache.release(10);
        assert!(cache.reserve(1));
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
