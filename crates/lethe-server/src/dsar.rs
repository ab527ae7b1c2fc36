//! Access requests over HTTP, in the shape of Amplitude's DSAR API (`api_key:secret_key`):
//! `POST /api/2/dsar/requests` `{"userId" | "amplitudeId", "startDate", "endDate"}` answers
//! a `requestId`; `GET /api/2/dsar/requests/{id}` its status and, once done, the URL of its
//! file (gzip NDJSON: the user's events in the export format and their current profile),
//! which `GET …/files/0` serves with the same credentials until the download window ends
//! or the user is erased. The deletion worker writes the file (`lethe_delete::access`).

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use lethe_event::Day;
use lethe_meta::AccessRequest;
use serde_json::{json, Value};

use crate::auth::ProjectKey;
use crate::manage::Body;
use crate::{blocking, ApiError, App};

/// The longest range one request covers.
const MAX_DAYS: i64 = 3_660;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/api/2/dsar/requests", post(create))
        .route("/api/2/dsar/requests/{id}", get(status))
        .route("/api/2/dsar/requests/{id}/files/0", get(file))
}

fn bad(field: &str, message: &str) -> ApiError {
    ApiError::field(StatusCode::BAD_REQUEST, field, message)
}

fn day(body: &serde_json::Map<String, Value>, field: &str) -> Result<Day, ApiError> {
    body.get(field)
        .and_then(Value::as_str)
        .and_then(Day::parse)
        .ok_or_else(|| bad(field, "is required: a day, YYYY-MM-DD"))
}

/// `POST /api/2/dsar/requests`.
async fn create(
    State(app): State<App>,
    ProjectKey(project): ProjectKey,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let (start, end) = (day(&body, "startDate")?, day(&body, "endDate")?);
    if start.start_ms() > end.start_ms() {
        return Err(bad("endDate", "must not be before startDate"));
    }
    if start.plus(MAX_DAYS).start_ms() < end.start_ms() {
        return Err(bad(
            "endDate",
            &format!("at most {MAX_DAYS} days after startDate"),
        ));
    }
    let user_id = body.get("userId").map(|v| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    let amplitude_id = body.get("amplitudeId").and_then(Value::as_i64);
    blocking(move || {
        let known = app.store.known_users(
            project.id,
            &amplitude_id.into_iter().collect::<Vec<_>>(),
            &user_id.iter().cloned().collect::<Vec<_>>(),
        );
        let amplitude_id = match (&user_id, amplitude_id) {
            (Some(user), _) => *known
                .by_user_id
                .get(user)
                .ok_or_else(|| bad("userId", "is not known in this project"))?,
            (None, Some(id)) if known.by_amplitude_id.contains_key(&id) => id,
            (None, Some(_)) => return Err(bad("amplitudeId", "is not known in this project")),
            (None, None) => return Err(bad("userId", "userId or amplitudeId is required")),
        };
        let request = app.meta.request_access(
            project.id,
            amplitude_id,
            (&start.to_string(), &end.to_string()),
            &format!("project {} api key", project.id),
        )?;
        app.queue.notify();
        Ok(Json(json!({ "requestId": request.id })))
    })
    .await
}

fn find(app: &App, project: i64, id: i64) -> Result<AccessRequest, ApiError> {
    app.meta
        .access_request(project, id)?
        .ok_or_else(|| ApiError::not_found("access request"))
}

/// `GET /api/2/dsar/requests/{id}`.
async fn status(
    State(app): State<App>,
    ProjectKey(project): ProjectKey,
    Path(id): Path<i64>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let request = find(&app, project.id, id)?;
        let user_id = app
            .store
            .known_users(project.id, &[request.amplitude_id], &[])
            .by_amplitude_id
            .remove(&request.amplitude_id)
            .flatten();
        let base = match headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
            Some(host) => format!("http://{host}"),
            None => String::new(),
        };
        let urls: Vec<String> = request
            .file
            .iter()
            .map(|_| format!("{base}/api/2/dsar/requests/{id}/files/0"))
            .collect();
        Ok(Json(json!({
            "requestId": request.id,
            "userId": user_id,
            "amplitudeId": request.amplitude_id,
            "startDate": request.start_day,
            "endDate": request.end_day,
            "status": request.status,
            "failReason": request.fail_reason,
            "urls": urls,
            "expires": request.expires_at.map(|ms| {
                chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().format("%Y-%m-%dT%H:%M:%S").to_string()
            }),
        })))
    })
    .await
}

/// `GET /api/2/dsar/requests/{id}/files/0`: the file, audited; 410 once it is gone.
async fn file(
    State(app): State<App>,
    ProjectKey(project): ProjectKey,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    blocking(move || {
        let request = find(&app, project.id, id)?;
        let Some(name) = request.file else {
            return Err(ApiError::new(
                StatusCode::GONE,
                "no file: the request is not done, or its download window ended",
            ));
        };
        let bytes = app.store.access_file(&name)?;
        app.meta.audit(
            &format!("project {} api key", project.id),
            "access.downloaded",
            &json!({"request_id": id}),
        )?;
        Ok(([(header::CONTENT_TYPE, "application/gzip")], bytes).into_response())
    })
    .await
}
