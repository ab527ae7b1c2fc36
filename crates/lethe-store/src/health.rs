//! Segments found damaged when read: a file whose bytes no longer match the checksum its
//! manifest record carries is quarantined. It is never served nor rewritten (a read or a
//! deletion that needs it fails, naming it), the rest of the store keeps serving, and the
//! list is what `/healthz` reports and a metric counts, until an operator restores the file.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// One quarantined segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedSegment {
    pub id: String,
    pub project_id: i64,
    pub day: String,
    /// Where the object is: a file path, or a URL on object storage.
    pub path: String,
    /// What the check found (a checksum mismatch or an I/O error), never file contents.
    pub reason: String,
}

/// The quarantined segments of the store, shared by every live segment.
#[derive(Debug, Default)]
pub(crate) struct Quarantine {
    damaged: Mutex<BTreeMap<String, DamagedSegment>>,
    /// The projects of the store, which its gauge is labelled by.
    scope: lethe_meta::ShardScope,
}

impl Quarantine {
    /// An empty quarantine of the store of `scope`'s projects.
    pub fn of(scope: lethe_meta::ShardScope) -> Quarantine {
        Quarantine {
            damaged: Mutex::default(),
            scope,
        }
    }

    pub fn add(&self, segment: DamagedSegment) {
        tracing::error!(path = %segment.path, reason = %segment.reason,
            "segment damaged: quarantined (reads and deletions that need it fail until it is restored)");
        let mut damaged = self.damaged.lock().unwrap_or_else(|p| p.into_inner());
        damaged.insert(segment.id.clone(), segment);
        crate::gauge("lethe_segments_quarantined", self.scope).set(damaged.len() as f64);
    }

    pub fn list(&self) -> Vec<DamagedSegment> {
        let damaged = self.damaged.lock().unwrap_or_else(|p| p.into_inner());
        damaged.values().cloned().collect()
    }
}
