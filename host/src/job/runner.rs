//! The running job: the loop that takes batches from the source, puts
//! them and the checkpoints' barriers through the stages in order, and
//! writes each batch's output to the sink. Failures and restarts are in
//! `recovery.rs`, checkpoints in `checkpointing.rs`, the job's states in
//! `lifecycle.rs`.
//!
//! Every stage takes the stream in order: the first up to [`MAP_AHEAD`]
//! batches ahead (each subtask's guest works through its own queue), every
//! later stage one item at a time, so a batch's output is written before
//! the next batch's reaches the state, and a barrier reaches each stage
//! right behind the batches before it.

use std::collections::{BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use tracing::warn;

use crate::checkpoint::coordinator::{CheckpointSettings, Coordinator};
use crate::checkpoint::{JobInfo, SinkPosition, Snapshot, SourcePosition, Store};
use crate::config::JobSpec;
use crate::config::pipeline::{Pipeline, StageKind};
use crate::connector::sink::labelled::Labelled;
use crate::connector::{self, Sink, Source, SourceEvent, SourceOptions};
use crate::dataflow::exchange;
use crate::dataflow::message::{Barrier, Clock, SourceBatch};
use crate::dataflow::operator::{Operator, OperatorSnapshot, Output};
use crate::dataflow::worker::{Collected, Item, MAP_AHEAD, Workers};
use crate::fault::{Fault, TaskFailure};
use crate::job::handle::Status;
use crate::job::prepare::Prepared;
use crate::job::time::{self, EventTime};
use crate::job::timeline::Timeline;
use crate::job::{CancelToken, JobOutcome};
use crate::operators::aggregate::Aggregate;
use crate::operators::flat_map::{FlatMap, StageContext};
use crate::operators::guest::Guest;
use crate::operators::guest_map::{Downstream, GuestMap};
use crate::operators::process::Process;
use crate::operators::window::Window;
use crate::restart::RestartTracker;
use crate::wasm::Module;

/// How often a timed job's stages get a tick while its source is idle.
const IDLE_TICK: Duration = Duration::from_millis(200);

/// What taking a stage's result in did.
pub(super) enum Advance {
    /// Nothing was ready.
    Idle,
    /// An item went on.
    Progressed,
    /// The job ended.
    Ended(JobOutcome),
}

/// An item in a stage, as the job keeps track of it.
pub(super) enum Entry {
    /// A batch.
    Batch(InFlight),
    /// A barrier, the state of the stages it passed, and the event time
    /// where it passed the first stage.
    Barrier {
        barrier: Barrier,
        snapshots: Vec<OperatorSnapshot>,
        time: (i64, Option<i64>),
    },
}

/// A batch in a stage: where the source is after it, and its clock.
pub(super) struct InFlight {
    pub(super) batch: Arc<SourceBatch>,
    pub(super) end: SourcePosition,
    pub(super) clock: Clock,
    /// What the stages so far sent to each side output: written with the
    /// main output once the batch is through, so that a batch run again
    /// after a failure does not write it twice and a checkpoint holds the
    /// side outputs as far as the main one.
    pub(super) side: Vec<exchange::Block>,
}

/// The running job: the coordinator of its stages, source, sink,
/// checkpoints and restarts.
pub(super) struct Runner<'a> {
    pub(super) module: &'a Module,
    pub(super) spec: &'a JobSpec,
    pub(super) cancel: &'a CancelToken,
    pub(super) status: &'a Status,
    /// `job `NAME` (ID)`, for every log line.
    pub(super) job: Arc<str>,
    pub(super) info: JobInfo,
    pub(super) store: Arc<Store>,
    pub(super) source: Arc<dyn Source>,
    pub(super) journal: Option<PathBuf>,
    pub(super) options: SourceOptions,
    pub(super) workers: Workers,
    pub(super) sink: Box<dyn Sink>,
    pub(super) live: Receiver<SourceEvent>,
    pub(super) source_cancel: Arc<AtomicBool>,
    pub(super) replay: Option<Receiver<SourceEvent>>,
    /// The next record the job has not yet received from the live source.
    pub(super) frontier: SourcePosition,
    /// The source position after the last batch written to the sink.
    pub(super) processed: SourcePosition,
    /// The source position after the last batch put into the stages.
    pub(super) submitted: SourcePosition,
    /// Lines of output so far (the sink leaves out what it already has).
    pub(super) out: SinkPosition,
    pub(super) skipped: BTreeSet<u64>,
    /// The last completed checkpoint: the restore point.
    pub(super) last: Option<Arc<Snapshot>>,
    /// Where the job started, when no checkpoint has completed yet.
    pub(super) origin: Arc<Snapshot>,
    pub(super) tracker: RestartTracker,
    pub(super) checkpoints: Coordinator,
    pub(super) dead_letter: PathBuf,
    /// How long the last checkpoint held up processing.
    pub(super) last_pause: Duration,
    /// The checkpoint whose key groups the state may share: the last one
    /// taken, or the one restored.
    pub(super) held: u64,
    /// Batches to run again after a local recovery, before anything new.
    pub(super) requeue: VecDeque<SourceBatch>,
    /// The items in each stage, oldest first.
    pub(super) queue: Vec<VecDeque<Entry>>,
    /// Set when a failure restarted the job, so the caller drops its item.
    pub(super) restarted: bool,
    /// The live source ended while a restart's replay was still to come.
    pub(super) live_ended: bool,
    /// The end of the input's watermark (every event-time window and timer
    /// fires) went in (a timed job).
    pub(super) final_tick: bool,
    /// When the last idle tick went in (a timed job).
    pub(super) last_tick: Instant,
    /// A timed job's batches as it ran them, to run them again alike.
    pub(super) timeline: Option<Timeline>,
    /// Event time (0.2.0 pipelines).
    pub(super) time: EventTime,
    /// Whether the job is a 0.2.0 pipeline (its batches carry time, and
    /// empty ones still go through the stages: they advance it).
    pub(super) timed: bool,
    /// The side outputs' sinks, by tag - 1, and their lines so far.
    pub(super) side_sinks: SideSinks,
}

/// The stages of a job: for a 0.1.0 guest, its flat-map, then, when the
/// job aggregates, the keyed aggregation; for a 0.2.0 guest, its
/// pipeline's stages. Each is restored from `restore`.
pub(super) fn operators(
    module: &Module,
    spec: &JobSpec,
    job: &Arc<str>,
    restore: Option<&Snapshot>,
) -> Result<Vec<Vec<Box<dyn Operator>>>, TaskFailure> {
    let kind = connector::sink_kind(&spec.sink).ok();
    let discard = kind.is_some_and(|k| k.discards());
    let cx = |subtask| StageContext {
        job: job.clone(),
        subtask,
        downstream: spec.parallelism,
        max_parallelism: spec.max_parallelism,
        discard,
        keys: kind.is_some_and(|k| k.keys()),
    };
    let mut stages = match &spec.pipeline {
        Some(pipeline) => pipeline_stages(module, spec, pipeline, &cx)?,
        None => v1_stages(module, spec, &cx)?,
    };
    if let Some(snapshot) = restore {
        let stateful = stages
            .iter()
            .filter(|ops| ops.iter().any(|o| o.stateful()))
            .count();
        for (s, ops) in stages.iter_mut().enumerate() {
            if !ops.iter().any(|o| o.stateful()) {
                continue;
            }
            let groups = snapshot.groups_of(s as u32, stateful == 1);
            for (i, op) in ops.iter_mut().enumerate() {
                op.restore(&groups).map_err(|cause| {
                    TaskFailure::of_subtask(
                        i as u32,
                        format!("cannot restore checkpoint `chk-{}`: {cause}", snapshot.id),
                        Fault::Environment,
                    )
                })?;
            }
        }
    }
    Ok(stages)
}

type Stages = Vec<Vec<Box<dyn Operator>>>;

/// The side outputs' sinks, each with the lines it has taken.
pub(super) type SideSinks = Vec<(Box<dyn Sink>, u64)>;

fn v1_stages(
    module: &Module,
    spec: &JobSpec,
    cx: &dyn Fn(u32) -> StageContext,
) -> Result<Stages, TaskFailure> {
    let p = spec.parallelism;
    let keyed = spec.aggregation.is_some();
    let mut guests: Vec<Box<dyn Operator>> = Vec::new();
    for i in 0..p {
        let op = FlatMap::start(cx(i), module, &spec.params, &spec.sandbox, keyed)?;
        guests.push(Box::new(op));
    }
    let mut stages = vec![guests];
    if let Some(aggregation) = spec.aggregation {
        let aggregates = (0..p)
            .map(|i| Box::new(Aggregate::new(cx(i), aggregation, p)) as Box<dyn Operator>)
            .collect();
        stages.push(aggregates);
    }
    Ok(stages)
}

fn pipeline_stages(
    module: &Module,
    spec: &JobSpec,
    pipeline: &Pipeline,
    cx: &dyn Fn(u32) -> StageContext,
) -> Result<Stages, TaskFailure> {
    let n = pipeline.stages.len();
    let sides = pipeline.side_outputs.len() as u8;
    let mut stages = Vec::new();
    for (s, stage) in pipeline.stages.iter().enumerate() {
        let down = Downstream {
            stage: s as u32,
            keyed: pipeline.stages.get(s + 1).is_some_and(|next| next.keyed),
            last: s + 1 == n,
            sides,
        };
        let mut ops: Vec<Box<dyn Operator>> = Vec::new();
        for i in 0..spec.parallelism {
            let c = cx(i);
            let guest = Guest::new(c.job.clone(), i, module, &spec.params, &spec.sandbox);
            ops.push(match &stage.kind {
                StageKind::Map => Box::new(GuestMap::start(c, guest, down)?),
                StageKind::Process(decls) => Box::new(Process::start(
                    c,
                    guest,
                    down,
                    decls.clone(),
                    spec.parallelism,
                )?),
                StageKind::Window(w) => Box::new(Window::start(
                    c,
                    guest,
                    down,
                    w.clone(),
                    pipeline.side_tag_of(w),
                    spec.parallelism,
                )?),
            });
        }
        stages.push(ops);
    }
    Ok(stages)
}

/// Starts the live source where the job goes on, and the replay of what a
/// restored job's journal holds after its checkpoint.
fn start_source(
    prepared: &Prepared,
    options: &SourceOptions,
    cancel: &Arc<AtomicBool>,
) -> Result<(Receiver<SourceEvent>, Option<Receiver<SourceEvent>>), String> {
    let live = prepared
        .source
        .start(prepared.live_start.clone(), options, None, cancel.clone())
        .map_err(|e| format!("cannot start the source: {e}"))?;
    let replay = match &prepared.replay {
        Some((from, until)) => Some(
            prepared
                .source
                .replay(from.clone(), Some(*until), options)
                .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    Ok((live, replay))
}

/// Opens the side outputs' sinks, each after its checkpoint's position
/// when the job is restored; each keeps what it needs in a directory of its
/// own in the job's.
fn open_side_sinks(spec: &JobSpec, prepared: &Prepared) -> Result<SideSinks, String> {
    let mut sinks = Vec::new();
    for (tag, (name, uri)) in spec.side_sinks.iter().enumerate() {
        let dir = prepared.store.path().join(format!("side-{name}"));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
        let resume = prepared.side_resume.get(tag);
        let mut sink = connector::open_sink(
            uri,
            &spec.env,
            dir,
            &format!("{}/{name}", prepared.id),
            resume,
        )
        .map_err(|e| e.to_string())?;
        if uri == "print" {
            sink = Box::new(Labelled::new(sink, name));
        }
        let lines = prepared
            .restored
            .as_ref()
            .and_then(|s| s.side_sinks.get(tag))
            .map_or(0, |p| p.lines);
        sinks.push((sink, lines));
    }
    Ok(sinks)
}

/// A timed job's timeline: a restored one runs the batches recorded after
/// its checkpoint again.
fn open_timeline(
    spec: &JobSpec,
    prepared: &Prepared,
    restored: Option<&Snapshot>,
) -> Result<Option<Timeline>, String> {
    if spec.pipeline.is_none() {
        return Ok(None);
    }
    let from = restored.map(|s| s.id).filter(|id| *id > 0);
    let at = restored.map(|s| s.source.clone()).unwrap_or_default();
    Timeline::open(prepared.store.path(), restored.is_some(), from, at).map(Some)
}

/// What the checkpoints record of the job.
fn job_info(module: &Module, spec: &JobSpec, id: &str) -> JobInfo {
    JobInfo {
        job_id: id.to_string(),
        job_name: spec.name.clone(),
        module_digest: module.digest().to_string(),
        wit_version: module.wit_package().to_string(),
        parallelism: spec.parallelism,
        max_parallelism: spec.max_parallelism,
        aggregation: spec
            .aggregation
            .map_or_else(|| "none".to_string(), |a| a.to_string()),
        source_uri: spec.source.clone(),
        sink_uri: spec.sink.clone(),
        side_sink_uris: spec.side_sinks.iter().map(|(_, uri)| uri.clone()).collect(),
    }
}

impl<'a> Runner<'a> {
    pub(super) fn new(
        module: &'a Module,
        spec: &'a JobSpec,
        mut prepared: Prepared,
        cancel: &'a CancelToken,
        status: &'a Status,
        job: Arc<str>,
    ) -> Result<Self, String> {
        let restored = prepared.restored.take().map(Arc::new);
        let side_sinks = open_side_sinks(spec, &prepared)?;
        let sink = connector::open_sink(
            &spec.sink,
            &spec.env,
            prepared.store.path().to_path_buf(),
            &prepared.id,
            prepared.resume.as_ref(),
        )
        .map_err(|e| e.to_string())?;
        let workers = Workers::start(
            operators(module, spec, &job, restored.as_deref()).map_err(|f| f.to_string())?,
        )
        .map_err(|f| f.to_string())?;
        let options = spec.source_options();
        let source_cancel = Arc::new(AtomicBool::new(false));
        let (live, replay) = start_source(&prepared, &options, &source_cancel)?;
        let origin = restored.clone().unwrap_or_default();
        let timeline = open_timeline(spec, &prepared, restored.as_deref())?;
        let info = job_info(module, spec, &prepared.id);
        let dead_letter = spec
            .dead_letter
            .clone()
            .unwrap_or_else(|| prepared.store.path().join("dead-letter.jsonl"));
        let store = Arc::new(prepared.store);
        let settings = CheckpointSettings {
            interval: spec.checkpoint_interval,
            min_pause: spec.min_pause,
            timeout: spec.checkpoint_timeout,
            retain: spec.retain_checkpoints,
        };
        let stages = workers.stages();
        let time = EventTime::new(
            spec.pipeline.as_ref().and_then(|p| p.watermarks),
            origin.watermark.unwrap_or(i64::MIN),
            origin.max_timestamp,
        );
        Ok(Runner {
            time,
            timed: spec.pipeline.is_some(),
            side_sinks,
            module,
            spec,
            cancel,
            status,
            job,
            info,
            checkpoints: Coordinator::new(settings, store.clone(), prepared.next_checkpoint),
            store,
            source: prepared.source,
            journal: prepared.journal,
            options,
            workers,
            sink,
            live,
            source_cancel,
            replay,
            frontier: prepared.live_start.clone(),
            processed: origin.source.clone(),
            submitted: origin.source.clone(),
            out: origin.sink.clone(),
            skipped: prepared.skipped,
            held: origin.id,
            last: restored,
            origin,
            tracker: RestartTracker::new(spec.restart),
            dead_letter,
            last_pause: Duration::ZERO,
            requeue: VecDeque::new(),
            queue: (0..stages).map(|_| VecDeque::new()).collect(),
            restarted: false,
            live_ended: false,
            final_tick: false,
            last_tick: Instant::now(),
            timeline,
        })
    }

    pub(super) fn run(&mut self) -> JobOutcome {
        let outcome = self.run_loop();
        // Whatever ended the job, the batches in flight are written first.
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
            if self.status.take_checkpoint_request() {
                self.checkpoints.request();
            }
            self.poll_checkpoint();
            // Take in what the stages finished, in order.
            loop {
                match self.advance(false) {
                    Advance::Ended(outcome) => return outcome,
                    Advance::Progressed => continue,
                    Advance::Idle => break,
                }
            }
            self.maybe_barrier();
            if let Some(batch) = self.requeue.pop_front() {
                if let Some(outcome) = self.process(batch, false) {
                    return outcome;
                }
                continue;
            }
            let from_replay = self.replay.is_some();
            if !from_replay && self.live_ended {
                if let Some(outcome) = self.end_of_input() {
                    return outcome;
                }
                continue;
            }
            let event = match self.next_event(from_replay) {
                Ok(Some(event)) => event,
                Ok(None) => {
                    if let Some(outcome) = self.poll_sinks() {
                        return outcome;
                    }
                    if let Some(outcome) = self.idle_tick(from_replay) {
                        return outcome;
                    }
                    continue;
                }
                Err(outcome) => return outcome,
            };
            if let Some(outcome) = self.on_event(event, from_replay) {
                return outcome;
            }
        }
    }

    /// Fails the job if a sink failed on its own while the job was idle.
    fn poll_sinks(&mut self) -> Option<JobOutcome> {
        let sinks =
            std::iter::once(&mut self.sink).chain(self.side_sinks.iter_mut().map(|s| &mut s.0));
        for sink in sinks {
            if let Err(e) = sink.poll() {
                return Some(JobOutcome::Failed(e.to_string()));
            }
        }
        None
    }

    /// The source (or the replay) ended: finishes once the output is
    /// written, unless that restarted the job.
    fn end_of_input(&mut self) -> Option<JobOutcome> {
        if let Some(rest) = self.timeline.as_mut().and_then(Timeline::finish)
            && let Some(outcome) = self.process(rest, true)
        {
            return Some(outcome);
        }
        if self.timed && !self.final_tick {
            // Flink's end of input: the watermark goes to the end of time.
            self.final_tick = true;
            if let Some(outcome) = self.process(self.tick(Some(i64::MAX)), true) {
                return Some(outcome);
            }
        }
        self.restarted = false;
        if let Some(outcome) = self.drain() {
            return Some(outcome);
        }
        (!self.restarted).then_some(JobOutcome::Finished)
    }

    /// An empty batch where the source is: processing time moves on for
    /// the stages' timers and windows, and the watermark to `watermark`.
    fn tick(&self, watermark: Option<i64>) -> SourceBatch {
        SourceBatch {
            end_seq: self.submitted.seq,
            end_offset: self.submitted.offset,
            idle_watermark: watermark,
            ..SourceBatch::default()
        }
    }

    /// Nothing came from the live source a while: a timed job's stages get
    /// a tick (at most every [`IDLE_TICK`]), with the watermark the idle
    /// timeout allows.
    fn idle_tick(&mut self, from_replay: bool) -> Option<JobOutcome> {
        if !self.timed || from_replay || self.last_tick.elapsed() < IDLE_TICK {
            return None;
        }
        self.last_tick = Instant::now();
        if let Some(due) = self
            .timeline
            .as_mut()
            .filter(|t| t.replaying())
            .map(Timeline::due)
        {
            // The ticks the first run had here, not new ones.
            return self.process_all(due);
        }
        let tick = self.tick(self.time.idle_advance());
        self.process(tick, true)
    }

    /// Puts batches into the first stage, each recorded in the timeline when
    /// `true` is beside it.
    fn process_all(&mut self, batches: Vec<(SourceBatch, bool)>) -> Option<JobOutcome> {
        for (batch, fresh) in batches {
            if let Some(outcome) = self.process(batch, fresh) {
                return Some(outcome);
            }
        }
        None
    }

    /// The next event from the replay or the live source; `Ok(None)` when
    /// nothing came in a while.
    fn next_event(&mut self, from_replay: bool) -> Result<Option<SourceEvent>, JobOutcome> {
        let stopped = || JobOutcome::Failed("the source stopped unexpectedly".into());
        let rx = self.replay.as_ref().unwrap_or(&self.live);
        match rx.try_recv() {
            Ok(event) => return Ok(Some(event)),
            Err(TryRecvError::Disconnected) if from_replay => return Ok(Some(SourceEvent::End)),
            Err(TryRecvError::Disconnected) => return Err(stopped()),
            Err(TryRecvError::Empty) => {}
        }
        if !self.queue[0].is_empty() {
            // Nothing to read: wait for a stage or the source.
            self.workers.wait(rx, Duration::from_millis(50));
            return Ok(None);
        }
        // Nothing waiting: finish the batches in flight so their output is
        // not held back, then wait.
        if let Some(outcome) = self.drain() {
            return Err(outcome);
        }
        let rx = self.replay.as_ref().unwrap_or(&self.live);
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(event) => Ok(Some(event)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) if from_replay => Ok(Some(SourceEvent::End)),
            Err(RecvTimeoutError::Disconnected) => Err(stopped()),
        }
    }

    fn on_event(&mut self, event: SourceEvent, from_replay: bool) -> Option<JobOutcome> {
        match event {
            SourceEvent::Batch(batch) => {
                if !from_replay {
                    self.frontier = batch.end();
                    for r in &batch.rejected {
                        warn!(
                            "{}: input fault on {} {:?}: {}; record skipped",
                            self.job,
                            crate::record::shown(r.seq),
                            r.preview,
                            r.reason
                        );
                    }
                }
                match self.timeline.as_mut() {
                    Some(t) => {
                        let batches = t.recut(batch);
                        self.process_all(batches)
                    }
                    None => self.process(batch, false),
                }
            }
            SourceEvent::Notice(message) => {
                warn!("{}: {message}", self.job);
                None
            }
            SourceEvent::End if from_replay => {
                self.restarted = false;
                if let Some(outcome) = self.drain() {
                    return Some(outcome);
                }
                // A failure in the drain restarted the job with a new replay.
                if !self.restarted {
                    self.replay = None;
                }
                None
            }
            SourceEvent::End => {
                let outcome = self.end_of_input();
                // The last batch failed and the job restarted: finish once
                // the replay is through.
                self.live_ended = outcome.is_none();
                outcome
            }
            SourceEvent::Failed(message) => Some(JobOutcome::Failed(message)),
        }
    }

    /// Puts a batch into the first stage, recorded in a timed job's
    /// timeline when it runs for the first time (`record`); `Some` when the
    /// job ends meanwhile.
    pub(super) fn process(&mut self, batch: SourceBatch, record: bool) -> Option<JobOutcome> {
        self.restarted = false;
        let end = batch.end();
        let skipped = &self.skipped;
        let mut batch = batch.without(|s| skipped.contains(&s));
        self.status.add_records(batch.records.len() as u64);
        if batch.records.is_empty() && !self.timed && self.queue.iter().all(VecDeque::is_empty) {
            self.submitted = end.clone();
            self.processed = end;
            return None;
        }
        let ptime = *batch.processing_time.get_or_insert_with(time::now_ms);
        if record
            && let Some(t) = self.timeline.as_mut()
            && let Err(e) = t.record(&batch)
        {
            return Some(JobOutcome::Failed(e));
        }
        if !batch.records.is_empty() {
            self.time.saw_records();
        }
        let clock = self.time.entering(ptime);
        let batch = Arc::new(batch);
        if let Err(failure) = self.workers.submit(0, Item::Records(batch.clone(), clock)) {
            return Some(JobOutcome::Failed(failure.to_string()));
        }
        self.submitted = end.clone();
        self.queue[0].push_back(Entry::Batch(InFlight {
            batch,
            end,
            clock,
            side: Vec::new(),
        }));
        // A restart meanwhile abandons this batch too: it is replayed.
        while self.queue[0].len() > MAP_AHEAD && !self.restarted {
            if let Advance::Ended(outcome) = self.advance(true) {
                return Some(outcome);
            }
        }
        None
    }

    /// Takes the first stage's oldest item in and passes it on.
    pub(super) fn advance(&mut self, block: bool) -> Advance {
        let Some(collected) = self.workers.collect(0, block) else {
            return Advance::Idle;
        };
        let Some(entry) = self.queue[0].pop_front() else {
            return Advance::Ended(JobOutcome::Failed(
                "internal error: a result nobody waits for".into(),
            ));
        };
        match self.pass(0, entry, collected) {
            Some(outcome) => Advance::Ended(outcome),
            None => Advance::Progressed,
        }
    }

    /// Stage `stage` is done with `entry`: the next stage takes it, or, at
    /// the end, the sink (a batch) or the checkpoint (a barrier).
    fn pass(&mut self, stage: usize, entry: Entry, collected: Collected) -> Option<JobOutcome> {
        let next = stage + 1;
        // The item the next stage holds is older: it goes on first, and
        // before a failure of this one is handled.
        if next < self.workers.stages() {
            if let Some(outcome) = self.finish_stage(next) {
                return Some(outcome);
            }
            if self.restarted {
                // It failed and the job restarted: this item is replayed.
                return None;
            }
        }
        match (entry, collected) {
            (Entry::Batch(b), Collected::Outputs(Ok(outputs))) => {
                self.pass_batch(stage, b, outputs)
            }
            (
                Entry::Barrier {
                    barrier,
                    mut snapshots,
                    mut time,
                },
                Collected::Snapshots(Ok(taken)),
            ) => {
                snapshots.extend(taken.into_iter().map(|mut s| {
                    s.stage = stage;
                    s
                }));
                if stage == 0 {
                    time = (self.time.watermark, self.time.max_timestamp);
                }
                if next == self.workers.stages() {
                    self.complete_checkpoint(barrier, snapshots, time);
                    return None;
                }
                let item = Item::Barrier(barrier.clone());
                let entry = Entry::Barrier {
                    barrier,
                    snapshots,
                    time,
                };
                self.forward(next, entry, item)
            }
            (Entry::Batch(b), Collected::Outputs(Err(failure)))
            | (Entry::Batch(b), Collected::Snapshots(Err(failure))) => {
                if stage > 0 {
                    // The batch had moved the watermark: it runs again from before.
                    self.time.rewind(b.clock.watermark);
                }
                self.fail(stage, &b.batch, failure)
            }
            (Entry::Barrier { .. }, Collected::Outputs(Err(failure)))
            | (Entry::Barrier { .. }, Collected::Snapshots(Err(failure))) => {
                self.fail(stage, &SourceBatch::default(), failure)
            }
            _ => Some(JobOutcome::Failed(
                "internal error: a stage answered an item with the wrong kind of result".into(),
            )),
        }
    }

    fn pass_batch(
        &mut self,
        stage: usize,
        mut b: InFlight,
        mut outputs: Vec<Output>,
    ) -> Option<JobOutcome> {
        let mut give_up = None;
        for fault in outputs
            .iter_mut()
            .flat_map(|o| std::mem::take(&mut o.unreproduced))
        {
            if give_up.is_none() {
                give_up = self.unreproduced(fault);
            }
        }
        for dead in outputs.iter_mut().flat_map(|o| std::mem::take(&mut o.dead)) {
            if give_up.is_none() {
                give_up = self.dropped(dead);
            }
        }
        if stage == 0 && self.timed {
            let max_ts = outputs.iter().filter_map(|o| o.max_timestamp).max();
            b.clock = self.time.passed(b.clock, max_ts, b.batch.idle_watermark);
        }
        keep_side(&mut b.side, &mut outputs);
        let next = stage + 1;
        let ended = if next == self.workers.stages() {
            let mut block = exchange::merge(outputs.into_iter().map(|o| o.lines).collect());
            block.runs = b.batch.runs.clone();
            match self.emit_side(&b.side).and_then(|()| self.emit(block)) {
                Ok(()) => {
                    self.processed = b.end;
                    None
                }
                Err(e) => Some(JobOutcome::Failed(e)),
            }
        } else {
            let item = Item::Rows(b.batch.clone(), Arc::new(outputs), b.clock);
            self.forward(next, Entry::Batch(b), item)
        };
        if ended.is_some() {
            return ended;
        }
        let outcome = give_up?;
        // The batch's output is whole: write it, then stop.
        for queue in self.queue.iter_mut().take(next) {
            queue.clear();
        }
        self.workers.abandon_upstream(next);
        Some(self.drain().unwrap_or(outcome))
    }

    /// Submits `entry` to stage `stage`.
    fn forward(&mut self, stage: usize, entry: Entry, item: Item) -> Option<JobOutcome> {
        if let Err(failure) = self.workers.submit(stage, item) {
            return Some(JobOutcome::Failed(failure.to_string()));
        }
        self.queue[stage].push_back(entry);
        None
    }

    /// Waits for stage `stage`'s item, if it has one, and passes it on.
    pub(super) fn finish_stage(&mut self, stage: usize) -> Option<JobOutcome> {
        if self.queue.get(stage).is_none_or(VecDeque::is_empty) {
            return None;
        }
        let collected = self
            .workers
            .collect(stage, true)
            .unwrap_or(Collected::Outputs(Err(TaskFailure::of_subtask(
                0,
                "the stage's threads stopped",
                Fault::Environment,
            ))));
        let entry = self.queue[stage].pop_front()?;
        self.pass(stage, entry, collected)
    }

    /// Takes every item in and writes all output.
    pub(super) fn drain(&mut self) -> Option<JobOutcome> {
        while !self.queue[0].is_empty() {
            if let Advance::Ended(outcome) = self.advance(true) {
                return Some(outcome);
            }
        }
        for stage in 1..self.workers.stages() {
            if let Some(outcome) = self.finish_stage(stage) {
                return Some(outcome);
            }
        }
        None
    }

    /// Writes what a batch sent to the side outputs, each to its sink.
    fn emit_side(&mut self, side: &[exchange::Block]) -> Result<(), String> {
        for (tag, block) in side.iter().enumerate() {
            if block.lines == 0 {
                continue;
            }
            let Some((sink, lines)) = self.side_sinks.get_mut(tag) else {
                return Err(format!(
                    "internal error: no sink for side output {}",
                    tag + 1
                ));
            };
            sink.write(*lines, block).map_err(|e| e.to_string())?;
            *lines += block.lines;
        }
        Ok(())
    }

    /// Writes a block of output; the sink leaves out lines it already has.
    pub(super) fn emit(&mut self, block: exchange::Block) -> Result<(), String> {
        let lines = block.lines;
        self.sink
            .write_owned(self.out.lines, block)
            .map_err(|e| e.to_string())?;
        self.out.lines += lines;
        self.status.add_output(lines);
        Ok(())
    }
}

/// Adds what a stage's subtasks sent to the side outputs, merged in stream
/// order, to what the batch's earlier stages sent.
fn keep_side(side: &mut Vec<exchange::Block>, outputs: &mut [Output]) {
    let tags = outputs.iter().map(|o| o.side.len()).max().unwrap_or(0);
    if side.len() < tags {
        side.resize_with(tags, exchange::Block::default);
    }
    for (tag, kept) in side.iter_mut().enumerate().take(tags) {
        let parts = outputs
            .iter_mut()
            .map(|o| o.side.get_mut(tag).map(std::mem::take).unwrap_or_default())
            .collect();
        let block = exchange::merge(parts);
        kept.bytes.extend_from_slice(&block.bytes);
        kept.lines += block.lines;
    }
}
