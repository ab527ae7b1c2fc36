//! Access requests (GDPR Art. 15, Amplitude's DSAR API): a user's events in a date range and
//! current profile, as a file the deletion worker writes beside the segments. Rows hold ids
//! and days only; the file's name is random. A request moves `staging` → `submitted` →
//! `done` (or `failed`); its file goes when the download window ends or the user is erased.

use serde::Serialize;

use crate::audit::audit_in;
use crate::sql::{params, Row};
use crate::{now_ms, MetaStore, Result, ShardScope};

/// Which access requests' files [`MetaStore::retire_access_files`] retires.
#[derive(Debug, Clone, Copy)]
pub enum Retiring<'a> {
    /// Those of `scope`'s projects expired by then.
    Expired(ShardScope),
    /// Those of these users of the project, whatever their state (an erasure).
    OfUsers(i64, &'a [i64]),
}

/// One access request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessRequest {
    pub id: i64,
    pub project_id: i64,
    pub amplitude_id: i64,
    /// First and last day of the range (`YYYY-MM-DD`, UTC, by upload time), inclusive.
    pub start_day: String,
    pub end_day: String,
    /// `staging`, `submitted`, `done` or `failed`.
    pub status: String,
    pub fail_reason: Option<String>,
    /// The file's name beside the segments while it can be downloaded.
    pub file: Option<String>,
    pub created_by: String,
    pub created_at: i64,
    /// When the file is deleted (set once done).
    pub expires_at: Option<i64>,
}

const COLUMNS: &str = "id, project_id, amplitude_id, start_day, end_day, status, fail_reason, \
                       file, created_by, created_at, expires_at";

fn request_from_row(r: &Row) -> Result<AccessRequest> {
    Ok(AccessRequest {
        id: r.get(0)?,
        project_id: r.get(1)?,
        amplitude_id: r.get(2)?,
        start_day: r.get(3)?,
        end_day: r.get(4)?,
        status: r.get(5)?,
        fail_reason: r.get(6)?,
        file: r.get(7)?,
        created_by: r.get(8)?,
        created_at: r.get(9)?,
        expires_at: r.get(10)?,
    })
}

impl MetaStore {
    /// Records a request for the user `amplitude_id`'s data between two days; audited
    /// (without the user).
    pub fn request_access(
        &self,
        project_id: i64,
        amplitude_id: i64,
        (start_day, end_day): (&str, &str),
        actor: &str,
    ) -> Result<AccessRequest> {
        self.tx(|tx| {
            let id: i64 = tx.query_row(
                "INSERT INTO access_requests (project_id, amplitude_id, start_day, end_day, status,
                     created_by, created_at)
                 VALUES (?1, ?2, ?3, ?4, 'staging', ?5, ?6) RETURNING id",
                params![
                    project_id,
                    amplitude_id,
                    start_day,
                    end_day,
                    actor,
                    now_ms()
                ],
                |r| r.get(0),
            )?;
            let detail = serde_json::json!({"project_id": project_id, "request_id": id,
                "start_day": start_day, "end_day": end_day});
            audit_in(tx, actor, "access.requested", None, &detail)?;
            tx.query_row(
                &format!("SELECT {COLUMNS} FROM access_requests WHERE id = ?1"),
                params![id],
                request_from_row,
            )
        })
    }

    /// One request of the project.
    pub fn access_request(&self, project_id: i64, id: i64) -> Result<Option<AccessRequest>> {
        self.with(|c| {
            c.query_opt(
                &format!("SELECT {COLUMNS} FROM access_requests WHERE id = ?1 AND project_id = ?2"),
                params![id, project_id],
                request_from_row,
            )
        })
    }

    /// Takes the staging requests of `scope`'s projects for the worker (now `submitted`).
    pub fn take_staged_access_requests(&self, scope: ShardScope) -> Result<Vec<AccessRequest>> {
        let [count, shard] = scope.sql_params();
        self.tx(|tx| {
            tx.query_map(
                &format!(
                    "UPDATE access_requests SET status = 'submitted'
                     WHERE status = 'staging' AND {} RETURNING {COLUMNS}",
                    ShardScope::sql("project_id", 1)
                ),
                params![count, shard],
                request_from_row,
            )
        })
    }

    /// A request is done: its file, kept until `expires_at`. Audited.
    pub fn finish_access_request(&self, id: i64, file: &str, expires_at: i64) -> Result<()> {
        self.tx(|tx| {
            tx.execute(
                "UPDATE access_requests SET status = 'done', file = ?2, expires_at = ?3 WHERE id = ?1",
                params![id, file, expires_at],
            )?;
            audit_in(tx, "system", "access.completed", None, &serde_json::json!({"request_id": id}))
        })
    }

    /// A request failed (the reason names no value).
    pub fn fail_access_request(&self, id: i64, reason: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE access_requests SET status = 'failed', fail_reason = ?2 WHERE id = ?1",
                params![id, reason],
            )?;
            Ok(())
        })
    }

    /// The requests whose file must go (see [`Retiring`]). Their file names are cleared (and
    /// the rows of erased users removed) in the same transaction, audited; the caller
    /// deletes the files.
    pub fn retire_access_files(&self, now: i64, which: Retiring) -> Result<Vec<String>> {
        self.tx(|tx| {
            let mut files = Vec::new();
            match which {
                Retiring::Expired(scope) => {
                    let [count, shard] = scope.sql_params();
                    let expired = tx.query_map(
                        &format!(
                            "SELECT id, file FROM access_requests
                             WHERE file IS NOT NULL AND expires_at <= ?1 AND {}",
                            ShardScope::sql("project_id", 2)
                        ),
                        params![now, count, shard],
                        |r| Ok((r.get::<i64>(0)?, r.get::<Option<String>>(1)?)),
                    )?;
                    for (id, file) in expired {
                        tx.execute(
                            "UPDATE access_requests SET file = NULL WHERE id = ?1",
                            params![id],
                        )?;
                        files.extend(file);
                        audit_in(
                            tx,
                            "system",
                            "access.expired",
                            None,
                            &serde_json::json!({"request_id": id}),
                        )?;
                    }
                }
                Retiring::OfUsers(project_id, amplitude_ids) => {
                    for amplitude_id in amplitude_ids {
                        let erased = tx.query_map(
                            "DELETE FROM access_requests WHERE project_id = ?1 AND amplitude_id = ?2
                             RETURNING id, file",
                            params![project_id, *amplitude_id],
                            |r| Ok((r.get::<i64>(0)?, r.get::<Option<String>>(1)?)),
                        )?;
                        for (id, file) in erased {
                            files.extend(file);
                            audit_in(
                                tx,
                                "system",
                                "access.erased",
                                None,
                                &serde_json::json!({"request_id": id}),
                            )?;
                        }
                    }
                }
            }
            Ok(files)
        })
    }
}
