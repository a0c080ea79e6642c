//! Pipelines with keyed state, timers, event time and windows
//! (`sluice:stream@0.2.0`).
//!
//! A job is a pipeline of stages, described once with [`Job`]: map stages
//! (stateless: map, filter, flat-map in one function), keyed process
//! functions with the keyed states they declare and timers, and keyed
//! windows. The host owns everything that must survive a failure — the
//! state of every key, the timers, the watermark, the windows, the
//! checkpoints — and ships a key's state in with the batch that needs it;
//! the functions here see plain values.
//!
//! ```no_run
//! use sluice_guest::pipeline::{Ctx, Event, Job, Out, Record, State, Time};
//! use sluice_guest::{Params, Row, Value};
//! use std::time::Duration;
//!
//! const SMALL: usize = 0; // the state declared first
//!
//! /// `account,amount,timestamp` lines into `(account, amount)` rows.
//! fn parse(r: &Record, out: &mut Out) {
//!     let mut f = r.text().split(',');
//!     let (Some(account), Some(amount), Some(ts)) = (f.next(), f.next(), f.next()) else {
//!         return out.side("malformed", (r.text(),));
//!     };
//!     match (amount.trim().parse::<f64>(), ts.trim().parse::<i64>()) {
//!         (Ok(amount), Ok(ts)) => out.emit_at(ts, (account.trim(), amount)),
//!         _ => out.side("malformed", (r.text(),)),
//!     }
//! }
//!
//! /// A small amount followed within a minute by a large one is an alert.
//! fn detect(cx: &mut Ctx, event: Event, out: &mut Out) {
//!     match event {
//!         Event::Row(r) => {
//!             let amount = r.row().field(1).as_float().unwrap_or(0.0);
//!             if amount > 500.0 && cx.value(SMALL).is_some() {
//!                 out.emit((cx.key(), amount));
//!                 cx.clear(SMALL);
//!             } else if amount < 1.0 {
//!                 cx.set(SMALL, (amount,));
//!                 cx.set_timer(Time::Event, r.timestamp() + 60_000);
//!             }
//!         }
//!         Event::Timer { .. } => cx.clear(SMALL),
//!     }
//! }
//!
//! fn job(_params: &Params) -> Job {
//!     Job::new("fraud-detector")
//!         .watermarks(Duration::from_secs(5))
//!         .side_output("malformed")
//!         .map("parse", parse)
//!         .key_by(|row: &Row| row.field(0))
//!         .process("detect", [State::value("small")], detect)
//! }
//!
//! sluice_guest::pipeline!(job);
//! ```
//!
//! Functions panic to fail: the host runs the record again alone in a
//! fresh instance, dead-letters it if it fails there too, and goes on with
//! every key's state as it was before the record. Everything must be
//! deterministic: the same input and state give the same output.

mod ctx;
#[doc(hidden)]
pub mod rt;
mod source;

use std::sync::Arc;
use std::time::Duration;

use crate::collector::IntoRow;
use crate::describe::{JobDescription, Limits, Restart};
use crate::encoding;
use crate::value::{Row, Value};

pub use ctx::Ctx;
pub use source::KafkaRecord;

/// Which clock a timer or a window follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Time {
    /// The rows' timestamps, as the watermark advances.
    Event,
    /// The processing time of the batches (recorded by the host, so a
    /// replay sees the same).
    Processing,
}

impl Time {
    pub(crate) fn code(self) -> u8 {
        match self {
            Time::Event => 0,
            Time::Processing => 1,
        }
    }
}

/// One input of a stage: a row and its timestamp. The first stage's rows
/// are the source's records: a line is one text field, timestamped with
/// the batch's processing time; a Kafka record is its value's text, then
/// its key, partition, offset, timestamp and headers ([`Record::kafka`]),
/// timestamped with its Kafka timestamp, so that the rows a first stage
/// emits with [`Out::emit`] are in the records' event time.
pub struct Record<'a> {
    pub(crate) row: &'a Row,
    pub(crate) timestamp: i64,
    /// Whether it is a first-stage input (a source's record).
    pub(crate) first: bool,
}

impl<'a> Record<'a> {
    /// The row.
    pub fn row(&self) -> &'a Row {
        self.row
    }

    /// The text of the first field (the line, in the first stage); empty
    /// when it is not text.
    pub fn text(&self) -> &'a str {
        match self.row.get(0) {
            Some(Value::Text(std::borrow::Cow::Borrowed(s))) => s,
            _ => "",
        }
    }

    /// Its timestamp (milliseconds since the Unix epoch).
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }

    /// The Kafka record a first-stage input is: its key, partition,
    /// offset, timestamp and headers. `None` for a line, and in later
    /// stages.
    ///
    /// ```no_run
    /// # use sluice_guest::pipeline::{Out, Record};
    /// /// `(key, partition, offset, value)` at the record's timestamp.
    /// fn tag(r: &Record, out: &mut Out) {
    ///     if let Some(k) = r.kafka() {
    ///         let key = k.key().map(String::from_utf8_lossy).unwrap_or_default();
    ///         out.emit((key.as_ref(), k.partition(), k.offset(), r.text()));
    ///     }
    /// }
    /// ```
    pub fn kafka(&self) -> Option<KafkaRecord<'a>> {
        if self.first {
            KafkaRecord::of(self.row)
        } else {
            None
        }
    }
}

/// What a process function is called for.
pub enum Event<'a> {
    /// A row of the key.
    Row(Record<'a>),
    /// A timer of the key that fired.
    Timer {
        /// The time it was set for.
        at: i64,
        /// Its clock.
        time: Time,
    },
}

/// A window that fires: its key and its span `[start, end)`.
pub struct WindowInfo<'a> {
    /// The key.
    pub key: Value<'a>,
    /// Its first millisecond.
    pub start: i64,
    /// One past its last millisecond.
    pub end: i64,
}

/// A key selector: the key of a row, for the stage it goes to.
pub(crate) type KeyFn = Arc<dyn Fn(&Row) -> Value<'_> + Send + Sync>;

/// Where a stage's rows go: `out.emit(row)` to the next stage (or the
/// sink), `out.side(name, row)` to a side output.
pub struct Out<'a> {
    pub(crate) buf: &'a mut Vec<u8>,
    pub(crate) rows: u32,
    pub(crate) timestamp: i64,
    pub(crate) key: Option<&'a KeyFn>,
    pub(crate) sides: &'a [String],
}

impl Out<'_> {
    /// Emits a row with the input's timestamp (a fired window's: its last
    /// millisecond; a timer's: the time it was set for).
    pub fn emit<R: IntoRow>(&mut self, row: R) {
        let ts = self.timestamp;
        self.emit_at(ts, row);
    }

    /// Emits a row with timestamp `ts`: in the first stage, the event time
    /// the watermark follows.
    pub fn emit_at<R: IntoRow>(&mut self, ts: i64, row: R) {
        self.buf.push(0);
        self.buf.extend_from_slice(&ts.to_le_bytes());
        let start = self.buf.len();
        row.encode_row(self.buf);
        if let Some(key) = self.key {
            // The key is read from the row just written: encoded aside, in
            // one buffer kept for every row, then appended.
            KEY.with_borrow_mut(|encoded| {
                encoded.clear();
                key(Row::from_encoded(&self.buf[start..])).encode(encoded);
                self.buf.extend_from_slice(encoded);
            });
        }
        self.rows += 1;
    }

    /// Sends a row to the side output `name` (declared with
    /// [`Job::side_output`]); panics when there is none of that name.
    pub fn side<R: IntoRow>(&mut self, name: &str, row: R) {
        let Some(i) = self.sides.iter().position(|s| s == name) else {
            panic!("there is no side output named `{name}`; declare it with Job::side_output");
        };
        self.buf.push((i + 1) as u8);
        self.buf.extend_from_slice(&self.timestamp.to_le_bytes());
        row.encode_row(self.buf);
        self.rows += 1;
    }
}

thread_local! {
    /// The key of the row being emitted, while it is encoded.
    static KEY: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A keyed state a process stage declares; the function reaches it by its
/// place in the declaration (0, 1, ...).
#[derive(Debug, Clone)]
pub struct State {
    pub(crate) name: String,
    pub(crate) kind: u8,
    pub(crate) ttl: Option<Duration>,
}

impl State {
    /// One row per key: [`Ctx::value`], [`Ctx::set`].
    pub fn value(name: &str) -> Self {
        State {
            name: name.into(),
            kind: 0,
            ttl: None,
        }
    }

    /// A list of rows per key: [`Ctx::list`], [`Ctx::push`].
    pub fn list(name: &str) -> Self {
        State {
            kind: 1,
            ..State::value(name)
        }
    }

    /// A map from values to rows per key: [`Ctx::get`], [`Ctx::put`].
    pub fn map(name: &str) -> Self {
        State {
            kind: 2,
            ..State::value(name)
        }
    }

    /// Gone when not written for `ttl` of processing time.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
}

/// How rows are put into windows.
#[derive(Debug, Clone)]
pub struct Windows {
    pub(crate) assigner: Assigner,
    pub(crate) time: Time,
    pub(crate) lateness: Duration,
    pub(crate) late_output: Option<String>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Assigner {
    Tumbling(Duration),
    Sliding(Duration, Duration),
    Session(Duration),
}

impl Windows {
    fn of(assigner: Assigner) -> Self {
        Windows {
            assigner,
            time: Time::Event,
            lateness: Duration::ZERO,
            late_output: None,
        }
    }

    /// Fixed windows of `size`, back to back, by event time.
    pub fn tumbling(size: Duration) -> Self {
        Windows::of(Assigner::Tumbling(size))
    }

    /// Windows of `size`, a new one every `slide`, by event time.
    pub fn sliding(size: Duration, slide: Duration) -> Self {
        Windows::of(Assigner::Sliding(size, slide))
    }

    /// Per-key windows of activity, closed by a `gap` without rows.
    pub fn session(gap: Duration) -> Self {
        Windows::of(Assigner::Session(gap))
    }

    /// By processing time instead of the rows' timestamps.
    pub fn processing_time(mut self) -> Self {
        self.time = Time::Processing;
        self
    }

    /// A row up to `lateness` behind the watermark still updates its
    /// window, which fires again.
    pub fn allowed_lateness(mut self, lateness: Duration) -> Self {
        self.lateness = lateness;
        self
    }

    /// Rows later than that go to this side output (else they are dropped
    /// and counted in the host's log).
    pub fn late_output(mut self, name: &str) -> Self {
        self.late_output = Some(name.into());
        self
    }
}

type MapFn = Box<dyn Fn(&Record<'_>, &mut Out<'_>) + Send + Sync>;
type ProcessFn = Box<dyn Fn(&mut Ctx<'_, '_>, Event<'_>, &mut Out<'_>) + Send + Sync>;
type AddFn = Box<dyn Fn(Option<&Row>, &Row, &mut Vec<u8>) + Send + Sync>;
type MergeFn = Box<dyn Fn(&Row, &Row, &mut Vec<u8>) + Send + Sync>;
type FireAggFn = Box<dyn Fn(&WindowInfo<'_>, Option<&Row>, &mut Out<'_>) + Send + Sync>;
type FireRowsFn = Box<dyn Fn(&WindowInfo<'_>, &[(i64, &Row)], &mut Out<'_>) + Send + Sync>;

pub(crate) enum Kind {
    Map(MapFn),
    Process(Vec<State>, ProcessFn),
    Aggregate(Windows, AddFn, MergeFn, FireAggFn),
    Contents(Windows, FireRowsFn),
}

pub(crate) struct Stage {
    pub(crate) name: String,
    pub(crate) key: Option<KeyFn>,
    pub(crate) kind: Kind,
}

/// A job: its pipeline of stages and its defaults (flags and a TOML file
/// override them).
pub struct Job {
    pub(crate) desc: JobDescription,
    pub(crate) stages: Vec<Stage>,
    pub(crate) sides: Vec<String>,
    pub(crate) side_sinks: Vec<Option<String>>,
    pub(crate) watermarks: Option<(Duration, Option<Duration>)>,
    next_key: Option<KeyFn>,
}

impl Job {
    /// A job with its name and no stages yet.
    pub fn new(name: &str) -> Self {
        Job {
            desc: JobDescription::new(name),
            stages: Vec::new(),
            sides: Vec::new(),
            side_sinks: Vec::new(),
            watermarks: None,
            next_key: None,
        }
    }

    fn stage(mut self, name: &str, kind: Kind) -> Self {
        let key = self.next_key.take();
        self.stages.push(Stage {
            name: name.into(),
            key,
            kind,
        });
        self
    }

    /// A stateless stage: `f` emits any number of rows for each input
    /// (map, filter and flat-map in one).
    pub fn map(
        self,
        name: &str,
        f: impl Fn(&Record<'_>, &mut Out<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.stage(name, Kind::Map(Box::new(f)))
    }

    /// Keys the next stage's input by `key` (the host routes rows by it).
    pub fn key_by(mut self, key: impl Fn(&Row) -> Value<'_> + Send + Sync + 'static) -> Self {
        self.next_key = Some(Arc::new(key));
        self
    }

    /// A keyed process function with the states it declares and timers.
    pub fn process<S: IntoIterator<Item = State>>(
        self,
        name: &str,
        states: S,
        f: impl Fn(&mut Ctx<'_, '_>, Event<'_>, &mut Out<'_>) + Send + Sync + 'static,
    ) -> Self {
        let states = states.into_iter().collect();
        self.stage(name, Kind::Process(states, Box::new(f)))
    }

    /// Keyed windows with an aggregate per key and window, kept by the
    /// host: `add` folds a row into it (none: the window's first row),
    /// `merge` merges two (session windows), `fire` turns it into rows.
    pub fn aggregate<A: IntoRow, M: IntoRow>(
        self,
        name: &str,
        windows: Windows,
        add: impl Fn(Option<&Row>, &Row) -> A + Send + Sync + 'static,
        merge: impl Fn(&Row, &Row) -> M + Send + Sync + 'static,
        fire: impl Fn(&WindowInfo<'_>, Option<&Row>, &mut Out<'_>) + Send + Sync + 'static,
    ) -> Self {
        let add: AddFn = Box::new(move |acc, row, buf| add(acc, row).encode_row(buf));
        let merge: MergeFn = Box::new(move |a, b, buf| merge(a, b).encode_row(buf));
        self.stage(name, Kind::Aggregate(windows, add, merge, Box::new(fire)))
    }

    /// Keyed windows whose rows the host keeps; `fire` gets them all, by
    /// timestamp, when the window fires.
    pub fn window(
        self,
        name: &str,
        windows: Windows,
        fire: impl Fn(&WindowInfo<'_>, &[(i64, &Row)], &mut Out<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.stage(name, Kind::Contents(windows, Box::new(fire)))
    }

    /// Declares a side output (`--side-output NAME=URI` picks its sink;
    /// `print` by default).
    pub fn side_output(mut self, name: &str) -> Self {
        self.sides.push(name.into());
        self.side_sinks.push(None);
        self
    }

    /// Declares a side output with its default sink.
    pub fn side_output_to(mut self, name: &str, sink: &str) -> Self {
        self.sides.push(name.into());
        self.side_sinks.push(Some(sink.into()));
        self
    }

    /// Event time: the watermark trails the largest timestamp the first
    /// stage emitted by `out_of_orderness`.
    pub fn watermarks(mut self, out_of_orderness: Duration) -> Self {
        let idle = self.watermarks.and_then(|w| w.1);
        self.watermarks = Some((out_of_orderness, idle));
        self
    }

    /// After `timeout` of processing time without records, the watermark
    /// advances with processing time, so that an idle source's windows and
    /// timers still fire.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        let bound = self.watermarks.map_or(Duration::ZERO, |w| w.0);
        self.watermarks = Some((bound, Some(timeout)));
        self
    }

    /// The default source: `socket://HOST:PORT`, `file://PATH` or `-`.
    pub fn source(mut self, uri: &str) -> Self {
        self.desc = self.desc.source(uri);
        self
    }

    /// The default sink of the main output.
    pub fn sink(mut self, uri: &str) -> Self {
        self.desc = self.desc.sink(uri);
        self
    }

    /// Checkpoint every `interval`.
    pub fn checkpoint_every(mut self, interval: Duration) -> Self {
        self.desc = self.desc.checkpoint_every(interval);
        self
    }

    /// The restart strategy.
    pub fn restart(mut self, restart: Restart) -> Self {
        self.desc = self.desc.restart(restart);
        self
    }

    /// The default number of parallel subtasks.
    pub fn parallelism(mut self, parallelism: u32) -> Self {
        self.desc = self.desc.parallelism(parallelism);
        self
    }

    /// Limits for each guest instance.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.desc = self.desc.limits(limits);
        self
    }
}

/// Reads a row the host sent, checked (text must be UTF-8).
pub(crate) fn read_row<'a>(r: &mut encoding::Reader<'a>) -> Result<&'a Row, String> {
    Ok(Row::from_encoded(r.row_bytes()?))
}
