//! `lethe verify`: checks every byte the store relies on, offline or beside a running server
//! (it only reads). Each live segment must exist with its recorded size and checksum and
//! decode in full, and an object no manifest names is noted; the WAL files after the
//! checkpoint must replay without damage (a torn tail of the last one is expected after a
//! crash); the metadata database must pass SQLite's integrity check. Problems name files
//! and offsets, never contents.

use lethe_meta::{MetaStore, Shard};
use object_store::path::Path as Key;

use crate::fetched::SegmentBytes;
use crate::layout::DataDir;
use crate::segment::read_batches;
use crate::storage::{SegmentLocation, SegmentPlace, Storage};
use crate::wal::{Damage, WalRoot};
use crate::Result;

/// What a verification found.
#[derive(Debug, Default)]
pub struct Report {
    pub segments: usize,
    pub segment_bytes: u64,
    pub wal_files: usize,
    /// One line per problem, naming the file.
    pub problems: Vec<String>,
    /// Expected findings worth knowing (a torn WAL tail), not problems.
    pub notes: Vec<String>,
}

/// Verifies the data dir whose metadata is `meta`, with its segments at `segments`.
pub fn verify(dir: &DataDir, meta: &MetaStore, segments: &SegmentPlace) -> Result<Report> {
    let mut report = Report::default();
    for line in meta.integrity_problems()? {
        report
            .problems
            .push(format!("{}: {line}", dir.meta_db().display()));
    }
    let storage = std::sync::Arc::new(Storage::for_reading(segments, &dir.segments_dir())?);
    let mut live = Vec::new();
    for record in meta.live_segments()? {
        let key = Storage::key(&SegmentLocation::of(&record));
        report.segments += 1;
        report.segment_bytes += record.bytes as u64;
        if let Some(problem) = check_segment(&storage, &key, record.bytes as u64, record.crc32) {
            let path = storage.describe(&key);
            report.problems.push(format!("{path}: {problem}"));
        }
        live.push(key);
    }
    // Not damage, but what a deletion removed may be in one: worth knowing.
    for key in storage.unreferenced(live.iter().collect())? {
        report.notes.push(format!(
            "{}: no manifest names it (written for a commit in flight or one that failed, or \
             retired and not yet deleted); the server deletes it, and so does any start",
            storage.describe(&key)
        ));
    }
    // A node's own WAL is in its data dir (shard 0's checkpoint); a cluster's, one for each
    // shard, in the bucket.
    let mut roots = vec![(WalRoot::Dir(dir.clone()), meta.wal_checkpoint(Shard(0))?)];
    if *segments != SegmentPlace::DataDir {
        for n in 0..meta.shard_count()? {
            let root = WalRoot::Bucket(storage.clone(), Shard(n));
            roots.push((root, meta.wal_checkpoint(Shard(n))?));
        }
    }
    for (root, checkpoint) in roots {
        let seqs: Vec<u64> = root
            .list()?
            .into_iter()
            .filter(|s| *s > checkpoint)
            .collect();
        let last = seqs.last().copied();
        root.read_each(&seqs, |seq, replay| {
            report.wal_files += 1;
            let file = root.name(seq);
            match replay.damage {
                None => {}
                Some(Damage::TornTail { offset, bytes }) if Some(seq) == last => {
                    report.notes.push(format!(
                        "{}: torn tail of {bytes} bytes at byte {offset} (a write cut short by a \
                         crash; cut off at the next start)",
                        file.display()
                    ));
                }
                Some(Damage::TornTail { offset, .. } | Damage::Corrupt { offset, .. }) => {
                    report.problems.push(format!(
                        "{}: damaged at byte {offset}; the records after it are unreadable",
                        file.display()
                    ));
                }
            }
            Ok(())
        })?;
    }
    Ok(report)
}

/// What is wrong with one segment object, if anything.
fn check_segment(storage: &Storage, key: &Key, bytes: u64, crc32: Option<u32>) -> Option<String> {
    let size = match storage.size(key) {
        Ok(Some(size)) => size,
        Ok(None) => return Some("missing".into()),
        Err(e) => return Some(format!("unreadable: {e}")),
    };
    if size != bytes {
        return Some(format!("{size} bytes, the manifest recorded {bytes}"));
    }
    let content = match storage.get(key) {
        Ok(content) => content,
        Err(e) => return Some(format!("unreadable: {e}")),
    };
    let actual = crc32fast::hash(&content);
    if let Some(expected) = crc32.filter(|expected| *expected != actual) {
        return Some(format!(
            "CRC-32 {actual:08x}, the manifest recorded {expected:08x}"
        ));
    }
    read_batches(&SegmentBytes::whole(content), None)
        .err()
        .map(|e| format!("does not decode: {e}"))
}
