//! Design B guest: the batch brings each distinct key's state once; the
//! guest updates the decoded states in place, record by record, and returns
//! the output and the states it changed.

wit_bindgen::generate!({ path: "../../wit/b", world: "job-b" });

use exports::proto::state_b::operator::{BatchResult, Guest};

struct G;

#[inline]
fn u32_at(b: &[u8], p: usize) -> usize {
    u32::from_le_bytes(b[p..p + 4].try_into().unwrap()) as usize
}
#[inline]
fn i64_at(b: &[u8], p: usize) -> i64 {
    i64::from_le_bytes(b[p..p + 8].try_into().unwrap())
}

/// The user's logic: count and sum per key; the amount i64::MIN is poison.
#[inline]
fn update(prev: Option<(u64, i64)>, amount: i64) -> (u64, i64) {
    if amount == i64::MIN {
        panic!("poison record");
    }
    let (count, sum) = prev.unwrap_or((0, 0));
    (count + 1, sum.wrapping_add(amount))
}

/// One key's value state for the call, as the SDK would hold it.
#[derive(Clone, Copy)]
struct Slot {
    value: Option<(u64, i64)>,
    dirty: bool,
}

impl Guest for G {
    fn process(records: Vec<u8>, keys: Vec<u8>) -> BatchResult {
        let key_count = u32_at(&keys, 0);
        let record_count = u32_at(&keys, 4);
        let index = &keys[8..8 + 4 * record_count];
        // Decode the shipped states.
        let mut slots = Vec::with_capacity(key_count);
        let mut p = 8 + 4 * record_count;
        for _ in 0..key_count {
            let value = if keys[p] == 0 {
                p += 1;
                None
            } else {
                let len = u32_at(&keys, p + 1);
                let v = &keys[p + 5..p + 5 + len];
                p += 5 + len;
                (len == 16).then(|| {
                    (
                        u64::from_le_bytes(v[..8].try_into().unwrap()),
                        i64::from_le_bytes(v[8..].try_into().unwrap()),
                    )
                })
            };
            slots.push(Slot { value, dirty: false });
        }
        let mut out = Vec::with_capacity(records.len() * 2);
        let mut p = 0;
        let mut i = 0;
        while p < records.len() {
            let klen = u32_at(&records, p);
            let key = &records[p + 4..p + 4 + klen];
            let amount = i64_at(&records, p + 4 + klen);
            p += 12 + klen;
            let k = u32_at(index, 4 * i);
            i += 1;
            let slot = &mut slots[k];
            let (count, sum) = update(slot.value, amount);
            slot.value = Some((count, sum));
            slot.dirty = true;
            out.extend_from_slice(&(klen as u32).to_le_bytes());
            out.extend_from_slice(key);
            out.extend_from_slice(&count.to_le_bytes());
            out.extend_from_slice(&sum.to_le_bytes());
        }
        let mut changes = Vec::with_capacity(key_count * 25);
        for (k, slot) in slots.iter().enumerate() {
            if !slot.dirty {
                continue;
            }
            changes.extend_from_slice(&(k as u32).to_le_bytes());
            match slot.value {
                None => changes.push(0),
                Some((count, sum)) => {
                    changes.push(1);
                    changes.extend_from_slice(&16u32.to_le_bytes());
                    changes.extend_from_slice(&count.to_le_bytes());
                    changes.extend_from_slice(&sum.to_le_bytes());
                }
            }
        }
        BatchResult {
            output: out,
            changes,
        }
    }
}

export!(G);
