//! The manifest: which segments are live. A commit swaps segments in and out, applies the
//! catalog, identity and profile changes they carry, and advances the WAL checkpoint, all in
//! one transaction, so a reader or a restart sees all of a change or none of it.

use crate::catalog::{apply_delta, CatalogDelta};
use crate::identity::{
    upsert_groups, upsert_identities, upsert_profiles, GroupRecord, IdentityRecord, ProfileRecord,
};
use crate::sql::{execute_rows, params};
use crate::{MetaError, MetaStore, Result, Shard};

/// What the manifest knows of one segment: enough for planning without opening the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentRecord {
    /// Unique, never reused; also the file name stem.
    pub id: String,
    pub project_id: i64,
    /// Partition: UTC day of server upload time, `YYYY-MM-DD`.
    pub day: String,
    pub rows: i64,
    pub bytes: i64,
    /// Bounds of server upload time in the segment (ms).
    pub min_time: i64,
    pub max_time: i64,
    /// Catalog ids of the event types, event properties and user properties present.
    pub event_types: Vec<i64>,
    pub event_properties: Vec<i64>,
    pub user_properties: Vec<i64>,
    /// Catalog ids of the group-property keys present.
    pub group_properties: Vec<i64>,
    /// CRC-32 of the file's bytes (`None` for files written before checksums existed).
    pub crc32: Option<u32>,
    /// SHA-256 of the file's bytes, hex: its content hash in receipts (`None` for files
    /// written before it was recorded).
    pub sha256: Option<String>,
}

/// One atomic change of the store's durable state.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    pub add: Vec<SegmentRecord>,
    /// Segment ids that must still be live; the commit fails with `StaleManifest` otherwise.
    pub remove: Vec<String>,
    pub catalog: Vec<(i64, CatalogDelta)>,
    pub identities: Vec<IdentityRecord>,
    pub profiles: Vec<ProfileRecord>,
    pub groups: Vec<GroupRecord>,
    /// Profiles whose time alone moved: (project, amplitude_id, as_of).
    pub profile_times: Vec<(i64, i64, i64)>,
    /// Groups whose time alone moved: (project, type, value, as_of).
    pub group_times: Vec<(i64, String, String, i64)>,
    pub amplitude_id_high: i64,
    /// New checkpoint of the committing store's shard's WAL: every record up to this
    /// sequence is in committed segments.
    pub wal_checkpoint: Option<u64>,
    /// A deletion task's progress (JSON) that this commit advances, so that a task resumed
    /// after a crash counts each partition exactly once.
    pub task_progress: Option<(i64, String)>,
}

fn ids_text(ids: &[i64]) -> String {
    serde_json::to_string(ids).unwrap_or_else(|_| "[]".into())
}

fn ids_parse(text: &str) -> Result<Vec<i64>> {
    serde_json::from_str(text)
        .map_err(|e| MetaError::Corrupt(format!("a segment's catalog id list is not JSON: {e}")))
}

/// The latest time of each key (one statement may set a row only once).
fn latest<K: Ord>(times: impl Iterator<Item = (K, i64)>) -> impl Iterator<Item = (K, i64)> {
    let mut latest = std::collections::BTreeMap::new();
    for (key, time) in times {
        let at = latest.entry(key).or_insert(time);
        *at = (*at).max(time);
    }
    latest.into_iter()
}

impl MetaStore {
    /// Applies `commit` atomically.
    pub fn commit(&self, commit: &Commit) -> Result<()> {
        let shard = self.shard();
        self.tx(|tx| {
            let mut projects = Vec::new();
            for id in &commit.remove {
                let project: Option<i64> = tx.query_opt(
                    "SELECT project_id FROM segments WHERE id=?1",
                    params![id],
                    |r| r.get(0),
                )?;
                let project = project.ok_or_else(|| MetaError::StaleManifest(id.clone()))?;
                tx.execute("DELETE FROM segments WHERE id=?1", params![id])?;
                projects.push(project);
            }
            for s in &commit.add {
                tx.execute(
                    "INSERT INTO segments (id, project_id, day, rows, bytes, min_time, max_time,
                        event_types, event_properties, user_properties, crc32, group_properties,
                        sha256)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                    params![
                        &s.id,
                        s.project_id,
                        &s.day,
                        s.rows,
                        s.bytes,
                        s.min_time,
                        s.max_time,
                        ids_text(&s.event_types),
                        ids_text(&s.event_properties),
                        ids_text(&s.user_properties),
                        s.crc32,
                        ids_text(&s.group_properties),
                        s.sha256.as_deref()
                    ],
                )?;
                projects.push(s.project_id);
            }
            projects.sort_unstable();
            projects.dedup();
            for p in projects {
                tx.execute(
                    "INSERT INTO manifest AS m (project_id, version) VALUES (?1, 1)
                     ON CONFLICT (project_id) DO UPDATE SET version = m.version + 1",
                    params![p],
                )?;
            }
            for (project, delta) in &commit.catalog {
                apply_delta(tx, *project, delta)?;
            }
            upsert_identities(tx, &commit.identities)?;
            upsert_profiles(tx, &commit.profiles)?;
            upsert_groups(tx, &commit.groups)?;
            // Times and counters only move forward (`CASE`: SQLite's two-argument MAX is
            // PostgreSQL's GREATEST). The times of existing rows are set through an upsert
            // driven by the VALUES list (a VALUES list's columns are `column1`, … in both
            // dialects; PostgreSQL needs their types spelled out), so each row is found by
            // its key whatever the planner thinks of the list: SQLite planned an
            // `UPDATE … FROM (VALUES …)` as a scan of the whole table per statement. The
            // subquery keeps a row that is gone (an erased user) from coming back; it is a
            // scalar one, run per row, because PostgreSQL planned an `EXISTS` over the
            // partitioned table as a scan of every partition.
            execute_rows(
                tx,
                "INSERT INTO profiles (project_id, amplitude_id, properties, as_of)
                 SELECT v.column1, v.column2, '', v.column3 FROM (VALUES {rows}) AS v
                 WHERE (SELECT 1 FROM profiles p
                        WHERE p.project_id = v.column1 AND p.amplitude_id = v.column2) IS NOT NULL
                 ON CONFLICT (project_id, amplitude_id) DO UPDATE SET as_of =
                     CASE WHEN profiles.as_of < excluded.as_of THEN excluded.as_of
                          ELSE profiles.as_of END",
                "(CAST(? AS BIGINT), CAST(? AS BIGINT), CAST(? AS BIGINT))",
                latest(commit.profile_times.iter().map(|(p, a, t)| ((*p, *a), *t))).map(
                    |((project, amplitude_id), as_of)| {
                        params![project, amplitude_id, as_of].to_vec()
                    },
                ),
            )?;
            execute_rows(
                tx,
                "INSERT INTO group_profiles (project_id, group_type, group_value, properties, as_of)
                 SELECT v.column1, v.column2, v.column3, '', v.column4 FROM (VALUES {rows}) AS v
                 WHERE EXISTS (SELECT 1 FROM group_profiles g
                               WHERE g.project_id = v.column1 AND g.group_type = v.column2
                                 AND g.group_value = v.column3)
                 ON CONFLICT (project_id, group_type, group_value) DO UPDATE SET as_of =
                     CASE WHEN group_profiles.as_of < excluded.as_of THEN excluded.as_of
                          ELSE group_profiles.as_of END",
                "(CAST(? AS BIGINT), CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS BIGINT))",
                latest(commit.group_times.iter().map(|(p, gt, gv, t)| ((*p, gt, gv), *t))).map(
                    |((project, group_type, group_value), as_of)| {
                        params![project, group_type, group_value, as_of].to_vec()
                    },
                ),
            )?;
            tx.execute(
                "UPDATE counters SET value = CASE WHEN value < ?1 THEN ?1 ELSE value END
                 WHERE name='amplitude_id'",
                params![commit.amplitude_id_high],
            )?;
            if let Some(seq) = commit.wal_checkpoint {
                tx.execute(
                    "INSERT INTO wal_checkpoints (shard, seq) VALUES (?1, ?2)
                     ON CONFLICT (shard) DO UPDATE SET seq = CASE
                         WHEN wal_checkpoints.seq < excluded.seq THEN excluded.seq
                         ELSE wal_checkpoints.seq END",
                    params![shard.index(), seq as i64],
                )?;
            }
            if let Some((task, progress)) = &commit.task_progress {
                tx.execute(
                    "UPDATE deletion_tasks SET progress=?2 WHERE id=?1",
                    params![task, progress],
                )?;
            }
            Ok(())
        })
    }

    /// Every live segment of every project.
    pub fn live_segments(&self) -> Result<Vec<SegmentRecord>> {
        self.with(|c| {
            c.query_map(
                "SELECT id, project_id, day, rows, bytes, min_time, max_time,
                    event_types, event_properties, user_properties, crc32, group_properties, sha256
                 FROM segments ORDER BY project_id, day, id",
                &[],
                |r| {
                    Ok(SegmentRecord {
                        id: r.get(0)?,
                        project_id: r.get(1)?,
                        day: r.get(2)?,
                        rows: r.get(3)?,
                        bytes: r.get(4)?,
                        min_time: r.get(5)?,
                        max_time: r.get(6)?,
                        event_types: ids_parse(&r.get::<String>(7)?)?,
                        event_properties: ids_parse(&r.get::<String>(8)?)?,
                        user_properties: ids_parse(&r.get::<String>(9)?)?,
                        crc32: r.get(10)?,
                        group_properties: ids_parse(&r.get::<String>(11)?)?,
                        sha256: r.get(12)?,
                    })
                },
            )
        })
    }

    /// The project's manifest version: how many commits changed its live segments (0 before
    /// the first).
    pub fn manifest_version(&self, project_id: i64) -> Result<i64> {
        self.with(|c| {
            Ok(c.query_opt(
                "SELECT version FROM manifest WHERE project_id=?1",
                params![project_id],
                |r| r.get(0),
            )?
            .unwrap_or(0))
        })
    }

    /// The sequence of `shard`'s WAL up to which every record is in committed segments (0
    /// before the first).
    pub fn wal_checkpoint(&self, shard: Shard) -> Result<u64> {
        self.with(|c| {
            let seq: Option<i64> = c.query_opt(
                "SELECT seq FROM wal_checkpoints WHERE shard=?1",
                params![shard.index()],
                |r| r.get(0),
            )?;
            Ok(seq.unwrap_or(0) as u64)
        })
    }
}
