//! The audit trail: who did what, when, to which task: ids, names and counts, never event
//! values. Appended in the same transaction as the change it records.
//!
//! Tamper-evident: each entry's `hash` is the SHA-256 of the previous entry's hash and its
//! own content, so a changed, removed or inserted entry breaks the chain from there on
//! ([`MetaStore::verify_audit`], `lethe audit verify`). Removing the newest entries leaves a
//! shorter chain that still verifies: the head hash the check reports, recorded elsewhere
//! (a receipt, a ticket), is what proves them.

use serde::Serialize;
use sha2::{Digest, Sha256};

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
    /// The chain's hash at this entry (`None` for entries older than the chain).
    pub hash: Option<String>,
}

/// What [`MetaStore::verify_audit`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditCheck {
    /// Entries in the trail.
    pub entries: usize,
    /// Entries written before the chain began (by an older lethe): not covered.
    pub before_chain: usize,
    /// The newest entry's hash: record it to detect a later removal of the newest entries.
    pub head: Option<String>,
    /// Where the chain breaks, by entry id, first one first; empty when it holds.
    pub problems: Vec<String>,
}

/// The chain's hash of an entry whose predecessor's hash is `previous` (empty for the
/// first): over every stored field, the detail exactly as stored.
fn chain_hash(
    previous: &str,
    at: i64,
    actor: &str,
    action: &str,
    task_id: Option<i64>,
    detail: &str,
) -> String {
    let content = serde_json::json!([previous, at, actor, action, task_id, detail]);
    hex::encode(Sha256::digest(content.to_string().as_bytes()))
}

pub(crate) fn audit_in(
    c: &mut dyn Conn,
    actor: &str,
    action: &str,
    task_id: Option<i64>,
    detail: &serde_json::Value,
) -> Result<()> {
    let previous: Option<Option<String>> = c.query_opt(
        "SELECT hash FROM audit ORDER BY id DESC LIMIT 1",
        &[],
        |r| r.get(0),
    )?;
    let (at, detail) = (now_ms(), detail.to_string());
    let previous = previous.flatten().unwrap_or_default();
    let hash = chain_hash(&previous, at, actor, action, task_id, &detail);
    c.execute(
        "INSERT INTO audit (at, actor, action, task_id, detail, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![at, actor, action, task_id, detail, hash],
    )?;
    Ok(())
}

/// An audit row as stored.
struct StoredEntry {
    id: i64,
    at: i64,
    actor: String,
    action: String,
    task_id: Option<i64>,
    detail: String,
    hash: Option<String>,
}

impl MetaStore {
    /// Appends one entry to the audit trail (ids, names and counts; never event values).
    pub fn audit(&self, actor: &str, action: &str, detail: &serde_json::Value) -> Result<()> {
        self.tx(|c| audit_in(c, actor, action, None, detail))
    }

    fn audit_rows(&self) -> Result<Vec<StoredEntry>> {
        self.with(|c| {
            c.query_map(
                "SELECT id, at, actor, action, task_id, detail, hash FROM audit ORDER BY id",
                &[],
                |r| {
                    Ok(StoredEntry {
                        id: r.get(0)?,
                        at: r.get(1)?,
                        actor: r.get(2)?,
                        action: r.get(3)?,
                        task_id: r.get(4)?,
                        detail: r.get(5)?,
                        hash: r.get(6)?,
                    })
                },
            )
        })
    }

    /// The audit trail, oldest first.
    pub fn audit_log(&self) -> Result<Vec<AuditRecord>> {
        self.audit_rows()?
            .into_iter()
            .map(|row| {
                let detail = serde_json::from_str(&row.detail).map_err(|e| {
                    MetaError::Corrupt(format!("audit entry {}: detail is not JSON ({e})", row.id))
                })?;
                Ok(AuditRecord {
                    id: row.id,
                    at: row.at,
                    actor: row.actor,
                    action: row.action,
                    task_id: row.task_id,
                    detail,
                    hash: row.hash,
                })
            })
            .collect()
    }

    /// The newest entry of `action` about task `task_id`: its id and chain hash (where a
    /// receipt points in the trail).
    pub fn audit_position(
        &self,
        task_id: i64,
        action: &str,
    ) -> Result<Option<(i64, Option<String>)>> {
        self.with(|c| {
            c.query_opt(
                "SELECT id, hash FROM audit WHERE task_id = ?1 AND action = ?2
                 ORDER BY id DESC LIMIT 1",
                params![task_id, action],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
    }

    /// Recomputes the chain over every entry: an entry whose content or predecessor changed,
    /// or one without a hash after the chain began, is named by id.
    pub fn verify_audit(&self) -> Result<AuditCheck> {
        let rows = self.audit_rows()?;
        let mut check = AuditCheck {
            entries: rows.len(),
            ..AuditCheck::default()
        };
        let mut previous: Option<String> = None;
        for row in rows {
            let Some(stored) = row.hash else {
                match previous {
                    None => check.before_chain += 1,
                    Some(_) => check.problems.push(format!(
                        "entry {}: has no hash, but the chain began before it (inserted outside lethe)",
                        row.id
                    )),
                }
                continue;
            };
            let expected = chain_hash(
                previous.as_deref().unwrap_or_default(),
                row.at,
                &row.actor,
                &row.action,
                row.task_id,
                &row.detail,
            );
            if expected != stored {
                check.problems.push(format!(
                    "entry {}: its hash does not match its content and the entry before it \
                     (changed, or an entry before it was changed or removed)",
                    row.id
                ));
            }
            previous = Some(stored);
        }
        check.head = previous;
        Ok(check)
    }
}
