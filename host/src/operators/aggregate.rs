//! The keyed aggregation, Flink's `keyBy(..).sum(1)`: each subtask folds
//! the rows routed to it, in input order, into its key groups' state and
//! formats each key's updated row for the sink. The running aggregates
//! (sum, count, min, max) are [`Fold`]s over the state backend.

use std::time::Instant;

use crate::checkpoint::format::GroupState;
use crate::config::description::{AggregateKind, Aggregation};
use crate::dataflow::operator::{Input, Lines, Operator, OperatorSnapshot, Output};
use crate::encoding::{self, Num};
use crate::fault::{Fault, TaskFailure};
use crate::operators::flat_map::{StageContext, failure_at};
use crate::state::key_groups::key_group_range;
use crate::state::keyed::{CopyOnWrite, Fold, KeyedState, StateError};

/// Rows whose entries are located before the first of them is applied.
const LOCATE_AHEAD: usize = 16;

/// One subtask's aggregator: the state of its key groups.
pub struct Aggregate {
    cx: StageContext,
    state: KeyedState<Aggregation>,
    /// Key groups copied since the last snapshot, because it held them.
    copies: CopyOnWrite,
}

impl Aggregate {
    /// Empty state for the key groups subtask `cx.subtask` of `parallelism`
    /// owns.
    pub fn new(cx: StageContext, aggregation: Aggregation, parallelism: u32) -> Self {
        let range = key_group_range(cx.subtask, parallelism, cx.max_parallelism);
        let state = KeyedState::new(aggregation, cx.max_parallelism, range);
        Aggregate {
            cx,
            state,
            copies: CopyOnWrite::default(),
        }
    }

    /// Adds the copies the state made since the last call to the tally.
    fn take_copied(&mut self) {
        let copied = self.state.take_copied();
        self.copies.add(copied);
    }
}

impl Operator for Aggregate {
    fn process(&mut self, input: Input<'_>) -> Result<Output, TaskFailure> {
        let Input::Rows { batch, parts, .. } = input else {
            return Err(failure_at(
                self.cx.subtask,
                input.batch(),
                None,
                "the aggregation was given records, not rows".into(),
                Fault::Host,
            ));
        };
        let me = self.cx.subtask as usize;
        // One line per row: room for all of them up front, so the buffers
        // do not grow (and copy) a dozen times a batch.
        let rows: usize = parts
            .iter()
            .filter_map(|p| p.routes.get(me))
            .map(Vec::len)
            .sum();
        let mut lines = Lines {
            bytes: Vec::with_capacity(if self.cx.discard { 0 } else { rows * 16 }),
            marks: Vec::with_capacity(rows),
            keys: Vec::new(),
            key_ends: Vec::with_capacity(if self.cx.keys { rows } else { 0 }),
        };
        let mut failed = None;
        let mut taken = 0;
        'all: for part in parts {
            let Some(routes) = part.routes.get(me) else {
                continue;
            };
            // A few rows' entries are located (and asked of the memory)
            // before the first of them is applied, so that their cache
            // misses overlap instead of coming one after the other.
            for rows in routes.chunks(LOCATE_AHEAD) {
                let mut hints = [None; LOCATE_AHEAD];
                for (hint, r) in hints.iter_mut().zip(rows) {
                    *hint = self.state.locate(r.hash);
                }
                for (r, hint) in rows.iter().zip(hints) {
                    let key = &part.rows[r.key.0 as usize..r.key.1 as usize];
                    let row = &part.rows[r.row.0 as usize..r.row.1 as usize];
                    let out = (!self.cx.discard).then_some(&mut lines.bytes);
                    if let Err(e) = self.state.apply(r.hash, key, row, out, hint) {
                        failed = Some((r.record as usize, e.0));
                        break 'all;
                    }
                    lines.push_mark(r.record, r.ordinal);
                    if self.cx.keys {
                        lines.push_key(key);
                    }
                    taken += 1;
                }
            }
        }
        self.take_copied();
        match failed {
            Some((record, cause)) => Err(failure_at(
                self.cx.subtask,
                batch,
                Some(record),
                cause,
                Fault::Job,
            )),
            None => Ok(Output {
                lines,
                taken,
                ..Output::default()
            }),
        }
    }

    fn stateful(&self) -> bool {
        true
    }

    fn snapshot(&mut self) -> OperatorSnapshot {
        let started = Instant::now();
        self.take_copied();
        let groups = self.state.snapshot();
        OperatorSnapshot {
            groups,
            copies: std::mem::take(&mut self.copies),
            paused: started.elapsed(),
            stage: 0,
        }
    }

    fn restore(&mut self, groups: &[GroupState]) -> Result<(), StateError> {
        for group in groups {
            self.state.restore(group)?;
        }
        Ok(())
    }

    fn has_idle_work(&self) -> bool {
        self.state.copying_ahead()
    }

    fn idle(&mut self) {
        self.state.copy_ahead();
    }

    fn recycle(&mut self, arena: Vec<u8>) {
        self.state.give_spare(arena);
    }
}

impl Fold for Aggregation {
    #[inline]
    fn field(&self, row: &[u8]) -> Result<(usize, usize), StateError> {
        field(row, *self)
    }

    #[inline]
    fn first<'a>(
        &self,
        row: &'a [u8],
        (vs, ve): (usize, usize),
        one: &'a mut [u8; 9],
    ) -> Result<[&'a [u8]; 3], StateError> {
        Ok(match self.kind {
            AggregateKind::Count => {
                encoding::write_num(Num::Int(1), one);
                [&row[..vs], &one[..], &row[ve..]]
            }
            AggregateKind::Sum => {
                if encoding::read_num(&row[vs..ve]).is_none() {
                    return Err(not_numeric(*self, &row[vs..ve]));
                }
                [row, &[], &[]]
            }
            AggregateKind::Min | AggregateKind::Max => [row, &[], &[]],
        })
    }

    #[inline]
    fn fold(&self, current: &mut [u8], incoming: &[u8]) -> Result<bool, StateError> {
        fold(*self, current, incoming)
    }
}

#[inline]
fn field(row: &[u8], agg: Aggregation) -> Result<(usize, usize), StateError> {
    encoding::field_span(row, agg.field).ok_or_else(|| {
        let mut shown = Vec::new();
        encoding::format_row(row, &mut shown);
        StateError(format!(
            "{agg} needs field {} but the row {} has only {} field(s)",
            agg.field,
            String::from_utf8_lossy(&shown).trim_end(),
            u32::from_le_bytes([row[0], row[1], row[2], row[3]])
        ))
    })
}

#[cold]
fn not_numeric(agg: Aggregation, value: &[u8]) -> StateError {
    StateError(format!(
        "{agg} needs a number in field {}, but got {} {}",
        agg.field,
        encoding::type_name(value),
        encoding::display_value(value)
    ))
}

/// Folds `incoming` into the stored field `current`; `true` when the
/// field must become `incoming`, which has another length.
#[inline]
fn fold(agg: Aggregation, current: &mut [u8], incoming: &[u8]) -> Result<bool, StateError> {
    match agg.kind {
        AggregateKind::Count => {
            let Some(Num::Int(n)) = encoding::read_num(current) else {
                return Err(StateError("count state is corrupt".into()));
            };
            encoding::write_num(Num::Int(n.wrapping_add(1)), current);
        }
        AggregateKind::Sum => {
            let a = encoding::read_num(current).ok_or_else(|| not_numeric(agg, current))?;
            let b = encoding::read_num(incoming).ok_or_else(|| not_numeric(agg, incoming))?;
            let sum = match (a, b) {
                (Num::Int(x), Num::Int(y)) => Num::Int(x.wrapping_add(y)),
                (Num::Int(x), Num::Float(y)) => Num::Float(x as f64 + y),
                (Num::Float(x), Num::Int(y)) => Num::Float(x + y as f64),
                (Num::Float(x), Num::Float(y)) => Num::Float(x + y),
            };
            encoding::write_num(sum, current);
        }
        AggregateKind::Min | AggregateKind::Max => {
            let ord = compare(current, incoming).ok_or_else(|| {
                StateError(format!(
                    "{agg} cannot compare {} {} with {} {}",
                    encoding::type_name(current),
                    encoding::display_value(current),
                    encoding::type_name(incoming),
                    encoding::display_value(incoming)
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

#[inline]
fn compare(a: &[u8], b: &[u8]) -> Option<std::cmp::Ordering> {
    if let (Some(x), Some(y)) = (encoding::read_num(a), encoding::read_num(b)) {
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
        (Some(&encoding::TEXT), Some(&encoding::TEXT))
        | (Some(&encoding::BYTES), Some(&encoding::BYTES)) => Some(a[5..].cmp(&b[5..])),
        (Some(&encoding::BOOL), Some(&encoding::BOOL)) => Some(a[1].cmp(&b[1])),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::keyed::KeyedState;
    use std::sync::Arc;

    /// The key `word` and the row `(word, value)`, `value` encoded.
    fn keyed_row(word: &str, value: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let mut key = vec![encoding::TEXT];
        key.extend_from_slice(&(word.len() as u32).to_le_bytes());
        key.extend_from_slice(word.as_bytes());
        let mut r = 2u32.to_le_bytes().to_vec();
        r.extend_from_slice(&key);
        r.extend_from_slice(value);
        (key, r)
    }

    fn encoded(word: &str, n: i64) -> (Vec<u8>, Vec<u8>) {
        let mut value = vec![encoding::INT];
        value.extend_from_slice(&n.to_le_bytes());
        keyed_row(word, &value)
    }

    fn run(kind: AggregateKind, input: &[(&str, i64)]) -> String {
        let agg = Aggregation { kind, field: 1 };
        let mut state = KeyedState::new(agg, 128, 0..128);
        let mut out = Vec::new();
        for (w, n) in input {
            let (key, r) = encoded(w, *n);
            let hash = xxhash_rust::xxh3::xxh3_64(&key);
            state
                .apply(hash, &key, &r, Some(&mut out), None)
                .expect("folds");
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
            out.push(encoding::TEXT);
            out.extend_from_slice(&(t.len() as u32).to_le_bytes());
            out.extend_from_slice(t.as_bytes());
        };
        let mut key = Vec::new();
        put_text(&mut key, "k");
        let mut r = 3u32.to_le_bytes().to_vec();
        r.extend_from_slice(&key);
        put_text(&mut r, text);
        r.push(encoding::INT);
        r.extend_from_slice(&7i64.to_le_bytes());
        (key, r)
    }

    #[test]
    fn a_field_that_changes_length_survives_snapshot_and_restore() {
        let agg = Aggregation {
            kind: AggregateKind::Max,
            field: 1,
        };
        let apply = |state: &mut KeyedState<Aggregation>, text: &str| {
            let (key, r) = text_row(text);
            let hash = xxhash_rust::xxh3::xxh3_64(&key);
            let mut out = Vec::new();
            state
                .apply(hash, &key, &r, Some(&mut out), None)
                .expect("folds");
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
        let (_, bytes) = twice
            .group_sizes()
            .into_iter()
            .find(|(keys, _)| *keys == 1)
            .expect("a key");
        assert!(bytes < 2 * 4096 + 400, "{bytes} bytes");
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
            state
                .apply(hash, &key, &r, Some(&mut out), None)
                .expect("folds");
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
        let feed = |state: &mut KeyedState<Aggregation>, words: &[String]| {
            for w in words {
                let (key, r) = encoded(w, 0);
                let hash = xxhash_rust::xxh3::xxh3_64(&key);
                state.apply(hash, &key, &r, None, None).expect("folds");
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
        state.apply(hash, &key, &r, None, None).expect("folds");
        let mut groups = state.snapshot();
        let g = groups.iter_mut().find(|g| g.keys == 1).expect("one key");
        let mut longer = g.bytes.to_vec();
        longer.push(0);
        g.bytes = Arc::new(longer);
        let mut restored = KeyedState::new(agg, 128, 0..128);
        let err = restored.restore(g).expect_err("trailing byte");
        assert!(err.0.ends_with("has 1 bytes after its last key"), "{err}");
        let mut shorter = g.bytes.to_vec();
        shorter.truncate(shorter.len() - 3);
        g.bytes = Arc::new(shorter);
        let err = restored.restore(g).expect_err("truncated");
        assert!(err.0.ends_with("is truncated"), "{err}");
    }

    #[test]
    fn a_hint_from_before_a_move_or_for_another_key_is_not_trusted() {
        let agg = Aggregation {
            kind: AggregateKind::Max,
            field: 1,
        };
        let mut state = KeyedState::new(agg, 128, 0..128);
        let mut out = Vec::new();
        // Every key forced onto one hash: a hint by hash names `a`.
        let mut apply = |state: &mut KeyedState<Aggregation>, word: &str, text: &str, hint| {
            let mut value = vec![encoding::TEXT];
            value.extend_from_slice(&(text.len() as u32).to_le_bytes());
            value.extend_from_slice(text.as_bytes());
            let (key, row) = keyed_row(word, &value);
            state
                .apply(7, &key, &row, Some(&mut out), hint)
                .expect("folds");
        };
        apply(&mut state, "a", "m", None);
        apply(&mut state, "b", "m", None);
        let hint = state.locate(7);
        assert!(hint.is_some());
        apply(&mut state, "b", "n", hint);
        // A longer maximum moves `a`'s entry to the end of its arena: the
        // hint taken before names the superseded entry.
        let hint = state.locate(7);
        apply(&mut state, "a", "zzzz", hint);
        apply(&mut state, "a", "zzzzz", hint);
        apply(&mut state, "a", "b", hint);
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "(a,m)\n(b,m)\n(b,n)\n(a,zzzz)\n(a,zzzzz)\n(a,zzzzz)\n"
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
            .apply(1, &key, &r, Some(&mut Vec::new()), None)
            .expect_err("text is not a number");
        assert_eq!(err.0, "sum:0 needs a number in field 0, but got text \"a\"");
    }
}
