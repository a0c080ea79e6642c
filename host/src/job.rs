//! A running job: its lifecycle (CREATED → RUNNING → FINISHED / FAILED /
//! CANCELED), its parallel subtasks, and the loop that moves each batch
//! from the source through the guests and the keyed state to the sink.
//!
//! Each batch goes through two steps. In the map step every subtask runs
//! its slice of the batch through its own guest instance (flat-map chained
//! with key-selector) and routes each row to the subtask that owns the row's
//! key group. In the aggregate step every subtask folds the rows routed to
//! it into its keyed state, in input order. Outputs are then merged by
//! (record, row) so the printed order is the same at any parallelism.
//!
//! A job holds no process-global state: many can run side by side in one
//! process, each with its own cancel token.

use std::collections::{BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError, bounded};
use tracing::{error, info, warn};

use crate::checkpoint::{self, JobInfo, JobRecord, SinkPosition, Snapshot, SourcePosition, Store};
use crate::guest::Module;
use crate::journal;
use crate::restart::{Decision, RestartStrategy, RestartTracker};
use crate::sink::{Resume, Sink};
use crate::source::{self, ReplayFrom, SourceBatch, SourceEvent, SourceOptions, StartAt};
use crate::spec::{JobSpec, SinkSpec, SourceSpec};
use crate::task::{self, MAP_AHEAD, Output, Workers};

/// Cancels a job from another thread (a signal handler, a server).
#[derive(Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the job to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether the job was asked to stop.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// The flag itself, for signal handlers.
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.0.clone()
    }
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// A bounded source ended and every record was processed.
    Finished,
    /// The job was cancelled.
    Canceled,
    /// The job failed for good; the cause, worded for the user.
    Failed(String),
}

/// Whose fault a task failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The guest trapped, returned an error or broke the encoding.
    Guest,
    /// The job's logic does not fit its data (an aggregation over text, say).
    Job,
    /// The environment: a source or sink failed.
    Environment,
    /// The host itself: a bug, never the user's or the guest's doing.
    Host,
}

impl Fault {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Fault::Guest => "guest",
            Fault::Job => "job",
            Fault::Environment => "environment",
            Fault::Host => "host",
        }
    }
}

/// A failed task, with the record it failed on when there is one.
#[derive(Debug, Clone)]
pub struct TaskFailure {
    /// The subtask (0-based).
    pub subtask: u32,
    /// The failing record's number, when known.
    pub seq: Option<u64>,
    /// The failing record's text (lossy, shortened), when known.
    pub input: Option<String>,
    /// What went wrong.
    pub cause: String,
    /// Whose fault it is.
    pub fault: Fault,
}

impl std::fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} fault in subtask {}",
            self.fault.as_str(),
            self.subtask
        )?;
        if let Some(seq) = self.seq {
            write!(f, " on record {}", seq + 1)?;
        }
        if let Some(input) = &self.input {
            write!(f, " {input:?}")?;
        }
        write!(f, ": {}", self.cause)
    }
}

/// A job ready to run: its id, its checkpoint directory and, when it is
/// resumed, the checkpoint it starts from. Preparing checks everything a
/// user can get wrong about a restore before any record flows.
pub struct Prepared {
    id: String,
    store: Store,
    restored: Option<Snapshot>,
    /// Where a restored job's output continues.
    resume: Option<Resume>,
    notes: Vec<String>,
    skipped: BTreeSet<u64>,
    live_start: SourcePosition,
    replay: Option<(SourcePosition, u64)>,
    next_checkpoint: u64,
}

impl Prepared {
    /// The job's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The job's checkpoint directory.
    pub fn dir(&self) -> &std::path::Path {
        self.store.path()
    }
}

fn journal_dir(store: &Store, spec: &JobSpec) -> Option<PathBuf> {
    (!matches!(spec.source, SourceSpec::File(_))).then(|| store.path().join("journal"))
}

/// What a restore starts from: a checkpoint, or the job's start when none
/// completed.
struct RestorePoint {
    job_id: String,
    checkpoint_id: u64,
    module_digest: String,
    max_parallelism: u32,
    sink: String,
    snapshot: Snapshot,
}

/// Sets up the job's checkpoint directory, or finds and checks the
/// checkpoint to resume from (`--restore`). Errors are the user's to fix.
pub fn prepare(module: &Module, spec: &JobSpec) -> Result<Prepared, String> {
    let Some(restore) = &spec.restore else {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let store = Store::open(&spec.checkpoint_dir.join(&id))?;
        store.write_job(&JobRecord {
            format: checkpoint::FORMAT.into(),
            format_version: checkpoint::FORMAT_VERSION,
            job_id: id.clone(),
            job_name: spec.name.clone(),
            created_at_ms: now_ms(),
            module_digest: module.digest().to_string(),
            max_parallelism: spec.max_parallelism,
            source: spec.source.to_string(),
            sink: spec.sink.to_string(),
        })?;
        return Ok(Prepared {
            id,
            store,
            restored: None,
            resume: None,
            notes: Vec::new(),
            skipped: BTreeSet::new(),
            live_start: SourcePosition::default(),
            replay: None,
            next_checkpoint: 1,
        });
    };
    let (dir, id) = checkpoint::resolve_restore(restore, &spec.checkpoint_dir)?;
    let store = Store::open(&dir)?;
    store.clean_in_progress();
    let (point, notes) = restore_point(&store, &dir, id)?;
    check_restore(&point, module, spec)?;
    let snapshot = point.snapshot;
    let mut skipped: BTreeSet<u64> = snapshot.skipped.iter().copied().collect();
    skipped.extend(store.skipped());
    let (live_start, replay) = match journal_dir(&store, spec) {
        None => (snapshot.source, None),
        Some(journal) => {
            let end = source::journal_end(&journal, snapshot.source).map_err(|e| {
                format!(
                    "cannot read the input journal in `{}`: {e}; the records read after the checkpoint are lost",
                    journal.display()
                )
            })?;
            (
                end,
                (end.seq > snapshot.source.seq).then_some((snapshot.source, end.seq)),
            )
        }
    };
    let next_checkpoint = store
        .ids()
        .last()
        .copied()
        .unwrap_or(0)
        .max(point.checkpoint_id)
        + 1;
    let previous = SinkSpec::parse(&point.sink)
        .map_err(|e| format!("the checkpoint's sink is not one this host knows: {e}"))?;
    let resume = Resume {
        previous,
        bytes: snapshot.sink.bytes,
    };
    crate::sink::check_resume(&spec.sink, &resume)?;
    Ok(Prepared {
        id: point.job_id,
        store,
        resume: Some(resume),
        restored: Some(snapshot),
        notes,
        skipped,
        live_start,
        replay,
        next_checkpoint,
    })
}

/// The checkpoint `id` of the job in `dir`, or its newest intact one, or,
/// when the job never completed a checkpoint, its start.
fn restore_point(
    store: &Store,
    dir: &std::path::Path,
    id: Option<u64>,
) -> Result<(RestorePoint, Vec<String>), String> {
    let (found, notes) = match id {
        Some(id) => (
            Some(store.load(id).map_err(|e| {
                format!(
                    "checkpoint `{}` is damaged ({e}); restore another one",
                    dir.join(format!("chk-{id}")).display()
                )
            })?),
            Vec::new(),
        ),
        None => store.latest(),
    };
    if let Some((m, snapshot)) = found {
        let point = RestorePoint {
            job_id: m.job_id,
            checkpoint_id: m.checkpoint_id,
            module_digest: m.module_digest,
            max_parallelism: m.max_parallelism,
            sink: m.sink.uri,
            snapshot,
        };
        return Ok((point, notes));
    }
    let record = match store.job()? {
        Some(record) if notes.is_empty() => record,
        _ => {
            let mut message = format!("no intact checkpoint to restore in `{}`", dir.display());
            for n in &notes {
                message.push_str(&format!("; {n}"));
            }
            if notes.is_empty() {
                message.push_str(": it is not a job directory (it has no `job.json`); pass a job's directory, `chk-N` or `latest`");
            }
            return Err(message);
        }
    };
    let point = RestorePoint {
        job_id: record.job_id,
        checkpoint_id: 0,
        module_digest: record.module_digest,
        max_parallelism: record.max_parallelism,
        sink: record.sink,
        snapshot: Snapshot::default(),
    };
    Ok((point, notes))
}

/// Refuses a restore that cannot work with this module and these settings.
fn check_restore(point: &RestorePoint, module: &Module, spec: &JobSpec) -> Result<(), String> {
    let what = match point.checkpoint_id {
        0 => "the job".to_string(),
        id => format!("checkpoint `chk-{id}`"),
    };
    if point.module_digest != module.digest() && !spec.allow_module_change {
        return Err(format!(
            "{what} was taken with another module (xxh3:{}, this one is xxh3:{}); \
             pass --allow-module-change to restore it anyway",
            point.module_digest,
            module.digest()
        ));
    }
    if point.max_parallelism != spec.max_parallelism {
        return Err(format!(
            "{what} has {} key groups; pass --max-parallelism {}",
            point.max_parallelism, point.max_parallelism
        ));
    }
    if spec.parallelism > point.max_parallelism {
        return Err(format!(
            "parallelism {} is more than the {} key groups of {what}",
            spec.parallelism, point.max_parallelism
        ));
    }
    Ok(())
}

/// Runs a job to its end. Logs every state change; never exits the process.
pub fn run(
    module: &Module,
    spec: &JobSpec,
    prepared: Prepared,
    cancel: &CancelToken,
) -> JobOutcome {
    let job = format!("job `{}` ({})", spec.name, prepared.id);
    info!(
        "{job} CREATED: source {}, sink {}, parallelism {}, restart {}",
        spec.source, spec.sink, spec.parallelism, spec.restart
    );
    match spec.checkpoint_interval {
        Some(every) => info!(
            "{job}: checkpoints every {} ms go to `{}`",
            every.as_millis(),
            prepared.store.path().display()
        ),
        None => info!(
            "{job}: checkpointing is off; the journal and dead letters go to `{}`",
            prepared.store.path().display()
        ),
    }
    for note in &prepared.notes {
        warn!("{job}: {note}; falling back to an older checkpoint");
    }
    match &prepared.restored {
        Some(s) if s.id == 0 => info!(
            "{job}: no checkpoint of it completed: restoring from the job's start{} ({} skipped record(s))",
            if journal_dir(&prepared.store, spec).is_some() {
                " and replaying its journal"
            } else {
                ", reading the source again"
            },
            prepared.skipped.len()
        ),
        Some(s) => info!(
            "{job}: restoring checkpoint `chk-{}` ({} keys, source at record {}, {} skipped record(s))",
            s.id,
            s.keys(),
            s.source.seq,
            prepared.skipped.len()
        ),
        None => {}
    }
    let mut runner = match Runner::new(module, spec, prepared, cancel, &job) {
        Ok(r) => r,
        Err(cause) => {
            error!("{job} switched from CREATED to FAILED: {cause}");
            return JobOutcome::Failed(cause);
        }
    };
    info!("{job} switched from CREATED to RUNNING");
    let outcome = runner.run();
    runner.finish(&outcome);
    outcome
}

/// What taking a mapped batch in did.
enum Advance {
    /// Nothing was ready.
    Idle,
    /// A batch was taken in.
    Progressed,
    /// The job ended.
    Ended(JobOutcome),
}

/// A checkpoint being written in the background.
struct InFlight {
    id: u64,
    started: Instant,
    /// The snapshot and how long writing it took, or why it failed.
    done: Receiver<Result<(Snapshot, Duration), String>>,
}

/// The running job: the coordinator of its subtasks, source, sink,
/// checkpoints and restarts.
struct Runner<'a> {
    module: &'a Module,
    spec: &'a JobSpec,
    cancel: &'a CancelToken,
    job: &'a str,
    info: JobInfo,
    store: Arc<Store>,
    workers: Workers,
    sink: Sink,
    live: Receiver<SourceEvent>,
    source_cancel: Arc<AtomicBool>,
    replay: Option<Receiver<SourceEvent>>,
    /// The next record the job has not yet received from the live source.
    frontier: SourcePosition,
    /// The source position after the last processed batch.
    processed: SourcePosition,
    /// Position in the output stream (lines, bytes) after the last batch.
    out: SinkPosition,
    /// Lines already written to the sink (a replay does not write them again).
    written: u64,
    skipped: BTreeSet<u64>,
    /// The last completed checkpoint: the restore point.
    last: Option<Arc<Snapshot>>,
    /// Where the job started, when no checkpoint has completed yet.
    origin: Arc<Snapshot>,
    tracker: RestartTracker,
    next_checkpoint: u64,
    in_flight: Option<InFlight>,
    last_checkpoint_start: Instant,
    last_checkpoint_end: Instant,
    dead_letter: PathBuf,
    /// For the print sink: where `written` is kept across runs.
    printed: Option<std::fs::File>,
    /// How long the last checkpoint held up processing.
    last_pause: Duration,
    /// The checkpoint whose key groups the state may share: the last one
    /// taken, or the one restored.
    held: u64,
    /// Batches to run again after a local recovery, before anything new.
    requeue: VecDeque<SourceBatch>,
    /// Batches whose map step was started, oldest first, and where they end.
    mapping: VecDeque<(Arc<SourceBatch>, SourcePosition)>,
    /// The batch whose aggregate step is in flight, and where it ends.
    pending: Option<(Arc<SourceBatch>, SourcePosition)>,
    /// Set when a drain restarted the job, so the caller drops its batch.
    restarted: bool,
    /// The live source ended while a restart's replay was still to come.
    live_ended: bool,
}

impl<'a> Runner<'a> {
    fn new(
        module: &'a Module,
        spec: &'a JobSpec,
        prepared: Prepared,
        cancel: &'a CancelToken,
        job: &'a str,
    ) -> Result<Self, String> {
        let mut restored = prepared.restored;
        let (sink, same) = Sink::open(&spec.sink, prepared.resume.as_ref())?;
        if let Some(s) = &mut restored
            && !same
        {
            // A new sink file starts empty at the restore point.
            s.sink.bytes = 0;
        }
        let restored = restored.map(Arc::new);
        let workers =
            Workers::start(module, spec, restored.as_deref()).map_err(|f| f.to_string())?;
        let options = source_options(spec);
        let source_cancel = Arc::new(AtomicBool::new(false));
        let start = StartAt {
            position: prepared.live_start,
            journal: journal_dir(&prepared.store, spec),
        };
        let live = source::spawn(&spec.source, options.clone(), start, source_cancel.clone())
            .map_err(|e| format!("cannot start the source: {e}"))?;
        let replay = match (prepared.replay, journal_dir(&prepared.store, spec)) {
            (Some((from, until)), Some(dir)) => Some(
                source::spawn_replay(ReplayFrom::Journal(dir), from, Some(until), options)
                    .map_err(|e| format!("cannot replay the journal: {e}"))?,
            ),
            _ => None,
        };
        let origin = restored.clone().unwrap_or_default();
        let held = origin.id;
        let info = JobInfo {
            job_id: prepared.id.clone(),
            job_name: spec.name.clone(),
            module_digest: module.digest().to_string(),
            parallelism: spec.parallelism,
            max_parallelism: spec.max_parallelism,
            aggregation: spec
                .aggregation
                .map_or_else(|| "none".to_string(), |a| a.to_string()),
            source_uri: spec.source.to_string(),
            sink_uri: spec.sink.to_string(),
        };
        let dead_letter = spec
            .dead_letter
            .clone()
            .unwrap_or_else(|| prepared.store.path().join("dead-letter.jsonl"));
        let processed = origin.source;
        let out = origin.sink;
        // stdout cannot take back what it printed: a resumed job skips the
        // lines an earlier run of it already printed.
        let (printed, written) = match spec.sink {
            SinkSpec::Print => (
                Some(prepared.store.printed_file()?),
                out.lines.max(prepared.store.printed()),
            ),
            _ => (None, out.lines),
        };
        Ok(Runner {
            module,
            spec,
            cancel,
            job,
            info,
            store: Arc::new(prepared.store),
            workers,
            sink,
            live,
            source_cancel,
            replay,
            frontier: prepared.live_start,
            processed,
            out,
            written,
            skipped: prepared.skipped,
            last: restored,
            origin,
            tracker: RestartTracker::new(spec.restart),
            next_checkpoint: prepared.next_checkpoint,
            in_flight: None,
            last_checkpoint_start: Instant::now(),
            last_checkpoint_end: Instant::now(),
            dead_letter,
            printed,
            last_pause: Duration::ZERO,
            held,
            requeue: VecDeque::new(),
            mapping: VecDeque::new(),
            pending: None,
            restarted: false,
            live_ended: false,
        })
    }

    fn run(&mut self) -> JobOutcome {
        let outcome = self.run_loop();
        // Whatever ended the job, the batch in flight is written first.
        match self.drain() {
            Some(failed) if outcome != JobOutcome::Canceled => failed,
            _ => outcome,
        }
    }

    fn run_loop(&mut self) -> JobOutcome {
        loop {
            if self.cancel.is_cancelled() {
                return JobOutcome::Canceled;
            }
            self.poll_checkpoint();
            // Take in what the mappers finished, in order.
            loop {
                match self.advance(false) {
                    Advance::Ended(outcome) => return outcome,
                    Advance::Progressed => continue,
                    Advance::Idle => break,
                }
            }
            if self.checkpoint_due() && self.mapping.is_empty() {
                if let Some(outcome) = self.drain() {
                    return outcome;
                }
                self.checkpoint_now();
            }
            if let Some(batch) = self.requeue.pop_front() {
                if let Some(outcome) = self.process(batch) {
                    return outcome;
                }
                continue;
            }
            let from_replay = self.replay.is_some();
            if !from_replay && self.live_ended {
                self.restarted = false;
                if let Some(outcome) = self.drain() {
                    return outcome;
                }
                if !self.restarted {
                    return JobOutcome::Finished;
                }
                continue;
            }
            let rx = self.replay.as_ref().unwrap_or(&self.live);
            let event = match rx.try_recv() {
                Ok(event) => event,
                Err(TryRecvError::Disconnected) if from_replay => SourceEvent::End,
                Err(TryRecvError::Disconnected) => {
                    return JobOutcome::Failed("the source stopped unexpectedly".into());
                }
                Err(TryRecvError::Empty) if !self.mapping.is_empty() => {
                    // Nothing to read: wait for a mapper or the source.
                    self.workers.wait(rx, Duration::from_millis(50));
                    continue;
                }
                Err(TryRecvError::Empty) => {
                    // Nothing waiting: finish the batch in flight so its
                    // output is not held back, then wait.
                    if let Some(outcome) = self.drain() {
                        return outcome;
                    }
                    let rx = self.replay.as_ref().unwrap_or(&self.live);
                    match rx.recv_timeout(Duration::from_millis(50)) {
                        Ok(event) => event,
                        Err(RecvTimeoutError::Timeout) => continue,
                        Err(RecvTimeoutError::Disconnected) if from_replay => SourceEvent::End,
                        Err(RecvTimeoutError::Disconnected) => {
                            return JobOutcome::Failed("the source stopped unexpectedly".into());
                        }
                    }
                }
            };
            match event {
                SourceEvent::Batch(batch) => {
                    if !from_replay {
                        self.frontier = SourcePosition {
                            seq: batch.end_seq,
                            offset: batch.end_offset,
                        };
                        for r in &batch.rejected {
                            warn!(
                                "{}: input fault on record {} {:?}: {}; record skipped",
                                self.job,
                                r.seq + 1,
                                r.preview,
                                r.reason
                            );
                        }
                    }
                    if let Some(outcome) = self.process(batch) {
                        return outcome;
                    }
                }
                SourceEvent::Notice(message) => warn!("{}: {message}", self.job),
                SourceEvent::End if from_replay => {
                    self.restarted = false;
                    if let Some(outcome) = self.drain() {
                        return outcome;
                    }
                    // A failure in the drain restarted the job with a new replay.
                    if !self.restarted {
                        self.replay = None;
                    }
                }
                SourceEvent::End => {
                    self.restarted = false;
                    if let Some(outcome) = self.drain() {
                        return outcome;
                    }
                    if !self.restarted {
                        return JobOutcome::Finished;
                    }
                    // The last batch failed and the job restarted: finish
                    // once the replay is through.
                    self.live_ended = true;
                }
                SourceEvent::Failed(message) => return JobOutcome::Failed(message),
            }
        }
    }

    /// Starts a batch's map step; `Some` when the job ends meanwhile.
    fn process(&mut self, batch: SourceBatch) -> Option<JobOutcome> {
        self.restarted = false;
        let end = SourcePosition {
            seq: batch.end_seq,
            offset: batch.end_offset,
        };
        let batch = without(batch, &self.skipped);
        if batch.records.is_empty() && self.mapping.is_empty() {
            if let Some(outcome) = self.finish_pending() {
                return Some(outcome);
            }
            if !self.restarted {
                self.processed = end;
            }
            return None;
        }
        let batch = Arc::new(batch);
        if let Err(failure) = self.workers.submit(&batch) {
            return Some(JobOutcome::Failed(failure.to_string()));
        }
        self.mapping.push_back((batch, end));
        // A restart meanwhile abandons this batch too: it is replayed.
        while self.mapping.len() > MAP_AHEAD && !self.restarted {
            if let Advance::Ended(outcome) = self.advance(true) {
                return Some(outcome);
            }
        }
        None
    }

    /// Takes the oldest mapped batch in: writes the output of the batch
    /// before it and starts its aggregate step, or handles its failure.
    fn advance(&mut self, block: bool) -> Advance {
        let Some(result) = self.workers.collect(block) else {
            return Advance::Idle;
        };
        let Some((batch, end)) = self.mapping.pop_front() else {
            return Advance::Ended(JobOutcome::Failed(
                "internal error: a mapped batch nobody waits for".into(),
            ));
        };
        // The previous batch must be written before this one goes on, and
        // before a failure of this one is handled.
        if let Some(outcome) = self.finish_pending() {
            return Advance::Ended(outcome);
        }
        if self.restarted {
            // The previous batch failed and the job restarted: this one is
            // replayed.
            return Advance::Progressed;
        }
        // Aligned with the stream: the state now holds exactly the batches
        // up to `processed`.
        if self.checkpoint_due() {
            self.checkpoint_now();
        }
        let mut give_up = None;
        let result = result.map(|mut mapped| {
            for fault in task::take_unreproduced(&mut mapped) {
                if give_up.is_none() {
                    give_up = self.unreproduced(fault);
                }
            }
            mapped
        });
        match result.and_then(|m| self.workers.aggregate(&batch, m)) {
            Ok(()) => self.pending = Some((batch, end)),
            Err(failure) => {
                if let Some(outcome) = self.fail(&batch, failure) {
                    return Advance::Ended(outcome);
                }
            }
        }
        if let Some(outcome) = give_up {
            // The batch's output is whole: write it, then stop.
            self.mapping.clear();
            self.workers.abandon();
            return Advance::Ended(self.finish_pending().unwrap_or(outcome));
        }
        Advance::Progressed
    }

    /// A guest fault that did not reproduce when its record ran alone in a
    /// fresh instance: the record's output counts and nothing is
    /// dead-lettered, but the fault counts against the restart strategy.
    /// `Some` when the strategy gives up.
    fn unreproduced(&mut self, failure: TaskFailure) -> Option<JobOutcome> {
        let job = self.job;
        let what = match failure.seq {
            Some(_) => {
                "it did not reproduce when the record ran alone in a fresh instance, so its output counts and nothing is dead-lettered"
            }
            None => {
                "no record reproduces it alone, so the batch's output counts and nothing is dead-lettered"
            }
        };
        error!("{job} switched from RUNNING to FAILING: {failure}; {what}");
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

    /// Takes every batch in and writes all output.
    fn drain(&mut self) -> Option<JobOutcome> {
        while !self.mapping.is_empty() {
            if let Advance::Ended(outcome) = self.advance(true) {
                return Some(outcome);
            }
        }
        self.finish_pending()
    }

    /// Waits for the batch in flight and writes its output.
    fn finish_pending(&mut self) -> Option<JobOutcome> {
        let (batch, end) = self.pending.take()?;
        match self.workers.finish()? {
            Ok(output) => {
                if let Err(e) = self.emit(&output) {
                    return Some(JobOutcome::Failed(e));
                }
                self.processed = end;
                None
            }
            Err(failure) => self.fail(&batch, failure),
        }
    }

    /// Writes a block of output, leaving out lines a replay already wrote.
    fn emit(&mut self, output: &Output) -> Result<(), String> {
        let mut bytes = &output.bytes[..];
        let already = self
            .written
            .saturating_sub(self.out.lines)
            .min(output.lines);
        if already > 0 {
            let cut = nth_line_end(bytes, already);
            bytes = &bytes[cut..];
        }
        self.out.lines += output.lines;
        self.out.bytes += output.bytes.len() as u64;
        self.written = self.written.max(self.out.lines);
        if bytes.is_empty() {
            return Ok(());
        }
        self.sink
            .write(bytes)
            .and_then(|()| self.sink.flush())
            .map_err(|e| format!("sink `{}` failed: {e}", self.spec.sink))?;
        if let Some(f) = &self.printed {
            use std::os::unix::fs::FileExt;
            f.write_all_at(&self.written.to_le_bytes(), 0)
                .map_err(|e| format!("cannot record the printed position: {e}"))?;
        }
        Ok(())
    }

    /// A task failed: salvage the records before the failing one, put the
    /// record in the dead-letter file, and restart or give up.
    fn fail(&mut self, batch: &SourceBatch, failure: TaskFailure) -> Option<JobOutcome> {
        let job = self.job;
        error!("{job} switched from RUNNING to FAILING: {failure}");
        // Batches mapped ahead are abandoned: run again after the restart.
        let ahead: Vec<Arc<SourceBatch>> = self.mapping.drain(..).map(|(b, _)| b).collect();
        self.workers.abandon();
        let decision = self.tracker.on_failure(Instant::now());
        // A guest fault happens in the map step, so the keyed state has not
        // seen this batch: it is the state a restore and replay would rebuild.
        let local = self.spec.local_recovery
            && failure.fault == Fault::Guest
            && failure.seq.is_some()
            && matches!(decision, Decision::Restart { .. });
        if !local
            && let (Some(seq), Fault::Guest) = (failure.seq, failure.fault)
            && let Some(index) = batch.seqs.iter().position(|s| *s == seq)
            && index > 0
        {
            // No state changed: the records before the failing one run
            // again, and their output is not lost if the job gives up now.
            let prefix = Arc::new(prefix(batch, index));
            match self.workers.process(prefix) {
                Ok(output) => {
                    if let Err(e) = self.emit(&output) {
                        return Some(JobOutcome::Failed(e));
                    }
                }
                Err(again) => {
                    warn!("{job}: the records before the failing one failed too: {again}")
                }
            }
        }
        if let Some(seq) = failure.seq {
            self.skipped.insert(seq);
            if let Err(e) = self.store.add_skipped(seq) {
                warn!("{job}: {e}");
            }
            if let Err(e) = dead_letter(&self.dead_letter, &self.info, &failure) {
                warn!("{job}: cannot write the dead-letter file: {e}");
            } else {
                info!(
                    "{job}: record {} written to `{}`",
                    seq + 1,
                    self.dead_letter.display()
                );
            }
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

    /// Restarts after a guest fault without a restore: every guest instance
    /// is fresh (`Workers::abandon`), the keyed state stays, and the failing
    /// batch (less the failing record) and the batches abandoned behind it
    /// run again before anything new is read.
    fn recover_locally(&mut self, batch: &SourceBatch, ahead: &[Arc<SourceBatch>], seq: u64) {
        self.restarted = true;
        let again = std::iter::once(batch)
            .chain(ahead.iter().map(|b| &**b))
            .map(|b| SourceBatch {
                end_seq: b.end_seq,
                end_offset: b.end_offset,
                ..prefix(b, b.records.len())
            })
            .collect::<Vec<_>>();
        for b in again.into_iter().rev() {
            self.requeue.push_front(b);
        }
        info!(
            "{} switched from RESTARTING to RUNNING: fresh guest instances, keyed state kept (the failing batch never reached it), going on after record {}",
            self.job,
            seq + 1
        );
    }

    /// Drops every guest instance, restores state from the last completed
    /// checkpoint, and replays the input from its position.
    fn restore(&mut self) -> Result<(), String> {
        self.restarted = true;
        self.pending = None;
        self.mapping.clear();
        self.requeue.clear();
        let snapshot = self.last.clone().unwrap_or_else(|| self.origin.clone());
        self.held = snapshot.id;
        self.workers =
            Workers::start(self.module, self.spec, Some(&snapshot)).map_err(|f| f.to_string())?;
        let from = snapshot.source;
        self.processed = from;
        self.out = snapshot.sink;
        if self.frontier.seq > from.seq {
            let store = match &self.spec.source {
                SourceSpec::File(path) => ReplayFrom::File(path.clone()),
                _ => ReplayFrom::Journal(self.store.path().join("journal")),
            };
            self.replay = Some(
                source::spawn_replay(
                    store,
                    from,
                    Some(self.frontier.seq),
                    source_options(self.spec),
                )
                .map_err(|e| format!("cannot replay the input: {e}"))?,
            );
        } else {
            self.replay = None;
        }
        let what = if snapshot.id == 0 {
            "the job's start".to_string()
        } else {
            format!("checkpoint `chk-{}`", snapshot.id)
        };
        info!(
            "{} switched from RESTARTING to RUNNING: state restored from {what} ({} keys), replaying records {}..{}",
            self.job,
            snapshot.keys(),
            from.seq + 1,
            self.frontier.seq
        );
        Ok(())
    }

    /// Whether a checkpoint is due: the interval and the pause passed, and
    /// the job moved on since the last one.
    fn checkpoint_due(&self) -> bool {
        let Some(every) = self.spec.checkpoint_interval else {
            return false;
        };
        if self.in_flight.is_some() || self.replay.is_some() {
            return false;
        }
        let base = self.last.as_ref().unwrap_or(&self.origin);
        let moved = match &self.pending {
            Some((_, end)) => *end != base.source,
            None => self.processed != base.source,
        };
        moved
            && self.last_checkpoint_start.elapsed() >= every
            && self.last_checkpoint_end.elapsed() >= self.spec.min_pause
    }

    /// Starts a checkpoint, warning when it cannot.
    fn checkpoint_now(&mut self) {
        if let Err(cause) = self.checkpoint() {
            warn!("{}: {cause}", self.job);
        }
    }

    /// Starts a checkpoint of the state up to `processed` (no aggregate step
    /// in flight; batches may be mapping); files are written in the background.
    fn checkpoint(&mut self) -> Result<(), String> {
        if self.pending.is_some() || self.replay.is_some() {
            return Ok(());
        }
        let id = self.next_checkpoint;
        self.next_checkpoint += 1;
        self.last_checkpoint_start = Instant::now();
        self.sink
            .sync()
            .map_err(|e| format!("checkpoint {id} skipped: cannot sync the sink: {e}"))?;
        if let Some(dir) = journal_dir(&self.store, self.spec) {
            journal::sync(&dir)
                .map_err(|e| format!("checkpoint {id} skipped: cannot sync the journal: {e}"))?;
        }
        let paused = Instant::now();
        let (subtasks, copies) = self.workers.snapshot().map_err(|f| f.to_string())?;
        let snapshot = Snapshot {
            id,
            created_at_ms: now_ms(),
            source: self.processed,
            sink: self.out,
            // Only skipped records a replay from here could meet.
            skipped: self.skipped.range(self.processed.seq..).copied().collect(),
            subtasks,
        };
        self.last_pause = paused.elapsed();
        if copies.groups + copies.ahead > 0 {
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
        self.held = id;
        let (tx, rx) = bounded(1);
        let store = self.store.clone();
        let info = self.info.clone();
        std::thread::Builder::new()
            .name("sluice-checkpoint".into())
            .spawn(move || {
                let started = Instant::now();
                let result = store
                    .write(&info, &snapshot)
                    .map(|_| (snapshot, started.elapsed()));
                let _ = tx.send(result);
            })
            .map_err(|e| format!("cannot start the checkpoint writer: {e}"))?;
        self.in_flight = Some(InFlight {
            id,
            started: Instant::now(),
            done: rx,
        });
        Ok(())
    }

    /// Takes a finished checkpoint in, or abandons one that took too long.
    fn poll_checkpoint(&mut self) {
        let Some(flight) = &self.in_flight else {
            return;
        };
        match flight.done.try_recv() {
            Ok(Ok((snapshot, took))) => {
                info!(
                    "{}: checkpoint `chk-{}` completed in {} ms ({} keys, source at record {}, processing paused {} us)",
                    self.job,
                    snapshot.id,
                    took.as_millis(),
                    snapshot.keys(),
                    snapshot.source.seq,
                    self.last_pause.as_micros()
                );
                self.in_flight = None;
                self.last_checkpoint_end = Instant::now();
                if let Some(old) = self.last.replace(Arc::new(snapshot))
                    && let Ok(old) = Arc::try_unwrap(old)
                {
                    self.workers.recycle(old);
                }
                if let Some(oldest) = self.store.retain(self.spec.retain_checkpoints)
                    && let Some(dir) = journal_dir(&self.store, self.spec)
                    && let Ok((_, old)) = self.store.load(oldest)
                {
                    journal::trim(&dir, old.source.offset);
                }
            }
            Ok(Err(e)) => {
                warn!("{}: checkpoint {} failed: {e}", self.job, flight.id);
                self.in_flight = None;
                self.last_checkpoint_end = Instant::now();
            }
            Err(_) if flight.started.elapsed() > self.spec.checkpoint_timeout => {
                warn!(
                    "{}: checkpoint {} abandoned after {} ms (--checkpoint-timeout)",
                    self.job,
                    flight.id,
                    flight.started.elapsed().as_millis()
                );
                self.in_flight = None;
                self.last_checkpoint_end = Instant::now();
            }
            Err(_) => {}
        }
    }

    /// Stops the source, flushes the sink, and keeps or removes checkpoints.
    fn finish(&mut self, outcome: &JobOutcome) {
        self.source_cancel.store(true, Ordering::Relaxed);
        if let Some(flight) = self.in_flight.take() {
            let _ = flight.done.recv_timeout(self.spec.checkpoint_timeout);
        }
        if let Err(e) = self.sink.flush() {
            error!("{}: sink `{}` failed: {e}", self.job, self.spec.sink);
        }
        let job = self.job;
        let dir = self.store.path().display().to_string();
        match outcome {
            JobOutcome::Finished => {
                self.store.remove_checkpoints();
                // Nothing left worth keeping (no dead letters): no directory.
                let _ = std::fs::remove_dir(self.store.path());
                info!("{job} switched from RUNNING to FINISHED");
            }
            JobOutcome::Canceled if !self.spec.retain_on_cancel => {
                self.store.remove_checkpoints();
                info!(
                    "{job} switched from RUNNING to CANCELED; checkpoints deleted (--on-cancel delete)"
                );
            }
            JobOutcome::Canceled => {
                info!(
                    "{job} switched from RUNNING to CANCELED; checkpoints kept in `{dir}`; resume with `{}`",
                    self.resume_hint()
                );
            }
            JobOutcome::Failed(cause) => {
                error!("{job} switched to FAILED: {cause}");
                let kept = match self.store.ids().last() {
                    Some(id) => {
                        format!("checkpoint `chk-{id}` and the journal are kept in `{dir}`")
                    }
                    None => format!(
                        "no checkpoint completed; the journal and dead letters are in `{dir}`"
                    ),
                };
                error!("{job}: {kept}; resume with `{}`", self.resume_hint());
            }
        }
    }

    /// How to resume this job: from its own directory, which is where its
    /// checkpoints went (after a `--restore`, the restored job's), and which
    /// `--restore latest` might not pick when other jobs share the parent.
    fn resume_hint(&self) -> String {
        format!(
            "host run --module {} --restore {}",
            self.spec.module_path.display(),
            self.store.path().display()
        )
    }
}

fn source_options(spec: &JobSpec) -> SourceOptions {
    SourceOptions {
        max_line_bytes: spec.max_line_bytes,
        connect_timeout: spec.connect_timeout,
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The byte offset after the `n`-th newline of `bytes`.
fn nth_line_end(bytes: &[u8], n: u64) -> usize {
    memchr::memchr_iter(b'\n', bytes)
        .nth(n.saturating_sub(1) as usize)
        .map_or(bytes.len(), |i| i + 1)
}

/// The batch without the records in `skipped`.
fn without(batch: SourceBatch, skipped: &BTreeSet<u64>) -> SourceBatch {
    let first = batch.seqs.first().copied().unwrap_or(0);
    let last = batch.seqs.last().copied().unwrap_or(0);
    if skipped.range(first..=last).next().is_none() {
        return batch;
    }
    let mut kept = SourceBatch {
        end_seq: batch.end_seq,
        end_offset: batch.end_offset,
        ..Default::default()
    };
    for (i, seq) in batch.seqs.iter().enumerate() {
        if !skipped.contains(seq) {
            kept.records.push_text(batch.records.text(i));
            kept.seqs.push(*seq);
        }
    }
    kept
}

/// The first `n` records of a batch.
fn prefix(batch: &SourceBatch, n: usize) -> SourceBatch {
    let mut p = SourceBatch::default();
    for i in 0..n {
        p.records.push_text(batch.records.text(i));
        p.seqs.push(batch.seqs[i]);
    }
    p
}

/// Appends a failed record to the dead-letter file as one JSON line.
fn dead_letter(
    path: &std::path::Path,
    info: &JobInfo,
    failure: &TaskFailure,
) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    let line = serde_json::json!({
        "time_ms": now_ms(),
        "job_id": info.job_id,
        "job": info.job_name,
        "record": failure.seq.map(|s| s + 1),
        "position": { "seq": failure.seq },
        "input": failure.input,
        "subtask": failure.subtask,
        "fault": failure.fault.as_str(),
        "error": failure.cause,
    });
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    writeln!(f, "{line}")?;
    f.sync_data()
}
