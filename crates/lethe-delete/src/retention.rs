//! Retention policies become deletion tasks: once a UTC day, each policy whose last task is
//! done is previewed over everything uploaded before its cutoff (the start of the day `days`
//! whole days before today) and, if that holds events, queued as an ordinary task.

use std::collections::BTreeSet;

use lethe_event::Day;
use lethe_meta::{CatalogKind, MetaStore};
use lethe_store::{CatalogDetail, Store};

use crate::engine::preview;
use crate::spec::{Clause, TaskSpec};
use crate::DeleteError;

/// The task a policy of `days` over `event_types` (`None`: all) runs on `today`: everything
/// uploaded before the start of the day `days` before it, of the named types the project
/// has (or all it has); `None` when there are none.
pub fn retention_spec(
    store: &Store,
    project_id: i64,
    (days, event_types): (i64, Option<&[String]>),
    today: Day,
) -> Result<Option<TaskSpec>, DeleteError> {
    let live: BTreeSet<String> = store
        .live_catalog(project_id, CatalogDetail::Names)?
        .entries(CatalogKind::Event)
        .map(|(name, _)| name.clone())
        .collect();
    let types: Vec<String> = match event_types {
        Some(named) => named
            .iter()
            .filter(|t| live.contains(*t))
            .cloned()
            .collect(),
        None => live.into_iter().collect(),
    };
    if types.is_empty() {
        return Ok(None);
    }
    let which = event_types.map_or_else(|| "all events".to_string(), |named| named.join(", "));
    Ok(Some(TaskSpec {
        name: format!("Retention: {which} older than {days} days"),
        start: 0,
        end: today.plus(-days).start_ms(),
        clauses: vec![Clause::Event {
            event_types: types,
            filter: None,
        }],
        keep_blocking: false,
    }))
}

/// Checks the policies due at `now` and queues a task for each that has something to
/// delete. Returns how many tasks were queued.
pub fn queue_due_retention(
    store: &Store,
    meta: &MetaStore,
    now: i64,
) -> Result<usize, DeleteError> {
    let today = Day::of_ms(now);
    let day = today.to_string();
    let mut queued = 0;
    for policy in meta.due_retention(&day, store.scope())? {
        let rule = (policy.days, policy.event_types.as_deref());
        let task = match retention_spec(store, policy.project_id, rule, today)? {
            Some(spec) => {
                let shown = preview(store, meta, policy.project_id, &spec)?;
                (shown.totals.events_deleted > 0).then_some((spec, shown))
            }
            None => None,
        };
        let texts = task
            .as_ref()
            .map(|(spec, shown)| -> Result<_, DeleteError> {
                Ok((
                    spec.name.clone(),
                    serde_json::to_value(spec)?,
                    serde_json::to_value(shown.without_samples())?,
                ))
            })
            .transpose()?;
        let queued_task = meta.checked_retention(
            &policy,
            &day,
            texts
                .as_ref()
                .map(|(name, spec, shown)| (name.as_str(), spec, shown)),
        )?;
        queued += usize::from(queued_task.is_some());
    }
    Ok(queued)
}
