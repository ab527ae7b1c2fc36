//! Retention policies over HTTP (administrators): list, preview, add, remove. The deletion
//! worker turns each into an ordinary task once a day (`lethe_delete::retention`), which
//! the home page lists with every other task.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use lethe_delete::retention::retention_spec;
use lethe_event::Day;
use serde_json::{json, Map, Value};

use crate::auth::Session;
use crate::manage::Body;
use crate::tasks::{engine_error, run_preview};
use crate::{blocking, ApiError, App};

/// The longest retention a policy takes (100 years).
const MAX_DAYS: i64 = 36_500;
/// Event types one policy may name.
const MAX_TYPES: usize = 100;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/api/v1/projects/{id}/retention", get(list).post(create))
        .route("/api/v1/projects/{id}/retention/preview", post(preview))
        .route("/api/v1/projects/{id}/retention/{policy}", delete(remove))
}

/// A policy body, checked: days, and the event types (`None`: all).
fn parsed(body: &Map<String, Value>) -> Result<(i64, Option<Vec<String>>), ApiError> {
    let days = body
        .get("days")
        .and_then(Value::as_i64)
        .filter(|d| (1..=MAX_DAYS).contains(d))
        .ok_or_else(|| {
            ApiError::field(
                StatusCode::BAD_REQUEST,
                "days",
                format!("is required: a whole number of days from 1 to {MAX_DAYS}"),
            )
        })?;
    let types = match body.get("event_types") {
        None | Some(Value::Null) => None,
        Some(Value::Array(list)) if (1..=MAX_TYPES).contains(&list.len()) => Some(
            list.iter()
                .map(|t| match t.as_str() {
                    Some(name) if !name.is_empty() => Ok(name.to_string()),
                    _ => Err(ApiError::field(
                        StatusCode::BAD_REQUEST,
                        "event_types",
                        "must list non-empty event type names",
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => {
            return Err(ApiError::field(
                StatusCode::BAD_REQUEST,
                "event_types",
                format!("must be a list of 1 to {MAX_TYPES} event types, or absent for all"),
            ))
        }
    };
    Ok((days, types))
}

/// `GET /api/v1/projects/{id}/retention`.
async fn list(
    State(app): State<App>,
    session: Session,
    Path(project): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    session.require_admin()?;
    blocking(move || {
        app.existing_project(project)?;
        Ok(Json(
            json!({ "policies": app.meta.retention_policies(Some(project))? }),
        ))
    })
    .await
}

/// `POST /api/v1/projects/{id}/retention/preview` `{"days": …, "event_types": […]}`: what
/// the policy's task would delete if it ran now (exact counts, as a task's preview).
async fn preview(
    State(app): State<App>,
    session: Session,
    Path(project): Path<i64>,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    session.require_admin()?;
    let (days, event_types) = parsed(&body)?;
    blocking(move || {
        app.existing_project(project)?;
        let today = Day::of_ms(lethe_meta::now_ms());
        let rule = (days, event_types.as_deref());
        let spec = retention_spec(&app.store, project, rule, today)
            .map_err(|e| engine_error(e, "the preview could not read the store"))?;
        let totals = match spec {
            Some(spec) => json!(run_preview(&app, project, &spec)?.without_samples().totals),
            None => json!({"events_deleted": 0}),
        };
        let cutoff = today.plus(-days).start_ms();
        Ok(Json(json!({
            "cutoff": lethe_event::format_export_time(cutoff),
            "totals": totals,
        })))
    })
    .await
}

/// `POST /api/v1/projects/{id}/retention` `{"days": …, "event_types": […]}`: 201 with the
/// policy; its first task is queued within seconds.
async fn create(
    State(app): State<App>,
    session: Session,
    Path(project): Path<i64>,
    Body(body): Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    session.require_admin()?;
    let (days, event_types) = parsed(&body)?;
    blocking(move || {
        app.existing_project(project)?;
        let policy =
            app.meta
                .create_retention(project, days, event_types.as_deref(), &session.0.email)?;
        Ok((StatusCode::CREATED, Json(json!(policy))))
    })
    .await
}

/// `DELETE /api/v1/projects/{id}/retention/{policy}`: no more tasks from it (a queued one
/// still runs).
async fn remove(
    State(app): State<App>,
    session: Session,
    Path((project, policy)): Path<(i64, i64)>,
) -> Result<StatusCode, ApiError> {
    session.require_admin()?;
    blocking(move || {
        if !app
            .meta
            .delete_retention(project, policy, &session.0.email)?
        {
            return Err(ApiError::not_found("retention policy"));
        }
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
