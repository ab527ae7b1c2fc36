//! The catalog: names of event types and properties, their numeric ids (segment column
//! names use the ids) and how many stored events carry each.

use std::collections::HashMap;

use rusqlite::{params, OptionalExtension, Transaction};
use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::db::all_rows;
use crate::{MetaStore, Result};

/// The three things a catalog lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CatalogKind {
    Event,
    EventProperty,
    UserProperty,
    GroupProperty,
}

impl CatalogKind {
    /// Stored name of the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            CatalogKind::Event => "event",
            CatalogKind::EventProperty => "event_property",
            CatalogKind::UserProperty => "user_property",
            CatalogKind::GroupProperty => "group_property",
        }
    }
}

/// One catalog row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CatalogEntry {
    pub id: i64,
    pub name: String,
    pub first_seen: Option<i64>,
    pub last_seen: Option<i64>,
    pub event_count: i64,
}

/// A change to one entry's count and, for new data, its seen-range, by id.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CountDelta {
    pub kind: CatalogKind,
    pub id: i64,
    /// Negative when data is deleted.
    pub count: i64,
    /// Upload-time range of added data; `None` for removals.
    pub seen: Option<(i64, i64)>,
}

/// Catalog changes that commit together with the segments that cause them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CatalogDelta {
    pub counts: Vec<CountDelta>,
    /// (event type id, event property id) → events of that type carrying the property.
    pub pairs: Vec<(i64, i64, i64)>,
}

/// Catalog name → id of one kind. Fx hashing: segment writers look a name up for every value
/// they encode, and the names a project can have are bounded by the per-day key limits.
pub type CatalogIds = FxHashMap<String, i64>;

impl MetaStore {
    /// Returns the ids of `names` of each kind, registering the ones not seen before (with no
    /// events yet), in one transaction: a segment's writer asks once for all its names.
    pub fn ensure_catalog_ids(
        &self,
        project_id: i64,
        wanted: &[(CatalogKind, Vec<&str>)],
    ) -> Result<Vec<CatalogIds>> {
        self.with(|c| {
            let tx = c.transaction()?;
            let mut all = Vec::with_capacity(wanted.len());
            for (kind, names) in wanted {
                let kind = *kind;
                let mut ids = CatalogIds::default();
                ids.reserve(names.len());
                let mut find =
                    tx.prepare_cached("SELECT id FROM catalog WHERE project_id=?1 AND kind=?2 AND name=?3")?;
                let mut insert = tx.prepare_cached(
                    "INSERT INTO catalog (project_id, kind, id, name)
                     VALUES (?1, ?2, (SELECT COALESCE(MAX(id), 0) + 1 FROM catalog WHERE project_id=?1 AND kind=?2), ?3)",
                )?;
                for name in names {
                    let id: Option<i64> = find
                        .query_row(params![project_id, kind.as_str(), name], |r| r.get(0))
                        .optional()?;
                    let id = match id {
                        Some(id) => id,
                        None => {
                            insert.execute(params![project_id, kind.as_str(), name])?;
                            find.query_row(params![project_id, kind.as_str(), name], |r| r.get(0))?
                        }
                    };
                    ids.insert(name.to_string(), id);
                }
                all.push(ids);
            }
            tx.commit()?;
            Ok(all)
        })
    }

    /// Id → name for one kind: how readers turn segment column ids back into names.
    pub fn catalog_names(
        &self,
        project_id: i64,
        kind: CatalogKind,
    ) -> Result<HashMap<i64, String>> {
        Ok(self
            .list_catalog(project_id, kind)?
            .into_iter()
            .map(|e| (e.id, e.name))
            .collect())
    }

    /// Name → id for one kind.
    pub fn catalog_ids(&self, project_id: i64, kind: CatalogKind) -> Result<CatalogIds> {
        Ok(self
            .list_catalog(project_id, kind)?
            .into_iter()
            .map(|e| (e.name, e.id))
            .collect())
    }

    /// Every entry of one kind, by name.
    pub fn list_catalog(&self, project_id: i64, kind: CatalogKind) -> Result<Vec<CatalogEntry>> {
        self.with(|c| {
            all_rows(
                c,
                "SELECT id, name, first_seen, last_seen, event_count FROM catalog
                 WHERE project_id=?1 AND kind=?2 ORDER BY name",
                params![project_id, kind.as_str()],
                |r| {
                    Ok(CatalogEntry {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        first_seen: r.get(2)?,
                        last_seen: r.get(3)?,
                        event_count: r.get(4)?,
                    })
                },
            )
        })
    }

    /// (event type id, property id) → count of events of that type carrying the property.
    pub fn event_property_pairs(&self, project_id: i64) -> Result<Vec<(i64, i64, i64)>> {
        self.with(|c| {
            all_rows(
                c,
                "SELECT event_type_id, property_id, event_count FROM catalog_event_property
                 WHERE project_id=?1",
                [project_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
        })
    }
}

pub(crate) fn apply_delta(tx: &Transaction, project_id: i64, delta: &CatalogDelta) -> Result<()> {
    let mut counts = tx.prepare_cached(
        "UPDATE catalog SET event_count = event_count + ?4,
            first_seen = CASE WHEN ?5 IS NULL THEN first_seen ELSE MIN(COALESCE(first_seen, ?5), ?5) END,
            last_seen = CASE WHEN ?6 IS NULL THEN last_seen ELSE MAX(COALESCE(last_seen, ?6), ?6) END
         WHERE project_id=?1 AND kind=?2 AND id=?3",
    )?;
    for d in &delta.counts {
        counts.execute(params![
            project_id,
            d.kind.as_str(),
            d.id,
            d.count,
            d.seen.map(|s| s.0),
            d.seen.map(|s| s.1)
        ])?;
    }
    let mut pairs = tx.prepare_cached(
        "INSERT INTO catalog_event_property (project_id, event_type_id, property_id, event_count)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (project_id, event_type_id, property_id)
         DO UPDATE SET event_count = event_count + excluded.event_count",
    )?;
    for (event_type, property, count) in &delta.pairs {
        pairs.execute(params![project_id, event_type, property, count])?;
    }
    Ok(())
}
