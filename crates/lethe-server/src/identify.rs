//! `POST /identify` and `POST /groupidentify`: Amplitude's Identify and Group Identify APIs.
//! Each identification changes a user's properties and id mappings, or a group's
//! properties, durable in the WAL before the 200, and creates no event.
//!
//! The parameters come as Amplitude documents them (a form body, or a GET query) or as one
//! JSON object; `identification` is one JSON object or an array of them.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::Router;
use lethe_event::{parse_identification, RequestError, Shape, DEFAULT_MIN_ID_LENGTH};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use crate::amplitude::{decode_body, event_issues_reply, AmplitudeReply, BodyError};
use crate::ingest::{admit_rates, missing_field, project_for_api_key, store_failure};
use crate::rates::Endpoint;
use crate::App;

/// Largest body (after decompression), as Amplitude documents it for both APIs.
const MAX_BYTES: usize = 1 << 20;

/// Routes merged under the ingestion endpoints' CORS policy.
pub fn routes() -> Router<App> {
    Router::new()
        .route("/identify", endpoint(Api::Identify))
        .route("/groupidentify", endpoint(Api::GroupIdentify))
}

/// The GET and POST handlers of one API.
fn endpoint(api: Api) -> MethodRouter<App> {
    let handler = move |State(app): State<App>,
                        method: Method,
                        headers: HeaderMap,
                        RawQuery(query): RawQuery,
                        body: Bytes| async move {
        let reply = handle(&app, api, &method, &headers, query.as_deref(), &body).await;
        let outcome = match &reply {
            Ok(_) => "accepted",
            Err(_) => "rejected",
        };
        metrics::counter!("lethe_ingest_requests_total", "endpoint" => api.name(), "outcome" => outcome)
            .increment(1);
        match reply {
            Ok(()) => success(),
            Err(reply) => reply.into_response(),
        }
    };
    get(handler).post(handler)
}

/// Which API a call came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Identify,
    GroupIdentify,
}

impl Api {
    fn shape(self) -> Shape {
        match self {
            Api::Identify => Shape::Identification,
            Api::GroupIdentify => Shape::GroupIdentification,
        }
    }

    /// Most identifications per request (Amplitude documents 1024 for groups).
    fn max_identifications(self) -> usize {
        match self {
            Api::Identify => 2000,
            Api::GroupIdentify => 1024,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Api::Identify => "identify",
            Api::GroupIdentify => "groupidentify",
        }
    }
}

/// The two parameters of an Identify call, however they were sent.
#[derive(Debug, Default)]
pub(crate) struct Call {
    pub api_key: Option<String>,
    /// The JSON text of the identification(s).
    pub identification: Option<String>,
}

#[derive(Deserialize)]
struct FormCall {
    api_key: Option<String>,
    identification: Option<String>,
}

#[derive(Deserialize)]
struct JsonCall<'a> {
    api_key: Option<String>,
    #[serde(borrow)]
    identification: Option<&'a RawValue>,
}

/// Reads the parameters from a JSON body, a form body or the query string.
pub(crate) fn call_params(
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
) -> Result<Call, AmplitudeReply> {
    let invalid = || AmplitudeReply::error(StatusCode::BAD_REQUEST, "Invalid request body");
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if *method == Method::GET || body.is_empty() {
        let form: FormCall =
            serde_urlencoded::from_str(query.unwrap_or("")).map_err(|_| invalid())?;
        return Ok(Call {
            api_key: form.api_key,
            identification: form.identification,
        });
    }
    let body = match decode_body(headers, body, MAX_BYTES) {
        Ok(b) => b,
        Err(BodyError::TooLarge) => return Err(AmplitudeReply::too_large()),
        Err(BodyError::BadGzip) => return Err(invalid()),
    };
    if json {
        let call: JsonCall = serde_json::from_slice(&body).map_err(|_| {
            AmplitudeReply::error(StatusCode::BAD_REQUEST, "Invalid JSON request body")
        })?;
        // `identification` may be the JSON itself or a string holding it, as in a form.
        let identification = call.identification.map(|raw| {
            serde_json::from_str::<String>(raw.get()).unwrap_or_else(|_| raw.get().to_string())
        });
        return Ok(Call {
            api_key: call.api_key,
            identification,
        });
    }
    let form: FormCall = serde_urlencoded::from_bytes(&body).map_err(|_| invalid())?;
    Ok(Call {
        api_key: form.api_key,
        identification: form.identification,
    })
}

/// Amplitude's answer when `identification` is absent or not JSON of the right shape.
pub(crate) fn missing_event() -> AmplitudeReply {
    AmplitudeReply(
        StatusCode::BAD_REQUEST,
        json!({ "error": "missing_event", "missing_field": "identification" }),
    )
}

/// The Identify API's 200: the plain `success` Amplitude has always answered.
pub(crate) fn success() -> Response {
    (StatusCode::OK, "success").into_response()
}

async fn handle(
    app: &App,
    api: Api,
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
) -> Result<(), AmplitudeReply> {
    let call = call_params(method, headers, query, body)?;
    let api_key = call
        .api_key
        .filter(|k| !k.is_empty())
        .ok_or_else(|| missing_field("api_key"))?;
    let text = call.identification.ok_or_else(missing_event)?;
    let parsed = match parse_identification(&text, DEFAULT_MIN_ID_LENGTH, api.shape()) {
        Ok(p) => p,
        Err(RequestError::InvalidJson | RequestError::MissingField(_)) => {
            return Err(missing_event())
        }
    };
    if parsed.len() > api.max_identifications() {
        return Err(AmplitudeReply::too_large());
    }
    let project = project_for_api_key(app, &api_key).await?;
    let mut calls = Vec::with_capacity(parsed.len());
    let mut issues = Vec::new();
    for (i, p) in parsed.into_iter().enumerate() {
        match p {
            Ok(c) => calls.push(c),
            Err(errors) => issues.push((i, errors)),
        }
    }
    if !issues.is_empty() {
        return Err(event_issues_reply(&issues));
    }
    admit_rates(app, project.id, Endpoint::HttpApi, &calls)?;
    let store = app.store.clone();
    match crate::blocking(move || Ok(store.ingest(project.id, calls))).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(store_failure(e)),
        Err(_) => Err(AmplitudeReply::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal server error",
        )),
    }
}
