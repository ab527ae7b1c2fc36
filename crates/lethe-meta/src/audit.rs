//! The audit trail: who did what, when, to which task: ids, names and counts, never event
//! values. Appended in the same transaction as the change it records.

use serde::Serialize;

use crate::sql::{params, Conn};
use crate::{now_ms, MetaError, MetaStore, Result};

/// One line of the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRecord {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub task_id: Option<i64>,
    pub detail: serde_json::Value,
}

pub(crate) fn audit_in(
    c: &mut dyn Conn,
    actor: &str,
    action: &str,
    task_id: Option<i64>,
    detail: &serde_json::Value,
) -> Result<()> {
    c.execute(
        "INSERT INTO audit (at, actor, action, task_id, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![now_ms(), actor, action, task_id, detail.to_string()],
    )?;
    Ok(())
}

impl MetaStore {
    /// Appends one entry to the audit trail (ids, names and counts; never event values).
    pub fn audit(&self, actor: &str, action: &str, detail: &serde_json::Value) -> Result<()> {
        self.with(|c| audit_in(c, actor, action, None, detail))
    }

    /// The audit trail, oldest first.
    pub fn audit_log(&self) -> Result<Vec<AuditRecord>> {
        let rows = self.with(|c| {
            c.query_map(
                "SELECT id, at, actor, action, task_id, detail FROM audit ORDER BY id",
                &[],
                |r| {
                    let record = AuditRecord {
                        id: r.get(0)?,
                        at: r.get(1)?,
                        actor: r.get(2)?,
                        action: r.get(3)?,
                        task_id: r.get(4)?,
                        detail: serde_json::Value::Null,
                    };
                    Ok((record, r.get::<String>(5)?))
                },
            )
        })?;
        rows.into_iter()
            .map(|(record, detail)| {
                let detail = serde_json::from_str(&detail).map_err(|e| {
                    MetaError::Corrupt(format!(
                        "audit entry {}: detail is not JSON ({e})",
                        record.id
                    ))
                })?;
                Ok(AuditRecord { detail, ..record })
            })
            .collect()
    }
}
