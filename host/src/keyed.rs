//! Keyed state: partitioning keys into key groups, key groups into
//! subtasks, and the running aggregation of each key.
//!
//! Keys and rows stay in the batch encoding (see `row.rs`); a key's hash is
//! computed once per row and picks both its key group and its slot in the
//! group's table. State lives here, in the host, never in guest memory. This
//! module does not know about guests, sources or checkpoints' files.

use std::ops::Range;
use std::sync::Arc;

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

/// One key's state: its key, and the first row seen for it with the
/// aggregated field replaced by the running aggregate, kept as the entry's
/// checkpoint encoding (`u32 key-len, key, u32 row-len, row`) in one
/// allocation: a lookup touches one block, and a checkpoint copies it as is.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Hash of the encoded key.
    pub hash: u64,
    /// `u32 key-len, key, u32 row-len, row`.
    data: Vec<u8>,
    /// Where the aggregated field sits in `data`.
    span: (u32, u32),
}

impl Entry {
    fn new(hash: u64, key: &[u8], row: &[u8], agg: Aggregation) -> Result<Self, AggregateError> {
        let mut data = Vec::with_capacity(8 + key.len() + row.len());
        data.extend_from_slice(&(key.len() as u32).to_le_bytes());
        data.extend_from_slice(key);
        data.extend_from_slice(&(row.len() as u32).to_le_bytes());
        data.extend_from_slice(row);
        Self::from_encoded(hash, data, agg)
    }

    /// An entry from its encoding, as a checkpoint holds it.
    fn from_encoded(hash: u64, data: Vec<u8>, agg: Aggregation) -> Result<Self, AggregateError> {
        let mut entry = Entry {
            hash,
            data,
            span: (0, 0),
        };
        entry.find_field(agg)?;
        Ok(entry)
    }

    fn key_len(&self) -> usize {
        u32::from_le_bytes([self.data[0], self.data[1], self.data[2], self.data[3]]) as usize
    }

    /// The encoded key.
    pub fn key(&self) -> &[u8] {
        &self.data[4..4 + self.key_len()]
    }

    /// Where the row starts in `data`.
    fn row_start(&self) -> usize {
        8 + self.key_len()
    }

    /// The encoded row, as printed on every update.
    pub fn row(&self) -> &[u8] {
        &self.data[self.row_start()..]
    }

    /// Finds the aggregated field in the row again.
    fn find_field(&mut self, agg: Aggregation) -> Result<(), AggregateError> {
        let at = self.row_start();
        let (s, e) = field(&self.data[at..], agg)?;
        self.span = ((at + s) as u32, (at + e) as u32);
        Ok(())
    }
}

/// A row the aggregation cannot fold: the job's logic is at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateError(pub String);

/// The state of the key groups one subtask owns.
pub struct KeyedState {
    aggregation: Aggregation,
    max_parallelism: u32,
    range: Range<u32>,
    groups: Vec<HashTable<Entry>>,
    /// Each group's encoding at the last snapshot, while the group has not
    /// changed since: a checkpoint encodes only the groups that changed.
    encoded: Vec<Option<(u64, Arc<[u8]>)>>,
}

impl KeyedState {
    /// Empty state for key groups `range`.
    pub fn new(aggregation: Aggregation, max_parallelism: u32, range: Range<u32>) -> Self {
        let groups = range.clone().map(|_| HashTable::new()).collect();
        let encoded = range.clone().map(|_| None).collect();
        KeyedState {
            aggregation,
            max_parallelism,
            range,
            groups,
            encoded,
        }
    }

    /// Every key group's entries for a checkpoint; only the groups that
    /// changed since the last snapshot are encoded again.
    pub fn snapshot(&mut self) -> Vec<GroupState> {
        self.range
            .clone()
            .zip(&self.groups)
            .zip(&mut self.encoded)
            .map(|((group, table), encoded)| {
                let (keys, bytes) = encoded.get_or_insert_with(|| {
                    let size = table.iter().map(|e| e.data.len()).sum();
                    let mut bytes = Vec::with_capacity(size);
                    for e in table.iter() {
                        bytes.extend_from_slice(&e.data);
                    }
                    (table.len() as u64, bytes.into())
                });
                GroupState {
                    group,
                    keys: *keys,
                    bytes: bytes.clone(),
                }
            })
            .collect()
    }

    /// Loads the entries of a checkpointed key group, if this state owns it.
    pub fn restore(&mut self, group: &GroupState) -> Result<(), String> {
        if !self.range.contains(&group.group) {
            return Ok(());
        }
        let b = &group.bytes;
        let mut at = 0usize;
        let truncated = || format!("key group {} is truncated", group.group);
        let take = |at: &mut usize, n: usize| -> Result<&[u8], String> {
            let s = b.get(*at..*at + n).ok_or_else(truncated)?;
            *at += n;
            Ok(s)
        };
        let agg = self.aggregation;
        let index = (group.group - self.range.start) as usize;
        for _ in 0..group.keys {
            let start = at;
            let n = take(&mut at, 4)?;
            let n = u32::from_le_bytes([n[0], n[1], n[2], n[3]]) as usize;
            let key = take(&mut at, n)?;
            let hash = xxhash_rust::xxh3::xxh3_64(key);
            let n = take(&mut at, 4)?;
            let n = u32::from_le_bytes([n[0], n[1], n[2], n[3]]) as usize;
            take(&mut at, n)?;
            if key_group(hash, self.max_parallelism) != group.group {
                return Err(format!(
                    "a key in key group {} hashes to another group; was the checkpoint taken with another --max-parallelism?",
                    group.group
                ));
            }
            let entry = Entry::from_encoded(hash, b[start..at].to_vec(), agg).map_err(|e| e.0)?;
            self.groups[index].insert_unique(slot(hash), entry, |e| slot(e.hash));
        }
        // The group as restored is the group as encoded.
        self.encoded[index] = Some((group.keys, group.bytes.clone()));
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
        let index = (group - self.range.start) as usize;
        self.encoded[index] = None;
        let table = &mut self.groups[index];
        let (vs, ve) = field(row, agg)?;
        let incoming = &row[vs..ve];
        match table.find_mut(slot(hash), |e| e.hash == hash && e.key() == key) {
            Some(entry) => {
                let span = (entry.span.0 as usize, entry.span.1 as usize);
                if fold(agg, &mut entry.data, span, incoming)? {
                    // The row changed length: its length and field moved.
                    let at = entry.row_start();
                    let len = (entry.data.len() - at) as u32;
                    entry.data[at - 4..at].copy_from_slice(&len.to_le_bytes());
                    entry.find_field(agg)?;
                }
                if let Some(out) = out {
                    row::format_row(entry.row(), out);
                }
            }
            None => {
                let counted;
                let stored: &[u8] = match agg.kind {
                    AggregateKind::Count => {
                        let mut one = [0u8; 9];
                        row::write_num(Num::Int(1), &mut one);
                        let mut r = row.to_vec();
                        r.splice(vs..ve, one);
                        counted = r;
                        &counted
                    }
                    AggregateKind::Sum => {
                        if row::read_num(incoming).is_none() {
                            return Err(not_numeric(agg, incoming));
                        }
                        row
                    }
                    AggregateKind::Min | AggregateKind::Max => row,
                };
                if let Some(out) = out {
                    row::format_row(stored, out);
                }
                let entry = Entry::new(hash, key, stored, agg)?;
                table.insert_unique(slot(hash), entry, |e| slot(e.hash));
            }
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

/// Folds `incoming` into the field at `span` of the stored row; `true`
/// when the field changed size (so its span must be found again).
fn fold(
    agg: Aggregation,
    stored: &mut Vec<u8>,
    span: (usize, usize),
    incoming: &[u8],
) -> Result<bool, AggregateError> {
    let current = &stored[span.0..span.1];
    match agg.kind {
        AggregateKind::Count => {
            let Some(Num::Int(n)) = row::read_num(current) else {
                return Err(AggregateError("count state is corrupt".into()));
            };
            row::write_num(Num::Int(n.wrapping_add(1)), &mut stored[span.0..span.1]);
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
            row::write_num(sum, &mut stored[span.0..span.1]);
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
                stored.splice(span.0..span.1, incoming.iter().copied());
                return Ok(incoming.len() != span.1 - span.0);
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
        // The restored groups are not encoded again until they change.
        let again = restored.snapshot();
        assert_eq!(
            again.iter().map(|g| g.keys).sum::<u64>(),
            groups.iter().map(|g| g.keys).sum::<u64>()
        );
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
