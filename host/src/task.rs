//! The parallel subtasks of a job and the two steps every batch goes
//! through.
//!
//! In the map step each subtask's *mapper* runs its slice of the batch
//! through its own guest instance (flat-map chained with key-selector),
//! checks the output against the limits, and routes every row to the
//! subtask that owns the row's key group. In the aggregate step each
//! subtask's *aggregator* folds the rows routed to it, in input order, into
//! its key groups' state and formats the updates. A subtask's mapper and
//! aggregator are two threads when the machine has a core for each, so the
//! guest works on batch k+1 while the state of batch k is updated; on fewer
//! cores they share the subtask's thread (see `shares_threads`). Outputs
//! are merged by (record, row), so the printed order is the same at any
//! parallelism.
//!
//! This module knows nothing of sources, sinks, checkpoint files or restart
//! strategies; the job loop (`job.rs`) drives it.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Select, Sender, bounded};
use tracing::{info, warn};

use crate::checkpoint::{GroupState, Snapshot};
use crate::guest::{GuestFailure, Instance, Module, Sandbox};
use crate::job::{Fault, TaskFailure};
use crate::keyed::{self, CopyOnWrite, KeyedState};
use crate::row::{self, RowRef};
use crate::source::SourceBatch;
use crate::spec::{JobSpec, SinkSpec};

/// Rows one subtask's guest produced for a slice of a batch.
pub struct Mapped {
    /// The guest's encoded output.
    out: Vec<u8>,
    /// Rows routed to each subtask, in input order (keyed jobs).
    routes: Vec<Vec<RowRef>>,
    /// Formatted rows (unkeyed jobs).
    emitted: Emitted,
    /// Faults that did not reproduce when their record ran alone in a
    /// fresh instance: the records' output counts and nothing is
    /// dead-lettered, but each still counts against the restart strategy.
    unreproduced: Vec<TaskFailure>,
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
        // The part with the first line, and the first line of the others:
        // its lines before that one go out in one piece.
        let mut best: Option<(usize, u64)> = None;
        let mut bound = u64::MAX;
        for (i, p) in parts.iter().enumerate() {
            let Some(&(order, _)) = p.marks.get(next[i]) else {
                continue;
            };
            match best {
                Some((_, b)) if order > b => bound = bound.min(order),
                Some((_, b)) => {
                    bound = bound.min(b);
                    best = Some((i, order));
                }
                None => best = Some((i, order)),
            }
        }
        let Some((i, _)) = best else { break };
        let p = &parts[i];
        let first = next[i];
        let start = if first == 0 {
            0
        } else {
            p.marks[first - 1].1 as usize
        };
        let mut last = first;
        while p
            .marks
            .get(last + 1)
            .is_some_and(|&(order, _)| order < bound)
        {
            last += 1;
        }
        out.extend_from_slice(&p.bytes[start..p.marks[last].1 as usize]);
        next[i] = last + 1;
    }
    out
}

/// One parallel subtask: its guest instance and its key groups' state.
/// One subtask's mapper: its guest instance.
struct Subtask {
    index: u32,
    parallelism: u32,
    max_parallelism: u32,
    module: Module,
    params: Vec<(String, String)>,
    sandbox: Sandbox,
    /// Whether rows are keyed (the job aggregates).
    keyed: bool,
    /// The sink drops everything: count lines, do not format them.
    discard: bool,
    instance: Option<Instance>,
    log_window: Instant,
    log_lines: u32,
}

/// How long an aggregator waits for work before it counts as idle.
const IDLE: Duration = Duration::from_micros(200);

/// One subtask's aggregator: the state of its key groups.
struct Aggregator {
    index: u32,
    discard: bool,
    state: KeyedState,
    /// Key groups copied since the last snapshot, because it held them.
    copies: CopyOnWrite,
    /// Arenas of snapshots the job no longer needs (see [`Workers::recycle`]).
    spares: Receiver<Vec<u8>>,
}

/// Describes a failure on record `record` of `batch`.
fn failure_at(
    subtask: u32,
    batch: &SourceBatch,
    record: Option<usize>,
    cause: String,
    fault: Fault,
) -> TaskFailure {
    TaskFailure {
        subtask,
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
        failure_at(self.index, batch, record, cause, fault)
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

    /// Runs one command: the reply to send, if it has one.
    fn serve(&mut self, command: MapCommand, current: &AtomicU64) -> Option<MapReply> {
        match command {
            MapCommand::Map {
                generation,
                batch,
                range,
            } => Some(
                (generation == current.load(Ordering::Acquire)).then(|| self.map(&batch, range)),
            ),
            MapCommand::Reset => {
                self.instance = None;
                None
            }
        }
    }

    /// Calls the guest on records `range`; checks and routes its output.
    /// Any guest fault in the call (a trap, an error it reports, a
    /// malformed output, a failure report for a record the batch does not
    /// hold) sends the records through [`Subtask::isolate`], which pins the
    /// fault to its record or finds that it does not reproduce.
    fn map(&mut self, batch: &SourceBatch, range: Range<usize>) -> Result<Mapped, TaskFailure> {
        let keyed = self.keyed;
        let mut mapped = Mapped {
            out: Vec::new(),
            routes: vec![Vec::new(); self.parallelism as usize],
            emitted: Emitted::default(),
            unreproduced: Vec::new(),
        };
        if range.is_empty() {
            return Ok(mapped);
        }
        self.start_instance(batch)?;
        // The hot path: one call, one walk that checks and routes.
        let first = match self.call(batch, range.clone(), keyed) {
            Ok(out) => {
                mapped.out = out;
                match self.route(&mut mapped, range.clone()) {
                    Ok(()) => return Ok(mapped),
                    Err(malformed) => malformed,
                }
            }
            Err(fault) => fault,
        };
        let (out, unreproduced) = self.isolate(batch, range.clone(), keyed, first)?;
        mapped.out = out;
        mapped.unreproduced = unreproduced;
        mapped.routes.iter_mut().for_each(Vec::clear);
        mapped.emitted = Emitted::default();
        // Every record's output was checked on its own: this cannot fail.
        self.route(&mut mapped, range)
            .map_err(|e| self.failure(batch, None, e, Fault::Host))?;
        Ok(mapped)
    }

    /// Checks the guest's output for records `range` and routes every row
    /// to the subtask that owns its key (keyed) or formats it (unkeyed).
    fn route(&self, mapped: &mut Mapped, range: Range<usize>) -> Result<(), String> {
        let keyed = self.keyed;
        let base = range.start as u32;
        let (p, m) = (self.parallelism, self.max_parallelism);
        let out = &mapped.out;
        let routes = &mut mapped.routes;
        let emitted = &mut mapped.emitted;
        let discard = self.discard;
        row::read_output(out, range.len(), keyed, self.output_limits(), |mut r| {
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
        })
        .map_err(malformed)
    }

    /// One guest call on records `range`, its output checked: the output,
    /// or the fault worded for the user.
    fn run(
        &mut self,
        batch: &SourceBatch,
        range: Range<usize>,
        keyed: bool,
    ) -> Result<Vec<u8>, String> {
        let records = range.len();
        let out = self.call(batch, range, keyed)?;
        row::read_output(&out, records, keyed, self.output_limits(), |_| {}).map_err(malformed)?;
        Ok(out)
    }

    /// Runs the records of a batch that faulted one at a time, to pin the
    /// fault to its record. A record that fails on an instance that ran
    /// others before it is run again alone in a fresh instance: only if it
    /// fails there too is it the poison record (the `Err`, for the dead
    /// letters). Otherwise its output counts, and the fault is returned as
    /// one that did not reproduce, with the output of every record.
    fn isolate(
        &mut self,
        batch: &SourceBatch,
        range: Range<usize>,
        keyed: bool,
        first: String,
    ) -> Result<(Vec<u8>, Vec<TaskFailure>), TaskFailure> {
        self.instance = None;
        let mut out = Vec::new();
        let mut unreproduced = Vec::new();
        for i in range.clone() {
            let fresh = self.instance.is_none();
            self.start_instance(batch)?;
            let cause = match self.run(batch, i..i + 1, keyed) {
                Ok(one) => {
                    out.extend_from_slice(&one);
                    continue;
                }
                Err(cause) => cause,
            };
            self.instance = None;
            if fresh {
                return Err(self.failure(batch, Some(i), cause, Fault::Guest));
            }
            self.start_instance(batch)?;
            match self.run(batch, i..i + 1, keyed) {
                Ok(one) => {
                    out.extend_from_slice(&one);
                    unreproduced.push(self.failure(batch, Some(i), cause, Fault::Guest));
                }
                Err(again) => {
                    self.instance = None;
                    return Err(self.failure(batch, Some(i), again, Fault::Guest));
                }
            }
        }
        if unreproduced.is_empty() {
            // Every record ran alone without a fault: the batch's fault is
            // not any one record's (a deadline for the whole batch, say).
            let seq = |i: usize| batch.seqs.get(i).map_or(0, |s| s + 1);
            let cause = format!(
                "{first}; records {}..{} then ran one at a time without a fault",
                seq(range.start),
                seq(range.end - 1)
            );
            unreproduced.push(self.failure(batch, None, cause, Fault::Guest));
        }
        Ok((out, unreproduced))
    }

    /// Makes sure there is a guest instance. Failing to create one is not
    /// any record's fault: the guest started before (the job checks that it
    /// does), so this is the environment's (the instance pool, say).
    fn start_instance(&mut self, batch: &SourceBatch) -> Result<(), TaskFailure> {
        match self.instance() {
            Ok(_) => Ok(()),
            Err(f) => Err(self.failure(batch, None, f.message, Fault::Environment)),
        }
    }

    /// One guest call on records `range`: the output, or why it failed.
    /// A failure the guest reports counts only for a record of `range`;
    /// any other report is malformed output.
    fn call(
        &mut self,
        batch: &SourceBatch,
        range: Range<usize>,
        keyed: bool,
    ) -> Result<Vec<u8>, String> {
        let records = batch.records.slice(range.clone());
        let result = self.instance().and_then(|i| i.flat_map(records, keyed));
        if result.is_ok() {
            self.forward_log();
        }
        match result {
            Ok(out) => match out.failed {
                None => Ok(out.output),
                Some((index, message)) if (index as usize) < range.len() => Err(format!(
                    "the guest failed the record: {}",
                    shorten(&message, MAX_MESSAGE)
                )),
                Some((index, _)) => Err(format!(
                    "the guest's output is malformed: it reports record index {index} failed, \
                     but the batch held {} record(s)",
                    range.len()
                )),
            },
            Err(failure) => {
                self.instance = None;
                Err(shorten(&failure.message, MAX_MESSAGE))
            }
        }
    }
}

/// A decoder error worded for the user: a limit breach says which limit,
/// anything else that the output is malformed.
fn malformed(e: row::Malformed) -> String {
    match e {
        row::Malformed(message, Some(_)) => message,
        row::Malformed(message, None) => format!("the guest's output is malformed: {message}"),
    }
}

/// Takes the faults that did not reproduce out of a batch's mapped parts,
/// in record order.
pub fn take_unreproduced(mapped: &mut [Mapped]) -> Vec<TaskFailure> {
    let mut all: Vec<TaskFailure> = mapped
        .iter_mut()
        .flat_map(|m| std::mem::take(&mut m.unreproduced))
        .collect();
    all.sort_by_key(|f| f.seq);
    all
}

/// The longest guest message the host keeps, in bytes: log lines and dead
/// letters stay readable whatever a guest returns.
pub const MAX_MESSAGE: usize = 1024;

/// `s` cut to at most `max` bytes, on a character boundary, marked when cut.
pub fn shorten(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &s[..end], s.len())
}

impl Aggregator {
    /// Adds the copies the state made since the last call to the tally.
    fn take_copied(&mut self) {
        let copied = self.state.take_copied();
        self.copies.add(copied);
    }

    /// The next command (`None` once the job loop is gone): an aggregate
    /// step's before a map step's, since the output waits for it; map steps
    /// only when this aggregator shares its subtask's thread with the
    /// mapper (`map`). Once idle for [`IDLE`], copies the key groups the
    /// last snapshot holds until a command comes.
    fn next(
        &mut self,
        commands: &Receiver<AggCommand>,
        map: Option<&Receiver<MapCommand>>,
    ) -> Option<Work> {
        for arena in self.spares.try_iter() {
            self.state.give_spare(arena);
        }
        use crossbeam_channel::TryRecvError::{Disconnected, Empty};
        let mut select = Select::new();
        select.recv(commands);
        if let Some(map) = map {
            select.recv(map);
        }
        let mut waited = false;
        loop {
            match commands.try_recv() {
                Ok(command) => return Some(Work::Aggregate(command)),
                Err(Disconnected) => return None,
                Err(Empty) => {}
            }
            match map.map(|m| m.try_recv()) {
                Some(Ok(command)) => return Some(Work::Map(command)),
                Some(Err(Disconnected)) => return None,
                _ => {}
            }
            if !self.state.copying_ahead() {
                select.ready();
            } else if waited {
                self.state.copy_ahead();
            } else {
                waited = true;
                let _ = select.ready_timeout(IDLE);
            }
        }
    }

    /// Runs one command.
    fn serve(&mut self, command: AggCommand) -> AggReply {
        match command {
            AggCommand::Aggregate(batch, mapped) => {
                AggReply::Emitted(self.aggregate(&batch, &mapped))
            }
            AggCommand::Snapshot => {
                self.take_copied();
                AggReply::Snapshot(self.state.snapshot(), std::mem::take(&mut self.copies))
            }
        }
    }

    /// Folds the rows routed here, in input order, into the keyed state.
    fn aggregate(
        &mut self,
        batch: &SourceBatch,
        mapped: &[Mapped],
    ) -> Result<Emitted, TaskFailure> {
        let mut emitted = Emitted::default();
        let mut failed = None;
        'all: for m in mapped {
            for r in &m.routes[self.index as usize] {
                let key = &m.out[r.key.0 as usize..r.key.1 as usize];
                let row = &m.out[r.row.0 as usize..r.row.1 as usize];
                let out = (!self.discard).then_some(&mut emitted.bytes);
                if let Err(e) = self.state.apply(r.hash, key, row, out) {
                    failed = Some((r.record as usize, e.0));
                    break 'all;
                }
                emitted.push_mark(r.record, r.ordinal);
            }
        }
        self.take_copied();
        match failed {
            Some((record, cause)) => Err(failure_at(
                self.index,
                batch,
                Some(record),
                cause,
                Fault::Job,
            )),
            None => Ok(emitted),
        }
    }
}

enum MapCommand {
    /// Map records `range` of a batch, unless its generation was abandoned.
    Map {
        generation: u64,
        batch: Arc<SourceBatch>,
        range: Range<usize>,
    },
    /// Drop the guest instance; the next batch gets a fresh one.
    Reset,
}

/// A mapper's answer for one batch: its mapped slice, a failure, or
/// `None` for a batch of an abandoned generation.
type MapReply = Option<Result<Mapped, TaskFailure>>;

enum AggCommand {
    Aggregate(Arc<SourceBatch>, Arc<Vec<Mapped>>),
    Snapshot,
}

/// A command for a subtask's thread.
enum Work {
    Aggregate(AggCommand),
    Map(MapCommand),
}

enum AggReply {
    Emitted(Result<Emitted, TaskFailure>),
    Snapshot(Vec<GroupState>, CopyOnWrite),
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

/// A block of output lines for the sink.
pub struct Output {
    /// The formatted lines (empty for a discard sink).
    pub bytes: Vec<u8>,
    /// How many lines.
    pub lines: u64,
}

/// What the aggregate step of the batch in flight will give.
enum InFlight {
    /// Aggregators are working on it.
    Aggregating,
    /// Already there (an unkeyed job has no aggregate step).
    Ready(Output),
}

/// Commands to a mapper and its replies.
type MapperLink = (Sender<MapCommand>, Receiver<MapReply>);

/// Batches a mapper may be given before the oldest one is collected: a
/// subtask whose guest is slow or spinning holds up the output, not the
/// other subtasks' guests.
pub const MAP_AHEAD: usize = 4;

/// The subtasks: a mapper thread and an aggregator thread each, or one
/// thread each for both (see `shares_threads`), so a busy guest pins only
/// its own subtask's thread.
///
/// Batches go to the mappers as they arrive ([`Workers::submit`]), up to
/// [`MAP_AHEAD`] ahead of the oldest one not yet collected; every mapper
/// works through its own queue, so while one subtask's guest spins the
/// others go on with the batches behind. Mapped batches are collected in
/// order ([`Workers::collect`]) and aggregated one at a time.
pub struct Workers {
    keyed: bool,
    mappers: Vec<MapperLink>,
    aggregators: Vec<(Sender<AggCommand>, Receiver<AggReply>)>,
    in_flight: Option<InFlight>,
    /// Batches submitted and not yet collected.
    submitted: usize,
    /// The oldest submitted batch's replies received so far, by mapper.
    parts: Vec<Option<Result<Mapped, TaskFailure>>>,
    /// Bumped to abandon every submitted batch.
    generation: Arc<AtomicU64>,
    /// To the aggregators: arenas to reuse.
    spares: Sender<Vec<u8>>,
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

fn spawn_thread(
    name: String,
    index: u32,
    f: impl FnOnce() + Send + 'static,
) -> Result<(), TaskFailure> {
    std::thread::Builder::new()
        .name(name)
        .spawn(f)
        .map(|_| ())
        .map_err(|e| TaskFailure {
            subtask: index,
            seq: None,
            input: None,
            cause: format!("cannot start the subtask's thread: {e}"),
            fault: Fault::Environment,
        })
}

/// Starts a subtask's mapper on a thread of its own.
fn spawn_mapper(
    mut subtask: Subtask,
    commands: Receiver<MapCommand>,
    replies: Sender<MapReply>,
    current: Arc<AtomicU64>,
) -> Result<(), TaskFailure> {
    let index = subtask.index;
    spawn_thread(format!("sluice-map-{index}"), index, move || {
        for command in commands {
            if let Some(reply) = subtask.serve(command, &current)
                && replies.send(reply).is_err()
            {
                break;
            }
        }
    })
}

/// Whether each subtask's map and aggregate steps share one thread: when
/// the machine has fewer cores than that would make threads. Two threads a
/// subtask pipeline its steps, which is worth a core each; on fewer cores
/// they only take turns, and pay for every hand-off.
fn shares_threads(parallelism: u32) -> bool {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    2 * parallelism as usize > cores
}

impl Workers {
    /// Starts the subtasks with fresh guest instances and the state of
    /// `restore` (any parallelism), or empty state.
    pub fn start(
        module: &Module,
        spec: &JobSpec,
        restore: Option<&Snapshot>,
    ) -> Result<Self, TaskFailure> {
        let keyed = spec.aggregation.is_some();
        let discard = spec.sink == SinkSpec::Discard;
        let mut mappers = Vec::new();
        let mut aggregators = Vec::new();
        let (spares, spares_rx) = crossbeam_channel::unbounded();
        let generation = Arc::new(AtomicU64::new(0));
        let share_threads = shares_threads(spec.parallelism);
        for index in 0..spec.parallelism {
            let mut subtask = Subtask {
                index,
                parallelism: spec.parallelism,
                max_parallelism: spec.max_parallelism,
                module: module.clone(),
                params: spec.params.clone(),
                sandbox: spec.sandbox.clone(),
                keyed,
                discard,
                instance: None,
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
            let (cmd_tx, cmd_rx) = bounded::<MapCommand>(MAP_AHEAD + 2);
            let (reply_tx, reply_rx) = bounded::<MapReply>(MAP_AHEAD + 1);
            let current = generation.clone();
            mappers.push((cmd_tx, reply_rx));

            let Some(agg) = spec.aggregation else {
                spawn_mapper(subtask, cmd_rx, reply_tx, current)?;
                continue;
            };
            let range = keyed::key_group_range(index, spec.parallelism, spec.max_parallelism);
            let mut state = KeyedState::new(agg, spec.max_parallelism, range.clone());
            if let Some(snapshot) = restore {
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
            let mut aggregator = Aggregator {
                index,
                discard,
                state,
                copies: CopyOnWrite::default(),
                spares: spares_rx.clone(),
            };
            let (agg_tx, agg_rx) = bounded::<AggCommand>(1);
            let (agg_reply_tx, agg_reply_rx) = bounded(1);
            if share_threads {
                spawn_thread(format!("sluice-task-{index}"), index, move || {
                    while let Some(work) = aggregator.next(&agg_rx, Some(&cmd_rx)) {
                        let sent = match work {
                            Work::Aggregate(command) => {
                                agg_reply_tx.send(aggregator.serve(command)).is_ok()
                            }
                            Work::Map(command) => match subtask.serve(command, &current) {
                                Some(reply) => reply_tx.send(reply).is_ok(),
                                None => true,
                            },
                        };
                        if !sent {
                            break;
                        }
                    }
                })?;
            } else {
                spawn_mapper(subtask, cmd_rx, reply_tx, current)?;
                spawn_thread(format!("sluice-agg-{index}"), index, move || {
                    while let Some(Work::Aggregate(command)) = aggregator.next(&agg_rx, None) {
                        if agg_reply_tx.send(aggregator.serve(command)).is_err() {
                            break;
                        }
                    }
                })?;
            }
            tracing::debug!(
                "subtask {}/{} owns key groups {}..{}{}",
                index + 1,
                spec.parallelism,
                range.start,
                range.end,
                if share_threads {
                    "; its map and aggregate steps share one thread"
                } else {
                    ""
                }
            );
            aggregators.push((agg_tx, agg_reply_rx));
        }
        let parts = (0..mappers.len()).map(|_| None).collect();
        Ok(Workers {
            keyed,
            mappers,
            aggregators,
            in_flight: None,
            submitted: 0,
            parts,
            generation,
            spares,
        })
    }

    /// Every subtask's key-group state, by subtask, and the copying the
    /// last snapshot caused since. Call with nothing in flight.
    pub fn snapshot(&self) -> Result<(Vec<Vec<GroupState>>, CopyOnWrite), TaskFailure> {
        for (i, (tx, _)) in self.aggregators.iter().enumerate() {
            tx.send(AggCommand::Snapshot).map_err(|_| lost(i))?;
        }
        let mut all = Vec::with_capacity(self.aggregators.len());
        let mut copies = CopyOnWrite::default();
        for (i, (_, rx)) in self.aggregators.iter().enumerate() {
            match rx.recv() {
                Ok(AggReply::Snapshot(groups, copied)) => {
                    all.push(groups);
                    copies.add(copied);
                }
                _ => return Err(lost(i)),
            }
        }
        Ok((all, copies))
    }

    /// Hands the key groups of a snapshot the job no longer needs back to
    /// the aggregators, to copy groups into after the next snapshot.
    pub fn recycle(&self, snapshot: Snapshot) {
        for group in snapshot.subtasks.into_iter().flatten() {
            if let Ok(arena) = Arc::try_unwrap(group.bytes) {
                let _ = self.spares.send(arena);
            }
        }
    }

    /// The map step, started: every subtask's guest gets its slice of the
    /// batch. Collect the result with [`Workers::collect`]; at most
    /// [`MAP_AHEAD`] batches may be submitted and not collected.
    pub fn submit(&mut self, batch: &Arc<SourceBatch>) -> Result<(), TaskFailure> {
        let n = batch.records.len();
        let p = self.mappers.len();
        let generation = self.generation.load(Ordering::Acquire);
        for (i, (tx, _)) in self.mappers.iter().enumerate() {
            let range = (n * i / p)..(n * (i + 1) / p);
            tx.send(MapCommand::Map {
                generation,
                batch: batch.clone(),
                range,
            })
            .map_err(|_| lost(i))?;
        }
        self.submitted += 1;
        Ok(())
    }

    /// Batches submitted and not yet collected.
    pub fn submitted(&self) -> usize {
        self.submitted
    }

    /// The oldest submitted batch's map step: `None` when it is not done
    /// yet (and `block` is false) or when nothing was submitted.
    pub fn collect(&mut self, block: bool) -> Option<Result<Vec<Mapped>, TaskFailure>> {
        if self.submitted == 0 {
            return None;
        }
        for (i, (_, rx)) in self.mappers.iter().enumerate() {
            if self.parts[i].is_some() {
                continue;
            }
            let reply = if block {
                rx.recv().ok()
            } else {
                match rx.try_recv() {
                    Ok(reply) => Some(reply),
                    Err(crossbeam_channel::TryRecvError::Empty) => return None,
                    Err(crossbeam_channel::TryRecvError::Disconnected) => None,
                }
            };
            self.parts[i] = Some(match reply {
                Some(Some(result)) => result,
                // A reply for an abandoned batch cannot come here: those
                // are drained by `abandon`.
                Some(None) | None => Err(lost(i)),
            });
        }
        self.submitted -= 1;
        let mut mapped = Vec::with_capacity(self.parts.len());
        let mut failure: Option<TaskFailure> = None;
        for part in &mut self.parts {
            match part.take() {
                Some(Ok(m)) => mapped.push(m),
                Some(Err(f)) => failure = earlier(failure, f),
                None => {}
            }
        }
        Some(match failure {
            Some(f) => Err(f),
            None => Ok(mapped),
        })
    }

    /// Waits until a reply the oldest submitted batch still needs arrives,
    /// or `other` has a message, or `timeout` passes.
    pub fn wait<T>(&self, other: &Receiver<T>, timeout: Duration) {
        let mut select = Select::new();
        select.recv(other);
        for (i, (_, rx)) in self.mappers.iter().enumerate() {
            if self.parts[i].is_none() && self.submitted > 0 {
                select.recv(rx);
            }
        }
        let _ = select.ready_timeout(timeout);
    }

    /// Abandons every submitted batch (mappers skip the ones they have not
    /// started) and gives every subtask a fresh guest instance.
    pub fn abandon(&mut self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        for (i, (tx, rx)) in self.mappers.iter().enumerate() {
            let owed = self.submitted - usize::from(self.parts[i].is_some());
            for _ in 0..owed {
                if rx.recv().is_err() {
                    break;
                }
            }
            let _ = tx.send(MapCommand::Reset);
        }
        self.parts.iter_mut().for_each(|p| *p = None);
        self.submitted = 0;
    }

    /// Starts the aggregate step of a mapped batch. At most one batch is in
    /// flight: call [`Workers::finish`] first.
    pub fn aggregate(
        &mut self,
        batch: &Arc<SourceBatch>,
        mapped: Vec<Mapped>,
    ) -> Result<(), TaskFailure> {
        if !self.keyed {
            self.in_flight = Some(InFlight::Ready(merge(
                mapped.into_iter().map(|m| m.emitted).collect(),
            )));
            return Ok(());
        }
        let mapped = Arc::new(mapped);
        for (i, (tx, _)) in self.aggregators.iter().enumerate() {
            tx.send(AggCommand::Aggregate(batch.clone(), mapped.clone()))
                .map_err(|_| lost(i))?;
        }
        self.in_flight = Some(InFlight::Aggregating);
        Ok(())
    }

    /// Waits for the batch in flight; `None` when there is none.
    pub fn finish(&mut self) -> Option<Result<Output, TaskFailure>> {
        match self.in_flight.take()? {
            InFlight::Ready(output) => Some(Ok(output)),
            InFlight::Aggregating => {
                let mut parts = Vec::with_capacity(self.aggregators.len());
                let mut failure: Option<TaskFailure> = None;
                for (i, (_, rx)) in self.aggregators.iter().enumerate() {
                    match rx.recv() {
                        Ok(AggReply::Emitted(Ok(e))) => parts.push(e),
                        Ok(AggReply::Emitted(Err(f))) => failure = earlier(failure, f),
                        _ => return Some(Err(lost(i))),
                    }
                }
                Some(match failure {
                    Some(f) => Err(f),
                    None => Ok(merge(parts)),
                })
            }
        }
    }

    /// Runs one batch through both steps. Call with nothing submitted or
    /// in flight.
    pub fn process(&mut self, batch: Arc<SourceBatch>) -> Result<Output, TaskFailure> {
        self.submit(&batch)?;
        let mapped = self.collect(true).unwrap_or_else(|| Err(lost(0)))?;
        self.aggregate(&batch, mapped)?;
        self.finish().unwrap_or_else(|| Err(lost(0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines `text` at orders `orders` (record, row), as one part.
    fn part(lines: &[(u32, u32, &str)]) -> Emitted {
        let mut e = Emitted::default();
        for &(record, row, text) in lines {
            e.bytes.extend_from_slice(text.as_bytes());
            e.bytes.push(b'\n');
            e.push_mark(record, row);
        }
        e
    }

    #[test]
    fn merge_keeps_record_and_row_order_across_parts() {
        let merged = merge(vec![
            part(&[(0, 0, "a"), (0, 1, "b"), (0, 2, "c"), (3, 0, "h")]),
            part(&[]),
            part(&[(1, 0, "d"), (2, 0, "f"), (4, 0, "i"), (4, 1, "j")]),
            part(&[(1, 1, "e"), (2, 1, "g"), (5, 0, "k")]),
        ]);
        assert_eq!(merged.lines, 11);
        assert_eq!(
            String::from_utf8_lossy(&merged.bytes),
            "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\nk\n"
        );
        let one = merge(vec![part(&[(0, 0, "x"), (1, 0, "y")])]);
        assert_eq!(one.bytes, b"x\ny\n");
        assert!(merge(vec![part(&[]), part(&[])]).bytes.is_empty());
    }
}
