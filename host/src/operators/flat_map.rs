//! The guest's stage: each subtask runs its slice of a batch through its own
//! guest instance (flat-map chained with the key-selector), checks the
//! output against the limits, and routes every row to the subtask of the
//! next stage that owns the row's key group — or, in a job without keyed
//! state, formats it for the sink.
//!
//! Every guest fault is pinned to its record here: a batch that faults is
//! run again a record at a time, and a record is poison only if it fails
//! alone in a fresh instance.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::config::sandbox::Sandbox;
use crate::dataflow::exchange;
use crate::dataflow::message::SourceBatch;
use crate::dataflow::operator::{Input, Lines, Operator, Output};
use crate::encoding;
use crate::fault::{Fault, MAX_MESSAGE, TaskFailure, shorten};
use crate::wasm::{GuestFailure, Instance, Module};

/// What a stage's operators know of the job they run in.
#[derive(Debug, Clone)]
pub struct StageContext {
    /// `job `NAME` (ID)`, for log lines.
    pub job: Arc<str>,
    /// This instance's subtask.
    pub subtask: u32,
    /// Subtasks of the next stage, where rows are routed.
    pub downstream: u32,
    /// Key groups.
    pub max_parallelism: u32,
    /// The sink drops everything: count lines, do not format them.
    pub discard: bool,
    /// The sink keys its output: give each line its key.
    pub keys: bool,
}

/// One subtask's guest: flat-map, chained with the key-selector when the
/// rows go on to keyed state.
pub struct FlatMap {
    cx: StageContext,
    module: Module,
    params: Vec<(String, String)>,
    sandbox: Sandbox,
    /// Whether rows are keyed.
    keyed: bool,
    instance: Option<Instance>,
    log_window: Instant,
    log_lines: u32,
}

/// Guest log lines passed to the host's log per second per subtask.
const GUEST_LOG_LINES: u32 = 20;

/// Describes a failure on record `record` of `batch`.
pub(crate) fn failure_at(
    subtask: u32,
    batch: &SourceBatch,
    record: Option<usize>,
    cause: String,
    fault: Fault,
) -> TaskFailure {
    TaskFailure {
        subtask,
        seq: record.and_then(|i| batch.seqs.get(i).copied()),
        input: record.map(|i| {
            let text = batch.records.text(i);
            let shown = &text[..text.len().min(80)];
            String::from_utf8_lossy(shown).into_owned()
        }),
        cause,
        fault,
    }
}

impl Operator for FlatMap {
    fn process(&mut self, input: Input<'_>) -> Result<Output, TaskFailure> {
        match input {
            Input::Records { batch, range } => self.map(batch, range),
            Input::Rows { batch, .. } => Err(self.failure(
                batch,
                None,
                "the guest stage was given rows, not records".into(),
                Fault::Host,
            )),
        }
    }

    fn reset(&mut self) {
        self.instance = None;
    }
}

impl FlatMap {
    /// The guest stage of subtask `cx.subtask`, with a guest instance
    /// started (so a guest that cannot start fails the job before any
    /// record flows).
    pub fn start(
        cx: StageContext,
        module: &Module,
        params: &[(String, String)],
        sandbox: &Sandbox,
        keyed: bool,
    ) -> Result<Self, TaskFailure> {
        let mut op = FlatMap {
            cx,
            module: module.clone(),
            params: params.to_vec(),
            sandbox: sandbox.clone(),
            keyed,
            instance: None,
            log_window: Instant::now(),
            log_lines: 0,
        };
        if let Err(f) = op.instance() {
            return Err(TaskFailure::of_subtask(
                op.cx.subtask,
                f.message,
                Fault::Guest,
            ));
        }
        Ok(op)
    }

    fn failure(
        &self,
        batch: &SourceBatch,
        record: Option<usize>,
        cause: String,
        fault: Fault,
    ) -> TaskFailure {
        failure_at(self.cx.subtask, batch, record, cause, fault)
    }

    fn output_limits(&self) -> encoding::OutputLimits {
        encoding::OutputLimits {
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
        let (job, subtask) = (&self.cx.job, self.cx.subtask);
        let mut dropped = 0u64;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if self.log_lines >= GUEST_LOG_LINES {
                dropped += 1;
                continue;
            }
            self.log_lines += 1;
            let shown: String = line.chars().take(500).collect();
            info!("{job} subtask {subtask} guest: {shown}");
        }
        if dropped > 0 {
            warn!(
                "{job} subtask {subtask}: {dropped} more guest log line(s) dropped (at most {GUEST_LOG_LINES} a second, {} bytes a call; --max-guest-log)",
                self.sandbox.limits.log_bytes
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
    /// Any guest fault in the call (a trap, an error it reports, a
    /// malformed output, a failure report for a record the batch does not
    /// hold) sends the records through [`Subtask::isolate`], which pins the
    /// fault to its record or finds that it does not reproduce.
    fn map(&mut self, batch: &SourceBatch, range: Range<usize>) -> Result<Output, TaskFailure> {
        let keyed = self.keyed;
        let mut mapped = Output {
            routes: vec![Vec::new(); self.cx.downstream as usize],
            taken: range.len() as u64,
            ..Output::default()
        };
        if range.is_empty() {
            return Ok(mapped);
        }
        self.start_instance(batch)?;
        // The hot path: one call, one walk that checks and routes.
        let first = match self.call(batch, range.clone(), keyed) {
            Ok(out) => {
                mapped.rows = out;
                match self.route(&mut mapped, range.clone()) {
                    Ok(()) => return Ok(mapped),
                    Err(malformed) => malformed,
                }
            }
            Err(fault) => fault,
        };
        let (out, unreproduced) = self.isolate(batch, range.clone(), keyed, first)?;
        mapped.rows = out;
        mapped.unreproduced = unreproduced;
        mapped.routes.iter_mut().for_each(Vec::clear);
        mapped.lines = Lines::default();
        // Every record's output was checked on its own: this cannot fail.
        self.route(&mut mapped, range)
            .map_err(|e| self.failure(batch, None, e, Fault::Host))?;
        Ok(mapped)
    }

    /// Checks the guest's output for records `range` and routes every row
    /// to the subtask that owns its key (keyed) or formats it (unkeyed).
    fn route(&self, mapped: &mut Output, range: Range<usize>) -> Result<(), String> {
        let keyed = self.keyed;
        let base = range.start as u32;
        let (p, m) = (self.cx.downstream, self.cx.max_parallelism);
        let out = &mapped.rows;
        let routes = &mut mapped.routes;
        let lines = &mut mapped.lines;
        let discard = self.cx.discard;
        encoding::read_output(out, range.len(), keyed, self.output_limits(), |mut r| {
            r.record += base;
            if keyed {
                routes[exchange::owner(r.hash, p, m) as usize].push(r);
            } else {
                if !discard {
                    encoding::format_row(
                        &out[r.row.0 as usize..r.row.1 as usize],
                        &mut lines.bytes,
                    );
                }
                lines.push_mark(r.record, r.ordinal);
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
        encoding::read_output(&out, records, keyed, self.output_limits(), |_| {})
            .map_err(malformed)?;
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
            let seq = |i: usize| {
                batch
                    .seqs
                    .get(i)
                    .map_or("?".into(), |s| crate::record::shown(*s))
            };
            let cause = format!(
                "{first}; {} to {} then ran one at a time without a fault",
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
fn malformed(e: encoding::Malformed) -> String {
    match e {
        encoding::Malformed(message, Some(_)) => message,
        encoding::Malformed(message, None) => {
            format!("the guest's output is malformed: {message}")
        }
    }
}
