//! A 0.2.0 map stage: the guest's fused chain of stateless steps (map,
//! filter, flat-map), one call per batch. The first stage takes the
//! source's records (a Kafka record whole: see
//! [`SourceBatch::push_rows`]); a later one the rows routed to its subtask. Each row
//! it emits goes on with its timestamp to the next stage (to the subtask
//! that owns its key when the next stage is keyed), to the sink (the last
//! stage), or to a side output.

use std::ops::Range;

use crate::dataflow::exchange::{self, routed_to};
use crate::dataflow::message::{Clock, SourceBatch};
use crate::dataflow::operator::{Input, Lines, Operator, Output};
use crate::encoding::pipeline::{self as enc, Emitted, Shape};
use crate::encoding::{self, BatchWriter, OutputLimits, RowRef};
use crate::fault::{Fault, TaskFailure};
use crate::operators::flat_map::{StageContext, failure_at};
use crate::operators::guest::Guest;
use crate::wasm::{Call, Header};

/// Where a stage's rows go.
#[derive(Debug, Clone, Copy)]
pub struct Downstream {
    /// The stage's index in the pipeline.
    pub stage: u32,
    /// The next stage is keyed: main rows carry its key and go by it.
    pub keyed: bool,
    /// There is no next stage: main rows are lines for the sink.
    pub last: bool,
    /// Side outputs there are.
    pub sides: u8,
}

impl Downstream {
    /// How a call's output over `entries` entries must look.
    pub fn shape(&self, entries: usize, limits: OutputLimits) -> Shape {
        Shape {
            entries,
            keyed: self.keyed,
            sides: self.sides,
            limits,
        }
    }

    /// An empty output with a route per subtask of the next stage
    /// (`downstream` of them) and a buffer per side output.
    pub fn output(&self, downstream: u32) -> Output {
        Output {
            routes: vec![Vec::new(); downstream as usize],
            side: (0..self.sides).map(|_| Lines::default()).collect(),
            ..Output::default()
        }
    }
}

/// A map stage's instance on one subtask.
pub struct GuestMap {
    cx: StageContext,
    guest: Guest,
    down: Downstream,
}

/// A call's input: the entries' bytes, and where each entry came from.
struct Entries {
    buf: BatchWriter,
    /// Each entry's place in the stream.
    orders: Vec<u64>,
}

impl GuestMap {
    /// The stage's instance, with a guest instance started.
    pub fn start(cx: StageContext, guest: Guest, down: Downstream) -> Result<Self, TaskFailure> {
        let mut op = GuestMap { cx, guest, down };
        op.guest.start()?;
        Ok(op)
    }

    fn shape(&self, entries: usize) -> Shape {
        self.down.shape(entries, self.guest.limits())
    }

    /// The entries of the input: the records of `range`, or the rows
    /// routed here with their timestamps.
    fn entries(&self, input: &Input<'_>) -> Entries {
        let mut e = Entries {
            buf: BatchWriter::default(),
            orders: Vec::new(),
        };
        match input {
            Input::Records { batch, range, .. } => {
                batch.push_rows(range.clone(), &mut e.buf);
                e.orders = range.clone().map(|i| (i as u64) << 32).collect();
            }
            Input::Rows { parts, .. } => {
                for r in routed_to(parts, self.cx.subtask as usize) {
                    e.buf.push_parts(&[&r.timestamp.to_le_bytes(), r.row]);
                    e.orders.push(r.order);
                }
            }
        }
        e
    }

    fn header(clock: Clock) -> Header {
        Header {
            processing_time: clock.processing_time,
            watermark: clock.watermark,
        }
    }

    /// Calls the guest on entries `range`, its output checked.
    fn run(&mut self, clock: Clock, e: &Entries, range: Range<usize>) -> Result<Vec<u8>, String> {
        let input = e.buf.slice(range.clone());
        let call = self.guest.call(
            self.down.stage,
            Self::header(clock),
            Call::Map(input),
            range.len(),
        )?;
        let shape = self.shape(range.len());
        enc::read_emitted(&call.output, shape, |_| {}).map_err(malformed)?;
        Ok(call.output)
    }

    fn failure(
        &self,
        batch: &SourceBatch,
        e: &Entries,
        entry: Option<usize>,
        cause: String,
    ) -> TaskFailure {
        let record = entry
            .and_then(|i| e.orders.get(i))
            .map(|o| (o >> 32) as usize);
        failure_at(self.cx.subtask, batch, record, cause, Fault::Guest)
    }

    /// One call for every entry; on any fault, the entries one at a time.
    fn map(
        &mut self,
        batch: &SourceBatch,
        clock: Clock,
        e: &Entries,
    ) -> Result<Output, TaskFailure> {
        let n = e.orders.len();
        let mut out = self.down.output(self.cx.downstream);
        out.taken = n as u64;
        if n == 0 {
            return Ok(out);
        }
        self.started(batch)?;
        let rows = match self.run(clock, e, 0..n) {
            Ok(rows) => rows,
            Err(first) => self.isolate(batch, clock, e, first, &mut out)?,
        };
        emit(
            &self.cx,
            self.down,
            self.shape(n),
            &mut out,
            rows,
            &e.orders,
        )
        .map_err(|m| failure_at(self.cx.subtask, batch, None, m, Fault::Host))?;
        Ok(out)
    }

    /// Runs the entries of a call that faulted one at a time, to pin the
    /// fault to its entry (see [`Guest::isolate`]): the poison one is the
    /// `Err`; otherwise every entry's output, and the faults that did not
    /// reproduce go to `out.unreproduced`.
    fn isolate(
        &mut self,
        batch: &SourceBatch,
        clock: Clock,
        e: &Entries,
        first: String,
        out: &mut Output,
    ) -> Result<Vec<u8>, TaskFailure> {
        self.guest.reset();
        let mut results = Vec::with_capacity(e.orders.len());
        let mut unreproduced = Vec::new();
        for i in 0..e.orders.len() {
            let fresh = self.guest.is_fresh();
            self.started(batch)?;
            let cause = match self.run(clock, e, i..i + 1) {
                Ok(one) => {
                    results.push(one);
                    continue;
                }
                Err(cause) => cause,
            };
            self.guest.reset();
            if fresh {
                return Err(self.failure(batch, e, Some(i), cause));
            }
            self.started(batch)?;
            match self.run(clock, e, i..i + 1) {
                Ok(one) => {
                    results.push(one);
                    unreproduced.push(self.failure(batch, e, Some(i), cause));
                }
                Err(again) => {
                    self.guest.reset();
                    return Err(self.failure(batch, e, Some(i), again));
                }
            }
        }
        if unreproduced.is_empty() {
            let cause = format!("{first}; the batch's rows then ran one at a time without a fault");
            unreproduced.push(self.failure(batch, e, None, cause));
        }
        out.unreproduced = unreproduced;
        Ok(results.concat())
    }

    /// Makes sure there is a guest instance: failing to create one is the
    /// environment's fault, not an entry's.
    fn started(&mut self, batch: &SourceBatch) -> Result<(), TaskFailure> {
        match self.guest.instance() {
            Ok(_) => Ok(()),
            Err(f) => Err(failure_at(
                self.cx.subtask,
                batch,
                None,
                f.message,
                Fault::Environment,
            )),
        }
    }
}

impl Operator for GuestMap {
    fn process(&mut self, input: Input<'_>) -> Result<Output, TaskFailure> {
        let entries = self.entries(&input);
        let (batch, clock) = match &input {
            Input::Records { batch, clock, .. } | Input::Rows { batch, clock, .. } => {
                (*batch, *clock)
            }
        };
        self.map(batch, clock, &entries)
    }

    fn reset(&mut self) {
        self.guest.reset();
    }
}

/// Sends a call's emitted rows on, appended to the output's buffer: each
/// main row to the next stage (to the subtask that owns its key when that
/// stage is keyed) or, from the last stage, a line for the sink; each side
/// row a line of its side output. `orders` holds each input entry's place
/// in the stream; the output was checked against `shape` before.
pub(crate) fn emit(
    cx: &StageContext,
    down: Downstream,
    shape: Shape,
    out: &mut Output,
    buf: Vec<u8>,
    orders: &[u64],
) -> Result<(), String> {
    let base = out.rows.len() as u32;
    if out.rows.is_empty() {
        out.rows = buf;
    } else {
        out.rows.extend_from_slice(&buf);
    }
    let (me, p, m) = (cx.subtask, cx.downstream, cx.max_parallelism);
    let first = down.stage == 0;
    let Output {
        rows,
        routes,
        lines,
        side,
        max_timestamp,
        ..
    } = out;
    let body = &rows[base as usize..];
    enc::read_emitted(body, shape, |em: Emitted| {
        let upstream = orders[em.entry as usize];
        let order = if first {
            upstream | u64::from(em.ordinal)
        } else {
            exchange::then(upstream, em.ordinal)
        };
        let (record, ordinal) = ((order >> 32) as u32, order as u32);
        let row = &body[em.row.0 as usize..em.row.1 as usize];
        if em.tag > 0 {
            let side = &mut side[em.tag as usize - 1];
            encoding::format_row(row, &mut side.bytes);
            side.push_mark(record, ordinal);
            return;
        }
        *max_timestamp = Some(max_timestamp.map_or(em.timestamp, |t| t.max(em.timestamp)));
        if down.last {
            if !cx.discard {
                encoding::format_row(row, &mut lines.bytes);
            }
            lines.push_mark(record, ordinal);
            return;
        }
        let to = if down.keyed {
            exchange::owner(em.hash, p, m)
        } else {
            me
        };
        routes[to as usize].push(RowRef {
            record,
            ordinal,
            row: (em.row.0 + base, em.row.1 + base),
            key: (em.key.0 + base, em.key.1 + base),
            hash: em.hash,
        });
    })
    .map_err(malformed)
}

/// A decoder error worded for the user.
pub(crate) fn malformed(e: encoding::Malformed) -> String {
    match e {
        encoding::Malformed(message, Some(_)) => message,
        encoding::Malformed(message, None) => format!("the guest's output is malformed: {message}"),
    }
}
