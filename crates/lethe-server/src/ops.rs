//! Operations: `GET /healthz` and `GET /metrics` (Prometheus text). Metric labels are bounded
//! (endpoint, outcome): never an event type, property name or value.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::App;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/healthz", get(health))
        .route("/metrics", get(metrics_text))
}

/// `ok`, or `degraded` (still serving) with what is wrong: quarantined segments, a WAL
/// that refuses writes, flushes so far behind that ingestion waits for them, or segment
/// objects that could not be deleted (which may hold what a deletion task removed).
async fn health(State(app): State<App>) -> Json<serde_json::Value> {
    let damaged: Vec<serde_json::Value> = app
        .store
        .damaged_segments()
        .into_iter()
        .map(|d| {
            json!({"id": d.id, "project_id": d.project_id, "day": d.day,
                   "path": d.path, "reason": d.reason})
        })
        .collect();
    let wal = app.store.wal_refusal();
    let (unflushed, behind) = app.store.flush_backlog();
    let undeleted = app.store.pending_deletions();
    let status = if damaged.is_empty() && wal.is_none() && !behind && undeleted == 0 {
        "ok"
    } else {
        "degraded"
    };
    let mut body = json!({ "status": status });
    if app.cluster_secret.is_some() {
        body["role"] = json!("writer");
    }
    if !damaged.is_empty() {
        body["damaged_segments"] = json!(damaged);
    }
    if let Some(reason) = wal {
        body["wal"] = json!(format!("refusing writes: {reason}"));
    }
    if behind {
        body["flush"] = json!(format!(
            "behind: {unflushed} events wait for a flush; ingestion waits, then answers 503"
        ));
    }
    if undeleted > 0 {
        body["segment_deletions"] = json!(format!(
            "failing: {undeleted} segment objects could not be deleted and are tried again; \
             deletion tasks fail until they are gone"
        ));
    }
    Json(body)
}

async fn metrics_text(State(app): State<App>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
}
