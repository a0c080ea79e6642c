//! The SDK's side of the 0.2.0 calls: decoding what the host ships,
//! running the user's stage functions, encoding their rows and changes.
//! Used by [`crate::pipeline!`]; not an API.

use std::sync::OnceLock;

use crate::describe::Params;
use crate::encoding::{self, Reader};
use crate::pipeline::ctx::{Ctx, Slot, TimerChange, Written};
use crate::pipeline::source::first_timestamp;
use crate::pipeline::{
    Assigner, Event, Job, KeyFn, Kind, Out, Record, Time, WindowInfo, Windows, read_row,
};
use crate::value::Row;
use crate::wit2::sluice::stream::types as wit;

/// The user's job, as gathered by [`crate::pipeline!`].
pub trait UserJob {
    /// Builds the job.
    fn job(params: &Params) -> Job;
}

/// The instance's job, built once (with the parameters `open` got).
static JOB: OnceLock<Job> = OnceLock::new();

fn job<U: UserJob>() -> &'static Job {
    JOB.get_or_init(|| U::job(&Params::default()))
}

/// `open`: the panic hook, and the job built with the parameters.
pub fn open<U: UserJob>(params: Vec<(String, String)>) -> Result<(), String> {
    crate::__rt::panic_hook();
    let params = Params(params);
    JOB.get_or_init(|| U::job(&params));
    Ok(())
}

fn result(output: Vec<u8>, changes: Vec<u8>) -> wit::BatchResult {
    wit::BatchResult {
        output,
        changes,
        failed: None,
    }
}

fn failed(index: u32, message: String) -> wit::BatchResult {
    wit::BatchResult {
        output: Vec::new(),
        changes: Vec::new(),
        failed: Some(wit::RecordError { index, message }),
    }
}

fn malformed(index: u32, message: &str) -> wit::BatchResult {
    failed(index, format!("malformed batch from the host: {message}"))
}

/// Entry `index` is malformed: the output and changes of those before it,
/// and the failure.
fn malformed_after(
    output: Vec<u8>,
    changes: Vec<u8>,
    index: u32,
    message: &str,
) -> wit::BatchResult {
    wit::BatchResult {
        output,
        changes,
        ..malformed(index, message)
    }
}

/// The stage `stage` and the key selector of the stage after it.
fn stage_of(job: &Job, stage: u32) -> Result<(&Kind, Option<&KeyFn>), wit::BatchResult> {
    let s = stage as usize;
    let Some(st) = job.stages.get(s) else {
        return Err(failed(0, format!("the job has no stage {stage}")));
    };
    Ok((&st.kind, job.stages.get(s + 1).and_then(|n| n.key.as_ref())))
}

/// Runs `f` on one entry's output list (count, then rows).
fn list(
    buf: &mut Vec<u8>,
    ts: i64,
    key: Option<&KeyFn>,
    sides: &[String],
    f: impl FnOnce(&mut Out<'_>),
) {
    let at = buf.len();
    encoding::put_u32(buf, 0);
    let mut out = Out {
        buf,
        rows: 0,
        timestamp: ts,
        key,
        sides,
    };
    f(&mut out);
    let rows = out.rows;
    buf[at..at + 4].copy_from_slice(&rows.to_le_bytes());
}

/// `map`.
pub fn map<U: UserJob>(stage: u32, header: wit::BatchHeader, input: Vec<u8>) -> wit::BatchResult {
    let job = job::<U>();
    let (kind, key) = match stage_of(job, stage) {
        Ok(s) => s,
        Err(e) => return e,
    };
    let Kind::Map(f) = kind else {
        return failed(0, format!("stage {stage} is not a map stage"));
    };
    let mut buf = Vec::with_capacity(input.len().saturating_mul(2));
    let mut r = Reader::new(&input);
    let mut index = 0;
    while !r.at_end() {
        let entry = if stage == 0 {
            read_row(&mut r).map(|row| (first_timestamp(row, header.processing_time), row))
        } else {
            r.i64().and_then(|ts| Ok((ts, read_row(&mut r)?)))
        };
        let (timestamp, row) = match entry {
            Ok(e) => e,
            Err(m) => return malformed_after(buf, Vec::new(), index, &m),
        };
        list(&mut buf, timestamp, key, &job.sides, |out| {
            f(
                &Record {
                    row,
                    timestamp,
                    first: stage == 0,
                },
                out,
            )
        });
        index += 1;
    }
    result(buf, Vec::new())
}

/// The keys of a call and their states as shipped: key `k`'s states are
/// `slots[k * states..(k + 1) * states]`.
struct Keys<'k> {
    keys: Vec<&'k [u8]>,
    slots: Vec<Slot<'k>>,
    states: usize,
}

fn read_keys(keys: &[u8], states: usize) -> Result<Keys<'_>, String> {
    let mut r = Reader::new(keys);
    let n = r.u32()? as usize;
    // Each key is at least a byte and each state another.
    let bound = keys.len() / (1 + states);
    let mut out = Keys {
        keys: Vec::with_capacity(n.min(bound)),
        slots: Vec::with_capacity(n.min(bound) * states),
        states,
    };
    for _ in 0..n {
        out.keys.push(r.value_bytes()?);
        for _ in 0..states {
            out.slots.push(Slot::Shipped(match r.u8()? {
                0 => None,
                _ => Some(r.sized()?),
            }));
        }
    }
    Ok(out)
}

/// A process call's changes: each changed state's new bytes, then the
/// timers in the order they were set and deleted.
fn changes(keys: &Keys<'_>, written: &[u8], timers: &[TimerChange]) -> Vec<u8> {
    let mut out = Vec::with_capacity(written.len() + keys.slots.len() * 13 + timers.len() * 14);
    let states = keys.states.max(1);
    for (i, slot) in keys.slots.iter().enumerate() {
        let Slot::Changed(range) = *slot else {
            continue;
        };
        out.push(if range.is_some() { 0 } else { 1 });
        encoding::put_u32(&mut out, (i / states) as u32);
        encoding::put_u32(&mut out, (i % states) as u32);
        if let Some(b) = slot.bytes(written) {
            encoding::put_len(&mut out, b.len());
            out.extend_from_slice(b);
        }
    }
    for &(k, set, domain, at) in timers {
        out.push(if set { 2 } else { 3 });
        encoding::put_u32(&mut out, k);
        out.push(domain);
        out.extend_from_slice(&at.to_le_bytes());
    }
    out
}

/// `process`.
pub fn process<U: UserJob>(
    stage: u32,
    header: wit::BatchHeader,
    input: Vec<u8>,
    keys: Vec<u8>,
) -> wit::BatchResult {
    let job = job::<U>();
    let (kind, next) = match stage_of(job, stage) {
        Ok(s) => s,
        Err(e) => return e,
    };
    let Kind::Process(states, f) = kind else {
        return failed(0, format!("stage {stage} is not a process stage"));
    };
    let kinds: Vec<u8> = states.iter().map(|s| s.kind).collect();
    let mut keys = match read_keys(&keys, states.len()) {
        Ok(k) => k,
        Err(m) => return malformed(0, &m),
    };
    let mut timers = Vec::new();
    let mut written = Written::default();
    let mut buf = Vec::with_capacity(input.len());
    let mut r = Reader::new(&input);
    let mut index = 0;
    while !r.at_end() {
        let entry = (|| {
            let tag = r.u8()?;
            let k = r.u32()?;
            let ts = r.i64()?;
            let event = match tag {
                0 => Event::Row(Record {
                    row: read_row(&mut r)?,
                    timestamp: ts,
                    first: false,
                }),
                1 => Event::Timer {
                    at: ts,
                    time: if r.u8()? == 0 {
                        Time::Event
                    } else {
                        Time::Processing
                    },
                },
                other => return Err(format!("unknown entry {other}")),
            };
            Ok((k, ts, event))
        })();
        let (k, ts, event) = match entry {
            Ok(e) if (e.0 as usize) < keys.keys.len() => e,
            Ok(e) => {
                let m = format!("key index {} of {}", e.0, keys.keys.len());
                return malformed_after(buf, changes(&keys, &written.buf, &timers), index, &m);
            }
            Err(m) => {
                return malformed_after(buf, changes(&keys, &written.buf, &timers), index, &m);
            }
        };
        let at = k as usize * keys.states;
        let mut cx = Ctx {
            key: keys.keys[k as usize],
            key_index: k,
            kinds: &kinds,
            slots: &mut keys.slots,
            first: at,
            written: &mut written,
            timers: &mut timers,
            timestamp: ts,
            watermark: header.watermark,
            processing_time: header.processing_time,
        };
        list(&mut buf, ts, next, &job.sides, |out| f(&mut cx, event, out));
        index += 1;
    }
    let changes = changes(&keys, &written.buf, &timers);
    result(buf, changes)
}

/// A state as the window calls ship it: none, or its bytes.
fn read_state<'a>(r: &mut Reader<'a>) -> Result<Option<&'a [u8]>, String> {
    Ok(match r.u8()? {
        0 => None,
        _ => Some(r.sized()?),
    })
}

/// An aggregate as a row (it is one: the SDK wrote it).
fn agg_row(bytes: Option<&[u8]>) -> Result<Option<&Row>, String> {
    match bytes {
        None => Ok(None),
        Some(b) => read_row(&mut Reader::new(b)).map(Some),
    }
}

fn put_change(out: &mut Vec<u8>, slot: usize, bytes: &[u8]) {
    encoding::put_u32(out, slot as u32);
    encoding::put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

/// The aggregates of a `window-add` call's slots, in one buffer: a new
/// aggregate of the same length overwrites the old one, another is
/// appended (the buffer lives for the call).
struct Aggs {
    held: Vec<u8>,
    /// Where each slot's aggregate is in `held`, and whether it changed.
    spans: Vec<(Option<std::ops::Range<usize>>, bool)>,
}

impl Aggs {
    fn read(slots: &[u8]) -> Result<Aggs, String> {
        let mut r = Reader::new(slots);
        let n = r.u32()? as usize;
        let mut aggs = Aggs {
            held: Vec::with_capacity(slots.len()),
            spans: Vec::with_capacity(n.min(slots.len())),
        };
        for _ in 0..n {
            r.value_bytes()?;
            r.i64()?;
            r.i64()?;
            let span = read_state(&mut r)?.map(|b| {
                let at = aggs.held.len();
                aggs.held.extend_from_slice(b);
                at..aggs.held.len()
            });
            aggs.spans.push((span, false));
        }
        Ok(aggs)
    }

    fn get(&self, slot: usize) -> Option<&[u8]> {
        self.spans[slot].0.clone().map(|s| &self.held[s])
    }

    fn set(&mut self, slot: usize, bytes: &[u8]) {
        let (span, changed) = &mut self.spans[slot];
        *changed = true;
        match span {
            Some(s) if s.len() == bytes.len() => self.held[s.clone()].copy_from_slice(bytes),
            _ => {
                let at = self.held.len();
                self.held.extend_from_slice(bytes);
                *span = Some(at..self.held.len());
            }
        }
    }

    /// The new aggregate of every slot that changed.
    fn changes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (slot, (span, changed)) in self.spans.iter().enumerate() {
            if let (true, Some(s)) = (changed, span) {
                put_change(&mut out, slot, &self.held[s.clone()]);
            }
        }
        out
    }
}

/// `window-add`.
pub fn window_add<U: UserJob>(stage: u32, input: Vec<u8>, slots: Vec<u8>) -> wit::BatchResult {
    let job = job::<U>();
    let Ok((Kind::Aggregate(_, add, _, _), _)) = stage_of(job, stage) else {
        return failed(0, format!("stage {stage} is not an aggregate window stage"));
    };
    let mut aggs = match Aggs::read(&slots) {
        Ok(a) => a,
        Err(m) => return malformed(0, &m),
    };
    let mut r = Reader::new(&input);
    let mut index = 0;
    let mut next = Vec::new();
    while !r.at_end() {
        let entry = r
            .u32()
            .and_then(|slot| Ok((slot as usize, read_row(&mut r)?)));
        let (slot, row) = match entry {
            Ok(e) if e.0 < aggs.spans.len() => e,
            Ok(e) => {
                let m = format!("slot {} of {}", e.0, aggs.spans.len());
                return malformed_after(Vec::new(), aggs.changes(), index, &m);
            }
            Err(m) => return malformed_after(Vec::new(), aggs.changes(), index, &m),
        };
        next.clear();
        match agg_row(aggs.get(slot)) {
            Ok(acc) => add(acc, row, &mut next),
            Err(m) => return malformed_after(Vec::new(), aggs.changes(), index, &m),
        }
        aggs.set(slot, &next);
        index += 1;
    }
    result(Vec::new(), aggs.changes())
}

/// `window-merge`.
pub fn window_merge<U: UserJob>(stage: u32, input: Vec<u8>) -> wit::BatchResult {
    let job = job::<U>();
    let Ok((Kind::Aggregate(_, _, merge, _), _)) = stage_of(job, stage) else {
        return failed(0, format!("stage {stage} is not an aggregate window stage"));
    };
    let mut r = Reader::new(&input);
    let n = match r.u32() {
        Ok(n) => n,
        Err(m) => return malformed(0, &m),
    };
    let mut out = Vec::new();
    for pair in 0..n {
        let both = read_state(&mut r)
            .and_then(|a| Ok((a, read_state(&mut r)?)))
            .and_then(|(a, b)| Ok((agg_row(a)?, agg_row(b)?)));
        let mut merged = Vec::new();
        match both {
            Ok((Some(a), Some(b))) => merge(a, b, &mut merged),
            Ok((Some(one), None) | (None, Some(one))) => {
                crate::collector::IntoRow::encode_row(one, &mut merged)
            }
            Ok((None, None)) => continue,
            Err(m) => return malformed(pair, &m),
        }
        put_change(&mut out, pair as usize, &merged);
    }
    result(Vec::new(), out)
}

/// `window-fire`.
pub fn window_fire<U: UserJob>(stage: u32, input: Vec<u8>) -> wit::BatchResult {
    let job = job::<U>();
    let (kind, next) = match stage_of(job, stage) {
        Ok(s) => s,
        Err(e) => return e,
    };
    let mut r = Reader::new(&input);
    let n = match r.u32() {
        Ok(n) => n,
        Err(m) => return malformed(0, &m),
    };
    let mut buf = Vec::new();
    for index in 0..n {
        let head = (|| {
            let key = r.value_bytes()?;
            Ok::<_, String>((key, r.i64()?, r.i64()?, r.u8()?))
        })();
        let Ok((key, start, end, tag)) = head else {
            return malformed_after(buf, Vec::new(), index, "a window ends early");
        };
        let info = WindowInfo {
            key: crate::value::decode(key).unwrap_or(crate::value::Value::Null),
            start,
            end,
        };
        let ts = end.saturating_sub(1);
        match (kind, tag) {
            (Kind::Aggregate(_, _, _, fire), 0) => {
                let acc = match read_state(&mut r).and_then(agg_row) {
                    Ok(a) => a,
                    Err(m) => return malformed_after(buf, Vec::new(), index, &m),
                };
                list(&mut buf, ts, next, &job.sides, |out| fire(&info, acc, out));
            }
            (Kind::Contents(_, fire), 1) => {
                let rows = (|| {
                    let m = r.u32()?;
                    let mut rows = Vec::new();
                    for _ in 0..m {
                        let ts = r.i64()?;
                        rows.push((ts, read_row(&mut r)?));
                    }
                    Ok::<_, String>(rows)
                })();
                let rows = match rows {
                    Ok(rows) => rows,
                    Err(m) => return malformed_after(buf, Vec::new(), index, &m),
                };
                list(&mut buf, ts, next, &job.sides, |out| {
                    fire(&info, &rows, out)
                });
            }
            _ => {
                return failed(
                    index,
                    format!("stage {stage} does not fire windows of this kind"),
                );
            }
        }
    }
    result(buf, Vec::new())
}

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn window_spec(w: &Windows, function: wit::WindowFunction) -> wit::WindowSpec {
    wit::WindowSpec {
        assigner: match w.assigner {
            Assigner::Tumbling(size) => wit::WindowAssigner::Tumbling(ms(size)),
            Assigner::Sliding(size, slide) => wit::WindowAssigner::Sliding(wit::SlidingWindow {
                size_ms: ms(size),
                slide_ms: ms(slide),
            }),
            Assigner::Session(gap) => wit::WindowAssigner::Session(ms(gap)),
        },
        domain: match w.time {
            Time::Event => wit::TimeDomain::EventTime,
            Time::Processing => wit::TimeDomain::ProcessingTime,
        },
        allowed_lateness_ms: ms(w.lateness),
        late_output: w.late_output.clone(),
        function,
    }
}

fn stage_kind(kind: &Kind) -> wit::StageKind {
    match kind {
        Kind::Map(_) => wit::StageKind::Map,
        Kind::Process(states, _) => wit::StageKind::Process(
            states
                .iter()
                .map(|s| wit::StateDecl {
                    name: s.name.clone(),
                    kind: match s.kind {
                        0 => wit::StateKind::Value,
                        1 => wit::StateKind::List,
                        _ => wit::StateKind::Map,
                    },
                    ttl_ms: s.ttl.map(ms),
                })
                .collect(),
        ),
        Kind::Aggregate(w, ..) => {
            wit::StageKind::Window(window_spec(w, wit::WindowFunction::Aggregate))
        }
        Kind::Contents(w, _) => {
            wit::StageKind::Window(window_spec(w, wit::WindowFunction::Process))
        }
    }
}

/// `describe`.
pub fn describe<U: UserJob>(params: Vec<(String, String)>) -> wit::JobDescription {
    let job = U::job(&Params(params));
    let d = &job.desc;
    wit::JobDescription {
        name: d.name.clone(),
        source: d.source.clone(),
        sink: d.sink.clone(),
        checkpoint_interval_ms: d.checkpoint_interval.map(ms),
        restart: d.restart.map(|r| crate::__rt::restart!(wit, r)),
        parallelism: d.parallelism,
        limits: d.limits.map(|l| crate::__rt::limits!(wit, l)),
        stages: job
            .stages
            .iter()
            .map(|s| wit::Stage {
                name: s.name.clone(),
                kind: stage_kind(&s.kind),
                keyed: s.key.is_some(),
            })
            .collect(),
        side_outputs: job
            .sides
            .iter()
            .zip(&job.side_sinks)
            .map(|(name, sink)| wit::SideOutput {
                name: name.clone(),
                sink: sink.clone(),
            })
            .collect(),
        watermarks: job.watermarks.map(|(bound, idle)| wit::WatermarkStrategy {
            out_of_orderness_ms: ms(bound),
            idle_timeout_ms: idle.map(ms),
        }),
    }
}
