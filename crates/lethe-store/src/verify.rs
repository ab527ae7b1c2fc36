//! `lethe verify`: checks every byte the store relies on, offline or beside a running server
//! (it only reads). Each live segment must exist with its recorded size and checksum and
//! decode in full; the WAL files after the checkpoint must replay without damage (a torn
//! tail of the last one is expected after a crash); the metadata database must pass
//! SQLite's integrity check. Problems name files and offsets, never contents.

use std::path::PathBuf;

use lethe_meta::MetaStore;

use crate::layout::{DataDir, SegmentLocation};
use crate::segment::{file_checksum, read_batches};
use crate::wal::{self, Damage};
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

/// Verifies the data dir whose metadata is `meta`.
pub fn verify(dir: &DataDir, meta: &MetaStore) -> Result<Report> {
    let mut report = Report::default();
    for line in meta.integrity_problems()? {
        report
            .problems
            .push(format!("{}: {line}", dir.meta_db().display()));
    }
    for record in meta.live_segments()? {
        let path = dir.segment_file(&SegmentLocation {
            project_id: record.project_id,
            day: record.day.clone(),
            id: record.id.clone(),
        });
        report.segments += 1;
        report.segment_bytes += record.bytes as u64;
        if let Some(problem) = check_segment(&path, record.bytes as u64, record.crc32) {
            report
                .problems
                .push(format!("{}: {problem}", path.display()));
        }
    }
    let checkpoint = meta.wal_checkpoint()?;
    let seqs: Vec<u64> = wal::list(dir)?
        .into_iter()
        .filter(|s| *s > checkpoint)
        .collect();
    for (i, &seq) in seqs.iter().enumerate() {
        report.wal_files += 1;
        let file = dir.wal_file(seq);
        match wal::read(dir, seq)?.damage {
            None => {}
            Some(Damage::TornTail { offset, bytes }) if i + 1 == seqs.len() => {
                report.notes.push(format!(
                    "{}: torn tail of {bytes} bytes at byte {offset} (a write cut short by a crash; \
                     cut off at the next start)",
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
    }
    Ok(report)
}

/// What is wrong with one segment file, if anything.
fn check_segment(path: &PathBuf, bytes: u64, crc32: Option<u32>) -> Option<String> {
    let size = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) => return Some(format!("missing or unreadable: {e}")),
    };
    if size != bytes {
        return Some(format!("{size} bytes, the manifest recorded {bytes}"));
    }
    match (crc32, file_checksum(path)) {
        (_, Err(e)) => return Some(format!("unreadable: {e}")),
        (Some(expected), Ok(actual)) if expected != actual => {
            return Some(format!(
                "CRC-32 {actual:08x}, the manifest recorded {expected:08x}"
            ))
        }
        _ => {}
    }
    read_batches(path, None)
        .err()
        .map(|e| format!("does not decode: {e}"))
}
