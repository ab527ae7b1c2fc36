//! The write-ahead log: numbered files of framed, checksummed records, each one batch of
//! resolved events of one project.
//!
//! The writer is fail-stop: after a failed write or fsync the file is marked broken and takes
//! no record until [`WalFile::repair`] has cut it back to its last fsynced length, so a record
//! that was never acknowledged can neither be replayed nor hide the ones after it.
//!
//! Replay tells a torn tail (the last record of the last file cut short by a crash: it was
//! never acknowledged) from damage anywhere else (acknowledged records are unreadable: the
//! server refuses to start unless told to salvage).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use lethe_event::Event;
use serde::{Deserialize, Serialize};

use crate::faults::{inject, IoPoint};
use crate::layout::{sync_dir, DataDir};
use crate::Result;

/// One appended batch.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WalRecord {
    pub project_id: i64,
    pub events: Vec<Arc<Event>>,
}

const HEADER: usize = 8;

/// The open WAL file being appended to.
pub(crate) struct WalFile {
    pub seq: u64,
    path: PathBuf,
    /// `None` while broken: a write or fsync failed and the file is not yet repaired.
    out: Option<BufWriter<File>>,
    /// Bytes appended, buffered or written.
    pub bytes: u64,
    /// Length at the last successful fsync: everything before it is durable.
    synced: u64,
}

impl WalFile {
    /// Creates the empty file `seq`, durably.
    pub fn create(dir: &DataDir, seq: u64) -> Result<Self> {
        let path = dir.wal_file(seq);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        file.sync_all()?;
        sync_dir(&dir.wal_dir())?;
        Ok(Self {
            seq,
            path,
            out: Some(BufWriter::with_capacity(1 << 20, file)),
            bytes: 0,
            synced: 0,
        })
    }

    /// Whether a failed write or fsync left the file unusable until repaired.
    pub fn is_broken(&self) -> bool {
        self.out.is_none()
    }

    /// Frames and buffers one record; durable only after [`WalFile::sync`].
    pub fn append(&mut self, record: &WalRecord) -> Result<()> {
        let payload = serde_json::to_vec(record)?;
        let out = self.out.as_mut().ok_or_else(broken)?;
        let crc = crc32fast::hash(&payload);
        let written = inject(IoPoint::WalWrite)
            .and_then(|()| out.write_all(&(payload.len() as u32).to_le_bytes()))
            .and_then(|()| out.write_all(&crc.to_le_bytes()))
            .and_then(|()| out.write_all(&payload));
        if let Err(e) = written {
            self.mark_broken();
            return Err(e.into());
        }
        self.bytes += (HEADER + payload.len()) as u64;
        Ok(())
    }

    /// Writes buffered records and fsyncs them: one fsync per group of requests.
    pub fn sync(&mut self) -> Result<()> {
        let out = self.out.as_mut().ok_or_else(broken)?;
        let synced = out
            .flush()
            .and_then(|()| inject(IoPoint::WalFsync))
            .and_then(|()| out.get_ref().sync_data());
        if let Err(e) = synced {
            self.mark_broken();
            return Err(e.into());
        }
        self.synced = self.bytes;
        Ok(())
    }

    /// Drops buffered bytes without writing them: after a failure they belong to records
    /// that will never be acknowledged.
    fn mark_broken(&mut self) {
        if let Some(out) = self.out.take() {
            let _ = out.into_parts();
        }
    }

    /// Cuts the file back to its last fsynced length and fsyncs that, so it holds exactly
    /// the acknowledged records; then it takes appends again. A no-op when not broken.
    pub fn repair(&mut self) -> Result<()> {
        if !self.is_broken() {
            return Ok(());
        }
        let file = OpenOptions::new().append(true).open(&self.path)?;
        file.set_len(self.synced)?;
        inject(IoPoint::WalFsync)?;
        file.sync_all()?;
        self.bytes = self.synced;
        self.out = Some(BufWriter::with_capacity(1 << 20, file));
        Ok(())
    }
}

fn broken() -> std::io::Error {
    std::io::Error::other("the WAL file is awaiting repair after a failed write")
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

/// What replay found after the intact records of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Damage {
    /// The bytes from `offset` to the end are one record cut short (or zeros): a write the
    /// crash interrupted, never acknowledged.
    TornTail { offset: u64, bytes: u64 },
    /// The record at `offset` is unreadable and more bytes follow it: acknowledged records
    /// may be lost.
    Corrupt { offset: u64, bytes: u64 },
}

/// The intact records of one file, and what follows them.
pub(crate) struct Replay {
    pub records: Vec<WalRecord>,
    /// Length of the intact prefix.
    pub valid_len: u64,
    pub damage: Option<Damage>,
}

/// Reads every intact record of one file and classifies what follows them.
pub(crate) fn read(dir: &DataDir, seq: u64) -> Result<Replay> {
    let mut data = Vec::new();
    File::open(dir.wal_file(seq))?.read_to_end(&mut data)?;
    let mut records = Vec::new();
    let mut at = 0usize;
    let damage = loop {
        let rest = &data[at..];
        if rest.is_empty() {
            break None;
        }
        let torn = Damage::TornTail {
            offset: at as u64,
            bytes: rest.len() as u64,
        };
        let corrupt = Damage::Corrupt {
            offset: at as u64,
            bytes: rest.len() as u64,
        };
        if rest.len() < HEADER || rest.iter().all(|b| *b == 0) {
            break Some(torn);
        }
        let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        let Some(payload) = rest.get(HEADER..HEADER + len) else {
            break Some(torn);
        };
        if crc32fast::hash(payload) != crc {
            let last = HEADER + len == rest.len();
            break Some(if last { torn } else { corrupt });
        }
        match serde_json::from_slice(payload) {
            Ok(record) => records.push(record),
            Err(_) => break Some(corrupt),
        }
        at += HEADER + len;
    };
    Ok(Replay {
        records,
        valid_len: at as u64,
        damage,
    })
}

/// Cuts a file to its intact prefix, durably.
pub(crate) fn truncate(dir: &DataDir, seq: u64, len: u64) -> Result<()> {
    let file = OpenOptions::new().write(true).open(dir.wal_file(seq))?;
    file.set_len(len)?;
    file.sync_all()?;
    Ok(())
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

    fn record(n: u128) -> WalRecord {
        WalRecord {
            project_id: 1,
            events: vec![Arc::new(crate::test_event(
                n,
                vec![("k".into(), "1".into())],
                vec![],
            ))],
        }
    }

    fn file_with(n: u128) -> (tempfile::TempDir, DataDir, Vec<u8>) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path());
        dir.create().unwrap();
        let mut wal = WalFile::create(&dir, 3).unwrap();
        for i in 0..n {
            wal.append(&record(i)).unwrap();
        }
        wal.sync().unwrap();
        drop(wal);
        let full = std::fs::read(dir.wal_file(3)).unwrap();
        (tmp, dir, full)
    }

    #[test]
    fn a_record_cut_short_at_the_end_is_a_torn_tail() {
        let (_tmp, dir, full) = file_with(3);
        std::fs::write(dir.wal_file(3), &full[..full.len() - 5]).unwrap();
        let replay = read(&dir, 3).unwrap();
        assert_eq!(replay.records.len(), 2);
        assert_eq!(replay.records[1].events[0].uuid, 1);
        assert!(matches!(replay.damage, Some(Damage::TornTail { .. })));
        truncate(&dir, 3, replay.valid_len).unwrap();
        let again = read(&dir, 3).unwrap();
        assert_eq!((again.records.len(), again.damage), (2, None));
        remove_through(&dir, 3).unwrap();
        assert!(list(&dir).unwrap().is_empty());
    }

    #[test]
    fn zeros_after_the_last_record_are_a_torn_tail() {
        let (_tmp, dir, mut full) = file_with(2);
        full.extend([0u8; 300]);
        std::fs::write(dir.wal_file(3), &full).unwrap();
        let replay = read(&dir, 3).unwrap();
        assert_eq!(replay.records.len(), 2);
        assert!(matches!(
            replay.damage,
            Some(Damage::TornTail { bytes: 300, .. })
        ));
    }

    #[test]
    fn a_damaged_record_with_records_after_it_is_corruption() {
        let (_tmp, dir, mut full) = file_with(4);
        let first_len = u32::from_le_bytes(full[..4].try_into().unwrap()) as usize;
        // A byte in the middle of the second record's payload.
        full[HEADER + first_len + HEADER + 10] ^= 0x40;
        std::fs::write(dir.wal_file(3), &full).unwrap();
        let replay = read(&dir, 3).unwrap();
        assert_eq!(replay.records.len(), 1);
        assert_eq!(
            replay.damage,
            Some(Damage::Corrupt {
                offset: (HEADER + first_len) as u64,
                bytes: (full.len() - HEADER - first_len) as u64
            })
        );
    }

    #[test]
    fn repair_cuts_back_to_the_last_fsync() {
        let (_tmp, dir, full) = file_with(2);
        let mut wal = WalFile {
            seq: 3,
            path: dir.wal_file(3),
            out: None,
            bytes: full.len() as u64 + 99,
            synced: full.len() as u64,
        };
        // Bytes of a record whose fsync failed.
        let mut raw = OpenOptions::new()
            .append(true)
            .open(dir.wal_file(3))
            .unwrap();
        raw.write_all(&[7u8; 99]).unwrap();
        assert!(wal.append(&record(9)).is_err(), "broken files take nothing");
        wal.repair().unwrap();
        wal.append(&record(5)).unwrap();
        wal.sync().unwrap();
        let replay = read(&dir, 3).unwrap();
        let uuids: Vec<u128> = replay.records.iter().map(|r| r.events[0].uuid).collect();
        assert_eq!((uuids, replay.damage), (vec![0, 1, 5], None));
    }
}
