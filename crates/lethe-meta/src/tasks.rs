//! The deletion queue and the audit trail. Tasks run one at a time in submission order; a
//! task found `running` at start-up was interrupted and resumes first.

use serde::Serialize;
use serde_json::Value;

use crate::audit::audit_in;
use crate::blocks::{add_blocks_in, BlockKind};
use crate::sql::{params, Conn, Row};
use crate::webhooks::notify_in;
use crate::{now_ms, MetaError, MetaStore, Result, ShardScope};

/// A deletion task as stored. `spec`, `preview`, `progress` and `result` are JSON texts
/// owned by the deletion engine; they hold names and counts, never values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskRow {
    pub id: i64,
    pub project_id: i64,
    pub name: String,
    pub spec: String,
    pub status: TaskStatus,
    pub preview: String,
    pub progress: Option<String>,
    pub result: Option<String>,
    pub created_by: String,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub error: Option<String>,
    pub attempts: i64,
}

const TASK_COLS: &str =
    "id, project_id, name, spec, status, preview, progress, result, created_by, \
                         created_at, started_at, finished_at, error, attempts";

/// Where a deletion task is in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    /// Submitted, waiting for the worker.
    Queued,
    /// Being executed (or interrupted by a crash: resumed at start).
    Running,
    /// Done; its result holds the final counts.
    Completed,
    /// Gave up after its retries; an administrator may retry it.
    Failed,
}

impl TaskStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Queued => "queued",
            TaskStatus::Running => "running",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Option<TaskStatus> {
        [
            TaskStatus::Queued,
            TaskStatus::Running,
            TaskStatus::Completed,
            TaskStatus::Failed,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    /// Whether the task still has work ahead (queued, or running).
    pub fn is_pending(self) -> bool {
        matches!(self, TaskStatus::Queued | TaskStatus::Running)
    }
}

fn task_from_row(r: &Row) -> Result<TaskRow> {
    let status: String = r.get(4)?;
    Ok(TaskRow {
        id: r.get(0)?,
        project_id: r.get(1)?,
        name: r.get(2)?,
        spec: r.get(3)?,
        status: TaskStatus::parse(&status)
            .ok_or_else(|| MetaError::Corrupt(format!("unknown task status {status:?}")))?,
        preview: r.get(5)?,
        progress: r.get(6)?,
        result: r.get(7)?,
        created_by: r.get(8)?,
        created_at: r.get(9)?,
        started_at: r.get(10)?,
        finished_at: r.get(11)?,
        error: r.get(12)?,
        attempts: r.get(13)?,
    })
}

/// Inserts a queued task and its audit line inside `tx` (the caller notifies webhooks once
/// whatever the task carries out is linked to it: [`notify_in`]). The spec comes twice: as stored
/// (what the task runs) and as audited (the same without property values: see
/// [`MetaStore::complete_task`]).
pub(crate) fn insert_task(
    tx: &mut dyn Conn,
    project_id: i64,
    name: &str,
    (spec, audited_spec): (&Value, &Value),
    preview: &Value,
    created_by: &str,
) -> Result<TaskRow> {
    let id: i64 = tx.query_row(
        "INSERT INTO deletion_tasks (project_id, name, spec, status, preview, created_by, created_at)
         VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?6) RETURNING id",
        params![project_id, name, spec.to_string(), preview.to_string(), created_by, now_ms()],
        |r| r.get(0),
    )?;
    let detail = serde_json::json!({
        "project_id": project_id,
        "name": name,
        "spec": audited_spec,
        "preview": preview,
    });
    audit_in(tx, created_by, "task.submitted", Some(id), &detail)?;
    tx.query_row(
        &format!("SELECT {TASK_COLS} FROM deletion_tasks WHERE id=?1"),
        params![id],
        task_from_row,
    )
}

/// Moves a task to `status` inside `tx`, audited as `action` with its result or error.
pub(crate) fn set_status_in(
    tx: &mut dyn Conn,
    id: i64,
    status: TaskStatus,
    action: &str,
    result: Option<&Value>,
    error: Option<&str>,
) -> Result<()> {
    let now = now_ms();
    let finished = (!status.is_pending()).then_some(now);
    let before: Option<String> = tx.query_opt(
        "SELECT status FROM deletion_tasks WHERE id=?1",
        params![id],
        |r| r.get(0),
    )?;
    // A resumed task (running again after a restart or a failed attempt) has not changed.
    if before.as_deref() != Some(status.as_str()) {
        notify_in(tx, id, status, result, error)?;
    }
    tx.execute(
        "UPDATE deletion_tasks SET status=?2,
            started_at = CASE WHEN ?2 = 'running' THEN COALESCE(started_at, ?3) ELSE started_at END,
            attempts = attempts + CASE WHEN ?2 = 'running' THEN 1 ELSE 0 END,
            finished_at=?4, result=COALESCE(?5, result), error=?6
         WHERE id=?1",
        params![
            id,
            status.as_str(),
            now,
            finished,
            result.map(Value::to_string),
            error
        ],
    )?;
    let mut detail = serde_json::json!({ "status": status });
    if let Some(r) = result {
        detail["result"] = r.clone();
    }
    if let Some(e) = error {
        detail["error"] = serde_json::json!(e);
    }
    audit_in(tx, "system", action, Some(id), &detail)
}

impl MetaStore {
    /// Queues a task and audits its submission, atomically, with the names it also blocks
    /// from now on (`keep_blocking`; none otherwise). `spec` is as stored and as audited
    /// (see [`insert_task`]).
    pub fn submit_task(
        &self,
        project_id: i64,
        name: &str,
        (spec, preview): ((&Value, &Value), &Value),
        blocks: &[(BlockKind, String)],
        created_by: &str,
    ) -> Result<TaskRow> {
        self.tx(|tx| {
            let row = insert_task(tx, project_id, name, spec, preview, created_by)?;
            notify_in(tx, row.id, TaskStatus::Queued, None, None)?;
            add_blocks_in(tx, project_id, blocks, created_by)?;
            Ok(row)
        })
    }

    /// Every task, newest first.
    pub fn tasks(&self) -> Result<Vec<TaskRow>> {
        self.with(|c| {
            c.query_map(
                &format!("SELECT {TASK_COLS} FROM deletion_tasks ORDER BY id DESC"),
                &[],
                task_from_row,
            )
        })
    }

    /// One task.
    pub fn task(&self, id: i64) -> Result<Option<TaskRow>> {
        self.with(|c| {
            c.query_opt(
                &format!("SELECT {TASK_COLS} FROM deletion_tasks WHERE id=?1"),
                params![id],
                task_from_row,
            )
        })
    }

    /// The task of `scope`'s projects to work on: an interrupted one first, else the oldest
    /// queued.
    pub fn next_task(&self, scope: ShardScope) -> Result<Option<TaskRow>> {
        let [count, shard] = scope.sql_params();
        self.with(|c| {
            c.query_opt(
                &format!(
                    "SELECT {TASK_COLS} FROM deletion_tasks
                     WHERE status IN ('running', 'queued') AND {}
                     ORDER BY status = 'running' DESC, id LIMIT 1",
                    ShardScope::sql("project_id", 1)
                ),
                params![count, shard],
                task_from_row,
            )
        })
    }

    /// Marks a task running (again, after a restart or a retry).
    pub fn start_task(&self, id: i64) -> Result<()> {
        self.set_status(id, TaskStatus::Running, "task.started", None)
    }

    /// Marks a task failed with a reason (no values in it).
    pub fn fail_task(&self, id: i64, error: &str) -> Result<()> {
        self.set_status(id, TaskStatus::Failed, "task.failed", Some(error))
    }

    /// Puts a failed task back in the queue; `false` if it was not failed.
    pub fn retry_task(&self, id: i64, actor: &str) -> Result<bool> {
        self.tx(|tx| {
            let changed = tx.execute(
                "UPDATE deletion_tasks SET status='queued', error=NULL, finished_at=NULL
                 WHERE id=?1 AND status='failed'",
                params![id],
            )?;
            if changed == 1 {
                audit_in(tx, actor, "task.retried", Some(id), &serde_json::json!({}))?;
                notify_in(tx, id, TaskStatus::Queued, None, None)?;
            }
            Ok(changed == 1)
        })
    }

    fn set_status(
        &self,
        id: i64,
        status: TaskStatus,
        action: &str,
        error: Option<&str>,
    ) -> Result<()> {
        self.tx(|tx| {
            set_status_in(tx, id, status, action, None, error)?;
            Ok(())
        })
    }
}
