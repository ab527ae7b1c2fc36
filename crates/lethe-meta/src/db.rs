//! Opening either database and applying its versioned migrations: the same numbered
//! migrations in both dialects, so a schema version means the same tables in each.

use std::path::Path;

use rusqlite::Connection;

use crate::sql::{Conn, Postgres};
use crate::Result;

/// SQLite's migrations in order; the database records how many it has applied.
const SQLITE_MIGRATIONS: &[&str] = &[
    include_str!("../migrations/sqlite/0001_initial.sql"),
    include_str!("../migrations/sqlite/0002_deletion.sql"),
    include_str!("../migrations/sqlite/0003_privacy.sql"),
    include_str!("../migrations/sqlite/0004_segment_checksums.sql"),
    include_str!("../migrations/sqlite/0005_access.sql"),
    include_str!("../migrations/sqlite/0006_profile_time.sql"),
    include_str!("../migrations/sqlite/0007_project_time_zone.sql"),
    include_str!("../migrations/sqlite/0008_groups.sql"),
    include_str!("../migrations/sqlite/0009_cluster.sql"),
    include_str!("../migrations/sqlite/0010_audit_chain.sql"),
    include_str!("../migrations/sqlite/0011_deployment_keys.sql"),
    include_str!("../migrations/sqlite/0012_blocks.sql"),
    include_str!("../migrations/sqlite/0013_retention.sql"),
    include_str!("../migrations/sqlite/0014_access_requests.sql"),
    include_str!("../migrations/sqlite/0015_webhooks.sql"),
    include_str!("../migrations/sqlite/0016_segment_sha256.sql"),
    include_str!("../migrations/sqlite/0017_value_partitions.sql"),
    include_str!("../migrations/sqlite/0018_shards.sql"),
    include_str!("../migrations/sqlite/0019_cluster_nodes.sql"),
];

/// PostgreSQL's twins of the SQLite migrations, number for number.
const POSTGRES_MIGRATIONS: &[&str] = &[
    include_str!("../migrations/postgres/0001_initial.sql"),
    include_str!("../migrations/postgres/0002_deletion.sql"),
    include_str!("../migrations/postgres/0003_privacy.sql"),
    include_str!("../migrations/postgres/0004_segment_checksums.sql"),
    include_str!("../migrations/postgres/0005_access.sql"),
    include_str!("../migrations/postgres/0006_profile_time.sql"),
    include_str!("../migrations/postgres/0007_project_time_zone.sql"),
    include_str!("../migrations/postgres/0008_groups.sql"),
    include_str!("../migrations/postgres/0009_cluster.sql"),
    include_str!("../migrations/postgres/0010_audit_chain.sql"),
    include_str!("../migrations/postgres/0011_deployment_keys.sql"),
    include_str!("../migrations/postgres/0012_blocks.sql"),
    include_str!("../migrations/postgres/0013_retention.sql"),
    include_str!("../migrations/postgres/0014_access_requests.sql"),
    include_str!("../migrations/postgres/0015_webhooks.sql"),
    include_str!("../migrations/postgres/0016_segment_sha256.sql"),
    include_str!("../migrations/postgres/0017_value_partitions.sql"),
    include_str!("../migrations/postgres/0018_shards.sql"),
    include_str!("../migrations/postgres/0019_cluster_nodes.sql"),
];

/// The database behind a metadata store.
pub(crate) enum Db {
    Sqlite(Connection),
    Postgres(Box<Postgres>),
}

impl Db {
    /// The connection, ready for a new call.
    pub(crate) fn conn(&mut self) -> Result<&mut dyn Conn> {
        match self {
            Db::Sqlite(c) => {
                if !c.is_autocommit() {
                    // A panic in the middle of a transaction left it open.
                    c.execute_batch("ROLLBACK")?;
                }
                Ok(c)
            }
            Db::Postgres(c) => {
                c.recover()?;
                Ok(c.as_mut())
            }
        }
    }
}

pub(crate) fn open_sqlite(path: &Path) -> Result<Db> {
    let mut conn = Connection::open(path)?;
    // secure_delete zeroes freed pages so that deleted rows do not linger in the file;
    // synchronous=FULL because manifest commits must survive power loss. A 64 MiB page
    // cache (the default is 2 MiB) keeps a bulk import's profile and identity upserts from
    // spilling pages to the WAL in the middle of a transaction.
    conn.execute_batch(
        "PRAGMA journal_mode=WAL;
         PRAGMA cache_size=-65536;
         PRAGMA synchronous=FULL;
         PRAGMA secure_delete=ON;
         PRAGMA foreign_keys=ON;
         PRAGMA busy_timeout=5000;",
    )?;
    let applied: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in SQLITE_MIGRATIONS.iter().enumerate().skip(applied as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    let mut db = Db::Sqlite(conn);
    crate::access::digest_plain_secrets(db.conn()?)?;
    Ok(db)
}

/// The transaction-level advisory lock that makes nodes starting together migrate once.
const MIGRATION_LOCK: i64 = 0x006c_6574_686d;

pub(crate) fn open_postgres(url: &str) -> Result<Db> {
    let mut db = Db::Postgres(Box::new(Postgres::connect(url)?));
    let c = db.conn()?;
    c.transaction(|c| {
        // No NOTICE for the table that exists already at every start after the first.
        c.batch("SET LOCAL client_min_messages = warning")?;
        c.batch(&format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))?;
        c.batch("CREATE TABLE IF NOT EXISTS lethe_schema (version BIGINT NOT NULL)")?;
        let applied: i64 = c
            .query_opt("SELECT version FROM lethe_schema", &[], |r| r.get(0))?
            .unwrap_or(0);
        if applied > POSTGRES_MIGRATIONS.len() as i64 {
            return Err(crate::MetaError::Corrupt(format!(
                "the schema is at version {applied}, newer than this lethe knows"
            )));
        }
        if applied == POSTGRES_MIGRATIONS.len() as i64 {
            return Ok(());
        }
        for sql in POSTGRES_MIGRATIONS.iter().skip(applied as usize) {
            c.batch(sql)?;
        }
        c.batch("DELETE FROM lethe_schema")?;
        c.execute(
            "INSERT INTO lethe_schema (version) VALUES (?1)",
            crate::sql::params![POSTGRES_MIGRATIONS.len() as i64],
        )?;
        Ok(())
    })?;
    Ok(db)
}
