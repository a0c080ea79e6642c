//! The keyed state of a 0.2.0 window stage, by key group, so that it
//! checkpoints and restores at any parallelism: per key, a value the stage
//! defines (its windows, `operators/window.rs`). Each key's deadlines (when
//! its windows fire and are purged) are indexed in firing order. (A process
//! stage keeps its states in an arena per group, `state/process_state.rs`.)
//!
//! Changes are applied in place with an undo log for the batch: a batch
//! that fails is undone whole, so a trap applies nothing. Each key group is
//! shared with the checkpoint that holds it (an `Arc`); the first change
//! after a snapshot copies the group (copy on write), and a group that did
//! not change since the last snapshot keeps its encoding, so a checkpoint
//! encodes only what changed.

use std::ops::Range;
use std::sync::Arc;

use crate::checkpoint::format::GroupState;
use crate::state::Batched;
use crate::state::key_groups::{key_group, same_key, table_hash};
use crate::state::keyed::StateError;
use crate::state::timers::{Due, Timers};

/// What a store keeps per key.
pub trait Keyed: Clone + Default + Send + 'static {
    /// Whether there is nothing to keep (the key is removed).
    fn is_empty(&self) -> bool;
    /// Appends the key's deadlines to `out`: `(domain, timestamp)`, domain
    /// 0 event time (due when the watermark reaches it), 1 processing time.
    fn deadlines(&self, out: &mut Vec<(u8, i64)>);
    /// Appends the key's encoding (after the key) to a checkpoint's bytes.
    fn encode(&self, out: &mut Vec<u8>);
    /// Reads what [`Keyed::encode`] wrote; `arity` is what the stage
    /// declares (states per key for a process stage).
    fn decode(r: &mut Reader<'_>, arity: usize) -> Result<Self, StateError>;
}

/// Appends `u32 len, bytes`.
pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// A key of a group's map, with its hash (xxh3 of the key bytes).
#[derive(Clone)]
struct Slot<V> {
    hash: u64,
    key: Box<[u8]>,
    value: V,
}

type Map<V> = hashbrown::HashTable<Slot<V>>;

fn find<'m, V>(keys: &'m Map<V>, key: &[u8], hash: u64) -> Option<&'m V> {
    keys.find(table_hash(hash), |s| {
        s.hash == hash && same_key(&s.key, key)
    })
    .map(|s| &s.value)
}

/// Removes a key; what it held.
fn remove<V>(keys: &mut Map<V>, key: &[u8], hash: u64) -> Option<V> {
    keys.find_entry(table_hash(hash), |s| {
        s.hash == hash && same_key(&s.key, key)
    })
    .ok()
    .map(|e| e.remove().0.value)
}

/// Sets a key (known to be absent).
fn insert<V>(keys: &mut Map<V>, key: Box<[u8]>, hash: u64, value: V) {
    keys.insert_unique(table_hash(hash), Slot { hash, key, value }, |s| {
        table_hash(s.hash)
    });
}

/// One key group.
#[derive(Clone)]
struct Group<V> {
    keys: Arc<Map<V>>,
    /// The encoding of `keys` when it has not changed since it was made.
    encoded: Option<Arc<Vec<u8>>>,
}

impl<V> Default for Group<V> {
    fn default() -> Self {
        Group {
            keys: Arc::new(Map::new()),
            encoded: None,
        }
    }
}

/// The state of the key groups one subtask of a stateful stage owns.
pub struct Store<V> {
    max_parallelism: u32,
    range: Range<u32>,
    states: usize,
    groups: Vec<Group<V>>,
    /// Every deadline, in firing order.
    timers: Timers,
    /// The keys' values before the batch changed them, to undo it: the
    /// hash, where the key is in `undo_keys`, the value.
    undo: Vec<(u64, Range<usize>, Option<V>)>,
    undo_keys: Vec<u8>,
    /// Room for a key's deadlines before and after a change.
    before: Vec<(u8, i64)>,
    after: Vec<(u8, i64)>,
}

impl<V: Keyed> Store<V> {
    /// Empty state for key groups `range`; `states` is the stage's arity
    /// (see [`Keyed::decode`]).
    pub fn new(max_parallelism: u32, range: Range<u32>, states: usize) -> Self {
        Store {
            max_parallelism,
            groups: range.clone().map(|_| Group::default()).collect(),
            range,
            states,
            timers: Timers::default(),
            undo: Vec::new(),
            undo_keys: Vec::new(),
            before: Vec::new(),
            after: Vec::new(),
        }
    }

    fn group_of(&self, hash: u64) -> usize {
        (key_group(hash, self.max_parallelism) - self.range.start) as usize
    }

    /// What a key holds, if anything.
    pub fn get(&self, key: &[u8], hash: u64) -> Option<&V> {
        find(&self.groups.get(self.group_of(hash))?.keys, key, hash)
    }

    /// Replaces what a key holds (an empty value removes the key),
    /// remembering what it had for [`Store::undo`].
    pub fn put(&mut self, key: &[u8], hash: u64, new: V) {
        let g = self.group_of(hash);
        let Some(group) = self.groups.get_mut(g) else {
            return;
        };
        group.encoded = None;
        let keys = Arc::make_mut(&mut group.keys);
        self.after.clear();
        new.deadlines(&mut self.after);
        let old = if new.is_empty() {
            remove(keys, key, hash)
        } else if let Some(s) = keys.find_mut(table_hash(hash), |s| {
            s.hash == hash && same_key(&s.key, key)
        }) {
            Some(std::mem::replace(&mut s.value, new))
        } else {
            insert(keys, key.into(), hash, new);
            None
        };
        self.before.clear();
        if let Some(old) = &old {
            old.deadlines(&mut self.before);
        }
        // The deadlines of a key mostly stay as they were: touch only those
        // that changed.
        if self.before != self.after {
            for &(domain, at) in self.before.iter().filter(|d| !self.after.contains(d)) {
                self.timers.remove(at, domain, key);
            }
            for &(domain, at) in self.after.iter().filter(|d| !self.before.contains(d)) {
                self.timers.insert(at, domain, key);
            }
        }
        let at = self.undo_keys.len();
        self.undo_keys.extend_from_slice(key);
        self.undo.push((hash, at..self.undo_keys.len(), old));
    }

    /// The timers due: event-time ones at or before `watermark`,
    /// processing-time ones at or before `now`, in firing order.
    pub fn due(&self, watermark: i64, now: i64) -> Vec<Due> {
        self.timers.due(watermark, now)
    }

    /// Keys held.
    pub fn keys(&self) -> usize {
        self.groups.iter().map(|g| g.keys.len()).sum()
    }

    /// Every key group's state for a checkpoint: a group unchanged since the
    /// last snapshot keeps its encoding; a changed one is encoded now.
    pub fn snapshot(&mut self) -> Vec<GroupState> {
        let range = self.range.clone();
        range
            .zip(self.groups.iter_mut())
            .map(|(id, g)| {
                let bytes = g
                    .encoded
                    .get_or_insert_with(|| Arc::new(encode(&g.keys)))
                    .clone();
                GroupState {
                    group: id,
                    keys: g.keys.len() as u64,
                    bytes,
                }
            })
            .collect()
    }

    /// Loads the entries of a checkpointed key group, if this store owns it.
    pub fn restore(&mut self, group: &GroupState) -> Result<(), StateError> {
        if !self.range.contains(&group.group) {
            return Ok(());
        }
        let keys: Map<V> = decode(&group.bytes, self.states, group.group)?;
        let mut deadlines = Vec::new();
        for s in keys.iter() {
            deadlines.clear();
            s.value.deadlines(&mut deadlines);
            for &(domain, at) in &deadlines {
                self.timers.insert(at, domain, &s.key);
            }
        }
        let slot = (group.group - self.range.start) as usize;
        self.groups[slot] = Group {
            keys: Arc::new(keys),
            encoded: Some(group.bytes.clone()),
        };
        Ok(())
    }
}

/// A key group's entries, as the checkpoint format documents them:
/// `entry := u32 key-len, key, value` (see each [`Keyed::encode`]), by key.
fn encode<V: Keyed>(keys: &Map<V>) -> Vec<u8> {
    let mut sorted: Vec<(&Box<[u8]>, &V)> = keys.iter().map(|s| (&s.key, &s.value)).collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = Vec::new();
    for (key, v) in sorted {
        put_bytes(&mut out, key);
        v.encode(&mut out);
    }
    out
}

/// Reads a checkpointed key group: every length checked, so a corrupt
/// checkpoint is an error, never a panic.
pub struct Reader<'a> {
    b: &'a [u8],
    at: usize,
    /// The key group, for messages.
    pub group: u32,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `b`, a part of key group `group`.
    #[inline]
    pub fn new(b: &'a [u8], group: u32) -> Self {
        Reader { b, at: 0, group }
    }

    /// Where it is.
    #[inline]
    pub fn at(&self) -> usize {
        self.at
    }

    /// Whether it read everything.
    #[inline]
    pub fn done(&self) -> bool {
        self.at >= self.b.len()
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], StateError> {
        let s = self
            .b
            .get(self.at..self.at.saturating_add(n))
            .ok_or_else(|| StateError(format!("key group {} is truncated", self.group)))?;
        self.at += n;
        Ok(s)
    }

    /// A byte.
    #[inline]
    pub fn u8(&mut self) -> Result<u8, StateError> {
        Ok(self.take(1)?[0])
    }

    /// A little-endian u32.
    #[inline]
    pub fn u32(&mut self) -> Result<u32, StateError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A little-endian i64.
    #[inline]
    pub fn i64(&mut self) -> Result<i64, StateError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_le_bytes(a))
    }

    /// `u32 len, bytes`.
    #[inline]
    pub fn bytes(&mut self) -> Result<&'a [u8], StateError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

fn decode<V: Keyed>(bytes: &[u8], arity: usize, group: u32) -> Result<Map<V>, StateError> {
    let mut r = Reader {
        b: bytes,
        at: 0,
        group,
    };
    let mut keys = Map::new();
    while r.at < bytes.len() {
        let key: Box<[u8]> = r.bytes()?.into();
        let v = V::decode(&mut r, arity)?;
        let hash = xxhash_rust::xxh3::xxh3_64(&key);
        if find(&keys, &key, hash).is_some() {
            return Err(StateError(format!("key group {group} holds a key twice")));
        }
        insert(&mut keys, key, hash, v);
    }
    Ok(keys)
}

impl<V: Keyed> Batched for Store<V> {
    fn commit(&mut self) {
        self.undo.clear();
        self.undo_keys.clear();
    }

    fn undo(&mut self) {
        let mut deadlines = Vec::new();
        while let Some((hash, key, old)) = self.undo.pop() {
            let key: Box<[u8]> = self.undo_keys[key].into();
            let g = self.group_of(hash);
            if let Some(group) = self.groups.get_mut(g) {
                group.encoded = None;
                let keys = Arc::make_mut(&mut group.keys);
                if let Some(now) = remove(keys, &key, hash) {
                    deadlines.clear();
                    now.deadlines(&mut deadlines);
                    for &(domain, at) in &deadlines {
                        self.timers.remove(at, domain, &key);
                    }
                }
                if let Some(old) = old {
                    deadlines.clear();
                    old.deadlines(&mut deadlines);
                    for &(domain, at) in &deadlines {
                        self.timers.insert(at, domain, &key);
                    }
                    insert(keys, key, hash, old);
                }
            }
        }
        self.undo_keys.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key's value in a test: bytes and a timer.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    struct Held(Vec<u8>, Option<i64>);

    impl Keyed for Held {
        fn is_empty(&self) -> bool {
            self.0.is_empty() && self.1.is_none()
        }
        fn deadlines(&self, out: &mut Vec<(u8, i64)>) {
            out.extend(self.1.iter().map(|&t| (0, t)));
        }
        fn encode(&self, out: &mut Vec<u8>) {
            put_bytes(out, &self.0);
            out.extend_from_slice(&self.1.unwrap_or(-1).to_le_bytes());
        }
        fn decode(r: &mut Reader<'_>, _: usize) -> Result<Self, StateError> {
            let bytes = r.bytes()?.to_vec();
            let t = r.i64()?;
            Ok(Held(bytes, (t >= 0).then_some(t)))
        }
    }

    fn held(v: &[u8]) -> Held {
        Held(v.to_vec(), Some(100))
    }

    #[test]
    fn a_batch_is_undone_whole_and_a_snapshot_restores_elsewhere() {
        let mut s: Store<Held> = Store::new(128, 0..128, 1);
        let h = |k: &[u8]| xxhash_rust::xxh3::xxh3_64(k);
        s.put(b"a", h(b"a"), held(b"1"));
        s.commit();
        s.put(b"a", h(b"a"), held(b"2"));
        s.put(b"b", h(b"b"), held(b"3"));
        s.undo();
        assert_eq!(s.get(b"a", h(b"a")), Some(&held(b"1")));
        assert_eq!(s.get(b"b", h(b"b")), None);
        assert_eq!(s.due(100, 0).len(), 1);
        let snap = s.snapshot();
        let mut t: Store<Held> = Store::new(128, 0..64, 1);
        let mut u: Store<Held> = Store::new(128, 64..128, 1);
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
        assert!(Store::<Held>::new(128, 0..128, 1).restore(&bad).is_err());
    }
}
