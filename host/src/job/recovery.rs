//! Failures and restarts: a task failure is logged, its record (if it is
//! one) dead-lettered and never replayed, and the restart strategy decides.
//! To restart, the job either keeps its keyed state (local recovery: a
//! guest fault happens before its batch reaches any state) or restores the
//! last checkpoint and replays the input from its position.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use crate::dataflow::exchange::{self, Block};
use crate::dataflow::message::{Clock, SourceBatch};
use crate::dataflow::worker::{Collected, Item, Workers};
use crate::fault::{Fault, TaskFailure};
use crate::job::dead_letter;
use crate::job::runner::{Entry, Runner, operators};
use crate::job::{JobOutcome, JobState};
use crate::restart::{Decision, RestartStrategy};

impl Runner<'_> {
    /// A task failed at `stage` on `batch`: salvage the records before the
    /// failing one, dead-letter the record, and restart or give up.
    pub(super) fn fail(
        &mut self,
        stage: usize,
        batch: &SourceBatch,
        failure: TaskFailure,
    ) -> Option<JobOutcome> {
        // A cancel may stop a guest call (a server's job): not the
        // record's fault, so nothing is dead-lettered.
        if self.cancel.is_cancelled() {
            return Some(JobOutcome::Canceled);
        }
        let job = self.job.clone();
        error!("{job} switched from RUNNING to FAILING: {failure}");
        self.status.failed(&failure);
        // Items behind the failing one are abandoned: run again after the
        // restart (a local recovery) or replayed (a restore).
        let ahead: Vec<Arc<SourceBatch>> = self
            .queue
            .iter_mut()
            .flat_map(|q| q.drain(..))
            .filter_map(|e| match e {
                Entry::Batch(b) => Some(b.batch),
                Entry::Barrier { .. } => None,
            })
            .collect();
        self.workers.abandon();
        self.checkpoints.abort();
        let decision = self.tracker.on_failure(Instant::now());
        // A guest fault before any state kept the batch leaves the state as
        // a restore and replay would rebuild it: no stage before this one
        // keeps state, and this one applied nothing of the batch.
        let stateless_before =
            (0..stage).all(|s| !self.workers.stateful(s)) && self.workers.atomic(stage);
        let local = self.spec.local_recovery
            && stateless_before
            && failure.fault == Fault::Guest
            && failure.seq.is_some()
            && matches!(decision, Decision::Restart { .. });
        if !local && let Some(outcome) = self.salvage(batch, &failure) {
            return Some(outcome);
        }
        if let Some(seq) = failure.seq {
            self.dead_letter(seq, &failure);
        }
        match decision {
            Decision::GiveUp(reason) => Some(JobOutcome::Failed(format!("{failure}; {reason}"))),
            Decision::Restart { delay, attempt } => {
                self.log_restart(attempt, delay);
                if self.sleep_unless_cancelled(delay) {
                    return Some(JobOutcome::Canceled);
                }
                if local {
                    self.recover_locally(batch, &ahead, failure.seq.unwrap_or_default());
                    return None;
                }
                match self.restore() {
                    Ok(()) => None,
                    Err(cause) => Some(JobOutcome::Failed(cause)),
                }
            }
        }
    }

    /// No state saw the failing batch: the records before the failing one
    /// run again, and their output is not lost if the job gives up now.
    fn salvage(&mut self, batch: &SourceBatch, failure: &TaskFailure) -> Option<JobOutcome> {
        let (Some(seq), Fault::Guest) = (failure.seq, failure.fault) else {
            return None;
        };
        let index = batch.seqs.iter().position(|s| *s == seq)?;
        if index == 0 {
            return None;
        }
        match run_through(&mut self.workers, Arc::new(batch.prefix(index))) {
            Ok(block) => self.emit(block).err().map(JobOutcome::Failed),
            Err(again) => {
                warn!(
                    "{}: the records before the failing one failed too: {again}",
                    self.job
                );
                None
            }
        }
    }

    /// Puts a failed record in the dead-letter file and `skipped`, so it is
    /// never replayed, also not after `--restore`.
    fn dead_letter(&mut self, seq: u64, failure: &TaskFailure) {
        let job = &self.job;
        self.skipped.insert(seq);
        if let Err(e) = self.store.add_skipped(seq) {
            warn!("{job}: {e}");
        }
        match dead_letter::append(&self.dead_letter, &self.info, failure) {
            Err(e) => warn!("{job}: cannot write the dead-letter file: {e}"),
            Ok(()) => info!(
                "{job}: {} written to `{}`",
                crate::record::shown(seq),
                self.dead_letter.display()
            ),
        }
    }

    /// A guest fault that did not reproduce when its record ran alone in a
    /// fresh instance: the record's output counts and nothing is
    /// dead-lettered, but the fault counts against the restart strategy.
    /// `Some` when the strategy gives up.
    pub(super) fn unreproduced(&mut self, failure: TaskFailure) -> Option<JobOutcome> {
        let job = self.job.clone();
        let what = match failure.seq {
            Some(_) => {
                "it did not reproduce when the record ran alone in a fresh instance, so its output counts and nothing is dead-lettered"
            }
            None => {
                "no record reproduces it alone, so the batch's output counts and nothing is dead-lettered"
            }
        };
        error!("{job} switched from RUNNING to FAILING: {failure}; {what}");
        self.status.failed(&failure);
        match self.tracker.on_failure(Instant::now()) {
            Decision::GiveUp(reason) => Some(JobOutcome::Failed(format!("{failure}; {reason}"))),
            Decision::Restart { delay, attempt } => {
                self.log_restart(attempt, delay);
                if self.sleep_unless_cancelled(delay) {
                    return Some(JobOutcome::Canceled);
                }
                info!(
                    "{job} switched from RESTARTING to RUNNING: fresh guest instance, keyed state kept, the batch goes on"
                );
                self.status.set_state(JobState::Running);
                None
            }
        }
    }

    /// A timer or a window that failed alone in a fresh instance: the stage
    /// dropped it; it goes to the dead letters and counts against the
    /// restart strategy. `Some` when the strategy gives up.
    pub(super) fn dropped(&mut self, failure: TaskFailure) -> Option<JobOutcome> {
        let job = self.job.clone();
        error!(
            "{job} switched from RUNNING to FAILING: {failure}; it failed alone in a fresh instance, so it is dropped and written to the dead letters"
        );
        self.status.failed(&failure);
        if let Err(e) = dead_letter::append(&self.dead_letter, &self.info, &failure) {
            warn!("{job}: cannot write the dead-letter file: {e}");
        }
        match self.tracker.on_failure(Instant::now()) {
            Decision::GiveUp(reason) => Some(JobOutcome::Failed(format!("{failure}; {reason}"))),
            Decision::Restart { delay, attempt } => {
                self.log_restart(attempt, delay);
                if self.sleep_unless_cancelled(delay) {
                    return Some(JobOutcome::Canceled);
                }
                info!(
                    "{job} switched from RESTARTING to RUNNING: fresh guest instance, state kept, the batch goes on"
                );
                None
            }
        }
    }

    /// Logs the move to RESTARTING.
    fn log_restart(&self, attempt: u32, delay: Duration) {
        let of = match self.spec.restart {
            RestartStrategy::FixedDelay { attempts, .. } => format!(" of {attempts}"),
            _ => String::new(),
        };
        info!(
            "{} switched from FAILING to RESTARTING: restart {attempt}{of} in {} ms",
            self.job,
            delay.as_millis()
        );
        self.status.restarted();
    }

    /// Waits out a restart delay; `true` when the job was cancelled meanwhile.
    fn sleep_unless_cancelled(&self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        while Instant::now() < until {
            if self.cancel.is_cancelled() {
                return true;
            }
            std::thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
        }
        false
    }

    /// Restarts after a guest fault without a restore: every guest instance
    /// is fresh (`Workers::abandon`), the keyed state stays, and the failing
    /// batch (less the failing record) and the batches abandoned behind it
    /// run again before anything new is read.
    fn recover_locally(&mut self, batch: &SourceBatch, ahead: &[Arc<SourceBatch>], seq: u64) {
        self.restarted = true;
        let again = std::iter::once(batch)
            .chain(ahead.iter().map(|b| &**b))
            .map(SourceBatch::again)
            .collect::<Vec<_>>();
        for b in again.into_iter().rev() {
            self.requeue.push_front(b);
        }
        // Nothing after the last output written is in the stages now: a
        // barrier before the batches run again holds that position, not
        // one past records whose updates and output it lacks.
        self.submitted = self.processed.clone();
        info!(
            "{} switched from RESTARTING to RUNNING: fresh guest instances, keyed state kept (the failing batch never reached it), going on after {}",
            self.job,
            crate::record::shown(seq)
        );
        self.status.set_state(JobState::Running);
    }

    /// Drops every guest instance, restores state from the last completed
    /// checkpoint, and replays the input from its position.
    pub(super) fn restore(&mut self) -> Result<(), String> {
        self.restarted = true;
        self.final_tick = false;
        self.queue.iter_mut().for_each(|q| q.clear());
        self.requeue.clear();
        let snapshot = self.last.clone().unwrap_or_else(|| self.origin.clone());
        self.held = snapshot.id;
        let stages = operators(self.module, self.spec, &self.job, Some(&snapshot))
            .map_err(|f| f.to_string())?;
        self.workers = Workers::start(stages).map_err(|f| f.to_string())?;
        let from = snapshot.source.clone();
        if let Some(t) = self.timeline.as_mut() {
            t.rewind(Some(snapshot.id).filter(|id| *id > 0), from.clone())?;
        }
        self.processed = from.clone();
        self.submitted = from.clone();
        self.out = snapshot.sink.clone();
        self.replay = if self.frontier.seq > from.seq {
            Some(
                self.source
                    .replay(from.clone(), Some(self.frontier.seq), &self.options)
                    .map_err(|e| format!("cannot replay the input: {e}"))?,
            )
        } else {
            None
        };
        let what = if snapshot.id == 0 {
            "the job's start".to_string()
        } else {
            format!("checkpoint `chk-{}`", snapshot.id)
        };
        let replaying = match from.partitions {
            Some(_) => format!(
                "replaying {} record(s) in the order they were read",
                self.frontier.seq.saturating_sub(from.seq)
            ),
            None => format!("replaying records {}..{}", from.seq + 1, self.frontier.seq),
        };
        info!(
            "{} switched from RESTARTING to RUNNING: state restored from {what} ({} keys), {replaying}",
            self.job,
            snapshot.keys()
        );
        self.status.set_state(JobState::Running);
        Ok(())
    }
}

/// Runs one batch through every stage, on workers with nothing else in
/// flight: the output for the sink.
fn run_through(workers: &mut Workers, batch: Arc<SourceBatch>) -> Result<Block, TaskFailure> {
    let lost = || TaskFailure::of_subtask(0, "the stage's threads stopped", Fault::Environment);
    let clock = Clock {
        processing_time: batch.processing_time.unwrap_or_default(),
        ..Clock::default()
    };
    let mut item = Item::Records(batch.clone(), clock);
    for stage in 0..workers.stages() {
        workers.submit(stage, item)?;
        let outputs = match workers.collect(stage, true) {
            Some(Collected::Outputs(result)) => result?,
            _ => return Err(lost()),
        };
        if stage + 1 == workers.stages() {
            let mut block = exchange::merge(outputs.into_iter().map(|o| o.lines).collect());
            block.runs = batch.runs.clone();
            return Ok(block);
        }
        item = Item::Rows(batch.clone(), Arc::new(outputs), clock);
    }
    Err(lost())
}
