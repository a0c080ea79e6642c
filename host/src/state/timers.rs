//! The deadlines of a stateful stage's keys (a process stage's timers, a
//! window stage's firing and purging times), in firing order: timestamp,
//! then domain, then key.
//!
//! Deadlines are kept by `(timestamp, domain)`, each with the set of keys
//! due then: many keys share a deadline (every key's window of a tumbling
//! window ends at the same time), and adding or removing one is a hash
//! lookup, not a walk of an ordered tree comparing keys. The keys of a
//! deadline are sorted only when it is due. Only a deadline that is new
//! allocates.

use std::collections::BTreeMap;

use crate::state::key_groups::same_key;

/// A due deadline: `(timestamp, domain, key)`, the order they fire in;
/// domain 0 is event time, 1 processing time.
pub type Due = (i64, u8, Box<[u8]>);

/// The keys due at one `(timestamp, domain)`: most deadlines of a process
/// stage have one key, those of a window stage many.
#[derive(Debug)]
enum Keys {
    One(Box<[u8]>),
    Many(hashbrown::HashSet<Box<[u8]>>),
}

impl Keys {
    /// Adds `key`; whether it is new.
    fn insert(&mut self, key: &[u8]) -> bool {
        match self {
            Keys::One(k) if same_key(k, key) => false,
            Keys::One(k) => {
                let mut set = hashbrown::HashSet::with_capacity(2);
                set.insert(std::mem::take(k));
                set.insert(key.into());
                *self = Keys::Many(set);
                true
            }
            Keys::Many(set) if set.contains(key) => false,
            Keys::Many(set) => set.insert(key.into()),
        }
    }

    /// Removes `key`; whether it was there, and whether none are left.
    fn remove(&mut self, key: &[u8]) -> (bool, bool) {
        match self {
            Keys::One(k) => {
                let hit = same_key(k, key);
                (hit, hit)
            }
            Keys::Many(set) => {
                let hit = set.remove(key);
                (hit, set.is_empty())
            }
        }
    }

    /// The keys, sorted.
    fn sorted(&self) -> Vec<&[u8]> {
        match self {
            Keys::One(k) => vec![&k[..]],
            Keys::Many(set) => {
                // By the first 8 bytes as a number first: the same order,
                // without a call to compare bytes for most pairs.
                let mut keys: Vec<(u64, &[u8])> = set.iter().map(|k| (prefix(k), &k[..])).collect();
                keys.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
                keys.into_iter().map(|(_, k)| k).collect()
            }
        }
    }
}

/// The first 8 bytes of `key` (zeros past its end), big-endian: when two
/// keys' prefixes differ, they are in the keys' order.
fn prefix(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = key.len().min(8);
    b[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(b)
}

/// Every deadline of a stage's keys, in firing order.
#[derive(Debug, Default)]
pub struct Timers {
    at: BTreeMap<(i64, u8), Keys>,
    len: usize,
}

impl Timers {
    /// Adds a deadline (kept once).
    pub fn insert(&mut self, at: i64, domain: u8, key: &[u8]) {
        match self.at.entry((at, domain)) {
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(Keys::One(key.into()));
                self.len += 1;
            }
            std::collections::btree_map::Entry::Occupied(mut e) => {
                if e.get_mut().insert(key) {
                    self.len += 1;
                }
            }
        }
    }

    /// Removes a deadline, if it is there.
    pub fn remove(&mut self, at: i64, domain: u8, key: &[u8]) {
        let Some(keys) = self.at.get_mut(&(at, domain)) else {
            return;
        };
        let (hit, emptied) = keys.remove(key);
        if hit {
            self.len -= 1;
        }
        if emptied {
            self.at.remove(&(at, domain));
        }
    }

    /// The deadlines due: event-time ones at or before `watermark`,
    /// processing-time ones at or before `now`, in firing order.
    pub fn due(&self, watermark: i64, now: i64) -> Vec<Due> {
        let last = watermark.max(now);
        let mut due = Vec::new();
        for (&(at, domain), keys) in self.at.range(..=(last, u8::MAX)) {
            let reached = match domain {
                0 => at <= watermark,
                _ => at <= now,
            };
            if reached {
                due.extend(keys.sorted().into_iter().map(|k| (at, domain, k.into())));
            }
        }
        due
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_fire_in_time_then_domain_then_key_order_and_are_removed_by_key() {
        let mut t = Timers::default();
        t.insert(20, 0, b"b");
        t.insert(10, 1, b"a");
        t.insert(10, 0, b"z");
        t.insert(10, 0, b"c");
        t.insert(10, 0, b"c");
        assert_eq!(t.len(), 4);
        let due: Vec<(i64, u8, Vec<u8>)> = t
            .due(20, 10)
            .into_iter()
            .map(|(a, d, k)| (a, d, k.to_vec()))
            .collect();
        let want: Vec<(i64, u8, Vec<u8>)> = vec![
            (10, 0, b"c".to_vec()),
            (10, 0, b"z".to_vec()),
            (10, 1, b"a".to_vec()),
            (20, 0, b"b".to_vec()),
        ];
        assert_eq!(due, want);
        assert_eq!(
            t.due(15, 5).len(),
            2,
            "processing time 5 holds back the one at 10"
        );
        for k in [
            &b"ab\0"[..],
            b"ab",
            b"a",
            b"abcdefghij",
            b"abcdefghi",
            b"abcdefgh",
        ] {
            t.insert(30, 0, k);
        }
        let keys: Vec<Vec<u8>> = t
            .due(30, 0)
            .into_iter()
            .filter(|d| d.0 == 30)
            .map(|d| d.2.to_vec())
            .collect();
        let want: Vec<&[u8]> = vec![
            b"a",
            b"ab",
            b"ab\0",
            b"abcdefgh",
            b"abcdefghi",
            b"abcdefghij",
        ];
        assert_eq!(keys, want);
        for k in want {
            t.remove(30, 0, k);
        }
        t.remove(10, 0, b"z");
        t.remove(10, 0, b"nope");
        t.remove(11, 0, b"c");
        assert_eq!(t.len(), 3);
        t.remove(10, 0, b"c");
        t.remove(10, 1, b"a");
        t.remove(20, 0, b"b");
        assert!(t.is_empty());
        assert!(t.due(i64::MAX, i64::MAX).is_empty());
    }
}
