//! The write-ahead log: numbered files of framed, checksummed records, each one batch of
//! resolved events of one project. A record is acknowledged only after fsync; a torn record
//! at the end of a file (a crash mid-write) was never acknowledged and is ignored on replay.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};

use std::sync::Arc;

use lethe_event::Event;
use serde::{Deserialize, Serialize};

use crate::layout::{sync_dir, DataDir};
use crate::Result;

/// One appended batch.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WalRecord {
    pub project_id: i64,
    pub events: Vec<Arc<Event>>,
}

/// The open WAL file being appended to.
pub(crate) struct WalFile {
    pub seq: u64,
    out: BufWriter<File>,
    pub bytes: u64,
}

impl WalFile {
    pub fn create(dir: &DataDir, seq: u64) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.wal_file(seq))?;
        sync_dir(&dir.wal_dir())?;
        Ok(Self {
            seq,
            out: BufWriter::with_capacity(1 << 20, file),
            bytes: 0,
        })
    }

    /// Frames and buffers one record; durable only after [`WalFile::sync`].
    pub fn append(&mut self, record: &WalRecord) -> Result<()> {
        let payload = serde_json::to_vec(record)?;
        let crc = crc32fast::hash(&payload);
        self.out.write_all(&(payload.len() as u32).to_le_bytes())?;
        self.out.write_all(&crc.to_le_bytes())?;
        self.out.write_all(&payload)?;
        self.bytes += 8 + payload.len() as u64;
        Ok(())
    }

    /// Writes buffered records and fsyncs them: one fsync per group of requests.
    pub fn sync(&mut self) -> Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_data()?;
        Ok(())
    }
}

/// Sequence numbers of the WAL files present, ascending.
pub(crate) fn list(dir: &DataDir) -> Result<Vec<u64>> {
    let mut seqs: Vec<u64> = std::fs::read_dir(dir.wal_dir())?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".wal")?.parse().ok()
        })
        .collect();
    seqs.sort_unstable();
    Ok(seqs)
}

/// Reads every intact record of one file.
pub(crate) fn read(dir: &DataDir, seq: u64) -> Result<Vec<WalRecord>> {
    let mut data = Vec::new();
    File::open(dir.wal_file(seq))?.read_to_end(&mut data)?;
    let mut records = Vec::new();
    let mut at = 0usize;
    while at + 8 <= data.len() {
        let len = u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(data[at + 4..at + 8].try_into().expect("4 bytes"));
        let Some(payload) = data.get(at + 8..at + 8 + len) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        records.push(serde_json::from_slice(payload)?);
        at += 8 + len;
    }
    Ok(records)
}

/// Deletes the WAL files whose records are all in committed segments.
pub(crate) fn remove_through(dir: &DataDir, checkpoint: u64) -> Result<()> {
    for seq in list(dir)?.into_iter().filter(|s| *s <= checkpoint) {
        std::fs::remove_file(dir.wal_file(seq))?;
    }
    sync_dir(&dir.wal_dir())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_tail_is_ignored_and_intact_records_survive() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path());
        dir.create().unwrap();
        let mut wal = WalFile::create(&dir, 3).unwrap();
        for n in 0..3 {
            let record = WalRecord {
                project_id: 1,
                events: vec![Arc::new(crate::test_event(
                    n,
                    vec![("k".into(), "1".into())],
                    vec![],
                ))],
            };
            wal.append(&record).unwrap();
        }
        wal.sync().unwrap();
        drop(wal);
        let full = std::fs::read(dir.wal_file(3)).unwrap();
        std::fs::write(dir.wal_file(3), &full[..full.len() - 5]).unwrap();
        let records = read(&dir, 3).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].events[0].uuid, 1);
        remove_through(&dir, 3).unwrap();
        assert!(list(&dir).unwrap().is_empty());
    }
}
