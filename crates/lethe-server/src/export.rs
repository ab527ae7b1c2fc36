//! `GET /api/2/export`: a zip of gzipped NDJSON files, one per hour of server upload time,
//! in Amplitude's export format, streamed a day at a time. Reads one snapshot, so unflushed
//! events are included and nothing is seen twice.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::Write;

use axum::body::{Body, Bytes};
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
    let snapshot = app.store.snapshot(project.id, Some((from, to)));
    if snapshot.segments.is_empty() && snapshot.memtable.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no data for this range",
        ));
    }
    // Once the body streams its status is sent: a damaged segment must be found before.
    blocking(move || {
        for segment in &snapshot.segments {
            segment.ensure_readable()?;
        }
        Ok(())
    })
    .await?;
    // The archive is written a day at a time into a bounded channel that the response body
    // drains: memory holds one day's events and a few chunks, whatever the range.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    tokio::task::spawn_blocking(move || {
        let out = Spool {
            tx: tx.clone(),
            held: RefCell::new(Vec::new()),
            sent: Cell::new(0),
            pos: 0,
        };
        if let Err(e) = write_archive(&app, project.id, (from, to), out) {
            tracing::error!(error = %e, project_id = project.id, "export stopped");
            let _ = tx.blocking_send(Err(std::io::Error::other("the export stopped")));
        }
    });
    let body = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"export.zip\"",
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// Most bytes handed to the response at once.
const CHUNK: usize = 256 * 1024;

/// The archive's bytes on their way to the response. A zip writer seeks back only into the
/// entry it is writing (to fill in its header), so every byte before that entry's header is
/// final: [`Spool::send_before`] hands those to the response and holds the rest.
struct Spool {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    /// Bytes from offset `sent` on, not yet final.
    held: RefCell<Vec<u8>>,
    sent: Cell<u64>,
    pos: u64,
}

impl Spool {
    /// The archive's length so far.
    fn len(&self) -> u64 {
        self.sent.get() + self.held.borrow().len() as u64
    }

    /// Sends every byte before `end` (blocking while the client is slower).
    fn send_before(&self, end: u64) -> std::io::Result<()> {
        let count = (end.saturating_sub(self.sent.get()) as usize).min(self.held.borrow().len());
        let ready: Vec<u8> = self.held.borrow_mut().drain(..count).collect();
        for chunk in ready.chunks(CHUNK) {
            self.tx
                .blocking_send(Ok(Bytes::copy_from_slice(chunk)))
                .map_err(|_| std::io::Error::other("the client went away"))?;
        }
        self.sent.set(self.sent.get() + count as u64);
        Ok(())
    }
}

impl Write for Spool {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let at = self
            .pos
            .checked_sub(self.sent.get())
            .ok_or_else(|| std::io::Error::other("write before the sent bytes"))?
            as usize;
        let mut held = self.held.borrow_mut();
        let overlap = held.len().saturating_sub(at).min(data.len());
        held[at..at + overlap].copy_from_slice(&data[..overlap]);
        held.extend_from_slice(&data[overlap..]);
        self.pos += data.len() as u64;
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl std::io::Seek for Spool {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            std::io::SeekFrom::Start(p) => p as i128,
            std::io::SeekFrom::Current(d) => self.pos as i128 + d as i128,
            std::io::SeekFrom::End(d) => self.len() as i128 + d as i128,
        };
        if target < self.sent.get() as i128 || target > self.len() as i128 {
            return Err(std::io::Error::other("seek outside the held bytes"));
        }
        self.pos = target as u64;
        Ok(self.pos)
    }
}

/// Writes the zip of one gzipped NDJSON file per hour of server upload time. Entries are
/// stored (the files are gzip already) with their sizes in their local headers, as readers
/// that stream a zip (Java's ZipInputStream, scripts) need.
fn write_archive(
    app: &App,
    project_id: i64,
    range: (i64, i64),
    out: Spool,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut zip = zip::ZipWriter::new(out);
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    app.store
        .for_each_day(project_id, Some(range), None, |events| {
            let mut hours: BTreeMap<i64, Vec<Event>> = BTreeMap::new();
            for e in events {
                hours
                    .entry(e.server_upload_time.div_euclid(HOUR_MS))
                    .or_default()
                    .push(e);
            }
            for (hour, events) in hours {
                let start =
                    chrono::DateTime::from_timestamp_millis(hour * HOUR_MS).unwrap_or_default();
                let name = format!(
                    "{project_id}/{project_id}_{}_{}#0.json.gz",
                    start.format("%Y-%m-%d"),
                    start.format("%-H")
                );
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                for e in &events {
                    serde_json::to_writer(&mut gz, &e.to_export_json(project_id))?;
                    gz.write_all(b"\n")?;
                }
                append_entry(&mut zip, name, options, &gz.finish()?)?;
            }
            Ok(())
        })?;
    let out = zip.finish()?;
    out.send_before(out.len())?;
    Ok(())
}

/// Appends one entry; once its header is written the entries before it are final and sent.
fn append_entry(
    zip: &mut zip::ZipWriter<Spool>,
    name: String,
    options: zip::write::SimpleFileOptions,
    data: &[u8],
) -> std::io::Result<()> {
    let start = zip.get_ref().map_or(0, Spool::len);
    zip.start_file(name, options)
        .map_err(std::io::Error::other)?;
    if let Some(spool) = zip.get_ref() {
        spool.send_before(start)?;
    }
    zip.write_all(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_carry_their_sizes_in_their_local_headers() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let spool = Spool {
            tx,
            held: RefCell::new(Vec::new()),
            sent: Cell::new(0),
            pos: 0,
        };
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        let mut zip = zip::ZipWriter::new(spool);
        append_entry(
            &mut zip,
            "1/1_2026-01-01_0#0.json.gz".into(),
            options,
            b"first",
        )
        .unwrap();
        let sent_early = zip.get_ref().unwrap().sent.get();
        append_entry(
            &mut zip,
            "1/1_2026-01-01_1#0.json.gz".into(),
            options,
            b"second entry",
        )
        .unwrap();
        assert!(
            zip.get_ref().unwrap().sent.get() > sent_early,
            "the first entry went out"
        );
        let spool = zip.finish().unwrap();
        spool.send_before(spool.len()).unwrap();
        drop(spool);
        let mut bytes = Vec::new();
        while let Ok(chunk) = rx.try_recv() {
            bytes.extend_from_slice(&chunk.unwrap());
        }
        // Walk the local headers as a streaming reader would.
        let mut at = 0;
        let mut found = Vec::new();
        while u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) == 0x0403_4b50 {
            let flags = u16::from_le_bytes(bytes[at + 6..at + 8].try_into().unwrap());
            assert_eq!(flags & 0x08, 0, "no data descriptor");
            let size = u32::from_le_bytes(bytes[at + 18..at + 22].try_into().unwrap()) as usize;
            let name_len = u16::from_le_bytes(bytes[at + 26..at + 28].try_into().unwrap()) as usize;
            let extra = u16::from_le_bytes(bytes[at + 28..at + 30].try_into().unwrap()) as usize;
            let start = at + 30 + name_len + extra;
            found.push(bytes[start..start + size].to_vec());
            at = start + size;
        }
        assert_eq!(found, vec![b"first".to_vec(), b"second entry".to_vec()]);
        // And a reader of the central directory sees the same.
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        assert_eq!(archive.len(), 2);
        assert_eq!(archive.by_index(1).unwrap().size(), 12);
    }
}
