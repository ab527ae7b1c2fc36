//! `GET /api/2/export`: a zip of gzipped NDJSON files, one per hour of server upload time,
//! in Amplitude's export format. Reads one snapshot, so unflushed events are included and
//! nothing is seen twice.

use std::collections::BTreeMap;
use std::io::Write;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use lethe_event::Event;
use serde::Deserialize;

use crate::auth::ProjectKey;
use crate::{blocking, ApiError, App};

const HOUR_MS: i64 = 3_600_000;
const MAX_RANGE_MS: i64 = 365 * 24 * HOUR_MS;

pub fn routes() -> Router<App> {
    Router::new().route("/api/2/export", get(export))
}

#[derive(Deserialize)]
struct Range {
    start: Option<String>,
    end: Option<String>,
}

/// Parses `YYYYMMDDTHH` into the hour's first millisecond.
pub fn parse_hour(text: &str) -> Option<i64> {
    let t =
        chrono::NaiveDateTime::parse_from_str(&format!("{text}:00:00"), "%Y%m%dT%H:%M:%S").ok()?;
    Some(t.and_utc().timestamp_millis())
}

fn hour_param(value: Option<&str>, field: &'static str) -> Result<i64, ApiError> {
    let value = value.ok_or_else(|| {
        ApiError::field(
            StatusCode::BAD_REQUEST,
            field,
            format!("{field} is required (YYYYMMDDTHH)"),
        )
    })?;
    parse_hour(value).ok_or_else(|| {
        ApiError::field(
            StatusCode::BAD_REQUEST,
            field,
            format!("{field} must be YYYYMMDDTHH"),
        )
    })
}

async fn export(
    State(app): State<App>,
    ProjectKey(project): ProjectKey,
    Query(range): Query<Range>,
) -> Result<Response, ApiError> {
    let from = hour_param(range.start.as_deref(), "start")?;
    let to = hour_param(range.end.as_deref(), "end")? + HOUR_MS;
    if to <= from {
        return Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            "end",
            "end must not be before start",
        ));
    }
    if to - from > MAX_RANGE_MS {
        return Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            "end",
            "the range may span at most 365 days",
        ));
    }
    let zip = blocking(move || {
        let events = app.store.events(project.id, Some((from, to)))?;
        if events.is_empty() {
            return Ok(None);
        }
        Ok(Some(zip_by_hour(project.id, events)?))
    })
    .await?;
    match zip {
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no data for this range",
        )),
        Some(bytes) => Ok((
            [
                (header::CONTENT_TYPE, "application/zip"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"export.zip\"",
                ),
            ],
            bytes,
        )
            .into_response()),
    }
}

fn zip_by_hour(project_id: i64, events: Vec<Event>) -> Result<Vec<u8>, ApiError> {
    let mut hours: BTreeMap<i64, Vec<Event>> = BTreeMap::new();
    for e in events {
        hours
            .entry(e.server_upload_time.div_euclid(HOUR_MS))
            .or_default()
            .push(e);
    }
    let failed = |_| ApiError::internal("could not build the export archive");
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (hour, events) in hours {
        let start = chrono::DateTime::from_timestamp_millis(hour * HOUR_MS).unwrap_or_default();
        let name = format!(
            "{project_id}/{project_id}_{}_{}#0.json.gz",
            start.format("%Y-%m-%d"),
            start.format("%-H")
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        for e in &events {
            serde_json::to_writer(&mut gz, &e.to_export_json(project_id))
                .map_err(|_| ApiError::internal("could not encode an event"))?;
            gz.write_all(b"\n").map_err(failed)?;
        }
        zip.start_file(name, options)
            .map_err(|_| ApiError::internal("could not build the export archive"))?;
        zip.write_all(&gz.finish().map_err(failed)?)
            .map_err(failed)?;
    }
    let cursor = zip
        .finish()
        .map_err(|_| ApiError::internal("could not build the export archive"))?;
    Ok(cursor.into_inner())
}
