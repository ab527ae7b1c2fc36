//! The event store: a WAL in front of immutable Parquet segments committed through the
//! manifest in the metadata store.
//!
//! Life of an event: [`Store::ingest`] resolves identity and user properties, appends the
//! resolved events to the WAL (group commit, fsync) and only then makes them visible in the
//! memtable. A background flush turns the memtable into one segment per project and day and
//! commits the segments, the catalog counts and the changed profiles in one metadata
//! transaction, after which the WAL files it covered are deleted. Compaction merges small
//! segments of a day the same way.

mod layout;
mod parallel;
mod resolver;
mod segment;
mod store;
mod wal;

pub use layout::{DataDir, SegmentLocation};
pub use parallel::parallel_map;
pub use resolver::KnownUsers;
pub use segment::{
    events_to_batch, may_hold_users, read_batches, read_row_groups, read_segment, write_batch,
    ColumnNames, SegmentStats,
};
pub use store::{
    failpoint, IngestOutcome, Output, ProgressFn, Rewrite, Segment, Snapshot, Store, StoreConfig,
};

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
        group_properties: None,
        event_properties,
        user_properties: std::sync::Arc::new(user_properties),
    }
}
