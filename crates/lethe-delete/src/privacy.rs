//! User Privacy API jobs: a request names end users, who join their project's job of the
//! day the grace period ends (`schedule_erasure`); a due job becomes a deletion task whose
//! one clause erases every event of its users, at any time (`queue_due_erasures`).

use std::collections::{BTreeSet, HashMap};

use lethe_meta::{user_id_digest, ErasureJob, MetaStore, Project};
use lethe_store::Store;

use crate::engine::preview;
use crate::spec::{Clause, TaskSpec};
use crate::DeleteError;

/// The range of an erasure: all time (1970-01-01T00:00:00.000Z to 9999-12-31T23:59:59.999Z).
const ALL_TIME: (i64, i64) = (0, 253_402_300_799_999);

/// The task that carries out a job.
pub fn erasure_spec(job: &ErasureJob) -> TaskSpec {
    let users = job.requests.len();
    TaskSpec {
        name: format!(
            "User privacy erasure of {users} user{} (job of {})",
            if users == 1 { "" } else { "s" },
            job.day
        ),
        start: ALL_TIME.0,
        end: ALL_TIME.1,
        clauses: vec![Clause::Users {
            amplitude_ids: job.amplitude_ids(),
        }],
        keep_blocking: false,
    }
}

/// Locks the jobs due at `now` and queues their tasks, each with a preview of what it will
/// erase. Returns how many tasks were queued.
pub fn queue_due_erasures(store: &Store, meta: &MetaStore, now: i64) -> Result<usize, DeleteError> {
    let jobs = meta.lock_due_erasures(now, store.scope())?;
    for job in &jobs {
        let spec = erasure_spec(job);
        let preview = preview(store, meta, job.project_id, &spec)?;
        meta.queue_erasure(
            job.id,
            &spec.name,
            &serde_json::to_value(&spec)?,
            &serde_json::to_value(preview.without_samples())?,
        )?;
    }
    Ok(jobs.len())
}

/// An erasure request, parsed: which users, who asks, and how.
#[derive(Debug, Clone, Default)]
pub struct Erasure {
    pub amplitude_ids: Vec<i64>,
    pub user_ids: Vec<String>,
    /// Who the caller says asks (recorded as given).
    pub requester: String,
    /// Skip ids no project in scope knows instead of refusing the request.
    pub ignore_invalid: bool,
    /// Answer the user_ids of the job's ids.
    pub include_mapped: bool,
    /// Also keep the users' future events out (their user_ids' digests).
    pub suppress: bool,
}

/// One project's job after a request.
#[derive(Debug, Clone)]
pub struct Scheduled {
    pub project_id: i64,
    pub job: ErasureJob,
    /// The user_id of each of the job's ids, when the request asked for them.
    pub user_ids: HashMap<i64, String>,
}

/// What a request scheduled.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// One per project in scope that knows some of the users.
    pub jobs: Vec<Scheduled>,
    /// Ids no project in scope knows (skipped: the request asked to ignore them).
    pub invalid: BTreeSet<String>,
    /// When the jobs run, unless a later request moves them.
    pub run_at: i64,
}

/// Why a request scheduled nothing.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// Some ids are known in no project in scope, and the request did not ask to skip them.
    #[error("{} of the ids are not known in this project; nothing was scheduled (set ignore_invalid_id to skip them)", .0.len())]
    UnknownIds(BTreeSet<String>),
    #[error(transparent)]
    Delete(#[from] DeleteError),
}

impl From<lethe_meta::MetaError> for ScheduleError {
    fn from(e: lethe_meta::MetaError) -> Self {
        ScheduleError::Delete(e.into())
    }
}

/// Adds the users of `erasure` to the job of each project in `projects` that knows them,
/// due `grace_ms` from now (moving the job's run time there, so every request can be
/// withdrawn for the whole grace period); audited under `actor`. With `suppress`, their
/// user_ids' digests join each project's suppression list at once.
pub fn schedule_erasure(
    store: &Store,
    meta: &MetaStore,
    projects: Vec<Project>,
    erasure: &Erasure,
    grace_ms: i64,
    actor: &str,
) -> Result<Schedule, ScheduleError> {
    let shares: Vec<Share> = projects
        .into_iter()
        .map(|p| share(store, p, erasure))
        .collect();
    // An id is invalid when no project in scope knows it.
    let invalid: BTreeSet<String> = shares
        .iter()
        .map(|s| s.invalid.clone())
        .reduce(|a, b| a.intersection(&b).cloned().collect())
        .unwrap_or_default();
    if !invalid.is_empty() && !erasure.ignore_invalid {
        return Err(ScheduleError::UnknownIds(invalid));
    }
    let run_at = lethe_meta::now_ms() + grace_ms;
    let day = lethe_event::Day::of_ms(run_at).to_string();
    let mut jobs = Vec::new();
    for s in shares.iter().filter(|s| !s.amplitude_ids.is_empty()) {
        let job = meta.request_erasure(
            s.project.id,
            &day,
            run_at,
            &s.amplitude_ids,
            &erasure.requester,
            actor,
        )?;
        if erasure.suppress {
            let digests: Vec<String> = s.user_ids.iter().map(|u| user_id_digest(u)).collect();
            meta.suppress(s.project.id, &digests, actor)?;
        }
        // The user_ids of the job's ids, looked up (a scan of the identity map) only if asked.
        let user_ids = match erasure.include_mapped {
            true => store
                .known_users(s.project.id, &job.amplitude_ids(), &[])
                .by_amplitude_id
                .into_iter()
                .filter_map(|(a, u)| Some((a, u?)))
                .collect(),
            false => HashMap::new(),
        };
        jobs.push(Scheduled {
            project_id: s.project.id,
            job,
            user_ids,
        });
    }
    if erasure.suppress {
        store.reload_suppressions().map_err(DeleteError::from)?;
    }
    Ok(Schedule {
        jobs,
        invalid,
        run_at,
    })
}

/// One project's share of a request: the users it knows, and the ids it does not.
struct Share {
    project: Project,
    amplitude_ids: Vec<i64>,
    user_ids: Vec<String>,
    invalid: BTreeSet<String>,
}

fn share(store: &Store, project: Project, e: &Erasure) -> Share {
    let known = store.known_users(project.id, &e.amplitude_ids, &e.user_ids);
    let mut ids: Vec<i64> = e
        .amplitude_ids
        .iter()
        .filter(|a| known.by_amplitude_id.contains_key(a))
        .copied()
        .collect();
    ids.extend(e.user_ids.iter().filter_map(|u| known.by_user_id.get(u)));
    ids.sort_unstable();
    ids.dedup();
    let mut user_ids: Vec<String> = ids
        .iter()
        .filter_map(|a| known.by_amplitude_id.get(a).cloned().flatten())
        .chain(e.user_ids.iter().cloned())
        .collect();
    user_ids.sort();
    user_ids.dedup();
    let invalid = e
        .amplitude_ids
        .iter()
        .filter(|a| !known.by_amplitude_id.contains_key(a))
        .map(|a| a.to_string())
        .chain(
            e.user_ids
                .iter()
                .filter(|u| !known.by_user_id.contains_key(*u))
                .cloned(),
        )
        .collect();
    Share {
        project,
        amplitude_ids: ids,
        user_ids,
        invalid,
    }
}
