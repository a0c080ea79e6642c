//! A 0.2.0 keyed window stage: tumbling, sliding and session windows, by
//! event time (the rows' timestamps and the watermark) or processing time,
//! with allowed lateness and a side output for rows later than that.
//!
//! The host keeps every key's windows (`state/store.rs`): for an aggregate
//! function, each window's aggregate, folded by one `window-add` call per
//! batch (with `window-merge` first when a row joins session windows); for
//! a process function, the window's rows, handed to `window-fire` whole.
//! An event-time window fires once the watermark reaches its last
//! millisecond (`end - 1`), and again each time a late row within the
//! allowed lateness updates it; it is purged once the watermark passes
//! `end - 1 + allowed lateness`. A processing-time window fires, and is
//! purged, once the batches' processing time reaches `end - 1`.
//!
//! As in a process stage, a batch applies nothing until all of it
//! succeeded: a fault in `window-add` or `window-merge` is pinned to its
//! row (the poison one is dead-lettered, the batch goes on without it); a
//! window whose `window-fire` fails alone in a fresh instance is dropped
//! and dead-lettered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::warn;

use crate::config::pipeline::{TimeDomain, WindowAssigner, WindowFunction, WindowSpec};
use crate::dataflow::exchange::{Routed, routed_to};
use crate::dataflow::message::{Clock, SourceBatch};
use crate::dataflow::operator::{Input, Operator, OperatorSnapshot, Output};
use crate::encoding;
use crate::encoding::pipeline::{self as enc, Shape, put_state};
use crate::fault::{Fault, TaskFailure};
use crate::operators::flat_map::{StageContext, failure_at};
use crate::operators::guest::Guest;
use crate::operators::guest_map::{Downstream, emit, malformed};
use crate::state::Batched;
use crate::state::key_groups::{key_group_range, same_key, table_hash};
use crate::state::keyed::StateError;
use crate::state::store::{Keyed, Reader, Store, put_bytes};
use crate::wasm::{Call, Header};

/// How often the count of dropped late rows is logged, at most.
const LATE_LOG_EVERY: Duration = Duration::from_secs(10);

/// A window's rows (process function), a chunk per batch that added any,
/// so that a batch copies chunk handles, not rows.
type Chunks = Vec<Chunk>;

/// Rows a batch added to a window: their number, and each as `s64 ts,
/// u32 len, row` in one buffer (the checkpoint's encoding), shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    rows: u32,
    bytes: Arc<[u8]>,
}

/// Rows being added to a window, as a [`Chunk`] keeps them.
#[derive(Default)]
struct Added {
    rows: u32,
    bytes: Vec<u8>,
}

impl Added {
    fn push(&mut self, ts: i64, row: &[u8]) {
        self.rows += 1;
        self.bytes.extend_from_slice(&ts.to_le_bytes());
        put_bytes(&mut self.bytes, row);
    }

    fn extend(&mut self, other: Added) {
        self.rows += other.rows;
        self.bytes.extend_from_slice(&other.bytes);
    }
}

impl From<Added> for Chunk {
    fn from(added: Added) -> Chunk {
        Chunk {
            rows: added.rows,
            bytes: added.bytes.into(),
        }
    }
}

/// Appends a chunk's rows, `(ts, row)`, to `out`.
fn chunk_rows<'c>(c: &'c Chunk, out: &mut Vec<(i64, &'c [u8])>) {
    let mut r = Reader::new(&c.bytes, 0);
    while !r.done() {
        // The host wrote the chunk: it reads whole.
        let Ok(ts) = r.i64() else { return };
        let Ok(row) = r.bytes() else { return };
        out.push((ts, row));
    }
}

/// A window's aggregate, as the guest returned it: up to [`INLINE`]
/// bytes (a count, a sum) held inline, longer ones shared between the
/// store and a batch working on them.
#[derive(Clone, PartialEq, Eq)]
pub enum Agg {
    /// Its length and bytes.
    Inline(u8, [u8; INLINE]),
    /// Its bytes.
    Shared(Arc<[u8]>),
}

/// The longest aggregate held inline.
const INLINE: usize = 22;

impl Agg {
    fn new(bytes: &[u8]) -> Agg {
        if bytes.len() <= INLINE {
            let mut inline = [0; INLINE];
            inline[..bytes.len()].copy_from_slice(bytes);
            Agg::Inline(bytes.len() as u8, inline)
        } else {
            Agg::Shared(bytes.into())
        }
    }
}

impl std::ops::Deref for Agg {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Agg::Inline(n, inline) => &inline[..usize::from(*n)],
            Agg::Shared(bytes) => bytes,
        }
    }
}

impl std::fmt::Debug for Agg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// A key's windows, by start (mostly one).
type Wins = smallvec::SmallVec<[Win; 1]>;

/// The windows of a key a call changes.
type Opens = smallvec::SmallVec<[Open; 1]>;

/// A window's aggregates while a batch works on it.
type Aggs = smallvec::SmallVec<[Agg; 1]>;

/// What a window holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contents {
    /// The aggregate so far (none before the guest first set one), shared
    /// between the store and a batch working on it.
    Aggregate(Option<Agg>),
    /// The rows, with their timestamps.
    Rows(Chunks),
}

/// One key's window, `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Win {
    /// First millisecond.
    pub start: i64,
    /// One past the last millisecond.
    pub end: i64,
    /// Fired, and not updated since.
    pub fired: bool,
    /// What it holds.
    pub contents: Contents,
}

/// One key's windows, by start, and the clock they follow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyWindows {
    /// 0: event time, 1: processing time.
    pub domain: u8,
    /// The allowed lateness (0 in processing time).
    pub lateness: i64,
    /// The windows.
    pub wins: Wins,
}

impl KeyWindows {
    /// When window `w` fires (not fired yet) or is purged (fired).
    fn deadline(&self, w: &Win) -> i64 {
        let last = w.end.saturating_sub(1);
        if w.fired {
            last.saturating_add(self.lateness)
        } else {
            last
        }
    }
}

impl Keyed for KeyWindows {
    fn is_empty(&self) -> bool {
        self.wins.is_empty()
    }

    fn deadlines(&self, out: &mut Vec<(u8, i64)>) {
        out.extend(self.wins.iter().map(|w| (self.domain, self.deadline(w))));
    }

    /// `u8 domain, s64 lateness, u32 n, window{n}` with `window := s64
    /// start, s64 end, u8 fired, (0x00 state | 0x01 u32 m, (s64 ts, u32
    /// len, row){m})`.
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.domain);
        out.extend_from_slice(&self.lateness.to_le_bytes());
        out.extend_from_slice(&(self.wins.len() as u32).to_le_bytes());
        for w in &self.wins {
            out.extend_from_slice(&w.start.to_le_bytes());
            out.extend_from_slice(&w.end.to_le_bytes());
            out.push(u8::from(w.fired));
            match &w.contents {
                Contents::Aggregate(agg) => {
                    out.push(0);
                    put_state(out, agg.as_deref());
                }
                Contents::Rows(chunks) => {
                    out.push(1);
                    let m: u32 = chunks.iter().map(|c| c.rows).sum();
                    out.extend_from_slice(&m.to_le_bytes());
                    for c in chunks {
                        out.extend_from_slice(&c.bytes);
                    }
                }
            }
        }
    }

    /// `function`: 0 aggregate, 1 process; the contents must match it.
    fn decode(r: &mut Reader<'_>, function: usize) -> Result<Self, StateError> {
        let mut kw = KeyWindows {
            domain: r.u8()?,
            lateness: r.i64()?,
            wins: Wins::new(),
        };
        for _ in 0..r.u32()? {
            let (start, end, fired) = (r.i64()?, r.i64()?, r.u8()? != 0);
            let kind = r.u8()?;
            if usize::from(kind) != function {
                return Err(StateError(format!(
                    "a window in key group {} holds {}, the stage keeps {}; was the checkpoint taken with another module?",
                    r.group,
                    if kind == 0 { "an aggregate" } else { "rows" },
                    if function == 0 { "aggregates" } else { "rows" },
                )));
            }
            let contents = if kind == 0 {
                Contents::Aggregate(match r.u8()? {
                    0 => None,
                    _ => Some(Agg::new(r.bytes()?)),
                })
            } else {
                let mut rows = Added::default();
                for _ in 0..r.u32()? {
                    let ts = r.i64()?;
                    rows.push(ts, r.bytes()?);
                }
                Contents::Rows(vec![rows.into()])
            };
            kw.wins.push(Win {
                start,
                end,
                fired,
                contents,
            });
        }
        Ok(kw)
    }
}

/// A window stage's instance on one subtask.
pub struct Window {
    cx: StageContext,
    guest: Guest,
    down: Downstream,
    spec: WindowSpec,
    late_tag: Option<u8>,
    store: Store<KeyWindows>,
    late_dropped: u64,
    late_logged: Option<Instant>,
}

/// A window being changed by a call: what it will hold once the call
/// succeeded.
struct Open {
    start: i64,
    end: i64,
    fired: bool,
    /// Rows joined it (or it merged): it fires again.
    touched: bool,
    /// Aggregates of the stored windows merged into it, to merge into one
    /// (one but while sessions merge: kept inline).
    aggs: Aggs,
    /// Its rows (process function).
    chunks: Chunks,
    /// Rows this call adds (process function).
    added: Added,
    /// Its place among the windows of a `window-add` call, once it has one.
    slot: Option<u32>,
}

/// The windows of the keys a call changes.
#[derive(Default)]
struct Work<'r> {
    keys: Vec<(&'r [u8], u64, Opens)>,
    /// Index into `keys`, by the key's hash.
    index: hashbrown::HashTable<usize>,
}

/// A row to fold into a window: its key, where the window is (its start;
/// for sessions, the row's timestamp, within the merged window), the row.
struct Add<'r> {
    key: usize,
    at: i64,
    /// The row's own timestamp.
    ts: i64,
    row: &'r [u8],
}

/// A window due to fire: its key (an index into the keys due), the
/// window, and where its `window-fire` entry is in the call's input.
struct Fire {
    key: usize,
    start: i64,
    end: i64,
    entry: std::ops::Range<usize>,
}

/// How one entry run alone after a fault ended.
enum Alone {
    Ok,
    /// It failed, then ran in a fresh instance.
    Unreproduced(String),
    /// It failed alone in a fresh instance.
    Failed(String),
}

fn millis(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

impl Window {
    /// The stage's instance, with a guest instance started.
    pub fn start(
        cx: StageContext,
        guest: Guest,
        down: Downstream,
        spec: WindowSpec,
        late_tag: Option<u8>,
        parallelism: u32,
    ) -> Result<Self, TaskFailure> {
        let range = key_group_range(cx.subtask, parallelism, cx.max_parallelism);
        let function = usize::from(spec.function == WindowFunction::Process);
        let store = Store::new(cx.max_parallelism, range, function);
        let mut op = Window {
            cx,
            guest,
            down,
            spec,
            late_tag,
            store,
            late_dropped: 0,
            late_logged: None,
        };
        op.guest.start()?;
        Ok(op)
    }

    fn event_time(&self) -> bool {
        self.spec.domain == TimeDomain::Event
    }

    fn lateness(&self) -> i64 {
        if self.event_time() {
            millis(self.spec.allowed_lateness_ms)
        } else {
            0
        }
    }

    /// Whether a window ending at `end` takes no more rows at watermark `w`.
    fn is_late(&self, end: i64, w: i64) -> bool {
        self.event_time() && end.saturating_sub(1).saturating_add(self.lateness()) <= w
    }

    /// The windows (start, end) a row at `ts` falls into (for sessions, its
    /// own window before merging), into `wins` (emptied first).
    fn assign(&self, ts: i64, wins: &mut Vec<(i64, i64)>) {
        wins.clear();
        match self.spec.assigner {
            WindowAssigner::Tumbling(size) => {
                let size = millis(size);
                let start = ts - ts.rem_euclid(size);
                wins.push((start, start.saturating_add(size)));
            }
            WindowAssigner::Sliding { size, slide } => {
                let (size, slide) = (millis(size), millis(slide));
                let mut start = ts - ts.rem_euclid(slide);
                while start.saturating_add(size) > ts {
                    wins.push((start, start.saturating_add(size)));
                    start = match start.checked_sub(slide) {
                        Some(s) => s,
                        None => break,
                    };
                }
            }
            WindowAssigner::Session(gap) => wins.push((ts, ts.saturating_add(millis(gap)))),
        }
    }

    fn shape(&self, entries: usize) -> Shape {
        self.down.shape(entries, self.guest.limits())
    }

    fn header(clock: Clock) -> Header {
        Header {
            processing_time: clock.processing_time,
            watermark: clock.advance_to,
        }
    }
}

impl<'r> Work<'r> {
    /// The key's windows, loaded from the store the first time.
    fn key(&mut self, store: &Store<KeyWindows>, key: &'r [u8], hash: u64) -> usize {
        let keys = &self.keys;
        if let Some(&k) = self
            .index
            .find(table_hash(hash), |&k| same_key(keys[k].0, key))
        {
            return k;
        }
        let wins = store
            .get(key, hash)
            .map_or_else(Opens::new, |kw| kw.wins.iter().map(open_of).collect());
        self.keys.push((key, hash, wins));
        let keys = &self.keys;
        self.index
            .insert_unique(table_hash(hash), keys.len() - 1, |&k| table_hash(keys[k].1));
        self.keys.len() - 1
    }
}

impl Open {
    /// A window a call opens (or makes by merging): it fires.
    fn new(start: i64, end: i64) -> Open {
        Open {
            start,
            end,
            fired: false,
            touched: true,
            aggs: Aggs::new(),
            chunks: Vec::new(),
            added: Added::default(),
            slot: None,
        }
    }
}

fn open_of(w: &Win) -> Open {
    let (aggs, chunks) = match &w.contents {
        Contents::Aggregate(a) => (a.iter().cloned().collect(), Vec::new()),
        Contents::Rows(c) => (Aggs::new(), c.clone()),
    };
    Open {
        fired: w.fired,
        touched: false,
        aggs,
        chunks,
        ..Open::new(w.start, w.end)
    }
}

/// The window `[start, end)` among `wins`, opened if there is none.
fn open_at(wins: &mut Opens, start: i64, end: i64) -> usize {
    if let Some(i) = wins.iter().position(|w| w.start == start) {
        wins[i].touched = true;
        return i;
    }
    let at = wins.partition_point(|w| w.start < start);
    wins.insert(at, Open::new(start, end));
    at
}

/// Session windows meet when they overlap or touch.
fn meets(w: &Open, start: i64, end: i64) -> bool {
    w.start <= end && start <= w.end
}

/// The session `[start, end)` would make with the windows it meets.
fn session_span(wins: &[Open], start: i64, end: i64) -> (i64, i64) {
    wins.iter()
        .filter(|w| meets(w, start, end))
        .fold((start, end), |(s, e), w| (s.min(w.start), e.max(w.end)))
}

/// Merges session `[start, end)` with the windows it meets.
fn merge_session(wins: &mut Opens, start: i64, end: i64) {
    let (s, e) = session_span(wins, start, end);
    let mut merged = Open::new(s, e);
    let mut kept = Opens::with_capacity(wins.len());
    for w in wins.drain(..) {
        if meets(&w, start, end) {
            merged.aggs.extend(w.aggs);
            merged.chunks.extend(w.chunks);
            merged.added.extend(w.added);
        } else {
            kept.push(w);
        }
    }
    let at = kept.partition_point(|w| w.start < s);
    kept.insert(at, merged);
    *wins = kept;
}

impl Window {
    /// Puts `rows` into their windows: the call's assignments, merges and
    /// folds, applied to the store only once they all succeeded; rows too
    /// late for any window go to the late output (or are counted).
    fn add(&mut self, clock: Clock, rows: &[Routed<'_>], out: &mut Output) -> Result<(), String> {
        let mut work = Work::default();
        let mut adds = Vec::with_capacity(rows.len());
        let mut late = Vec::new();
        let session = matches!(self.spec.assigner, WindowAssigner::Session(_));
        let mut assigned = Vec::new();
        for r in rows {
            let ts = if self.event_time() {
                r.timestamp
            } else {
                clock.processing_time
            };
            let k = work.key(&self.store, r.key, r.hash);
            let wins = &mut work.keys[k].2;
            let mut any = false;
            self.assign(ts, &mut assigned);
            for &(start, end) in &assigned {
                if session {
                    let (_, e) = session_span(wins, start, end);
                    if self.is_late(e, clock.watermark) {
                        continue;
                    }
                    merge_session(wins, start, end);
                    adds.push(Add {
                        key: k,
                        at: ts,
                        ts: r.timestamp,
                        row: r.row,
                    });
                } else {
                    if self.is_late(end, clock.watermark) {
                        continue;
                    }
                    open_at(wins, start, end);
                    adds.push(Add {
                        key: k,
                        at: start,
                        ts: r.timestamp,
                        row: r.row,
                    });
                }
                any = true;
            }
            if !any {
                late.push(r);
            }
        }
        match self.spec.function {
            WindowFunction::Aggregate => {
                self.merge_aggregates(clock, &mut work)?;
                self.fold(clock, &mut work, &adds)?;
            }
            WindowFunction::Process => {
                for a in &adds {
                    let wins = &mut work.keys[a.key].2;
                    if let Some(w) = find(wins, a.at, session) {
                        wins[w].added.push(a.ts, a.row);
                    }
                }
            }
        }
        self.apply(work);
        self.late(&late, out);
        Ok(())
    }

    /// Merges, pairwise in rounds, the aggregates of session windows a row
    /// joined into one (`window-merge`).
    fn merge_aggregates(&mut self, clock: Clock, work: &mut Work<'_>) -> Result<(), String> {
        loop {
            let mut pairs: Vec<(usize, usize)> = Vec::new();
            let mut input = Vec::new();
            for (k, (_, _, wins)) in work.keys.iter().enumerate() {
                for (w, open) in wins.iter().enumerate() {
                    for pair in open.aggs.chunks_exact(2) {
                        put_state(&mut input, Some(&pair[0][..]));
                        put_state(&mut input, Some(&pair[1][..]));
                        pairs.push((k, w));
                    }
                }
            }
            if pairs.is_empty() {
                return Ok(());
            }
            let mut buf = (pairs.len() as u32).to_le_bytes().to_vec();
            buf.extend_from_slice(&input);
            let called = self.guest.call(
                self.down.stage,
                Self::header(clock),
                Call::WindowMerge(&buf),
                pairs.len(),
            )?;
            let mut merged: Vec<Option<Agg>> = vec![None; pairs.len()];
            for (pair, bytes) in
                enc::read_slot_changes(&called.changes, pairs.len() as u32).map_err(malformed)?
            {
                merged[pair as usize] = Some(self.checked_aggregate(bytes)?);
            }
            let mut results = merged.into_iter().enumerate();
            for (k, (_, _, wins)) in work.keys.iter_mut().enumerate() {
                for (w, open) in wins.iter_mut().enumerate() {
                    let odd = (open.aggs.len() % 2 == 1)
                        .then(|| open.aggs.pop())
                        .flatten();
                    let n = open.aggs.len() / 2;
                    let mut next = Aggs::with_capacity(n + 1);
                    for _ in 0..n {
                        match results.next() {
                            Some((i, Some(agg))) if pairs[i] == (k, w) => next.push(agg),
                            Some((i, _)) => {
                                return Err(format!("the guest's output is malformed: window-merge gave no aggregate for pair {i}"));
                            }
                            None => return Err("the guest's output is malformed: window-merge gave too few aggregates".into()),
                        }
                    }
                    next.extend(odd);
                    open.aggs = next;
                }
            }
        }
    }

    /// An aggregate the guest returned, within the output limit.
    fn checked_aggregate(&self, bytes: &[u8]) -> Result<Agg, String> {
        let limit = self.guest.limits().bytes;
        if bytes.len() as u64 > limit {
            return Err(format!(
                "the guest's window aggregate is {} bytes, over the limit of {limit} (raise it with --max-bytes-per-record)",
                bytes.len()
            ));
        }
        Ok(Agg::new(bytes))
    }

    /// Folds the added rows into their windows' aggregates (`window-add`).
    fn fold(&mut self, clock: Clock, work: &mut Work<'_>, adds: &[Add<'_>]) -> Result<(), String> {
        if adds.is_empty() {
            return Ok(());
        }
        let session = matches!(self.spec.assigner, WindowAssigner::Session(_));
        let mut slots: Vec<(usize, usize)> = Vec::with_capacity(work.keys.len());
        let mut input = Vec::with_capacity(adds.len() * 32);
        for a in adds {
            let wins = &mut work.keys[a.key].2;
            let Some(w) = find(wins, a.at, session) else {
                continue;
            };
            let slot = *wins[w].slot.get_or_insert_with(|| {
                slots.push((a.key, w));
                (slots.len() - 1) as u32
            });
            input.extend_from_slice(&slot.to_le_bytes());
            input.extend_from_slice(a.row);
        }
        let mut buf = (slots.len() as u32).to_le_bytes().to_vec();
        for &(k, w) in &slots {
            let (key, _, wins) = &work.keys[k];
            let open = &wins[w];
            buf.extend_from_slice(key);
            buf.extend_from_slice(&open.start.to_le_bytes());
            buf.extend_from_slice(&open.end.to_le_bytes());
            put_state(&mut buf, open.aggs.first().map(|a| &a[..]));
        }
        let call = Call::WindowAdd(&input, &buf);
        let called = self
            .guest
            .call(self.down.stage, Self::header(clock), call, adds.len())?;
        if !called.output.is_empty() {
            enc::read_emitted(&called.output, self.shape(adds.len()), |_| {}).map_err(malformed)?;
        }
        for (slot, bytes) in
            enc::read_slot_changes(&called.changes, slots.len() as u32).map_err(malformed)?
        {
            let (k, w) = slots[slot as usize];
            let agg = self.checked_aggregate(bytes)?;
            let aggs = &mut work.keys[k].2[w].aggs;
            aggs.clear();
            aggs.push(agg);
        }
        Ok(())
    }

    /// Stores the call's windows (undone with the batch if it fails later).
    fn apply(&mut self, work: Work<'_>) {
        let (domain, lateness) = (self.spec.domain.code(), self.lateness());
        for (key, hash, wins) in work.keys {
            let wins = wins
                .into_iter()
                .map(|mut o| {
                    let contents = match self.spec.function {
                        WindowFunction::Aggregate => Contents::Aggregate(o.aggs.pop()),
                        WindowFunction::Process => {
                            if o.added.rows > 0 {
                                o.chunks.push(o.added.into());
                            }
                            Contents::Rows(o.chunks)
                        }
                    };
                    Win {
                        start: o.start,
                        end: o.end,
                        fired: o.fired && !o.touched,
                        contents,
                    }
                })
                .collect();
            self.store.put(
                key,
                hash,
                KeyWindows {
                    domain,
                    lateness,
                    wins,
                },
            );
        }
    }

    /// Rows too late for every window they fall into: to the late output,
    /// or dropped and counted in the log.
    fn late(&mut self, late: &[&Routed<'_>], out: &mut Output) {
        if late.is_empty() {
            return;
        }
        if let Some(tag) = self.late_tag
            && let Some(side) = out.side.get_mut(tag as usize - 1)
        {
            for r in late {
                encoding::format_row(r.row, &mut side.bytes);
                side.push_mark((r.order >> 32) as u32, r.order as u32);
            }
            return;
        }
        self.late_dropped += late.len() as u64;
        if self
            .late_logged
            .is_none_or(|t| t.elapsed() >= LATE_LOG_EVERY)
        {
            self.late_logged = Some(Instant::now());
            warn!(
                "{} subtask {}: window stage {} dropped {} late row(s) so far (later than the allowed lateness); name a late output in the window's spec to keep them",
                self.cx.job, self.cx.subtask, self.down.stage, self.late_dropped
            );
        }
    }
}

/// Whether a window is due to fire at `now`.
fn due_to_fire(w: &Win, now: i64) -> bool {
    !w.fired && w.end.saturating_sub(1) <= now
}

/// The window an add goes to: by start, or, for sessions, the one holding
/// the row's timestamp.
fn find(wins: &[Open], at: i64, session: bool) -> Option<usize> {
    if session {
        wins.iter().position(|w| w.start <= at && at < w.end)
    } else {
        wins.iter().position(|w| w.start == at)
    }
}

impl Window {
    /// The batch: its rows into their windows, then the windows due fired
    /// and purged; committed at the end or undone whole on a failure.
    fn batch(
        &mut self,
        batch: &SourceBatch,
        parts: &[Output],
        clock: Clock,
    ) -> Result<Output, TaskFailure> {
        let mut out = self.down.output(self.cx.downstream);
        let rows = routed_to(parts, self.cx.subtask as usize);
        out.taken = rows.len() as u64;
        let result = self
            .rows(batch, clock, &rows, &mut out)
            .and_then(|()| self.fire(batch, clock, &mut out));
        self.store.settle(result).map(|()| out)
    }

    /// The batch's rows: one add, or, on a fault, one row at a time.
    fn rows(
        &mut self,
        batch: &SourceBatch,
        clock: Clock,
        rows: &[Routed<'_>],
        out: &mut Output,
    ) -> Result<(), TaskFailure> {
        if rows.is_empty() {
            return Ok(());
        }
        self.started(batch)?;
        let Err(first) = self.add(clock, rows, out) else {
            return Ok(());
        };
        self.guest.reset();
        let mut unreproduced = 0;
        for (i, r) in rows.iter().enumerate() {
            let record = Some((r.order >> 32) as usize);
            match self.alone(batch, out, |w, out| w.add(clock, &rows[i..=i], out))? {
                Alone::Ok => {}
                Alone::Unreproduced(cause) => {
                    unreproduced += 1;
                    out.unreproduced.push(failure_at(
                        self.cx.subtask,
                        batch,
                        record,
                        cause,
                        Fault::Guest,
                    ));
                }
                Alone::Failed(cause) => {
                    return Err(failure_at(
                        self.cx.subtask,
                        batch,
                        record,
                        cause,
                        Fault::Guest,
                    ));
                }
            }
        }
        if unreproduced == 0 {
            let cause = format!("{first}; the batch's rows then ran one at a time without a fault");
            out.unreproduced.push(failure_at(
                self.cx.subtask,
                batch,
                None,
                cause,
                Fault::Guest,
            ));
        }
        Ok(())
    }

    /// Runs one entry again after a fault: on an instance that ran others
    /// before it, then, if it fails, alone in a fresh one.
    fn alone(
        &mut self,
        batch: &SourceBatch,
        out: &mut Output,
        mut run: impl FnMut(&mut Self, &mut Output) -> Result<(), String>,
    ) -> Result<Alone, TaskFailure> {
        let fresh = self.guest.is_fresh();
        self.started(batch)?;
        let cause = match run(self, out) {
            Ok(()) => return Ok(Alone::Ok),
            Err(cause) => cause,
        };
        self.guest.reset();
        if fresh {
            return Ok(Alone::Failed(cause));
        }
        self.started(batch)?;
        match run(self, out) {
            Ok(()) => Ok(Alone::Unreproduced(cause)),
            Err(again) => {
                self.guest.reset();
                Ok(Alone::Failed(again))
            }
        }
    }

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

    /// The time a window of this stage is due by.
    fn now(&self, clock: Clock) -> i64 {
        if self.event_time() {
            clock.advance_to
        } else {
            clock.processing_time
        }
    }

    /// Fires the windows due, in (time, key) order, one call for all of
    /// them (a window that fails alone in a fresh instance is dropped and
    /// dead-lettered), then purges those past their lateness.
    fn fire(
        &mut self,
        batch: &SourceBatch,
        clock: Clock,
        out: &mut Output,
    ) -> Result<(), TaskFailure> {
        let due = self.store.due(clock.advance_to, clock.processing_time);
        if due.is_empty() {
            return Ok(());
        }
        let now = self.now(clock);
        let mut keys: Vec<(&[u8], u64)> = Vec::with_capacity(due.len());
        let mut seen = hashbrown::HashSet::with_capacity(due.len());
        let mut fires = Vec::new();
        // Each window's entry of the call, encoded once.
        let mut entries = Vec::new();
        for (_, _, key) in &due {
            if !seen.insert(&key[..]) {
                continue;
            }
            let hash = xxhash_rust::xxh3::xxh3_64(key);
            if let Some(kw) = self.store.get(key, hash) {
                for w in kw.wins.iter().filter(|w| due_to_fire(w, now)) {
                    let at = entries.len();
                    fire_entry(&mut entries, key, w);
                    fires.push(Fire {
                        key: keys.len(),
                        start: w.start,
                        end: w.end,
                        entry: at..entries.len(),
                    });
                }
            }
            keys.push((key, hash));
        }
        if !fires.is_empty() {
            // When it fires (its last millisecond), then key, then start.
            let order = |f: &Fire| (f.end.saturating_sub(1), keys[f.key].0, f.start);
            let mut input = (fires.len() as u32).to_le_bytes().to_vec();
            if fires.is_sorted_by(|a, b| order(a) <= order(b)) {
                input.extend_from_slice(&entries);
            } else {
                fires.sort_by(|a, b| order(a).cmp(&order(b)));
                for f in &fires {
                    input.extend_from_slice(&entries[f.entry.clone()]);
                }
            }
            let base = (batch.seqs.len() as u64) << 32;
            let orders: Vec<u64> = (0..fires.len() as u64).map(|i| base | i).collect();
            self.started(batch)?;
            if self
                .fire_windows(clock, &input, fires.len(), &orders, out)
                .is_err()
            {
                self.guest.reset();
                for (i, f) in fires.iter().enumerate() {
                    let mut one = 1u32.to_le_bytes().to_vec();
                    one.extend_from_slice(&entries[f.entry.clone()]);
                    let order = &orders[i..=i];
                    let alone = self.alone(batch, out, |w, out| {
                        w.fire_windows(clock, &one, 1, order, out)
                    })?;
                    let failure = |cause| window_failure(&self.cx, batch, keys[f.key].0, f, cause);
                    match alone {
                        Alone::Ok => {}
                        Alone::Unreproduced(cause) => out.unreproduced.push(failure(cause)),
                        Alone::Failed(cause) => out.dead.push(failure(cause)),
                    }
                }
            }
        }
        self.retire(&keys, now);
        Ok(())
    }

    /// One `window-fire` call on `input` (`n` windows): its rows sent on.
    fn fire_windows(
        &mut self,
        clock: Clock,
        input: &[u8],
        n: usize,
        orders: &[u64],
        out: &mut Output,
    ) -> Result<(), String> {
        let called = self.guest.call(
            self.down.stage,
            Self::header(clock),
            Call::WindowFire(input),
            n,
        )?;
        let shape = self.shape(n);
        enc::read_emitted(&called.output, shape, |_| {}).map_err(malformed)?;
        emit(&self.cx, self.down, shape, out, called.output, orders)
    }

    /// After the windows due fired (or failed alone and were dropped): one
    /// change per key marks them fired and drops the fired windows whose
    /// lateness has passed.
    fn retire(&mut self, keys: &[(&[u8], u64)], now: i64) {
        for &(key, hash) in keys {
            let Some(kw) = self.store.get(key, hash) else {
                continue;
            };
            let changes = |w: &Win| due_to_fire(w, now) || (w.fired && kw.deadline(w) <= now);
            if !kw.wins.iter().any(changes) {
                continue;
            }
            let mut kept = KeyWindows {
                wins: Wins::with_capacity(kw.wins.len()),
                ..*kw
            };
            for w in &kw.wins {
                let fired = w.fired || due_to_fire(w, now);
                let purged = fired && {
                    let last = w.end.saturating_sub(1);
                    last.saturating_add(kw.lateness) <= now
                };
                if !purged {
                    kept.wins.push(Win { fired, ..w.clone() });
                }
            }
            self.store.put(key, hash, kept);
        }
    }
}

/// A window's entry of a `window-fire` call: its key, bounds and contents
/// (the rows in timestamp order).
fn fire_entry(input: &mut Vec<u8>, key: &[u8], w: &Win) {
    input.extend_from_slice(key);
    input.extend_from_slice(&w.start.to_le_bytes());
    input.extend_from_slice(&w.end.to_le_bytes());
    match &w.contents {
        Contents::Aggregate(agg) => {
            input.push(0);
            put_state(input, agg.as_deref());
        }
        Contents::Rows(chunks) => {
            input.push(1);
            let mut rows = Vec::new();
            for c in chunks {
                chunk_rows(c, &mut rows);
            }
            rows.sort_by_key(|(ts, _)| *ts);
            input.extend_from_slice(&(rows.len() as u32).to_le_bytes());
            for (ts, row) in rows {
                input.extend_from_slice(&ts.to_le_bytes());
                input.extend_from_slice(row);
            }
        }
    }
}

/// The failure of a window that failed to fire, naming it.
fn window_failure(
    cx: &StageContext,
    batch: &SourceBatch,
    key: &[u8],
    f: &Fire,
    cause: String,
) -> TaskFailure {
    let mut shown = Vec::new();
    encoding::format_value(key, &mut shown);
    let mut failure = failure_at(cx.subtask, batch, None, cause, Fault::Guest);
    failure.input = Some(format!(
        "the window [{}, {}) of key {}",
        f.start,
        f.end,
        String::from_utf8_lossy(&shown)
    ));
    failure
}

impl Operator for Window {
    fn process(&mut self, input: Input<'_>) -> Result<Output, TaskFailure> {
        match input {
            Input::Rows {
                batch,
                parts,
                clock,
            } => self.batch(batch, parts, clock),
            Input::Records { batch, .. } => Err(failure_at(
                self.cx.subtask,
                batch,
                None,
                "a window stage was given records, not rows".into(),
                Fault::Host,
            )),
        }
    }

    fn stateful(&self) -> bool {
        true
    }

    fn atomic(&self) -> bool {
        true
    }

    fn snapshot(&mut self) -> OperatorSnapshot {
        let started = Instant::now();
        let groups = self.store.snapshot();
        OperatorSnapshot {
            groups,
            paused: started.elapsed(),
            ..OperatorSnapshot::default()
        }
    }

    fn restore(
        &mut self,
        groups: &[crate::checkpoint::format::GroupState],
    ) -> Result<(), StateError> {
        for g in groups {
            self.store.restore(g)?;
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.guest.reset();
    }
}
