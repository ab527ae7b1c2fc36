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
        (status, Json(body)).into_response()
    }
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
    AmplitudeReply(StatusCode::BAD_REQUEST, body)
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
