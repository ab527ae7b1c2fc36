//! Published manifests: after every commit that changes a project's live segments, the list of
//! them as one create-only JSON object, `manifests/<project>/<version>.json`, beside the
//! segments. DuckDB, Spark or Trino read exactly the files the newest one names, never a
//! retired one (a glob over the segments would also find objects a crash left or a rewrite
//! is about to delete). Older versions are deleted once the newer one is written, so a
//! retired segment's name does not outlive its bytes for long. A manifest holds object
//! names, days, counts and times: never a value.

use std::sync::Arc;

use lethe_meta::MetaStore;
use serde::Serialize;

use crate::live::Segment;
use crate::storage::Storage;
use crate::Result;

/// One published manifest.
#[derive(Serialize)]
struct Published<'a> {
    project_id: i64,
    /// The project's manifest version in the metadata store: newer lists are higher.
    version: i64,
    segments: Vec<PublishedSegment<'a>>,
}

/// One live segment, as a reader outside lethe needs it.
#[derive(Serialize)]
struct PublishedSegment<'a> {
    /// The file path or `s3://bucket/prefix/…` URL to read.
    path: String,
    day: &'a str,
    rows: i64,
    bytes: i64,
    /// Bounds of server upload time in the segment (ms since the epoch, UTC).
    min_server_upload_time: i64,
    max_server_upload_time: i64,
}

/// Writes the project's current manifest (unless that version is published already) and
/// deletes the older ones. Called under the manifest writer lock, with the live segments
/// the metadata's current version describes.
pub(crate) fn publish(
    storage: &Storage,
    meta: &MetaStore,
    project_id: i64,
    live: &[Arc<Segment>],
) -> Result<()> {
    let version = meta.manifest_version(project_id)?;
    let published = storage.manifests(project_id)?;
    if !published.iter().any(|(v, _)| *v == version) {
        let manifest = Published {
            project_id,
            version,
            segments: live
                .iter()
                .map(|s| PublishedSegment {
                    path: storage.describe(&s.key),
                    day: &s.record.day,
                    rows: s.record.rows,
                    bytes: s.record.bytes,
                    min_server_upload_time: s.record.min_time,
                    max_server_upload_time: s.record.max_time,
                })
                .collect(),
        };
        let body = serde_json::to_vec_pretty(&manifest).map_err(std::io::Error::other)?;
        storage.put_manifest(project_id, version, body.into())?;
    }
    for (older, key) in published.into_iter().filter(|(v, _)| *v < version) {
        tracing::debug!(
            project_id,
            version = older,
            "removing an older published manifest"
        );
        storage.delete(&key)?;
    }
    Ok(())
}
