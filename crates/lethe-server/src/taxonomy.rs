//! `GET /api/2/taxonomy/...`: the catalog in Amplitude's Taxonomy API shapes, with lethe's
//! counts added (`event_count`, `first_seen`, `last_seen`; clients ignore unknown keys).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use lethe_meta::CatalogKind;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{ProjectKey, Session};
use crate::{blocking, ApiError, App};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/api/2/taxonomy/event", get(events))
        .route("/api/2/taxonomy/event-property", get(event_properties))
        .route("/api/2/taxonomy/user-property", get(user_properties))
        .route("/api/v1/projects/{id}/catalog", get(catalog))
}

/// Count and seen-range of one name.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Seen {
    pub count: i64,
    pub first: Option<i64>,
    pub last: Option<i64>,
}

impl Seen {
    fn add(&mut self, count: i64, first: Option<i64>, last: Option<i64>) {
        self.count += count;
        self.first = [self.first, first].into_iter().flatten().min();
        self.last = [self.last, last].into_iter().flatten().max();
    }
}

/// The catalog as it is now: committed counts plus the events not yet flushed.
#[derive(Debug, Default)]
pub struct LiveCatalog {
    pub kinds: BTreeMap<CatalogKind, BTreeMap<String, Seen>>,
    /// (event type, event property) → events of that type carrying it.
    pub pairs: BTreeMap<(String, String), i64>,
}

impl LiveCatalog {
    /// Names of one kind that have data, with their counts.
    pub fn entries(&self, kind: CatalogKind) -> impl Iterator<Item = (&String, &Seen)> {
        self.kinds
            .get(&kind)
            .into_iter()
            .flatten()
            .filter(|(_, seen)| seen.count > 0)
    }
}

/// Reads the live catalog of a project.
pub fn live_catalog(app: &App, project_id: i64) -> Result<LiveCatalog, ApiError> {
    let mut live = LiveCatalog::default();
    let mut names = BTreeMap::new();
    for kind in [
        CatalogKind::Event,
        CatalogKind::EventProperty,
        CatalogKind::UserProperty,
        CatalogKind::GroupProperty,
    ] {
        let map = live.kinds.entry(kind).or_default();
        for e in app.meta.list_catalog(project_id, kind)? {
            map.entry(e.name.clone())
                .or_default()
                .add(e.event_count, e.first_seen, e.last_seen);
            names.insert((kind, e.id), e.name);
        }
    }
    for (type_id, prop_id, count) in app.meta.event_property_pairs(project_id)? {
        let t = names.get(&(CatalogKind::Event, type_id));
        let p = names.get(&(CatalogKind::EventProperty, prop_id));
        if let (Some(t), Some(p)) = (t, p) {
            *live.pairs.entry((t.clone(), p.clone())).or_default() += count;
        }
    }
    for e in app.store.snapshot(project_id, None).memtable {
        let t = Some(e.server_upload_time);
        let mut bump = |kind, name: &str| {
            live.kinds
                .entry(kind)
                .or_default()
                .entry(name.to_string())
                .or_default()
                .add(1, t, t)
        };
        bump(CatalogKind::Event, &e.event_type);
        for (k, _) in &e.event_properties {
            bump(CatalogKind::EventProperty, k);
        }
        for (k, _) in e.user_properties.iter() {
            bump(CatalogKind::UserProperty, k);
        }
        for (k, _) in &e.group_properties {
            bump(CatalogKind::GroupProperty, k);
        }
        for (k, _) in &e.event_properties {
            *live
                .pairs
                .entry((e.event_type.clone(), k.clone()))
                .or_default() += 1;
        }
    }
    Ok(live)
}

fn seen_json(seen: &Seen) -> Value {
    let time = |t: Option<i64>| t.map(lethe_event::format_export_time);
    json!({ "event_count": seen.count, "first_seen": time(seen.first), "last_seen": time(seen.last) })
}

fn merge(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        b.extend(e);
    }
    base
}

fn success(data: Vec<Value>) -> Json<Value> {
    Json(json!({ "success": true, "data": data }))
}

/// One kind of the catalog in Amplitude's list shape: `shape` gives an entry's own members,
/// lethe's counts are added.
async fn list(
    app: App,
    project_id: i64,
    kind: CatalogKind,
    shape: fn(&str) -> Value,
) -> Result<Json<Value>, ApiError> {
    let live = blocking(move || live_catalog(&app, project_id)).await?;
    Ok(success(
        live.entries(kind)
            .map(|(name, seen)| merge(shape(name), seen_json(seen)))
            .collect(),
    ))
}

async fn events(
    State(app): State<App>,
    ProjectKey(p): ProjectKey,
) -> Result<Json<Value>, ApiError> {
    list(app, p.id, CatalogKind::Event, |name| {
        json!({
            "event_type": name, "category": null, "description": null,
            "display_name": null, "is_active": true,
            "is_hidden_from_dropdowns": false, "is_hidden_from_persona_results": false,
            "is_hidden_from_pathfinder": false, "is_hidden_from_timeline": false,
            "tags": [], "owner": null,
        })
    })
    .await
}

#[derive(Deserialize)]
struct EventTypeParam {
    event_type: Option<String>,
}

async fn event_properties(
    State(app): State<App>,
    ProjectKey(p): ProjectKey,
    Query(query): Query<EventTypeParam>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    // Amplitude takes `event_type` as a form body even on GET; accept the query string too.
    let event_type = query.event_type.or_else(|| {
        serde_urlencoded::from_bytes::<EventTypeParam>(&body)
            .ok()
            .and_then(|form| form.event_type)
    });
    let live = blocking(move || live_catalog(&app, p.id)).await?;
    let property = |name: &str, event_type: Option<&str>, seen: Value| {
        merge(
            json!({
                "event_property": name, "event_type": event_type, "description": null,
                "type": null, "regex": null, "enum_values": null, "is_array_type": false,
                "is_required": false, "is_hidden": false, "classifications": [],
            }),
            seen,
        )
    };
    let data = match &event_type {
        Some(t) => live
            .pairs
            .iter()
            .filter(|((et, _), count)| et == t && **count > 0)
            .map(|((et, name), count)| property(name, Some(et), json!({ "event_count": count })))
            .collect(),
        None => live
            .entries(CatalogKind::EventProperty)
            .map(|(name, seen)| property(name, None, seen_json(seen)))
            .collect(),
    };
    Ok(success(data))
}

async fn user_properties(
    State(app): State<App>,
    ProjectKey(p): ProjectKey,
) -> Result<Json<Value>, ApiError> {
    list(app, p.id, CatalogKind::UserProperty, |name| {
        json!({
            "user_property": format!("gp:{name}"), "description": null, "type": null,
            "enum_values": null, "regex": null, "is_array_type": false,
            "is_hidden": false, "classifications": [], "deleted": false,
        })
    })
    .await
}

/// `GET /api/v1/projects/{id}/catalog`: the whole catalog for the console (any role), with
/// counts, first and last seen, and the event properties of each event type.
async fn catalog(
    State(app): State<App>,
    session: Session,
    Path(project_id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    session.project_access(&app, project_id).await?;
    blocking(move || {
        app.meta
            .project(project_id)?
            .ok_or_else(|| ApiError::not_found("project"))?;
        let live = live_catalog(&app, project_id)?;
        let entries = |kind| -> Vec<Value> {
            live.entries(kind)
                .map(|(name, seen)| merge(json!({ "name": name }), seen_json(seen)))
                .collect()
        };
        let mut by_type: BTreeMap<&String, Vec<Value>> = BTreeMap::new();
        for ((t, p), count) in live.pairs.iter().filter(|(_, c)| **c > 0) {
            by_type
                .entry(t)
                .or_default()
                .push(json!({ "name": p, "event_count": count }));
        }
        Ok(Json(json!({
            "event_types": entries(CatalogKind::Event),
            "event_properties": entries(CatalogKind::EventProperty),
            "user_properties": entries(CatalogKind::UserProperty),
            "group_properties": entries(CatalogKind::GroupProperty),
            "event_type_properties": by_type,
        })))
    })
    .await
}
