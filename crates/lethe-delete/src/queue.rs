//! The deletion queue as the engine sees it: submitting a task with the exact preview taken
//! at submission, and reading stored tasks back as typed values (a stored task that does not
//! decode is an error naming it, never a default).

use lethe_meta::{MetaStore, TaskRow};
use lethe_store::Store;
use serde::de::DeserializeOwned;

use crate::engine::{preview, Preview, Progress, TaskResult};
use crate::spec::TaskSpec;
use crate::DeleteError;

/// A stored task, decoded.
#[derive(Debug, Clone)]
pub struct QueuedTask {
    pub row: TaskRow,
    pub spec: TaskSpec,
    /// The preview taken at submission (counts only).
    pub preview: Preview,
    /// Committed progress, once it started.
    pub progress: Option<Progress>,
    /// Final counts, once completed.
    pub result: Option<TaskResult>,
}

impl QueuedTask {
    /// Decodes a stored task.
    pub fn decode(row: TaskRow) -> Result<Self, DeleteError> {
        let id = row.id;
        Ok(QueuedTask {
            spec: field(id, "spec", &row.spec)?,
            preview: field(id, "preview", &row.preview)?,
            progress: row
                .progress
                .as_deref()
                .map(|p| field(id, "progress", p))
                .transpose()?,
            result: row
                .result
                .as_deref()
                .map(|r| field(id, "result", r))
                .transpose()?,
            row,
        })
    }
}

/// Every task, newest first, decoded.
pub fn tasks(meta: &MetaStore) -> Result<Vec<QueuedTask>, DeleteError> {
    meta.tasks()?.into_iter().map(QueuedTask::decode).collect()
}

/// Previews `spec` exactly and queues it with that preview (counts only), blocking what it
/// deletes from then on if it says `keep_blocking`; the preview with its samples is returned
/// for the caller to show.
pub fn submit(
    store: &Store,
    meta: &MetaStore,
    project_id: i64,
    spec: &TaskSpec,
    actor: &str,
) -> Result<(QueuedTask, Preview), DeleteError> {
    let shown = preview(store, meta, project_id, spec)?;
    let audited = spec.redacted(&meta.deployment_keys()?.salt);
    let row = meta.submit_task(
        project_id,
        &spec.name,
        (
            (
                &serde_json::to_value(spec)?,
                &serde_json::to_value(audited)?,
            ),
            &serde_json::to_value(shown.without_samples())?,
        ),
        &spec.blocks(),
        actor,
    )?;
    if spec.keep_blocking {
        store.reload_blocks()?;
    }
    Ok((QueuedTask::decode(row)?, shown))
}

fn field<T: DeserializeOwned>(
    task: i64,
    field: &'static str,
    text: &str,
) -> Result<T, DeleteError> {
    serde_json::from_str(text).map_err(|e| DeleteError::CorruptTask {
        task,
        field,
        why: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(progress: Option<&str>) -> TaskRow {
        let spec = r#"{"name":"t","start":"2026-12-01T00:00:00Z","end":"2026-12-02T00:00:00Z","clauses":[]}"#;
        TaskRow {
            id: 7,
            project_id: 1,
            name: "t".into(),
            spec: spec.into(),
            status: lethe_meta::TaskStatus::Running,
            preview: serde_json::to_string(&Preview::default()).unwrap(),
            progress: progress.map(String::from),
            result: None,
            created_by: "admin".into(),
            created_at: 0,
            started_at: None,
            finished_at: None,
            error: None,
            attempts: 1,
        }
    }

    #[test]
    fn a_damaged_stored_field_is_an_error_naming_the_task_and_field_never_a_default() {
        let fine = QueuedTask::decode(row(Some(
            &serde_json::to_string(&Progress::default()).unwrap(),
        )));
        assert_eq!(fine.unwrap().progress, Some(Progress::default()));
        match QueuedTask::decode(row(Some("{\"partitions_total\": \"many\""))) {
            Err(
                e @ DeleteError::CorruptTask {
                    task: 7,
                    field: "progress",
                    ..
                },
            ) => {
                assert!(e.is_permanent(), "retrying cannot repair it");
            }
            other => panic!("{other:?}"),
        }
    }
}
