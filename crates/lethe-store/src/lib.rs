//! The event store: a WAL in front of immutable Parquet segments committed through the
//! manifest in the metadata store.
//!
//! Life of an event: [`Store::ingest`] resolves identity and user properties, appends the
//! resolved events to the WAL (group commit, fsync) and only then makes them visible in the
//! memtable. A background flush turns the memtable into one segment per project and day and
//! commits the segments, the catalog counts and the changed profiles in one metadata
//! transaction, after which the WAL files it covered are deleted. Compaction merges small
//! segments of a day the same way.

mod catalog;
mod compaction;
mod faults;
mod fetched;
mod health;
mod layout;
mod live;
mod memtable;
mod parallel;
mod published;
mod recovery;
mod resolver;
mod rewrite;
mod scan;
mod schema;
mod segment;
mod storage;
mod store;
pub mod tail;
mod verify;
mod wal;
mod wal_writer;
mod writer;

pub use catalog::{CatalogDetail, LiveCatalog, Seen};
pub use compaction::CompactionPolicy;
pub use faults::failpoint;
pub use fetched::SegmentBytes;
pub use health::DamagedSegment;
pub use layout::DataDir;
pub use live::{OpenSegment, Segment};
pub use parallel::{parallel_map, parallel_on, parallel_reads};
pub use resolver::{KnownUsers, UserProfile};
pub use rewrite::{Output, PartitionRewrite};
pub use scan::{ScanRequest, Scanned};
pub use schema::{base_column, PropertyKind};
pub use segment::{events_to_batch, read_batches, ColumnNames, SegmentStats};
pub use storage::{SegmentLocation, SegmentPlace, Storage};
pub use store::{IngestOutcome, Snapshot, Store, StoreConfig, WalPlace};
pub use verify::{verify, Report};

/// Errors at the event store boundary.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error(transparent)]
    Meta(#[from] lethe_meta::MetaError),
    #[error("WAL record encoding: {0}")]
    Encoding(#[from] serde_json::Error),
    #[error("the store is shutting down or its WAL writer failed")]
    Closed,
    /// The segment bucket keeps versions (a probe PUT got a version id): a DELETE there
    /// leaves the bytes as a noncurrent version, so no deletion could complete.
    #[error(
        "the segment bucket keeps object versions (versioning enabled or suspended): lethe \
         refuses it, because a deleted segment would stay in the bucket; use a bucket that never \
         had versioning, Object Lock, replication or backups"
    )]
    VersionedBucket,
    /// A segment's bytes do not match its checksum (or cannot be read): it is quarantined,
    /// and nothing is read from it. `path` says where the object is.
    #[error("segment {path} is damaged and quarantined: {what}")]
    Corrupt { path: String, what: String },
    /// A metadata row the store loads is not what it wrote (a profile that is not a JSON
    /// object): the start stops rather than replace it with an empty one.
    #[error("metadata {what} is damaged: {why}")]
    CorruptMetadata { what: String, why: String },
    /// Writes are refused until the WAL is whole again; nothing of the batch was stored.
    #[error("the WAL cannot take writes: {0}")]
    Unavailable(Unavailable),
    /// The request's event `event` would take its day's distinct property keys past the
    /// documented limit; nothing of the request was stored.
    #[error("event {event}: its {field} keys would pass the daily limit of distinct keys")]
    KeysPerDay { event: usize, field: &'static str },
    #[error(
        "WAL file {} is damaged at byte {offset} ({records_before} records before it are intact; \
         records after it would be lost): start with --salvage-wal to keep those and drop the rest",
        path.display()
    )]
    WalDamaged {
        path: std::path::PathBuf,
        offset: u64,
        records_before: usize,
    },
}

/// Why the WAL refuses writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    /// The disk is full (ENOSPC); writes resume once space is freed.
    #[error("the disk is full")]
    StorageFull,
    /// Another write or fsync error.
    #[error("a write or fsync failed")]
    Io,
    /// This node is not the writer of the project's shard: its lease ran out before the
    /// batch was durable, or the project is another shard's.
    #[error("this node is not the writer of the project's shard")]
    NotWriter,
    /// The events not yet in segments reached their limit and flushes did not make room in
    /// time (a slow or unreachable segment store, a busy CPU).
    #[error("flushes are behind ingestion")]
    FlushBehind,
}

/// Until when a store may acknowledge writes: a cluster writer's lease, as its keeper last
/// renewed it (by the monotonic clock, so that a process paused past it and resumed finds
/// it over). A store without one acknowledges whenever its WAL is durable.
#[derive(Debug, Clone, Default)]
pub struct AckDeadline(std::sync::Arc<std::sync::Mutex<Option<std::time::Instant>>>);

impl AckDeadline {
    /// Writes may be acknowledged until `until`.
    pub fn extend_to(&self, until: std::time::Instant) {
        *lock(&self.0) = Some(until);
    }

    /// Whether a write made durable now may be acknowledged.
    pub fn allows_now(&self) -> bool {
        lock(&self.0).is_some_and(|until| std::time::Instant::now() < until)
    }
}

impl Unavailable {
    fn of(error: &StoreError) -> Self {
        match error {
            StoreError::Io(e) if e.kind() == std::io::ErrorKind::StorageFull => {
                Unavailable::StorageFull
            }
            StoreError::Unavailable(u) => *u,
            _ => Unavailable::Io,
        }
    }
}

impl StoreError {
    /// Whether the caller may retry later: nothing was stored, the disk is full or a write
    /// failed and is being repaired.
    pub fn unavailable(&self) -> Option<Unavailable> {
        match self {
            StoreError::Unavailable(u) => Some(*u),
            StoreError::Io(e) if e.kind() == std::io::ErrorKind::StorageFull => {
                Some(Unavailable::StorageFull)
            }
            _ => None,
        }
    }
}

/// A gauge of one store: labelled with its shard when the store holds one shard of several
/// (a cluster node may write for several shards, each its own store), plain otherwise.
pub(crate) fn gauge(name: &'static str, scope: lethe_meta::ShardScope) -> metrics::Gauge {
    match scope.count {
        0 | 1 => metrics::gauge!(name),
        _ => metrics::gauge!(name, "shard" => scope.shard.0.to_string()),
    }
}

/// Locks a mutex, taking over a poisoned one: a panic elsewhere must not stop the store.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Result type of this crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// An event with the given uuid and properties, for tests.
#[cfg(test)]
pub(crate) fn test_event(
    uuid: u128,
    event_properties: lethe_event::Props,
    user_properties: lethe_event::Props,
) -> lethe_event::Event {
    lethe_event::Event {
        uuid,
        event_type: "e".into(),
        server_upload_time: 1,
        time: 1,
        amplitude_id: 1,
        user_id: Some("user-1".into()),
        device_id: None,
        insert_id: None,
        session_id: None,
        event_id: None,
        strs: vec![],
        nums: vec![],
        groups: None,
        group_properties: vec![],
        event_properties,
        user_properties: std::sync::Arc::new(user_properties),
        extra: None,
        skip_user_properties_sync: false,
        profile_only: false,
    }
}
