//! The keyed state backend: the entries of one subtask's key groups, one
//! arena per group, shared with checkpoints and copied on write.
//!
//! Keys and rows stay in the batch encoding (see `encoding.rs`); a key's
//! hash is computed once per row and picks both its key group and its slot
//! in the group's table. State lives here, in the host, never in guest
//! memory. What a row does to its key's entry is a [`Fold`], the operator's
//! business (`operators/aggregate.rs`); this module does not know about
//! guests, sources or checkpoint files.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbrown::HashTable;

use crate::checkpoint::format::GroupState;
use crate::encoding;
use crate::state::key_groups::{key_group, prefetch, same_key, table_hash};

/// What a row does to its key's entry. The backend finds the entry and
/// keeps it; the fold says which field of the row it folds and how.
pub trait Fold: Copy {
    /// The byte span of the folded field in `row`.
    fn field(&self, row: &[u8]) -> Result<(usize, usize), StateError>;

    /// The entry stored for a key's first row, as up to three parts put
    /// together (`scratch` is room for a replaced field).
    fn first<'a>(
        &self,
        row: &'a [u8],
        field: (usize, usize),
        scratch: &'a mut [u8; 9],
    ) -> Result<[&'a [u8]; 3], StateError>;

    /// Folds `incoming` into the stored field `current`; `true` when the
    /// field must become `incoming`, which has another length.
    fn fold(&self, current: &mut [u8], incoming: &[u8]) -> Result<bool, StateError>;
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

    /// The slot of `key`'s entry: where `hint` (taken since the last move)
    /// says, if the entry there is the key's, else from the index.
    #[inline]
    fn find(&self, hash: u64, key: &[u8], hint: Option<Hint>) -> Option<Slot> {
        if let Some(h) = hint
            && same_key(key_at(self.bytes(), h.at as usize), key)
        {
            return Some(Slot {
                hash,
                at: h.at,
                field: h.field,
            });
        }
        self.index
            .find(table_hash(hash), |s| {
                s.hash == hash && same_key(key_at(self.bytes(), s.at as usize), key)
            })
            .copied()
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
fn end_for(arena: &[u8], len: usize, group: u32) -> Result<u32, StateError> {
    u32::try_from(arena.len() + len).map(|_| arena.len() as u32).map_err(|_| {
        StateError(format!(
            "key group {group} holds more than 4 GiB of state; raise --max-parallelism to spread the keys over more groups"
        ))
    })
}

/// Superseded bytes a group may hold before it is compacted: more than
/// this and more than the live entries.
const COMPACT_AT: usize = 4096;

/// A row the fold cannot take (the job's logic is at fault), or state
/// that does not decode (a damaged checkpoint).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StateError(pub String);

/// The state of the key groups one subtask owns.
pub struct KeyedState<F> {
    fold: F,
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
    /// Times an entry moved (to the end, or by a compaction): a [`Hint`]
    /// taken before a move may name a superseded entry.
    moves: u32,
}

/// Where a key's entry was when [`KeyedState::locate`] looked for its
/// hash; [`KeyedState::apply`] checks it before it trusts it.
#[derive(Debug, Clone, Copy)]
pub struct Hint {
    at: u32,
    field: u32,
    moves: u32,
}

impl<F: Fold> KeyedState<F> {
    /// Empty state for key groups `range`.
    pub fn new(fold: F, max_parallelism: u32, range: Range<u32>) -> Self {
        let groups = range.clone().map(|_| Group::default()).collect();
        KeyedState {
            fold,
            max_parallelism,
            range,
            groups,
            copied: CopyOnWrite::default(),
            ahead: Vec::new(),
            spares: Vec::new(),
            moves: 0,
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
                    self.moves = self.moves.wrapping_add(1);
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
    pub fn restore(&mut self, group: &GroupState) -> Result<(), StateError> {
        if !self.range.contains(&group.group) {
            return Ok(());
        }
        let b: &[u8] = &group.bytes;
        if b.len() > u32::MAX as usize {
            return Err(StateError(format!(
                "key group {} is over 4 GiB",
                group.group
            )));
        }
        let mut at = 0usize;
        let truncated = || StateError(format!("key group {} is truncated", group.group));
        let take = |at: &mut usize, n: usize| -> Result<&[u8], StateError> {
            let s = b.get(*at..*at + n).ok_or_else(truncated)?;
            *at += n;
            Ok(s)
        };
        let fold = self.fold;
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
                return Err(StateError(format!(
                    "a key in key group {} hashes to another group; was the checkpoint taken with another --max-parallelism?",
                    group.group
                )));
            }
            let (vs, _) = fold.field(row)?;
            let s = Slot {
                hash,
                at: start as u32,
                field: (8 + key.len() + vs) as u32,
            };
            index.insert_unique(table_hash(hash), s, |e: &Slot| table_hash(e.hash));
        }
        if at != b.len() {
            return Err(StateError(format!(
                "key group {} has {} bytes after its last key",
                group.group,
                b.len() - at
            )));
        }
        self.groups[(group.group - self.range.start) as usize] = Group {
            index,
            arena: Vec::new(),
            frozen: Some(group.bytes.clone()),
            dead: 0,
            hot: false,
        };
        self.moves = self.moves.wrapping_add(1);
        Ok(())
    }

    /// Where the entry of a key with this hash probably is (the first with
    /// the same hash), asking the memory for it without waiting: locating
    /// a few rows' keys first and applying them after lets their cache
    /// misses overlap. `None`: no entry has the hash.
    #[inline]
    pub fn locate(&self, hash: u64) -> Option<Hint> {
        let group = key_group(hash, self.max_parallelism);
        let g = self
            .groups
            .get(group.checked_sub(self.range.start)? as usize)?;
        let s = g.index.find(table_hash(hash), |s| s.hash == hash)?;
        prefetch(g.bytes(), s.at as usize);
        prefetch(g.bytes(), (s.at + s.field) as usize);
        Some(Hint {
            at: s.at,
            field: s.field,
            moves: self.moves,
        })
    }

    /// Folds one row into its key's state and writes the updated row, in
    /// tuple form, to `out` (when there is one: a discard sink needs none).
    /// `hint`, from [`KeyedState::locate`], is used only if no entry moved
    /// since and the entry there is the key's.
    #[inline]
    pub fn apply(
        &mut self,
        hash: u64,
        key: &[u8],
        row: &[u8],
        out: Option<&mut Vec<u8>>,
        hint: Option<Hint>,
    ) -> Result<(), StateError> {
        let fold = self.fold;
        let group = key_group(hash, self.max_parallelism);
        debug_assert!(self.range.contains(&group));
        let g = &mut self.groups[(group - self.range.start) as usize];
        if g.dead > COMPACT_AT && g.dead * 2 > g.bytes().len() {
            g.compact();
            self.moves = self.moves.wrapping_add(1);
        }
        let (vs, ve) = fold.field(row)?;
        let incoming = &row[vs..ve];
        let hint = hint.filter(|h| h.moves == self.moves);
        let found = g.find(hash, key, hint);
        let at = match found {
            Some(found) => {
                let arena = g.writable(&mut self.copied, &mut self.spares);
                let at = found.at as usize;
                let fs = at + found.field as usize;
                let fe = encoding::skip_checked(arena, fs)
                    .ok_or_else(|| StateError("keyed state is corrupt".into()))?;
                if !fold.fold(&mut arena[fs..fe], incoming)? {
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
                    self.moves = self.moves.wrapping_add(1);
                    if let Some(s) = g
                        .index
                        .find_mut(table_hash(hash), |e| e.hash == hash && e.at == found.at)
                    {
                        s.at = moved;
                    }
                    moved as usize
                }
            }
            None => {
                let mut one = [0u8; 9];
                let stored = fold.first(row, (vs, ve), &mut one)?;
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
                g.index
                    .insert_unique(table_hash(hash), s, |e| table_hash(e.hash));
                at as usize
            }
        };
        if let Some(out) = out {
            encoding::format_row(row_at(g.bytes(), at), out);
        }
        Ok(())
    }
}

#[cfg(test)]
impl<F: Fold> KeyedState<F> {
    /// Each key group's keys and arena bytes, for tests.
    pub(crate) fn group_sizes(&self) -> Vec<(usize, usize)> {
        self.groups
            .iter()
            .map(|g| (g.index.len(), g.bytes().len()))
            .collect()
    }
}
