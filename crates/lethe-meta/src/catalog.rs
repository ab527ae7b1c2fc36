//! The catalog: names of event types and properties, their numeric ids (segment column
//! names use the ids) and how many stored events carry each.

use std::collections::HashMap;

use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::sql::{params, Conn};
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
        self.tx(|tx| {
            let mut all = Vec::with_capacity(wanted.len());
            for (kind, names) in wanted {
                let kind = *kind;
                let mut ids = CatalogIds::default();
                ids.reserve(names.len());
                for name in names {
                    let key = params![project_id, kind.as_str(), *name];
                    let found = tx.query_opt(
                        "SELECT id FROM catalog WHERE project_id=?1 AND kind=?2 AND name=?3",
                        key,
                        |r| r.get(0),
                    )?;
                    let id = match found {
                        Some(id) => id,
                        None => tx.query_row(
                            "INSERT INTO catalog (project_id, kind, id, name)
                             VALUES (?1, ?2, (SELECT COALESCE(MAX(id), 0) + 1 FROM catalog
                                              WHERE project_id=?1 AND kind=?2), ?3)
                             RETURNING id",
                            key,
                            |r| r.get(0),
                        )?,
                    };
                    ids.insert(name.to_string(), id);
                }
                all.push(ids);
            }
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
            c.query_map(
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
            c.query_map(
                "SELECT event_type_id, property_id, event_count FROM catalog_event_property
                 WHERE project_id=?1",
                params![project_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
        })
    }
}

pub(crate) fn apply_delta(tx: &mut dyn Conn, project_id: i64, delta: &CatalogDelta) -> Result<()> {
    for d in &delta.counts {
        tx.execute(
            "UPDATE catalog SET event_count = event_count + ?4,
                first_seen = CASE WHEN first_seen IS NULL OR first_seen > CAST(?5 AS BIGINT)
                                  THEN COALESCE(CAST(?5 AS BIGINT), first_seen) ELSE first_seen END,
                last_seen = CASE WHEN last_seen IS NULL OR last_seen < CAST(?6 AS BIGINT)
                                 THEN COALESCE(CAST(?6 AS BIGINT), last_seen) ELSE last_seen END
             WHERE project_id=?1 AND kind=?2 AND id=?3",
            params![
                project_id,
                d.kind.as_str(),
                d.id,
                d.count,
                d.seen.map(|s| s.0),
                d.seen.map(|s| s.1)
            ],
        )?;
    }
    for (event_type, property, count) in &delta.pairs {
        tx.execute(
            "INSERT INTO catalog_event_property AS p
                (project_id, event_type_id, property_id, event_count)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (project_id, event_type_id, property_id)
             DO UPDATE SET event_count = p.event_count + excluded.event_count",
            params![project_id, event_type, property, count],
        )?;
    }
    Ok(())
}
