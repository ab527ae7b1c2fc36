//! Matching a task against segment columns: which rows it deletes, which property cells it
//! clears, what that counts as, and the rewritten batch. One implementation serves the
//! preview (on projected columns) and the executor (on whole segments), so the counts shown
//! before submission are the counts of what the rewrite does.

use std::collections::{BTreeMap, HashMap, HashSet};

use arrow_array::{
    Array, ArrayRef, BooleanArray, FixedSizeBinaryArray, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use arrow_schema::ArrowError;
use serde::{Deserialize, Serialize};

use lethe_store::PropertyKind;

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
    pub event: &'a HashMap<String, i64>,
    pub user: &'a HashMap<String, i64>,
    pub group: &'a HashMap<String, i64>,
}

impl PropertyIds<'_> {
    fn of(&self, kind: PropertyKind) -> &HashMap<String, i64> {
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

enum Rule {
    Events(HashSet<String>),
    Users(HashSet<i64>),
    Properties {
        /// Segment column names (`e_<id>`, `u_<id>`, `g_<id>`).
        columns: Vec<String>,
        kind: PropertyKind,
        types: Option<HashSet<String>>,
    },
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
    /// Column → rows whose value is cleared (rows not deleted).
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
        let set = |v: &Vec<String>| v.iter().cloned().collect::<HashSet<_>>();
        let cols = |names: &Vec<String>, kind: PropertyKind| {
            names
                .iter()
                .filter_map(|n| ids.of(kind).get(n).map(|id| kind.column(*id)))
                .collect()
        };
        let rules = spec
            .clauses
            .iter()
            .map(|c| match c {
                Clause::Event { event_types } => Rule::Events(set(event_types)),
                Clause::Users { amplitude_ids } => {
                    Rule::Users(amplitude_ids.iter().copied().collect())
                }
                Clause::EventProperty {
                    properties,
                    event_types,
                } => Rule::Properties {
                    columns: cols(properties, PropertyKind::Event),
                    kind: PropertyKind::Event,
                    types: event_types.as_ref().map(set),
                },
                Clause::UserProperty {
                    properties,
                    event_types,
                    ..
                } => Rule::Properties {
                    columns: cols(properties, PropertyKind::User),
                    kind: PropertyKind::User,
                    types: event_types.as_ref().map(set),
                },
                Clause::GroupProperty {
                    properties,
                    event_types,
                    ..
                } => Rule::Properties {
                    columns: cols(properties, PropertyKind::Group),
                    kind: PropertyKind::Group,
                    types: event_types.as_ref().map(set),
                },
            })
            .collect();
        Self {
            from: spec.start_ms(),
            to: spec.end_ms(),
            rules,
        }
    }

    /// The columns counting needs in one segment: no `uuid` (samples come separately), and
    /// no upload time when the whole segment lies inside the range.
    pub fn preview_columns(&self, record: &lethe_meta::SegmentRecord) -> Vec<String> {
        let inside = record.min_time >= self.from && record.max_time < self.to;
        self.columns()
            .into_iter()
            .filter(|c| c != "uuid" && !(inside && c == "server_upload_time"))
            .collect()
    }

    /// The columns matching needs, with `uuid` for samples.
    pub fn columns(&self) -> Vec<String> {
        let mut cols: Vec<String> = ["uuid", "event_type", "server_upload_time"]
            .map(String::from)
            .to_vec();
        for r in &self.rules {
            match r {
                Rule::Properties { columns, .. } => cols.extend(columns.iter().cloned()),
                Rule::Users(_) => cols.push("amplitude_id".to_string()),
                Rule::Events(_) => {}
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
            .filter_map(|r| match r {
                Rule::Users(ids) => Some(ids.iter().copied()),
                _ => None,
            })
            .flatten()
            .collect();
        (!ids.is_empty()).then_some(ids)
    }

    /// Whether a segment can hold a target, from its manifest record alone.
    pub fn may_match(
        &self,
        record: &lethe_meta::SegmentRecord,
        type_ids: &HashMap<String, i64>,
    ) -> bool {
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
        let has_column = |c: &String| {
            PropertyKind::of_column(c).is_some_and(|(kind, id)| kind.ids(record).contains(&id))
        };
        self.rules.iter().any(|r| match r {
            Rule::Events(types) => has_type(types),
            Rule::Users(ids) => !ids.is_empty(),
            Rule::Properties { columns, types, .. } => {
                columns.iter().any(has_column) && types.as_ref().is_none_or(has_type)
            }
        })
    }

    /// Matches the task against one batch.
    /// Without a `server_upload_time` column every row counts as in range (see
    /// [`Matcher::preview_columns`]); without `uuid` no samples are taken.
    pub fn apply(&self, batch: &RecordBatch) -> Result<Applied, ArrowError> {
        let types = column::<StringArray>(batch, "event_type")?;
        let times = column::<TimestampMillisecondArray>(batch, "server_upload_time").ok();
        let rows = batch.num_rows();
        let in_range: Vec<bool> = (0..rows)
            .map(|r| times.is_none_or(|t| (self.from..self.to).contains(&t.value(r))))
            .collect();
        let mut a = Applied {
            clauses: vec![Counts::default(); self.rules.len()],
            deleted: vec![false; rows],
            ..Default::default()
        };
        for (rule, counts) in self.rules.iter().zip(a.clauses.iter_mut()) {
            let hit: Box<dyn Fn(usize) -> bool> = match rule {
                Rule::Events(set) => Box::new(|r| set.contains(types.value(r))),
                Rule::Users(ids) => {
                    let users = column::<Int64Array>(batch, "amplitude_id")?;
                    Box::new(|r| ids.contains(&users.value(r)))
                }
                Rule::Properties { .. } => continue,
            };
            for r in (0..rows).filter(|r| in_range[*r] && hit(*r)) {
                counts.events_deleted += 1;
                a.deleted[r] = true;
            }
        }
        for (rule, counts) in self.rules.iter().zip(a.clauses.iter_mut()) {
            let Rule::Properties {
                columns,
                kind,
                types: only,
            } = rule
            else {
                continue;
            };
            for name in columns {
                let Some(values) = batch.column_by_name(name) else {
                    continue;
                };
                let cleared = a
                    .cleared
                    .entry(name.clone())
                    .or_insert_with(|| vec![false; rows]);
                for r in 0..rows {
                    let hit = in_range[r]
                        && !a.deleted[r]
                        && values.is_valid(r)
                        && only.as_ref().is_none_or(|t| t.contains(types.value(r)));
                    if hit {
                        counts.add_values(*kind, 1);
                        cleared[r] = true;
                    }
                }
            }
        }
        a.count_removed(batch, types)?;
        if let (Some(times), Ok(uuids)) = (times, column::<FixedSizeBinaryArray>(batch, "uuid")) {
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
        let schema = batch.schema();
        for (i, field) in schema.fields().iter().enumerate() {
            let name = field.name();
            let Some((kind, _)) = PropertyKind::of_column(name) else {
                continue;
            };
            let values = batch.column(i);
            let cleared = self.cleared.get(name);
            let mut removed = 0i64;
            let removed_rows = deleted_rows.iter().copied().chain(
                cleared
                    .into_iter()
                    .flat_map(|c| (0..c.len()).filter(move |r| c[*r])),
            );
            for r in removed_rows.filter(|r| values.is_valid(*r)) {
                removed += 1;
                if kind == PropertyKind::Event {
                    *self
                        .pairs_removed
                        .entry((types.value(r).to_string(), name.clone()))
                        .or_default() += 1;
                }
            }
            let cleared_count = cleared.map_or(0, |c| c.iter().filter(|x| **x).count()) as u64;
            self.totals.add_values(kind, cleared_count);
            if removed > 0 {
                *self.columns_removed.entry(name.clone()).or_default() += removed;
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

    /// For a batch that loses no row: the property columns left with no value (to drop) and
    /// the ones with some values cleared (to re-encode).
    pub fn column_changes(
        &self,
        batch: &RecordBatch,
    ) -> Result<(Vec<String>, HashMap<String, ArrayRef>), ArrowError> {
        let mut drop = Vec::new();
        let mut replace = HashMap::new();
        for (name, cleared) in &self.cleared {
            let (Some(values), true) = (batch.column_by_name(name), cleared.contains(&true)) else {
                continue;
            };
            let kept = arrow_select::nullif::nullif(values, &BooleanArray::from(cleared.clone()))?;
            if kept.null_count() == kept.len() {
                drop.push(name.clone());
            } else {
                replace.insert(name.clone(), kept);
            }
        }
        Ok((drop, replace))
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
            arrays.push(arrow_select::filter::filter(&array, &keep)?);
        }
        RecordBatch::try_new(schema, arrays)
    }
}
