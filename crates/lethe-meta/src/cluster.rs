//! A cluster's writer lease. Every node of a cluster accepts requests, and one at a time, the
//! writer, owns the state that must have one owner (identity resolution, the WAL, flushes,
//! compaction, the deletion queue). It holds a lease in one row, renewed well within its
//! length; when it lapses (the node died) another node takes it with the next epoch.
//!
//! The epoch is the fence: once a node is the writer, every transaction it commits first
//! checks that the row still holds its epoch, with a shared lock on the row until it ends: a
//! takeover locks the row exclusively, so it waits for the commit in flight, while a renewal
//! (an update of the lease's end) passes even during a long commit. A writer whose lease was
//! taken over commits nothing more.

use crate::sql::{params, Conn};
use crate::{MetaError, MetaStore, Result, RowLock};

/// The current writer, as the row names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Writer {
    /// The node's id (its data dir's).
    pub node: String,
    /// Where the other nodes forward requests (`http://host:port`).
    pub address: String,
    pub epoch: i64,
    /// When the lease lapses unless renewed (ms since the epoch, by the writer's clock).
    pub lease_until: i64,
}

/// Fails with [`MetaError::Fenced`] unless the lease still holds `epoch`; the row stays
/// locked (`lock`: the dialect's shared row lock) until the transaction ends.
pub(crate) fn hold_fence(c: &mut dyn Conn, epoch: i64, lock: &str) -> Result<()> {
    let held: Option<i64> = c.query_opt(
        &format!("SELECT epoch FROM cluster_writer WHERE id = 1{lock}"),
        &[],
        |r| r.get(0),
    )?;
    match held {
        Some(current) if current == epoch => Ok(()),
        _ => Err(MetaError::Fenced(epoch)),
    }
}

impl MetaStore {
    /// The secret a cluster's nodes share (to trust what another node forwards): the
    /// first node's `fresh` one.
    pub fn cluster_secret(&self, fresh: &str) -> Result<String> {
        self.with(|c| {
            c.execute(
                "INSERT INTO cluster_secret (id, token) VALUES (1, ?1) ON CONFLICT (id) DO NOTHING",
                params![fresh],
            )?;
            c.query_row("SELECT token FROM cluster_secret WHERE id = 1", &[], |r| {
                r.get(0)
            })
        })
    }

    /// Makes `node` the writer until `now + lease_ms` if the lease has lapsed (or was this
    /// node's: a node restarted on its data dir), returning its new epoch; `None` while
    /// another node holds it. The store that will write then calls [`MetaStore::fence`].
    pub fn take_writer(
        &self,
        node: &str,
        address: &str,
        now: i64,
        lease_ms: i64,
    ) -> Result<Option<i64>> {
        let free = |writer: &Option<Writer>| {
            writer
                .as_ref()
                .is_none_or(|w| w.lease_until < now || w.node == node)
        };
        // A look first, without a lock: a held lease costs the writer's commits nothing.
        if !free(&self.writer()?) {
            return Ok(None);
        }
        let exclusive = self.row_lock(RowLock::Exclusive);
        self.with(|c| {
            c.transaction(|c| {
                // Waits for the commit in flight of the writer whose lease lapsed.
                let current = c.query_opt(
                    &format!("SELECT epoch FROM cluster_writer WHERE id = 1{exclusive}"),
                    &[],
                    |r| r.get::<i64>(0),
                )?;
                c.query_opt(
                    "INSERT INTO cluster_writer (id, node, address, epoch, lease_until)
                     VALUES (1, ?1, ?2, ?5, ?3)
                     ON CONFLICT (id) DO UPDATE SET node = excluded.node,
                         address = excluded.address, epoch = excluded.epoch,
                         lease_until = excluded.lease_until
                     WHERE cluster_writer.lease_until < ?4 OR cluster_writer.node = ?1
                     RETURNING epoch",
                    params![node, address, now + lease_ms, now, current.unwrap_or(0) + 1],
                    |r| r.get(0),
                )
            })
        })
    }

    /// From now on every transaction of this store must find the lease at `epoch` (this
    /// node took it), and locks it against a takeover until it ends.
    pub fn fence(&self, epoch: i64) {
        *self.fence.lock().unwrap_or_else(|p| p.into_inner()) = Some(epoch);
    }

    /// Extends the writer's lease of `epoch` to `until`; [`MetaError::Fenced`] if another
    /// node took it over.
    pub fn renew_writer(&self, epoch: i64, until: i64) -> Result<()> {
        self.set_lease(epoch, until)
    }

    /// Gives the lease of `epoch` up at once (a node stopping), so that another node need
    /// not wait for it to lapse.
    pub fn resign_writer(&self, epoch: i64) -> Result<()> {
        self.set_lease(epoch, 0)
    }

    fn set_lease(&self, epoch: i64, until: i64) -> Result<()> {
        let changed = self.with(|c| {
            c.execute(
                "UPDATE cluster_writer SET lease_until = ?2 WHERE id = 1 AND epoch = ?1",
                params![epoch, until],
            )
        })?;
        match changed {
            1 => Ok(()),
            _ => Err(MetaError::Fenced(epoch)),
        }
    }

    /// The writer the row names, if any node ever was one.
    pub fn writer(&self) -> Result<Option<Writer>> {
        self.with(|c| {
            c.query_opt(
                "SELECT node, address, epoch, lease_until FROM cluster_writer WHERE id = 1",
                &[],
                |r| {
                    Ok(Writer {
                        node: r.get(0)?,
                        address: r.get(1)?,
                        epoch: r.get(2)?,
                        lease_until: r.get(3)?,
                    })
                },
            )
        })
    }
}
