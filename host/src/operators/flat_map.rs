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

use crate::config::sandbox::Sandbox;
use crate::dataflow::exchange;
use crate::dataflow::message::SourceBatch;
use crate::dataflow::operator::{Input, Lines, Operator, Output};
use crate::encoding;
use crate::fault::{Fault, TaskFailure};
use crate::operators::guest::{Guest, Isolation};
use crate::wasm::Module;

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
    guest: Guest,
    /// Whether rows are keyed.
    keyed: bool,
}

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
            Input::Records { batch, range, .. } => self.map(batch, range),
            Input::Rows { batch, .. } => Err(self.failure(
                batch,
                None,
                "the guest stage was given rows, not records".into(),
                Fault::Host,
            )),
        }
    }

    fn reset(&mut self) {
        self.guest.reset();
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
        let mut guest = Guest::new(cx.job.clone(), cx.subtask, module, params, sandbox);
        if let Err(f) = guest.instance() {
            return Err(TaskFailure::of_subtask(cx.subtask, f.message, Fault::Guest));
        }
        Ok(FlatMap { cx, guest, keyed })
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
            rows: self.guest.sandbox.limits.rows_per_record,
            bytes: self.guest.sandbox.limits.bytes_per_record,
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
        let limits = self.output_limits();
        let isolated = self.guest.isolate(range.clone(), |guest, i| {
            let out = guest.flat_map(batch.records.slice(i..i + 1), keyed, 1)?;
            encoding::read_output(&out, 1, keyed, limits, |_| {}).map_err(malformed)?;
            Ok(out)
        });
        let found = match isolated {
            Ok(found) => found,
            Err(Isolation::Poison(i, cause)) => {
                return Err(self.failure(batch, Some(i), cause, Fault::Guest));
            }
            Err(Isolation::Start(cause)) => {
                return Err(self.failure(batch, None, cause, Fault::Environment));
            }
        };
        let mut unreproduced: Vec<TaskFailure> = found
            .unreproduced
            .into_iter()
            .map(|(i, cause)| self.failure(batch, Some(i), cause, Fault::Guest))
            .collect();
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
        Ok((found.results.concat(), unreproduced))
    }

    /// Makes sure there is a guest instance. Failing to create one is not
    /// any record's fault: the guest started before (the job checks that it
    /// does), so this is the environment's (the instance pool, say).
    fn start_instance(&mut self, batch: &SourceBatch) -> Result<(), TaskFailure> {
        match self.guest.instance() {
            Ok(_) => Ok(()),
            Err(f) => Err(self.failure(batch, None, f.message, Fault::Environment)),
        }
    }

    /// One guest call on records `range`: the output, or why it failed.
    fn call(
        &mut self,
        batch: &SourceBatch,
        range: Range<usize>,
        keyed: bool,
    ) -> Result<Vec<u8>, String> {
        let records = batch.records.slice(range.clone());
        self.guest.flat_map(records, keyed, range.len())
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
