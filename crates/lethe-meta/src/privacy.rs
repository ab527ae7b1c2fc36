//! User Privacy API state: erasure jobs (one per project and day), their requests, and the
//! suppression list. A job's ids can change only while it is `staging`; the deletion engine
//! erases them once the job is on the deletion queue.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::json;

use crate::audit::audit_in;
use crate::sql::{params, Conn, Row, Value};
use crate::tasks::{insert_task, set_status_in, TaskStatus};
use crate::webhooks::notify_in;
use crate::{now_ms, MetaError, MetaStore, Result, ShardScope, TaskRow};

/// One erasure request inside a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErasureRequest {
    pub amplitude_id: i64,
    pub requester: String,
    pub requested_at: i64,
}

/// A job: the users of one project erased together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErasureJob {
    pub id: i64,
    pub project_id: i64,
    /// UTC day the job is scheduled to run, `YYYY-MM-DD`.
    pub day: String,
    /// Earliest time (ms) the job runs: every request gets the whole grace period.
    pub run_at: i64,
    pub status: JobStatus,
    pub task_id: Option<i64>,
    pub done_at: Option<i64>,
    pub requests: Vec<ErasureRequest>,
}

impl ErasureJob {
    /// The amplitude_ids the job erases.
    pub fn amplitude_ids(&self) -> Vec<i64> {
        self.requests.iter().map(|r| r.amplitude_id).collect()
    }
}

/// The outcome of removing an id from a job.
/// Where a User Privacy API job is (Amplitude's statuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Collecting requests; each can still be withdrawn.
    Staging,
    /// Locked and queued as a deletion task.
    Submitted,
    /// Its task completed.
    Done,
}

impl JobStatus {
    /// The stored (and Amplitude's) spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Staging => "staging",
            JobStatus::Submitted => "submitted",
            JobStatus::Done => "done",
        }
    }

    fn parse(text: &str) -> Option<JobStatus> {
        [JobStatus::Staging, JobStatus::Submitted, JobStatus::Done]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job status column read back: an unknown spelling is an error, never a default.
fn job_status(r: &Row, column: usize) -> Result<JobStatus> {
    let text: String = r.get(column)?;
    JobStatus::parse(&text)
        .ok_or_else(|| MetaError::Corrupt(format!("unknown privacy job status {text:?}")))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unscheduled {
    Removed(ErasureRequest),
    /// No job of that day holds the id.
    NotFound,
    /// The job holding the id is past `staging` (its status).
    Locked(JobStatus),
}

/// A suppressed end user: only a hash of the user_id is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Suppression {
    pub id: i64,
    pub project_id: i64,
    pub user_id_sha256: String,
    pub created_at: i64,
    pub created_by: String,
}

/// The form in which a suppressed user_id is kept and matched: SHA-256, hex.
pub fn user_id_digest(user_id: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(user_id.as_bytes()))
}

const JOB_COLS: &str = "id, project_id, day, run_at, status, task_id, done_at";

fn load_job(tx: &mut dyn Conn, id: i64) -> Result<ErasureJob> {
    let mut job = tx.query_row(
        &format!("SELECT {JOB_COLS} FROM privacy_jobs WHERE id=?1"),
        params![id],
        |r| {
            Ok(ErasureJob {
                id: r.get(0)?,
                project_id: r.get(1)?,
                day: r.get(2)?,
                run_at: r.get(3)?,
                status: job_status(r, 4)?,
                task_id: r.get(5)?,
                done_at: r.get(6)?,
                requests: Vec::new(),
            })
        },
    )?;
    job.requests = tx.query_map(
        "SELECT amplitude_id, requester, requested_at FROM privacy_requests
         WHERE job_id=?1 ORDER BY requested_at, amplitude_id",
        params![id],
        |r| {
            Ok(ErasureRequest {
                amplitude_id: r.get(0)?,
                requester: r.get(1)?,
                requested_at: r.get(2)?,
            })
        },
    )?;
    Ok(job)
}

/// The ids a query on `privacy_jobs` selects.
fn job_ids(c: &mut dyn Conn, sql: &str, args: &[Value]) -> Result<Vec<i64>> {
    c.query_map(sql, args, |r| r.get(0))
}

impl MetaStore {
    /// Marks a task completed with its final counts and, in the same transaction, the
    /// privacy job it carried out (if any) done. (Here, not among the tasks, because jobs
    /// depend on tasks and not the reverse.) A spec that held property values (a clause's
    /// `where`) is replaced by its `redacted` form in the same transaction, so a completed
    /// task keeps no value it was asked to delete (purge with [`ValueTable::Tasks`]).
    ///
    /// [`ValueTable::Tasks`]: crate::ValueTable::Tasks
    pub fn complete_task(
        &self,
        id: i64,
        result: &serde_json::Value,
        redacted: Option<&serde_json::Value>,
    ) -> Result<()> {
        self.tx(|tx| {
            if let Some(spec) = redacted {
                tx.execute(
                    "UPDATE deletion_tasks SET spec=?2 WHERE id=?1",
                    params![id, spec.to_string()],
                )?;
            }
            set_status_in(
                tx,
                id,
                TaskStatus::Completed,
                "task.completed",
                Some(result),
                None,
            )?;
            finish_job(tx, id, now_ms())?;
            Ok(())
        })
    }
}

/// Marks the job of a completed task done.
fn finish_job(tx: &mut dyn Conn, task_id: i64, now: i64) -> Result<()> {
    let job: Option<i64> = tx.query_opt(
        "UPDATE privacy_jobs SET status='done', done_at=?2
             WHERE task_id=?1 AND status='submitted' RETURNING id",
        params![task_id, now],
        |r| r.get(0),
    )?;
    if let Some(job) = job {
        audit_in(
            tx,
            "system",
            "privacy.done",
            Some(task_id),
            &json!({ "job_id": job }),
        )?;
    }
    Ok(())
}

impl MetaStore {
    /// Adds `amplitude_ids` to the project's staging job for `day` (creating it) and makes
    /// the job run no earlier than `run_at`; audited under the authenticated `actor`, with the
    /// `requester` recorded as the caller gave it.
    pub fn request_erasure(
        &self,
        project_id: i64,
        day: &str,
        run_at: i64,
        amplitude_ids: &[i64],
        requester: &str,
        actor: &str,
    ) -> Result<ErasureJob> {
        self.tx(|tx| {
            let now = now_ms();
            let existing: Option<i64> = tx
                .query_opt(
                    "SELECT id FROM privacy_jobs
                     WHERE project_id=?1 AND day=?2 AND status='staging' ORDER BY id LIMIT 1",
                    params![project_id, day],
                    |r| r.get(0),
                )?;
            let job = match existing {
                Some(id) => {
                    tx.execute(
                        "UPDATE privacy_jobs SET run_at = CASE WHEN run_at < ?2 THEN ?2 ELSE run_at END
                         WHERE id=?1",
                        params![id, run_at],
                    )?;
                    id
                }
                None => {
                    tx.query_row(
                        "INSERT INTO privacy_jobs (project_id, day, run_at, status, created_at)
                         VALUES (?1, ?2, ?3, 'staging', ?4) RETURNING id",
                        params![project_id, day, run_at, now],
                        |r| r.get(0),
                    )?
                }
            };
            for id in amplitude_ids {
                tx.execute(
                    "INSERT INTO privacy_requests (job_id, amplitude_id, requester, requested_at)
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                    params![job, id, requester, now],
                )?;
            }
            let detail = json!({
                "project_id": project_id, "job_id": job, "day": day, "amplitude_ids": amplitude_ids,
                "requester": requester,
            });
            audit_in(tx, actor, "privacy.requested", None, &detail)?;
            let job = load_job(tx, job)?;
            Ok(job)
        })
    }

    /// The project's jobs whose day lies in `[from_day, to_day]` (inclusive).
    pub fn erasure_jobs(
        &self,
        project_id: i64,
        from_day: &str,
        to_day: &str,
    ) -> Result<Vec<ErasureJob>> {
        self.with(|c| {
            job_ids(
                c,
                "SELECT id FROM privacy_jobs WHERE project_id=?1 AND day BETWEEN ?2 AND ?3
                 ORDER BY day, id",
                params![project_id, from_day, to_day],
            )?
            .into_iter()
            .map(|id| load_job(c, id))
            .collect()
        })
    }

    /// Removes one id from the project's job of `day`, while that job is staging; audited.
    pub fn unschedule_erasure(
        &self,
        project_id: i64,
        amplitude_id: i64,
        day: &str,
        actor: &str,
    ) -> Result<Unscheduled> {
        self.tx(|tx| {
            let found: Option<(i64, JobStatus)> = tx.query_opt(
                "SELECT j.id, j.status FROM privacy_jobs j
                     JOIN privacy_requests r ON r.job_id = j.id
                     WHERE j.project_id=?1 AND j.day=?2 AND r.amplitude_id=?3
                     ORDER BY j.status = 'staging' DESC, j.id DESC LIMIT 1",
                params![project_id, day, amplitude_id],
                |r| Ok((r.get(0)?, job_status(r, 1)?)),
            )?;
            let Some((job, status)) = found else {
                return Ok(Unscheduled::NotFound);
            };
            if status != JobStatus::Staging {
                return Ok(Unscheduled::Locked(status));
            }
            let request = tx.query_row(
                "DELETE FROM privacy_requests WHERE job_id=?1 AND amplitude_id=?2
                 RETURNING requester, requested_at",
                params![job, amplitude_id],
                |r| {
                    Ok(ErasureRequest {
                        amplitude_id,
                        requester: r.get(0)?,
                        requested_at: r.get(1)?,
                    })
                },
            )?;
            tx.execute(
                "DELETE FROM privacy_jobs WHERE id=?1 AND status='staging'
                 AND NOT EXISTS (SELECT 1 FROM privacy_requests WHERE job_id=?1)",
                params![job],
            )?;
            let detail = json!({
                "project_id": project_id, "job_id": job, "day": day, "amplitude_id": amplitude_id,
            });
            audit_in(tx, actor, "privacy.unscheduled", None, &detail)?;
            Ok(Unscheduled::Removed(request))
        })
    }

    /// Locks every staging job of `scope`'s projects due at `now` (status `submitted`,
    /// audited) and returns their submitted jobs that have no task yet, oldest first.
    pub fn lock_due_erasures(&self, now: i64, scope: ShardScope) -> Result<Vec<ErasureJob>> {
        let [count, shard] = scope.sql_params();
        self.tx(|tx| {
            for job in job_ids(
                tx,
                &format!(
                    "UPDATE privacy_jobs SET status='submitted'
                     WHERE status='staging' AND run_at <= ?1 AND {} RETURNING id",
                    ShardScope::sql("project_id", 2)
                ),
                params![now, count, shard],
            )? {
                audit_in(
                    tx,
                    "system",
                    "privacy.submitted",
                    None,
                    &json!({ "job_id": job }),
                )?;
            }
            let jobs = job_ids(
                tx,
                &format!(
                    "SELECT id FROM privacy_jobs WHERE status='submitted' AND task_id IS NULL
                     AND {} ORDER BY id",
                    ShardScope::sql("project_id", 1)
                ),
                params![count, shard],
            )?
            .into_iter()
            .map(|id| load_job(tx, id))
            .collect::<Result<Vec<_>>>()?;
            Ok(jobs)
        })
    }

    /// Queues the deletion task of a submitted job and links the two, atomically.
    pub fn queue_erasure(
        &self,
        job_id: i64,
        name: &str,
        spec: &serde_json::Value,
        preview: &serde_json::Value,
    ) -> Result<TaskRow> {
        self.tx(|tx| {
            let job = load_job(tx, job_id)?;
            let task = insert_task(
                tx,
                job.project_id,
                name,
                (spec, spec),
                preview,
                "privacy-api",
            )?;
            tx.execute(
                "UPDATE privacy_jobs SET task_id=?2 WHERE id=?1",
                params![job_id, task.id],
            )?;
            notify_in(tx, task.id, TaskStatus::Queued, None, None)?;
            Ok(task)
        })
    }

    /// Adds user_id hashes to the project's suppression list; audited.
    pub fn suppress(&self, project_id: i64, hashes: &[String], actor: &str) -> Result<()> {
        self.tx(|tx| {
            for h in hashes {
                tx.execute(
                    "INSERT INTO suppressions (project_id, user_id_sha256, created_at, created_by)
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                    params![project_id, h, now_ms(), actor],
                )?;
            }
            let detail = json!({ "project_id": project_id, "users": hashes.len() });
            audit_in(tx, actor, "privacy.suppressed", None, &detail)?;
            Ok(())
        })
    }

    /// Every suppression (of one project, or of all).
    pub fn suppressions(&self, project_id: Option<i64>) -> Result<Vec<Suppression>> {
        self.with(|c| {
            c.query_map(
                "SELECT id, project_id, user_id_sha256, created_at, created_by FROM suppressions
                 WHERE CAST(?1 AS BIGINT) IS NULL OR project_id = ?1 ORDER BY id",
                params![project_id],
                |r| {
                    Ok(Suppression {
                        id: r.get(0)?,
                        project_id: r.get(1)?,
                        user_id_sha256: r.get(2)?,
                        created_at: r.get(3)?,
                        created_by: r.get(4)?,
                    })
                },
            )
        })
    }

    /// Lifts one suppression; `false` when the project has none with that id.
    pub fn lift_suppression(&self, project_id: i64, id: i64, actor: &str) -> Result<bool> {
        self.tx(|tx| {
            let removed = tx.execute(
                "DELETE FROM suppressions WHERE id=?1 AND project_id=?2",
                params![id, project_id],
            )?;
            if removed == 1 {
                let detail = json!({ "project_id": project_id, "suppression_id": id });
                audit_in(tx, actor, "privacy.suppression_lifted", None, &detail)?;
            }
            Ok(removed == 1)
        })
    }

    /// Deletes the identity mappings and profiles of erased users, and records in the same
    /// transaction which tables (on PostgreSQL, which partitions) held them, for
    /// [`MetaStore::purge_erased`].
    pub fn forget_users(&self, project_id: i64, amplitude_ids: &[i64]) -> Result<()> {
        let deletes = ["identities", "profiles"].map(|table| {
            format!(
                "DELETE FROM {table} WHERE project_id=?1 AND amplitude_id=?2 RETURNING {}",
                self.relation_of(table)
            )
        });
        self.tx(|tx| {
            let mut held = BTreeSet::new();
            for id in amplitude_ids {
                for delete in &deletes {
                    let relations =
                        tx.query_map(delete, params![project_id, id], |r| r.get::<String>(0))?;
                    held.extend(relations);
                }
            }
            for relation in held {
                tx.execute(
                    "INSERT INTO purge_pending (relation) VALUES (?1) ON CONFLICT DO NOTHING",
                    params![relation],
                )?;
            }
            Ok(())
        })
    }
}
