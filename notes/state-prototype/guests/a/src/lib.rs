//! Design A guest: per record, `state::get` the key's (count, sum), update
//! it, `state::put` it back, emit (key, count, sum).

wit_bindgen::generate!({ path: "../../wit/a", world: "job-a" });

use exports::proto::state_a::operator::Guest;
use proto::state_a::state;

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
fn update(prev: Option<&[u8]>, amount: i64) -> (u64, i64) {
    if amount == i64::MIN {
        panic!("poison record");
    }
    let (count, sum) = match prev {
        Some(v) if v.len() == 16 => (
            u64::from_le_bytes(v[..8].try_into().unwrap()),
            i64::from_le_bytes(v[8..].try_into().unwrap()),
        ),
        _ => (0, 0),
    };
    (count + 1, sum.wrapping_add(amount))
}

#[inline]
fn emit(out: &mut Vec<u8>, key: &[u8], count: u64, sum: i64) {
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&sum.to_le_bytes());
}

impl Guest for G {
    fn process(records: Vec<u8>) -> Vec<u8> {
        let mut out = Vec::with_capacity(records.len() * 2);
        let mut p = 0;
        while p < records.len() {
            let klen = u32_at(&records, p);
            let key = &records[p + 4..p + 4 + klen];
            let amount = i64_at(&records, p + 4 + klen);
            p += 12 + klen;
            let prev = state::get(key);
            let (count, sum) = update(prev.as_deref(), amount);
            let mut value = [0u8; 16];
            value[..8].copy_from_slice(&count.to_le_bytes());
            value[8..].copy_from_slice(&sum.to_le_bytes());
            state::put(key, &value);
            emit(&mut out, key, count, sum);
        }
        out
    }

    fn process_at(records: Vec<u8>) -> Vec<u8> {
        let mut out = Vec::with_capacity(records.len() * 2);
        let mut p = 0;
        let mut i = 0u32;
        while p < records.len() {
            let klen = u32_at(&records, p);
            let key = &records[p + 4..p + 4 + klen];
            let amount = i64_at(&records, p + 4 + klen);
            p += 12 + klen;
            if amount == i64::MIN {
                panic!("poison record");
            }
            let (count, sum) = state::get_at(i).unwrap_or((0, 0));
            let (count, sum) = (count + 1, sum.wrapping_add(amount));
            state::put_at(i, count, sum);
            i += 1;
            emit(&mut out, key, count, sum);
        }
        out
    }

    fn passthrough(records: Vec<u8>) -> Vec<u8> {
        let mut out = Vec::with_capacity(records.len() * 2);
        let mut p = 0;
        while p < records.len() {
            let klen = u32_at(&records, p);
            let key = &records[p + 4..p + 4 + klen];
            let amount = i64_at(&records, p + 4 + klen);
            p += 12 + klen;
            let (count, sum) = update(None, amount);
            emit(&mut out, key, count, sum);
        }
        out
    }
}

export!(G);
