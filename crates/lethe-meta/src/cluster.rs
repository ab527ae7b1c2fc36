//! A cluster's writer lease. Every node of a cluster accepts requests, and one at a time, the
//! writer, owns the state that must have one owner (identity resolution, the WAL, flushes,
//! compaction, the deletion queue). It holds a lease in one row, renewed well within its
//! length; when it lapses (the node died) another node takes it with the next epoch.
//!
//! The epoch is the fence: once a node is the writer, every transaction it commits first
//! checks that the row still holds its epoch (and locks the row, so a takeover waits for the
//! commit in flight), so a writer whose lease was taken over commits nothing more.

use crate::sql::{params, Conn};
use crate::{MetaError, MetaStore, Result};

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

/// Fails with [`MetaError::Fenced`] unless the lease still holds `epoch`; locks the row until
/// the transaction ends.
pub(crate) fn hold_fence(c: &mut dyn Conn, epoch: i64) -> Result<()> {
    let held = c.execute(
        "UPDATE cluster_writer SET epoch = epoch WHERE id = 1 AND epoch = ?1",
        params![epoch],
    )?;
    match held {
        1 => Ok(()),
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
    /// another node holds it. From then on every transaction of this store is fenced by
    /// that epoch (renewals go through another connection, so that a long statement here
    /// cannot hold them up).
    pub fn take_writer(
        &self,
        node: &str,
        address: &str,
        now: i64,
        lease_ms: i64,
    ) -> Result<Option<i64>> {
        let epoch = self.with(|c| {
            c.query_opt(
                "INSERT INTO cluster_writer (id, node, address, epoch, lease_until)
                 VALUES (1, ?1, ?2, 1, ?3)
                 ON CONFLICT (id) DO UPDATE SET node = excluded.node,
                     address = excluded.address, epoch = cluster_writer.epoch + 1,
                     lease_until = excluded.lease_until
                 WHERE cluster_writer.lease_until < ?4 OR cluster_writer.node = ?1
                 RETURNING epoch",
                params![node, address, now + lease_ms, now],
                |r| r.get(0),
            )
        })?;
        if let Some(epoch) = epoch {
            *self.fence.lock().unwrap_or_else(|p| p.into_inner()) = Some(epoch);
        }
        Ok(epoch)
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
