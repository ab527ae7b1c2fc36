//! The deletion worker (one thread of `lethe serve`): queues the User Privacy API jobs and
//! the retention tasks that are due,
//! takes tasks from the durable queue one at a time, in order (an interrupted task first),
//! retries transient failures with backoff, and records every status change.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use lethe_meta::{MetaStore, TaskRow, ValueTable};
use lethe_store::{failpoint, Store};
use serde_json::Value;

use crate::access::run_access_requests;
use crate::budget::MemoryBudget;
use crate::engine::execute;
use crate::privacy::queue_due_erasures;
use crate::queue::QueuedTask;
use crate::retention::queue_due_retention;
use crate::DeleteError;

/// Attempts before a task is marked failed (an admin can retry it).
const ATTEMPTS: u32 = 3;
const IDLE: Duration = Duration::from_secs(1);

/// Wakes the worker when a task is queued, so it need not wait for its next look.
#[derive(Clone, Default)]
pub struct QueueSignal(Arc<(Mutex<bool>, Condvar)>);

impl QueueSignal {
    /// Tells the worker that the queue changed.
    pub fn notify(&self) {
        *self.0 .0.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.0 .1.notify_all();
    }

    fn wait(&self, timeout: Duration) {
        let guard = self.0 .0.lock().unwrap_or_else(|p| p.into_inner());
        let (mut woken, _) = self
            .0
             .1
            .wait_timeout_while(guard, timeout, |woken| !*woken)
            .unwrap_or_else(|p| p.into_inner());
        *woken = false;
    }
}

/// What the worker's work may take, and how long what it hands out lasts.
#[derive(Debug, Clone, Copy)]
pub struct WorkerSettings {
    /// How long an access request's file stays downloadable.
    pub access_window: Duration,
    /// Bytes of segments a running task may hold in memory at once (see
    /// [`MemoryBudget`]).
    pub task_memory: u64,
}

/// A running worker thread.
pub struct Worker {
    stop: Arc<AtomicBool>,
    signal: QueueSignal,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts the worker thread.
    pub fn start(
        meta: Arc<MetaStore>,
        store: Store,
        signal: QueueSignal,
        settings: WorkerSettings,
    ) -> std::io::Result<Worker> {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, wake) = (stop.clone(), signal.clone());
        let thread = std::thread::Builder::new()
            .name("lethe-deletion".into())
            .spawn(move || run(&meta, &store, (&flag, &wake), settings))?;
        Ok(Worker {
            stop,
            signal,
            thread: Some(thread),
        })
    }

    /// Stops after the current step; an unfinished task resumes at the next start.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        self.signal.notify();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    meta: &MetaStore,
    store: &Store,
    (stop, signal): (&AtomicBool, &QueueSignal),
    settings: WorkerSettings,
) {
    let memory = MemoryBudget::new(settings.task_memory);
    if let Err(e) = purge_redacted(meta) {
        tracing::error!(error = %e, "cannot purge the redacted specs of completed tasks");
    }
    while !stop.load(Ordering::Acquire) {
        if let Err(e) = queue_due_erasures(store, meta, lethe_meta::now_ms()) {
            tracing::error!(error = %e, "cannot queue due privacy jobs");
        }
        if let Err(e) = queue_due_retention(store, meta, lethe_meta::now_ms()) {
            tracing::error!(error = %e, "cannot queue due retention tasks");
        }
        if let Err(e) =
            run_access_requests(store, meta, lethe_meta::now_ms(), settings.access_window)
        {
            tracing::error!(error = %e, "cannot carry out access requests");
        }
        match meta.next_task(store.scope()) {
            Ok(Some(task)) => work_on(meta, store, &memory, task, stop),
            Ok(None) => signal.wait(IDLE),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the deletion queue");
                std::thread::sleep(IDLE * 10);
            }
        }
    }
}

fn work_on(
    meta: &MetaStore,
    store: &Store,
    memory: &MemoryBudget,
    task: TaskRow,
    stop: &AtomicBool,
) {
    let id = task.id;
    let mut last_error = String::new();
    for attempt in 0..ATTEMPTS {
        if stop.load(Ordering::Acquire) {
            return;
        }
        if let Err(e) = meta.start_task(id) {
            tracing::error!(error = %e, task_id = id, "cannot mark the task running");
            return;
        }
        let row = match meta.task(id) {
            Ok(Some(row)) => row,
            Ok(None) => return,
            Err(e) => {
                // The queue cannot be read now: the next look takes the task up again.
                tracing::error!(error = %e, task_id = id, "cannot read the deletion task");
                return;
            }
        };
        let current = match QueuedTask::decode(row) {
            Ok(task) => task,
            Err(e) => {
                // A damaged stored task cannot be carried out: fail it, naming the cause.
                tracing::error!(error = %e, task_id = id, "deletion task cannot be read");
                let _ = meta.fail_task(id, &e.to_string());
                return;
            }
        };
        tracing::info!(task_id = id, attempt, "deletion task running");
        let outcome = execute(store, meta, &current, memory).and_then(|result| {
            let text = serde_json::to_value(&result)?;
            Ok((result, text))
        });
        match outcome {
            Ok((result, text)) => {
                if let Err(e) = complete(meta, &current, &text) {
                    tracing::error!(error = %e, task_id = id, "cannot record completion");
                }
                let t = &result.timings;
                tracing::info!(
                    task_id = id,
                    events_deleted = result.totals.events_deleted,
                    partitions = result.partitions,
                    segments_rewritten = result.segments_rewritten,
                    flush_ms = t.flush_ms,
                    read_ms = t.read_ms,
                    write_commit_ms = t.write_commit_ms,
                    unlink_ms = t.unlink_ms,
                    finish_ms = t.finish_ms,
                    "deletion task completed"
                );
                return;
            }
            Err(e) if e.is_permanent() => {
                // Retrying cannot help (a quarantined segment): fail now, naming the cause.
                tracing::error!(error = %e, task_id = id, "deletion task cannot complete");
                let _ = meta.fail_task(id, &e.to_string());
                return;
            }
            Err(e) => {
                last_error = e.to_string();
                tracing::warn!(error = %e, task_id = id, attempt, "deletion task attempt failed");
                std::thread::sleep(Duration::from_secs(1 << attempt));
            }
        }
    }
    let _ = meta.fail_task(
        id,
        &format!("gave up after {ATTEMPTS} attempts: {last_error}"),
    );
}

/// Records a task's completion, its predicate values (if any) redacted in its stored spec in
/// the same commit and purged from the database's files.
fn complete(meta: &MetaStore, task: &QueuedTask, result: &Value) -> Result<(), DeleteError> {
    let redacted = match task.spec.holds_values() {
        true => Some(serde_json::to_value(
            task.spec.redacted(&meta.deployment_keys()?.salt),
        )?),
        false => None,
    };
    meta.complete_task(task.row.id, result, redacted.as_ref())?;
    failpoint("delete:after_redact");
    if redacted.is_some() {
        meta.purge_deleted_rows(&[ValueTable::Tasks])?;
    }
    Ok(())
}

/// Purges `deletion_tasks` once at the start if a completed task's spec was redacted: a
/// process that died between that completion and its purge left the values' old copies in
/// the database's files (SQLite's WAL, PostgreSQL's dead tuples).
fn purge_redacted(meta: &MetaStore) -> Result<(), DeleteError> {
    let redacted = crate::queue::tasks(meta)?
        .iter()
        .any(|t| t.row.status == lethe_meta::TaskStatus::Completed && t.spec.is_redacted());
    if redacted {
        meta.purge_deleted_rows(&[ValueTable::Tasks])?;
    }
    Ok(())
}
