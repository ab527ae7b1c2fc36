//! `POST /2/httpapi` and `POST /batch`: Amplitude's ingestion endpoints (with the Identify
//! APIs of [`crate::identify`] under the same CORS policy). A 200 means every
//! event is fsynced in the WAL; a 400 that lists events means none was stored, so that a
//! client dropping the listed ones and retrying the rest stores each event once.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use lethe_event::{parse_batch, EventError, EventIssue, RequestError};
use serde_json::json;

use crate::amplitude::{
    decode_body, event_issues_reply, unavailable_body, AmplitudeReply, BodyError,
};
use crate::rates::Endpoint;
use crate::{App, CorsOrigins};
use axum::http::{Extensions, Method};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

const HTTPAPI_MAX_BYTES: usize = 1 << 20;
pub(crate) const BATCH_MAX_BYTES: usize = 20 << 20;
const MAX_EVENTS: usize = 2000;

pub fn routes(origins: &CorsOrigins) -> Router<App> {
    Router::new()
        .route(
            "/2/httpapi",
            post(|s: State<App>, h: HeaderMap, x: Extensions, b: Bytes| {
                ingest(s, h, x, b, Endpoint::HttpApi)
            }),
        )
        .route(
            "/batch",
            post(|s: State<App>, h: HeaderMap, x: Extensions, b: Bytes| {
                ingest(s, h, x, b, Endpoint::Batch)
            }),
        )
        .merge(crate::identify::routes())
        .layer(DefaultBodyLimit::max(BATCH_MAX_BYTES + (1 << 20)))
        .layer(cors(origins))
        .layer(axum::middleware::map_response(preflight_no_content))
}

/// Browsers may send events here from web pages on other origins (the browser SDK's fetch
/// and XHR transports preflight their JSON POSTs); the management API stays same-origin.
fn cors(origins: &CorsOrigins) -> CorsLayer {
    let allow = match origins {
        CorsOrigins::Any => AllowOrigin::any(),
        CorsOrigins::List(list) => AllowOrigin::list(
            list.iter()
                .filter_map(|o| axum::http::HeaderValue::from_str(o).ok()),
        ),
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(AllowHeaders::mirror_request())
        .max_age(std::time::Duration::from_secs(7200))
}

/// A preflight answered by the CORS layer has no body: 204, as browsers and SDKs expect.
async fn preflight_no_content(mut response: axum::response::Response) -> axum::response::Response {
    let preflight = response
        .headers()
        .contains_key(axum::http::header::ACCESS_CONTROL_ALLOW_METHODS);
    if preflight && response.status() == StatusCode::OK {
        *response.status_mut() = StatusCode::NO_CONTENT;
    }
    response
}

async fn ingest(
    State(app): State<App>,
    headers: HeaderMap,
    extensions: Extensions,
    body: Bytes,
    endpoint: Endpoint,
) -> AmplitudeReply {
    let client = app.client_address(&headers, &extensions);
    let reply = handle(&app, &headers, &client, &body, endpoint).await;
    let outcome = if reply.0.is_success() {
        "accepted"
    } else {
        "rejected"
    };
    let name = match endpoint {
        Endpoint::HttpApi => "httpapi",
        Endpoint::Batch => "batch",
    };
    metrics::counter!("lethe_ingest_requests_total", "endpoint" => name, "outcome" => outcome)
        .increment(1);
    reply
}

async fn handle(
    app: &App,
    headers: &HeaderMap,
    client: &str,
    body: &[u8],
    endpoint: Endpoint,
) -> AmplitudeReply {
    let limit = match endpoint {
        Endpoint::HttpApi => HTTPAPI_MAX_BYTES,
        Endpoint::Batch => BATCH_MAX_BYTES,
    };
    let body = match decode_body(headers, body, limit) {
        Ok(b) => b,
        Err(BodyError::TooLarge) => return AmplitudeReply::too_large(),
        Err(BodyError::BadGzip) => {
            return AmplitudeReply::error(StatusCode::BAD_REQUEST, "Invalid JSON request body")
        }
    };
    if body.is_empty() {
        return AmplitudeReply::error(StatusCode::BAD_REQUEST, "Missing request body");
    }
    let batch = match parse_batch(&body) {
        Ok(b) => b,
        Err(RequestError::InvalidJson) => {
            return AmplitudeReply::error(StatusCode::BAD_REQUEST, "Invalid JSON request body")
        }
        Err(RequestError::MissingField(field)) => {
            return missing_field(field);
        }
    };
    if batch.events.len() > MAX_EVENTS {
        return AmplitudeReply::too_large();
    }
    if batch.events.is_empty() {
        return missing_field("events");
    }
    let project = match project_for_api_key(app, &batch.api_key).await {
        Ok(p) => p,
        Err(reply) => return reply,
    };
    let mut events = Vec::with_capacity(batch.events.len());
    let mut issues = Vec::new();
    for (i, e) in batch.events.into_iter().enumerate() {
        match e {
            Ok(e) => events.push(e),
            Err(errors) => issues.push((i, errors)),
        }
    }
    if !issues.is_empty() {
        metrics::counter!("lethe_events_rejected_total").increment(issues.len() as u64);
        return event_issues_reply(&issues);
    }
    for event in &mut events {
        event.fill_remote_ip(client);
    }
    if let Err(reply) = admit_rates(app, project.id, endpoint, &events) {
        return reply;
    }
    let count = events.len();
    let store = app.store.clone();
    let stored = crate::blocking(move || Ok(store.ingest(project.id, events))).await;
    match stored {
        Ok(Ok(outcome)) => {
            metrics::counter!("lethe_events_ingested_total").increment(outcome.stored as u64);
            metrics::counter!("lethe_events_deduplicated_total")
                .increment(outcome.duplicates as u64);
            metrics::counter!("lethe_ingest_bytes_total").increment(body.len() as u64);
            AmplitudeReply(
                StatusCode::OK,
                json!({
                    "events_ingested": count,
                    "payload_size_bytes": body.len(),
                    "server_upload_time": lethe_meta::now_ms(),
                }),
            )
        }
        Ok(Err(e)) => store_failure(e),
        Err(_) => AmplitudeReply::error(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error"),
    }
}

/// Counts the request's events against the per-device and per-user limits, or answers 429
/// with Amplitude's body (nothing stored) when one would pass them.
pub(crate) fn admit_rates(
    app: &App,
    project_id: i64,
    endpoint: Endpoint,
    events: &[lethe_event::ParsedEvent],
) -> Result<(), AmplitudeReply> {
    app.rates
        .admit(project_id, endpoint, events, lethe_meta::now_ms())
        .map_err(|throttled| {
            metrics::counter!("lethe_events_throttled_total")
                .increment(throttled.throttled_events.len() as u64);
            AmplitudeReply(StatusCode::TOO_MANY_REQUESTS, throttled.body())
        })
}

/// The project an ingestion API key names, or the answer for a key that names none.
pub(crate) async fn project_for_api_key(
    app: &App,
    api_key: &str,
) -> Result<lethe_meta::Project, AmplitudeReply> {
    let meta = app.meta.clone();
    let key = api_key.to_string();
    match crate::blocking(move || Ok(meta.project_by_api_key(&key)?)).await {
        Ok(Some(p)) => Ok(p),
        Ok(None) => Err(AmplitudeReply::error(
            StatusCode::BAD_REQUEST,
            &format!("Invalid API key: {api_key}"),
        )),
        Err(_) => Err(server_error()),
    }
}

/// The answer for a batch the store refused: nothing of it was stored (the WAL is fail-stop
/// and the resolver rolled back), so a retry after Retry-After stores it once.
pub(crate) fn store_failure(error: lethe_store::StoreError) -> AmplitudeReply {
    match error {
        lethe_store::StoreError::KeysPerDay { event, field } => {
            metrics::counter!("lethe_events_rejected_total").increment(1);
            let limit = Some(lethe_event::limits::Limit::KeysPerDay);
            event_issues_reply(&[(
                event,
                vec![EventError {
                    issue: EventIssue::Invalid,
                    field,
                    limit,
                }],
            )])
        }
        e => match e.unavailable() {
            Some(reason) => {
                AmplitudeReply(StatusCode::SERVICE_UNAVAILABLE, unavailable_body(reason))
            }
            None => {
                tracing::error!(error = %e, "ingestion failed");
                AmplitudeReply::error(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
            }
        },
    }
}

pub(crate) fn missing_field(field: &str) -> AmplitudeReply {
    AmplitudeReply(
        StatusCode::BAD_REQUEST,
        json!({ "error": "Request missing required field", "missing_field": field }),
    )
}

/// 503: nothing was stored, so a retry is safe.
fn server_error() -> AmplitudeReply {
    AmplitudeReply::error(
        StatusCode::SERVICE_UNAVAILABLE,
        "Service unavailable, retry",
    )
}
