//! The store: the facade that composes its components. Ingestion resolves events and hands
//! them to the WAL writer ([`crate::wal_writer`]), which makes them durable, then visible in
//! the memtable ([`crate::memtable`]); a background flush writes the memtable into segments
//! ([`crate::writer`]) and makes them live ([`crate::live`]) with one manifest commit;
//! compaction ([`crate::compaction`]) and rewrites ([`crate::rewrite`]) replace live segments
//! the same way; recovery ([`crate::recovery`]) rebuilds this state at start-up.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lethe_event::{BlockList, Blocked, Day, Event, ParsedEvent};
use lethe_meta::{
    now_ms, BlockKind, CatalogKind, Commit, MetaStore, ProfileRecord, SegmentRecord, ShardScope,
};
use object_store::path::Path as Key;

use crate::catalog::{live_catalog, CatalogDetail, LiveCatalog};
use crate::compaction::CompactionPolicy;
use crate::health::DamagedSegment;
use crate::layout::DataDir;
use crate::live::{LiveSet, Segment};
use crate::memtable::{Memtable, Tagged};
use crate::parallel::parallel_reads;
use crate::published;
use crate::recovery::{
    recent_dedup_keys, remember_recent_keys, remove_unreferenced_segments, replay_wal,
};
use crate::resolver::{KnownUsers, Resolver, UserProfile};
use crate::rewrite::PartitionRewrite;
use crate::scan::{self, ScanRequest, Scanned};
use crate::segment::ColumnNames;
use crate::storage::{SegmentPlace, Storage};
use crate::tail::Layout;
use crate::wal::{WalFile, WalRoot};
use crate::wal_writer::WalCommand;
use crate::writer::{SegmentWriter, Written};
use crate::{lock, Result, StoreError, Unavailable};

/// Tuning of flush and compaction.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Flush when the memtable holds this many events.
    pub flush_events: usize,
    /// Ingestion waits while this many events are not yet in segments (flushes behind: a
    /// slow or unreachable segment store, a busy CPU), and answers 503 `flush_behind` if no
    /// flush made room within `flush_behind_wait`. Bounds the memtable's memory and what a
    /// restart (or a cluster's next writer) replays. At least `flush_events`.
    pub max_unflushed: usize,
    /// How long an ingestion waits for room before it is refused.
    pub flush_behind_wait: Duration,
    /// Flush events older than this even when the memtable is small.
    pub flush_interval: Duration,
    /// Which small segments compaction merges.
    pub compaction: CompactionPolicy,
    /// Which property keys of a segment get their own column.
    pub layout: Layout,
    /// Start even if a WAL file is damaged before its end, keeping the records before the
    /// damage (the operator accepts losing the rest).
    pub salvage_wal: bool,
    /// Where segments are kept.
    pub segments: SegmentPlace,
    /// Where the WAL is kept.
    pub wal: WalPlace,
    /// A cluster writer's lease: no write is acknowledged after it (`None`: no lease).
    pub ack_deadline: Option<crate::AckDeadline>,
    /// How many shards a cluster's projects fall into (1: all in one). The store writes for
    /// the shard its metadata is fenced to ([`MetaStore::shard`]) and holds that shard's
    /// projects alone: their segments, identities and profiles, and a WAL of its own.
    pub shard_count: u32,
    /// How long a deletion waits for readers (an export, a query) still holding a segment
    /// it retired before it deletes the object under them: a reader, a slow client's
    /// export say, must not keep removed data on disk, so it fails instead.
    pub reader_grace: Duration,
}

/// Where a store keeps its WAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WalPlace {
    /// In the data dir: a local disk's fsync latency; the node that wrote it replays it.
    #[default]
    DataDir,
    /// Beside the segments, one object per group commit: a 200 means the batch is in the
    /// object store, and whichever node writes next replays it (a cluster).
    Segments,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            flush_events: 100_000,
            max_unflushed: 400_000,
            flush_behind_wait: Duration::from_secs(5),
            flush_interval: Duration::from_secs(10),
            compaction: CompactionPolicy::default(),
            layout: Layout::default(),
            salvage_wal: false,
            segments: SegmentPlace::DataDir,
            wal: WalPlace::DataDir,
            ack_deadline: None,
            shard_count: 1,
            reader_grace: Duration::from_secs(60),
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

/// What an ingestion call did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    /// Events stored.
    pub stored: usize,
    /// Events dropped as repeats of an insert_id already stored.
    pub duplicates: usize,
    /// Events dropped because the project blocks their type.
    pub blocked: usize,
    /// Events refused (bulk import only: ingestion refuses the whole request), by index in
    /// the input, with the field whose keys would pass the daily limit.
    pub refused: Vec<(usize, &'static str)>,
}

/// What readers see, under one lock so that a snapshot is consistent: every event is in
/// exactly one of the two.
pub(crate) struct State {
    pub live: LiveSet,
    pub memtable: Memtable,
}

/// The store's shared state; its components reach each other through it.
pub(crate) struct Inner {
    /// The projects this store holds.
    pub scope: ShardScope,
    pub wal_root: WalRoot,
    pub storage: Arc<Storage>,
    pub meta: Arc<MetaStore>,
    pub config: StoreConfig,
    pub state: RwLock<State>,
    pub resolver: Mutex<Resolver>,
    pub segment_writer: SegmentWriter,
    wal: Mutex<Sender<WalCommand>>,
    /// One manifest writer at a time (flush, compaction, rewrites).
    pub writer: Mutex<()>,
    /// Why the WAL refuses writes, while it does (set by the WAL writer).
    pub wal_refusal: Mutex<Option<Unavailable>>,
    /// Each project's block list, as the metadata holds it (`reload_blocks`).
    blocks: RwLock<HashMap<i64, Arc<BlockList>>>,
    wake: (Mutex<bool>, Condvar),
    /// Signalled after each flush: ingestions waiting for room (`await_room`) look again.
    room: (Mutex<()>, Condvar),
}

/// Every project's block list, from the metadata.
fn block_lists(meta: &MetaStore) -> Result<HashMap<i64, Arc<BlockList>>> {
    let mut lists: HashMap<i64, BlockList> = HashMap::new();
    for block in meta.blocks(None)? {
        let list = lists.entry(block.project_id).or_default();
        let names = match block.kind {
            BlockKind::EventType => &mut list.event_types,
            BlockKind::EventProperty => &mut list.event_properties,
            BlockKind::UserProperty => &mut list.user_properties,
            BlockKind::GroupProperty => &mut list.group_properties,
        };
        names.insert(block.name);
    }
    Ok(lists.into_iter().map(|(p, l)| (p, Arc::new(l))).collect())
}

/// The suppression lists of `scope`'s projects.
fn suppressions(meta: &MetaStore, scope: ShardScope) -> Result<Vec<lethe_meta::Suppression>> {
    let mut list = meta.suppressions(None)?;
    list.retain(|s| scope.holds(s.project_id));
    Ok(list)
}

/// How many segments' dedup keys a start holds while the resolver loads.
const RECENT_SEGMENTS_WAITING: usize = 16;

/// A stopwatch for the phases of a start: each call returns the milliseconds since the last.
fn laps() -> impl FnMut() -> u64 {
    let mut last = Instant::now();
    move || {
        let ms = last.elapsed().as_millis() as u64;
        last = Instant::now();
        ms
    }
}

/// Applies a block list to an event on its way in: `false` when it is not to be stored.
/// Counted in metrics without names.
fn admitted(blocks: &BlockList, event: &mut ParsedEvent) -> bool {
    match blocks.apply(event) {
        Blocked::Nothing => true,
        Blocked::Keys(keys) => {
            metrics::counter!("lethe_property_keys_blocked_total").increment(keys as u64);
            true
        }
        Blocked::Event => {
            metrics::counter!("lethe_events_blocked_total").increment(1);
            false
        }
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

impl Store {
    /// Opens the store: removes crash leftovers, loads the manifest, replays the WAL.
    pub fn open(dir: DataDir, meta: Arc<MetaStore>, config: StoreConfig) -> Result<Store> {
        dir.create()?;
        if dir.legacy_tmp_dir().exists() {
            std::fs::remove_dir_all(dir.legacy_tmp_dir())?;
        }
        let mut lap = laps();
        let scope = ShardScope {
            shard: meta.shard(),
            count: config.shard_count,
        };
        let storage = Storage::open(&config.segments, &dir.segments_dir())?.for_scope(scope);
        let storage = Arc::new(storage);
        storage.remove_staged_uploads()?;
        let mut live = LiveSet::for_scope(scope);
        let mut records = meta.live_segments()?;
        records.retain(|record| scope.holds(record.project_id));
        live.add(&storage, records, false);
        remove_unreferenced_segments(&storage, &live)?;
        // A crash between a commit and its publication left an older manifest published.
        for project_id in live.projects() {
            published::publish(&storage, &meta, project_id, live.of_project(project_id))?;
        }
        let segments_ms = lap();
        // Identities and profiles come from the metadata, recent insert ids from the
        // segments: both are read side by side (a next writer waits on both). The keys
        // wait in a bounded channel until the resolver is loaded, so memory holds a few
        // segments' keys beside it, never a week's twice.
        let mut resolver = std::thread::scope(|s| {
            let (keys, stored) = mpsc::sync_channel(RECENT_SEGMENTS_WAITING);
            let reader = s.spawn(|| recent_dedup_keys(&live, keys));
            let loaded = Resolver::load(
                meta.load_identities(scope)?,
                meta.load_profiles(scope)?,
                meta.load_groups(scope)?,
                meta.amplitude_id_high()?,
            );
            let remembered = loaded.map(|mut resolver| {
                stored
                    .iter()
                    .for_each(|keys| resolver.remember_stored(keys));
                resolver
            });
            // Dropped, it stops a reader that is still sending (the load failed).
            drop(stored);
            let read = reader
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            let resolver = remembered?;
            read?;
            Ok::<_, StoreError>(resolver)
        })?;
        resolver.set_suppressed(suppressions(&meta, scope)?);
        let resolver_ms = lap();
        remember_recent_keys(&mut resolver, &live, &meta)?;
        let wal_root = match config.wal {
            WalPlace::DataDir => WalRoot::Dir(dir.clone()),
            WalPlace::Segments => WalRoot::Bucket(storage.clone(), scope.shard),
        };
        let checkpoint = meta.wal_checkpoint(scope.shard)?;
        wal_root.remove_through(checkpoint)?;
        let mut memtable = Memtable::default();
        let last_seq = replay_wal(&wal_root, config.salvage_wal, &mut resolver, &mut memtable)?
            .unwrap_or(checkpoint);
        let wal_ms = lap();
        tracing::info!(
            segments = live.all().count(),
            segments_ms,
            resolver_ms,
            wal_ms,
            "store opened"
        );
        let wal_file = WalFile::create(&wal_root, last_seq + 1)?;
        let blocks = block_lists(&meta)?;
        let (tx, rx) = mpsc::channel();
        let inner = Arc::new(Inner {
            scope,
            wal_root,
            segment_writer: SegmentWriter {
                storage: storage.clone(),
                meta: meta.clone(),
                layout: config.layout,
            },
            storage,
            meta,
            config,
            state: RwLock::new(State { live, memtable }),
            resolver: Mutex::new(resolver),
            wal: Mutex::new(tx),
            writer: Mutex::new(()),
            wal_refusal: Mutex::new(None),
            blocks: RwLock::new(blocks),
            wake: (Mutex::new(false), Condvar::new()),
            room: (Mutex::new(()), Condvar::new()),
        });
        inner.publish_gauges();
        let writer = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("lethe-wal".into())
                .spawn(move || crate::wal_writer::run(&inner, rx, wal_file))?
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

    /// The projects this store holds: its shard's, or all of them.
    pub fn scope(&self) -> ShardScope {
        self.inner.scope
    }

    /// Bulk import: resolves the events and writes them straight into committed segments
    /// (one per day, days in parallel), bypassing WAL and memtable. Durable when it returns.
    pub fn import(&self, project_id: i64, events: Vec<ParsedEvent>) -> Result<IngestOutcome> {
        self.inner.writes(project_id)?;
        self.inner.import(project_id, events)
    }

    /// Resolves and stores events; returns once they are fsynced in the WAL (group commit
    /// with concurrent callers) and visible to readers.
    ///
    /// Identifications (`profile_only`: the Identify APIs, `$groupidentify`) change
    /// profiles and groups the same way and are never visible as events; their changes
    /// reach the metadata store with the next flush, and replay restores them after a crash.
    pub fn ingest(&self, project_id: i64, events: Vec<ParsedEvent>) -> Result<IngestOutcome> {
        self.inner.writes(project_id)?;
        self.inner.await_room()?;
        let total = events.len();
        let now = now_ms();
        let blocks = self.inner.blocks_of(project_id);
        let mut blocked = 0;
        let pending = {
            let mut resolver = lock(&self.inner.resolver);
            let mut resolved: Vec<Arc<Event>> = Vec::with_capacity(events.len());
            for (index, mut event) in events.into_iter().enumerate() {
                if !admitted(&blocks, &mut event) {
                    blocked += 1;
                    continue;
                }
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
            duplicates: total - stored - blocked,
            blocked,
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
            .live
            .of_project(project_id)
            .iter()
            .filter(|s| {
                range.is_none_or(|(from, to)| s.record.max_time >= from && s.record.min_time < to)
            })
            .cloned()
            .collect();
        let memtable = state.memtable.events_of(project_id, in_range);
        Snapshot { segments, memtable }
    }

    /// Reads `request` over one project's live segments and unflushed events, from one
    /// snapshot.
    pub fn scan(&self, project_id: i64, request: &ScanRequest) -> Result<Scanned> {
        let snapshot = self.snapshot(project_id, scan::partitions(request));
        scan::scan(&self.inner.meta, project_id, snapshot, request)
    }

    /// The names the project has data for now: committed catalog counts plus the events
    /// not yet flushed.
    pub fn live_catalog(&self, project_id: i64, detail: CatalogDetail) -> Result<LiveCatalog> {
        let memtable = self.snapshot(project_id, None).memtable;
        live_catalog(&self.inner.meta, &memtable, project_id, detail)
    }

    /// Every event of one project with upload time in `[from, to)` (all when `None`), from
    /// one snapshot, ordered by upload time and uuid.
    pub fn events(&self, project_id: i64, range: Option<(i64, i64)>) -> Result<Vec<Event>> {
        let mut events = Vec::new();
        self.for_each_day(project_id, range, None, |day| {
            events.extend(day);
            Ok(())
        })?;
        Ok(events)
    }

    /// The events of one project with upload time in `[from, to)` (all when `None`), from one
    /// snapshot, handed to `each` one UTC day at a time in day order, each day ordered by
    /// upload time and uuid: memory holds one day's events, however long the range. With
    /// `users`, only theirs: segments whose bloom filters rule them all out are not read.
    pub fn for_each_day(
        &self,
        project_id: i64,
        range: Option<(i64, i64)>,
        users: Option<&[i64]>,
        mut each: impl FnMut(Vec<Event>) -> Result<()>,
    ) -> Result<()> {
        let snapshot = self.snapshot(project_id, range);
        let names = self.inner.column_names(project_id)?;
        let mut days: BTreeMap<String, Snapshot> = BTreeMap::new();
        let wanted = |amplitude_id: i64| users.is_none_or(|ids| ids.contains(&amplitude_id));
        let segments = match users {
            // The bloom filters of every segment are read several at a time.
            Some(ids) => parallel_reads(snapshot.segments, |segment| {
                Ok::<_, StoreError>(segment.may_hold_users(ids)?.then_some(segment))
            })
            .into_iter()
            .filter_map(Result::transpose)
            .collect::<Result<Vec<_>>>()?,
            None => snapshot.segments,
        };
        for segment in segments {
            let day = segment.record.day.clone();
            days.entry(day).or_default().segments.push(segment);
        }
        for event in snapshot.memtable {
            if !wanted(event.amplitude_id) {
                continue;
            }
            let day = Day::of_ms(event.server_upload_time).to_string();
            days.entry(day).or_default().memtable.push(event);
        }
        for Snapshot { segments, memtable } in days.into_values() {
            let mut events: Vec<Event> = memtable.iter().map(|e| (**e).clone()).collect();
            drop(memtable);
            for segment in &segments {
                let read = segment.read_events(&names, range)?;
                events.extend(read.into_iter().filter(|e| wanted(e.amplitude_id)));
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
        PartitionRewrite::begin(&self.inner, project_id, day)
    }

    /// Drops retired `segments` and waits until their objects are deleted: those no reader
    /// holds at once, in bulk; the others when their readers let go, or, past the readers'
    /// grace (`StoreConfig::reader_grace`), under them (their reads then fail).
    pub fn await_unlinked(&self, segments: Vec<Arc<Segment>>) -> Result<()> {
        let mut unheld = Vec::new();
        let mut held = Vec::new();
        for segment in segments {
            match segment.take_unheld() {
                Ok(key) => unheld.push(key),
                Err(segment) => held.push((segment.key.clone(), Arc::downgrade(&segment))),
            }
        }
        self.inner.storage.delete_segments(unheld)?;
        self.await_released(held)
    }

    /// Waits until readers let go of the retired segments `held` (watched here, without a
    /// request), for the readers' grace at most, then deletes their objects in one request:
    /// again for those their last reader's drop deleted already (or failed to), under the
    /// readers for the others (their next read fails).
    fn await_released(&self, held: Vec<(Key, Weak<Segment>)>) -> Result<()> {
        if held.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + self.inner.config.reader_grace;
        let still_held = || held.iter().filter(|(_, s)| s.strong_count() > 0).count();
        while still_held() > 0 && Instant::now() <= deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let past_grace = still_held();
        if past_grace > 0 {
            tracing::warn!(
                segments = past_grace,
                "readers held retired segments past their grace; deleted under them"
            );
        }
        let keys = held.into_iter().map(|(key, _)| key).collect();
        self.inner.storage.delete_segments(keys)
    }

    /// Makes sure no segment object of the project outside the manifest remains, whoever
    /// retired or wrote it (this task, an earlier attempt, a compaction, a failed flush):
    /// the retired segments readers may still hold are waited for as
    /// [`Store::await_unlinked`] does, and deletions that failed are tried again. A task
    /// calls this before it says completed, since any of them may hold what it removed; and
    /// a bucket that started keeping versions since the start (where every deleted object
    /// stays) is refused here too.
    pub fn await_no_leftovers(&self, project_id: i64) -> Result<()> {
        let retired = self
            .inner
            .state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .live
            .retired_of(project_id);
        self.await_released(retired)?;
        self.inner.storage.delete_leftovers()?;
        self.inner.storage.refuse_versioned_bucket()
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

    /// The current profile of the user `amplitude_id`, if the project has one.
    pub fn profile_of(&self, project_id: i64, amplitude_id: i64) -> Option<UserProfile> {
        lock(&self.inner.resolver).profile_of(project_id, amplitude_id)
    }

    /// Writes an access-request file (`access/<name>`) beside the segments, create-only:
    /// the bucket's `lethe scan` covers it, and an erasure of its user deletes it.
    pub fn put_access_file(&self, name: &str, bytes: Vec<u8>) -> Result<()> {
        self.inner.storage.put_access_file(name, bytes.into())
    }

    /// An access-request file's bytes.
    pub fn access_file(&self, name: &str) -> Result<Vec<u8>> {
        Ok(self.inner.storage.access_file(name)?.to_vec())
    }

    /// Deletes an access-request file (gone already is not an error).
    pub fn delete_access_file(&self, name: &str) -> Result<()> {
        self.inner.storage.delete_access_file(name)
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

    /// Whether ingestion is at the limit of unflushed events (flushes behind), with the
    /// count of events waiting for a flush: what `/healthz` reports.
    pub fn flush_backlog(&self) -> (usize, bool) {
        let unflushed = self.inner.unflushed();
        (unflushed, unflushed >= self.inner.config.max_unflushed)
    }

    /// How many segment objects wait for their deletion to be tried again (it failed): what
    /// `/healthz` reports, since one may hold what a deletion task removed.
    pub fn pending_deletions(&self) -> usize {
        self.inner.storage.leftover_count()
    }

    /// Why the WAL refuses writes right now, if it does.
    pub fn wal_refusal(&self) -> Option<Unavailable> {
        *lock(&self.inner.wal_refusal)
    }

    /// Reads the block lists again, after the metadata's changed (`lethe_meta::MetaStore::
    /// add_blocks`, `lift_block`, a `keep_blocking` task): ingestion applies them from the
    /// next request on.
    pub fn reload_blocks(&self) -> Result<()> {
        let lists = block_lists(&self.inner.meta)?;
        *self.inner.blocks.write().unwrap_or_else(|p| p.into_inner()) = lists;
        Ok(())
    }

    /// The segments found damaged so far (see [`Segment::file`]).
    pub fn damaged_segments(&self) -> Vec<DamagedSegment> {
        let state = self.inner.state.read().unwrap_or_else(|p| p.into_inner());
        state.live.damaged()
    }

    /// Re-reads the suppression lists after a change.
    pub fn reload_suppressions(&self) -> Result<()> {
        let list = suppressions(&self.inner.meta, self.inner.scope)?;
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

impl Inner {
    /// Refuses a project of another shard, as a node that is not its writer: that shard's
    /// writer alone resolves and stores its events.
    fn writes(&self, project_id: i64) -> Result<()> {
        match self.scope.holds(project_id) {
            true => Ok(()),
            false => Err(StoreError::Unavailable(Unavailable::NotWriter)),
        }
    }

    /// The project's block list (empty if it blocks nothing).
    fn blocks_of(&self, project_id: i64) -> Arc<BlockList> {
        self.blocks
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&project_id)
            .cloned()
            .unwrap_or_default()
    }

    /// Catalog id → name maps needed to read a project's segments.
    pub(crate) fn column_names(&self, project_id: i64) -> Result<ColumnNames> {
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

    /// Waits while the unflushed events are at their limit (waking the flusher), up to
    /// `flush_behind_wait`; then refuses with [`Unavailable::FlushBehind`].
    fn await_room(&self) -> Result<()> {
        // The common case takes no lock but the state's read lock.
        if !self.flush_behind() {
            return Ok(());
        }
        let deadline = Instant::now() + self.config.flush_behind_wait;
        // Checked under the lock a flush notifies under, so no flush's room goes unseen.
        let mut guard = lock(&self.room.0);
        while self.flush_behind() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                metrics::counter!("lethe_ingest_flush_behind_total").increment(1);
                return Err(StoreError::Unavailable(Unavailable::FlushBehind));
            }
            self.wake.1.notify_all();
            guard = self
                .room
                .1
                .wait_timeout(guard, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        Ok(())
    }

    /// Events not yet in segments.
    fn unflushed(&self) -> usize {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state.memtable.unflushed_len()
    }

    /// Whether the unflushed events are at their limit: ingestion waits for a flush.
    fn flush_behind(&self) -> bool {
        self.unflushed() >= self.config.max_unflushed
    }

    /// Tells the ingestions waiting for room that a flush made some.
    fn made_room(&self) {
        let _guard = lock(&self.room.0);
        self.room.1.notify_all();
    }

    fn maybe_wake_flusher(&self) {
        let full = self
            .state
            .read()
            .map(|s| s.memtable.active_len())
            .unwrap_or(0)
            >= self.config.flush_events;
        if full {
            self.wake.1.notify_all();
        }
    }

    fn run_background(self: Arc<Self>) {
        let base = Duration::from_millis(200);
        let mut tick = base;
        // Segment objects whose deletion failed are tried again, backing off as flushes do.
        let (mut leftovers_wait, mut leftovers_at) = (base, Instant::now());
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
                s.memtable
                    .flush_due(self.config.flush_events, self.config.flush_interval)
            };
            if Instant::now() >= leftovers_at {
                leftovers_wait = match self.storage.delete_leftovers() {
                    Ok(()) => base,
                    Err(e) => {
                        let wait = (leftovers_wait * 2).min(Duration::from_secs(30));
                        tracing::error!(error = %e, retry_in_ms = wait.as_millis() as u64,
                            "segment objects still cannot be deleted; will retry");
                        wait
                    }
                };
                leftovers_at = Instant::now() + leftovers_wait;
            }
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
        let mut lap = laps();
        let (mut commit, sealed) = self.durable_changes(true)?;
        let sync_ms = lap();
        let frozen: Vec<Arc<Vec<Tagged>>> = self
            .state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .memtable
            .frozen();
        let written = match self
            .segment_writer
            .write_groups(frozen.iter().flat_map(|f| f.iter().cloned()))
        {
            Ok(w) => w,
            Err(e) => {
                lock(&self.resolver).restore_dirty(&commit);
                return Err(e);
            }
        };
        let write_ms = lap();
        commit.wal_checkpoint = Some(sealed);
        let written = self.commit_written(written, commit)?;
        let commit_ms = lap();
        let projects: BTreeSet<i64> = written.iter().map(|r| r.project_id).collect();
        {
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            state.memtable.release(&frozen);
            state.live.add(&self.storage, written, true);
        }
        self.made_room();
        self.wal_root.remove_through(sealed)?;
        self.publish_gauges();
        self.publish_manifests(projects);
        let rows: usize = frozen.iter().map(|f| f.len()).sum();
        metrics::histogram!("lethe_flush_seconds").record(started.elapsed().as_secs_f64());
        if rows > 0 {
            tracing::debug!(
                rows,
                ms = started.elapsed().as_millis() as u64,
                sync_ms,
                write_ms,
                commit_ms,
                cleanup_ms = lap(),
                "flushed"
            );
        }
        Ok(())
    }

    /// Commits written segments with `commit` (identities, profiles, checkpoint). On failure
    /// the files are removed and the identity/profile changes kept for the next commit.
    fn commit_written(&self, written: Written, mut commit: Commit) -> Result<Vec<SegmentRecord>> {
        commit.add = written.records;
        commit.catalog = written.catalog;
        if let Err(e) = self.meta.commit(&commit) {
            lock(&self.resolver).restore_dirty(&commit);
            self.segment_writer.discard(&commit.add);
            return Err(e.into());
        }
        Ok(commit.add)
    }

    /// Makes committed `added` segments live in place of `retired` ones, whose objects are
    /// deleted once no reader holds them.
    pub(crate) fn swap_live(
        &self,
        project_id: i64,
        retired: &[Arc<Segment>],
        added: Vec<SegmentRecord>,
    ) {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        state.live.swap(&self.storage, project_id, retired, added);
        drop(state);
        self.publish_gauges();
        self.publish_manifests([project_id]);
    }

    /// Bulk import: resolves `events`, writes their segments without the WAL or the
    /// memtable, and commits them; durable when it returns.
    fn import(&self, project_id: i64, events: Vec<ParsedEvent>) -> Result<IngestOutcome> {
        let total = events.len();
        let now = now_ms();
        let mut refused = Vec::new();
        let blocks = self.blocks_of(project_id);
        let mut blocked = 0;
        let (resolved, changes): (Vec<Tagged>, _) = {
            let mut resolver = lock(&self.resolver);
            let mut resolved = Vec::with_capacity(events.len());
            for (index, mut event) in events.into_iter().enumerate() {
                if !admitted(&blocks, &mut event) {
                    blocked += 1;
                    continue;
                }
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
        let written = self.segment_writer.write_groups(resolved.into_iter());
        let _writer = lock(&self.writer);
        let committed = written.and_then(|written| match self.durable_changes(false) {
            Ok((commit, _)) => self.commit_written(written, commit),
            Err(e) => {
                self.segment_writer.discard(&written.records);
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
        let projects: BTreeSet<i64> = written.iter().map(|r| r.project_id).collect();
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        state.live.add(&self.storage, written, true);
        if pending_times {
            state.memtable.await_flush();
        }
        drop(state);
        self.publish_gauges();
        self.publish_manifests(projects);
        Ok(IngestOutcome {
            stored,
            duplicates: total - stored - blocked - refused.len(),
            blocked,
            refused,
        })
    }

    /// Publishes the manifests of `projects` after a commit (under the writer lock). A failure
    /// is logged, not returned: the commit stands, and the next one (or the next start)
    /// publishes again.
    fn publish_manifests(&self, projects: impl IntoIterator<Item = i64>) {
        for project_id in projects {
            let live = self
                .state
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .live
                .of_project(project_id)
                .to_vec();
            if let Err(e) = published::publish(&self.storage, &self.meta, project_id, &live) {
                tracing::warn!(project_id, error = %e, "publishing the manifest failed");
            }
        }
    }

    fn publish_gauges(&self) {
        let (segments, bytes) = self
            .state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .live
            .totals();
        crate::gauge("lethe_segments", self.scope).set(segments as f64);
        crate::gauge("lethe_segment_bytes", self.scope).set(bytes as f64);
    }
}
