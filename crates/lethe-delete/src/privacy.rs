//! User Privacy API jobs on the deletion queue: a due job becomes a task whose one clause
//! erases every event of its end users, at any time.

use lethe_meta::{ErasureJob, MetaStore};
use lethe_store::Store;

use crate::engine::preview;
use crate::spec::{Clause, TaskSpec};
use crate::DeleteError;

/// The range of an erasure: all time.
const ALL_TIME: (&str, &str) = ("1970-01-01T00:00:00.000Z", "9999-12-31T23:59:59.999Z");

/// The task that carries out a job.
pub fn erasure_spec(job: &ErasureJob) -> TaskSpec {
    let users = job.requests.len();
    TaskSpec {
        name: format!(
            "User privacy erasure of {users} user{} (job of {})",
            if users == 1 { "" } else { "s" },
            job.day
        ),
        start: ALL_TIME.0.to_string(),
        end: ALL_TIME.1.to_string(),
        clauses: vec![Clause::Users {
            amplitude_ids: job.amplitude_ids(),
        }],
    }
}

/// Locks the jobs due at `now` and queues their tasks, each with a preview of what it will
/// erase. Returns how many tasks were queued.
pub fn queue_due_erasures(store: &Store, meta: &MetaStore, now: i64) -> Result<usize, DeleteError> {
    let jobs = meta.lock_due_erasures(now)?;
    for job in &jobs {
        let spec = erasure_spec(job);
        let preview = preview(store, meta, job.project_id, &spec)?;
        meta.queue_erasure(
            job.id,
            &spec.name,
            &serde_json::to_value(&spec)?,
            &serde_json::to_value(preview.without_samples())?,
        )?;
    }
    Ok(jobs.len())
}
