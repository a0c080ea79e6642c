//! A 0.2.0 keyed process stage: the guest's process function over each
//! key's rows and fired timers, with the key's declared states shipped in
//! once per call and the changes coming back with the output (the design
//! measured fastest across the boundary). The host owns the state
//! (`state/store.rs`): it applies a call's changes only once the call
//! succeeded, and undoes the whole batch when any part of it fails, so a
//! trap applies nothing. Timers fire after the batch's rows, in (timestamp,
//! key) order, once the watermark (event time) or the batch's processing
//! time reaches them.

use crate::config::pipeline::{StateDecl, StateKind};
use crate::dataflow::exchange::{Routed, routed_to};
use crate::dataflow::message::{Clock, SourceBatch};
use crate::dataflow::operator::{Input, Operator, OperatorSnapshot, Output};
use crate::encoding;
use crate::encoding::pipeline::{self as enc, Change, Shape, put_state};
use crate::fault::{Fault, TaskFailure};
use crate::operators::flat_map::{StageContext, failure_at};
use crate::operators::guest::Guest;
use crate::operators::guest_map::{Downstream, emit, malformed};
use crate::state::key_groups::key_group_range;
use crate::state::keyed::StateError;
use crate::state::store::{KeyStates, Store, Stored};
use crate::wasm::{Call, Header};

/// Rounds of timers one batch fires (a timer set for now while firing
/// fires in the next round; past this many, in the next batch).
const TIMER_ROUNDS: usize = 8;

/// A call's `input` and `keys` buffers, and each key (with its states as
/// shipped) by key index.
type Buffers<'e> = (Vec<u8>, Vec<u8>, Vec<CallKey<'e>>);

/// A key of a call: the key, its hash, and its states as the call ships
/// them (the changes apply to these).
struct CallKey<'e> {
    key: &'e [u8],
    hash: u64,
    states: KeyStates,
    changed: bool,
}

/// A process stage's instance on one subtask.
pub struct Process {
    cx: StageContext,
    guest: Guest,
    down: Downstream,
    decls: Vec<StateDecl>,
    store: Store,
}

/// One entry of a call: a row or a fired timer, its key, and its place in
/// the stream.
struct Entry<'a> {
    key: &'a [u8],
    hash: u64,
    order: u64,
    body: Body<'a>,
}

enum Body<'a> {
    Row { timestamp: i64, row: &'a [u8] },
    Timer { at: i64, domain: u8 },
}

impl Process {
    /// The stage's instance, with a guest instance started.
    pub fn start(
        cx: StageContext,
        guest: Guest,
        down: Downstream,
        decls: Vec<StateDecl>,
        parallelism: u32,
    ) -> Result<Self, TaskFailure> {
        let range = key_group_range(cx.subtask, parallelism, cx.max_parallelism);
        let store = Store::new(cx.max_parallelism, range, decls.len());
        let mut op = Process {
            cx,
            guest,
            down,
            decls,
            store,
        };
        op.guest.start()?;
        Ok(op)
    }

    /// A key's states as the call ships them, with those past their TTL
    /// gone (cleared in the store, so the batch's undo covers it).
    fn current(&mut self, key: &[u8], hash: u64, now: i64) -> KeyStates {
        let mut ks = self.store.get(key, hash).cloned().unwrap_or_default();
        ks.states.resize(self.decls.len(), None);
        let mut expired = false;
        for (slot, decl) in ks.states.iter_mut().zip(&self.decls) {
            if let (Some(s), Some(ttl)) = (slot.as_ref(), decl.ttl)
                && now.saturating_sub(s.written) > ttl.as_millis() as i64
            {
                *slot = None;
                expired = true;
            }
        }
        if expired {
            self.store.put(key, hash, ks.clone());
        }
        ks
    }

    /// The call's `input` and `keys` buffers for `entries`, and each key
    /// with its states by key index.
    fn buffers<'e>(&mut self, entries: &[Entry<'e>], now: i64) -> Buffers<'e> {
        let mut index: hashbrown::HashMap<&[u8], u32> =
            hashbrown::HashMap::with_capacity(entries.len());
        let mut keys: Vec<(&[u8], u64)> = Vec::new();
        let mut input = Vec::with_capacity(entries.len() * 32);
        for e in entries {
            let k = *index.entry(e.key).or_insert_with(|| {
                keys.push((e.key, e.hash));
                (keys.len() - 1) as u32
            });
            match e.body {
                Body::Row { timestamp, row } => {
                    input.push(0);
                    input.extend_from_slice(&k.to_le_bytes());
                    input.extend_from_slice(&timestamp.to_le_bytes());
                    input.extend_from_slice(row);
                }
                Body::Timer { at, domain } => {
                    input.push(1);
                    input.extend_from_slice(&k.to_le_bytes());
                    input.extend_from_slice(&at.to_le_bytes());
                    input.push(domain);
                }
            }
        }
        let mut states = Vec::with_capacity(4 + keys.len() * 32);
        states.extend_from_slice(&(keys.len() as u32).to_le_bytes());
        let mut shipped = Vec::with_capacity(keys.len());
        for (key, hash) in keys {
            states.extend_from_slice(key);
            let ks = self.current(key, hash, now);
            for s in &ks.states {
                put_state(&mut states, s.as_ref().map(|s| s.bytes.as_slice()));
            }
            shipped.push(CallKey {
                key,
                hash,
                states: ks,
                changed: false,
            });
        }
        (input, states, shipped)
    }

    /// Applies a successful call's changes to the store (undoable).
    fn apply(&mut self, changes: &[u8], keys: &mut [CallKey<'_>], now: i64) -> Result<(), String> {
        let parsed = enc::read_changes(changes, keys.len() as u32, self.decls.len() as u32)
            .map_err(malformed)?;
        for change in parsed {
            let k = match change {
                Change::Set { key, .. } | Change::Clear { key, .. } => key,
                Change::TimerSet { key, .. } | Change::TimerDelete { key, .. } => key,
            };
            // read_changes checked the index against the call's keys.
            let Some(ck) = keys.get_mut(k as usize) else {
                continue;
            };
            ck.changed = true;
            let ks = &mut ck.states;
            match change {
                Change::Set { state, bytes, .. } => {
                    let kind = self.decls[state as usize].kind;
                    enc::check_state(bytes, kind).map_err(malformed)?;
                    let slot = &mut ks.states[state as usize];
                    match slot {
                        Some(s) => {
                            s.bytes.clear();
                            s.bytes.extend_from_slice(bytes);
                            s.written = now;
                        }
                        None => {
                            *slot = Some(Stored {
                                bytes: bytes.to_vec(),
                                written: now,
                            });
                        }
                    }
                }
                Change::Clear { state, .. } => ks.states[state as usize] = None,
                Change::TimerSet { domain, at, .. } => {
                    ks.timers.insert((domain, at));
                }
                Change::TimerDelete { domain, at, .. } => {
                    ks.timers.remove(&(domain, at));
                }
            }
        }
        for ck in keys.iter_mut().filter(|ck| ck.changed) {
            self.store
                .put(ck.key, ck.hash, std::mem::take(&mut ck.states));
        }
        Ok(())
    }

    /// One call on `entries`, its output and changes checked, the changes
    /// applied: the output, or the fault.
    fn run(&mut self, clock: Clock, entries: &[Entry<'_>]) -> Result<Vec<u8>, String> {
        let now = clock.processing_time;
        let (input, states, mut keys) = self.buffers(entries, now);
        let header = Header {
            processing_time: now,
            watermark: clock.advance_to,
        };
        let call = Call::Process(&input, &states);
        let called = self
            .guest
            .call(self.down.stage, header, call, entries.len())?;
        let shape = self.shape(entries.len());
        enc::read_emitted(&called.output, shape, |_| {}).map_err(malformed)?;
        self.apply(&called.changes, &mut keys, now)?;
        Ok(called.output)
    }

    fn shape(&self, entries: usize) -> Shape {
        self.down.shape(entries, self.guest.limits())
    }
}

impl Process {
    /// The batch: its rows, then the timers due, committed at the end or
    /// undone whole on a failure.
    fn batch(
        &mut self,
        batch: &SourceBatch,
        parts: &[Output],
        clock: Clock,
    ) -> Result<Output, TaskFailure> {
        let mut out = self.down.output(self.cx.downstream);
        let rows = routed_to(parts, self.cx.subtask as usize);
        out.taken = rows.len() as u64;
        let entries: Vec<Entry<'_>> = rows.iter().map(entry_of).collect();
        let result = self
            .rows(batch, clock, &entries, &mut out)
            .and_then(|()| self.timers(batch, clock, &mut out));
        self.store.settle(result).map(|()| out)
    }

    /// The batch's rows: one call, or, on a fault, one at a time.
    fn rows(
        &mut self,
        batch: &SourceBatch,
        clock: Clock,
        entries: &[Entry<'_>],
        out: &mut Output,
    ) -> Result<(), TaskFailure> {
        if entries.is_empty() {
            return Ok(());
        }
        self.started(batch)?;
        let orders: Vec<u64> = entries.iter().map(|e| e.order).collect();
        match self.run(clock, entries) {
            Ok(buf) => return self.route(out, buf, &orders, batch),
            Err(first) => {
                let found = self.isolate(batch, clock, entries, out)?;
                if found == 0 {
                    let cause =
                        format!("{first}; the batch's rows then ran one at a time without a fault");
                    out.unreproduced.push(failure_at(
                        self.cx.subtask,
                        batch,
                        None,
                        cause,
                        Fault::Guest,
                    ));
                }
            }
        }
        Ok(())
    }

    /// Runs `entries` one at a time after a fault. A row that fails alone
    /// in a fresh instance is the poison one (the `Err`: the batch is
    /// undone); a timer that does, is dropped and dead-lettered. How many
    /// faults did not reproduce.
    fn isolate(
        &mut self,
        batch: &SourceBatch,
        clock: Clock,
        entries: &[Entry<'_>],
        out: &mut Output,
    ) -> Result<usize, TaskFailure> {
        self.guest.reset();
        let mut unreproduced = 0;
        for (i, e) in entries.iter().enumerate() {
            let fresh = self.guest.is_fresh();
            self.started(batch)?;
            let one = std::slice::from_ref(e);
            let cause = match self.run(clock, one) {
                Ok(buf) => {
                    self.route(out, buf, &[e.order], batch)?;
                    continue;
                }
                Err(cause) => cause,
            };
            self.guest.reset();
            let retried = if fresh {
                Err(cause.clone())
            } else {
                self.started(batch)?;
                self.run(clock, one)
            };
            match retried {
                Ok(buf) => {
                    self.route(out, buf, &[e.order], batch)?;
                    out.unreproduced
                        .push(self.failure(batch, &entries[i], cause));
                    unreproduced += 1;
                }
                Err(again) => {
                    self.guest.reset();
                    let failure = self.failure(batch, &entries[i], again);
                    if matches!(e.body, Body::Row { .. }) {
                        return Err(failure);
                    }
                    out.dead.push(failure);
                }
            }
        }
        Ok(unreproduced)
    }

    /// Fires the timers due, in rounds (a timer set for now while firing
    /// fires in the next round).
    fn timers(
        &mut self,
        batch: &SourceBatch,
        clock: Clock,
        out: &mut Output,
    ) -> Result<(), TaskFailure> {
        let base = (batch.seqs.len() as u64) << 32;
        let mut fired = 0u64;
        for _ in 0..TIMER_ROUNDS {
            let due = self.store.due(clock.advance_to, clock.processing_time);
            if due.is_empty() {
                return Ok(());
            }
            // A timer fires once: it is gone before its call.
            for (at, domain, key) in &due {
                let hash = xxhash_rust::xxh3::xxh3_64(key);
                let mut ks = self.store.get(key, hash).cloned().unwrap_or_default();
                ks.timers.remove(&(*domain, *at));
                self.store.put(key, hash, ks);
            }
            let entries: Vec<Entry<'_>> = due
                .iter()
                .enumerate()
                .map(|(k, (at, domain, key))| Entry {
                    key,
                    hash: xxhash_rust::xxh3::xxh3_64(key),
                    order: base | (fired + k as u64),
                    body: Body::Timer {
                        at: *at,
                        domain: *domain,
                    },
                })
                .collect();
            fired += entries.len() as u64;
            self.started(batch)?;
            let orders: Vec<u64> = entries.iter().map(|e| e.order).collect();
            match self.run(clock, &entries) {
                Ok(buf) => self.route(out, buf, &orders, batch)?,
                Err(_) => {
                    self.isolate(batch, clock, &entries, out)?;
                }
            }
        }
        Ok(())
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

    fn failure(&self, batch: &SourceBatch, e: &Entry<'_>, cause: String) -> TaskFailure {
        match e.body {
            Body::Row { .. } => failure_at(
                self.cx.subtask,
                batch,
                Some((e.order >> 32) as usize),
                cause,
                Fault::Guest,
            ),
            Body::Timer { at, domain } => {
                let mut shown = Vec::new();
                encoding::format_value(e.key, &mut shown);
                let clock = if domain == 0 { "event" } else { "processing" };
                let mut f = failure_at(self.cx.subtask, batch, None, cause, Fault::Guest);
                f.input = Some(format!(
                    "the {clock}-time timer at {at} of key {}",
                    String::from_utf8_lossy(&shown)
                ));
                f
            }
        }
    }

    /// Sends a call's rows on (see [`emit`]).
    fn route(
        &self,
        out: &mut Output,
        buf: Vec<u8>,
        orders: &[u64],
        batch: &SourceBatch,
    ) -> Result<(), TaskFailure> {
        emit(
            &self.cx,
            self.down,
            self.shape(orders.len()),
            out,
            buf,
            orders,
        )
        .map_err(|m| failure_at(self.cx.subtask, batch, None, m, Fault::Host))
    }
}

fn entry_of<'a>(r: &Routed<'a>) -> Entry<'a> {
    Entry {
        key: r.key,
        hash: r.hash,
        order: r.order,
        body: Body::Row {
            timestamp: r.timestamp,
            row: r.row,
        },
    }
}

impl Operator for Process {
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
                "a process stage was given records, not rows".into(),
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
        let started = std::time::Instant::now();
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

/// The kinds of a stage's states, for `host inspect`.
pub fn kinds(decls: &[StateDecl]) -> Vec<&'static str> {
    decls
        .iter()
        .map(|d| match d.kind {
            StateKind::Value => "value",
            StateKind::List => "list",
            StateKind::Map => "map",
        })
        .collect()
}
