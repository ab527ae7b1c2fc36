//! The manifest: which segments are live. A commit swaps segments in and out, applies the
//! catalog, identity and profile changes they carry, and advances the WAL checkpoint, all in
//! one transaction, so a reader or a restart sees all of a change or none of it.

use rusqlite::{params, OptionalExtension};

use crate::catalog::{apply_delta, CatalogDelta};
use crate::db::all_rows;
use crate::identity::{
    upsert_group, upsert_identity, upsert_profile, GroupRecord, IdentityRecord, ProfileRecord,
};
use crate::{MetaError, MetaStore, Result};

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
    /// New WAL checkpoint: every record up to this sequence is in committed segments.
    pub wal_checkpoint: Option<u64>,
    /// A deletion task's progress (JSON) that this commit advances, so that a task resumed
    /// after a crash counts each partition exactly once.
    pub task_progress: Option<(i64, String)>,
}

fn ids_text(ids: &[i64]) -> String {
    serde_json::to_string(ids).unwrap_or_else(|_| "[]".into())
}

fn ids_parse(text: &str) -> rusqlite::Result<Vec<i64>> {
    serde_json::from_str(text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

impl MetaStore {
    /// Applies `commit` atomically.
    pub fn commit(&self, commit: &Commit) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            let mut projects = Vec::new();
            for id in &commit.remove {
                let project: Option<i64> = tx
                    .query_row("SELECT project_id FROM segments WHERE id=?1", [id], |r| {
                        r.get(0)
                    })
                    .optional()?;
                let project = project.ok_or_else(|| MetaError::StaleManifest(id.clone()))?;
                tx.execute("DELETE FROM segments WHERE id=?1", [id])?;
                projects.push(project);
            }
            for s in &commit.add {
                tx.execute(
                    "INSERT INTO segments (id, project_id, day, rows, bytes, min_time, max_time,
                        event_types, event_properties, user_properties, crc32, group_properties)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                    params![
                        s.id,
                        s.project_id,
                        s.day,
                        s.rows,
                        s.bytes,
                        s.min_time,
                        s.max_time,
                        ids_text(&s.event_types),
                        ids_text(&s.event_properties),
                        ids_text(&s.user_properties),
                        s.crc32,
                        ids_text(&s.group_properties)
                    ],
                )?;
                projects.push(s.project_id);
            }
            projects.sort_unstable();
            projects.dedup();
            for p in projects {
                tx.execute(
                    "INSERT INTO manifest (project_id, version) VALUES (?1, 1)
                     ON CONFLICT (project_id) DO UPDATE SET version = version + 1",
                    [p],
                )?;
            }
            for (project, delta) in &commit.catalog {
                apply_delta(&tx, *project, delta)?;
            }
            for id in &commit.identities {
                upsert_identity(&tx, id)?;
            }
            for p in &commit.profiles {
                upsert_profile(&tx, p)?;
            }
            for g in &commit.groups {
                upsert_group(&tx, g)?;
            }
            let mut profile_time = tx.prepare_cached(
                "UPDATE profiles SET as_of = MAX(as_of, ?3) WHERE project_id = ?1 AND amplitude_id = ?2",
            )?;
            for (project, amplitude_id, as_of) in &commit.profile_times {
                profile_time.execute(params![project, amplitude_id, as_of])?;
            }
            drop(profile_time);
            let mut group_time = tx.prepare_cached(
                "UPDATE group_profiles SET as_of = MAX(as_of, ?4)
                 WHERE project_id = ?1 AND group_type = ?2 AND group_value = ?3",
            )?;
            for (project, group_type, group_value, as_of) in &commit.group_times {
                group_time.execute(params![project, group_type, group_value, as_of])?;
            }
            drop(group_time);
            tx.execute(
                "UPDATE counters SET value = MAX(value, ?1) WHERE name='amplitude_id'",
                [commit.amplitude_id_high],
            )?;
            if let Some(seq) = commit.wal_checkpoint {
                tx.execute(
                    "UPDATE wal_checkpoint SET seq = MAX(seq, ?1) WHERE id=1",
                    [seq as i64],
                )?;
            }
            if let Some((task, progress)) = &commit.task_progress {
                tx.execute(
                    "UPDATE deletion_tasks SET progress=?2 WHERE id=?1",
                    params![task, progress],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// Every live segment of every project.
    pub fn live_segments(&self) -> Result<Vec<SegmentRecord>> {
        self.with(|c| {
            all_rows(
                c,
                "SELECT id, project_id, day, rows, bytes, min_time, max_time,
                    event_types, event_properties, user_properties, crc32, group_properties
                 FROM segments ORDER BY project_id, day, id",
                [],
                |r| {
                    Ok(SegmentRecord {
                        id: r.get(0)?,
                        project_id: r.get(1)?,
                        day: r.get(2)?,
                        rows: r.get(3)?,
                        bytes: r.get(4)?,
                        min_time: r.get(5)?,
                        max_time: r.get(6)?,
                        event_types: ids_parse(&r.get::<_, String>(7)?)?,
                        event_properties: ids_parse(&r.get::<_, String>(8)?)?,
                        user_properties: ids_parse(&r.get::<_, String>(9)?)?,
                        crc32: r.get(10)?,
                        group_properties: ids_parse(&r.get::<_, String>(11)?)?,
                    })
                },
            )
        })
    }

    /// The WAL sequence up to which every record is in committed segments.
    pub fn wal_checkpoint(&self) -> Result<u64> {
        self.with(|c| {
            let seq: i64 = c.query_row("SELECT seq FROM wal_checkpoint WHERE id=1", [], |r| {
                r.get(0)
            })?;
            Ok(seq as u64)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(id: &str) -> SegmentRecord {
        SegmentRecord {
            id: id.into(),
            project_id: 1,
            day: "2026-01-01".into(),
            rows: 3,
            bytes: 100,
            min_time: 1,
            max_time: 2,
            event_types: vec![1, 2],
            event_properties: vec![],
            user_properties: vec![5],
            group_properties: vec![],
            crc32: Some(7),
        }
    }

    #[test]
    fn commit_swaps_segments_and_refuses_stale_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let meta = MetaStore::open(&dir.path().join("meta.sqlite")).unwrap();
        meta.bootstrap("a@b.c", Some("pw")).unwrap();
        meta.commit(&Commit {
            add: vec![seg("a"), seg("b")],
            wal_checkpoint: Some(7),
            ..Default::default()
        })
        .unwrap();
        meta.commit(&Commit {
            add: vec![seg("c")],
            remove: vec!["a".into(), "b".into()],
            ..Default::default()
        })
        .unwrap();
        let live = meta.live_segments().unwrap();
        assert_eq!(live, vec![seg("c")]);
        assert_eq!(meta.wal_checkpoint().unwrap(), 7);
        let stale = meta.commit(&Commit {
            add: vec![seg("d")],
            remove: vec!["a".into()],
            ..Default::default()
        });
        assert!(matches!(stale, Err(MetaError::StaleManifest(_))));
        assert_eq!(
            meta.live_segments().unwrap(),
            vec![seg("c")],
            "failed commit changed nothing"
        );
    }
}
