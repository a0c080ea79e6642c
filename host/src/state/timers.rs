//! The deadlines of a stateful stage's keys (a process stage's timers, a
//! window stage's firing and purging times), in firing order: timestamp,
//! then domain, then key. Removing one looks it up by the borrowed key, so
//! only a deadline that is new allocates.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::BTreeSet;

/// A due deadline: `(timestamp, domain, key)`, the order they fire in;
/// domain 0 is event time, 1 processing time.
pub type Due = (i64, u8, Box<[u8]>);

/// A deadline held: compared as its `(timestamp, domain, key)`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Held(i64, u8, Box<[u8]>);

/// A deadline as a `(timestamp, domain, key)`, held or borrowed.
trait Deadline {
    fn parts(&self) -> (i64, u8, &[u8]);
}

impl Deadline for Held {
    fn parts(&self) -> (i64, u8, &[u8]) {
        (self.0, self.1, &self.2)
    }
}

impl Deadline for (i64, u8, &[u8]) {
    fn parts(&self) -> (i64, u8, &[u8]) {
        *self
    }
}

impl<'a> Borrow<dyn Deadline + 'a> for Held {
    fn borrow(&self) -> &(dyn Deadline + 'a) {
        self
    }
}

impl PartialEq for dyn Deadline + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn Deadline + '_ {}

impl PartialOrd for dyn Deadline + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn Deadline + '_ {
    fn cmp(&self, other: &Self) -> Ordering {
        self.parts().cmp(&other.parts())
    }
}

/// Every deadline of a stage's keys, in firing order.
#[derive(Debug, Default)]
pub struct Timers(BTreeSet<Held>);

impl Timers {
    /// Adds a deadline (kept once).
    pub fn insert(&mut self, at: i64, domain: u8, key: &[u8]) {
        let probe: &dyn Deadline = &(at, domain, key);
        if !self.0.contains(probe) {
            self.0.insert(Held(at, domain, key.into()));
        }
    }

    /// Removes a deadline, if it is there.
    pub fn remove(&mut self, at: i64, domain: u8, key: &[u8]) {
        let probe: &dyn Deadline = &(at, domain, key);
        self.0.remove(probe);
    }

    /// The deadlines due: event-time ones at or before `watermark`,
    /// processing-time ones at or before `now`, in firing order.
    pub fn due(&self, watermark: i64, now: i64) -> Vec<Due> {
        let last = watermark.max(now);
        self.0
            .iter()
            .take_while(|d| d.0 <= last)
            .filter(|d| match d.1 {
                0 => d.0 <= watermark,
                _ => d.0 <= now,
            })
            .map(|d| (d.0, d.1, d.2.clone()))
            .collect()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_fire_in_time_then_domain_then_key_order_and_remove_by_borrowed_key() {
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
        t.remove(10, 0, b"z");
        t.remove(10, 0, b"nope");
        assert_eq!(t.len(), 3);
    }
}
