//! Where things live under the data dir. Every path the store writes is built here, so the
//! layout in ARCHITECTURE.md has one source of truth.

use std::path::{Path, PathBuf};

/// The data directory and its fixed sub-paths.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Wraps `root` (created by [`DataDir::create`]).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Creates the directory tree (the segment storage creates its own).
    pub fn create(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(self.wal_dir())
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

    /// The root of the local segment storage (see [`crate::Storage`]).
    pub fn segments_dir(&self) -> PathBuf {
        self.root.join("segments")
    }

    /// Where versions before the storage seam staged segment files: removed at start-up,
    /// since a crash could leave event values there.
    pub fn legacy_tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn wal_file(&self, seq: u64) -> PathBuf {
        self.wal_dir().join(format!("{seq:016}.wal"))
    }
}

/// Makes a rename or unlink in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
