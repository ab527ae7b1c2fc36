//! Partition rewrites, in two phases: a deletion (or any caller) begins one, reads the live
//! segments of the partition through it, stages their new contents, and commits them with its
//! own progress in one metadata transaction. Modelled on tantivy's prepared commit and
//! delta-rs's commit builder: nothing is visible before the commit, and an abandoned rewrite
//! leaves nothing behind. Only the commit takes the manifest writer, so rewrites of several
//! partitions, flushes and compaction go on side by side; the commit's expected-state check
//! refuses a rewrite whose sources something else retired meanwhile.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use lethe_meta::{CatalogDelta, Commit, SegmentRecord};

use crate::faults::failpoint;
use crate::live::{OpenSegment, Segment};
use crate::parallel::parallel_map;
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
    /// Sources of staged outputs: retired by the commit.
    retiring: Vec<Arc<Segment>>,
    staged: Vec<SegmentRecord>,
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
            retiring: Vec::new(),
            staged: Vec::new(),
        }
    }

    /// The partition's live segments.
    pub fn live(&self) -> &[Arc<Segment>] {
        &self.live
    }

    /// Writes the new contents of segments of the partition (in parallel, one per core);
    /// each source is retired by the commit. An output with no row left writes nothing.
    pub fn stage(&mut self, outputs: Vec<Output>) -> Result<()> {
        let inner = self.inner;
        let mut failure = None;
        for (output, written) in outputs
            .iter()
            .zip(parallel_map(outputs.iter().collect(), |o| {
                inner.segment_writer.write_output(o)
            }))
        {
            match written {
                Ok(record) => {
                    self.staged.extend(record);
                    self.retiring.push(output.source().segment.clone());
                }
                Err(e) => failure = Some(e),
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// Bytes of the segments staged so far.
    pub fn staged_bytes(&self) -> u64 {
        self.staged.iter().map(|r| r.bytes as u64).sum()
    }

    /// The segments staged so far, which the commit makes live.
    pub fn staged(&self) -> &[SegmentRecord] {
        &self.staged
    }

    /// The segments the commit retires.
    pub fn retiring(&self) -> impl Iterator<Item = &SegmentRecord> {
        self.retiring.iter().map(|s| &s.record)
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
        let added = std::mem::take(&mut self.staged);
        let retiring = std::mem::take(&mut self.retiring);
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
        self.inner.segment_writer.discard(&self.staged);
    }
}
