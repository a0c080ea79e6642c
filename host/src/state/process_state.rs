//! The keyed state of a 0.2.0 process stage, by key group, so that it
//! checkpoints and restores at any parallelism: per key, the states the
//! stage declares (each with the processing time it was written at, for
//! its TTL) and its timers; every timer also indexed in firing order.
//!
//! Each key group keeps its keys' entries back to back in one arena, in
//! the checkpoint's encoding, with an index over them (as the 0.1.0
//! aggregation does, `state/keyed.rs`): a key's state is one lookup and one
//! contiguous read, and a change is one append, no allocation. A change
//! never overwrites an entry: it appends the key's new entry and points the
//! index at it, so the batch's undo log is a list of positions, and undoing
//! a failed batch points the index back. Superseded entries are dropped
//! when they are half the arena, once the batch is committed, and before a
//! snapshot. A snapshot shares the arena itself (an `Arc`); the first change
//! after it copies the arena (copy on write), and a group that did not
//! change keeps the checkpoint's bytes, so a checkpoint encodes nothing.

use std::ops::Range;
use std::sync::Arc;

use hashbrown::HashTable;

use crate::checkpoint::format::GroupState;
use crate::encoding::pipeline::put_state;
use crate::state::Batched;
use crate::state::key_groups::{key_group, prefetch, same_key, table_hash};
use crate::state::keyed::StateError;
use crate::state::store::Reader;
use crate::state::timers::{Due, Timers};

/// Where a key's entry is: its group (an index into the store's groups)
/// and its bytes in the group's arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    group: u32,
    at: u32,
    len: u32,
}

/// What a call does to one of its key's states or timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edit<'a> {
    /// State `.0` becomes these bytes.
    Set(u32, &'a [u8]),
    /// State `.0` is cleared.
    Clear(u32),
    /// A timer `(domain, at)` is set.
    TimerSet(u8, i64),
    /// A timer `(domain, at)` is deleted.
    TimerDelete(u8, i64),
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    hash: u64,
    at: u32,
    len: u32,
}

/// One key group: entries `u32 key-len, key, u32 n, state{n}, u32 t,
/// (u8 domain, s64 at){t}` with `state := 0x00 | 0x01 s64 written, u32
/// len, u8{len}`, and an index over the live ones.
#[derive(Default)]
struct Group {
    index: HashTable<Slot>,
    /// The entries, while no snapshot shares them.
    arena: Vec<u8>,
    /// The entries, while a snapshot shares them (`arena` is then empty).
    frozen: Option<Arc<Vec<u8>>>,
    /// Bytes of superseded entries.
    dead: usize,
    /// Changed since the last snapshot.
    hot: bool,
}

impl Group {
    fn bytes(&self) -> &[u8] {
        match &self.frozen {
            Some(shared) => shared,
            None => &self.arena,
        }
    }

    /// The arena, to append to: taken back from the snapshot, copied if
    /// the snapshot still holds it (the same bytes, so positions stay
    /// valid).
    fn own(&mut self) -> &mut Vec<u8> {
        if let Some(shared) = self.frozen.take() {
            self.arena = Arc::try_unwrap(shared).unwrap_or_else(|shared| {
                let mut arena = Vec::with_capacity(shared.len() + shared.len() / 4 + 256);
                arena.extend_from_slice(&shared);
                arena
            });
        }
        self.hot = true;
        &mut self.arena
    }

    fn find(&self, key: &[u8], hash: u64) -> Option<Slot> {
        let bytes = self.bytes();
        self.index
            .find(table_hash(hash), |s| {
                s.hash == hash && entry_key(bytes, s.at as usize).is_some_and(|k| same_key(k, key))
            })
            .copied()
    }

    fn unlink(&mut self, hash: u64, at: u32) {
        if let Ok(e) = self
            .index
            .find_entry(table_hash(hash), |s| s.hash == hash && s.at == at)
        {
            e.remove();
        }
    }

    fn link(&mut self, slot: Slot) {
        self.index
            .insert_unique(table_hash(slot.hash), slot, |s| table_hash(s.hash));
    }

    /// Drops the superseded entries (no undo may be pending).
    fn compact(&mut self) {
        if self.dead == 0 {
            return;
        }
        let old = match self.frozen.take() {
            Some(shared) => shared.to_vec(),
            None => std::mem::take(&mut self.arena),
        };
        let mut arena = Vec::with_capacity(old.len() - self.dead.min(old.len()));
        for s in self.index.iter_mut() {
            let (at, len) = (s.at as usize, s.len as usize);
            s.at = arena.len() as u32;
            arena.extend_from_slice(&old[at..at + len]);
        }
        self.arena = arena;
        self.dead = 0;
    }
}

/// The key bytes of the entry at `at`.
fn entry_key(bytes: &[u8], at: usize) -> Option<&[u8]> {
    let n = u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize;
    bytes.get(at + 4..at + 4 + n)
}

/// Reads an entry's states (after its key): calls `f` with each one's
/// index, write time and bytes; `arity` states expected.
fn walk_states<'a>(
    r: &mut Reader<'a>,
    arity: usize,
    mut f: impl FnMut(usize, Option<(i64, &'a [u8])>),
) -> Result<(), StateError> {
    let count = r.u32()? as usize;
    if count != arity {
        return Err(StateError(format!(
            "a key in key group {} has {count} states, the stage declares {arity}; \
             was the checkpoint taken with another module?",
            r.group
        )));
    }
    for i in 0..count {
        let state = match r.u8()? {
            0 => None,
            _ => {
                let written = r.i64()?;
                Some((written, r.bytes()?))
            }
        };
        f(i, state);
    }
    Ok(())
}

/// Reads an entry's timers (after its states) into `out`, sorted.
fn read_timers(r: &mut Reader<'_>, out: &mut Vec<(u8, i64)>) -> Result<(), StateError> {
    for _ in 0..r.u32()? {
        let domain = r.u8()?;
        out.push((domain, r.i64()?));
    }
    out.sort_unstable();
    out.dedup();
    Ok(())
}

/// Reads a whole entry: its key and timers.
fn read_entry<'a>(
    r: &mut Reader<'a>,
    arity: usize,
    timers: &mut Vec<(u8, i64)>,
) -> Result<&'a [u8], StateError> {
    let key = r.bytes()?;
    walk_states(r, arity, |_, _| {})?;
    read_timers(r, timers)?;
    Ok(key)
}

/// A key's timers: `(domain, timestamp)`, sorted.
type KeyTimers = Vec<(u8, i64)>;

/// A change of the batch, to undo it: the key's entry before and after,
/// and, for an entry overwritten in place, where its old bytes are kept.
struct Undo {
    group: u32,
    hash: u64,
    old: Option<(u32, u32)>,
    new: Option<(u32, u32)>,
    saved: Option<usize>,
}

/// The state of the key groups one subtask of a process stage owns.
pub struct ProcessState {
    max_parallelism: u32,
    range: Range<u32>,
    /// Each declared state's time to live, ms.
    ttls: Vec<Option<i64>>,
    groups: Vec<Group>,
    /// Every timer, in firing order.
    timers: Timers,
    undo: Vec<Undo>,
    /// The old bytes of entries overwritten in place by the batch.
    saved: Vec<u8>,
    /// Groups whose superseded entries are to be dropped at the commit.
    compact: Vec<u32>,
    scratch: Vec<u8>,
    timer_scratch: (KeyTimers, KeyTimers),
}

impl ProcessState {
    /// Empty state for key groups `range`, for a stage whose states have
    /// these times to live (ms).
    pub fn new(max_parallelism: u32, range: Range<u32>, ttls: Vec<Option<i64>>) -> Self {
        ProcessState {
            max_parallelism,
            groups: range.clone().map(|_| Group::default()).collect(),
            range,
            ttls,
            timers: Timers::default(),
            undo: Vec::new(),
            saved: Vec::new(),
            compact: Vec::new(),
            scratch: Vec::new(),
            timer_scratch: (Vec::new(), Vec::new()),
        }
    }

    fn group_of(&self, hash: u64) -> Option<u32> {
        key_group(hash, self.max_parallelism).checked_sub(self.range.start)
    }

    /// Where the entry of a key with this hash probably is (the first with
    /// the same hash), asking the memory for its first bytes without
    /// waiting: probing a call's keys first and [`ProcessState::holds`]
    /// them after lets their cache misses overlap. `None`: no entry has the
    /// hash, so the key has none.
    pub fn probe(&self, hash: u64) -> Option<Loc> {
        let g = self.group_of(hash)?;
        let group = self.groups.get(g as usize)?;
        let s = group.index.find(table_hash(hash), |s| s.hash == hash)?;
        // Its first and last bytes: an entry may straddle two cache lines.
        let loc = Loc {
            group: g,
            at: s.at,
            len: s.len,
        };
        self.prefetch(loc);
        Some(loc)
    }

    /// Asks the memory for the entry at `loc` without waiting: its first
    /// and last bytes, since an entry may straddle two cache lines.
    #[inline]
    pub fn prefetch(&self, loc: Loc) {
        if let Some(g) = self.groups.get(loc.group as usize) {
            prefetch(g.bytes(), loc.at as usize);
            prefetch(g.bytes(), (loc.at + loc.len).saturating_sub(1) as usize);
        }
    }

    /// Whether the entry at `loc` is `key`'s.
    pub fn holds(&self, loc: Loc, key: &[u8]) -> bool {
        self.groups
            .get(loc.group as usize)
            .and_then(|g| entry_key(g.bytes(), loc.at as usize))
            .is_some_and(|k| same_key(k, key))
    }

    /// Where a key's entry is, if it has one.
    pub fn find(&self, key: &[u8], hash: u64) -> Option<Loc> {
        let g = self.group_of(hash)?;
        let s = self.groups.get(g as usize)?.find(key, hash)?;
        Some(Loc {
            group: g,
            at: s.at,
            len: s.len,
        })
    }

    fn expired(&self, state: usize, written: i64, now: i64) -> bool {
        matches!(self.ttls.get(state), Some(Some(ttl)) if now.saturating_sub(written) > *ttl)
    }

    /// A reader at the entry at `loc`.
    fn reader(&self, loc: Loc) -> Reader<'_> {
        let bytes = self
            .groups
            .get(loc.group as usize)
            .map(Group::bytes)
            .unwrap_or_default();
        let entry = bytes
            .get(loc.at as usize..(loc.at + loc.len) as usize)
            .unwrap_or_default();
        Reader::new(entry, self.range.start + loc.group)
    }

    /// Appends a key's states as a call ships them (`put_state` each), those
    /// past their TTL at `now` as absent; whether any was.
    pub fn ship(&self, loc: Option<Loc>, now: i64, out: &mut Vec<u8>) -> Result<bool, StateError> {
        let Some(loc) = loc else {
            out.extend(std::iter::repeat_n(0, self.ttls.len()));
            return Ok(false);
        };
        let mut r = self.reader(loc);
        r.bytes()?;
        let mut expired = false;
        walk_states(&mut r, self.ttls.len(), |i, s| match s {
            Some((written, _)) if self.expired(i, written, now) => {
                expired = true;
                put_state(out, None);
            }
            s => put_state(out, s.map(|(_, b)| b)),
        })?;
        Ok(expired)
    }

    /// Changes a key (whose entry is at `loc`) by `edits`, in order, at
    /// processing time `now`: states past their TTL are cleared first.
    /// Undone with the batch.
    pub fn update(
        &mut self,
        key: &[u8],
        hash: u64,
        loc: Option<Loc>,
        now: i64,
        edits: &[Edit<'_>],
    ) -> Result<(), StateError> {
        let Some(group) = self
            .group_of(hash)
            .filter(|&g| (g as usize) < self.groups.len())
        else {
            return Ok(());
        };
        let mut scratch = std::mem::take(&mut self.scratch);
        let (mut before, mut after) = std::mem::take(&mut self.timer_scratch);
        scratch.clear();
        before.clear();
        after.clear();
        let mut result =
            self.encode_update(key, loc, now, edits, &mut scratch, &mut before, &mut after);
        let held = self.groups[group as usize].bytes().len();
        if result.is_ok() && held.saturating_add(scratch.len()) > u32::MAX as usize {
            result = Err(StateError(format!(
                "key group {} would hold over 4 GiB of state; spread the keys over more key groups (--max-parallelism) or keep less state per key",
                self.range.start + group
            )));
        }
        if result.is_ok() {
            self.retime(key, &before, &after);
            self.place(group, hash, loc, &scratch);
        }
        self.scratch = scratch;
        self.timer_scratch = (before, after);
        result
    }

    /// Moves a key's timers in the index from `before` to `after`.
    fn retime(&mut self, key: &[u8], before: &[(u8, i64)], after: &[(u8, i64)]) {
        for &(domain, at) in before.iter().filter(|t| !after.contains(t)) {
            self.timers.remove(at, domain, key);
        }
        for &(domain, at) in after.iter().filter(|t| !before.contains(t)) {
            self.timers.insert(at, domain, key);
        }
    }

    /// Points the key at its new entry (none: the key is gone), logging the
    /// change for the undo. An entry of the same length as the old one
    /// overwrites it (the old bytes kept for the undo); another is appended.
    fn place(&mut self, group: u32, hash: u64, loc: Option<Loc>, entry: &[u8]) {
        let g = &mut self.groups[group as usize];
        let old = loc.map(|l| (l.at, l.len));
        let mut saved = None;
        let new = match old {
            Some((at, len)) if len as usize == entry.len() => {
                let arena = g.own();
                let place = &mut arena[at as usize..(at + len) as usize];
                saved = Some(self.saved.len());
                self.saved.extend_from_slice(place);
                place.copy_from_slice(entry);
                old
            }
            _ => {
                if let Some((at, len)) = old {
                    g.unlink(hash, at);
                    g.dead += len as usize;
                }
                if entry.is_empty() {
                    g.hot = true;
                    None
                } else {
                    let arena = g.own();
                    let at = arena.len() as u32;
                    arena.extend_from_slice(entry);
                    let len = entry.len() as u32;
                    g.link(Slot { hash, at, len });
                    Some((at, len))
                }
            }
        };
        if g.dead > 16 * 1024 && g.dead > g.bytes().len() / 2 {
            self.compact.push(group);
        }
        self.undo.push(Undo {
            group,
            hash,
            old,
            new,
            saved,
        });
    }

    /// Writes the key's new entry into `out` (nothing when it holds
    /// nothing), and its timers before and after into `before` and `after`.
    #[allow(clippy::too_many_arguments)]
    fn encode_update(
        &self,
        key: &[u8],
        loc: Option<Loc>,
        now: i64,
        edits: &[Edit<'_>],
        out: &mut Vec<u8>,
        before: &mut Vec<(u8, i64)>,
        after: &mut Vec<(u8, i64)>,
    ) -> Result<(), StateError> {
        let arity = self.ttls.len();
        put_u32(out, key.len());
        out.extend_from_slice(key);
        put_u32(out, arity);
        let mut any = false;
        let mut put = |i: usize, old: Option<(i64, &[u8])>| {
            let last = edits.iter().rev().find_map(|e| match *e {
                Edit::Set(s, bytes) if s as usize == i => Some(Some((now, bytes))),
                Edit::Clear(s) if s as usize == i => Some(None),
                _ => None,
            });
            let state = match last {
                Some(s) => s,
                None => old.filter(|&(written, _)| !self.expired(i, written, now)),
            };
            match state {
                None => out.push(0),
                Some((written, bytes)) => {
                    any = true;
                    out.push(1);
                    out.extend_from_slice(&written.to_le_bytes());
                    put_u32(out, bytes.len());
                    out.extend_from_slice(bytes);
                }
            }
        };
        match loc {
            Some(loc) => {
                let mut r = self.reader(loc);
                r.bytes()?;
                walk_states(&mut r, arity, &mut put)?;
                read_timers(&mut r, before)?;
            }
            None => (0..arity).for_each(|i| put(i, None)),
        }
        after.extend_from_slice(before);
        for e in edits {
            match *e {
                Edit::TimerSet(domain, at) => {
                    if let Err(p) = after.binary_search(&(domain, at)) {
                        after.insert(p, (domain, at));
                    }
                }
                Edit::TimerDelete(domain, at) => {
                    if let Ok(p) = after.binary_search(&(domain, at)) {
                        after.remove(p);
                    }
                }
                Edit::Set(..) | Edit::Clear(_) => {}
            }
        }
        if !any && after.is_empty() {
            out.clear();
            return Ok(());
        }
        put_u32(out, after.len());
        for &(domain, at) in after.iter() {
            out.push(domain);
            out.extend_from_slice(&at.to_le_bytes());
        }
        Ok(())
    }

    /// Deletes a key's timer (before it fires). Undone with the batch.
    pub fn remove_timer(
        &mut self,
        key: &[u8],
        hash: u64,
        domain: u8,
        at: i64,
        now: i64,
    ) -> Result<(), StateError> {
        let loc = self.find(key, hash);
        self.update(key, hash, loc, now, &[Edit::TimerDelete(domain, at)])
    }

    /// The timers due: event-time ones at or before `watermark`,
    /// processing-time ones at or before `now`, in firing order.
    pub fn due(&self, watermark: i64, now: i64) -> Vec<Due> {
        self.timers.due(watermark, now)
    }

    /// The key and timers of the entry at `(at, len)` in group `group`.
    fn entry_at(&self, group: u32, (at, len): (u32, u32)) -> Option<(Box<[u8]>, KeyTimers)> {
        let mut r = self.reader(Loc { group, at, len });
        let mut timers = Vec::new();
        let key = read_entry(&mut r, self.ttls.len(), &mut timers).ok()?;
        Some((key.into(), timers))
    }

    /// Keys held.
    pub fn keys(&self) -> usize {
        self.groups.iter().map(|g| g.index.len()).sum()
    }

    /// Every key group's state for a checkpoint (between batches): a group
    /// unchanged since the last snapshot gives the same bytes again.
    pub fn snapshot(&mut self) -> Vec<GroupState> {
        let range = self.range.clone();
        range
            .zip(self.groups.iter_mut())
            .map(|(id, g)| {
                if g.hot || g.frozen.is_none() {
                    g.compact();
                    g.frozen = Some(Arc::new(std::mem::take(&mut g.arena)));
                    g.hot = false;
                }
                GroupState {
                    group: id,
                    keys: g.index.len() as u64,
                    bytes: g.frozen.clone().unwrap_or_default(),
                }
            })
            .collect()
    }

    /// Loads the entries of a checkpointed key group, if this store owns
    /// it: every entry checked, so a corrupt checkpoint is an error.
    pub fn restore(&mut self, group: &GroupState) -> Result<(), StateError> {
        if !self.range.contains(&group.group) {
            return Ok(());
        }
        let bytes: &[u8] = &group.bytes;
        let mut r = Reader::new(bytes, group.group);
        let mut restored = Group::default();
        let mut timers: Vec<(i64, u8, &[u8])> = Vec::new();
        while !r.done() {
            let at = r.at();
            let mut entry_timers = Vec::new();
            let key = read_entry(&mut r, self.ttls.len(), &mut entry_timers)?;
            let hash = xxhash_rust::xxh3::xxh3_64(key);
            let slot = Slot {
                hash,
                at: at as u32,
                len: (r.at() - at) as u32,
            };
            let duplicate = restored
                .index
                .find(table_hash(hash), |s| {
                    s.hash == hash
                        && entry_key(bytes, s.at as usize).is_some_and(|k| same_key(k, key))
                })
                .is_some();
            if duplicate {
                return Err(StateError(format!(
                    "key group {} holds a key twice",
                    group.group
                )));
            }
            restored.link(slot);
            for (domain, ts) in entry_timers {
                timers.push((ts, domain, key));
            }
        }
        if u32::try_from(bytes.len()).is_err() {
            return Err(StateError(format!(
                "key group {} is over 4 GiB",
                group.group
            )));
        }
        for (at, domain, key) in timers {
            self.timers.insert(at, domain, key);
        }
        restored.frozen = Some(group.bytes.clone());
        self.groups[(group.group - self.range.start) as usize] = restored;
        Ok(())
    }
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u32).to_le_bytes());
}

impl Batched for ProcessState {
    fn commit(&mut self) {
        self.undo.clear();
        self.saved.clear();
        for g in self.compact.drain(..) {
            if let Some(group) = self.groups.get_mut(g as usize) {
                group.compact();
            }
        }
    }

    fn undo(&mut self) {
        while let Some(u) = self.undo.pop() {
            if let Some((key, timers)) = u.new.and_then(|e| self.entry_at(u.group, e)) {
                for (domain, at) in timers {
                    self.timers.remove(at, domain, &key);
                }
            }
            let g = &mut self.groups[u.group as usize];
            match (u.saved, u.old) {
                (Some(from), Some((at, len))) => {
                    let (at, len) = (at as usize, len as usize);
                    g.own()[at..at + len].copy_from_slice(&self.saved[from..from + len]);
                }
                _ => {
                    if let Some((at, len)) = u.new {
                        g.unlink(u.hash, at);
                        g.dead += len as usize;
                    }
                    if let Some((at, len)) = u.old {
                        g.link(Slot {
                            hash: u.hash,
                            at,
                            len,
                        });
                        g.dead = g.dead.saturating_sub(len as usize);
                    }
                }
            }
            if let Some((key, timers)) = u.old.and_then(|e| self.entry_at(u.group, e)) {
                for (domain, at) in timers {
                    self.timers.insert(at, domain, &key);
                }
            }
        }
        self.saved.clear();
        self.compact.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(k: &[u8]) -> u64 {
        xxhash_rust::xxh3::xxh3_64(k)
    }

    fn shipped(s: &ProcessState, key: &[u8], now: i64) -> Vec<u8> {
        let mut out = Vec::new();
        s.ship(s.find(key, h(key)), now, &mut out).expect("ships");
        out
    }

    fn set(s: &mut ProcessState, key: &[u8], bytes: &[u8], timer: Option<i64>) {
        let loc = s.find(key, h(key));
        let mut edits = vec![Edit::Set(0, bytes)];
        edits.extend(timer.map(|t| Edit::TimerSet(0, t)));
        s.update(key, h(key), loc, 5, &edits).expect("updates");
    }

    #[test]
    fn a_probe_is_only_a_guess_that_holds_confirms() {
        // Two keys given the same hash, as crafted keys could have.
        let mut s = ProcessState::new(128, 0..128, vec![None]);
        for key in [&b"first"[..], b"second"] {
            let loc = s.find(key, 42);
            s.update(key, 42, loc, 5, &[Edit::Set(0, key)])
                .expect("updates");
        }
        s.commit();
        let guess = s.probe(42).expect("an entry has hash 42");
        assert_ne!(s.holds(guess, b"first"), s.holds(guess, b"second"));
        for key in [&b"first"[..], b"second"] {
            let loc = s.find(key, 42).expect("found by key");
            assert!(s.holds(loc, key));
        }
        assert!(s.probe(43).is_none());
    }

    #[test]
    fn a_batch_is_undone_whole_and_a_snapshot_restores_elsewhere() {
        let mut s = ProcessState::new(128, 0..128, vec![None]);
        set(&mut s, b"a", b"1", Some(100));
        s.commit();
        set(&mut s, b"a", b"2", Some(200));
        set(&mut s, b"b", b"3", None);
        s.undo();
        assert_eq!(shipped(&s, b"a", 0), [1, 1, 0, 0, 0, b'1']);
        assert_eq!(shipped(&s, b"b", 0), [0]);
        assert_eq!(s.due(1000, 0).len(), 1);
        assert_eq!(s.due(1000, 0)[0].0, 100);
        let snap = s.snapshot();
        let again = s.snapshot();
        for (a, b) in snap.iter().zip(&again) {
            assert!(
                Arc::ptr_eq(&a.bytes, &b.bytes),
                "an unchanged group is not encoded again"
            );
        }
        let mut t = ProcessState::new(128, 0..64, vec![None]);
        let mut u = ProcessState::new(128, 64..128, vec![None]);
        for g in &snap {
            t.restore(g).expect("restores");
            u.restore(g).expect("restores");
        }
        assert_eq!(t.keys() + u.keys(), 1);
        assert_eq!(t.due(100, 0).len() + u.due(100, 0).len(), 1);
        let mut bad = snap.iter().find(|g| g.keys == 1).expect("a key").clone();
        let mut bytes = bad.bytes.to_vec();
        bytes.truncate(bytes.len() - 2);
        bad.bytes = Arc::new(bytes);
        assert!(
            ProcessState::new(128, 0..128, vec![None])
                .restore(&bad)
                .is_err()
        );
    }

    #[test]
    fn changes_after_a_snapshot_copy_the_group_and_leave_the_snapshot_alone() {
        let mut s = ProcessState::new(1, 0..1, vec![None]);
        for i in 0..2000u32 {
            set(&mut s, &i.to_le_bytes(), b"x", None);
        }
        s.commit();
        let snap = s.snapshot();
        let before = snap[0].bytes.to_vec();
        // Each round changes every entry's length: appended, not in place.
        for round in 0..20u8 {
            let value = vec![round; 3 + usize::from(round % 2)];
            for i in 0..2000u32 {
                set(&mut s, &i.to_le_bytes(), &value, None);
            }
            s.commit();
        }
        assert_eq!(*snap[0].bytes, before);
        assert_eq!(s.keys(), 2000);
        assert!(
            s.groups[0].arena.len() < 3 * 2000 * 33,
            "superseded entries are dropped"
        );
        assert_eq!(
            shipped(&s, &7u32.to_le_bytes(), 0),
            [1, 4, 0, 0, 0, 19, 19, 19, 19]
        );
        let mut t = ProcessState::new(1, 0..1, vec![None]);
        t.restore(&s.snapshot()[0]).expect("restores");
        assert_eq!(
            shipped(&t, &7u32.to_le_bytes(), 0),
            [1, 4, 0, 0, 0, 19, 19, 19, 19]
        );
    }

    #[test]
    fn an_entry_overwritten_in_place_is_undone_with_its_timers() {
        let mut s = ProcessState::new(128, 0..128, vec![None]);
        set(&mut s, b"k", b"1", Some(10));
        s.commit();
        let frozen = s.snapshot();
        let loc = s.find(b"k", h(b"k"));
        let edits = [
            Edit::Set(0, b"2"),
            Edit::TimerDelete(0, 10),
            Edit::TimerSet(0, 20),
        ];
        s.update(b"k", h(b"k"), loc, 5, &edits).expect("updates");
        assert_eq!(
            s.find(b"k", h(b"k")).map(|l| l.at),
            loc.map(|l| l.at),
            "in place"
        );
        assert_eq!(s.due(100, 0)[0].0, 20);
        s.undo();
        assert_eq!(shipped(&s, b"k", 0), [1, 1, 0, 0, 0, b'1']);
        let due: Vec<i64> = s.due(100, 0).iter().map(|d| d.0).collect();
        assert_eq!(due, [10]);
        let after = s.snapshot();
        let g = frozen.iter().find(|g| g.keys == 1).expect("a key");
        let a = after
            .iter()
            .find(|a| a.group == g.group)
            .expect("the group");
        assert_eq!(
            a.bytes, g.bytes,
            "the undone group holds what the snapshot holds"
        );
    }

    #[test]
    fn a_state_past_its_ttl_ships_absent_and_is_cleared_by_the_next_change() {
        let mut s = ProcessState::new(128, 0..128, vec![Some(10)]);
        set(&mut s, b"k", b"v", None);
        s.commit();
        assert_eq!(shipped(&s, b"k", 15), [1, 1, 0, 0, 0, b'v']);
        let mut out = Vec::new();
        assert!(s.ship(s.find(b"k", h(b"k")), 16, &mut out).expect("ships"));
        assert_eq!(out, [0]);
        let loc = s.find(b"k", h(b"k"));
        s.update(b"k", h(b"k"), loc, 16, &[]).expect("updates");
        s.commit();
        assert_eq!(s.keys(), 0);
    }
}
