//! A process function's view of its key: the key, its declared states as
//! they stand (with this call's changes), its timers, and the clocks.

use crate::collector::IntoRow;
use crate::encoding::{self, Reader};
use crate::pipeline::Time;
use crate::value::{IntoValue, Row, Value};

/// A state's bytes while a call runs: as shipped in, or changed (its new
/// bytes at `start..end` of the call's written buffer; none: cleared).
#[derive(Clone, Copy)]
pub(crate) enum Slot<'a> {
    Shipped(Option<&'a [u8]>),
    Changed(Option<(u32, u32)>),
}

impl<'a> Slot<'a> {
    /// The state's bytes; `written` is the call's buffer of new bytes.
    pub(crate) fn bytes<'s>(&self, written: &'s [u8]) -> Option<&'s [u8]>
    where
        'a: 's,
    {
        match *self {
            Slot::Shipped(b) => b,
            Slot::Changed(r) => r.map(|(start, end)| &written[start as usize..end as usize]),
        }
    }
}

/// The new bytes of the states a call changed, back to back, with how many
/// of them are still some state's (the rest were overwritten since).
#[derive(Default)]
pub(crate) struct Written {
    pub(crate) buf: Vec<u8>,
    live: usize,
}

impl Written {
    /// Forgets the bytes of a state about to change: cut off when they are
    /// the last ones written.
    fn release(&mut self, old: Slot<'_>) {
        if let Slot::Changed(Some((start, end))) = old {
            self.live -= (end - start) as usize;
            if end as usize == self.buf.len() {
                self.buf.truncate(start as usize);
            }
        }
    }

    /// Copies the bytes still in use to the front, when the overwritten
    /// ones outweigh them (a state rewritten many times in one call).
    fn compact(&mut self, slots: &mut [Slot<'_>]) {
        let dead = self.buf.len() - self.live;
        if dead <= self.live.max(64 * 1024) {
            return;
        }
        let mut buf = Vec::with_capacity(self.live * 2);
        for slot in slots.iter_mut() {
            if let Slot::Changed(Some((start, end))) = slot {
                let at = buf.len() as u32;
                buf.extend_from_slice(&self.buf[*start as usize..*end as usize]);
                *slot = Slot::Changed(Some((at, buf.len() as u32)));
            }
        }
        self.buf = buf;
    }
}

/// A timer change: `(key index, set, domain, at)`.
pub(crate) type TimerChange = (u32, bool, u8, i64);

/// The key a process function runs for, its states and timers.
pub struct Ctx<'c, 'k> {
    pub(crate) key: &'k [u8],
    pub(crate) key_index: u32,
    pub(crate) kinds: &'c [u8],
    /// Every key's states; this key's are `first..first + kinds.len()`.
    pub(crate) slots: &'c mut [Slot<'k>],
    pub(crate) first: usize,
    pub(crate) written: &'c mut Written,
    pub(crate) timers: &'c mut Vec<TimerChange>,
    pub(crate) timestamp: i64,
    pub(crate) watermark: i64,
    pub(crate) processing_time: i64,
}

fn rows_of(bytes: &[u8], map: bool) -> Vec<(Option<Value<'_>>, &Row)> {
    let mut r = Reader::new(bytes);
    let mut out = Vec::new();
    let Ok(n) = r.u32() else {
        return out;
    };
    for _ in 0..n {
        let key = if map {
            match r.value_bytes() {
                Ok(v) => crate::value::decode(v),
                Err(_) => break,
            }
        } else {
            None
        };
        match r.row_bytes() {
            Ok(row) => out.push((key, Row::from_encoded(row))),
            Err(_) => break,
        }
    }
    out
}

fn encode_rows<'r>(items: impl Iterator<Item = (Option<&'r [u8]>, &'r [u8])>, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    encoding::put_len(&mut out, n);
    for (key, row) in items {
        if let Some(k) = key {
            out.extend_from_slice(k);
        }
        out.extend_from_slice(row);
    }
    out
}

impl Ctx<'_, '_> {
    /// The key.
    pub fn key(&self) -> Value<'_> {
        crate::value::decode(self.key).unwrap_or(Value::Null)
    }

    /// The timestamp of the row or timer being processed.
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }

    /// The event-time watermark.
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// The batch's processing time.
    pub fn processing_time(&self) -> i64 {
        self.processing_time
    }

    fn kind(&self, state: usize, want: u8, what: &str) {
        match self.kinds.get(state) {
            Some(k) if *k == want => {}
            Some(_) => panic!("state {state} is not a {what} state"),
            None => panic!("the stage declares no state {state}"),
        }
    }

    /// Sets state `state` to what `put` appends to the written bytes, or
    /// clears it (`None`).
    fn write_with(&mut self, state: usize, put: Option<impl FnOnce(&mut Vec<u8>)>) {
        let i = self.first + state;
        self.written.release(self.slots[i]);
        let range = put.map(|put| {
            let start = self.written.buf.len();
            put(&mut self.written.buf);
            let end = self.written.buf.len();
            self.written.live += end - start;
            (start as u32, end as u32)
        });
        self.slots[i] = Slot::Changed(range);
        self.written.compact(self.slots);
    }

    fn write(&mut self, state: usize, bytes: Option<&[u8]>) {
        self.write_with(
            state,
            bytes.map(|b| move |buf: &mut Vec<u8>| buf.extend_from_slice(b)),
        );
    }

    fn bytes(&self, state: usize) -> Option<&[u8]> {
        self.slots[self.first + state].bytes(&self.written.buf)
    }

    /// A value state's row, if it is set.
    pub fn value(&self, state: usize) -> Option<&Row> {
        self.kind(state, 0, "value");
        let bytes = self.bytes(state)?;
        let mut r = Reader::new(bytes);
        r.row_bytes().ok().map(Row::from_encoded)
    }

    /// Sets a value state.
    pub fn set<R: IntoRow>(&mut self, state: usize, row: R) {
        self.kind(state, 0, "value");
        self.write_with(state, Some(|buf: &mut Vec<u8>| row.encode_row(buf)));
    }

    /// Clears a state of any kind.
    pub fn clear(&mut self, state: usize) {
        if state >= self.kinds.len() {
            panic!("the stage declares no state {state}");
        }
        self.write(state, None);
    }

    /// A list state's rows (empty when it is not set).
    pub fn list(&self, state: usize) -> Vec<&Row> {
        self.kind(state, 1, "list");
        self.bytes(state)
            .map(|b| rows_of(b, false).into_iter().map(|(_, r)| r).collect())
            .unwrap_or_default()
    }

    /// Appends a row to a list state.
    pub fn push<R: IntoRow>(&mut self, state: usize, row: R) {
        self.kind(state, 1, "list");
        let mut bytes = self.bytes(state).map_or_else(|| vec![0; 4], <[u8]>::to_vec);
        let n = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]).saturating_add(1);
        bytes[..4].copy_from_slice(&n.to_le_bytes());
        row.encode_row(&mut bytes);
        self.write(state, Some(&bytes));
    }

    /// Replaces a list state's rows with `rows` (cleared when empty).
    pub fn set_list<R: IntoRow, I: IntoIterator<Item = R>>(&mut self, state: usize, rows: I) {
        self.kind(state, 1, "list");
        let mut body = Vec::new();
        let mut n = 0;
        for row in rows {
            row.encode_row(&mut body);
            n += 1;
        }
        if n == 0 {
            return self.write(state, None);
        }
        let mut bytes = Vec::with_capacity(body.len() + 4);
        encoding::put_len(&mut bytes, n);
        bytes.extend_from_slice(&body);
        self.write(state, Some(&bytes));
    }

    /// A map state's entries, by insertion.
    pub fn entries(&self, state: usize) -> Vec<(Value<'_>, &Row)> {
        self.kind(state, 2, "map");
        self.bytes(state)
            .map(|b| {
                rows_of(b, true)
                    .into_iter()
                    .map(|(k, r)| (k.unwrap_or(Value::Null), r))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The row of `key` in a map state.
    pub fn get<K: IntoValue>(&self, state: usize, key: K) -> Option<&Row> {
        let mut wanted = Vec::new();
        key.encode_into(&mut wanted);
        let want = crate::value::decode(&wanted)?;
        self.entries(state)
            .into_iter()
            .find(|(k, _)| *k == want)
            .map(|(_, r)| r)
    }

    /// Puts `key`'s row into a map state (replacing the one it had).
    pub fn put<K: IntoValue, R: IntoRow>(&mut self, state: usize, key: K, row: R) {
        let mut k = Vec::new();
        key.encode_into(&mut k);
        let mut r = Vec::new();
        row.encode_row(&mut r);
        self.map_write(state, &k, Some(&r));
    }

    /// Removes `key` from a map state.
    pub fn remove<K: IntoValue>(&mut self, state: usize, key: K) {
        let mut k = Vec::new();
        key.encode_into(&mut k);
        self.map_write(state, &k, None);
    }

    fn map_write(&mut self, state: usize, key: &[u8], row: Option<&[u8]>) {
        self.kind(state, 2, "map");
        let want = crate::value::decode(key);
        let mut items: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        if let Some(b) = self.bytes(state) {
            for (k, r) in rows_of(b, true) {
                if k != want {
                    let mut kb = Vec::new();
                    if let Some(k) = k {
                        k.encode(&mut kb);
                    }
                    items.push((kb, row_bytes(r)));
                }
            }
        }
        if let Some(r) = row {
            items.push((key.to_vec(), r.to_vec()));
        }
        if items.is_empty() {
            return self.write(state, None);
        }
        let n = items.len();
        let bytes = encode_rows(
            items
                .iter()
                .map(|(k, r)| (Some(k.as_slice()), r.as_slice())),
            n,
        );
        self.write(state, Some(&bytes));
    }

    /// Sets a timer of this key: it fires once the watermark (event time)
    /// or the processing time reaches `at`. Setting it twice keeps one.
    pub fn set_timer(&mut self, time: Time, at: i64) {
        self.timers.push((self.key_index, true, time.code(), at));
    }

    /// Deletes a timer of this key.
    pub fn delete_timer(&mut self, time: Time, at: i64) {
        self.timers.push((self.key_index, false, time.code(), at));
    }
}

fn row_bytes(r: &Row) -> Vec<u8> {
    let mut out = Vec::new();
    r.encode_row(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_rewritten_many_times_in_a_call_keeps_its_last_value_in_bounded_memory() {
        let kinds = [1u8, 0];
        let mut slots = vec![Slot::Shipped(None); 4];
        let mut written = Written::default();
        let mut timers = Vec::new();
        let mut cx = Ctx {
            key: &[],
            key_index: 1,
            kinds: &kinds,
            slots: &mut slots,
            first: 2,
            written: &mut written,
            timers: &mut timers,
            timestamp: 0,
            watermark: 0,
            processing_time: 0,
        };
        // A list that grows by a row a call, next to a value rewritten as
        // often: quadratic bytes if nothing were reclaimed.
        for i in 0..3000i64 {
            cx.push(0, (i,));
            cx.set(1, (i,));
        }
        assert_eq!(cx.list(0).len(), 3000);
        assert_eq!(cx.list(0)[2999].field(0).as_int(), Some(2999));
        assert_eq!(cx.value(1).and_then(|r| r.field(0).as_int()), Some(2999));
        let live = written.live;
        assert!(
            written.buf.len() <= 2 * live + 64 * 1024,
            "{} bytes written for {live} in use",
            written.buf.len()
        );
        assert!(
            matches!(slots[0], Slot::Shipped(None)),
            "another key's states stay"
        );
    }
}
