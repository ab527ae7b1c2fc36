//! The WAL writer: one thread that appends resolved batches to the current WAL file, makes
//! them durable with one fsync per group, then visible in the memtable, then acknowledged.
//! Fail-stop: after a failed write or fsync every pending batch is refused and rolled back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;

use lethe_event::Event;

use crate::resolver::Ticket;
use crate::store::Inner;
use crate::wal::{WalFile, WalRecord};
use crate::{lock, Result, StoreError, Unavailable};

/// A WAL record written but not yet fsynced: its batch, events and whom to tell.
struct Pending {
    ticket: Ticket,
    project_id: i64,
    events: Vec<Arc<Event>>,
    ack: SyncSender<Result<()>>,
}

/// What the store asks of the WAL writer.
pub(crate) enum WalCommand {
    Append {
        ticket: Ticket,
        project_id: i64,
        events: Vec<Arc<Event>>,
        ack: SyncSender<Result<()>>,
    },
    /// Answers once every batch resolved in `epoch` before it is durable (an error if one
    /// failed); with `rotate`, then seals the file and freezes the memtable, answering the
    /// highest sealed sequence number.
    Barrier {
        epoch: u64,
        rotate: bool,
        ack: SyncSender<Result<u64>>,
    },
}

/// The WAL writer thread's state. Fail-stop: after a failed write or fsync every pending
/// batch is refused, the resolver rolls back what they changed (a new epoch: batches resolved
/// before the rollback are refused too), and the file is cut back to its last fsync before it
/// takes another record.
struct WalWriter<'a> {
    inner: &'a Inner,
    file: WalFile,
    appended: Vec<Pending>,
    /// Batches resolved in another epoch were rolled back and are refused.
    epoch: u64,
    durable: Arc<AtomicU64>,
    /// Why the last failure happened: the answer for refused batches.
    failure: Option<Unavailable>,
}

impl WalWriter<'_> {
    fn handle(&mut self, command: WalCommand) {
        match command {
            WalCommand::Append {
                ticket,
                project_id,
                events,
                ack,
            } => {
                if let Err(e) = self.accepting(ticket.epoch) {
                    let _ = ack.send(Err(e));
                    return;
                }
                let record = WalRecord { project_id, events };
                match self.file.append(&record) {
                    Ok(()) => self.appended.push(Pending {
                        ticket,
                        project_id,
                        events: record.events,
                        ack,
                    }),
                    Err(e) => {
                        let refusal = self.fail(e);
                        let _ = ack.send(Err(refusal));
                    }
                }
            }
            WalCommand::Barrier { epoch, rotate, ack } => {
                self.commit_appended();
                let result = self.accepting(epoch).and_then(|()| match rotate {
                    true => self.rotate(),
                    false => Ok(self.file.seq),
                });
                let _ = ack.send(result);
            }
        }
    }

    /// Ok when a batch of `epoch` can be appended: no rollback since it was resolved, and the
    /// file is whole (repaired now if a failure broke it).
    fn accepting(&mut self, epoch: u64) -> Result<()> {
        let refused = StoreError::Unavailable(self.failure.unwrap_or(Unavailable::Io));
        if epoch != self.epoch {
            return Err(refused);
        }
        if self.file.is_broken() {
            if let Err(e) = self.file.repair() {
                tracing::error!(error = %e, "WAL repair failed; ingestion stays refused");
                // The refused batch (and any resolved after it) must leave no trace.
                self.epoch = lock(&self.inner.resolver).rollback();
                return Err(refused);
            }
            tracing::warn!("WAL repaired: accepting writes again");
            self.set_refusal(None);
        }
        Ok(())
    }

    /// One fsync for every record appended since the last one, then visibility, then acks.
    fn commit_appended(&mut self) {
        let Some(last) = self.appended.last() else {
            return;
        };
        let last_batch = last.ticket.batch;
        if let Err(e) = self.file.sync() {
            self.fail(e);
            return;
        }
        let lease = &self.inner.config.ack_deadline;
        if lease.as_ref().is_some_and(|lease| !lease.allows_now()) {
            // Durable, but the lease ran out: another node may soon be the writer (a quarter
            // of the lease from now at the earliest). The group is taken back and refused.
            if let Err(e) = self.file.retract_last_group() {
                tracing::error!(error = %e, "cannot take back a WAL object written after the writer's lease ran out");
            }
            self.fail(StoreError::Unavailable(Unavailable::NotWriter));
            return;
        }
        self.durable.fetch_max(last_batch, Ordering::AcqRel);
        crate::gauge("lethe_wal_bytes", self.inner.scope).set(self.file.bytes as f64);
        let synced = std::mem::take(&mut self.appended);
        {
            let mut state = self.inner.state.write().unwrap_or_else(|p| p.into_inner());
            for p in &synced {
                // Identifications are not events: only the profile changes they made wait
                // for the next flush to reach the metadata store.
                let visible = p.events.iter().filter(|e| !e.profile_only).cloned();
                state.memtable.push(p.project_id, visible);
            }
        }
        for p in synced {
            let _ = p.ack.send(Ok(()));
        }
    }

    /// A write or fsync failed: refuses every batch not yet durable, rolls back their
    /// resolution, and tries to repair the file. Returns the refusal for the caller's batch.
    fn fail(&mut self, error: StoreError) -> StoreError {
        let reason = Unavailable::of(&error);
        tracing::error!(error = %error, "WAL write failed: refusing batches until it is repaired");
        metrics::counter!("lethe_wal_failures_total").increment(1);
        self.set_refusal(Some(reason));
        self.failure = Some(reason);
        let refused = std::mem::take(&mut self.appended);
        self.epoch = lock(&self.inner.resolver).rollback();
        if self.file.repair().is_ok() {
            self.set_refusal(None);
        }
        // Only now are the refused batches told: a client that hears 503 and reads at once
        // must find nothing of its batch (the rollback is done).
        for p in refused {
            let _ = p.ack.send(Err(StoreError::Unavailable(reason)));
        }
        StoreError::Unavailable(reason)
    }

    /// Publishes whether the WAL refuses writes (for `/healthz` and the metric).
    fn set_refusal(&self, refusal: Option<Unavailable>) {
        crate::gauge("lethe_wal_available", self.inner.scope).set(if refusal.is_some() {
            0.0
        } else {
            1.0
        });
        *lock(&self.inner.wal_refusal) = refusal;
    }

    /// Seals the current file (unless it is empty) and freezes the memtable.
    fn rotate(&mut self) -> Result<u64> {
        let sealed = self.file.seal()?;
        let mut state = self.inner.state.write().unwrap_or_else(|p| p.into_inner());
        state.memtable.freeze();
        Ok(sealed)
    }
}

/// The WAL writer thread: takes every command waiting, appends, then makes the appended
/// records durable with one fsync (group commit).
pub(crate) fn run(inner: &Inner, rx: Receiver<WalCommand>, file: WalFile) {
    let (epoch, durable) = {
        let r = lock(&inner.resolver);
        (r.epoch(), r.durable_watermark())
    };
    let mut writer = WalWriter {
        inner,
        file,
        appended: Vec::new(),
        epoch,
        durable,
        failure: None,
    };
    while let Ok(first) = rx.recv() {
        let mut commands = vec![first];
        commands.extend(rx.try_iter().take(4096));
        for command in commands {
            writer.handle(command);
        }
        writer.commit_appended();
    }
}
