//! Keyed state: partitioning keys into key groups, key groups into
//! subtasks, and the running aggregation of each key.
//!
//! Keys and rows stay in the batch encoding (see `row.rs`); a key's hash is
//! computed once per row and picks both its key group and its slot in the
//! group's table. State lives here, in the host, never in guest memory. This
//! module does not know about guests, sources or checkpoints' files.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbrown::HashTable;

use crate::checkpoint::GroupState;
use crate::row::{self, Num};
use crate::spec::{AggregateKind, Aggregation};

/// The key group of a key hash (Flink's `assignToKeyGroup`).
#[inline]
pub fn key_group(hash: u64, max_parallelism: u32) -> u32 {
    (hash % u64::from(max_parallelism)) as u32
}

/// A key's hash within its key group's table. Every key of a group has the
/// same `hash % max_parallelism`, so the table (which picks buckets by the
/// low bits) gets the other bits, mixed.
#[inline]
fn slot(hash: u64) -> u64 {
    (hash >> 7).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// The subtask that owns a key group (Flink's `computeOperatorIndexForKeyGroup`).
#[inline]
pub fn subtask_of(key_group: u32, parallelism: u32, max_parallelism: u32) -> u32 {
    (u64::from(key_group) * u64::from(parallelism) / u64::from(max_parallelism)) as u32
}

/// The key groups a subtask owns (Flink's `computeKeyGroupRangeForOperatorIndex`).
pub fn key_group_range(subtask: u32, parallelism: u32, max_parallelism: u32) -> Range<u32> {
    let (s, p, m) = (
        u64::from(subtask),
        u64::from(parallelism),
        u64::from(max_parallelism),
    );
    let start = (s * m).div_ceil(p);
    let end = ((s + 1) * m - 1) / p + 1;
    start as u32..end as u32
}

/// Where one key's entry sits in its group's arena.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Hash of the encoded key.
    hash: u64,
    /// Offset of the entry in the arena.
    at: u32,
    /// Offset of the aggregated field from the entry's start.
    field: u32,
}

/// One key group: the entries of its keys back to back, each in checkpoint
/// encoding (`u32 key-len, key, u32 row-len, row`, the row being the first
/// row seen for the key with the aggregated field replaced by the running
/// aggregate), and an index over them. A snapshot takes the arena itself,
/// shared (`frozen`); the first change after it copies the arena back into
/// one the group owns (copy on write), so a checkpoint never waits for its
/// state to be encoded. Rows check a plain `Option`, not the `Arc`'s
/// counts: two atomic operations a row cost a sixth of the aggregate step.
#[derive(Default)]
struct Group {
    index: HashTable<Slot>,
    /// The entries, while no snapshot shares them.
    arena: Vec<u8>,
    /// The entries, while a snapshot may share them (`arena` is then empty).
    frozen: Option<Arc<Vec<u8>>>,
    /// Bytes of entries superseded by a copy of another length at the end.
    dead: usize,
    /// Changed since the last snapshot.
    hot: bool,
}

#[inline]
fn u32_at(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize
}

/// The encoded key of the entry at `at`.
#[inline]
fn key_at(arena: &[u8], at: usize) -> &[u8] {
    &arena[at + 4..at + 4 + u32_at(arena, at)]
}

/// The encoded row of the entry at `at`.
#[inline]
fn row_at(arena: &[u8], at: usize) -> &[u8] {
    let start = at + 8 + u32_at(arena, at);
    &arena[start..start + u32_at(arena, start - 4)]
}

/// The length of the entry at `at`.
fn entry_len(arena: &[u8], at: usize) -> usize {
    let key = u32_at(arena, at);
    8 + key + u32_at(arena, at + 4 + key)
}

/// Copies of key groups that a snapshot still held: the cost of a
/// checkpoint that taking it does not show.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyOnWrite {
    /// Key groups copied when a row changed them.
    pub groups: u64,
    /// Key groups copied ahead, while there was nothing else to do.
    pub ahead: u64,
    /// Bytes of both.
    pub bytes: u64,
    /// The longest rows waited for copies in one batch: from
    /// [`KeyedState::take_copied`], called once a batch, that batch's wait.
    pub longest: Duration,
}

impl CopyOnWrite {
    /// Adds the copies of another batch or subtask.
    pub fn add(&mut self, other: CopyOnWrite) {
        self.groups += other.groups;
        self.ahead += other.ahead;
        self.bytes += other.bytes;
        self.longest = self.longest.max(other.longest);
    }
}

impl Group {
    /// The entries.
    #[inline]
    fn bytes(&self) -> &[u8] {
        match &self.frozen {
            Some(shared) => shared,
            None => &self.arena,
        }
    }

    /// The arena, to change: copied first if a snapshot shares it.
    #[inline]
    fn writable(&mut self, copied: &mut CopyOnWrite, spares: &mut Vec<Vec<u8>>) -> &mut Vec<u8> {
        self.hot = true;
        if self.frozen.is_some() {
            let started = Instant::now();
            if let Some(bytes) = self.thaw(spares) {
                copied.bytes += bytes as u64;
                copied.groups += 1;
                copied.longest += started.elapsed();
            }
        }
        &mut self.arena
    }

    /// Takes the entries back from `frozen` into an arena of the group's
    /// own: without a copy if no snapshot holds them any more, else into a
    /// spare arena if one is large enough (its memory is already mapped: a
    /// fresh allocation of megabytes costs more in page faults than the
    /// copy). The bytes copied, if it copied.
    fn thaw(&mut self, spares: &mut Vec<Vec<u8>>) -> Option<usize> {
        let shared = self.frozen.take()?;
        match Arc::try_unwrap(shared) {
            Ok(own) => {
                self.arena = own;
                None
            }
            Err(shared) => {
                let len = shared.len();
                let mut own = match spares.iter().rposition(|v| v.capacity() >= len) {
                    Some(i) => spares.swap_remove(i),
                    None => Vec::with_capacity(len + len / 8 + 64),
                };
                own.clear();
                own.extend_from_slice(&shared);
                self.arena = own;
                Some(len)
            }
        }
    }

    /// The entries, shared with a snapshot.
    fn freeze(&mut self) -> Arc<Vec<u8>> {
        self.frozen
            .get_or_insert_with(|| Arc::new(std::mem::take(&mut self.arena)))
            .clone()
    }

    /// Drops the superseded entries.
    fn compact(&mut self) {
        let shared = self.frozen.take();
        let own = std::mem::take(&mut self.arena);
        let old: &[u8] = shared.as_deref().unwrap_or(&own);
        let mut fresh = Vec::with_capacity(old.len() - self.dead);
        for s in self.index.iter_mut() {
            let at = s.at as usize;
            s.at = fresh.len() as u32;
            fresh.extend_from_slice(&old[at..at + entry_len(old, at)]);
        }
        self.arena = fresh;
        self.dead = 0;
    }
}

/// Where an entry of `len` bytes appended to `arena` starts, or an error
/// if the key group would outgrow the offsets.
fn end_for(arena: &[u8], len: usize, group: u32) -> Result<u32, AggregateError> {
    u32::try_from(arena.len() + len).map(|_| arena.len() as u32).map_err(|_| {
        AggregateError(format!(
            "key group {group} holds more than 4 GiB of state; raise --max-parallelism to spread the keys over more groups"
        ))
    })
}

/// Superseded bytes a group may hold before it is compacted: more than
/// this and more than the live entries.
const COMPACT_AT: usize = 4096;

/// A row the aggregation cannot fold: the job's logic is at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateError(pub String);

/// The state of the key groups one subtask owns.
pub struct KeyedState {
    aggregation: Aggregation,
    max_parallelism: u32,
    range: Range<u32>,
    groups: Vec<Group>,
    /// Copies made since [`KeyedState::take_copied`] was last called.
    copied: CopyOnWrite,
    /// Groups that changed before the last snapshot and will likely change
    /// again: [`KeyedState::copy_ahead`] copies them.
    ahead: Vec<usize>,
    /// Arenas of snapshots no longer needed, to copy groups into.
    spares: Vec<Vec<u8>>,
}

impl KeyedState {
    /// Empty state for key groups `range`.
    pub fn new(aggregation: Aggregation, max_parallelism: u32, range: Range<u32>) -> Self {
        let groups = range.clone().map(|_| Group::default()).collect();
        KeyedState {
            aggregation,
            max_parallelism,
            range,
            groups,
            copied: CopyOnWrite::default(),
            ahead: Vec::new(),
            spares: Vec::new(),
        }
    }

    /// Keeps the arena of a key group a snapshot no longer needs, for the
    /// next copy (as many as there are groups).
    pub fn give_spare(&mut self, arena: Vec<u8>) {
        if self.spares.len() < self.groups.len() && arena.capacity() > 0 {
            self.spares.push(arena);
        }
    }

    /// Every key group's entries for a checkpoint. Nothing is copied: the
    /// snapshot shares each group's arena, and the first change to a group
    /// afterwards copies it (see [`KeyedState::take_copied`]), unless
    /// [`KeyedState::copy_ahead`] did first.
    pub fn snapshot(&mut self) -> Vec<GroupState> {
        self.ahead.clear();
        self.range
            .clone()
            .zip(&mut self.groups)
            .enumerate()
            .map(|(i, (group, g))| {
                if g.dead > 0 {
                    g.compact();
                }
                if std::mem::take(&mut g.hot) {
                    self.ahead.push(i);
                }
                GroupState {
                    group,
                    keys: g.index.len() as u64,
                    bytes: g.freeze(),
                }
            })
            .collect()
    }

    /// The copies of shared key groups made since the last call.
    pub fn take_copied(&mut self) -> CopyOnWrite {
        std::mem::take(&mut self.copied)
    }

    /// Whether [`KeyedState::copy_ahead`] may have a group to copy.
    pub fn copying_ahead(&self) -> bool {
        !self.ahead.is_empty()
    }

    /// Copies one key group that the last snapshot holds and that changed
    /// before it, so that a row changing it later need not wait for the
    /// copy; `false` when none is left. For idle moments.
    pub fn copy_ahead(&mut self) -> bool {
        while let Some(i) = self.ahead.pop() {
            if let Some(bytes) = self.groups[i].thaw(&mut self.spares) {
                self.copied.bytes += bytes as u64;
                self.copied.ahead += 1;
                return !self.ahead.is_empty();
            }
        }
        false
    }

    /// Loads the entries of a checkpointed key group, if this state owns
    /// it; the group shares the checkpoint's bytes until it changes.
    pub fn restore(&mut self, group: &GroupState) -> Result<(), String> {
        if !self.range.contains(&group.group) {
            return Ok(());
        }
        let b: &[u8] = &group.bytes;
        if b.len() > u32::MAX as usize {
            return Err(format!("key group {} is over 4 GiB", group.group));
        }
        let mut at = 0usize;
        let truncated = || format!("key group {} is truncated", group.group);
        let take = |at: &mut usize, n: usize| -> Result<&[u8], String> {
            let s = b.get(*at..*at + n).ok_or_else(truncated)?;
            *at += n;
            Ok(s)
        };
        let agg = self.aggregation;
        let mut index = HashTable::with_capacity(group.keys.min(1 << 20) as usize);
        for _ in 0..group.keys {
            let start = at;
            let n = take(&mut at, 4)?;
            let n = u32::from_le_bytes([n[0], n[1], n[2], n[3]]) as usize;
            let key = take(&mut at, n)?;
            let hash = xxhash_rust::xxh3::xxh3_64(key);
            let n = take(&mut at, 4)?;
            let n = u32::from_le_bytes([n[0], n[1], n[2], n[3]]) as usize;
            let row = take(&mut at, n)?;
            if key_group(hash, self.max_parallelism) != group.group {
                return Err(format!(
                    "a key in key group {} hashes to another group; was the checkpoint taken with another --max-parallelism?",
                    group.group
                ));
            }
            let (vs, _) = field(row, agg).map_err(|e| e.0)?;
            let s = Slot {
                hash,
                at: start as u32,
                field: (8 + key.len() + vs) as u32,
            };
            index.insert_unique(slot(hash), s, |e: &Slot| slot(e.hash));
        }
        if at != b.len() {
            return Err(format!(
                "key group {} has {} bytes after its last key",
                group.group,
                b.len() - at
            ));
        }
        self.groups[(group.group - self.range.start) as usize] = Group {
            index,
            arena: Vec::new(),
            frozen: Some(group.bytes.clone()),
            dead: 0,
            hot: false,
        };
        Ok(())
    }

    /// Folds one row into its key's state and writes the updated row, in
    /// tuple form, to `out` (when there is one: a discard sink needs none).
    pub fn apply(
        &mut self,
        hash: u64,
        key: &[u8],
        row: &[u8],
        out: Option<&mut Vec<u8>>,
    ) -> Result<(), AggregateError> {
        let agg = self.aggregation;
        let group = key_group(hash, self.max_parallelism);
        debug_assert!(self.range.contains(&group));
        let g = &mut self.groups[(group - self.range.start) as usize];
        if g.dead > COMPACT_AT && g.dead * 2 > g.bytes().len() {
            g.compact();
        }
        let (vs, ve) = field(row, agg)?;
        let incoming = &row[vs..ve];
        let found = g
            .index
            .find(slot(hash), |s| {
                s.hash == hash && key_at(g.bytes(), s.at as usize) == key
            })
            .copied();
        let at = match found {
            Some(found) => {
                let arena = g.writable(&mut self.copied, &mut self.spares);
                let at = found.at as usize;
                let fs = at + found.field as usize;
                let fe = row::skip_checked(arena, fs)
                    .ok_or_else(|| AggregateError("keyed state is corrupt".into()))?;
                if !fold(agg, &mut arena[fs..fe], incoming)? {
                    at
                } else {
                    // The new value has another length: the entry moves to
                    // the end with it.
                    let len = entry_len(arena, at);
                    let key_len = u32_at(arena, at);
                    let row_len = u32_at(arena, at + 4 + key_len) - (fe - fs) + incoming.len();
                    let moved = end_for(arena, len - (fe - fs) + incoming.len(), group)?;
                    arena.extend_from_within(at..fs);
                    arena.extend_from_slice(incoming);
                    arena.extend_from_within(fe..at + len);
                    let row_len_at = moved as usize + 4 + key_len;
                    arena[row_len_at..row_len_at + 4]
                        .copy_from_slice(&(row_len as u32).to_le_bytes());
                    g.dead += len;
                    if let Some(s) = g
                        .index
                        .find_mut(slot(hash), |e| e.hash == hash && e.at == found.at)
                    {
                        s.at = moved;
                    }
                    moved as usize
                }
            }
            None => {
                let mut one = [0u8; 9];
                let stored: [&[u8]; 3] = match agg.kind {
                    AggregateKind::Count => {
                        row::write_num(Num::Int(1), &mut one);
                        [&row[..vs], &one, &row[ve..]]
                    }
                    AggregateKind::Sum => {
                        if row::read_num(incoming).is_none() {
                            return Err(not_numeric(agg, incoming));
                        }
                        [row, &[], &[]]
                    }
                    AggregateKind::Min | AggregateKind::Max => [row, &[], &[]],
                };
                let row_len: usize = stored.iter().map(|p| p.len()).sum();
                let arena = g.writable(&mut self.copied, &mut self.spares);
                let at = end_for(arena, 8 + key.len() + row_len, group)?;
                arena.extend_from_slice(&(key.len() as u32).to_le_bytes());
                arena.extend_from_slice(key);
                arena.extend_from_slice(&(row_len as u32).to_le_bytes());
                for part in stored {
                    arena.extend_from_slice(part);
                }
                let s = Slot {
                    hash,
                    at,
                    field: (8 + key.len() + vs) as u32,
                };
                g.index.insert_unique(slot(hash), s, |e| slot(e.hash));
                at as usize
            }
        };
        if let Some(out) = out {
            row::format_row(row_at(g.bytes(), at), out);
        }
        Ok(())
    }
}

fn field(row: &[u8], agg: Aggregation) -> Result<(usize, usize), AggregateError> {
    row::field_span(row, agg.field).ok_or_else(|| {
        let mut shown = Vec::new();
        row::format_row(row, &mut shown);
        AggregateError(format!(
            "{agg} needs field {} but the row {} has only {} field(s)",
            agg.field,
            String::from_utf8_lossy(&shown).trim_end(),
            u32::from_le_bytes([row[0], row[1], row[2], row[3]])
        ))
    })
}

fn not_numeric(agg: Aggregation, value: &[u8]) -> AggregateError {
    AggregateError(format!(
        "{agg} needs a number in field {}, but got {} {}",
        agg.field,
        row::type_name(value),
        row::display_value(value)
    ))
}

/// Folds `incoming` into the stored field `current`; `true` when the
/// field must become `incoming`, which has another length.
fn fold(agg: Aggregation, current: &mut [u8], incoming: &[u8]) -> Result<bool, AggregateError> {
    match agg.kind {
        AggregateKind::Count => {
            let Some(Num::Int(n)) = row::read_num(current) else {
                return Err(AggregateError("count state is corrupt".into()));
            };
            row::write_num(Num::Int(n.wrapping_add(1)), current);
        }
        AggregateKind::Sum => {
            let a = row::read_num(current).ok_or_else(|| not_numeric(agg, current))?;
            let b = row::read_num(incoming).ok_or_else(|| not_numeric(agg, incoming))?;
            let sum = match (a, b) {
                (Num::Int(x), Num::Int(y)) => Num::Int(x.wrapping_add(y)),
                (Num::Int(x), Num::Float(y)) => Num::Float(x as f64 + y),
                (Num::Float(x), Num::Int(y)) => Num::Float(x + y as f64),
                (Num::Float(x), Num::Float(y)) => Num::Float(x + y),
            };
            row::write_num(sum, current);
        }
        AggregateKind::Min | AggregateKind::Max => {
            let ord = compare(current, incoming).ok_or_else(|| {
                AggregateError(format!(
                    "{agg} cannot compare {} {} with {} {}",
                    row::type_name(current),
                    row::display_value(current),
                    row::type_name(incoming),
                    row::display_value(incoming)
                ))
            })?;
            let replace = match agg.kind {
                AggregateKind::Min => ord.is_gt(),
                _ => ord.is_lt(),
            };
            if replace {
                if incoming.len() != current.len() {
                    return Ok(true);
                }
                current.copy_from_slice(incoming);
            }
        }
    }
    Ok(false)
}

fn compare(a: &[u8], b: &[u8]) -> Option<std::cmp::Ordering> {
    if let (Some(x), Some(y)) = (row::read_num(a), row::read_num(b)) {
        let f = |n| match n {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        };
        return match (x, y) {
            (Num::Int(i), Num::Int(j)) => Some(i.cmp(&j)),
            _ => f(x).partial_cmp(&f(y)),
        };
    }
    match (a.first(), b.first()) {
        (Some(&row::TEXT), Some(&row::TEXT)) | (Some(&row::BYTES), Some(&row::BYTES)) => {
            Some(a[5..].cmp(&b[5..]))
        }
        (Some(&row::BOOL), Some(&row::BOOL)) => Some(a[1].cmp(&b[1])),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_group_ranges_cover_every_group_once() {
        for p in 1..=7 {
            let mut next = 0;
            for s in 0..p {
                let r = key_group_range(s, p, 128);
                assert_eq!(r.start, next);
                for g in r.clone() {
                    assert_eq!(subtask_of(g, p, 128), s);
                }
                next = r.end;
            }
            assert_eq!(next, 128);
        }
    }

    fn encoded(word: &str, n: i64) -> (Vec<u8>, Vec<u8>) {
        let mut key = vec![row::TEXT];
        key.extend_from_slice(&(word.len() as u32).to_le_bytes());
        key.extend_from_slice(word.as_bytes());
        let mut r = 2u32.to_le_bytes().to_vec();
        r.extend_from_slice(&key);
        r.push(row::INT);
        r.extend_from_slice(&n.to_le_bytes());
        (key, r)
    }

    fn run(kind: AggregateKind, input: &[(&str, i64)]) -> String {
        let agg = Aggregation { kind, field: 1 };
        let mut state = KeyedState::new(agg, 128, 0..128);
        let mut out = Vec::new();
        for (w, n) in input {
            let (key, r) = encoded(w, *n);
            let hash = xxhash_rust::xxh3::xxh3_64(&key);
            state.apply(hash, &key, &r, Some(&mut out)).expect("folds");
        }
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn aggregations() {
        let input = [("a", 3), ("b", 1), ("a", 2), ("a", 5)];
        assert_eq!(
            run(AggregateKind::Sum, &input),
            "(a,3)\n(b,1)\n(a,5)\n(a,10)\n"
        );
        assert_eq!(
            run(AggregateKind::Count, &input),
            "(a,1)\n(b,1)\n(a,2)\n(a,3)\n"
        );
        assert_eq!(
            run(AggregateKind::Min, &input),
            "(a,3)\n(b,1)\n(a,2)\n(a,2)\n"
        );
        assert_eq!(
            run(AggregateKind::Max, &input),
            "(a,3)\n(b,1)\n(a,3)\n(a,5)\n"
        );
    }

    /// A row `(k, text, 7)`, keyed by `k`.
    fn text_row(text: &str) -> (Vec<u8>, Vec<u8>) {
        let put_text = |out: &mut Vec<u8>, t: &str| {
            out.push(row::TEXT);
            out.extend_from_slice(&(t.len() as u32).to_le_bytes());
            out.extend_from_slice(t.as_bytes());
        };
        let mut key = Vec::new();
        put_text(&mut key, "k");
        let mut r = 3u32.to_le_bytes().to_vec();
        r.extend_from_slice(&key);
        put_text(&mut r, text);
        r.push(row::INT);
        r.extend_from_slice(&7i64.to_le_bytes());
        (key, r)
    }

    #[test]
    fn a_field_that_changes_length_survives_snapshot_and_restore() {
        let agg = Aggregation {
            kind: AggregateKind::Max,
            field: 1,
        };
        let apply = |state: &mut KeyedState, text: &str| {
            let (key, r) = text_row(text);
            let hash = xxhash_rust::xxh3::xxh3_64(&key);
            let mut out = Vec::new();
            state.apply(hash, &key, &r, Some(&mut out)).expect("folds");
            String::from_utf8(out).expect("utf8")
        };
        let mut state = KeyedState::new(agg, 128, 0..128);
        assert_eq!(apply(&mut state, "b"), "(k,b,7)\n");
        assert_eq!(apply(&mut state, "abc"), "(k,b,7)\n");
        assert_eq!(apply(&mut state, "zzzz"), "(k,zzzz,7)\n");
        assert_eq!(apply(&mut state, "a"), "(k,zzzz,7)\n");
        let groups = state.snapshot();
        let mut restored = KeyedState::new(agg, 128, 0..128);
        for g in &groups {
            restored.restore(g).expect("restores");
        }
        assert_eq!(apply(&mut restored, "y"), "(k,zzzz,7)\n");
        assert_eq!(apply(&mut restored, "zzzzz"), "(k,zzzzz,7)\n");
        assert_eq!(apply(&mut restored, "zzzzzz"), "(k,zzzzzz,7)\n");
        // The superseded copies of the entry are not checkpointed.
        let again = restored.snapshot();
        assert_eq!(again.iter().map(|g| g.keys).sum::<u64>(), 1);
        let mut twice = KeyedState::new(agg, 128, 0..128);
        for g in &again {
            twice.restore(g).expect("restores");
        }
        assert_eq!(apply(&mut twice, "a"), "(k,zzzzzz,7)\n");
        // Many moves: the superseded copies are dropped as they pile up.
        for n in 7..300 {
            let longer = "z".repeat(n);
            assert_eq!(apply(&mut twice, &longer), format!("(k,{longer},7)\n"));
        }
        let g = &twice.groups[twice
            .groups
            .iter()
            .position(|g| g.index.len() == 1)
            .expect("a key")];
        assert!(
            g.bytes().len() < 2 * 4096 + 400,
            "{} bytes",
            g.bytes().len()
        );
        let last = twice.snapshot();
        assert_eq!(
            last.iter().map(|g| g.bytes.len()).sum::<usize>(),
            4 + 6 + 4 + 4 + 6 + 304 + 9
        );
    }

    /// Every key's count, as a restored state prints them.
    fn counts(groups: &[GroupState], words: &[&str]) -> String {
        let agg = Aggregation {
            kind: AggregateKind::Count,
            field: 1,
        };
        let mut state = KeyedState::new(agg, 128, 0..128);
        for g in groups {
            state.restore(g).expect("restores");
        }
        let mut out = Vec::new();
        for w in words {
            let (key, r) = encoded(w, 0);
            let hash = xxhash_rust::xxh3::xxh3_64(&key);
            state.apply(hash, &key, &r, Some(&mut out)).expect("folds");
        }
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn a_snapshot_keeps_its_state_while_the_live_state_changes() {
        let agg = Aggregation {
            kind: AggregateKind::Count,
            field: 1,
        };
        let mut state = KeyedState::new(agg, 128, 0..128);
        let words: Vec<String> = (0..1000).map(|i| format!("w{i}")).collect();
        let feed = |state: &mut KeyedState, words: &[String]| {
            for w in words {
                let (key, r) = encoded(w, 0);
                let hash = xxhash_rust::xxh3::xxh3_64(&key);
                state.apply(hash, &key, &r, None).expect("folds");
            }
        };
        feed(&mut state, &words);
        state.take_copied();
        let first = state.snapshot();
        // Nothing was copied to take it; the first change to each group is.
        assert_eq!(state.take_copied(), CopyOnWrite::default());
        feed(&mut state, &words[..1]);
        let copied = state.take_copied();
        assert_eq!(copied.groups, 1);
        feed(&mut state, &words);
        assert_eq!(state.take_copied().groups, 127);
        let second = state.snapshot();
        // A group that did not change since is shared, not copied.
        let unchanged = first
            .iter()
            .zip(&second)
            .filter(|(a, b)| Arc::ptr_eq(&a.bytes, &b.bytes))
            .count();
        assert_eq!(unchanged, 0);
        assert_eq!(counts(&first, &["w0", "w999"]), "(w0,2)\n(w999,2)\n");
        assert_eq!(counts(&second, &["w0", "w999"]), "(w0,4)\n(w999,3)\n");
        let third = state.snapshot();
        assert!(
            second
                .iter()
                .zip(&third)
                .all(|(a, b)| Arc::ptr_eq(&a.bytes, &b.bytes))
        );
    }

    #[test]
    fn a_corrupt_key_group_is_refused() {
        let agg = Aggregation {
            kind: AggregateKind::Count,
            field: 1,
        };
        let mut state = KeyedState::new(agg, 128, 0..128);
        let (key, r) = encoded("a", 0);
        let hash = xxhash_rust::xxh3::xxh3_64(&key);
        state.apply(hash, &key, &r, None).expect("folds");
        let mut groups = state.snapshot();
        let g = groups.iter_mut().find(|g| g.keys == 1).expect("one key");
        let mut longer = g.bytes.to_vec();
        longer.push(0);
        g.bytes = Arc::new(longer);
        let mut restored = KeyedState::new(agg, 128, 0..128);
        let err = restored.restore(g).expect_err("trailing byte");
        assert!(err.ends_with("has 1 bytes after its last key"), "{err}");
        let mut shorter = g.bytes.to_vec();
        shorter.truncate(shorter.len() - 3);
        g.bytes = Arc::new(shorter);
        let err = restored.restore(g).expect_err("truncated");
        assert!(err.ends_with("is truncated"), "{err}");
    }

    #[test]
    fn sum_of_text_is_an_error() {
        let agg = Aggregation {
            kind: AggregateKind::Sum,
            field: 0,
        };
        let mut state = KeyedState::new(agg, 128, 0..128);
        let (key, r) = encoded("a", 1);
        let err = state
            .apply(1, &key, &r, Some(&mut Vec::new()))
            .expect_err("text is not a number");
        assert_eq!(err.0, "sum:0 needs a number in field 0, but got text \"a\"");
    }
}
