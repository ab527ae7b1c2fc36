//! The metadata store: everything lethe knows that is not event data.
//!
//! Organization, users, projects, API tokens, the catalog, identities and profiles, the
//! deletion queue and the manifest of live segments live in one database: embedded SQLite
//! in the data dir by default, or PostgreSQL for a deployment whose nodes share it. Callers
//! see only the methods of [`MetaStore`], never SQL; `sql` is the seam between the dialects.

mod access;
mod access_requests;
mod audit;
mod blocks;
mod catalog;
mod cluster;
mod db;
mod identity;
mod keys;
mod manifest;
mod privacy;
mod retention;
mod sql;
mod tasks;
mod webhooks;

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Mutex;

pub use access::{CreatedProject, NewProject, Project, ProjectRole, Role, User, TOKEN_TTL_MS};
pub use access_requests::{AccessRequest, Retiring};
pub use audit::{AuditCheck, AuditRecord};
pub use blocks::{Block, BlockKind};
pub use catalog::{CatalogDelta, CatalogEntry, CatalogIds, CatalogKind, CountDelta};
pub use cluster::{Shard, ShardScope, Writer, RESIGNED};
pub use identity::{GroupRecord, IdKind, IdentityRecord, ProfileRecord};
pub use keys::DeploymentKeys;
pub use manifest::{Commit, SegmentRecord};
pub use privacy::{
    user_id_digest, ErasureJob, ErasureRequest, JobStatus, Suppression, Unscheduled,
};
pub use retention::RetentionPolicy;
pub use tasks::{TaskRow, TaskStatus};
pub use webhooks::{Delivery, DeliveryStatus, DueDelivery, Webhook};

use db::Db;
use sql::Conn;

/// Errors at the metadata boundary.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// SQLite failed or refused a statement.
    #[error("metadata database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed or refused a statement, or could not be reached.
    #[error("metadata database (PostgreSQL): {0}")]
    Postgres(#[from] PostgresError),
    /// The database client could not run.
    #[error("metadata database unavailable: {0}")]
    Unavailable(String),
    /// Another lethe node holds this PostgreSQL database, in a way this one cannot join.
    #[error("{}", match .0 {
        NodeRole::Sole => "another lethe node is using this PostgreSQL database; \
            start every node with --cluster to run several on it",
        NodeRole::ClusterMember => "a single lethe node (started without --cluster) is using \
            this PostgreSQL database; stop it before starting cluster nodes",
    })]
    DeploymentInUse(NodeRole),
    /// This node's writer lease passed to another node: it must write nothing more.
    #[error("this node is no longer the cluster's writer (its lease of epoch {0} was taken over)")]
    Fenced(i64),
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

impl MetaError {
    /// Whether a unique constraint refused the statement (in either database).
    fn is_unique_violation(&self) -> bool {
        match self {
            MetaError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => {
                f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            }
            MetaError::Postgres(e) => {
                e.0.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
            }
            _ => false,
        }
    }

    /// Whether the database could not be reached (a call may succeed later): PostgreSQL
    /// down, restarting or unreachable, as opposed to a statement it refused.
    pub fn is_unavailable(&self) -> bool {
        match self {
            MetaError::Unavailable(_) | MetaError::Fenced(_) => true,
            MetaError::Postgres(e) => sql::connection_lost(&e.0),
            _ => false,
        }
    }
}

/// A PostgreSQL failure, shown without what the server may quote of a row: the DETAIL of a
/// constraint violation and some messages carry column values, so only the SQLSTATE and the
/// table and constraint are shown (connection failures are shown in full: they hold none).
pub struct PostgresError(tokio_postgres::Error);

impl From<tokio_postgres::Error> for MetaError {
    fn from(e: tokio_postgres::Error) -> MetaError {
        MetaError::Postgres(PostgresError(e))
    }
}

impl fmt::Display for PostgresError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_db_error() {
            Some(db) => {
                write!(f, "SQLSTATE {}", db.code().code())?;
                if let Some(table) = db.table() {
                    write!(f, " on table {table}")?;
                }
                if let Some(constraint) = db.constraint() {
                    write!(f, " (constraint {constraint})")?;
                }
                Ok(())
            }
            None => {
                // Connection, TLS and I/O failures: their causes name no row, and say why.
                write!(f, "{}", self.0)?;
                let mut cause = std::error::Error::source(&self.0);
                while let Some(e) = cause {
                    write!(f, ": {e}")?;
                    cause = e.source();
                }
                Ok(())
            }
        }
    }
}

impl fmt::Debug for PostgresError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgresError({self})")
    }
}

impl std::error::Error for PostgresError {}

/// Result type of this crate.
pub type Result<T, E = MetaError> = std::result::Result<T, E>;

/// Where a deployment keeps its metadata.
#[derive(Clone, PartialEq, Eq)]
pub enum MetaPlace {
    /// SQLite, in the data dir (`local`).
    DataDir,
    /// A PostgreSQL database (`postgres://user:password@host:port/database`).
    Postgres(String),
}

impl FromStr for MetaPlace {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<MetaPlace, String> {
        if s == "local" {
            return Ok(MetaPlace::DataDir);
        }
        if !(s.starts_with("postgres://") || s.starts_with("postgresql://")) {
            return Err("expected `local` or a postgres://user:password@host/database URL".into());
        }
        tokio_postgres::Config::from_str(s)
            .map_err(|e| format!("not a PostgreSQL URL lethe can use: {e}"))?;
        Ok(MetaPlace::Postgres(s.to_string()))
    }
}

/// Shown as `postgres://host:port/database`, without the user and password a URL may carry.
impl fmt::Debug for MetaPlace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaPlace::DataDir => f.write_str("local"),
            MetaPlace::Postgres(url) => {
                let config = tokio_postgres::Config::from_str(url).map_err(|_| fmt::Error)?;
                let hosts: Vec<String> = config
                    .get_hosts()
                    .iter()
                    .zip(config.get_ports().iter().chain(std::iter::repeat(&5432)))
                    .map(|(host, port)| match host {
                        tokio_postgres::config::Host::Tcp(name) => format!("{name}:{port}"),
                        tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
                    })
                    .collect();
                write!(
                    f,
                    "postgres://{}/{}",
                    hosts.join(","),
                    config.get_dbname().unwrap_or_default()
                )
            }
        }
    }
}

/// How strongly a `SELECT` locks the rows it reads (`MetaStore::row_lock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RowLock {
    /// Blocks only an exclusive lock (PostgreSQL's `FOR KEY SHARE`: updates still pass).
    Shared,
    /// Blocks every other lock (`FOR UPDATE`).
    Exclusive,
}

/// How a node shares its PostgreSQL database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRole {
    /// The only node: no other may start on the database.
    Sole,
    /// One of a cluster's nodes, which take turns as its writer (`cluster.rs`).
    ClusterMember,
}

/// Handle to the metadata database. One connection behind a mutex: SQLite has one writer
/// anyway, every statement here is short, and a node's writes to PostgreSQL are ordered.
pub struct MetaStore {
    db: Mutex<Db>,
    /// The shard this store writes for and the writer epoch every transaction must still
    /// hold, once this node is the shard's writer: a node whose lease was taken over then
    /// commits nothing (`cluster.rs`).
    fence: Mutex<Option<(Shard, i64)>>,
}

impl MetaStore {
    /// Opens (creating and migrating when needed) the SQLite database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self {
            db: Mutex::new(db::open_sqlite(path)?),
            fence: Mutex::new(None),
        })
    }

    /// Opens the metadata of `place`: SQLite at `sqlite_path`, or a PostgreSQL database
    /// (migrated when needed).
    pub fn open_at(place: &MetaPlace, sqlite_path: &Path) -> Result<Self> {
        match place {
            MetaPlace::DataDir => Self::open(sqlite_path),
            MetaPlace::Postgres(url) => Ok(Self {
                db: Mutex::new(db::open_postgres(url)?),
                fence: Mutex::new(None),
            }),
        }
    }

    /// Makes this process the only lethe node on its PostgreSQL database, or one of its
    /// cluster's, for as long as it runs (a session lock, released when the process dies).
    /// SQLite needs nothing: the data dir's lock already makes its process the only one.
    pub fn claim_node(&self, role: NodeRole) -> Result<()> {
        let mut db = self.db.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *db {
            Db::Sqlite(_) => Ok(()),
            Db::Postgres(pg) => pg.claim_node(role),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut dyn Conn) -> Result<T>) -> Result<T> {
        let mut db = self.db.lock().unwrap_or_else(|p| p.into_inner());
        f(db.conn()?)
    }

    /// Runs `f` in one transaction; on a cluster's writer, only while it holds the lease.
    fn tx<T>(&self, f: impl FnOnce(&mut dyn Conn) -> Result<T>) -> Result<T> {
        let fence = *self.fence.lock().unwrap_or_else(|p| p.into_inner());
        let shared = self.row_lock(RowLock::Shared);
        self.with(|c| {
            c.transaction(|c| {
                if let Some((shard, epoch)) = fence {
                    cluster::hold_fence(c, shard, epoch, shared)?;
                }
                f(c)
            })
        })
    }

    /// The clause that locks the rows a `SELECT` reads until the transaction ends, in this
    /// database's dialect (SQLite has one writer at a time: nothing to add).
    fn row_lock(&self, lock: RowLock) -> &'static str {
        match (&*self.db.lock().unwrap_or_else(|p| p.into_inner()), lock) {
            (Db::Sqlite(_), _) => "",
            (Db::Postgres(_), RowLock::Shared) => " FOR KEY SHARE",
            (Db::Postgres(_), RowLock::Exclusive) => " FOR UPDATE",
        }
    }

    /// The database's own consistency check: empty when it is sound, else what it found
    /// (page numbers and structures, never row contents). SQLite checks its file;
    /// PostgreSQL keeps its own files consistent, with checksums where the operator enabled
    /// them, so there is nothing for lethe to check there.
    pub fn integrity_problems(&self) -> Result<Vec<String>> {
        let mut db = self.db.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *db {
            Db::Sqlite(_) => {
                let found = db
                    .conn()?
                    .query_map("PRAGMA integrity_check", &[], |r| r.get::<String>(0))?;
                Ok(found.into_iter().filter(|line| line != "ok").collect())
            }
            Db::Postgres(_) => Ok(Vec::new()),
        }
    }

    /// Every `table.column` of text whose current rows hold `needle`: how `lethe scan` proves
    /// a value absent from a PostgreSQL deployment's metadata, whose files it cannot read
    /// (on SQLite it searches the file itself, freed pages included).
    pub fn text_columns_holding(&self, needle: &str) -> Result<Vec<String>> {
        let mut db = self.db.lock().unwrap_or_else(|p| p.into_inner());
        let (columns, find) = match &*db {
            Db::Sqlite(_) => (
                "SELECT m.name, p.name FROM sqlite_master m JOIN pragma_table_info(m.name) p
                 WHERE m.type = 'table' AND p.type = 'TEXT' ORDER BY 1, 2",
                "instr",
            ),
            Db::Postgres(_) => (
                // A partitioned table's rows are searched through it, not again per partition.
                "SELECT table_name::text, column_name::text FROM information_schema.columns
                 WHERE table_schema = current_schema() AND data_type IN ('text', 'character varying')
                   AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.relname = table_name
                       AND c.relnamespace = to_regnamespace(table_schema) AND c.relispartition)
                 ORDER BY 1, 2",
                "strpos",
            ),
        };
        let c = db.conn()?;
        let columns = c.query_map(columns, &[], |r| {
            Ok((r.get::<String>(0)?, r.get::<String>(1)?))
        })?;
        let mut holding = Vec::new();
        for (table, column) in columns {
            let sql =
                format!("SELECT COUNT(*) FROM \"{table}\" WHERE {find}(\"{column}\", ?1) > 0");
            let rows: i64 = c.query_row(&sql, sql::params![needle], |r| r.get(0))?;
            if rows > 0 {
                holding.push(format!("{table}.{column}"));
            }
        }
        Ok(holding)
    }

    /// Makes the rows that erasures deleted ([`MetaStore::forget_users`]) unrecoverable from
    /// the database's files, as [`MetaStore::purge_deleted_rows`] does for whole tables, but
    /// only where they were: on PostgreSQL the partitions that held them are rewritten, not
    /// the tables. What it purged is then forgotten; one interrupted is done again by the
    /// next call, which the worker makes at every task's end.
    pub fn purge_erased(&self) -> Result<()> {
        let pending: Vec<String> = self.with(|c| {
            c.query_map(
                "SELECT relation FROM purge_pending ORDER BY relation",
                &[],
                |r| r.get(0),
            )
        })?;
        if pending.is_empty() {
            return Ok(());
        }
        // Names from the catalog (`tableoid::regclass`), checked before they are spelled
        // into a statement that takes no parameters.
        if let Some(odd) = pending
            .iter()
            .find(|r| !r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        {
            return Err(MetaError::Corrupt(format!(
                "purge_pending names {odd:?}, which is no table of lethe's"
            )));
        }
        self.rewrite_files(&pending)?;
        self.tx(|tx| {
            for relation in &pending {
                tx.execute(
                    "DELETE FROM purge_pending WHERE relation=?1",
                    sql::params![relation],
                )?;
            }
            Ok(())
        })
    }

    /// The expression a `RETURNING` clause of a statement on `table` uses to name the table
    /// each row was in: on PostgreSQL its partition.
    fn relation_of(&self, table: &str) -> String {
        match &*self.db.lock().unwrap_or_else(|p| p.into_inner()) {
            Db::Sqlite(_) => format!("'{table}'"),
            Db::Postgres(_) => "tableoid::regclass::text".to_string(),
        }
    }

    /// Makes rows deleted or changed in `tables` unrecoverable from the database's files.
    /// SQLite zeroes freed pages (`secure_delete`); this truncates its WAL, which still holds
    /// copies. PostgreSQL keeps deleted and updated rows as dead tuples in place: the tables
    /// are rewritten (`VACUUM FULL`, which costs a pass over each). PostgreSQL's own WAL,
    /// archives, replicas and backups remain the operator's part (README).
    pub fn purge_deleted_rows(&self, tables: &[ValueTable]) -> Result<()> {
        if tables.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = tables.iter().map(|t| t.name()).collect();
        self.rewrite_files(&names)
    }

    /// Leaves no copy of deleted rows of `relations` (tables or partitions, names checked by
    /// the caller) in the database's files: SQLite's WAL is truncated, PostgreSQL rewrites
    /// the relations.
    fn rewrite_files(&self, relations: &[impl AsRef<str>]) -> Result<()> {
        let mut db = self.db.lock().unwrap_or_else(|p| p.into_inner());
        let sql = match &*db {
            Db::Sqlite(_) => "PRAGMA wal_checkpoint(TRUNCATE)".to_string(),
            Db::Postgres(_) => {
                let names: Vec<&str> = relations.iter().map(AsRef::as_ref).collect();
                format!("VACUUM FULL {}", names.join(", "))
            }
        };
        db.conn()?.batch(&sql)
    }
}

/// The metadata tables whose rows can hold event values: what a deletion purges whole. (An
/// erasure's identities and profiles are purged where they were: [`MetaStore::purge_erased`].)
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ValueTable {
    /// Current user properties.
    Profiles,
    /// Current group properties.
    GroupProfiles,
    /// Deletion tasks: a task's `where` names values until the task completes.
    Tasks,
}

impl ValueTable {
    fn name(self) -> &'static str {
        match self {
            ValueTable::Profiles => "profiles",
            ValueTable::GroupProfiles => "group_profiles",
            ValueTable::Tasks => "deletion_tasks",
        }
    }
}

/// Current time in epoch milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metadata_place_parses_and_shows_no_credentials() {
        assert_eq!("local".parse::<MetaPlace>(), Ok(MetaPlace::DataDir));
        let place: MetaPlace = "postgres://lethe:s3cret@db.internal:5433/events"
            .parse()
            .unwrap();
        assert_eq!(format!("{place:?}"), "postgres://db.internal:5433/events");
        assert!("mysql://db/events".parse::<MetaPlace>().is_err());
        assert!("postgres://db:notaport/x".parse::<MetaPlace>().is_err());
    }
}
