//! Matching a task against segment columns: which rows it deletes, which property cells it
//! clears, what that counts as, and the rewritten batch. One implementation serves the
//! preview (on projected columns) and the executor (on whole segments), so the counts shown
//! before submission are the counts of what the rewrite does.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, BooleanArray, FixedSizeBinaryArray, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use arrow_schema::ArrowError;
use serde::{Deserialize, Serialize};

use lethe_meta::CatalogIds;
use lethe_store::{base_column, tail, PropertyKind};

use crate::predicate::{Cell, Predicate, Subject, Test};
use crate::spec::{Clause, TaskSpec};

/// What a task (or one clause) removes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub events_deleted: u64,
    pub event_property_values_removed: u64,
    pub user_property_values_removed: u64,
    #[serde(default)]
    pub group_property_values_removed: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Self) {
        self.events_deleted += o.events_deleted;
        self.event_property_values_removed += o.event_property_values_removed;
        self.user_property_values_removed += o.user_property_values_removed;
        self.group_property_values_removed += o.group_property_values_removed;
    }
}

impl Counts {
    /// Counts `n` property values of `kind` removed.
    fn add_values(&mut self, kind: PropertyKind, n: u64) {
        match kind {
            PropertyKind::Event => self.event_property_values_removed += n,
            PropertyKind::User => self.user_property_values_removed += n,
            PropertyKind::Group => self.group_property_values_removed += n,
        }
    }
}

/// Catalog ids of property keys, per kind, in one id space.
#[derive(Debug, Clone, Copy)]
pub struct PropertyIds<'a> {
    pub event: &'a CatalogIds,
    pub user: &'a CatalogIds,
    pub group: &'a CatalogIds,
}

impl PropertyIds<'_> {
    fn of(&self, kind: PropertyKind) -> &CatalogIds {
        match kind {
            PropertyKind::Event => self.event,
            PropertyKind::User => self.user,
            PropertyKind::Group => self.group,
        }
    }
}

/// A matching event, as the verification screen shows it (no property values).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    pub uuid: String,
    pub event_type: String,
    pub server_upload_time: String,
}

/// One clause, resolved: what it removes, and on which events (its `where`).
struct Rule {
    target: Target,
    filter: Option<Filter>,
}

/// What a clause removes.
enum Target {
    Events(HashSet<String>),
    Users(HashSet<i64>),
    Properties {
        /// Catalog ids of the keys (in their own columns or the kind's tail column).
        keys: Vec<i64>,
        kind: PropertyKind,
        types: Option<HashSet<String>>,
    },
}

/// A clause's value predicate, resolved: where its property's cells are, and the test.
struct Filter {
    source: Source,
    test: Test,
    /// Whether only an event with the property can pass (not a negation).
    needs_property: bool,
}

/// Where a predicate's property is stored.
enum Source {
    /// A property key: its own column or the kind's tail; no id when this id space has
    /// never seen the key, so no event holds it.
    Property { kind: PropertyKind, id: Option<i64> },
    /// A built-in field's column.
    Column(String),
}

impl Filter {
    fn new(predicate: &Predicate, ids: PropertyIds) -> Filter {
        let property = |kind: PropertyKind, name: &String| Source::Property {
            kind,
            id: ids.of(kind).get(name).copied(),
        };
        Filter {
            source: match &predicate.property {
                Subject::Event(name) => property(PropertyKind::Event, name),
                Subject::User(name) => property(PropertyKind::User, name),
                Subject::BuiltIn(name) => Source::Column(name.clone()),
            },
            test: Test::new(predicate),
            needs_property: !predicate.op.matches_unset(),
        }
    }

    /// The columns the predicate reads.
    fn columns(&self) -> Vec<String> {
        match &self.source {
            Source::Property { kind, id: Some(id) } => kind.columns_of(*id).to_vec(),
            Source::Property { id: None, .. } => Vec::new(),
            Source::Column(name) => vec![name.clone()],
        }
    }

    /// Whether an event of the segment can pass, from its manifest record alone.
    fn may_pass(&self, record: &lethe_meta::SegmentRecord) -> bool {
        match &self.source {
            _ if !self.needs_property => true,
            Source::Property { kind, id } => id.is_some_and(|id| kind.ids(record).contains(&id)),
            Source::Column(_) => true,
        }
    }

    /// Which rows of `batch` pass.
    fn passing(&self, batch: &RecordBatch) -> Result<Vec<bool>, ArrowError> {
        let rows = batch.num_rows();
        let (cells, json) = match &self.source {
            Source::Property { kind, id: Some(id) } => (kind.values(batch, *id)?, true),
            Source::Property { id: None, .. } => (None, true),
            Source::Column(name) => match batch.column_by_name(name) {
                None => (None, false),
                Some(_) => (Some(column::<StringArray>(batch, name)?.clone()), false),
            },
        };
        Ok((0..rows)
            .map(|r| {
                let cell = cells
                    .as_ref()
                    .filter(|c| c.is_valid(r))
                    .map(|c| match json {
                        true => Cell::Json(c.value(r)),
                        false => Cell::Text(c.value(r)),
                    });
                self.test.passes(cell)
            })
            .collect())
    }
}

/// A task resolved against one id space (the catalog's, or a memtable batch's).
pub struct Matcher {
    from: i64,
    to: i64,
    rules: Vec<Rule>,
}

/// The effect of a task on one batch.
#[derive(Default)]
pub struct Applied {
    pub clauses: Vec<Counts>,
    pub totals: Counts,
    /// Rows to delete.
    deleted: Vec<bool>,
    /// Key column (`e_<id>`, whether the segment gives the key its own column or keeps it
    /// in the tail column) → rows whose value is cleared (rows not deleted).
    cleared: BTreeMap<String, Vec<bool>>,
    /// Catalog counts removed: per event type, per property column, per (type, column).
    pub types_removed: HashMap<String, i64>,
    pub columns_removed: HashMap<String, i64>,
    pub pairs_removed: HashMap<(String, String), i64>,
    pub samples: Vec<Sample>,
}

impl Applied {
    /// Whether the batch changes at all.
    pub fn changes_anything(&self) -> bool {
        self.totals != Counts::default()
    }
}

const SAMPLES: usize = 5;

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T, ArrowError> {
    batch
        .column_by_name(name)
        .and_then(|a| a.as_any().downcast_ref::<T>())
        .ok_or_else(|| ArrowError::SchemaError(format!("segment lacks column {name}")))
}

impl Matcher {
    /// Resolves `spec` with the property ids of one id space; names without an id cannot
    /// occur in it and are skipped.
    pub fn new(spec: &TaskSpec, ids: PropertyIds) -> Self {
        let rules = spec
            .clauses
            .iter()
            .map(|c| Rule {
                target: Self::target(c, ids),
                filter: c.filter().map(|p| Filter::new(p, ids)),
            })
            .collect();
        Self {
            from: spec.start,
            to: spec.end,
            rules,
        }
    }

    fn target(clause: &Clause, ids: PropertyIds) -> Target {
        let set = |v: &Vec<String>| v.iter().cloned().collect::<HashSet<_>>();
        let (kind, properties, event_types) = match clause {
            Clause::Event { event_types, .. } => return Target::Events(set(event_types)),
            Clause::Users { amplitude_ids } => {
                return Target::Users(amplitude_ids.iter().copied().collect())
            }
            Clause::EventProperty {
                properties,
                event_types,
                ..
            } => (PropertyKind::Event, properties, event_types),
            Clause::UserProperty {
                properties,
                event_types,
                ..
            } => (PropertyKind::User, properties, event_types),
            Clause::GroupProperty {
                properties,
                event_types,
                ..
            } => (PropertyKind::Group, properties, event_types),
        };
        Target::Properties {
            keys: properties
                .iter()
                .filter_map(|n| ids.of(kind).get(n).copied())
                .collect(),
            kind,
            types: event_types.as_ref().map(set),
        }
    }

    /// The columns counting needs in one segment: no `uuid` (samples come separately), and
    /// no upload time when the whole segment lies inside the range.
    pub fn preview_columns(&self, record: &lethe_meta::SegmentRecord) -> Vec<String> {
        let inside = record.min_time >= self.from && record.max_time < self.to;
        self.columns()
            .into_iter()
            .filter(|c| c != base_column::UUID && !(inside && c == base_column::SERVER_UPLOAD_TIME))
            .collect()
    }

    /// The columns matching needs, with `uuid` for samples.
    pub fn columns(&self) -> Vec<String> {
        let mut cols: Vec<String> = [
            base_column::UUID,
            base_column::EVENT_TYPE,
            base_column::SERVER_UPLOAD_TIME,
        ]
        .map(String::from)
        .to_vec();
        for r in &self.rules {
            let needed = match &r.target {
                Target::Properties { keys, kind, .. } => {
                    keys.iter().flat_map(|id| kind.columns_of(*id)).collect()
                }
                Target::Users(_) => vec![base_column::AMPLITUDE_ID.to_string()],
                Target::Events(_) => Vec::new(),
            };
            let filtered = r.filter.iter().flat_map(Filter::columns);
            for c in needed.into_iter().chain(filtered) {
                if !cols.contains(&c) {
                    cols.push(c);
                }
            }
        }
        cols
    }

    /// The end users whose events the task deletes, if it names any: segments whose bloom
    /// filters rule them all out need not be read.
    pub fn amplitude_ids(&self) -> Option<Vec<i64>> {
        let ids: Vec<i64> = self
            .rules
            .iter()
            .filter_map(|r| match &r.target {
                Target::Users(ids) => Some(ids.iter().copied()),
                _ => None,
            })
            .flatten()
            .collect();
        (!ids.is_empty()).then_some(ids)
    }

    /// Whether a segment can hold a target, from its manifest record alone.
    pub fn may_match(&self, record: &lethe_meta::SegmentRecord, type_ids: &CatalogIds) -> bool {
        if record.max_time < self.from || record.min_time >= self.to {
            return false;
        }
        let has_type = |types: &HashSet<String>| {
            types.iter().any(|t| {
                type_ids
                    .get(t)
                    .is_some_and(|id| record.event_types.contains(id))
            })
        };
        self.rules.iter().any(|r| {
            let target = match &r.target {
                Target::Events(types) => has_type(types),
                Target::Users(ids) => !ids.is_empty(),
                Target::Properties { keys, kind, types } => {
                    keys.iter().any(|id| kind.ids(record).contains(id))
                        && types.as_ref().is_none_or(has_type)
                }
            };
            target && r.filter.as_ref().is_none_or(|f| f.may_pass(record))
        })
    }

    /// Matches the task against one batch.
    /// Without a `server_upload_time` column every row counts as in range (see
    /// [`Matcher::preview_columns`]); without `uuid` no samples are taken.
    pub fn apply(&self, batch: &RecordBatch) -> Result<Applied, ArrowError> {
        let types = column::<StringArray>(batch, base_column::EVENT_TYPE)?;
        let times =
            column::<TimestampMillisecondArray>(batch, base_column::SERVER_UPLOAD_TIME).ok();
        let rows = batch.num_rows();
        let in_range: Vec<bool> = (0..rows)
            .map(|r| times.is_none_or(|t| (self.from..self.to).contains(&t.value(r))))
            .collect();
        let mut a = Applied {
            clauses: vec![Counts::default(); self.rules.len()],
            deleted: vec![false; rows],
            ..Default::default()
        };
        // Every predicate reads the events as stored, before any clause changes them.
        let passing: Vec<Option<Vec<bool>>> = self
            .rules
            .iter()
            .map(|rule| rule.filter.as_ref().map(|f| f.passing(batch)).transpose())
            .collect::<Result<_, _>>()?;
        let candidate =
            |i: usize, r: usize| in_range[r] && passing[i].as_ref().is_none_or(|passes| passes[r]);
        for (i, (rule, counts)) in self.rules.iter().zip(a.clauses.iter_mut()).enumerate() {
            let hit: Box<dyn Fn(usize) -> bool> = match &rule.target {
                Target::Events(set) => Box::new(|r| set.contains(types.value(r))),
                Target::Users(ids) => {
                    let users = column::<Int64Array>(batch, base_column::AMPLITUDE_ID)?;
                    Box::new(|r| ids.contains(&users.value(r)))
                }
                Target::Properties { .. } => continue,
            };
            for r in (0..rows).filter(|r| candidate(i, *r) && hit(*r)) {
                counts.events_deleted += 1;
                a.deleted[r] = true;
            }
        }
        for (i, (rule, counts)) in self.rules.iter().zip(a.clauses.iter_mut()).enumerate() {
            let Target::Properties {
                keys,
                kind,
                types: only,
            } = &rule.target
            else {
                continue;
            };
            for id in keys {
                let Some(values) = kind.values(batch, *id)? else {
                    continue;
                };
                let cleared = a
                    .cleared
                    .entry(kind.column(*id))
                    .or_insert_with(|| vec![false; rows]);
                for (r, cleared) in cleared.iter_mut().enumerate() {
                    let hit = candidate(i, r)
                        && !a.deleted[r]
                        && values.is_valid(r)
                        && only.as_ref().is_none_or(|t| t.contains(types.value(r)));
                    if hit {
                        counts.add_values(*kind, 1);
                        *cleared = true;
                    }
                }
            }
        }
        a.count_removed(batch, types)?;
        if let (Some(times), Ok(uuids)) = (
            times,
            column::<FixedSizeBinaryArray>(batch, base_column::UUID),
        ) {
            a.collect_samples(types, times, uuids);
        }
        Ok(a)
    }
}

impl Applied {
    fn count_removed(
        &mut self,
        batch: &RecordBatch,
        types: &StringArray,
    ) -> Result<(), ArrowError> {
        let deleted_rows: Vec<usize> = (0..self.deleted.len())
            .filter(|r| self.deleted[*r])
            .collect();
        self.totals.events_deleted = deleted_rows.len() as u64;
        for r in &deleted_rows {
            *self
                .types_removed
                .entry(types.value(*r).to_string())
                .or_default() += 1;
        }
        // Catalog counts of every value removed: all values of deleted rows (in key columns
        // and in tail columns), and the cleared ones of other rows.
        let (columns_removed, pairs_removed) = (&mut self.columns_removed, &mut self.pairs_removed);
        let mut note = |name: &str, r: usize| {
            if let Some((PropertyKind::Event, _)) = PropertyKind::of_column(name) {
                *pairs_removed
                    .entry((types.value(r).to_string(), name.to_string()))
                    .or_default() += 1;
            }
            match columns_removed.get_mut(name) {
                Some(n) => *n += 1,
                None => {
                    columns_removed.insert(name.to_string(), 1);
                }
            }
        };
        let schema = batch.schema();
        for (i, field) in schema.fields().iter().enumerate() {
            if PropertyKind::of_column(field.name()).is_none() {
                continue;
            }
            let values = batch.column(i);
            for r in deleted_rows.iter().filter(|r| values.is_valid(**r)) {
                note(field.name(), *r);
            }
        }
        for kind in PropertyKind::ALL {
            let Ok(tail) = column::<StringArray>(batch, kind.tail_column()) else {
                continue;
            };
            for r in deleted_rows.iter().filter(|r| tail.is_valid(**r)) {
                let entries = tail::entries(tail.value(*r)).map_err(ArrowError::ParseError)?;
                for (id, _) in entries {
                    note(&kind.column(id), *r);
                }
            }
        }
        for (name, cleared) in &self.cleared {
            let Some((kind, _)) = PropertyKind::of_column(name) else {
                continue;
            };
            let rows: Vec<usize> = (0..cleared.len()).filter(|r| cleared[*r]).collect();
            self.totals.add_values(kind, rows.len() as u64);
            for r in rows {
                note(name, r);
            }
        }
        Ok(())
    }

    fn collect_samples(
        &mut self,
        types: &StringArray,
        times: &TimestampMillisecondArray,
        uuids: &FixedSizeBinaryArray,
    ) {
        let touched = |r: usize| self.deleted[r] || self.cleared.values().any(|c| c[r]);
        let rows: Vec<usize> = (0..types.len())
            .filter(|r| touched(*r))
            .take(SAMPLES)
            .collect();
        for r in rows {
            let uuid = u128::from_be_bytes(uuids.value(r).try_into().unwrap_or([0; 16]));
            self.samples.push(Sample {
                uuid: uuid::Uuid::from_u128(uuid).to_string(),
                event_type: types.value(r).to_string(),
                server_upload_time: lethe_event::format_export_time(times.value(r)),
            });
        }
    }

    /// For a batch that loses no row: the columns left with no value (to drop), and the
    /// ones with some values cleared (to re-encode). A key that leaves the batch is named in
    /// the drop list by its key column even when the batch keeps it in the tail column, so
    /// that the new segment's record no longer lists it.
    pub fn column_changes(
        &self,
        batch: &RecordBatch,
    ) -> Result<(Vec<String>, HashMap<String, ArrayRef>), ArrowError> {
        let mut drop = Vec::new();
        let mut replace: HashMap<String, ArrayRef> = HashMap::new();
        for (name, cleared) in self.cleared.iter().filter(|(_, c)| c.contains(&true)) {
            if let Some(values) = batch.column_by_name(name) {
                let mask = BooleanArray::from(cleared.clone());
                let kept = arrow_select::nullif::nullif(values, &mask)?;
                if kept.null_count() == kept.len() {
                    drop.push(name.clone());
                } else {
                    replace.insert(name.clone(), kept);
                }
            } else if let Some((kind, id)) = PropertyKind::of_column(name) {
                let values = kind.values(batch, id)?;
                let left =
                    values.is_some_and(|v| (0..v.len()).any(|r| v.is_valid(r) && !cleared[r]));
                if !left {
                    drop.push(name.clone());
                }
            }
        }
        for kind in PropertyKind::ALL {
            let Some(tail) = self.tail_without_cleared(batch, kind)? else {
                continue;
            };
            match tail.null_count() == tail.len() {
                true => drop.push(kind.tail_column().to_string()),
                false => {
                    replace.insert(kind.tail_column().to_string(), Arc::new(tail));
                }
            }
        }
        Ok((drop, replace))
    }

    /// The kind's tail column of `batch` without the cleared values of keys it holds;
    /// `None` when the batch has no tail column or nothing of it is cleared.
    fn tail_without_cleared(
        &self,
        batch: &RecordBatch,
        kind: PropertyKind,
    ) -> Result<Option<StringArray>, ArrowError> {
        let Ok(tail) = column::<StringArray>(batch, kind.tail_column()) else {
            return Ok(None);
        };
        let removed: Vec<(i64, &[bool])> = self
            .cleared
            .iter()
            .filter(|(name, _)| batch.column_by_name(name).is_none())
            .filter_map(|(name, rows)| match PropertyKind::of_column(name) {
                Some((k, id)) if k == kind => Some((id, rows.as_slice())),
                _ => None,
            })
            .collect();
        if removed.is_empty() {
            return Ok(None);
        }
        tail::without(tail, &removed)
            .map(Some)
            .map_err(ArrowError::ParseError)
    }

    /// Whether any of `rows` is deleted or has a value cleared.
    pub fn touches(&self, rows: std::ops::Range<usize>) -> bool {
        self.deleted[rows.clone()].contains(&true)
            || self
                .cleared
                .values()
                .any(|c| c[rows.clone()].contains(&true))
    }

    /// The batch with deleted rows gone and cleared cells null, in the same schema.
    pub fn rewrite(&self, batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
        let keep = BooleanArray::from(self.deleted.iter().map(|d| !d).collect::<Vec<_>>());
        let kept = keep.true_count();
        let schema = batch.schema();
        let mut arrays: Vec<ArrayRef> = Vec::new();
        for (i, field) in schema.fields().iter().enumerate() {
            let mut array = batch.column(i).clone();
            if array.null_count() == array.len() {
                // Most property columns of a row group: nothing to filter.
                arrays.push(arrow_array::new_null_array(field.data_type(), kept));
                continue;
            }
            if let Some(cleared) = self.cleared.get(field.name()) {
                let mask = BooleanArray::from(cleared.clone());
                array = arrow_select::nullif::nullif(&array, &mask)?;
            }
            let tail_of = PropertyKind::ALL
                .into_iter()
                .find(|k| k.tail_column() == field.name());
            if let Some(kind) = tail_of {
                if let Some(tail) = self.tail_without_cleared(batch, kind)? {
                    array = Arc::new(tail);
                }
            }
            arrays.push(arrow_select::filter::filter(&array, &keep)?);
        }
        RecordBatch::try_new(schema, arrays)
    }
}
