//! The metadata store: everything lethe knows that is not event data.
//!
//! Organization, users, projects, API tokens, the catalog, identities and profiles, and the
//! manifest of live segments live in one embedded SQLite database. This crate is the seam
//! where a shared PostgreSQL store can later take SQLite's place: callers see only the
//! methods of [`MetaStore`], never SQL.

mod access;
mod audit;
mod catalog;
mod db;
mod identity;
mod manifest;
mod privacy;
mod tasks;

use std::path::Path;
use std::sync::Mutex;

pub use access::{CreatedProject, NewProject, Project, ProjectRole, Role, User, TOKEN_TTL_MS};
pub use audit::AuditRecord;
pub use catalog::{CatalogDelta, CatalogEntry, CatalogIds, CatalogKind, CountDelta};
pub use identity::{GroupRecord, IdKind, IdentityRecord, ProfileRecord};
pub use manifest::{Commit, SegmentRecord};
pub use privacy::{
    user_id_digest, ErasureJob, ErasureRequest, JobStatus, Suppression, Unscheduled,
};
pub use tasks::{TaskRow, TaskStatus};

/// Errors at the metadata boundary.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The database failed or refused a statement.
    #[error("metadata database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A unique name (email, project) is taken.
    #[error("{0} already exists")]
    Conflict(&'static str),
    /// A manifest commit found that a segment it replaces is no longer live.
    #[error("manifest changed underneath the commit: segment {0} is no longer live")]
    StaleManifest(String),
    /// The change would leave the organization without an active administrator.
    #[error("the organization must keep at least one active administrator")]
    LastAdmin,
    /// Stored data could not be decoded.
    #[error("corrupt metadata: {0}")]
    Corrupt(String),
}

/// Result type of this crate.
pub type Result<T, E = MetaError> = std::result::Result<T, E>;

/// Handle to the metadata database. One writer connection behind a mutex: SQLite has one
/// writer anyway, and every statement here is short.
pub struct MetaStore {
    conn: Mutex<rusqlite::Connection>,
}

impl MetaStore {
    /// Opens (creating and migrating when needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = db::open(path)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut rusqlite::Connection) -> Result<T>) -> Result<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn)
    }

    /// SQLite's own consistency check of the database file: empty when it is sound, else
    /// what it found (page numbers and structures, never row contents).
    pub fn integrity_problems(&self) -> Result<Vec<String>> {
        self.with(|c| {
            let found = db::all_rows(c, "PRAGMA integrity_check", [], |r| r.get::<_, String>(0))?;
            Ok(found.into_iter().filter(|line| line != "ok").collect())
        })
    }

    /// Truncates SQLite's own WAL so that rows deleted with `secure_delete` leave no copy there.
    pub fn checkpoint_truncate(&self) -> Result<()> {
        self.with(|c| {
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })
    }
}

/// Current time in epoch milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
