//! Preview and execution of a deletion task.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow_array::RecordBatch;
use lethe_event::{Day, Event};
use lethe_meta::{
    CatalogDelta, CatalogIds, CatalogKind, CountDelta, MetaError, MetaStore, SegmentRecord,
    ValueTable,
};
use lethe_store::tail::Layout;
use lethe_store::{
    events_to_batch, failpoint, parallel_map, parallel_on, parallel_reads, Output,
    PartitionRewrite, PropertyKind, Segment, Store, StoreError,
};
use serde::{Deserialize, Serialize};

use crate::budget::MemoryBudget;
use crate::matcher::{Applied, Counts, Matcher, PropertyIds, Sample};
use crate::queue::QueuedTask;
use crate::spec::{Clause, TaskSpec};
use crate::DeleteError;

/// What a rewrite touches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RewriteStats {
    pub partitions: u64,
    pub segments: u64,
    pub bytes: u64,
}

/// The verification screen: exact counts, what will be rewritten, a few matching events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Preview {
    pub totals: Counts,
    pub clauses: Vec<Counts>,
    pub rewrite: RewriteStats,
    pub samples: Vec<Sample>,
}

impl Preview {
    /// The preview a submitted task keeps (in its row and the audit): counts only. Samples
    /// carry event uuids, which must not outlive the events the task deletes.
    pub fn without_samples(&self) -> Preview {
        Preview {
            samples: Vec::new(),
            ..self.clone()
        }
    }

    fn add(&mut self, a: &Applied) {
        self.totals += a.totals;
        for (mine, theirs) in self.clauses.iter_mut().zip(&a.clauses) {
            *mine += *theirs;
        }
        let room = 5usize.saturating_sub(self.samples.len());
        self.samples.extend(a.samples.iter().take(room).cloned());
    }
}

/// A running task's durable progress; committed with each partition.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub partitions_total: u64,
    pub partitions_done: BTreeSet<String>,
    pub segments_rewritten: u64,
    pub bytes_rewritten: u64,
    pub bytes_written: u64,
    pub totals: Counts,
    pub clauses: Vec<Counts>,
    /// The segments the committed partitions retired, and those they made live.
    #[serde(default)]
    pub segments_retired: Vec<SegmentDigest>,
    #[serde(default)]
    pub segments_created: Vec<SegmentDigest>,
}

/// A segment a task retired or created, as its receipt names it: which object, and the
/// CRC-32 and SHA-256 of its bytes (no value of any event).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentDigest {
    pub id: String,
    pub day: String,
    pub rows: i64,
    pub bytes: i64,
    pub crc32: Option<u32>,
    /// SHA-256 of its bytes, hex: the content hash an auditor can check a file against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl From<&SegmentRecord> for SegmentDigest {
    fn from(record: &SegmentRecord) -> Self {
        SegmentDigest {
            id: record.id.clone(),
            day: record.day.clone(),
            rows: record.rows,
            bytes: record.bytes,
            crc32: record.crc32,
            sha256: record.sha256.clone(),
        }
    }
}

/// A completed task's final counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    #[serde(flatten)]
    pub totals: Counts,
    pub clauses: Vec<Counts>,
    pub bytes_reclaimed: u64,
    pub bytes_rewritten: u64,
    pub segments_rewritten: u64,
    pub partitions: u64,
    pub profiles_changed: u64,
    /// End users whose events, profile and id mappings were erased (privacy jobs).
    #[serde(default)]
    pub users_erased: u64,
    /// Whether the final counts equal the preview taken at submission.
    pub matches_preview: bool,
    /// Where the time of the last run went.
    pub timings: Timings,
}

/// Milliseconds spent per phase in one run of a task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Flushing unflushed events before planning.
    pub flush_ms: u64,
    /// Reading and decoding the segments that hold a target (summed over the segments read
    /// side by side).
    pub read_ms: u64,
    /// Matching and building the rewritten columns (summed likewise).
    pub filter_ms: u64,
    /// Encoding, writing, fsyncing the new segments and committing the manifest (summed over
    /// the segments and partitions rewritten side by side).
    pub write_commit_ms: u64,
    /// Waiting until the superseded files are unlinked (summed likewise).
    pub unlink_ms: u64,
    /// Profiles, SQLite checkpoint.
    pub finish_ms: u64,
}

fn ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

/// Catalog name → id maps of one project.
struct Ids {
    types: CatalogIds,
    event_props: CatalogIds,
    user_props: CatalogIds,
    group_props: CatalogIds,
}

impl Ids {
    fn load(meta: &MetaStore, project_id: i64) -> Result<Self, DeleteError> {
        Ok(Self {
            types: meta.catalog_ids(project_id, CatalogKind::Event)?,
            event_props: meta.catalog_ids(project_id, CatalogKind::EventProperty)?,
            user_props: meta.catalog_ids(project_id, CatalogKind::UserProperty)?,
            group_props: meta.catalog_ids(project_id, CatalogKind::GroupProperty)?,
        })
    }

    fn matcher(&self, spec: &TaskSpec) -> Matcher {
        let ids = PropertyIds {
            event: &self.event_props,
            user: &self.user_props,
            group: &self.group_props,
        };
        Matcher::new(spec, ids)
    }

    /// Catalog counts removed by `a`.
    fn delta(&self, a: &Applied) -> CatalogDelta {
        let mut counts = Vec::new();
        for (t, n) in &a.types_removed {
            if let Some(id) = self.types.get(t) {
                counts.push(CountDelta {
                    kind: CatalogKind::Event,
                    id: *id,
                    count: -n,
                    seen: None,
                });
            }
        }
        for (column, n) in &a.columns_removed {
            if let Some((kind, id)) = column_id(column) {
                counts.push(CountDelta {
                    kind,
                    id,
                    count: -n,
                    seen: None,
                });
            }
        }
        let pairs = a
            .pairs_removed
            .iter()
            .filter_map(|((t, column), n)| Some((*self.types.get(t)?, column_id(column)?.1, -n)))
            .collect();
        CatalogDelta { counts, pairs }
    }
}

fn column_id(column: &str) -> Option<(CatalogKind, i64)> {
    let (kind, id) = PropertyKind::of_column(column)?;
    Some((kind.catalog(), id))
}

/// Exact counts of what `spec` would remove now, reading only the columns it needs. No side
/// effects.
pub fn preview(
    store: &Store,
    meta: &MetaStore,
    project_id: i64,
    spec: &TaskSpec,
) -> Result<Preview, DeleteError> {
    let ids = Ids::load(meta, project_id)?;
    let matcher = ids.matcher(spec);
    let snapshot = store.snapshot(project_id, Some((spec.start, spec.end)));
    let mut preview = Preview {
        clauses: vec![Counts::default(); spec.clauses.len()],
        ..Default::default()
    };
    let mut days = BTreeSet::new();
    let candidates: Vec<&Arc<Segment>> = snapshot
        .segments
        .iter()
        .filter(|s| matcher.may_match(&s.record, &ids.types))
        .collect();
    // Reads wait on storage more than they compute: several in flight, whatever the cores.
    let matched = parallel_reads(candidates, |segment| -> Result<_, DeleteError> {
        if !may_hold_targets(segment, &matcher)? {
            return Ok((segment, Vec::new()));
        }
        let batches = segment.read_batches(Some(&matcher.preview_columns(&segment.record)))?;
        let applied = batches
            .iter()
            .map(|b| matcher.apply(b))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((segment, applied))
    });
    for result in matched {
        let (segment, applied) = result?;
        let mut touched = false;
        for a in &applied {
            touched |= a.changes_anything();
            preview.add(a);
        }
        if touched {
            preview.rewrite.segments += 1;
            preview.rewrite.bytes += segment.record.bytes as u64;
            days.insert(segment.record.day.clone());
            if preview.samples.len() < 5 {
                add_samples(&mut preview, segment, &matcher)?;
            }
        }
    }
    // Events not yet flushed become one segment per day when the task starts.
    let mut by_day: BTreeMap<String, Vec<Arc<Event>>> = BTreeMap::new();
    for e in snapshot.memtable {
        by_day
            .entry(Day::of_ms(e.server_upload_time).to_string())
            .or_default()
            .push(e);
    }
    for (day, events) in by_day {
        let (batch, matcher) = memtable_batch(&events, spec)?;
        let applied = matcher.apply(&batch)?;
        if applied.changes_anything() {
            preview.add(&applied);
            preview.rewrite.segments += 1;
            days.insert(day);
        }
    }
    preview.rewrite.partitions = days.len() as u64;
    Ok(preview)
}

/// Takes samples from a segment that matches (reading its `uuid` column too).
fn add_samples(
    preview: &mut Preview,
    segment: &Segment,
    matcher: &Matcher,
) -> Result<(), DeleteError> {
    for batch in segment.read_batches(Some(&matcher.columns()))? {
        let applied = matcher.apply(&batch)?;
        let room = 5usize.saturating_sub(preview.samples.len());
        preview
            .samples
            .extend(applied.samples.into_iter().take(room));
    }
    Ok(())
}

/// Unflushed events as segment columns, with ids local to this batch.
fn memtable_batch(
    events: &[Arc<Event>],
    spec: &TaskSpec,
) -> Result<(RecordBatch, Matcher), DeleteError> {
    let local = |keys: &mut dyn Iterator<Item = &String>| -> CatalogIds {
        let set: BTreeSet<&String> = keys.collect();
        set.into_iter()
            .enumerate()
            .map(|(i, k)| (k.clone(), i as i64))
            .collect()
    };
    let event_ids = local(
        &mut events
            .iter()
            .flat_map(|e| e.event_properties.iter().map(|(k, _)| k)),
    );
    let user_ids = local(
        &mut events
            .iter()
            .flat_map(|e| e.user_properties.iter().map(|(k, _)| k)),
    );
    let group_ids = local(
        &mut events
            .iter()
            .flat_map(|e| e.group_properties.iter().map(|(k, _)| k)),
    );
    let batch = events_to_batch(events, &event_ids, &user_ids, &group_ids, Layout::default())?;
    let ids = PropertyIds {
        event: &event_ids,
        user: &user_ids,
        group: &group_ids,
    };
    Ok((batch, Matcher::new(spec, ids)))
}

/// Carries out a task to the end, resuming from its committed progress; the segments it
/// rewrites hold at most `memory` at once.
pub fn execute(
    store: &Store,
    meta: &MetaStore,
    queued: &QueuedTask,
    memory: &MemoryBudget,
) -> Result<TaskResult, DeleteError> {
    let (task, spec, submitted) = (&queued.row, &queued.spec, &queued.preview);
    if spec.is_redacted() {
        // Its values are gone (it completed): run, it would compare against nothing.
        return Err(DeleteError::Redacted(task.id));
    }
    let mut progress = queued.progress.clone().unwrap_or_else(|| Progress {
        clauses: vec![Counts::default(); spec.clauses.len()],
        ..Default::default()
    });
    let mut timings = Timings::default();
    let started = Instant::now();
    let erased_users = erased_users(spec);
    if !erased_users.is_empty() {
        // First, so that their later events get new ids; then the flush moves every event
        // resolved before into segments, where the rewrite finds it.
        store.forget_users(task.project_id, &erased_users)?;
    }
    store.flush()?;
    timings.flush_ms = ms(started);
    failpoint("delete:after_flush");
    let ids = Ids::load(meta, task.project_id)?;
    let matcher = ids.matcher(spec);
    let days: BTreeSet<String> = store
        .snapshot(task.project_id, Some((spec.start, spec.end)))
        .segments
        .iter()
        .filter(|s| matcher.may_match(&s.record, &ids.types))
        .map(|s| s.record.day.clone())
        .collect();
    let remaining: Vec<String> = days
        .difference(&progress.partitions_done)
        .cloned()
        .collect();
    progress.partitions_total = (progress.partitions_done.len() + remaining.len()) as u64;
    let run = TaskRun {
        store,
        ids: &ids,
        matcher: &matcher,
        task_id: task.id,
        project_id: task.project_id,
        clauses: spec.clauses.len(),
        done: Mutex::new((progress, timings)),
        memory,
    };
    // Each day commits on its own: one that fails (a damaged segment) leaves the others'
    // work committed, which a retry skips, and the task reports the first failure.
    let rewritten = parallel_on(PARTITIONS_IN_FLIGHT, remaining, |day| {
        run.rewrite_partition(&day)
    });
    rewritten.into_iter().collect::<Result<(), DeleteError>>()?;
    let (progress, mut timings) = run.done.into_inner().unwrap_or_else(|p| p.into_inner());
    let finishing = Instant::now();
    if !erased_users.is_empty() {
        // An access request's copy of their data goes with it.
        crate::access::forget_access_files(store, meta, task.project_id, &erased_users)?;
    }
    // An object no manifest names that is still there (held by a reader, or whose deletion
    // failed; this task's, an earlier attempt's, a compaction's) may hold what the task
    // removed: it goes before `completed`.
    store.await_no_leftovers(task.project_id)?;
    let (profiles_changed, changed_tables) = unset_profile_keys(store, task.project_id, spec)?;
    meta.purge_deleted_rows(&changed_tables)?;
    // The erased users' identities and profiles (this task's, or an interrupted one's), where
    // they were.
    meta.purge_erased()?;
    timings.finish_ms = ms(finishing);
    failpoint("delete:before_complete");
    Ok(TaskResult {
        totals: progress.totals,
        clauses: progress.clauses.clone(),
        bytes_reclaimed: progress
            .bytes_rewritten
            .saturating_sub(progress.bytes_written),
        bytes_rewritten: progress.bytes_rewritten,
        segments_rewritten: progress.segments_rewritten,
        partitions: progress.partitions_total,
        profiles_changed,
        users_erased: erased_users.len() as u64,
        matches_preview: progress.totals == submitted.totals
            && progress.clauses == submitted.clauses,
        timings,
    })
}

/// What matching did to one candidate segment: its new contents, if it changes, and what
/// they remove.
struct Rebuilt {
    output: Option<Output>,
    /// What the new contents remove, counted (one part per re-encoded part of the segment).
    removed: Removed,
    read_ms: u64,
    filter_ms: u64,
}

/// What the rewrite of segments removes: the task's counts and the catalog's.
struct Removed {
    catalog: CatalogDelta,
    totals: Counts,
    clauses: Vec<Counts>,
}

impl Removed {
    fn new(clauses: usize) -> Self {
        Removed {
            catalog: CatalogDelta::default(),
            totals: Counts::default(),
            clauses: vec![Counts::default(); clauses],
        }
    }

    fn add(&mut self, ids: &Ids, applied: &Applied) {
        self.merge(Removed {
            catalog: ids.delta(applied),
            totals: applied.totals,
            clauses: applied.clauses.clone(),
        });
    }

    fn merge(&mut self, other: Removed) {
        self.catalog.counts.extend(other.catalog.counts);
        self.catalog.pairs.extend(other.catalog.pairs);
        self.totals += other.totals;
        for (mine, theirs) in self.clauses.iter_mut().zip(other.clauses) {
            *mine += theirs;
        }
    }
}

/// Matches one segment and plans its new contents: untouched (no match), column-level (no
/// row removed), or row-group-level (only the row groups that lose rows are re-encoded).
/// Matching reads only the columns it needs; a segment that changes is then opened whole,
/// checked against its checksum, to be rewritten.
fn rebuild(
    segment: &Arc<Segment>,
    ids: &Ids,
    matcher: &Matcher,
    columns: &[String],
    clauses: usize,
) -> Result<Rebuilt, StoreError> {
    let arrow = StoreError::Arrow;
    let mut out = Rebuilt {
        output: None,
        removed: Removed::new(clauses),
        read_ms: 0,
        filter_ms: 0,
    };
    let reading = Instant::now();
    if !may_hold_targets(segment, matcher)? {
        out.read_ms += ms(reading);
        return Ok(out);
    }
    let (batches, opened) = segment.read_to_match(columns)?;
    let Some(projected) = whole(batches).map_err(arrow)? else {
        return Ok(out);
    };
    out.read_ms += ms(reading);
    let filtering = Instant::now();
    let applied = matcher.apply(&projected).map_err(arrow)?;
    if !applied.changes_anything() {
        out.filter_ms += ms(filtering);
        return Ok(out);
    }
    let reading = Instant::now();
    let source = match opened {
        Some(source) => source,
        None => segment.open()?,
    };
    let opened_ms = ms(reading);
    out.read_ms += opened_ms;
    if applied.totals.events_deleted == 0 {
        let (drop, replace) = applied.column_changes(&projected).map_err(arrow)?;
        out.output = Some(Output::Columns {
            source,
            drop,
            replace,
        });
        out.removed.add(ids, &applied);
        out.filter_ms += ms(filtering).saturating_sub(opened_ms);
        return Ok(out);
    }
    let reading = Instant::now();
    let groups = source.read_row_groups(|rows| applied.touches(rows))?;
    let group_read_ms = ms(reading);
    let mut replaced = BTreeMap::new();
    for (index, batch) in groups {
        let part = matcher.apply(&batch).map_err(arrow)?;
        replaced.insert(index, part.rewrite(&batch).map_err(arrow)?);
        out.removed.add(ids, &part);
    }
    out.output = Some(Output::RowGroups { source, replaced });
    out.filter_ms += ms(filtering).saturating_sub(group_read_ms + opened_ms);
    out.read_ms += group_read_ms;
    Ok(out)
}

/// Whether a segment can hold the task's end users (always, for a task that names none).
fn may_hold_targets(segment: &Segment, matcher: &Matcher) -> Result<bool, StoreError> {
    match matcher.amplitude_ids() {
        Some(ids) => segment.may_hold_users(&ids),
        None => Ok(true),
    }
}

/// How many partitions a task rewrites side by side. A partition's steps (reading, writing,
/// committing, waiting for the old objects' deletion) wait on storage and the metadata more
/// than they compute, from a bucket above all.
const PARTITIONS_IN_FLIGHT: usize = 4;

/// How many times a partition is planned again when a compaction retired one of its
/// segments between the plan and the commit.
const PLAN_ATTEMPTS: usize = 5;

/// What the partitions of one run of a task share.
struct TaskRun<'a> {
    store: &'a Store,
    ids: &'a Ids,
    matcher: &'a Matcher,
    task_id: i64,
    project_id: i64,
    clauses: usize,
    /// The progress committed so far, and where the time went.
    done: Mutex<(Progress, Timings)>,
    /// What the segments being rewritten hold, over every partition in flight.
    memory: &'a MemoryBudget,
}

impl TaskRun<'_> {
    /// Rewrites one partition: reads its live segments, stages the new contents of each that
    /// holds a target as soon as they are built, and commits them with the task's progress in
    /// one transaction; then waits until the old objects are deleted.
    fn rewrite_partition(&self, day: &str) -> Result<(), DeleteError> {
        let mut attempt = 1;
        loop {
            let rewrite = self.store.begin_rewrite(self.project_id, day);
            let plan = self.stage_partition(&rewrite)?;
            let mut shared = self.done.lock().unwrap_or_else(|p| p.into_inner());
            let (progress, timings) = &mut *shared;
            let mut after = progress.clone();
            after.totals += plan.removed.totals;
            for (mine, theirs) in after.clauses.iter_mut().zip(plan.removed.clauses) {
                *mine += theirs;
            }
            after.segments_rewritten += plan.segments;
            after.bytes_rewritten += plan.bytes;
            after.partitions_done.insert(day.to_string());
            after.bytes_written += rewrite.staged_bytes();
            after
                .segments_retired
                .extend(rewrite.retiring().iter().map(SegmentDigest::from));
            after
                .segments_created
                .extend(rewrite.staged().iter().map(SegmentDigest::from));
            let progress_json = serde_json::to_string(&after)?;
            let committing = Instant::now();
            match rewrite.commit(plan.removed.catalog, Some((self.task_id, progress_json))) {
                Err(StoreError::Meta(MetaError::StaleManifest(_))) if attempt < PLAN_ATTEMPTS => {
                    attempt += 1;
                }
                Err(e) => return Err(e.into()),
                Ok(retired) => {
                    *progress = after;
                    timings.read_ms += plan.read_ms;
                    timings.filter_ms += plan.filter_ms;
                    timings.write_commit_ms += plan.write_ms + ms(committing);
                    drop(shared);
                    let unlinking = Instant::now();
                    self.store.await_unlinked(retired)?;
                    let waited = ms(unlinking);
                    self.done
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .1
                        .unlink_ms += waited;
                    failpoint("delete:after_partition");
                    return Ok(());
                }
            }
        }
    }

    /// Matches the partition's live segments that may hold a target, on every core, and
    /// stages the new contents of each that does as soon as they are built, so that a
    /// segment's bytes are let go before the partition's next segments are read. Each
    /// segment first reserves its size from the task's memory budget.
    fn stage_partition(&self, rewrite: &PartitionRewrite) -> Result<PartitionPlan, DeleteError> {
        let candidates: Vec<&Arc<Segment>> = rewrite
            .live()
            .iter()
            .filter(|s| self.matcher.may_match(&s.record, &self.ids.types))
            .collect();
        let columns = self.matcher.columns();
        let staged = parallel_map(candidates, |segment| {
            let _held = self.memory.reserve(segment.record.bytes.max(0) as u64);
            let Rebuilt {
                output,
                removed,
                read_ms,
                filter_ms,
            } = rebuild(segment, self.ids, self.matcher, &columns, self.clauses)?;
            let mut plan = PartitionPlan {
                read_ms,
                filter_ms,
                ..PartitionPlan::new(self.clauses)
            };
            if let Some(output) = output {
                let writing = Instant::now();
                rewrite.stage(output)?;
                plan.write_ms = ms(writing);
                plan.segments = 1;
                plan.bytes = segment.record.bytes as u64;
                plan.removed = removed;
            }
            Ok::<_, StoreError>(plan)
        });
        let mut plan = PartitionPlan::new(self.clauses);
        for one in staged {
            plan.merge(one?);
        }
        Ok(plan)
    }
}

/// What a partition's rewrite staged, or one segment's: what it removes, what it rewrote, and
/// where the time went (summed over its segments).
struct PartitionPlan {
    removed: Removed,
    segments: u64,
    bytes: u64,
    read_ms: u64,
    filter_ms: u64,
    write_ms: u64,
}

impl PartitionPlan {
    fn new(clauses: usize) -> Self {
        PartitionPlan {
            removed: Removed::new(clauses),
            segments: 0,
            bytes: 0,
            read_ms: 0,
            filter_ms: 0,
            write_ms: 0,
        }
    }

    fn merge(&mut self, other: PartitionPlan) {
        self.removed.merge(other.removed);
        self.segments += other.segments;
        self.bytes += other.bytes;
        self.read_ms += other.read_ms;
        self.filter_ms += other.filter_ms;
        self.write_ms += other.write_ms;
    }
}

/// A segment's batches as one (a segment's batches share its schema).
fn whole(batches: Vec<RecordBatch>) -> Result<Option<RecordBatch>, arrow_schema::ArrowError> {
    match batches.first() {
        None => Ok(None),
        Some(first) => arrow_select::concat::concat_batches(&first.schema(), &batches).map(Some),
    }
}

/// The end users a task erases.
fn erased_users(spec: &TaskSpec) -> Vec<i64> {
    spec.clauses
        .iter()
        .filter_map(|c| match c {
            Clause::Users { amplitude_ids } => Some(amplitude_ids.iter().copied()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// Unsets the user and group properties of `from_profiles` clauses in current user profiles
/// and groups; returns how many profiles and groups changed.
/// Unsets the task's profile keys (clauses with `from_profiles`) in every user and group of
/// the project; returns how many changed, and the metadata tables whose rows changed.
fn unset_profile_keys(
    store: &Store,
    project_id: i64,
    spec: &TaskSpec,
) -> Result<(u64, Vec<ValueTable>), DeleteError> {
    let (mut user_keys, mut group_keys) = (Vec::new(), Vec::new());
    for clause in &spec.clauses {
        match clause {
            Clause::UserProperty {
                properties,
                from_profiles: true,
                ..
            } => user_keys.extend(properties.iter().cloned()),
            Clause::GroupProperty {
                properties,
                from_profiles: true,
                ..
            } => group_keys.extend(properties.iter().cloned()),
            _ => {}
        }
    }
    if user_keys.is_empty() && group_keys.is_empty() {
        return Ok((0, Vec::new()));
    }
    let (mut changed, mut tables) = (0, Vec::new());
    if !user_keys.is_empty() {
        let users = store.remove_profile_keys(project_id, &user_keys)?;
        changed += users;
        tables.extend((users > 0).then_some(ValueTable::Profiles));
    }
    if !group_keys.is_empty() {
        let groups = store.remove_group_keys(project_id, &group_keys)?;
        changed += groups;
        tables.extend((groups > 0).then_some(ValueTable::GroupProfiles));
    }
    // Events already in the WAL carry the old profiles: flush them so no replay restores them.
    store.flush()?;
    Ok((changed as u64, tables))
}
