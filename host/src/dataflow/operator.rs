//! The operator trait: one required method that processes a batch, and
//! lifecycle hooks with defaults — snapshot at a barrier, restore, reset
//! after a failure, idle work, close. After Arroyo's `ArrowOperator`.
//!
//! An operator instance runs on one subtask's thread and sees one stage of
//! one batch at a time: the first stage gets a slice of the source's batch,
//! a later stage every upstream subtask's output for the batch, of which it
//! takes the rows routed to it. What it emits is rows (with the subtask of
//! the next stage each goes to) or, at the end of the graph, lines for the
//! sink, marked with their (record, row) order so the output keeps the
//! input's order at any parallelism.

use std::ops::Range;
use std::time::Duration;

use crate::checkpoint::format::GroupState;
use crate::dataflow::message::{Clock, SourceBatch};
use crate::encoding::RowRef;
use crate::fault::TaskFailure;
use crate::state::keyed::{CopyOnWrite, StateError};

/// What an operator instance is given.
pub enum Input<'a> {
    /// Records `range` of a source batch (the first stage).
    Records {
        /// The batch.
        batch: &'a SourceBatch,
        /// The records this subtask takes.
        range: Range<usize>,
        /// Time as the batch sees it (the watermark after it is not known
        /// yet: it comes from this stage's output).
        clock: Clock,
    },
    /// Every upstream subtask's output for a batch; this subtask takes the
    /// rows routed to it.
    Rows {
        /// The batch, for messages about its records.
        batch: &'a SourceBatch,
        /// One output per upstream subtask.
        parts: &'a [Output],
        /// Time as the batch sees it.
        clock: Clock,
    },
}

impl Input<'_> {
    /// The batch the input belongs to.
    pub fn batch(&self) -> &SourceBatch {
        match self {
            Input::Records { batch, .. } | Input::Rows { batch, .. } => batch,
        }
    }
}

/// What an operator instance emits for one batch.
#[derive(Default)]
pub struct Output {
    /// Encoded rows (and keys), for the next stage.
    pub rows: Vec<u8>,
    /// Rows routed to each subtask of the next stage, in input order.
    pub routes: Vec<Vec<RowRef>>,
    /// Formatted lines for the sink (the last stage).
    pub lines: Lines,
    /// Faults that did not reproduce when their record ran alone in a
    /// fresh instance: the records' output counts and nothing is
    /// dead-lettered, but each still counts against the restart strategy.
    pub unreproduced: Vec<TaskFailure>,
    /// Records taken in (the first stage) or rows taken in.
    pub taken: u64,
    /// Lines for each side output (0.2.0), by tag - 1.
    pub side: Vec<Lines>,
    /// The largest timestamp of the rows on the main output (0.2.0): the
    /// first stage's drive the watermark.
    pub max_timestamp: Option<i64>,
    /// Failures of no record that the stage dropped (a timer or a window
    /// that fails alone in a fresh instance): dead-lettered, and counted
    /// against the restart strategy.
    pub dead: Vec<TaskFailure>,
}

/// Formatted output lines with their (record, row) order.
#[derive(Default)]
pub struct Lines {
    /// The lines.
    pub bytes: Vec<u8>,
    /// `(record << 32 | row, end offset in bytes)` per line.
    pub marks: Vec<(u64, u32)>,
}

impl Lines {
    /// Marks the end of a line (or of a line not formatted, for a sink
    /// that drops them) of record `record`'s row `ordinal`.
    pub fn push_mark(&mut self, record: u32, ordinal: u32) {
        self.marks.push((
            (u64::from(record) << 32) | u64::from(ordinal),
            self.bytes.len() as u32,
        ));
    }
}

/// An operator's state at a barrier.
#[derive(Default)]
pub struct OperatorSnapshot {
    /// Its key groups' state, shared until they next change.
    pub groups: Vec<GroupState>,
    /// Key groups copied since the last snapshot, because it held them.
    pub copies: CopyOnWrite,
    /// How long taking it held the operator up.
    pub paused: Duration,
    /// The stage it is of (the job sets it).
    pub stage: usize,
}

/// One stage of a job, one instance per subtask.
pub trait Operator: Send + 'static {
    /// Processes one batch's input.
    fn process(&mut self, input: Input<'_>) -> Result<Output, TaskFailure>;

    /// Whether the operator keeps keyed state (and so whether a failure
    /// after it saw a batch can be recovered without a restore).
    fn stateful(&self) -> bool {
        false
    }

    /// A barrier reached the operator: its state at this point.
    fn snapshot(&mut self) -> OperatorSnapshot {
        OperatorSnapshot::default()
    }

    /// Loads the key groups of a checkpoint that this instance owns.
    fn restore(&mut self, _groups: &[GroupState]) -> Result<(), StateError> {
        Ok(())
    }

    /// Drops whatever a failure may have spoiled (a guest instance): the
    /// next batch starts afresh.
    fn reset(&mut self) {}

    /// Whether a batch that fails leaves the operator's state as it was
    /// before the batch (it applies nothing until the batch succeeded): a
    /// guest fault in it can then be recovered without a restore.
    fn atomic(&self) -> bool {
        !self.stateful()
    }

    /// Whether the operator has work to do while nothing else is waiting.
    fn has_idle_work(&self) -> bool {
        false
    }

    /// Does a little of that work.
    fn idle(&mut self) {}

    /// Memory of a snapshot the job no longer needs, to reuse.
    fn recycle(&mut self, _arena: Vec<u8>) {}
}
