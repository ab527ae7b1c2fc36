//! Partition rewrites, in two phases: a deletion (or any caller) begins one, reads the live
//! segments of the partition through it, stages their new contents, and commits them with its
//! own progress in one metadata transaction. Modelled on tantivy's prepared commit and
//! delta-rs's commit builder: nothing is visible before the commit, and an abandoned rewrite
//! leaves nothing behind. Only the commit takes the manifest writer, so rewrites of several
//! partitions, flushes and compaction go on side by side; the commit's expected-state check
//! refuses a rewrite whose sources something else retired meanwhile.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use arrow_array::{ArrayRef, RecordBatch};
use lethe_meta::{CatalogDelta, Commit, SegmentRecord};

use crate::faults::failpoint;
use crate::live::{OpenSegment, Segment};
use crate::store::Inner;
use crate::{lock, Result};

/// The new contents of one segment of a partition rewrite.
pub enum Output {
    /// The rows of `source` unchanged in number: `drop` columns left out, `replace` columns
    /// re-encoded, every other column chunk copied without decoding.
    Columns {
        source: OpenSegment,
        drop: Vec<String>,
        replace: HashMap<String, ArrayRef>,
    },
    /// The row groups of `source` with those in `replaced` re-encoded from new rows (same
    /// schema; empty removes the row group) and the others copied without decoding.
    RowGroups {
        source: OpenSegment,
        replaced: BTreeMap<usize, RecordBatch>,
    },
}

impl Output {
    fn source(&self) -> &OpenSegment {
        match self {
            Output::Columns { source, .. } | Output::RowGroups { source, .. } => source,
        }
    }
}

/// A rewrite of one partition, in two phases: the caller reads the live segments, stages
/// their new contents (written, invisible), then commits them with its own progress in one
/// metadata transaction. Dropped uncommitted, it deletes what it staged and changes nothing.
pub struct PartitionRewrite<'a> {
    inner: &'a Inner,
    project_id: i64,
    live: Vec<Arc<Segment>>,
    staged: Mutex<Staged>,
}

/// What a rewrite has written so far. Outputs are staged one at a time, from several
/// threads, as soon as each is built: a partition's rewrite never holds more than the
/// segments it is working on, however many the partition has.
#[derive(Default)]
struct Staged {
    /// The new segments, which the commit makes live.
    records: Vec<SegmentRecord>,
    /// Their sources, which the commit retires.
    retiring: Vec<Arc<Segment>>,
}

impl<'a> PartitionRewrite<'a> {
    /// Takes the partition's live segments as they are now.
    pub(crate) fn begin(inner: &'a Inner, project_id: i64, day: &str) -> Self {
        let live = inner
            .state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .live
            .of_project(project_id)
            .iter()
            .filter(|s| s.record.day == day)
            .cloned()
            .collect();
        PartitionRewrite {
            inner,
            project_id,
            live,
            staged: Mutex::default(),
        }
    }

    /// The partition's live segments.
    pub fn live(&self) -> &[Arc<Segment>] {
        &self.live
    }

    /// Writes the new contents of one segment of the partition; its source is retired by the
    /// commit. An output with no row left writes nothing. Several threads may stage at once.
    pub fn stage(&self, output: Output) -> Result<()> {
        let record = self.inner.segment_writer.write_output(&output)?;
        let mut staged = lock(&self.staged);
        staged.records.extend(record);
        staged.retiring.push(output.source().segment.clone());
        Ok(())
    }

    /// Bytes of the segments staged so far.
    pub fn staged_bytes(&self) -> u64 {
        lock(&self.staged)
            .records
            .iter()
            .map(|r| r.bytes as u64)
            .sum()
    }

    /// The segments staged so far, which the commit makes live.
    pub fn staged(&self) -> Vec<SegmentRecord> {
        lock(&self.staged).records.clone()
    }

    /// The segments the commit retires.
    pub fn retiring(&self) -> Vec<SegmentRecord> {
        let staged = lock(&self.staged);
        staged.retiring.iter().map(|s| s.record.clone()).collect()
    }

    /// Swaps the staged segments for their sources in one metadata transaction that also
    /// removes `catalog` counts and records `task_progress` (task id, progress JSON), under
    /// the manifest writer. Fails with `StaleManifest`, changing nothing, if a source is no
    /// longer live (a compaction merged it since `begin`): the caller plans the partition
    /// again. Returns the retired segments: their objects are deleted once the caller and
    /// every reader have dropped them.
    pub fn commit(
        mut self,
        catalog: CatalogDelta,
        task_progress: Option<(i64, String)>,
    ) -> Result<Vec<Arc<Segment>>> {
        let inner = self.inner;
        let Staged {
            records: added,
            retiring,
        } = std::mem::take(self.staged.get_mut().unwrap_or_else(|p| p.into_inner()));
        let commit = Commit {
            add: added.clone(),
            remove: retiring.iter().map(|s| s.record.id.clone()).collect(),
            catalog: vec![(self.project_id, catalog)],
            task_progress,
            ..Default::default()
        };
        failpoint("rewrite:after_write");
        let _writer = lock(&inner.writer);
        if let Err(e) = inner.meta.commit(&commit) {
            inner.segment_writer.discard(&added);
            return Err(e.into());
        }
        failpoint("rewrite:after_commit");
        inner.swap_live(self.project_id, &retiring, added);
        Ok(retiring)
    }
}

impl Drop for PartitionRewrite<'_> {
    fn drop(&mut self) {
        let staged = self.staged.get_mut().unwrap_or_else(|p| p.into_inner());
        self.inner.segment_writer.discard(&staged.records);
    }
}
