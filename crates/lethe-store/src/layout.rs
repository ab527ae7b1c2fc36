//! Where things live under the data dir. Every path the store writes is built here, so the
//! layout in ARCHITECTURE.md has one source of truth.

use std::path::{Path, PathBuf};

/// The data directory and its fixed sub-paths.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

/// The place of one segment file: `segments/<project>/<day>/<id>.parquet`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentLocation {
    pub project_id: i64,
    pub day: String,
    pub id: String,
}

impl DataDir {
    /// Wraps `root` (created by [`DataDir::create`]).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Creates the directory tree.
    pub fn create(&self) -> std::io::Result<()> {
        for dir in [self.wal_dir(), self.segments_dir(), self.tmp_dir()] {
            std::fs::create_dir_all(dir)?;
        }
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The SQLite metadata database.
    pub fn meta_db(&self) -> PathBuf {
        self.root.join("meta.sqlite")
    }

    /// The lock file that keeps a second server off this data dir.
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("lethe.lock")
    }

    pub fn wal_dir(&self) -> PathBuf {
        self.root.join("wal")
    }

    pub fn segments_dir(&self) -> PathBuf {
        self.root.join("segments")
    }

    /// Files being written; anything here at start-up is a leftover of a crash.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn wal_file(&self, seq: u64) -> PathBuf {
        self.wal_dir().join(format!("{seq:016}.wal"))
    }

    pub fn segment_file(&self, loc: &SegmentLocation) -> PathBuf {
        self.segments_dir()
            .join(loc.project_id.to_string())
            .join(&loc.day)
            .join(format!("{}.parquet", loc.id))
    }
}

/// Makes a rename or unlink in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
