//! The deletion engine: what a task means ([`spec`]), what it matches ([`matcher`]), and
//! how it is previewed and carried out ([`engine`]), and how User Privacy API jobs become
//! tasks ([`privacy`]).
//!
//! The [`worker`] takes tasks from the durable queue one at a time. Execution, per task: flush (so the WAL holds nothing of the range), plan the partitions
//! whose segments can hold a target (manifest records only), then per partition rewrite the
//! segments that do hold one and swap them in one manifest commit that also advances the
//! task's progress; wait until the old files are unlinked; unset profile keys if asked;
//! truncate SQLite's WAL. Re-running after a crash skips the partitions already committed.

pub mod access;
pub mod budget;
pub mod engine;
pub mod matcher;
pub mod predicate;
pub mod privacy;
pub mod queue;
pub mod receipt;
pub mod retention;
pub mod spec;
pub mod worker;

pub use budget::MemoryBudget;
pub use engine::{
    execute, preview, Preview, Progress, RewriteStats, SegmentDigest, TaskResult, Timings,
};
pub use matcher::{Counts, Sample};
pub use predicate::{Op, Predicate, Subject};
pub use privacy::queue_due_erasures;
pub use queue::{submit, tasks, QueuedTask};
pub use spec::{check_names, parse_spec, Clause, KnownNames, SpecError, TaskSpec, MAX_CLAUSES};
pub use worker::{QueueSignal, Worker, WorkerSettings};

/// Errors of the deletion engine.
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    #[error(transparent)]
    Store(#[from] lethe_store::StoreError),
    #[error(transparent)]
    Meta(#[from] lethe_meta::MetaError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("task encoding: {0}")]
    Encoding(#[from] serde_json::Error),
    /// A stored task's field does not decode: the task is named, its contents never.
    #[error("stored task {task} is damaged: its {field} does not decode ({why})")]
    CorruptTask {
        task: i64,
        field: &'static str,
        why: String,
    },
    /// A completed task's predicate values were replaced by digests: it cannot run again.
    #[error("task {0} completed and its predicate values were redacted: it cannot run again")]
    Redacted(i64),
}

impl DeleteError {
    /// Whether another attempt would fail the same way: a segment the task must rewrite is
    /// damaged (quarantined) and cannot be read until an operator restores it, or the bucket
    /// keeps versions (nothing deleted there goes).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            DeleteError::Store(lethe_store::StoreError::Corrupt { .. })
                | DeleteError::Store(lethe_store::StoreError::VersionedBucket)
                | DeleteError::CorruptTask { .. }
                | DeleteError::Redacted(_)
        )
    }
}
