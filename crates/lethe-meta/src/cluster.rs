//! A cluster's writer leases and live nodes. Every node of a cluster accepts requests; a
//! cluster's projects fall into shards, and one node at a time, the shard's writer, owns
//! the state of its projects that must have one owner (identity resolution, the WAL,
//! flushes, compaction, the deletion queue). It holds a lease in the shard's row, renewed
//! well within its length; when it lapses (the node died) another node takes it with the
//! next epoch.
//!
//! The epoch is the fence: once a node is a shard's writer, every transaction it commits for
//! the shard first checks that the row still holds its epoch, with a shared lock on the row
//! until it ends: a takeover locks the row exclusively, so it waits for the commit in
//! flight, while a renewal (an update of the lease's end) passes even during a long commit.
//! A writer whose lease was taken over commits nothing more.
//!
//! Each node also renews a heartbeat row while it runs, writer or not, so that the nodes
//! know how many share the shards and can spread them again when one joins.

use crate::sql::{params, Conn};
use crate::{MetaError, MetaStore, Result, RowLock};

/// One part of a cluster's projects, with a writer of its own. A single node, and a
/// cluster of one shard, write as shard 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Shard(pub u32);

impl Shard {
    /// The shard of project `project_id` when a cluster's projects fall into `count`.
    pub fn of(project_id: i64, count: u32) -> Shard {
        Shard(project_id.rem_euclid(i64::from(count.max(1))) as u32)
    }

    /// The shard's number as the metadata stores it.
    pub(crate) fn index(self) -> i64 {
        i64::from(self.0)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "shard {}", self.0)
    }
}

/// Which projects one writer holds: those of its shard, when a cluster's projects fall into
/// `count` shards (project `p` is in shard `p mod count`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardScope {
    pub shard: Shard,
    pub count: u32,
}

impl Default for ShardScope {
    fn default() -> Self {
        ShardScope::ALL
    }
}

impl ShardScope {
    /// Every project: a single node, or a cluster of one shard.
    pub const ALL: ShardScope = ShardScope {
        shard: Shard(0),
        count: 1,
    };

    /// Whether project `project_id` is in this scope's shard.
    pub fn holds(self, project_id: i64) -> bool {
        Shard::of(project_id, self.count) == self.shard
    }

    /// The SQL condition on project column `column` that [`ShardScope::holds`] is, taking
    /// the count and the shard as parameters `?n` and `?n+1` ([`ShardScope::sql_params`]).
    pub(crate) fn sql(column: &str, n: usize) -> String {
        format!("{column} % ?{n} = ?{}", n + 1)
    }

    /// The parameters of [`ShardScope::sql`]: the count and the shard.
    pub(crate) fn sql_params(self) -> [i64; 2] {
        [i64::from(self.count.max(1)), self.shard.index()]
    }
}

/// The end of a lease its writer resigned ([`MetaStore::resign_writer`]), as its row holds
/// it: the writer handed the shard over or stopped, and will not come back for it.
pub const RESIGNED: i64 = 0;

/// How long after its last heartbeat a node's row is removed.
const NODE_FORGOTTEN_MS: i64 = 3_600_000;

/// A shard's current writer, as its row names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Writer {
    pub shard: Shard,
    /// The node's id (its data dir's).
    pub node: String,
    /// Where the other nodes forward requests (`http://host:port`).
    pub address: String,
    pub epoch: i64,
    /// When the lease lapses unless renewed (ms since the epoch, by the writer's clock).
    pub lease_until: i64,
}

/// Fails with [`MetaError::Fenced`] unless `shard`'s lease still holds `epoch`; the row
/// stays locked (`lock`: the dialect's shared row lock) until the transaction ends.
pub(crate) fn hold_fence(c: &mut dyn Conn, shard: Shard, epoch: i64, lock: &str) -> Result<()> {
    let held: Option<i64> = c.query_opt(
        &format!("SELECT epoch FROM shard_writers WHERE shard = ?1{lock}"),
        params![shard.index()],
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

    /// Makes `node` `shard`'s writer until `now + lease_ms` if the lease has lapsed (or was
    /// this node's: a node restarted on its data dir), returning its new epoch; `None` while
    /// another node holds it. The store that will write then calls [`MetaStore::fence`].
    pub fn take_writer(
        &self,
        shard: Shard,
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
        if !free(&self.writer(shard)?) {
            return Ok(None);
        }
        let exclusive = self.row_lock(RowLock::Exclusive);
        self.with(|c| {
            c.transaction(|c| {
                // Waits for the commit in flight of the writer whose lease lapsed.
                let current = c.query_opt(
                    &format!("SELECT epoch FROM shard_writers WHERE shard = ?1{exclusive}"),
                    params![shard.index()],
                    |r| r.get::<i64>(0),
                )?;
                c.query_opt(
                    "INSERT INTO shard_writers (shard, node, address, epoch, lease_until)
                     VALUES (?6, ?1, ?2, ?5, ?3)
                     ON CONFLICT (shard) DO UPDATE SET node = excluded.node,
                         address = excluded.address, epoch = excluded.epoch,
                         lease_until = excluded.lease_until
                     WHERE shard_writers.lease_until < ?4 OR shard_writers.node = ?1
                     RETURNING epoch",
                    params![
                        node,
                        address,
                        now + lease_ms,
                        now,
                        current.unwrap_or(0) + 1,
                        shard.index()
                    ],
                    |r| r.get(0),
                )
            })
        })
    }

    /// From now on this store writes for `shard` (its WAL checkpoint is the shard's), and
    /// every transaction must find the shard's lease at `epoch` (this node took it) and
    /// locks it against a takeover until it ends.
    pub fn fence(&self, shard: Shard, epoch: i64) {
        *self.fence.lock().unwrap_or_else(|p| p.into_inner()) = Some((shard, epoch));
    }

    /// The shard this store writes for: its fence's, else shard 0 (a single node).
    pub fn shard(&self) -> Shard {
        self.fence
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map_or(Shard::default(), |(shard, _)| shard)
    }

    /// Extends `shard`'s lease of `epoch` to `until`; [`MetaError::Fenced`] if another node
    /// took it over.
    pub fn renew_writer(&self, shard: Shard, epoch: i64, until: i64) -> Result<()> {
        self.set_lease(shard, epoch, until)
    }

    /// Gives `shard`'s lease of `epoch` up at once (a node stopping), so that another node
    /// need not wait for it to lapse.
    pub fn resign_writer(&self, shard: Shard, epoch: i64) -> Result<()> {
        self.set_lease(shard, epoch, RESIGNED)
    }

    fn set_lease(&self, shard: Shard, epoch: i64, until: i64) -> Result<()> {
        let changed = self.with(|c| {
            c.execute(
                "UPDATE shard_writers SET lease_until = ?3 WHERE shard = ?1 AND epoch = ?2",
                params![shard.index(), epoch, until],
            )
        })?;
        match changed {
            1 => Ok(()),
            _ => Err(MetaError::Fenced(epoch)),
        }
    }

    /// The writer `shard`'s row names, if any node ever was one.
    pub fn writer(&self, shard: Shard) -> Result<Option<Writer>> {
        Ok(self.writers()?.into_iter().find(|w| w.shard == shard))
    }

    /// Every shard's writer, as the rows name them (shards no node ever wrote have none).
    pub fn writers(&self) -> Result<Vec<Writer>> {
        self.with(|c| {
            c.query_map(
                "SELECT shard, node, address, epoch, lease_until FROM shard_writers ORDER BY shard",
                &[],
                |r| {
                    Ok(Writer {
                        shard: Shard(r.get::<i64>(0)? as u32),
                        node: r.get(1)?,
                        address: r.get(2)?,
                        epoch: r.get(3)?,
                        lease_until: r.get(4)?,
                    })
                },
            )
        })
    }

    /// Records that `node` is alive until `until` and returns every node alive at `now`,
    /// itself included, in order: the nodes that share the shards. A row gone for an hour
    /// (a node whose data dir was thrown away) is removed.
    pub fn heartbeat(&self, node: &str, now: i64, until: i64) -> Result<Vec<String>> {
        self.with(|c| {
            c.execute(
                "INSERT INTO cluster_nodes (node, seen_until) VALUES (?1, ?2)
                 ON CONFLICT (node) DO UPDATE SET seen_until = excluded.seen_until",
                params![node, until],
            )?;
            c.execute(
                "DELETE FROM cluster_nodes WHERE seen_until < ?1",
                params![now - NODE_FORGOTTEN_MS],
            )?;
            c.query_map(
                "SELECT node FROM cluster_nodes WHERE seen_until >= ?1 ORDER BY node",
                params![now],
                |r| r.get(0),
            )
        })
    }

    /// Removes `node` from the live nodes at once (a node stopping), so that no node hands
    /// it a shard.
    pub fn leave(&self, node: &str) -> Result<()> {
        self.with(|c| {
            c.execute("DELETE FROM cluster_nodes WHERE node = ?1", params![node])?;
            Ok(())
        })
    }

    /// How many shards the cluster's projects fall into: `asked` (or 1) if no node recorded
    /// it yet, else what the first node recorded, which never changes (the count decides
    /// which writer holds each project's unflushed events).
    pub fn cluster_shards(&self, asked: Option<u32>) -> Result<u32> {
        self.with(|c| {
            c.execute(
                "INSERT INTO counters (name, value) VALUES ('cluster_shards', ?1)
                 ON CONFLICT (name) DO NOTHING",
                params![i64::from(asked.unwrap_or(1).max(1))],
            )
        })?;
        self.shard_count()
    }

    /// How many shards the projects fall into, as a cluster's first node recorded it (1
    /// for a single node, or before a cluster's first start).
    pub fn shard_count(&self) -> Result<u32> {
        self.with(|c| {
            let count: Option<i64> = c.query_opt(
                "SELECT value FROM counters WHERE name = 'cluster_shards'",
                &[],
                |r| r.get(0),
            )?;
            Ok(count.map_or(1, |n| n.max(1) as u32))
        })
    }
}
