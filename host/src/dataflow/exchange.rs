//! Exchanges between stages: rows go to the subtask that owns their key's
//! key group, and the lines of every subtask merge back into one block in
//! (record, row) order, so the output is the same at any parallelism.

use crate::dataflow::operator::Lines;
use crate::state::key_groups::{key_group, subtask_of};

/// The subtask of `parallelism` that owns the key whose hash is `hash`.
#[inline]
pub fn owner(hash: u64, parallelism: u32, max_parallelism: u32) -> u32 {
    subtask_of(
        key_group(hash, max_parallelism),
        parallelism,
        max_parallelism,
    )
}

/// A block of output lines for the sink.
#[derive(Debug, Default)]
pub struct Block {
    /// The formatted lines (empty for a discard sink).
    pub bytes: Vec<u8>,
    /// How many lines.
    pub lines: u64,
    /// Each line's key, back to back, for a sink that keys its output.
    pub keys: Vec<u8>,
    /// The end of each line's key in `keys` (empty unless keyed).
    pub key_ends: Vec<u32>,
    /// The order the block's records were read in, when the source's
    /// order depends on timing (Kafka): the sink records it.
    pub runs: Option<std::sync::Arc<crate::connector::position::Runs>>,
}

impl Block {
    /// Line `i`'s key (empty when the block is not keyed).
    pub fn key(&self, i: usize) -> &[u8] {
        let start = match i {
            0 => 0,
            _ => self.key_ends.get(i - 1).copied().unwrap_or(0) as usize,
        };
        let end = self.key_ends.get(i).copied().unwrap_or(0) as usize;
        self.keys.get(start..end).unwrap_or_default()
    }
}

/// Merges per-subtask outputs into one block in (record, row) order.
pub fn merge(parts: Vec<Lines>) -> Block {
    let lines = parts.iter().map(|p| p.marks.len() as u64).sum();
    let keyed = parts.iter().any(|p| !p.key_ends.is_empty());
    // Nothing to put in order (a discard sink formats no lines).
    let keep = |p: &Lines| !p.bytes.is_empty() || !p.key_ends.is_empty();
    let mut parts: Vec<Lines> = parts.into_iter().filter(keep).collect();
    if parts.len() <= 1 {
        let one = parts.pop().unwrap_or_default();
        return Block {
            bytes: one.bytes,
            lines,
            keys: one.keys,
            key_ends: one.key_ends,
            runs: None,
        };
    }
    let pieces = pieces(&parts);
    let mut block = Block {
        bytes: Vec::with_capacity(parts.iter().map(|p| p.bytes.len()).sum()),
        lines,
        ..Block::default()
    };
    for &(i, first, last) in &pieces {
        let p = &parts[i];
        let end_of = |line: usize| p.marks[line].1 as usize;
        let start = if first == 0 { 0 } else { end_of(first - 1) };
        block.bytes.extend_from_slice(&p.bytes[start..end_of(last)]);
        if keyed {
            let key_end = |line: usize| p.key_ends.get(line).copied().unwrap_or(0) as usize;
            let from = if first == 0 { 0 } else { key_end(first - 1) };
            let base = block.keys.len() - from;
            block.keys.extend_from_slice(&p.keys[from..key_end(last)]);
            block
                .key_ends
                .extend((first..=last).map(|l| (base + key_end(l)) as u32));
        }
    }
    block
}

/// The pieces of the parts, in (record, row) order: `(part, first line,
/// last line)`, each piece's lines in one run of its part.
fn pieces(parts: &[Lines]) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    let mut next = vec![0usize; parts.len()];
    loop {
        // The part with the first line, and the first line of the others:
        // its lines before that one go out in one piece.
        let mut best: Option<(usize, u64)> = None;
        let mut bound = u64::MAX;
        for (i, p) in parts.iter().enumerate() {
            let Some(&(order, _)) = p.marks.get(next[i]) else {
                continue;
            };
            match best {
                Some((_, b)) if order > b => bound = bound.min(order),
                Some((_, b)) => {
                    bound = bound.min(b);
                    best = Some((i, order));
                }
                None => best = Some((i, order)),
            }
        }
        let Some((i, _)) = best else { break };
        let p = &parts[i];
        let first = next[i];
        let mut last = first;
        while p
            .marks
            .get(last + 1)
            .is_some_and(|&(order, _)| order < bound)
        {
            last += 1;
        }
        out.push((i, first, last));
        next[i] = last + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines `text` at orders `orders` (record, row), as one part.
    fn part(lines: &[(u32, u32, &str)]) -> Lines {
        let mut e = Lines::default();
        for &(record, row, text) in lines {
            e.bytes.extend_from_slice(text.as_bytes());
            e.bytes.push(b'\n');
            e.push_mark(record, row);
        }
        e
    }

    #[test]
    fn merge_keeps_record_and_row_order_across_parts() {
        let merged = merge(vec![
            part(&[(0, 0, "a"), (0, 1, "b"), (0, 2, "c"), (3, 0, "h")]),
            part(&[]),
            part(&[(1, 0, "d"), (2, 0, "f"), (4, 0, "i"), (4, 1, "j")]),
            part(&[(1, 1, "e"), (2, 1, "g"), (5, 0, "k")]),
        ]);
        assert_eq!(merged.lines, 11);
        assert_eq!(
            String::from_utf8_lossy(&merged.bytes),
            "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\nk\n"
        );
        let one = merge(vec![part(&[(0, 0, "x"), (1, 0, "y")])]);
        assert_eq!(one.bytes, b"x\ny\n");
        assert!(merge(vec![part(&[]), part(&[])]).bytes.is_empty());
    }
}

/// A row routed to a subtask, with the order it keeps in the stream.
#[derive(Debug, Clone, Copy)]
pub struct Routed<'a> {
    /// `record << 32 | ordinal`: the row's place in the stream.
    pub order: u64,
    /// The row.
    pub row: &'a [u8],
    /// Its key (empty when unkeyed).
    pub key: &'a [u8],
    /// The key's hash.
    pub hash: u64,
    /// Its timestamp (0.2.0 rows carry one right before the row).
    pub timestamp: i64,
}

/// The rows every upstream subtask routed to subtask `me`, in stream order.
pub fn routed_to(parts: &[crate::dataflow::operator::Output], me: usize) -> Vec<Routed<'_>> {
    let mut rows = Vec::new();
    for part in parts {
        let Some(routes) = part.routes.get(me) else {
            continue;
        };
        for r in routes {
            let (rs, re) = (r.row.0 as usize, r.row.1 as usize);
            let timestamp = rs
                .checked_sub(8)
                .and_then(|t| part.rows.get(t..rs))
                .and_then(|b| b.try_into().ok())
                .map_or(0, i64::from_le_bytes);
            rows.push(Routed {
                order: (u64::from(r.record) << 32) | u64::from(r.ordinal),
                row: &part.rows[rs..re],
                key: &part.rows[r.key.0 as usize..r.key.1 as usize],
                hash: r.hash,
                timestamp,
            });
        }
    }
    // Stable: rows of one record keep the order they were emitted in.
    rows.sort_by_key(|r| r.order);
    rows
}

/// The place in the stream of row `j` that the row at `order` gave rise to
/// in a later stage: after every row the rows before it gave rise to.
#[inline]
pub fn then(order: u64, j: u32) -> u64 {
    let ordinal = (order as u32)
        .saturating_mul(1024)
        .saturating_add(j.min(1023));
    (order & !0xffff_ffff) | u64::from(ordinal)
}
