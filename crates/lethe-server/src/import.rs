//! `POST /api/v1/projects/{id}/import`: bulk load of NDJSON in Amplitude's export format
//! (plain, gzip, or the export zip itself). Good lines are stored and flushed into segments
//! before the answer; bad lines are reported by line number and field, never by value.

use std::borrow::Cow;
use std::io::Read;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use lethe_event::{parse_export_line, EventError, EventIssue, ParsedEvent};
use serde_json::{json, Value};

use crate::amplitude::{decode_body, limits_json, BodyError};
use crate::auth::{Access, Session};
use crate::{blocking, ApiError, App};

/// Largest import request (after decompression); the CLI sends files in parts below it.
pub const IMPORT_MAX_BYTES: usize = 512 << 20;
/// Bytes per import request that clients should send: large enough for healthy segments,
/// small enough that two requests in flight keep the server's memory well under 1 GiB.
pub const IMPORT_PART_BYTES: usize = 32 << 20;
/// Errors listed in one answer; the count covers them all.
const LISTED_ERRORS: usize = 100;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/api/v1/projects/{id}/import", post(import))
        .layer(DefaultBodyLimit::max(IMPORT_MAX_BYTES))
}

async fn import(
    State(app): State<App>,
    session: Session,
    Path(project_id): Path<i64>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    // Administrators and the project's members load data; viewers only read.
    if session.project_access(&app, project_id).await? == Access::Viewer {
        return Err(ApiError::forbidden());
    }
    let meta = app.meta.clone();
    blocking(move || {
        meta.project(project_id)?
            .ok_or_else(|| ApiError::not_found("project"))
    })
    .await?;
    let actor = session.0.email.clone();
    blocking(move || {
        let text = import_text(&headers, &body, IMPORT_MAX_BYTES)?;
        let (events, event_lines, mut errors, lines) = parse_lines(&text);
        let outcome = app.store.import(project_id, events)?;
        let limit = Some(lethe_event::limits::Limit::KeysPerDay);
        errors.extend(outcome.refused.iter().map(|&(index, field)| {
            let error = EventError {
                issue: EventIssue::Invalid,
                field,
                limit,
            };
            (event_lines[index], vec![error])
        }));
        errors.sort_by_key(|(line, _)| *line);
        metrics::counter!("lethe_events_ingested_total").increment(outcome.stored as u64);
        metrics::counter!("lethe_events_rejected_total").increment(errors.len() as u64);
        tracing::info!(
            project_id,
            lines,
            stored = outcome.stored,
            rejected = errors.len(),
            "import"
        );
        let detail = json!({"project_id": project_id, "lines": lines, "stored": outcome.stored,
                            "duplicates": outcome.duplicates, "rejected": errors.len()});
        app.meta.audit(&actor, "import", &detail)?;
        Ok(Json(json!({
            "lines": lines,
            "ingested": outcome.stored,
            "duplicates": outcome.duplicates,
            "rejected": errors.len(),
            "errors": errors.iter().take(LISTED_ERRORS).map(error_json).collect::<Vec<_>>(),
        })))
    })
    .await
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "the import is larger than 512 MiB once decompressed: send it in parts",
    )
}

/// The NDJSON text of the body: plain or gzip, or every file of an export zip, at most
/// `budget` bytes once decompressed (for a zip, all its files together: a small archive must
/// not expand into gigabytes in memory).
fn import_text<'a>(
    headers: &HeaderMap,
    body: &'a [u8],
    budget: usize,
) -> Result<Cow<'a, str>, ApiError> {
    let bad = |m: &str| ApiError::new(StatusCode::BAD_REQUEST, m);
    if body.starts_with(b"PK\x03\x04") {
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(body))
            .map_err(|_| bad("the zip archive is unreadable"))?;
        let mut text = String::new();
        for i in 0..archive.len() {
            let entry = archive
                .by_index(i)
                .map_err(|_| bad("the zip archive is unreadable"))?;
            let mut raw = Vec::new();
            let left = budget.saturating_sub(text.len());
            entry
                .take(left as u64 + 1)
                .read_to_end(&mut raw)
                .map_err(|_| bad("the zip archive is unreadable"))?;
            text.push_str(&import_text(&HeaderMap::new(), &raw, left)?);
            text.push('\n');
        }
        return Ok(Cow::Owned(text));
    }
    let decoded = decode_body(headers, body, budget).map_err(|e| match e {
        BodyError::TooLarge => too_large(),
        BodyError::BadGzip => bad("the gzip body is unreadable"),
    })?;
    let not_text = |_| bad("the body is not UTF-8 text");
    Ok(match decoded {
        Cow::Borrowed(b) => Cow::Borrowed(std::str::from_utf8(b).map_err(not_text)?),
        Cow::Owned(v) => Cow::Owned(String::from_utf8(v).map_err(|e| not_text(e.utf8_error()))?),
    })
}

type LineError = (usize, Vec<EventError>);
/// A line number and what parsing it gave.
type ParsedLine = (usize, Result<ParsedEvent, Vec<EventError>>);

/// Parses non-empty lines on every core; keeps line order. Returns the events with their
/// line numbers, the bad lines, and how many lines there were.
fn parse_lines(text: &str) -> (Vec<ParsedEvent>, Vec<usize>, Vec<LineError>, usize) {
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (i + 1, l))
        .collect();
    let now = lethe_meta::now_ms();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = lines.len().div_ceil(workers).max(1);
    let parts: Vec<Vec<ParsedLine>> =
        lethe_store::parallel_map(lines.chunks(chunk).collect(), |part| {
            part.iter()
                .map(|(n, l)| (*n, parse_export_line(l, now)))
                .collect()
        });
    let mut events = Vec::with_capacity(lines.len());
    let mut event_lines = Vec::with_capacity(lines.len());
    let mut errors = Vec::new();
    for (line, parsed) in parts.into_iter().flatten() {
        match parsed {
            Ok(e) => {
                events.push(e);
                event_lines.push(line);
            }
            Err(e) => errors.push((line, e)),
        }
    }
    (events, event_lines, errors, lines.len())
}

fn error_json((line, errors): &LineError) -> Value {
    let fields = |issue: EventIssue| -> Vec<&str> {
        errors
            .iter()
            .filter(|e| e.issue == issue)
            .map(|e| e.field)
            .collect()
    };
    let mut out = json!({
        "line": line,
        "missing_fields": fields(EventIssue::Missing),
        "invalid_fields": fields(EventIssue::Invalid),
        "invalid_id_lengths": fields(EventIssue::IdLength),
    });
    let limits = limits_json(std::iter::once((*line, errors.as_slice())));
    if !limits.is_empty() {
        out["limits"] = json!(limits);
    }
    out
}
