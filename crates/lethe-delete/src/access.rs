//! Access requests (Amplitude's DSAR API), carried out by the deletion worker between tasks:
//! the user's events in the range, in the export format, and their current profile (one last
//! line with `"current_profile": true`), gzip NDJSON, in one file beside the segments. The
//! file is deleted when its download window ends (`--access-window`, 24 h by default), and
//! at once when the user is erased (the
//! erasure's task removes it before it completes), so it never outlives the data it copies.

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;
use lethe_event::Day;
use lethe_meta::{AccessRequest, MetaStore, Retiring};
use lethe_store::{Store, StoreError};
use serde_json::{json, Map, Value};

use crate::DeleteError;

/// Deletes the files whose download window ended, then carries out the requests waiting,
/// their files downloadable for `window` (`--access-window`). Returns how many were done.
pub fn run_access_requests(
    store: &Store,
    meta: &MetaStore,
    now: i64,
    window: std::time::Duration,
) -> Result<usize, DeleteError> {
    for file in meta.retire_access_files(now, Retiring::Expired(store.scope()))? {
        store.delete_access_file(&file)?;
    }
    let mut done = 0;
    for request in meta.take_staged_access_requests(store.scope())? {
        match write_file(store, &request) {
            Ok(file) => {
                meta.finish_access_request(request.id, &file, now + window.as_millis() as i64)?;
                done += 1;
            }
            Err(e) => {
                tracing::error!(error = %e, request_id = request.id, "access request failed");
                meta.fail_access_request(request.id, "the user's data could not be read")?;
            }
        }
    }
    Ok(done)
}

/// Deletes the access files (and requests) of users being erased.
pub fn forget_access_files(
    store: &Store,
    meta: &MetaStore,
    project_id: i64,
    amplitude_ids: &[i64],
) -> Result<(), DeleteError> {
    for file in meta.retire_access_files(
        lethe_meta::now_ms(),
        Retiring::OfUsers(project_id, amplitude_ids),
    )? {
        store.delete_access_file(&file)?;
    }
    Ok(())
}

fn write_file(store: &Store, request: &AccessRequest) -> Result<String, DeleteError> {
    let day = |text: &str| {
        Day::parse(text).ok_or_else(|| DeleteError::CorruptTask {
            task: request.id,
            field: "access request day",
            why: "not a day".into(),
        })
    };
    let range = (
        day(&request.start_day)?.start_ms(),
        day(&request.end_day)?.plus(1).start_ms(),
    );
    let project = request.project_id;
    let mut out = GzEncoder::new(Vec::new(), Compression::default());
    let user = [request.amplitude_id];
    store.for_each_day(project, Some(range), Some(&user), |events| {
        for event in &events {
            writeln!(out, "{}", event.to_export_json(project)).map_err(StoreError::from)?;
        }
        Ok(())
    })?;
    if let Some(profile) = store.profile_of(project, request.amplitude_id) {
        let properties: Map<String, Value> = profile
            .properties
            .iter()
            .map(|(key, text)| {
                let value = serde_json::from_str(text).unwrap_or_else(|_| json!(text));
                (key.clone(), value)
            })
            .collect();
        let line = json!({"amplitude_id": request.amplitude_id, "app": project,
            "user_id": profile.user_id, "user_properties": properties, "current_profile": true});
        writeln!(out, "{line}").map_err(StoreError::from)?;
    }
    let bytes = out.finish().map_err(StoreError::from)?;
    let name = format!("{}-{}.ndjson.gz", request.id, uuid::Uuid::new_v4().simple());
    store.put_access_file(&name, bytes)?;
    Ok(name)
}
