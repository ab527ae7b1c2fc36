//! Amplitude's response bodies and request-body decoding, shared by ingestion and import.
//! Every ingestion answer carries `code`, because the SDKs read the status from the body.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Read;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use lethe_event::{EventError, EventIssue};
use serde_json::{json, Value};

/// An Amplitude-style answer: `{"code": status, ...fields}`.
pub struct AmplitudeReply(pub StatusCode, pub Value);

impl AmplitudeReply {
    pub fn error(status: StatusCode, error: &str) -> Self {
        Self(status, json!({ "error": error }))
    }

    pub fn too_large() -> Self {
        Self::error(StatusCode::PAYLOAD_TOO_LARGE, "Payload too large")
    }
}

impl IntoResponse for AmplitudeReply {
    fn into_response(self) -> Response {
        let AmplitudeReply(status, mut body) = self;
        body["code"] = json!(status.as_u16());
        let mut response = (status, Json(body)).into_response();
        // A 503 stored nothing, and the condition is expected to pass.
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(RETRY_AFTER_SECS),
            );
        }
        response
    }
}

/// Seconds a client should wait before retrying a 503.
pub const RETRY_AFTER_SECS: u64 = 5;

/// Why a store refuses writes, for a 503: a stable code for scripts and a sentence.
pub fn unavailable(reason: lethe_store::Unavailable) -> (&'static str, String) {
    let code = match reason {
        lethe_store::Unavailable::StorageFull => "storage_full",
        lethe_store::Unavailable::Io => "storage_error",
        lethe_store::Unavailable::NotWriter => "not_writer",
        lethe_store::Unavailable::FlushBehind => "flush_behind",
    };
    (code, format!("Service unavailable, retry later: {reason}"))
}

/// The ingestion answer's body for a store that refuses writes.
pub fn unavailable_body(reason: lethe_store::Unavailable) -> Value {
    let (code, message) = unavailable(reason);
    json!({ "error": message, "reason": code })
}

/// The 400 body that lists bad events by index, per kind of issue, so SDKs drop only them.
pub fn event_issues_reply(issues: &[(usize, Vec<EventError>)]) -> AmplitudeReply {
    let mut maps: BTreeMap<&str, BTreeMap<&str, Vec<usize>>> = BTreeMap::new();
    for (index, errors) in issues {
        for e in errors {
            let key = match e.issue {
                EventIssue::Missing => "events_with_missing_fields",
                EventIssue::Invalid => "events_with_invalid_fields",
                EventIssue::IdLength => "events_with_invalid_id_lengths",
            };
            maps.entry(key)
                .or_default()
                .entry(e.field)
                .or_default()
                .push(*index);
        }
    }
    let mut body = json!({ "error": "Invalid field values on some events" });
    for (key, fields) in maps {
        body[key] = json!(fields);
    }
    let limits = limits_json(issues.iter().map(|(i, e)| (*i, e.as_slice())));
    if !limits.is_empty() {
        body["limits"] = json!(limits);
    }
    AmplitudeReply(StatusCode::BAD_REQUEST, body)
}

/// lethe's addition to a 400: for every documented limit that refused a field, its name,
/// what it allows, and the events (or import lines) that broke it.
pub fn limits_json<'a>(issues: impl Iterator<Item = (usize, &'a [EventError])>) -> Vec<Value> {
    let mut by_limit: BTreeMap<(&str, lethe_event::limits::Limit), Vec<usize>> = BTreeMap::new();
    for (index, errors) in issues {
        for e in errors {
            if let Some(limit) = e.limit {
                by_limit.entry((e.field, limit)).or_default().push(index);
            }
        }
    }
    by_limit
        .into_iter()
        .map(|((field, limit), indices)| {
            let (name, allows) = limit.describe();
            json!({ "field": field, "limit": name, "allows": allows, "events": indices })
        })
        .collect()
}

/// Whether the body is gzip: by header, or by its magic bytes.
fn is_gzip(headers: &HeaderMap, body: &[u8]) -> bool {
    let declared = headers
        .get(axum::http::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    declared || body.starts_with(&[0x1f, 0x8b])
}

/// Why a body could not be decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    TooLarge,
    BadGzip,
}

/// Decompresses a gzip body (limits apply after decompression, as Amplitude counts them);
/// a plain body is borrowed, not copied.
pub fn decode_body<'a>(
    headers: &HeaderMap,
    body: &'a [u8],
    limit: usize,
) -> Result<Cow<'a, [u8]>, BodyError> {
    if !is_gzip(headers, body) {
        return if body.len() > limit {
            Err(BodyError::TooLarge)
        } else {
            Ok(Cow::Borrowed(body))
        };
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(body)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| BodyError::BadGzip)?;
    if out.len() > limit {
        return Err(BodyError::TooLarge);
    }
    Ok(Cow::Owned(out))
}
