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

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};
use tracing::{error, info, warn};

use crate::checkpoint::{self, GroupState, JobInfo, SinkPosition, Snapshot, SourcePosition, Store};
use crate::guest::{GuestFailure, Instance, Module, Sandbox};
use crate::journal;
use crate::keyed::{self, KeyedState};
use crate::restart::{Decision, RestartStrategy, RestartTracker};
use crate::row::{self, RowRef};
use crate::sink::Sink;
use crate::source::{self, ReplayFrom, SourceBatch, SourceEvent, SourceOptions, StartAt};
use crate::spec::{JobSpec, SinkSpec, SourceSpec};

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
}

impl Fault {
    fn as_str(self) -> &'static str {
        match self {
            Fault::Guest => "guest",
            Fault::Job => "job",
            Fault::Environment => "environment",
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

/// Sets up the job's checkpoint directory, or finds and checks the
/// checkpoint to resume from (`--restore`). Errors are the user's to fix.
pub fn prepare(module: &Module, spec: &JobSpec) -> Result<Prepared, String> {
    let Some(restore) = &spec.restore else {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let store = Store::open(&spec.checkpoint_dir.join(&id))?;
        return Ok(Prepared {
            id,
            store,
            restored: None,
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
    let Some((manifest, snapshot)) = found else {
        let mut message = format!("no intact checkpoint to restore in `{}`", dir.display());
        for n in &notes {
            message.push_str(&format!("; {n}"));
        }
        return Err(message);
    };
    if manifest.module_digest != module.digest() && !spec.allow_module_change {
        return Err(format!(
            "checkpoint `chk-{}` was taken with another module (xxh3:{}, this one is xxh3:{}); \
             pass --allow-module-change to restore it anyway",
            manifest.checkpoint_id,
            manifest.module_digest,
            module.digest()
        ));
    }
    if manifest.max_parallelism != spec.max_parallelism {
        return Err(format!(
            "checkpoint `chk-{}` has {} key groups; pass --max-parallelism {}",
            manifest.checkpoint_id, manifest.max_parallelism, manifest.max_parallelism
        ));
    }
    if spec.parallelism > manifest.max_parallelism {
        return Err(format!(
            "parallelism {} is more than the checkpoint's {} key groups",
            spec.parallelism, manifest.max_parallelism
        ));
    }
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
        .max(manifest.checkpoint_id)
        + 1;
    Ok(Prepared {
        id: manifest.job_id.clone(),
        store,
        restored: Some(snapshot),
        notes,
        skipped,
        live_start,
        replay,
        next_checkpoint,
    })
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
    if let Some(s) = &prepared.restored {
        info!(
            "{job}: restoring checkpoint `chk-{}` ({} keys, source at record {}, {} skipped record(s))",
            s.id,
            s.keys(),
            s.source.seq,
            prepared.skipped.len()
        );
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

/// A checkpoint being written in the background.
struct InFlight {
    id: u64,
    started: Instant,
    done: Receiver<Result<Snapshot, String>>,
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
}

impl<'a> Runner<'a> {
    fn new(
        module: &'a Module,
        spec: &'a JobSpec,
        prepared: Prepared,
        cancel: &'a CancelToken,
        job: &'a str,
    ) -> Result<Self, String> {
        let restored = prepared.restored.map(Arc::new);
        let sink = Sink::open(&spec.sink, restored.as_ref().map(|s| s.sink.bytes))?;
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
        })
    }

    fn run(&mut self) -> JobOutcome {
        loop {
            if self.cancel.is_cancelled() {
                return JobOutcome::Canceled;
            }
            self.poll_checkpoint();
            if let Err(cause) = self.maybe_checkpoint() {
                warn!("{}: {cause}", self.job);
            }
            let from_replay = self.replay.is_some();
            let event = match &self.replay {
                Some(rx) => rx.recv().unwrap_or(SourceEvent::End),
                None => match self.live.recv_timeout(Duration::from_millis(50)) {
                    Ok(event) => event,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => {
                        return JobOutcome::Failed("the source stopped unexpectedly".into());
                    }
                },
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
                SourceEvent::End if from_replay => self.replay = None,
                SourceEvent::End => return JobOutcome::Finished,
                SourceEvent::Failed(message) => return JobOutcome::Failed(message),
            }
        }
    }

    /// Processes one batch; `Some` when the job ends because of it.
    fn process(&mut self, batch: SourceBatch) -> Option<JobOutcome> {
        let end = SourcePosition {
            seq: batch.end_seq,
            offset: batch.end_offset,
        };
        let batch = without(batch, &self.skipped);
        if !batch.records.is_empty() {
            let batch = Arc::new(batch);
            match self.workers.process(batch.clone()) {
                Ok(output) => {
                    if let Err(e) = self.emit(&output) {
                        return Some(JobOutcome::Failed(e));
                    }
                }
                Err(failure) => return self.fail(&batch, failure),
            }
        }
        self.processed = end;
        None
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
        if let (Some(seq), Fault::Guest) = (failure.seq, failure.fault)
            && let Some(index) = batch.seqs.iter().position(|s| *s == seq)
            && index > 0
        {
            // The guest failed in the map step, so no state changed: the
            // records before the failing one run again, and their output
            // is not lost if the job gives up now.
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
        match self.tracker.on_failure(Instant::now()) {
            Decision::GiveUp(reason) => Some(JobOutcome::Failed(format!("{failure}; {reason}"))),
            Decision::Restart { delay, attempt } => {
                let of = match self.spec.restart {
                    RestartStrategy::FixedDelay { attempts, .. } => format!(" of {attempts}"),
                    _ => String::new(),
                };
                info!(
                    "{job} switched from FAILING to RESTARTING: restart {attempt}{of} in {} ms",
                    delay.as_millis()
                );
                let until = Instant::now() + delay;
                while Instant::now() < until {
                    if self.cancel.is_cancelled() {
                        return Some(JobOutcome::Canceled);
                    }
                    std::thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
                }
                match self.restore() {
                    Ok(()) => None,
                    Err(cause) => Some(JobOutcome::Failed(cause)),
                }
            }
        }
    }

    /// Drops every guest instance, restores state from the last completed
    /// checkpoint, and replays the input from its position.
    fn restore(&mut self) -> Result<(), String> {
        let snapshot = self.last.clone().unwrap_or_else(|| self.origin.clone());
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

    /// Starts a checkpoint when one is due and the job has moved on.
    fn maybe_checkpoint(&mut self) -> Result<(), String> {
        let Some(every) = self.spec.checkpoint_interval else {
            return Ok(());
        };
        if self.in_flight.is_some() || self.replay.is_some() {
            return Ok(());
        }
        let base = self.last.as_ref().unwrap_or(&self.origin);
        let due = self.last_checkpoint_start.elapsed() >= every
            && self.last_checkpoint_end.elapsed() >= self.spec.min_pause;
        if !due || self.processed == base.source {
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
        let subtasks = self.workers.snapshot().map_err(|f| f.to_string())?;
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
        let (tx, rx) = bounded(1);
        let store = self.store.clone();
        let info = self.info.clone();
        std::thread::Builder::new()
            .name("sluice-checkpoint".into())
            .spawn(move || {
                let result = store.write(&info, &snapshot).map(|_| snapshot);
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
            Ok(Ok(snapshot)) => {
                info!(
                    "{}: checkpoint `chk-{}` completed in {} ms ({} keys, source at record {}, processing paused {} us)",
                    self.job,
                    snapshot.id,
                    flight.started.elapsed().as_millis(),
                    snapshot.keys(),
                    snapshot.source.seq,
                    self.last_pause.as_micros()
                );
                self.in_flight = None;
                self.last_checkpoint_end = Instant::now();
                self.last = Some(Arc::new(snapshot));
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

    fn resume_hint(&self) -> String {
        format!(
            "host run --module {} --restore latest --checkpoint-dir {}",
            self.spec.module_path.display(),
            self.spec.checkpoint_dir.display()
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

/// Rows one subtask's guest produced for a slice of a batch.
struct Mapped {
    /// The guest's encoded output.
    out: Vec<u8>,
    /// Rows routed to each subtask, in input order (keyed jobs).
    routes: Vec<Vec<RowRef>>,
    /// Formatted rows (unkeyed jobs).
    emitted: Emitted,
}

/// Formatted output lines with their (record, row) order.
#[derive(Default)]
struct Emitted {
    bytes: Vec<u8>,
    /// `(record << 32 | row, end offset in bytes)` per line.
    marks: Vec<(u64, u32)>,
}

impl Emitted {
    fn push_mark(&mut self, record: u32, ordinal: u32) {
        self.marks.push((
            (u64::from(record) << 32) | u64::from(ordinal),
            self.bytes.len() as u32,
        ));
    }
}

/// A block of output lines for the sink.
struct Output {
    bytes: Vec<u8>,
    lines: u64,
}

/// Merges per-subtask outputs into one block in (record, row) order.
fn merge(parts: Vec<Emitted>) -> Output {
    let lines = parts.iter().map(|p| p.marks.len() as u64).sum();
    Output {
        bytes: merge_bytes(parts),
        lines,
    }
}

fn merge_bytes(parts: Vec<Emitted>) -> Vec<u8> {
    let mut parts: Vec<Emitted> = parts.into_iter().filter(|p| !p.bytes.is_empty()).collect();
    match parts.len() {
        0 => return Vec::new(),
        1 => return parts.pop().map(|p| p.bytes).unwrap_or_default(),
        _ => {}
    }
    let total = parts.iter().map(|p| p.bytes.len()).sum();
    let mut out = Vec::with_capacity(total);
    let mut next = vec![0usize; parts.len()];
    loop {
        let mut best: Option<(usize, u64)> = None;
        for (i, p) in parts.iter().enumerate() {
            if let Some(&(order, _)) = p.marks.get(next[i])
                && best.is_none_or(|(_, b)| order < b)
            {
                best = Some((i, order));
            }
        }
        let Some((i, _)) = best else { break };
        let p = &parts[i];
        let start = if next[i] == 0 {
            0
        } else {
            p.marks[next[i] - 1].1 as usize
        };
        let end = p.marks[next[i]].1 as usize;
        out.extend_from_slice(&p.bytes[start..end]);
        next[i] += 1;
    }
    out
}

/// One parallel subtask: its guest instance and its key groups' state.
struct Subtask {
    index: u32,
    parallelism: u32,
    max_parallelism: u32,
    module: Module,
    params: Vec<(String, String)>,
    sandbox: Sandbox,
    /// The sink drops everything: count lines, do not format them.
    discard: bool,
    instance: Option<Instance>,
    state: Option<KeyedState>,
    log_window: Instant,
    log_lines: u32,
}

/// Guest log lines passed to the host's log per second per subtask.
const GUEST_LOG_LINES: u32 = 20;

impl Subtask {
    fn failure(
        &self,
        batch: &SourceBatch,
        record: Option<usize>,
        cause: String,
        fault: Fault,
    ) -> TaskFailure {
        TaskFailure {
            subtask: self.index,
            seq: record.map(|i| batch.seqs[i]),
            input: record.map(|i| {
                let text = batch.records.text(i);
                let shown = &text[..text.len().min(80)];
                String::from_utf8_lossy(shown).into_owned()
            }),
            cause,
            fault,
        }
    }

    fn output_limits(&self) -> row::OutputLimits {
        row::OutputLimits {
            rows: self.sandbox.limits.rows_per_record,
            bytes: self.sandbox.limits.bytes_per_record,
        }
    }

    /// Passes what the guest printed to the host's log, at most
    /// [`GUEST_LOG_LINES`] lines per second per subtask; says how many it dropped.
    fn forward_log(&mut self) {
        let Some(instance) = &self.instance else {
            return;
        };
        let text = instance.take_log();
        if text.is_empty() {
            return;
        }
        let now = Instant::now();
        if now.duration_since(self.log_window) >= Duration::from_secs(1) {
            self.log_window = now;
            self.log_lines = 0;
        }
        let mut dropped = 0u64;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if self.log_lines >= GUEST_LOG_LINES {
                dropped += 1;
                continue;
            }
            self.log_lines += 1;
            let shown: String = line.chars().take(500).collect();
            info!("subtask {} guest: {shown}", self.index);
        }
        if dropped > 0 {
            warn!(
                "subtask {}: {dropped} more guest log line(s) dropped (at most {GUEST_LOG_LINES} a second, {} bytes a call; --max-guest-log)",
                self.index, self.sandbox.limits.log_bytes
            );
        }
    }

    fn instance(&mut self) -> Result<&mut Instance, GuestFailure> {
        if self.instance.is_none() {
            self.instance = Some(self.module.instantiate_with(&self.params, &self.sandbox)?);
        }
        match self.instance.as_mut() {
            Some(instance) => Ok(instance),
            None => Err(GuestFailure {
                message: "no guest instance".into(),
                record: None,
            }),
        }
    }

    /// Calls the guest on records `range`; checks and routes its output.
    fn map(&mut self, batch: &SourceBatch, range: Range<usize>) -> Result<Mapped, TaskFailure> {
        let keyed = self.state.is_some();
        let mut mapped = Mapped {
            out: Vec::new(),
            routes: vec![Vec::new(); self.parallelism as usize],
            emitted: Emitted::default(),
        };
        if range.is_empty() {
            return Ok(mapped);
        }
        match self.call(batch, range.clone(), keyed) {
            Ok(out) => mapped.out = out,
            Err(first) => {
                // The batch failed as a whole: run its records one at a time
                // in a fresh instance to find the one that fails.
                self.instance = None;
                let found = self.probe(batch, range.clone(), keyed);
                self.instance = None;
                return Err(match found {
                    Some((i, cause)) => self.failure(batch, Some(i), cause, Fault::Guest),
                    None => self.failure(
                        batch,
                        None,
                        format!(
                            "{} (no single record of the batch reproduces it)",
                            first.message
                        ),
                        Fault::Guest,
                    ),
                });
            }
        }
        let base = range.start as u32;
        let (p, m) = (self.parallelism, self.max_parallelism);
        let out = &mapped.out;
        let routes = &mut mapped.routes;
        let emitted = &mut mapped.emitted;
        let limits = self.output_limits();
        let discard = self.discard;
        let checked = row::read_output(out, range.len(), keyed, limits, |mut r| {
            r.record += base;
            if keyed {
                let owner = keyed::subtask_of(keyed::key_group(r.hash, m), p, m);
                routes[owner as usize].push(r);
            } else {
                if !discard {
                    row::format_row(&out[r.row.0 as usize..r.row.1 as usize], &mut emitted.bytes);
                }
                emitted.push_mark(r.record, r.ordinal);
            }
        });
        if let Err(e) = checked {
            let record = e.1.map(|r| range.start + r as usize);
            let cause = match record {
                Some(_) => e.0,
                None => format!("the guest's output is malformed: {}", e.0),
            };
            return Err(self.failure(batch, record, cause, Fault::Guest));
        }
        Ok(mapped)
    }

    /// One guest call on records `range`: the output, or why it failed.
    fn call(
        &mut self,
        batch: &SourceBatch,
        range: Range<usize>,
        keyed: bool,
    ) -> Result<Vec<u8>, GuestFailure> {
        let records = batch.records.slice(range.clone());
        let instance = self.instance()?;
        let result = if keyed {
            instance.flat_map_keyed(records)
        } else {
            instance.flat_map(records)
        };
        if result.is_ok() {
            self.forward_log();
        }
        match result {
            Ok(out) => match out.failed {
                None => Ok(out.output),
                Some((index, message)) => Err(GuestFailure {
                    message: format!("the guest failed the record: {message}"),
                    record: Some(index),
                }),
            },
            Err(failure) => {
                self.instance = None;
                Err(failure)
            }
        }
    }

    /// Finds the first record of `range` that fails on its own.
    fn probe(
        &mut self,
        batch: &SourceBatch,
        range: Range<usize>,
        keyed: bool,
    ) -> Option<(usize, String)> {
        for i in range {
            match self.call(batch, i..i + 1, keyed) {
                Ok(out) => {
                    if let Err(e) = row::read_output(&out, 1, keyed, self.output_limits(), |_| {}) {
                        let cause = match e.1 {
                            Some(_) => e.0,
                            None => format!("the guest's output is malformed: {}", e.0),
                        };
                        return Some((i, cause));
                    }
                }
                Err(failure) => return Some((i, failure.message)),
            }
        }
        None
    }

    /// Folds the rows routed here, in input order, into the keyed state.
    fn aggregate(
        &mut self,
        batch: &SourceBatch,
        mapped: &[Mapped],
    ) -> Result<Emitted, TaskFailure> {
        let mut emitted = Emitted::default();
        let Some(state) = self.state.as_mut() else {
            return Ok(emitted);
        };
        let mut failed = None;
        'all: for m in mapped {
            for r in &m.routes[self.index as usize] {
                let key = &m.out[r.key.0 as usize..r.key.1 as usize];
                let row = &m.out[r.row.0 as usize..r.row.1 as usize];
                let out = (!self.discard).then_some(&mut emitted.bytes);
                if let Err(e) = state.apply(r.hash, key, row, out) {
                    failed = Some((r.record as usize, e.0));
                    break 'all;
                }
                emitted.push_mark(r.record, r.ordinal);
            }
        }
        match failed {
            Some((record, cause)) => Err(self.failure(batch, Some(record), cause, Fault::Job)),
            None => Ok(emitted),
        }
    }
}

enum Command {
    Map(Arc<SourceBatch>, Range<usize>),
    Aggregate(Arc<SourceBatch>, Arc<Vec<Mapped>>),
    Snapshot,
}

enum Reply {
    Mapped(Result<Mapped, TaskFailure>),
    Emitted(Result<Emitted, TaskFailure>),
    Snapshot(Vec<GroupState>),
}

/// Of two failures, the one to report: the earlier record, and one with a
/// record over one without.
fn earlier(old: Option<TaskFailure>, new: TaskFailure) -> Option<TaskFailure> {
    Some(match old {
        None => new,
        Some(old) => match (old.seq, new.seq) {
            (Some(a), Some(b)) if b < a => new,
            (None, Some(_)) => new,
            _ => old,
        },
    })
}

/// The subtasks, each on its own thread, so a busy guest pins only its own.
struct Workers {
    keyed: bool,
    links: Vec<(Sender<Command>, Receiver<Reply>)>,
}

impl Workers {
    fn start(
        module: &Module,
        spec: &JobSpec,
        restore: Option<&Snapshot>,
    ) -> Result<Self, TaskFailure> {
        let mut links = Vec::new();
        for index in 0..spec.parallelism {
            let range = keyed::key_group_range(index, spec.parallelism, spec.max_parallelism);
            let mut state = spec
                .aggregation
                .map(|agg| KeyedState::new(agg, spec.max_parallelism, range.clone()));
            if let (Some(state), Some(snapshot)) = (state.as_mut(), restore) {
                for group in snapshot.subtasks.iter().flatten() {
                    state.restore(group).map_err(|cause| TaskFailure {
                        subtask: index,
                        seq: None,
                        input: None,
                        cause: format!("cannot restore checkpoint `chk-{}`: {cause}", snapshot.id),
                        fault: Fault::Environment,
                    })?;
                }
            }
            let mut subtask = Subtask {
                index,
                parallelism: spec.parallelism,
                max_parallelism: spec.max_parallelism,
                module: module.clone(),
                params: spec.params.clone(),
                sandbox: spec.sandbox.clone(),
                discard: spec.sink == SinkSpec::Discard,
                instance: None,
                state,
                log_window: Instant::now(),
                log_lines: 0,
            };
            subtask.instance().map_err(|f| TaskFailure {
                subtask: index,
                seq: None,
                input: None,
                cause: f.message,
                fault: Fault::Guest,
            })?;
            let (cmd_tx, cmd_rx) = bounded::<Command>(1);
            let (reply_tx, reply_rx) = bounded::<Reply>(1);
            std::thread::Builder::new()
                .name(format!("sluice-subtask-{index}"))
                .spawn(move || {
                    for command in cmd_rx {
                        let reply = match command {
                            Command::Map(batch, range) => Reply::Mapped(subtask.map(&batch, range)),
                            Command::Aggregate(batch, mapped) => {
                                Reply::Emitted(subtask.aggregate(&batch, &mapped))
                            }
                            Command::Snapshot => Reply::Snapshot(
                                subtask
                                    .state
                                    .as_ref()
                                    .map(KeyedState::snapshot)
                                    .unwrap_or_default(),
                            ),
                        };
                        if reply_tx.send(reply).is_err() {
                            break;
                        }
                    }
                })
                .map_err(|e| TaskFailure {
                    subtask: index,
                    seq: None,
                    input: None,
                    cause: format!("cannot start the subtask's thread: {e}"),
                    fault: Fault::Environment,
                })?;
            tracing::debug!(
                "subtask {}/{} owns key groups {}..{}",
                index + 1,
                spec.parallelism,
                range.start,
                range.end
            );
            links.push((cmd_tx, reply_rx));
        }
        Ok(Workers {
            keyed: spec.aggregation.is_some(),
            links,
        })
    }

    fn lost(index: usize) -> TaskFailure {
        TaskFailure {
            subtask: index as u32,
            seq: None,
            input: None,
            cause: "the subtask's thread stopped".into(),
            fault: Fault::Environment,
        }
    }

    /// Every subtask's key-group state, by subtask.
    fn snapshot(&self) -> Result<Vec<Vec<GroupState>>, TaskFailure> {
        for (i, (tx, _)) in self.links.iter().enumerate() {
            tx.send(Command::Snapshot).map_err(|_| Self::lost(i))?;
        }
        let mut all = Vec::with_capacity(self.links.len());
        for (i, (_, rx)) in self.links.iter().enumerate() {
            match rx.recv() {
                Ok(Reply::Snapshot(groups)) => all.push(groups),
                _ => return Err(Self::lost(i)),
            }
        }
        Ok(all)
    }

    /// Runs one batch through every subtask; returns the output block.
    fn process(&self, batch: Arc<SourceBatch>) -> Result<Output, TaskFailure> {
        let n = batch.records.len();
        let p = self.links.len();
        for (i, (tx, _)) in self.links.iter().enumerate() {
            let range = (n * i / p)..(n * (i + 1) / p);
            tx.send(Command::Map(batch.clone(), range))
                .map_err(|_| Self::lost(i))?;
        }
        let mut mapped = Vec::with_capacity(p);
        let mut failure: Option<TaskFailure> = None;
        for (i, (_, rx)) in self.links.iter().enumerate() {
            match rx.recv() {
                Ok(Reply::Mapped(Ok(m))) => mapped.push(m),
                Ok(Reply::Mapped(Err(f))) => {
                    // Keep the failure on the earliest record.
                    if failure
                        .as_ref()
                        .is_none_or(|old| old.seq.is_none() && f.seq.is_some())
                    {
                        failure = Some(f);
                    }
                }
                _ => return Err(Self::lost(i)),
            }
        }
        if let Some(f) = failure {
            return Err(f);
        }
        if !self.keyed {
            return Ok(merge(mapped.into_iter().map(|m| m.emitted).collect()));
        }
        let mapped = Arc::new(mapped);
        for (i, (tx, _)) in self.links.iter().enumerate() {
            tx.send(Command::Aggregate(batch.clone(), mapped.clone()))
                .map_err(|_| Self::lost(i))?;
        }
        let mut parts = Vec::with_capacity(p);
        let mut failure: Option<TaskFailure> = None;
        for (i, (_, rx)) in self.links.iter().enumerate() {
            match rx.recv() {
                Ok(Reply::Emitted(Ok(e))) => parts.push(e),
                Ok(Reply::Emitted(Err(f))) => failure = earlier(failure, f),
                _ => return Err(Self::lost(i)),
            }
        }
        match failure {
            Some(f) => Err(f),
            None => Ok(merge(parts)),
        }
    }
}
