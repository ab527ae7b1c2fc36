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
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/metrics", get(metrics_text))
}

async fn metrics_text(State(app): State<App>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
}
