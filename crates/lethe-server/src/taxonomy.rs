//! `GET /api/2/taxonomy/...`: the catalog in Amplitude's Taxonomy API shapes, with lethe's
//! counts added (`event_count`, `first_seen`, `last_seen`; clients ignore unknown keys).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use lethe_meta::CatalogKind;
use lethe_store::{CatalogDetail, Seen};
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
    let live =
        blocking(move || Ok(app.store.live_catalog(project_id, CatalogDetail::Names)?)).await?;
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
    let live =
        blocking(move || Ok(app.store.live_catalog(p.id, CatalogDetail::WithPairs)?)).await?;
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
        let live = app
            .store
            .live_catalog(project_id, CatalogDetail::WithPairs)?;
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
            // What a deletion task's `where` may name besides properties.
            "built_in_fields": lethe_delete::predicate::built_in_fields().collect::<Vec<_>>(),
        })))
    })
    .await
}
