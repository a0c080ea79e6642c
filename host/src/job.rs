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

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};
use tracing::{error, info, warn};

use crate::guest::{GuestFailure, Instance, Module};
use crate::keyed::{self, KeyedState};
use crate::row::{self, RowRef};
use crate::sink::Sink;
use crate::source::{self, SourceBatch, SourceEvent, SourceOptions};
use crate::spec::JobSpec;

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

/// Runs a job to its end. Logs every state change; never exits the process.
pub fn run(module: &Module, spec: &JobSpec, cancel: &CancelToken) -> JobOutcome {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let job = format!("job `{}` ({id})", spec.name);
    info!(
        "{job} CREATED: source {}, sink {}, parallelism {}",
        spec.source, spec.sink, spec.parallelism
    );
    let outcome = run_inner(module, spec, cancel, &job);
    match &outcome {
        JobOutcome::Finished => info!("{job} switched from RUNNING to FINISHED"),
        JobOutcome::Canceled => info!("{job} switched from RUNNING to CANCELED"),
        JobOutcome::Failed(cause) => error!("{job} switched to FAILED: {cause}"),
    }
    outcome
}

fn run_inner(module: &Module, spec: &JobSpec, cancel: &CancelToken, job: &str) -> JobOutcome {
    let mut sink = match Sink::open(&spec.sink) {
        Ok(sink) => sink,
        Err(e) => return JobOutcome::Failed(e),
    };
    let workers = match Workers::start(module, spec) {
        Ok(w) => w,
        Err(f) => return JobOutcome::Failed(f.to_string()),
    };
    let options = SourceOptions {
        max_line_bytes: spec.max_line_bytes,
        connect_timeout: spec.connect_timeout,
    };
    let source_cancel = Arc::new(AtomicBool::new(false));
    let events = match source::spawn(&spec.source, options, source_cancel.clone()) {
        Ok(rx) => rx,
        Err(e) => return JobOutcome::Failed(format!("cannot start the source thread: {e}")),
    };
    info!("{job} switched from CREATED to RUNNING");
    let outcome = loop {
        if cancel.is_cancelled() {
            break JobOutcome::Canceled;
        }
        let event = match events.recv_timeout(Duration::from_millis(100)) {
            Ok(event) => event,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => {
                break JobOutcome::Failed("the source stopped unexpectedly".into());
            }
        };
        match event {
            SourceEvent::Batch(batch) => {
                for r in &batch.rejected {
                    warn!(
                        "{job}: input fault on record {} {:?}: {}; record skipped",
                        r.seq + 1,
                        r.preview,
                        r.reason
                    );
                }
                if batch.records.is_empty() {
                    continue;
                }
                match workers.process(Arc::new(batch)) {
                    Ok(output) => {
                        if let Err(e) = sink.write(&output).and_then(|()| sink.flush()) {
                            break JobOutcome::Failed(format!("sink `{}` failed: {e}", spec.sink));
                        }
                    }
                    Err(failure) => {
                        error!("{job} switched from RUNNING to FAILING: {failure}");
                        break JobOutcome::Failed(failure.to_string());
                    }
                }
            }
            SourceEvent::Notice(message) => warn!("{job}: {message}"),
            SourceEvent::End => break JobOutcome::Finished,
            SourceEvent::Failed(message) => break JobOutcome::Failed(message),
        }
    };
    source_cancel.store(true, Ordering::Relaxed);
    drop(events);
    if let Err(e) = sink.flush() {
        return JobOutcome::Failed(format!("sink `{}` failed: {e}", spec.sink));
    }
    outcome
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

/// Merges per-subtask outputs into one block in (record, row) order.
fn merge(parts: Vec<Emitted>) -> Vec<u8> {
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
    instance: Option<Instance>,
    state: Option<KeyedState>,
}

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

    fn instance(&mut self) -> Result<&mut Instance, GuestFailure> {
        if self.instance.is_none() {
            self.instance = Some(self.module.instantiate(&self.params)?);
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
        let checked = row::read_output(out, range.len(), keyed, |mut r| {
            r.record += base;
            if keyed {
                let owner = keyed::subtask_of(keyed::key_group(r.hash, m), p, m);
                routes[owner as usize].push(r);
            } else {
                row::format_row(&out[r.row.0 as usize..r.row.1 as usize], &mut emitted.bytes);
                emitted.push_mark(r.record, r.ordinal);
            }
        });
        if let Err(e) = checked {
            return Err(self.failure(
                batch,
                None,
                format!("the guest's output is malformed: {}", e.0),
                Fault::Guest,
            ));
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
                    if let Err(e) = row::read_output(&out, 1, keyed, |_| {}) {
                        return Some((i, format!("the guest's output is malformed: {}", e.0)));
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
                if let Err(e) = state.apply(r.hash, key, row, &mut emitted.bytes) {
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
}

enum Reply {
    Mapped(Result<Mapped, TaskFailure>),
    Emitted(Result<Emitted, TaskFailure>),
}

/// The subtasks, each on its own thread, so a busy guest pins only its own.
struct Workers {
    keyed: bool,
    links: Vec<(Sender<Command>, Receiver<Reply>)>,
}

impl Workers {
    fn start(module: &Module, spec: &JobSpec) -> Result<Self, TaskFailure> {
        let mut links = Vec::new();
        for index in 0..spec.parallelism {
            let range = keyed::key_group_range(index, spec.parallelism, spec.max_parallelism);
            let mut subtask = Subtask {
                index,
                parallelism: spec.parallelism,
                max_parallelism: spec.max_parallelism,
                module: module.clone(),
                params: spec.params.clone(),
                instance: None,
                state: spec
                    .aggregation
                    .map(|agg| KeyedState::new(agg, spec.max_parallelism, range.clone())),
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

    /// Runs one batch through every subtask; returns the output block.
    fn process(&self, batch: Arc<SourceBatch>) -> Result<Vec<u8>, TaskFailure> {
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
                Ok(Reply::Emitted(Err(f))) => {
                    if failure.as_ref().is_none_or(|old| f.seq < old.seq) {
                        failure = Some(f);
                    }
                }
                _ => return Err(Self::lost(i)),
            }
        }
        match failure {
            Some(f) => Err(f),
            None => Ok(merge(parts)),
        }
    }
}
