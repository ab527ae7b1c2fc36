//! Each project's block list (`lethe_event::BlockList` applies it at ingestion): event types
//! and property keys, added by an administrator or by a deletion task submitted with
//! `keep_blocking`, lifted by an administrator; every change audited. Names only.

use serde::Serialize;

use crate::audit::audit_in;
use crate::sql::{params, Conn, Row};
use crate::{now_ms, MetaError, MetaStore, Result};

/// What a block names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockKind {
    EventType,
    EventProperty,
    UserProperty,
    GroupProperty,
}

impl BlockKind {
    pub const ALL: [BlockKind; 4] = [
        BlockKind::EventType,
        BlockKind::EventProperty,
        BlockKind::UserProperty,
        BlockKind::GroupProperty,
    ];

    /// The stored and API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            BlockKind::EventType => "event_type",
            BlockKind::EventProperty => "event_property",
            BlockKind::UserProperty => "user_property",
            BlockKind::GroupProperty => "group_property",
        }
    }

    /// The kind spelled `text`, if any.
    pub fn parse(text: &str) -> Option<BlockKind> {
        BlockKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// One blocked name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Block {
    pub project_id: i64,
    pub kind: BlockKind,
    pub name: String,
    pub created_by: String,
    pub created_at: i64,
}

fn block_from_row(r: &Row) -> Result<Block> {
    let kind: String = r.get(1)?;
    Ok(Block {
        project_id: r.get(0)?,
        kind: BlockKind::parse(&kind)
            .ok_or_else(|| MetaError::Corrupt(format!("unknown block kind {kind:?}")))?,
        name: r.get(2)?,
        created_by: r.get(3)?,
        created_at: r.get(4)?,
    })
}

/// Adds `names` of `kind` to the project's block list inside `tx` (a name blocked already
/// stays as it was), audited under `actor`; returns how many were new.
pub(crate) fn add_blocks_in(
    tx: &mut dyn Conn,
    project_id: i64,
    blocks: &[(BlockKind, String)],
    actor: &str,
) -> Result<usize> {
    let mut added = 0;
    for (kind, name) in blocks {
        added += tx.execute(
            "INSERT INTO blocks (project_id, kind, name, created_by, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
            params![project_id, kind.as_str(), name.as_str(), actor, now_ms()],
        )? as usize;
    }
    if !blocks.is_empty() {
        let names: Vec<serde_json::Value> = blocks
            .iter()
            .map(|(kind, name)| serde_json::json!({"kind": kind, "name": name}))
            .collect();
        let detail = serde_json::json!({"project_id": project_id, "blocked": names});
        audit_in(tx, actor, "block.added", None, &detail)?;
    }
    Ok(added)
}

impl MetaStore {
    /// Blocks `names` of `kind` in the project; audited. Returns how many were new.
    pub fn add_blocks(
        &self,
        project_id: i64,
        blocks: &[(BlockKind, String)],
        actor: &str,
    ) -> Result<usize> {
        self.tx(|tx| add_blocks_in(tx, project_id, blocks, actor))
    }

    /// Lifts one block; `false` if the name was not blocked. Audited.
    pub fn lift_block(
        &self,
        project_id: i64,
        kind: BlockKind,
        name: &str,
        actor: &str,
    ) -> Result<bool> {
        self.tx(|tx| {
            let lifted = tx.execute(
                "DELETE FROM blocks WHERE project_id = ?1 AND kind = ?2 AND name = ?3",
                params![project_id, kind.as_str(), name],
            )? == 1;
            if lifted {
                let detail =
                    serde_json::json!({"project_id": project_id, "kind": kind, "name": name});
                audit_in(tx, actor, "block.lifted", None, &detail)?;
            }
            Ok(lifted)
        })
    }

    /// The blocks of one project, or of every project; by project, kind and name.
    pub fn blocks(&self, project_id: Option<i64>) -> Result<Vec<Block>> {
        self.with(|c| {
            c.query_map(
                "SELECT project_id, kind, name, created_by, created_at FROM blocks
                 WHERE CAST(?1 AS BIGINT) IS NULL OR project_id = CAST(?1 AS BIGINT)
                 ORDER BY project_id, kind, name",
                params![project_id],
                block_from_row,
            )
        })
    }
}
