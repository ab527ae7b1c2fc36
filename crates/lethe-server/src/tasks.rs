//! Self-service deletion over HTTP: preview, submit (no cancel), the organization's queue,
//! retry of a failed task, and the audit trail.

use std::collections::BTreeSet;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use lethe_delete::receipt::ReceiptError;
use lethe_delete::{
    check_names, parse_spec, DeleteError, KnownNames, Preview, QueuedTask, SpecError, TaskSpec,
};
use lethe_meta::{CatalogKind, TaskRow, TaskStatus};
use lethe_store::CatalogDetail;
use serde_json::{json, Value};

use crate::auth::Session;
use crate::manage::Body;
use crate::{blocking, ApiError, App};

/// Assumed rewrite speed for estimates until a task has been measured.
const DEFAULT_BYTES_PER_SEC: f64 = 100e6;

pub fn routes() -> Router<App> {
    Router::new()
        .route(
            "/api/v1/projects/{id}/deletion-tasks/preview",
            post(preview),
        )
        .route("/api/v1/projects/{id}/deletion-tasks", post(submit))
        .route("/api/v1/deletion-tasks", get(list))
        .route("/api/v1/deletion-tasks/{id}", get(one).delete(cancel))
        .route("/api/v1/deletion-tasks/{id}/retry", post(retry))
        .route("/api/v1/deletion-tasks/{id}/receipt", get(receipt))
        .route("/api/v1/keys", get(keys))
        .route("/api/v1/audit", get(audit))
}

fn spec_error(e: SpecError) -> ApiError {
    let mut err = ApiError::field(StatusCode::BAD_REQUEST, e.field.clone(), e.to_string());
    if !e.unknown.is_empty() {
        err.extra = Some(json!({ "unknown": e.unknown }));
    }
    err
}

/// Parses the body and checks it against the project's live catalog.
fn validated_spec(app: &App, project_id: i64, body: &Value) -> Result<TaskSpec, ApiError> {
    app.existing_project(project_id)?;
    let spec = parse_spec(body, lethe_meta::now_ms()).map_err(spec_error)?;
    let live = app.store.live_catalog(project_id, CatalogDetail::Names)?;
    let names = |kind| -> BTreeSet<String> { live.entries(kind).map(|(n, _)| n.clone()).collect() };
    let known = KnownNames {
        event_types: names(CatalogKind::Event),
        event_properties: names(CatalogKind::EventProperty),
        user_properties: names(CatalogKind::UserProperty),
        group_properties: names(CatalogKind::GroupProperty),
    };
    check_names(&spec, &known).map_err(spec_error)?;
    Ok(spec)
}

pub(crate) fn run_preview(
    app: &App,
    project_id: i64,
    spec: &TaskSpec,
) -> Result<Preview, ApiError> {
    lethe_delete::preview(&app.store, &app.meta, project_id, spec)
        .map_err(|e| engine_error(e, "the preview could not read the store"))
}

/// A failure of the deletion engine as an answer: a quarantined segment or a damaged stored
/// task is named (never its contents); anything else is logged and summarised as `doing`.
pub(crate) fn engine_error(e: DeleteError, doing: &str) -> ApiError {
    tracing::error!(error = %e, "{doing}");
    match e.is_permanent() {
        true => ApiError::internal(&e.to_string()),
        false => ApiError::internal(doing),
    }
}

/// Every stored task, decoded, newest first.
fn all_tasks(app: &App) -> Result<Vec<QueuedTask>, ApiError> {
    lethe_delete::tasks(&app.meta).map_err(|e| engine_error(e, "the task list could not be read"))
}

/// The API object of task `id` among `all`.
fn render_one(all: &[QueuedTask], id: i64) -> Result<Value, ApiError> {
    all.iter()
        .find(|t| t.row.id == id)
        .map(|t| render(all, t))
        .ok_or_else(|| ApiError::not_found("deletion task"))
}

async fn preview(
    State(app): State<App>,
    session: Session,
    Path(project_id): Path<i64>,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    session.require_admin()?;
    blocking(move || {
        let spec = validated_spec(&app, project_id, &Value::Object(body))?;
        Ok(Json(json!(run_preview(&app, project_id, &spec)?)))
    })
    .await
}

async fn submit(
    State(app): State<App>,
    Session(user): Session,
    Path(project_id): Path<i64>,
    Body(body): Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    Session(user.clone()).require_admin()?;
    if body.get("confirm").and_then(Value::as_str) != Some("DELETE") {
        return Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            "confirm",
            "submitting is irreversible: send \"confirm\": \"DELETE\"",
        ));
    }
    blocking(move || {
        let spec = validated_spec(&app, project_id, &Value::Object(body))?;
        let (task, _) = lethe_delete::submit(&app.store, &app.meta, project_id, &spec, &user.email)
            .map_err(|e| engine_error(e, "the task could not be submitted"))?;
        tracing::info!(task_id = task.row.id, project_id, "deletion task submitted");
        app.queue.notify();
        Ok((
            StatusCode::ACCEPTED,
            Json(render_one(&all_tasks(&app)?, task.row.id)?),
        ))
    })
    .await
}

/// Every task of the projects the caller may see, newest first.
async fn list(State(app): State<App>, session: Session) -> Result<Json<Value>, ApiError> {
    let visible = session.visible_projects(&app).await?;
    blocking(move || {
        let all = all_tasks(&app)?;
        let tasks: Vec<Value> = all
            .iter()
            .filter(|t| sees(&visible, t.row.project_id))
            .map(|t| render(&all, t))
            .collect();
        Ok(Json(json!(tasks)))
    })
    .await
}

fn sees(visible: &Option<Vec<(i64, lethe_meta::ProjectRole)>>, project_id: i64) -> bool {
    visible
        .as_ref()
        .is_none_or(|granted| granted.iter().any(|(id, _)| *id == project_id))
}

/// The task, if the caller may see its project (404 otherwise, as for no task).
async fn find_visible(app: &App, session: &Session, id: i64) -> Result<TaskRow, ApiError> {
    let visible = session.visible_projects(app).await?;
    let meta = app.meta.clone();
    let task = blocking(move || Ok(meta.task(id)?)).await?;
    task.filter(|t| sees(&visible, t.project_id))
        .ok_or_else(|| ApiError::not_found("deletion task"))
}

fn find(app: &App, id: i64) -> Result<TaskRow, ApiError> {
    app.meta
        .task(id)?
        .ok_or_else(|| ApiError::not_found("deletion task"))
}

async fn one(
    State(app): State<App>,
    session: Session,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let task = find_visible(&app, &session, id).await?;
    blocking(move || Ok(Json(render_one(&all_tasks(&app)?, task.id)?))).await
}

/// The signed receipt of a completed task (409 before it completes), for whoever may see
/// the task.
async fn receipt(
    State(app): State<App>,
    session: Session,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let task = find_visible(&app, &session, id).await?;
    blocking(move || {
        let row = app
            .meta
            .task(task.id)?
            .ok_or_else(|| ApiError::not_found("deletion task"))?;
        let queued =
            QueuedTask::decode(row).map_err(|e| engine_error(e, "the task could not be read"))?;
        match lethe_delete::receipt::issue(&app.meta, &queued) {
            Ok(signed) => Ok(Json(signed)),
            Err(e @ ReceiptError::NotCompleted(_)) => {
                Err(ApiError::new(StatusCode::CONFLICT, e.to_string()))
            }
            Err(ReceiptError::Delete(e)) => Err(engine_error(e, "the receipt could not be issued")),
            Err(e) => Err(ApiError::internal(&e.to_string())),
        }
    })
    .await
}

/// The deployment's public keys (no sign-in: an auditor checks receipts against them).
async fn keys(State(app): State<App>) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let key = lethe_delete::receipt::public_key(&app.meta).map_err(|e| match e {
            ReceiptError::Delete(DeleteError::Meta(e)) => ApiError::from(e),
            other => ApiError::internal(&other.to_string()),
        })?;
        Ok(Json(json!({
            "receipts": {"algorithm": "Ed25519", "public_key": key},
        })))
    })
    .await
}

async fn cancel(
    State(app): State<App>,
    session: Session,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    find_visible(&app, &session, id).await?;
    blocking(move || {
        Err(ApiError::new(
            StatusCode::CONFLICT,
            "submitted deletion tasks cannot be cancelled",
        ))
    })
    .await
}

async fn retry(
    State(app): State<App>,
    Session(user): Session,
    Path(id): Path<i64>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    Session(user.clone()).require_admin()?;
    blocking(move || {
        find(&app, id)?;
        if !app.meta.retry_task(id, &user.email)? {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "only a failed task can be retried",
            ));
        }
        app.queue.notify();
        Ok((
            StatusCode::ACCEPTED,
            Json(render_one(&all_tasks(&app)?, id)?),
        ))
    })
    .await
}

async fn audit(State(app): State<App>, session: Session) -> Result<Json<Value>, ApiError> {
    session.require_admin()?;
    blocking(move || Ok(Json(json!(app.meta.audit_log()?)))).await
}

fn rfc3339(ms: Option<i64>) -> Value {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| json!(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
        .unwrap_or(Value::Null)
}

/// Measured rewrite speed of finished tasks (bytes per second).
fn rewrite_rate(tasks: &[QueuedTask]) -> f64 {
    let (bytes, secs) = tasks
        .iter()
        .filter(|t| t.row.status == TaskStatus::Completed)
        .filter_map(|t| {
            let progress = t.progress.as_ref()?;
            let secs = (t.row.finished_at? - t.row.started_at?) as f64 / 1000.0;
            Some((progress.bytes_rewritten as f64, secs))
        })
        .fold((0.0, 0.0), |(b, s), (bb, ss)| (b + bb, s + ss));
    if bytes > 0.0 && secs > 0.0 {
        bytes / secs
    } else {
        DEFAULT_BYTES_PER_SEC
    }
}

/// The task object of the API: stored fields plus queue position and estimates, which
/// `all` (every task) provides.
fn render(all: &[QueuedTask], task: &QueuedTask) -> Value {
    let t = &task.row;
    let now = lethe_meta::now_ms();
    let (mut queue_position, mut estimated_start, mut progress_json) =
        (Value::Null, Value::Null, Value::Null);
    if t.status.is_pending() {
        let rate = rewrite_rate(all);
        let ahead: Vec<&QueuedTask> = all
            .iter()
            .filter(|o| o.row.id < t.id && o.row.status.is_pending())
            .collect();
        if t.status == TaskStatus::Queued {
            let bytes: u64 = ahead.iter().map(|o| o.preview.rewrite.bytes).sum();
            queue_position = json!(ahead.len());
            estimated_start = rfc3339(Some(now + (bytes as f64 / rate * 1000.0) as i64));
        }
    }
    if let Some(p) = &task.progress {
        let done = p.partitions_done.len() as u64;
        let finish = match (t.status, t.started_at) {
            (TaskStatus::Running, Some(started)) if done > 0 && p.partitions_total > 0 => {
                Some(started + (now - started) * p.partitions_total as i64 / done as i64)
            }
            _ => None,
        };
        progress_json = json!({
            "partitions_done": done,
            "partitions_total": p.partitions_total,
            "bytes_rewritten": p.bytes_rewritten,
            "estimated_finish": rfc3339(finish),
        });
    }
    json!({
        "id": t.id,
        "name": t.name,
        "project_id": t.project_id,
        "spec": task.spec,
        "status": t.status,
        "queue_position": queue_position,
        "estimated_start": estimated_start,
        "progress": progress_json,
        "preview": task.preview,
        "result": task.result,
        "created_by": t.created_by,
        "created_at": rfc3339(Some(t.created_at)),
        "started_at": rfc3339(t.started_at),
        "finished_at": rfc3339(t.finished_at),
        "error": t.error,
        "attempts": t.attempts,
    })
}
