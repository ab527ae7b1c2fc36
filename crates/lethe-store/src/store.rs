//! The store: memtable, WAL writer (group commit), flush, compaction and snapshots.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow_array::{Array, ArrayRef, RecordBatch, StringArray, TimestampMillisecondArray};
use bytes::Bytes;
use lethe_event::{Day, Event, ParsedEvent};
use lethe_meta::{
    now_ms, CatalogDelta, CatalogKind, Commit, CountDelta, MetaStore, ProfileRecord, SegmentRecord,
};

use object_store::path::Path as Key;
use parquet::file::metadata::ParquetMetaDataReader;

use crate::faults::failpoint;
use crate::fetched::{coalesce, SegmentBytes};
use crate::health::{DamagedSegment, Quarantine};
use crate::layout::DataDir;
use crate::parallel::parallel_map;
use crate::resolver::{KeyKind, KnownUsers, Resolver, Ticket, UserProfile};
use crate::schema::PropertyKind;
use crate::segment::{
    events_to_batch, footer_len, may_hold_users, ranges_needed, read_batches, read_batches_between,
    read_row_groups, read_segment, rewrite_columns, rewrite_row_groups, sort_for_segment,
    write_batch, ColumnNames, Need,
};
use crate::storage::{SegmentLocation, Storage};
use crate::wal::{self, Damage, WalFile, WalRecord};
use crate::{Result, StoreError, Unavailable};

/// Tuning of flush and compaction.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Flush when the memtable holds this many events.
    pub flush_events: usize,
    /// Flush events older than this even when the memtable is small.
    pub flush_interval: Duration,
    /// Compact a day once it has this many small segments.
    pub compact_min_segments: usize,
    /// Segments with fewer rows count as small.
    pub compact_small_rows: i64,
    /// Most rows one compaction merges: bounds its memory, and its output is not small.
    pub compact_max_rows: i64,
    /// Start even if a WAL file is damaged before its end, keeping the records before the
    /// damage (the operator accepts losing the rest).
    pub salvage_wal: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            flush_events: 100_000,
            flush_interval: Duration::from_secs(10),
            compact_min_segments: 4,
            compact_small_rows: 64 * 1024,
            compact_max_rows: 256 * 1024,
            salvage_wal: false,
        }
    }
}

/// A live segment. When the manifest retires it, its object is deleted as soon as the last
/// reader holding it lets go. Every read of its bytes goes through here, so a damaged
/// object is never decoded: it is quarantined and named in the error.
#[derive(Debug)]
pub struct Segment {
    pub record: SegmentRecord,
    key: Key,
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
    bytes: SegmentBytes,
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
        self.fetch(Need::Columns(Some(&[]))).map(drop)
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

/// A consistent view of one project: committed segments plus the events not yet flushed.
/// Every event is in exactly one of the two.
#[derive(Default)]
pub struct Snapshot {
    pub segments: Vec<Arc<Segment>>,
    pub memtable: Vec<Arc<Event>>,
}

/// The new contents of one segment of a partition rewrite.
pub enum Output {
    /// The rows of `source` unchanged in number: `drop` columns left out, `replace` columns
    /// re-encoded, every other column chunk copied without decoding.
    Columns {
        source: OpenSegment,
        drop: Vec<String>,
        replace: HashMap<String, ArrayRef>,
    },
    /// The row groups of `source` with those in `replaced` re-encoded from new rows (same
    /// schema; empty removes the row group) and the others copied without decoding.
    RowGroups {
        source: OpenSegment,
        replaced: BTreeMap<usize, RecordBatch>,
    },
}

impl Output {
    fn source(&self) -> &OpenSegment {
        match self {
            Output::Columns { source, .. } | Output::RowGroups { source, .. } => source,
        }
    }
}

/// A rewrite of one partition, in two phases: the caller reads the live segments, stages
/// their new contents (written, invisible), then commits them with its own progress in one
/// metadata transaction. It holds the manifest writer from [`Store::begin_rewrite`] to the
/// commit, so no flush or compaction interleaves; dropped uncommitted, it deletes what it
/// staged and changes nothing.
pub struct PartitionRewrite<'a> {
    inner: &'a Inner,
    _writer: MutexGuard<'a, ()>,
    project_id: i64,
    live: Vec<Arc<Segment>>,
    /// Sources of staged outputs: retired by the commit.
    retiring: Vec<Arc<Segment>>,
    staged: Vec<SegmentRecord>,
}

impl PartitionRewrite<'_> {
    /// The partition's live segments.
    pub fn live(&self) -> &[Arc<Segment>] {
        &self.live
    }

    /// Writes the new contents of segments of the partition (in parallel, one per core);
    /// each source is retired by the commit. An output with no row left writes nothing.
    pub fn stage(&mut self, outputs: Vec<Output>) -> Result<()> {
        let inner = self.inner;
        let mut failure = None;
        for (output, written) in outputs
            .iter()
            .zip(parallel_map(outputs.iter().collect(), |o| {
                inner.write_output(o)
            }))
        {
            match written {
                Ok(record) => {
                    self.staged.extend(record);
                    self.retiring.push(output.source().segment.clone());
                }
                Err(e) => failure = Some(e),
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// Bytes of the segments staged so far.
    pub fn staged_bytes(&self) -> u64 {
        self.staged.iter().map(|r| r.bytes as u64).sum()
    }

    /// Swaps the staged segments for their sources in one metadata transaction that also
    /// removes `catalog` counts and records `task_progress` (task id, progress JSON).
    /// Returns the retired segments: their objects are deleted once the caller and every
    /// reader have dropped them.
    pub fn commit(
        mut self,
        catalog: CatalogDelta,
        task_progress: Option<(i64, String)>,
    ) -> Result<Vec<Arc<Segment>>> {
        let inner = self.inner;
        let added = std::mem::take(&mut self.staged);
        let retiring = std::mem::take(&mut self.retiring);
        let commit = Commit {
            add: added.clone(),
            remove: retiring.iter().map(|s| s.record.id.clone()).collect(),
            catalog: vec![(self.project_id, catalog)],
            task_progress,
            ..Default::default()
        };
        failpoint("rewrite:after_write");
        if let Err(e) = inner.meta.commit(&commit) {
            inner.discard(&added);
            return Err(e.into());
        }
        failpoint("rewrite:after_commit");
        inner.swap_live(self.project_id, &retiring, added);
        Ok(retiring)
    }
}

impl Drop for PartitionRewrite<'_> {
    fn drop(&mut self) {
        self.inner.discard(&self.staged);
    }
}

/// What an ingestion call did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    /// Events stored.
    pub stored: usize,
    /// Events dropped as repeats of an insert_id already stored.
    pub duplicates: usize,
    /// Events refused (bulk import only: ingestion refuses the whole request), by index in
    /// the input, with the field whose keys would pass the daily limit.
    pub refused: Vec<(usize, &'static str)>,
}

type Tagged = (i64, Arc<Event>);

/// Segments written but not yet committed, with the catalog counts they add.
#[derive(Default)]
struct Written {
    records: Vec<SegmentRecord>,
    catalog: Vec<(i64, CatalogDelta)>,
}

/// A WAL record written but not yet fsynced: its batch, events and whom to tell.
struct Pending {
    ticket: Ticket,
    project_id: i64,
    events: Vec<Arc<Event>>,
    ack: SyncSender<Result<()>>,
}

#[derive(Default)]
struct State {
    segments: HashMap<i64, Vec<Arc<Segment>>>,
    quarantine: Arc<Quarantine>,
    active: Vec<Tagged>,
    active_since: Option<Instant>,
    frozen: Vec<Arc<Vec<Tagged>>>,
}

enum WalCommand {
    Append {
        ticket: Ticket,
        project_id: i64,
        events: Vec<Arc<Event>>,
        ack: SyncSender<Result<()>>,
    },
    /// Answers once every batch resolved in `epoch` before it is durable (an error if one
    /// failed); with `rotate`, then seals the file and freezes the memtable, answering the
    /// highest sealed sequence number.
    Barrier {
        epoch: u64,
        rotate: bool,
        ack: SyncSender<Result<u64>>,
    },
}

struct Inner {
    dir: DataDir,
    storage: Arc<Storage>,
    meta: Arc<MetaStore>,
    config: StoreConfig,
    state: RwLock<State>,
    resolver: Mutex<Resolver>,
    wal: Mutex<Sender<WalCommand>>,
    /// One manifest writer at a time (flush, compaction, later deletion).
    writer: Mutex<()>,
    /// Why the WAL refuses writes, while it does (set by the WAL writer).
    wal_refusal: Mutex<Option<Unavailable>>,
    wake: (Mutex<bool>, Condvar),
}

/// The WAL writer thread's state. Fail-stop: after a failed write or fsync every pending
/// batch is refused, the resolver rolls back what they changed (a new epoch: batches resolved
/// before the rollback are refused too), and the file is cut back to its last fsync before it
/// takes another record.
struct WalWriter<'a> {
    inner: &'a Inner,
    file: WalFile,
    appended: Vec<Pending>,
    /// Batches resolved in another epoch were rolled back and are refused.
    epoch: u64,
    durable: Arc<AtomicU64>,
    /// Why the last failure happened: the answer for refused batches.
    failure: Option<Unavailable>,
}

impl WalWriter<'_> {
    fn handle(&mut self, command: WalCommand) {
        match command {
            WalCommand::Append {
                ticket,
                project_id,
                events,
                ack,
            } => {
                if let Err(e) = self.accepting(ticket.epoch) {
                    let _ = ack.send(Err(e));
                    return;
                }
                let record = WalRecord { project_id, events };
                match self.file.append(&record) {
                    Ok(()) => self.appended.push(Pending {
                        ticket,
                        project_id,
                        events: record.events,
                        ack,
                    }),
                    Err(e) => {
                        let refusal = self.fail(e);
                        let _ = ack.send(Err(refusal));
                    }
                }
            }
            WalCommand::Barrier { epoch, rotate, ack } => {
                self.commit_appended();
                let result = self.accepting(epoch).and_then(|()| match rotate {
                    true => self.rotate(),
                    false => Ok(self.file.seq),
                });
                let _ = ack.send(result);
            }
        }
    }

    /// Ok when a batch of `epoch` can be appended: no rollback since it was resolved, and the
    /// file is whole (repaired now if a failure broke it).
    fn accepting(&mut self, epoch: u64) -> Result<()> {
        let refused = StoreError::Unavailable(self.failure.unwrap_or(Unavailable::Io));
        if epoch != self.epoch {
            return Err(refused);
        }
        if self.file.is_broken() {
            if let Err(e) = self.file.repair() {
                tracing::error!(error = %e, "WAL repair failed; ingestion stays refused");
                // The refused batch (and any resolved after it) must leave no trace.
                self.epoch = lock(&self.inner.resolver).rollback();
                return Err(refused);
            }
            tracing::warn!("WAL repaired: accepting writes again");
            self.set_refusal(None);
        }
        Ok(())
    }

    /// One fsync for every record appended since the last one, then visibility, then acks.
    fn commit_appended(&mut self) {
        let Some(last) = self.appended.last() else {
            return;
        };
        let last_batch = last.ticket.batch;
        if let Err(e) = self.file.sync() {
            self.fail(e);
            return;
        }
        self.durable.fetch_max(last_batch, Ordering::AcqRel);
        metrics::gauge!("lethe_wal_bytes").set(self.file.bytes as f64);
        for p in self.appended.drain(..) {
            // Identifications are not events: only the profile changes they made wait for
            // the next flush to reach the metadata store.
            let visible = p.events.into_iter().filter(|e| !e.profile_only).collect();
            self.inner.push_active(p.project_id, visible);
            let _ = p.ack.send(Ok(()));
        }
    }

    /// A write or fsync failed: refuses every batch not yet durable, rolls back their
    /// resolution, and tries to repair the file. Returns the refusal for the caller's batch.
    fn fail(&mut self, error: StoreError) -> StoreError {
        let reason = Unavailable::of(&error);
        tracing::error!(error = %error, "WAL write failed: refusing batches until it is repaired");
        metrics::counter!("lethe_wal_failures_total").increment(1);
        self.set_refusal(Some(reason));
        self.failure = Some(reason);
        for p in self.appended.drain(..) {
            let _ = p.ack.send(Err(StoreError::Unavailable(reason)));
        }
        self.epoch = lock(&self.inner.resolver).rollback();
        if self.file.repair().is_ok() {
            self.set_refusal(None);
        }
        StoreError::Unavailable(reason)
    }

    /// Publishes whether the WAL refuses writes (for `/healthz` and the metric).
    fn set_refusal(&self, refusal: Option<Unavailable>) {
        metrics::gauge!("lethe_wal_available").set(if refusal.is_some() { 0.0 } else { 1.0 });
        *lock(&self.inner.wal_refusal) = refusal;
    }

    /// Seals the current file (unless it is empty) and freezes the memtable.
    fn rotate(&mut self) -> Result<u64> {
        let sealed = if self.file.bytes == 0 {
            // Nothing appended since it was created: keep it, covering only older files.
            self.file.seq - 1
        } else {
            let sealed = self.file.seq;
            self.file = WalFile::create(&self.inner.dir, sealed + 1)?;
            sealed
        };
        let mut state = self.inner.state.write().unwrap_or_else(|p| p.into_inner());
        let active = std::mem::take(&mut state.active);
        state.active_since = None;
        if !active.is_empty() {
            state.frozen.push(Arc::new(active));
        }
        Ok(sealed)
    }
}

/// Handle to the event store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    threads: Arc<Mutex<Threads>>,
}

/// The store's two threads, stopped in order by [`Store::shutdown`].
struct Threads {
    wal_writer: Option<JoinHandle<()>>,
    background: Option<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Store {
    /// Opens the store: removes crash leftovers, loads the manifest, replays the WAL.
    pub fn open(dir: DataDir, meta: Arc<MetaStore>, config: StoreConfig) -> Result<Store> {
        dir.create()?;
        if dir.legacy_tmp_dir().exists() {
            std::fs::remove_dir_all(dir.legacy_tmp_dir())?;
        }
        let storage = Arc::new(Storage::local(&dir.segments_dir())?);
        storage.remove_staged_uploads()?;
        let mut state = State::default();
        state.add_live(&storage, meta.live_segments()?, false);
        remove_unreferenced_segments(&storage, &state)?;
        let mut resolver = Resolver::load(
            meta.load_identities()?,
            meta.load_profiles()?,
            meta.load_groups()?,
            meta.amplitude_id_high()?,
        )?;
        resolver.set_suppressed(meta.suppressions(None)?);
        remember_recent_insert_ids(&mut resolver, &state)?;
        remember_recent_keys(&mut resolver, &state, &meta)?;
        let checkpoint = meta.wal_checkpoint()?;
        wal::remove_through(&dir, checkpoint)?;
        let last_seq =
            replay_wal(&dir, config.salvage_wal, &mut resolver, &mut state)?.unwrap_or(checkpoint);
        let wal_file = WalFile::create(&dir, last_seq + 1)?;
        let (tx, rx) = mpsc::channel();
        let inner = Arc::new(Inner {
            dir,
            storage,
            meta,
            config,
            state: RwLock::new(state),
            resolver: Mutex::new(resolver),
            wal: Mutex::new(tx),
            writer: Mutex::new(()),
            wal_refusal: Mutex::new(None),
            wake: (Mutex::new(false), Condvar::new()),
        });
        inner.publish_gauges();
        let writer = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("lethe-wal".into())
                .spawn(move || inner.run_wal_writer(rx, wal_file))?
        };
        let background = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("lethe-flush".into())
                .spawn(move || inner.run_background())?
        };
        Ok(Store {
            inner,
            threads: Arc::new(Mutex::new(Threads {
                wal_writer: Some(writer),
                background: Some(background),
            })),
        })
    }

    /// Bulk import: resolves the events and writes them straight into committed segments
    /// (one per day, days in parallel), bypassing WAL and memtable. Durable when it returns.
    pub fn import(&self, project_id: i64, events: Vec<ParsedEvent>) -> Result<IngestOutcome> {
        self.inner.import(project_id, events)
    }

    /// Resolves and stores events; returns once they are fsynced in the WAL (group commit
    /// with concurrent callers) and visible to readers.
    ///
    /// Identifications (`profile_only`: the Identify APIs, `$groupidentify`) change
    /// profiles and groups the same way and are never visible as events; their changes
    /// reach the metadata store with the next flush, and replay restores them after a crash.
    pub fn ingest(&self, project_id: i64, events: Vec<ParsedEvent>) -> Result<IngestOutcome> {
        let total = events.len();
        let now = now_ms();
        let pending = {
            let mut resolver = lock(&self.inner.resolver);
            let mut resolved: Vec<Arc<Event>> = Vec::with_capacity(events.len());
            for (index, event) in events.into_iter().enumerate() {
                match resolver.resolve(project_id, event, now) {
                    Ok(Some(e)) => resolved.push(Arc::new(e)),
                    Ok(None) => {}
                    Err(kind) => {
                        // One event over a limit refuses the request: undo the others too.
                        resolver.discard_open();
                        return Err(StoreError::KeysPerDay {
                            event: index,
                            field: kind.field(),
                        });
                    }
                }
            }
            let stored = resolved.len();
            if stored == 0 {
                None
            } else {
                // Sent while the resolver is held, so WAL order is resolution order.
                let (ack, done) = mpsc::sync_channel(1);
                lock(&self.inner.wal)
                    .send(WalCommand::Append {
                        ticket: resolver.seal(),
                        project_id,
                        events: resolved,
                        ack,
                    })
                    .map_err(|_| StoreError::Closed)?;
                Some((stored, done))
            }
        };
        let stored = match pending {
            None => 0,
            Some((stored, done)) => {
                done.recv().map_err(|_| StoreError::Closed)??;
                stored
            }
        };
        self.inner.maybe_wake_flusher();
        Ok(IngestOutcome {
            stored,
            duplicates: total - stored,
            refused: Vec::new(),
        })
    }

    /// The current profile of the user a user_id (else a device_id) names, if known.
    pub fn user_profile(
        &self,
        project_id: i64,
        user_id: Option<&str>,
        device_id: Option<&str>,
    ) -> Option<UserProfile> {
        lock(&self.inner.resolver).profile(project_id, user_id, device_id)
    }

    /// Everything of one project visible now, restricted to upload times in `[from, to)`.
    pub fn snapshot(&self, project_id: i64, range: Option<(i64, i64)>) -> Snapshot {
        let state = self.inner.state.read().unwrap_or_else(|p| p.into_inner());
        let in_range = |t: i64| range.is_none_or(|(from, to)| t >= from && t < to);
        let segments = state
            .segments
            .get(&project_id)
            .into_iter()
            .flatten()
            .filter(|s| {
                range.is_none_or(|(from, to)| s.record.max_time >= from && s.record.min_time < to)
            })
            .cloned()
            .collect();
        let memtable = state
            .frozen
            .iter()
            .flat_map(|f| f.iter())
            .chain(state.active.iter())
            .filter(|(p, e)| *p == project_id && in_range(e.server_upload_time))
            .map(|(_, e)| e.clone())
            .collect();
        Snapshot { segments, memtable }
    }

    /// Every event of one project with upload time in `[from, to)` (all when `None`), from
    /// one snapshot, ordered by upload time and uuid.
    pub fn events(&self, project_id: i64, range: Option<(i64, i64)>) -> Result<Vec<Event>> {
        let mut events = Vec::new();
        self.for_each_day(project_id, range, |day| {
            events.extend(day);
            Ok(())
        })?;
        Ok(events)
    }

    /// The events of one project with upload time in `[from, to)` (all when `None`), from one
    /// snapshot, handed to `each` one UTC day at a time in day order, each day ordered by
    /// upload time and uuid: memory holds one day's events, however long the range.
    pub fn for_each_day(
        &self,
        project_id: i64,
        range: Option<(i64, i64)>,
        mut each: impl FnMut(Vec<Event>) -> Result<()>,
    ) -> Result<()> {
        let snapshot = self.snapshot(project_id, range);
        let names = self.inner.column_names(project_id)?;
        let mut days: BTreeMap<String, Snapshot> = BTreeMap::new();
        for segment in snapshot.segments {
            let day = segment.record.day.clone();
            days.entry(day).or_default().segments.push(segment);
        }
        for event in snapshot.memtable {
            let day = Day::of_ms(event.server_upload_time).to_string();
            days.entry(day).or_default().memtable.push(event);
        }
        for Snapshot { segments, memtable } in days.into_values() {
            let mut events: Vec<Event> = memtable.iter().map(|e| (**e).clone()).collect();
            drop(memtable);
            for segment in &segments {
                events.extend(segment.read_events(&names, range)?);
            }
            events.sort_by_key(|e| (e.server_upload_time, e.uuid));
            each(events)?;
        }
        Ok(())
    }

    /// Writes every not-yet-flushed event into segments and commits them.
    pub fn flush(&self) -> Result<()> {
        self.inner.flush()
    }

    /// Merges small segments of each day.
    pub fn compact(&self) -> Result<()> {
        self.inner.compact()
    }

    /// Begins a rewrite of one partition (project and day): see [`PartitionRewrite`].
    pub fn begin_rewrite(&self, project_id: i64, day: &str) -> PartitionRewrite<'_> {
        let inner = &*self.inner;
        let writer = lock(&inner.writer);
        let live = {
            let state = inner.state.read().unwrap_or_else(|p| p.into_inner());
            state
                .segments
                .get(&project_id)
                .into_iter()
                .flatten()
                .filter(|s| s.record.day == day)
                .cloned()
                .collect()
        };
        PartitionRewrite {
            inner,
            _writer: writer,
            project_id,
            live,
            retiring: Vec::new(),
            staged: Vec::new(),
        }
    }

    /// Drops `segments` and waits until their objects are deleted (readers still holding
    /// one delay it; a reader never holds one for long).
    pub fn await_unlinked(&self, segments: Vec<Arc<Segment>>) -> Result<()> {
        let keys: Vec<Key> = segments.iter().map(|s| s.key.clone()).collect();
        drop(segments);
        let deadline = Instant::now() + Duration::from_secs(300);
        for key in keys {
            while self.inner.storage.size(&key)?.is_some() {
                if Instant::now() > deadline {
                    return Err(StoreError::Io(std::io::Error::other(
                        "retired segments are still held by a reader",
                    )));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    }

    /// Unsets `keys` in every current user profile of the project, durably. Returns how many
    /// profiles changed.
    pub fn remove_profile_keys(&self, project_id: i64, keys: &[String]) -> Result<usize> {
        let _writer = lock(&self.inner.writer);
        let profiles: Vec<ProfileRecord> =
            lock(&self.inner.resolver).remove_profile_keys(project_id, keys);
        self.inner.meta.commit(&Commit {
            profiles: profiles.clone(),
            ..Default::default()
        })?;
        Ok(profiles.len())
    }

    /// Unsets `keys` in every group of the project, durably. Returns how many groups changed.
    pub fn remove_group_keys(&self, project_id: i64, keys: &[String]) -> Result<usize> {
        let _writer = lock(&self.inner.writer);
        let groups = lock(&self.inner.resolver).remove_group_keys(project_id, keys);
        let changed = groups.len();
        self.inner.meta.commit(&Commit {
            groups,
            ..Default::default()
        })?;
        Ok(changed)
    }

    /// Which of these ids the project knows (identity mappings and profiles).
    pub fn known_users(
        &self,
        project_id: i64,
        amplitude_ids: &[i64],
        user_ids: &[String],
    ) -> KnownUsers {
        lock(&self.inner.resolver).known_users(project_id, amplitude_ids, user_ids)
    }

    /// Erases users' identity mappings and profiles, in memory and durably. Events resolved
    /// before this call reach segments with the next flush; later events get new ids.
    pub fn forget_users(&self, project_id: i64, amplitude_ids: &[i64]) -> Result<()> {
        let _writer = lock(&self.inner.writer);
        lock(&self.inner.resolver).forget(project_id, amplitude_ids);
        self.inner.meta.forget_users(project_id, amplitude_ids)?;
        Ok(())
    }

    /// Why the WAL refuses writes right now, if it does.
    pub fn wal_refusal(&self) -> Option<Unavailable> {
        *lock(&self.inner.wal_refusal)
    }

    /// The segments found damaged so far (see [`Segment::file`]).
    pub fn damaged_segments(&self) -> Vec<DamagedSegment> {
        let state = self.inner.state.read().unwrap_or_else(|p| p.into_inner());
        state.quarantine.list()
    }

    /// Re-reads the suppression lists after a change.
    pub fn reload_suppressions(&self) -> Result<()> {
        let list = self.inner.meta.suppressions(None)?;
        lock(&self.inner.resolver).set_suppressed(list);
        Ok(())
    }

    /// Stops background work, flushes everything, then stops the WAL writer.
    pub fn shutdown(&self) -> Result<()> {
        let mut threads = lock(&self.threads);
        *lock(&self.inner.wake.0) = true;
        self.inner.wake.1.notify_all();
        if let Some(t) = threads.background.take() {
            let _ = t.join();
        }
        let result = self.inner.flush();
        let (closed, _) = mpsc::channel();
        *lock(&self.inner.wal) = closed;
        if let Some(t) = threads.wal_writer.take() {
            let _ = t.join();
        }
        result
    }
}

impl State {
    /// Makes committed segments visible to readers. `written` files were just written by
    /// this process, with the checksum their records carry: known good.
    fn add_live(&mut self, storage: &Arc<Storage>, records: Vec<SegmentRecord>, written: bool) {
        for record in records {
            let key = Storage::key(&SegmentLocation::of(&record));
            let check = Mutex::new(if written {
                Check::Good
            } else {
                Check::Unchecked
            });
            self.segments
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
}

/// Replays the WAL files left after the checkpoint into the memtable and the resolver;
/// returns the last file's sequence number. A torn tail of the last file (a crash cut its
/// last write short: never acknowledged) is cut off with a warning; damage anywhere else
/// stops the start, naming the file and offset, unless `salvage`.
fn replay_wal(
    dir: &DataDir,
    salvage: bool,
    resolver: &mut Resolver,
    state: &mut State,
) -> Result<Option<u64>> {
    let seqs = wal::list(dir)?;
    let mut replayed_identifications = false;
    for (i, &seq) in seqs.iter().enumerate() {
        let replay = wal::read(dir, seq)?;
        let file = dir.wal_file(seq);
        let kept = replay.records.len();
        match replay.damage {
            None => {}
            Some(Damage::TornTail { offset, bytes }) if i + 1 == seqs.len() => {
                tracing::warn!(file = %file.display(), offset, bytes, records_kept = kept,
                    "WAL ends in a torn record (a write cut short by a crash, never acknowledged): cutting it off");
                wal::truncate(dir, seq, replay.valid_len)?;
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
                wal::truncate(dir, seq, replay.valid_len)?;
            }
        }
        for record in replay.records {
            for event in record.events {
                resolver.observe(record.project_id, &event);
                match event.profile_only {
                    true => replayed_identifications = true,
                    false => state.active.push((record.project_id, event)),
                }
            }
        }
    }
    if !state.active.is_empty() || replayed_identifications {
        state.active_since = Some(Instant::now());
        tracing::info!(events = state.active.len(), "replayed WAL");
    }
    Ok(seqs.last().copied())
}

/// Deletes every segment object the manifest does not name: written by a commit that never
/// happened, or retired by one whose deletion a crash interrupted.
fn remove_unreferenced_segments(storage: &Storage, state: &State) -> Result<()> {
    let live: BTreeSet<&Key> = state.segments.values().flatten().map(|s| &s.key).collect();
    for found in storage.list()? {
        let key = match found {
            Ok(location) => Storage::key(&location),
            Err(stray) => stray,
        };
        if !live.contains(&key) {
            tracing::info!(object = %storage.describe(&key), "removing an unreferenced segment");
            storage.delete(&key)?;
        }
    }
    Ok(())
}

/// The daily key limits count what recent days already stored: the manifest records name
/// each segment's property keys by catalog id, so no file is read.
fn remember_recent_keys(resolver: &mut Resolver, state: &State, meta: &MetaStore) -> Result<()> {
    let since = Day::of_ms(now_ms()).plus(-8).to_string();
    for (project_id, segments) in &state.segments {
        let recent: Vec<&Arc<Segment>> =
            segments.iter().filter(|s| s.record.day >= since).collect();
        if recent.is_empty() {
            continue;
        }
        let names = [
            (KeyKind::Event, CatalogKind::EventProperty),
            (KeyKind::User, CatalogKind::UserProperty),
            (KeyKind::Group, CatalogKind::GroupProperty),
        ];
        for (kind, catalog) in names {
            let names = meta.catalog_names(*project_id, catalog)?;
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
                resolver.admit_stored_keys(*project_id, day, kind, keys);
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

/// Insert ids of the last days must keep deduplicating after a restart: only the four
/// columns that make a dedup key are read.
fn remember_recent_insert_ids(resolver: &mut Resolver, state: &State) -> Result<()> {
    let since = Day::of_ms(now_ms()).plus(-8).to_string();
    let columns: Vec<String> = ["insert_id", "device_id", "user_id", "server_upload_time"]
        .map(String::from)
        .to_vec();
    for segment in state.segments.values().flatten() {
        if segment.record.day < since {
            continue;
        }
        // A damaged segment is quarantined and skipped: the server starts and serves the rest.
        let batches = match segment.read_batches(Some(&columns)) {
            Err(StoreError::Corrupt { .. }) => continue,
            other => other?,
        };
        for batch in batches {
            let text = |name| {
                batch
                    .column_by_name(name)
                    .and_then(|a| a.as_any().downcast_ref::<StringArray>().cloned())
            };
            let (Some(insert_ids), devices, users) =
                (text("insert_id"), text("device_id"), text("user_id"))
            else {
                continue;
            };
            let times = batch
                .column_by_name("server_upload_time")
                .and_then(|a| {
                    a.as_any()
                        .downcast_ref::<TimestampMillisecondArray>()
                        .cloned()
                })
                .ok_or_else(|| {
                    StoreError::Io(std::io::Error::other("segment lacks server_upload_time"))
                })?;
            let value = |a: &Option<StringArray>, r: usize| {
                a.as_ref()
                    .filter(|a| a.is_valid(r))
                    .map(|a| a.value(r).to_string())
            };
            for r in (0..batch.num_rows()).filter(|r| insert_ids.is_valid(*r)) {
                resolver.remember_insert_id(
                    segment.record.project_id,
                    value(&devices, r).as_deref(),
                    value(&users, r).as_deref(),
                    insert_ids.value(r),
                    times.value(r),
                );
            }
        }
    }
    Ok(())
}

impl Inner {
    /// Catalog id → name maps needed to read a project's segments.
    fn column_names(&self, project_id: i64) -> Result<ColumnNames> {
        Ok(ColumnNames {
            event_properties: self
                .meta
                .catalog_names(project_id, CatalogKind::EventProperty)?,
            user_properties: self
                .meta
                .catalog_names(project_id, CatalogKind::UserProperty)?,
            group_properties: self
                .meta
                .catalog_names(project_id, CatalogKind::GroupProperty)?,
        })
    }

    fn push_active(&self, project_id: i64, events: Vec<Arc<Event>>) {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        state.active_since.get_or_insert_with(Instant::now);
        state
            .active
            .extend(events.into_iter().map(|e| (project_id, e)));
    }

    fn maybe_wake_flusher(&self) {
        let full =
            self.state.read().map(|s| s.active.len()).unwrap_or(0) >= self.config.flush_events;
        if full {
            self.wake.1.notify_all();
        }
    }

    fn run_wal_writer(&self, rx: Receiver<WalCommand>, file: WalFile) {
        let (epoch, durable) = {
            let r = lock(&self.resolver);
            (r.epoch(), r.durable_watermark())
        };
        let mut writer = WalWriter {
            inner: self,
            file,
            appended: Vec::new(),
            epoch,
            durable,
            failure: None,
        };
        while let Ok(first) = rx.recv() {
            let mut commands = vec![first];
            commands.extend(rx.try_iter().take(4096));
            for command in commands {
                writer.handle(command);
            }
            writer.commit_appended();
        }
    }

    fn run_background(self: Arc<Self>) {
        let base = Duration::from_millis(200);
        let mut tick = base;
        loop {
            {
                let stop = lock(&self.wake.0);
                let (stop, _) = self
                    .wake
                    .1
                    .wait_timeout(stop, tick)
                    .unwrap_or_else(|p| p.into_inner());
                if *stop {
                    return;
                }
            }
            let due = {
                let s = self.state.read().unwrap_or_else(|p| p.into_inner());
                s.active.len() >= self.config.flush_events
                    || s.active_since
                        .is_some_and(|t| t.elapsed() >= self.config.flush_interval)
                    || !s.frozen.is_empty()
            };
            if due {
                match self.flush().and_then(|()| self.compact()) {
                    Ok(()) => tick = base,
                    Err(e) => {
                        // Back off (to 30 s) so a full disk is not hammered nor the log flooded.
                        tick = (tick * 2).min(Duration::from_secs(30));
                        tracing::error!(error = %e, retry_in_ms = tick.as_millis() as u64,
                            "background flush failed; will retry");
                    }
                }
            }
        }
    }

    /// Takes the resolver's unpersisted changes and waits until every batch that made them
    /// is durable in the WAL (with `rotate`, then seals the WAL file and freezes the
    /// memtable): what a commit persists then never belongs to a batch that was refused.
    fn durable_changes(&self, rotate: bool) -> Result<(Commit, u64)> {
        let (ack, done) = mpsc::sync_channel(1);
        let commit = {
            let mut r = lock(&self.resolver);
            r.expire_dedup(now_ms());
            let commit = r.take_dirty(rotate);
            lock(&self.wal)
                .send(WalCommand::Barrier {
                    epoch: r.epoch(),
                    rotate,
                    ack,
                })
                .map_err(|_| StoreError::Closed)?;
            commit
        };
        match done.recv().map_err(|_| StoreError::Closed)? {
            Ok(sealed) => Ok((commit, sealed)),
            Err(e) => {
                lock(&self.resolver).restore_dirty(&commit);
                Err(e)
            }
        }
    }

    fn flush(&self) -> Result<()> {
        let _writer = lock(&self.writer);
        let started = Instant::now();
        let (mut commit, sealed) = self.durable_changes(true)?;
        let frozen: Vec<Arc<Vec<Tagged>>> = self
            .state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .frozen
            .clone();
        let written = match self.write_groups(frozen.iter().flat_map(|f| f.iter().cloned())) {
            Ok(w) => w,
            Err(e) => {
                lock(&self.resolver).restore_dirty(&commit);
                return Err(e);
            }
        };
        commit.wal_checkpoint = Some(sealed);
        let written = self.commit_written(written, commit)?;
        {
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            state
                .frozen
                .retain(|f| !frozen.iter().any(|done| Arc::ptr_eq(f, done)));
            state.add_live(&self.storage, written, true);
        }
        wal::remove_through(&self.dir, sealed)?;
        self.publish_gauges();
        let rows: usize = frozen.iter().map(|f| f.len()).sum();
        metrics::histogram!("lethe_flush_seconds").record(started.elapsed().as_secs_f64());
        if rows > 0 {
            tracing::debug!(rows, ms = started.elapsed().as_millis() as u64, "flushed");
        }
        Ok(())
    }

    /// Writes one segment per project and day of `events`, days in parallel (one per core).
    /// Nothing is visible until [`Inner::commit_written`].
    fn write_groups(&self, events: impl Iterator<Item = Tagged>) -> Result<Written> {
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
                self.write_events_segment(project_id, &day.to_string(), &events)
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

    /// Commits written segments with `commit` (identities, profiles, checkpoint). On failure
    /// the files are removed and the identity/profile changes kept for the next commit.
    fn commit_written(&self, written: Written, mut commit: Commit) -> Result<Vec<SegmentRecord>> {
        commit.add = written.records;
        commit.catalog = written.catalog;
        if let Err(e) = self.meta.commit(&commit) {
            lock(&self.resolver).restore_dirty(&commit);
            self.discard(&commit.add);
            return Err(e.into());
        }
        Ok(commit.add)
    }

    /// Deletes objects written for a commit that did not happen (a failure to delete them
    /// leaves them to the next start, which removes every object the manifest does not name).
    fn discard(&self, records: &[SegmentRecord]) {
        for record in records {
            let key = Storage::key(&SegmentLocation::of(record));
            if let Err(e) = self.storage.delete(&key) {
                tracing::warn!(error = %e, "cannot delete an uncommitted segment; the next start removes it");
            }
        }
    }

    /// Makes committed `added` segments live in place of `retired` ones, whose objects are
    /// deleted once no reader holds them.
    fn swap_live(&self, project_id: i64, retired: &[Arc<Segment>], added: Vec<SegmentRecord>) {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = state.segments.get_mut(&project_id) {
            list.retain(|s| !retired.iter().any(|r| Arc::ptr_eq(s, r)));
        }
        for s in retired {
            s.retired.store(true, Ordering::Release);
        }
        state.add_live(&self.storage, added, true);
        drop(state);
        self.publish_gauges();
    }

    /// Bulk import: resolves `events`, writes their segments without the WAL or the
    /// memtable, and commits them; durable when it returns.
    fn import(&self, project_id: i64, events: Vec<ParsedEvent>) -> Result<IngestOutcome> {
        let total = events.len();
        let now = now_ms();
        let mut refused = Vec::new();
        let (resolved, changes): (Vec<Tagged>, _) = {
            let mut resolver = lock(&self.resolver);
            let mut resolved = Vec::with_capacity(events.len());
            for (index, event) in events.into_iter().enumerate() {
                match resolver.resolve(project_id, event, now) {
                    Ok(Some(e)) => resolved.push((project_id, Arc::new(e))),
                    Ok(None) => {}
                    Err(kind) => refused.push((index, kind.field())),
                }
            }
            (resolved, resolver.take_unjournaled())
        };
        let stored = resolved.len();
        // Segments are written in parallel with other imports; only the commit is serialized.
        let written = self.write_groups(resolved.into_iter());
        let _writer = lock(&self.writer);
        let committed = written.and_then(|written| match self.durable_changes(false) {
            Ok((commit, _)) => self.commit_written(written, commit),
            Err(e) => {
                self.discard(&written.records);
                Err(e)
            }
        });
        let written = match committed {
            Ok(w) => w,
            Err(e) => {
                lock(&self.resolver).forget_insert_ids(changes);
                return Err(e);
            }
        };
        // Profile times the commit left out are persisted by the next flush.
        let pending_times = lock(&self.resolver).has_pending_times();
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        state.add_live(&self.storage, written, true);
        if pending_times {
            state.active_since.get_or_insert_with(Instant::now);
        }
        drop(state);
        self.publish_gauges();
        Ok(IngestOutcome {
            stored,
            duplicates: total - stored - refused.len(),
            refused,
        })
    }

    /// Writes `batch` as a new segment object and returns its manifest record; `type_ids`
    /// are the catalog ids of its event types.
    fn write_new_segment(
        &self,
        project_id: i64,
        day: &str,
        batch: &RecordBatch,
        type_ids: &HashMap<String, i64>,
    ) -> Result<SegmentRecord> {
        let column_ids = |wanted: PropertyKind| -> Vec<i64> {
            let mut ids: Vec<i64> = batch
                .schema()
                .fields()
                .iter()
                .filter_map(|f| PropertyKind::of_column(f.name()))
                .filter(|(kind, _)| *kind == wanted)
                .map(|(_, id)| id)
                .collect();
            ids.sort_unstable();
            ids
        };
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
            event_properties: column_ids(PropertyKind::Event),
            user_properties: column_ids(PropertyKind::User),
            group_properties: column_ids(PropertyKind::Group),
            crc32: Some(stats.crc32),
        };
        self.storage
            .put(&Storage::key(&SegmentLocation::of(&record)), bytes)?;
        Ok(record)
    }

    /// Writes the new contents of a rewritten segment; its record keeps the source's
    /// partition, bounds and event types, which stay valid (conservative) bounds, minus the
    /// dropped columns. `None` when no row is left.
    fn write_output(&self, output: &Output) -> Result<Option<SegmentRecord>> {
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
            ..old.clone()
        };
        self.storage
            .put(&Storage::key(&SegmentLocation::of(&record)), bytes)?;
        Ok(Some(record))
    }

    /// Writes sorted `events` as a new segment and returns its record and catalog counts.
    fn write_events_segment(
        &self,
        project_id: i64,
        day: &str,
        events: &[Arc<Event>],
    ) -> Result<(SegmentRecord, CatalogDelta)> {
        // Every name the segment needs an id for, asked of the catalog at once.
        let types: BTreeSet<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        let mut wanted = vec![(CatalogKind::Event, types.into_iter().collect())];
        for kind in PropertyKind::ALL {
            let keys: BTreeSet<&str> = events
                .iter()
                .flat_map(|e| kind.of_event(e).iter().map(|(k, _)| k.as_str()))
                .collect();
            wanted.push((kind.catalog(), keys.into_iter().collect()));
        }
        let mut ids = self
            .meta
            .ensure_catalog_ids(project_id, &wanted)?
            .into_iter();
        let mut next = || ids.next().expect("one map per kind asked");
        let (type_ids, eprop_ids, uprop_ids, gprop_ids) = (next(), next(), next(), next());
        let batch = events_to_batch(events, &eprop_ids, &uprop_ids, &gprop_ids)?;
        let record = self.write_new_segment(project_id, day, &batch, &type_ids)?;
        let ids = PropertyIds {
            event: &eprop_ids,
            user: &uprop_ids,
            group: &gprop_ids,
        };
        Ok((record, catalog_delta(events, &type_ids, ids)))
    }

    fn compact(&self) -> Result<()> {
        let _writer = lock(&self.writer);
        let candidates: Vec<Vec<Arc<Segment>>> = {
            let state = self.state.read().unwrap_or_else(|p| p.into_inner());
            let mut by_day: BTreeMap<(i64, &str), Vec<Arc<Segment>>> = BTreeMap::new();
            for s in state.segments.values().flatten() {
                if s.record.rows < self.config.compact_small_rows && !s.is_damaged() {
                    by_day
                        .entry((s.record.project_id, s.record.day.as_str()))
                        .or_default()
                        .push(s.clone());
                }
            }
            by_day
                .into_values()
                .map(|mut small| {
                    small.sort_by_key(|s| s.record.rows);
                    let mut total = 0;
                    small.retain(|s| {
                        total += s.record.rows;
                        total <= self.config.compact_max_rows
                    });
                    small
                })
                .filter(|v| v.len() >= self.config.compact_min_segments)
                .collect()
        };
        for inputs in candidates {
            match self.compact_day(inputs) {
                // Quarantined (and logged) by the read: the day is left as it is.
                Err(StoreError::Corrupt { .. }) => {}
                other => other?,
            }
        }
        Ok(())
    }

    fn compact_day(&self, inputs: Vec<Arc<Segment>>) -> Result<()> {
        let started = Instant::now();
        let first = &inputs[0].record;
        let (project_id, day) = (first.project_id, first.day.clone());
        let names = self.column_names(project_id)?;
        let mut events = Vec::new();
        for s in &inputs {
            let open = s.open()?;
            events.extend(
                read_segment(&open.bytes, &names, None)?
                    .into_iter()
                    .map(Arc::new),
            );
        }
        sort_for_segment(&mut events);
        let (record, _) = self.write_events_segment(project_id, &day, &events)?;
        let commit = Commit {
            add: vec![record.clone()],
            remove: inputs.iter().map(|s| s.record.id.clone()).collect(),
            ..Default::default()
        };
        if let Err(e) = self.meta.commit(&commit) {
            self.discard(&commit.add);
            return Err(e.into());
        }
        self.swap_live(project_id, &inputs, commit.add);
        metrics::histogram!("lethe_compaction_seconds").record(started.elapsed().as_secs_f64());
        tracing::debug!(
            inputs = inputs.len(),
            rows = events.len(),
            "compacted a day"
        );
        Ok(())
    }

    fn publish_gauges(&self) {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let segments = state.segments.values().map(Vec::len).sum::<usize>();
        let bytes: i64 = state
            .segments
            .values()
            .flatten()
            .map(|s| s.record.bytes)
            .sum();
        metrics::gauge!("lethe_segments").set(segments as f64);
        metrics::gauge!("lethe_segment_bytes").set(bytes as f64);
    }
}

/// A new segment's id: time-ordered, never reused (so never an object key reused).
fn new_segment_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

fn sorted_ids(ids: &HashMap<String, i64>) -> Vec<i64> {
    let mut v: Vec<i64> = ids.values().copied().collect();
    v.sort_unstable();
    v
}

/// Catalog ids of the property keys of the events written into one segment.
#[derive(Clone, Copy)]
struct PropertyIds<'a> {
    event: &'a HashMap<String, i64>,
    user: &'a HashMap<String, i64>,
    group: &'a HashMap<String, i64>,
}

/// Catalog counts contributed by `events`.
fn catalog_delta(
    events: &[Arc<Event>],
    type_ids: &HashMap<String, i64>,
    ids: PropertyIds,
) -> CatalogDelta {
    let (eprop_ids, uprop_ids) = (ids.event, ids.user);
    let mut counts: BTreeMap<(CatalogKind, i64), (i64, i64, i64)> = BTreeMap::new();
    let mut pairs: BTreeMap<(i64, i64), i64> = BTreeMap::new();
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
        pairs: pairs.into_iter().map(|((t, p), c)| (t, p, c)).collect(),
    }
}
