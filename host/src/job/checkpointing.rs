//! The job's side of checkpoints: putting a barrier into the stream when
//! one is due, turning the state the stages snapshotted at the barrier into
//! a checkpoint once it reaches the sink, and taking a completed one in
//! (the new restore point; retention; the journal trimmed).

use std::sync::Arc;

use tracing::{info, warn};

use crate::checkpoint::coordinator::Written;
use crate::checkpoint::{SinkPosition, Snapshot};
use crate::connector::journal;
use crate::dataflow::message::Barrier;
use crate::dataflow::operator::OperatorSnapshot;
use crate::dataflow::worker::{Item, MAP_AHEAD};
use crate::job::runner::{Entry, Runner};
use crate::state::keyed::CopyOnWrite;

impl Runner<'_> {
    /// Puts a barrier into the stream behind the batches submitted so far,
    /// when a checkpoint is due. Nothing waits for it: it flows through the
    /// stages with the data.
    pub(super) fn maybe_barrier(&mut self) {
        // Not while a timed job runs its recorded batches again: the
        // barrier's mark would follow them in the timeline.
        let replaying = self.timeline.as_ref().is_some_and(|t| t.replaying());
        if self.replay.is_some() || replaying || self.queue[0].len() > MAP_AHEAD {
            return;
        }
        let base = &self.last.as_ref().unwrap_or(&self.origin).source;
        if !self.checkpoints.due(self.submitted != *base) {
            return;
        }
        let barrier = Barrier {
            id: self.checkpoints.start(),
            position: self.submitted.clone(),
        };
        if let Err(f) = self.workers.submit(0, Item::Barrier(barrier.clone())) {
            warn!("{}: checkpoint {} skipped: {f}", self.job, barrier.id);
            self.checkpoints.skip();
            return;
        }
        if let Some(t) = self.timeline.as_mut()
            && let Err(e) = t.record_checkpoint(barrier.id)
        {
            warn!(
                "{}: {e}; a restore from checkpoint {} will cut its batches anew",
                self.job, barrier.id
            );
        }
        self.queue[0].push_back(Entry::Barrier {
            barrier,
            snapshots: Vec::new(),
            time: (i64::MIN, None),
        });
    }

    /// The barrier reached the sink: every batch before it is written, and
    /// the stages' state at it is in `snapshots`. Makes the output durable
    /// and writes the checkpoint in the background.
    pub(super) fn complete_checkpoint(
        &mut self,
        barrier: Barrier,
        snapshots: Vec<OperatorSnapshot>,
        time: (i64, Option<i64>),
    ) {
        let id = barrier.id;
        let Some((sink, side_sinks)) = self.sync_outputs(id) else {
            self.checkpoints.skip();
            return;
        };
        let mut copies = CopyOnWrite::default();
        let mut subtasks = Vec::new();
        let mut stages = Vec::new();
        self.last_pause = Default::default();
        for s in snapshots {
            copies.add(s.copies);
            self.last_pause = self.last_pause.max(s.paused);
            if !s.groups.is_empty() {
                subtasks.push(s.groups);
                stages.push(self.timed.then_some(s.stage as u32));
            }
        }
        self.log_copies(copies);
        self.held = id;
        let snapshot = Snapshot {
            id,
            created_at_ms: super::now_ms(),
            source: barrier.position.clone(),
            sink,
            // Only skipped records a replay from here could meet.
            skipped: self
                .skipped
                .iter()
                .copied()
                .filter(|s| barrier.position.may_replay(*s))
                .collect(),
            subtasks,
            stages,
            watermark: self.timed.then_some(time.0),
            max_timestamp: time.1,
            side_sinks,
        };
        if let Err(e) = self.checkpoints.write(&self.info, snapshot) {
            warn!("{}: checkpoint {id} skipped: {e}", self.job);
            self.checkpoints.skip();
        }
    }

    /// Makes the output up to the barrier durable: the sinks, the journal,
    /// the timeline. The sinks' positions, or `None` (logged) when the
    /// checkpoint cannot be taken.
    fn sync_outputs(&mut self, id: u64) -> Option<(SinkPosition, Vec<SinkPosition>)> {
        let job = self.job.clone();
        let synced = match self.sink.sync() {
            Ok(position) => position,
            Err(e) => {
                warn!("{job}: checkpoint {id} skipped: cannot sync the sink: {e}");
                return None;
            }
        };
        let mut side = Vec::new();
        for (sink, lines) in &mut self.side_sinks {
            match sink.sync() {
                Ok(p) => side.push(SinkPosition {
                    lines: *lines,
                    bytes: p.bytes,
                    partitions: p.partitions,
                }),
                Err(e) => {
                    warn!("{job}: checkpoint {id} skipped: cannot sync a side output's sink: {e}");
                    return None;
                }
            }
        }
        if let Some(dir) = &self.journal
            && let Err(e) = journal::sync(dir)
        {
            warn!("{job}: checkpoint {id} skipped: cannot sync the journal: {e}");
            return None;
        }
        let sink = SinkPosition {
            lines: self.out.lines,
            bytes: synced.bytes,
            partitions: synced.partitions,
        };
        Some((sink, side))
    }

    fn log_copies(&self, copies: CopyOnWrite) {
        if copies.groups + copies.ahead == 0 {
            return;
        }
        info!(
            "{}: copy-on-write after checkpoint `chk-{}`: {} key groups ({} KiB) copied, {} of them ahead while idle; at most {} us in one batch",
            self.job,
            self.held,
            copies.groups + copies.ahead,
            copies.bytes.div_ceil(1024),
            copies.ahead,
            copies.longest.as_micros()
        );
    }

    /// Takes a finished checkpoint in, or reports one that failed or took
    /// too long.
    pub(super) fn poll_checkpoint(&mut self) {
        let Some(written) = self.checkpoints.poll() else {
            return;
        };
        let job = self.job.clone();
        match written {
            Written::Completed(snapshot, took) => {
                info!(
                    "{job}: checkpoint `chk-{}` completed in {} ms ({} keys, source at record {}, processing paused {} us)",
                    snapshot.id,
                    took.as_millis(),
                    snapshot.keys(),
                    snapshot.source.seq,
                    self.last_pause.as_micros()
                );
                self.status.checkpointed(&snapshot, took);
                self.source.checkpointed(&snapshot.source);
                if let Some(old) = self.last.replace(Arc::new(snapshot))
                    && let Ok(old) = Arc::try_unwrap(old)
                {
                    self.workers.recycle(old);
                }
                let oldest = self.checkpoints.retain();
                if let Some(oldest) = oldest
                    && let Some(dir) = &self.journal
                    && let Ok((_, old)) = self.store.load(oldest)
                {
                    journal::trim(dir, old.source.offset);
                }
                if let (Some(oldest), Some(t)) = (oldest, self.timeline.as_mut())
                    && let Err(e) = t.compact(oldest)
                {
                    warn!("{job}: {e}");
                }
            }
            Written::Failed(id, e) => warn!("{job}: checkpoint {id} failed: {e}"),
            Written::Abandoned(id, after) => warn!(
                "{job}: checkpoint {id} abandoned after {} ms (--checkpoint-timeout)",
                after.as_millis()
            ),
        }
    }
}
