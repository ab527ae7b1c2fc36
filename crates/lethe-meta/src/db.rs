//! Opening the database and applying versioned migrations.

use std::path::Path;

use rusqlite::Connection;

use crate::Result;

/// Migrations in order; the database records how many it has applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_initial.sql"),
    include_str!("../migrations/0002_deletion.sql"),
    include_str!("../migrations/0003_privacy.sql"),
    include_str!("../migrations/0004_segment_checksums.sql"),
    include_str!("../migrations/0005_access.sql"),
    include_str!("../migrations/0006_profile_time.sql"),
    include_str!("../migrations/0007_project_time_zone.sql"),
    include_str!("../migrations/0008_groups.sql"),
];

pub(crate) fn open(path: &Path) -> Result<Connection> {
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
    migrate(&mut conn)?;
    crate::access::digest_plain_secrets(&conn)?;
    Ok(conn)
}

/// Every row of a query, mapped; the statement is cached.
pub(crate) fn all_rows<T>(
    c: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    map: impl FnMut(&rusqlite::Row) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    let mut st = c.prepare_cached(sql)?;
    let rows = st.query_map(params, map)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let applied: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}
