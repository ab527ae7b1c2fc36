//! A project's block list over HTTP (administrators): list, add, lift. Ingestion drops a
//! blocked event type and takes blocked keys out of events and profile operations
//! (`lethe_event::BlockList`); a deletion task submitted with `"keep_blocking": true` adds
//! what it deletes. Every change is audited; names only.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use lethe_meta::BlockKind;
use serde_json::{json, Value};

use crate::auth::Session;
use crate::manage::Body;
use crate::{blocking, ApiError, App};

/// Names one request may block.
const MAX_NAMES: usize = 100;
/// The longest name (an event type or property key) a block takes.
const MAX_NAME_CHARS: usize = 1024;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/api/v1/projects/{id}/blocks", get(list).post(add))
        .route("/api/v1/projects/{id}/blocks/{kind}/{name}", delete(lift))
}

fn kind_of(text: &str) -> Result<BlockKind, ApiError> {
    BlockKind::parse(text).ok_or_else(|| {
        ApiError::field(
            StatusCode::BAD_REQUEST,
            "kind",
            "must be event_type, event_property, user_property or group_property",
        )
    })
}

fn project_blocks(app: &App, project: i64) -> Result<Value, ApiError> {
    app.existing_project(project)?;
    Ok(json!({ "blocks": app.meta.blocks(Some(project))? }))
}

/// `GET /api/v1/projects/{id}/blocks`: the project's blocked names.
async fn list(
    State(app): State<App>,
    session: Session,
    Path(project): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    session.require_admin()?;
    blocking(move || Ok(Json(project_blocks(&app, project)?))).await
}

/// `POST /api/v1/projects/{id}/blocks` `{"kind": …, "names": […]}`: blocks the names from
/// the next request on; 201 with how many were new and the list.
async fn add(
    State(app): State<App>,
    session: Session,
    Path(project): Path<i64>,
    Body(body): Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    session.require_admin()?;
    let kind = kind_of(body.get("kind").and_then(Value::as_str).unwrap_or_default())?;
    let names: Vec<String> = match body.get("names") {
        Some(Value::Array(list)) if (1..=MAX_NAMES).contains(&list.len()) => list
            .iter()
            .map(|name| match name.as_str() {
                Some(n) if !n.is_empty() && n.chars().count() <= MAX_NAME_CHARS => {
                    Ok(n.to_string())
                }
                _ => Err(ApiError::field(
                    StatusCode::BAD_REQUEST,
                    "names",
                    format!("must list strings of 1 to {MAX_NAME_CHARS} characters"),
                )),
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(ApiError::field(
                StatusCode::BAD_REQUEST,
                "names",
                format!("is required: a list of 1 to {MAX_NAMES} names"),
            ))
        }
    };
    blocking(move || {
        project_blocks(&app, project)?;
        let blocks: Vec<(BlockKind, String)> = names.into_iter().map(|n| (kind, n)).collect();
        let added = app.meta.add_blocks(project, &blocks, &session.0.email)?;
        app.store.reload_blocks()?;
        let mut answer = project_blocks(&app, project)?;
        answer["added"] = json!(added);
        Ok((StatusCode::CREATED, Json(answer)))
    })
    .await
}

/// `DELETE /api/v1/projects/{id}/blocks/{kind}/{name}`: accepted again from the next
/// request on.
async fn lift(
    State(app): State<App>,
    session: Session,
    Path((project, kind, name)): Path<(i64, String, String)>,
) -> Result<StatusCode, ApiError> {
    session.require_admin()?;
    let kind = kind_of(&kind)?;
    blocking(move || {
        if !app
            .meta
            .lift_block(project, kind, &name, &session.0.email)?
        {
            return Err(ApiError::not_found("block"));
        }
        app.store.reload_blocks()?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
