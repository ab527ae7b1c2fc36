//! Identities (user_id / device_id → amplitude_id), current user profiles, and current group
//! properties.
//!
//! The ingestion path keeps both in memory and writes the changed ones here in the same
//! transaction that commits the events that changed them.

use crate::sql::{execute_rows, params, Conn};
use crate::{MetaError, MetaStore, Result, ShardScope};

/// Which external id an identity mapping is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdKind {
    User,
    Device,
}

impl IdKind {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            IdKind::User => "user",
            IdKind::Device => "device",
        }
    }
}

/// One id mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRecord {
    pub project_id: i64,
    pub kind: IdKind,
    pub external_id: String,
    pub amplitude_id: i64,
}

/// One user's current profile (`properties` is a JSON object text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileRecord {
    pub project_id: i64,
    pub amplitude_id: i64,
    pub user_id: Option<String>,
    pub properties: String,
    /// Event time (ms) of the latest event or snapshot that set the properties.
    pub as_of: i64,
}

/// One group's current properties (`properties` is a JSON object text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    pub project_id: i64,
    pub group_type: String,
    pub group_value: String,
    pub properties: String,
    /// Event time (ms) of the latest change.
    pub as_of: i64,
}

impl MetaStore {
    /// The current properties of every group of `scope`'s projects, for loading into memory
    /// at start.
    pub fn load_groups(&self, scope: ShardScope) -> Result<Vec<GroupRecord>> {
        let [count, shard] = scope.sql_params();
        self.with(|c| {
            c.query_map(
                &format!(
                    "SELECT project_id, group_type, group_value, properties, as_of
                     FROM group_profiles WHERE {}",
                    ShardScope::sql("project_id", 1)
                ),
                params![count, shard],
                |r| {
                    Ok(GroupRecord {
                        project_id: r.get(0)?,
                        group_type: r.get(1)?,
                        group_value: r.get(2)?,
                        properties: r.get(3)?,
                        as_of: r.get(4)?,
                    })
                },
            )
        })
    }

    /// Every identity mapping of `scope`'s projects, for loading into memory at start.
    pub fn load_identities(&self, scope: ShardScope) -> Result<Vec<IdentityRecord>> {
        let [count, shard] = scope.sql_params();
        self.with(|c| {
            c.query_map(
                &format!(
                    "SELECT project_id, kind, external_id, amplitude_id
                     FROM identities WHERE {}",
                    ShardScope::sql("project_id", 1)
                ),
                params![count, shard],
                |r| {
                    let kind: String = r.get(1)?;
                    let kind = match kind.as_str() {
                        "user" => IdKind::User,
                        "device" => IdKind::Device,
                        other => {
                            return Err(MetaError::Corrupt(format!(
                                "unknown identity kind {other:?}"
                            )))
                        }
                    };
                    Ok(IdentityRecord {
                        project_id: r.get(0)?,
                        kind,
                        external_id: r.get(2)?,
                        amplitude_id: r.get(3)?,
                    })
                },
            )
        })
    }

    /// Every profile of `scope`'s projects, for loading into memory at start.
    pub fn load_profiles(&self, scope: ShardScope) -> Result<Vec<ProfileRecord>> {
        let [count, shard] = scope.sql_params();
        self.with(|c| {
            c.query_map(
                &format!(
                    "SELECT project_id, amplitude_id, user_id, properties, as_of
                     FROM profiles WHERE {}",
                    ShardScope::sql("project_id", 1)
                ),
                params![count, shard],
                |r| {
                    Ok(ProfileRecord {
                        project_id: r.get(0)?,
                        amplitude_id: r.get(1)?,
                        user_id: r.get(2)?,
                        properties: r.get(3)?,
                        as_of: r.get(4)?,
                    })
                },
            )
        })
    }

    /// The highest amplitude_id ever handed out and committed.
    pub fn amplitude_id_high(&self) -> Result<i64> {
        self.with(|c| {
            c.query_row(
                "SELECT value FROM counters WHERE name='amplitude_id'",
                &[],
                |r| r.get(0),
            )
        })
    }
}

/// Writes identities (each key once), as one flush's commit changed them.
pub(crate) fn upsert_identities(tx: &mut dyn Conn, ids: &[IdentityRecord]) -> Result<()> {
    execute_rows(
        tx,
        "INSERT INTO identities (project_id, kind, external_id, amplitude_id) VALUES {rows}
         ON CONFLICT (project_id, kind, external_id) DO UPDATE SET amplitude_id = excluded.amplitude_id",
        "(?, ?, ?, ?)",
        ids.iter()
            .map(|id| params![id.project_id, id.kind.as_str(), &id.external_id, id.amplitude_id].to_vec()),
    )
}

/// Writes groups' properties (each group once).
pub(crate) fn upsert_groups(tx: &mut dyn Conn, groups: &[GroupRecord]) -> Result<()> {
    execute_rows(
        tx,
        "INSERT INTO group_profiles (project_id, group_type, group_value, properties, as_of)
         VALUES {rows}
         ON CONFLICT (project_id, group_type, group_value)
         DO UPDATE SET properties = excluded.properties, as_of = excluded.as_of",
        "(?, ?, ?, ?, ?)",
        groups.iter().map(|g| {
            params![
                g.project_id,
                &g.group_type,
                &g.group_value,
                &g.properties,
                g.as_of
            ]
            .to_vec()
        }),
    )
}

/// Writes profiles (each user once).
pub(crate) fn upsert_profiles(tx: &mut dyn Conn, profiles: &[ProfileRecord]) -> Result<()> {
    execute_rows(
        tx,
        "INSERT INTO profiles (project_id, amplitude_id, user_id, properties, as_of)
         VALUES {rows}
         ON CONFLICT (project_id, amplitude_id)
         DO UPDATE SET user_id = excluded.user_id, properties = excluded.properties,
                       as_of = excluded.as_of",
        "(?, ?, ?, ?, ?)",
        profiles.iter().map(|p| {
            params![
                p.project_id,
                p.amplitude_id,
                p.user_id.as_ref(),
                &p.properties,
                p.as_of
            ]
            .to_vec()
        }),
    )
}
