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
use crate::encoding::pipeline::{self as enc, Change, Shape};
use crate::fault::{Fault, TaskFailure};
use crate::operators::flat_map::{StageContext, failure_at};
use crate::operators::guest::Guest;
use crate::operators::guest_map::{Downstream, emit, malformed};
use crate::state::Batched;
use crate::state::key_groups::{key_group_range, same_key, table_hash};
use crate::state::keyed::StateError;
use crate::state::process_state::{Edit, Loc, ProcessState};
use crate::wasm::{Call, Header};

/// Rounds of timers one batch fires (a timer set for now while firing
/// fires in the next round; past this many, in the next batch).
const TIMER_ROUNDS: usize = 8;

/// Keys ahead whose entries a call's update asks of the memory.
const UPDATE_AHEAD: usize = 8;

/// A call's `input` and `keys` buffers, and each key (with its states as
/// shipped) by key index.
type Buffers<'e> = (Vec<u8>, Vec<u8>, Vec<CallKey<'e>>);

/// A key of a call: the key, its hash, where its entry is, and whether a
/// state of it shipped absent, past its TTL (to be cleared).
struct CallKey<'e> {
    key: &'e [u8],
    hash: u64,
    loc: Option<Loc>,
    expired: bool,
}

/// A process stage's instance on one subtask.
pub struct Process {
    cx: StageContext,
    guest: Guest,
    down: Downstream,
    decls: Vec<StateDecl>,
    store: ProcessState,
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
        let ttls = decls
            .iter()
            .map(|d| {
                d.ttl
                    .map(|t| i64::try_from(t.as_millis()).unwrap_or(i64::MAX))
            })
            .collect();
        let store = ProcessState::new(cx.max_parallelism, range, ttls);
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

    /// The call's `input` and `keys` buffers for `entries`, and each key
    /// by key index.
    fn buffers<'e>(&self, entries: &[Entry<'e>], now: i64) -> Result<Buffers<'e>, String> {
        let mut index: hashbrown::HashTable<u32> =
            hashbrown::HashTable::with_capacity(entries.len());
        let mut keys: Vec<CallKey<'e>> = Vec::new();
        let mut input = Vec::with_capacity(entries.len() * 32);
        for e in entries {
            let found = index.find(table_hash(e.hash), |&k| {
                same_key(keys[k as usize].key, e.key)
            });
            let k = match found {
                Some(&k) => k,
                None => {
                    let k = keys.len() as u32;
                    keys.push(CallKey {
                        key: e.key,
                        hash: e.hash,
                        loc: None,
                        expired: false,
                    });
                    index.insert_unique(table_hash(e.hash), k, |&k| {
                        table_hash(keys[k as usize].hash)
                    });
                    k
                }
            };
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
        // Every key probed first (its entry asked for from memory), then
        // every key's states read: the cache misses of the index and of the
        // entries overlap instead of coming one after another.
        for ck in &mut keys {
            ck.loc = self.store.probe(ck.hash);
        }
        for ck in &mut keys {
            if let Some(loc) = ck.loc
                && !self.store.holds(loc, ck.key)
            {
                ck.loc = self.store.find(ck.key, ck.hash);
            }
            states.extend_from_slice(ck.key);
            ck.expired = self.store.ship(ck.loc, now, &mut states).map_err(|e| e.0)?;
        }
        Ok((input, states, keys))
    }

    /// Applies a successful call's changes to the store (undoable).
    fn apply(&mut self, changes: &[u8], keys: &[CallKey<'_>], now: i64) -> Result<(), String> {
        let parsed = enc::read_changes(changes, keys.len() as u32, self.decls.len() as u32)
            .map_err(malformed)?;
        // Each key's edits together, in the order the guest made them.
        let mut edits: Vec<(u32, Edit<'_>)> = Vec::with_capacity(parsed.len());
        for change in parsed {
            edits.push(match change {
                Change::Set { key, state, bytes } => {
                    let kind = self.decls[state as usize].kind;
                    enc::check_state(bytes, kind).map_err(malformed)?;
                    (key, Edit::Set(state, bytes))
                }
                Change::Clear { key, state } => (key, Edit::Clear(state)),
                Change::TimerSet { key, domain, at } => (key, Edit::TimerSet(domain, at)),
                Change::TimerDelete { key, domain, at } => (key, Edit::TimerDelete(domain, at)),
            });
        }
        if !edits.is_sorted_by_key(|e| e.0) {
            edits.sort_by_key(|e| e.0);
        }
        let mut edits = edits.as_slice();
        let mut mine = Vec::new();
        // read_changes checked every index against the call's keys.
        for (k, ck) in keys.iter().enumerate() {
            // The call ran over other memory since the keys' entries were
            // read: ask for a later key's entry while this one is updated.
            if let Some(loc) = keys.get(k + UPDATE_AHEAD).and_then(|c| c.loc) {
                self.store.prefetch(loc);
            }
            let n = edits.iter().take_while(|e| e.0 as usize == k).count();
            let (these, rest) = edits.split_at(n);
            edits = rest;
            if these.is_empty() && !ck.expired {
                continue;
            }
            mine.clear();
            mine.extend(these.iter().map(|e| e.1));
            self.store
                .update(ck.key, ck.hash, ck.loc, now, &mine)
                .map_err(|e| e.0)?;
        }
        Ok(())
    }

    /// One call on `entries`, its output and changes checked, the changes
    /// applied: the output, or the fault.
    fn run(&mut self, clock: Clock, entries: &[Entry<'_>]) -> Result<Vec<u8>, String> {
        let now = clock.processing_time;
        let (input, states, keys) = self.buffers(entries, now)?;
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
        self.apply(&called.changes, &keys, now)?;
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
                self.store
                    .remove_timer(key, hash, *domain, *at, clock.processing_time)
                    .map_err(|e| failure_at(self.cx.subtask, batch, None, e.0, Fault::Host))?;
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
