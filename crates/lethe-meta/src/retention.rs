//! Retention policies: "keep raw events N days" per project, optionally for some event types
//! only. Once a day the deletion worker turns each into an ordinary deletion task (previewed,
//! queued, audited as submitted by `retention`); a policy whose last task is still pending
//! waits for it. Names and numbers only.

use serde::Serialize;
use serde_json::Value;

use crate::audit::audit_in;
use crate::sql::{params, Row};
use crate::tasks::{insert_task, TaskRow, TaskStatus};
use crate::webhooks::notify_in;
use crate::{now_ms, MetaError, MetaStore, Result, ShardScope};

/// One policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetentionPolicy {
    pub id: i64,
    pub project_id: i64,
    /// Events whose upload day is more than this many whole UTC days before today go.
    pub days: i64,
    /// Only these event types (`None`: every type).
    pub event_types: Option<Vec<String>>,
    pub created_by: String,
    pub created_at: i64,
    /// The UTC day it was last checked (`YYYY-MM-DD`).
    pub checked_day: Option<String>,
    /// The task it last queued.
    pub last_task_id: Option<i64>,
}

const COLUMNS: &str =
    "p.id, p.project_id, p.days, p.event_types, p.created_by, p.created_at, p.checked_day, p.last_task_id";

fn policy_from_row(r: &Row) -> Result<RetentionPolicy> {
    let types: Option<String> = r.get(3)?;
    let event_types = types
        .map(|text| {
            serde_json::from_str(&text)
                .map_err(|e| MetaError::Corrupt(format!("retention policy event types: {e}")))
        })
        .transpose()?;
    Ok(RetentionPolicy {
        id: r.get(0)?,
        project_id: r.get(1)?,
        days: r.get(2)?,
        event_types,
        created_by: r.get(4)?,
        created_at: r.get(5)?,
        checked_day: r.get(6)?,
        last_task_id: r.get(7)?,
    })
}

impl MetaStore {
    /// Adds a policy to the project; audited.
    pub fn create_retention(
        &self,
        project_id: i64,
        days: i64,
        event_types: Option<&[String]>,
        actor: &str,
    ) -> Result<RetentionPolicy> {
        let types = event_types.map(|t| serde_json::json!(t).to_string());
        self.tx(|tx| {
            let id: i64 = tx.query_row(
                "INSERT INTO retention_policies (project_id, days, event_types, created_by, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
                params![project_id, days, types, actor, now_ms()],
                |r| r.get(0),
            )?;
            let detail = serde_json::json!({"project_id": project_id, "policy_id": id,
                "days": days, "event_types": event_types});
            audit_in(tx, actor, "retention.created", None, &detail)?;
            tx.query_row(
                &format!("SELECT {COLUMNS} FROM retention_policies p WHERE p.id = ?1"),
                params![id],
                policy_from_row,
            )
        })
    }

    /// Removes a policy (its past tasks stay); `false` if the project has no such policy.
    /// Audited.
    pub fn delete_retention(&self, project_id: i64, id: i64, actor: &str) -> Result<bool> {
        self.tx(|tx| {
            let deleted = tx.execute(
                "DELETE FROM retention_policies WHERE id = ?1 AND project_id = ?2",
                params![id, project_id],
            )? == 1;
            if deleted {
                let detail = serde_json::json!({"project_id": project_id, "policy_id": id});
                audit_in(tx, actor, "retention.deleted", None, &detail)?;
            }
            Ok(deleted)
        })
    }

    /// The policies of one project, or of all.
    pub fn retention_policies(&self, project_id: Option<i64>) -> Result<Vec<RetentionPolicy>> {
        self.with(|c| {
            c.query_map(
                &format!(
                    "SELECT {COLUMNS} FROM retention_policies p
                     WHERE CAST(?1 AS BIGINT) IS NULL OR p.project_id = CAST(?1 AS BIGINT)
                     ORDER BY p.id"
                ),
                params![project_id],
                policy_from_row,
            )
        })
    }

    /// The policies of `scope`'s projects to check on `day`: not checked yet that day, and
    /// whose last task is not still queued or running.
    pub fn due_retention(&self, day: &str, scope: ShardScope) -> Result<Vec<RetentionPolicy>> {
        let [count, shard] = scope.sql_params();
        self.with(|c| {
            c.query_map(
                &format!(
                    "SELECT {COLUMNS} FROM retention_policies p
                     LEFT JOIN deletion_tasks t ON t.id = p.last_task_id
                     WHERE (p.checked_day IS NULL OR p.checked_day <> ?1)
                       AND (t.id IS NULL OR t.status NOT IN ('queued', 'running'))
                       AND {}
                     ORDER BY p.id",
                    ShardScope::sql("p.project_id", 2)
                ),
                params![day, count, shard],
                policy_from_row,
            )
        })
    }

    /// Records that the policy was checked on `day`, queueing `task` (name, spec, preview)
    /// in the same transaction when it has something to delete.
    pub fn checked_retention(
        &self,
        policy: &RetentionPolicy,
        day: &str,
        task: Option<(&str, &Value, &Value)>,
    ) -> Result<Option<TaskRow>> {
        self.tx(|tx| {
            let row = match task {
                Some((name, spec, preview)) => Some(insert_task(
                    tx,
                    policy.project_id,
                    name,
                    (spec, spec),
                    preview,
                    "retention",
                )?),
                None => None,
            };
            tx.execute(
                "UPDATE retention_policies SET checked_day = ?2,
                    last_task_id = COALESCE(?3, last_task_id) WHERE id = ?1",
                params![policy.id, day, row.as_ref().map(|r| r.id)],
            )?;
            if let Some(row) = &row {
                notify_in(tx, row.id, TaskStatus::Queued, None, None)?;
            }
            Ok(row)
        })
    }
}
