//! The job's side of checkpoints: putting a barrier into the stream when
//! one is due, turning the state the stages snapshotted at the barrier into
//! a checkpoint once it reaches the sink, and taking a completed one in
//! (the new restore point; retention; the journal trimmed).

use std::sync::Arc;

use tracing::{info, warn};

use crate::checkpoint::Snapshot;
use crate::checkpoint::coordinator::Written;
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
        if self.replay.is_some() || self.queue[0].len() > MAP_AHEAD {
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
        self.queue[0].push_back(Entry::Barrier {
            barrier,
            snapshots: Vec::new(),
        });
    }

    /// The barrier reached the sink: every batch before it is written, and
    /// the stages' state at it is in `snapshots`. Makes the output durable
    /// and writes the checkpoint in the background.
    pub(super) fn complete_checkpoint(
        &mut self,
        barrier: Barrier,
        snapshots: Vec<OperatorSnapshot>,
    ) {
        let id = barrier.id;
        let synced = match self.sink.sync() {
            Ok(position) => position,
            Err(e) => {
                warn!(
                    "{}: checkpoint {id} skipped: cannot sync the sink: {e}",
                    self.job
                );
                self.checkpoints.skip();
                return;
            }
        };
        if let Some(dir) = &self.journal
            && let Err(e) = journal::sync(dir)
        {
            warn!(
                "{}: checkpoint {id} skipped: cannot sync the journal: {e}",
                self.job
            );
            self.checkpoints.skip();
            return;
        }
        let mut copies = CopyOnWrite::default();
        let mut subtasks = Vec::new();
        self.last_pause = Default::default();
        for s in snapshots {
            copies.add(s.copies);
            self.last_pause = self.last_pause.max(s.paused);
            if !s.groups.is_empty() {
                subtasks.push(s.groups);
            }
        }
        self.log_copies(copies);
        self.held = id;
        let snapshot = Snapshot {
            id,
            created_at_ms: super::now_ms(),
            source: barrier.position.clone(),
            sink: crate::checkpoint::SinkPosition {
                lines: self.out.lines,
                bytes: synced.bytes,
                partitions: synced.partitions,
            },
            // Only skipped records a replay from here could meet.
            skipped: self
                .skipped
                .iter()
                .copied()
                .filter(|s| barrier.position.may_replay(*s))
                .collect(),
            subtasks,
        };
        if let Err(e) = self.checkpoints.write(&self.info, snapshot) {
            warn!("{}: checkpoint {id} skipped: {e}", self.job);
            self.checkpoints.skip();
        }
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
                if let Some(oldest) = self.checkpoints.retain()
                    && let Some(dir) = &self.journal
                    && let Ok((_, old)) = self.store.load(oldest)
                {
                    journal::trim(dir, old.source.offset);
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
