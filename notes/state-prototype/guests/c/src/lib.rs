//! Design C guest: an aggregate function (count and sum) as add, merge and
//! result over opaque 16-byte accumulators that the host keeps per
//! (key, window).

wit_bindgen::generate!({ path: "../../wit/c", world: "job-c" });

use exports::proto::state_c::aggregate::Guest;

struct G;

#[inline]
fn u32_at(b: &[u8], p: usize) -> usize {
    u32::from_le_bytes(b[p..p + 4].try_into().unwrap()) as usize
}
#[inline]
fn i64_at(b: &[u8], p: usize) -> i64 {
    i64::from_le_bytes(b[p..p + 8].try_into().unwrap())
}

type Acc = (u64, i64);

fn decode(v: &[u8]) -> Acc {
    if v.len() != 16 {
        return (0, 0);
    }
    (
        u64::from_le_bytes(v[..8].try_into().unwrap()),
        i64::from_le_bytes(v[8..].try_into().unwrap()),
    )
}

fn put_acc(out: &mut Vec<u8>, (count, sum): Acc) {
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&sum.to_le_bytes());
}

/// The user's aggregate: add one amount; the amount i64::MIN is poison.
#[inline]
fn add((count, sum): Acc, amount: i64) -> Acc {
    if amount == i64::MIN {
        panic!("poison record");
    }
    (count + 1, sum.wrapping_add(amount))
}

impl Guest for G {
    fn add(records: Vec<u8>, keys: Vec<u8>) -> Vec<u8> {
        let key_count = u32_at(&keys, 0);
        let record_count = u32_at(&keys, 4);
        let index = &keys[8..8 + 4 * record_count];
        let mut accs: Vec<Acc> = Vec::with_capacity(key_count);
        let mut p = 8 + 4 * record_count;
        for _ in 0..key_count {
            if keys[p] == 0 {
                p += 1;
                accs.push((0, 0));
            } else {
                let len = u32_at(&keys, p + 1);
                accs.push(decode(&keys[p + 5..p + 5 + len]));
                p += 5 + len;
            }
        }
        let mut p = 0;
        let mut i = 0;
        while p < records.len() {
            let klen = u32_at(&records, p);
            let amount = i64_at(&records, p + 4 + klen);
            p += 12 + klen;
            let k = u32_at(index, 4 * i);
            i += 1;
            accs[k] = add(accs[k], amount);
        }
        // Every shipped key was touched by at least one record.
        let mut changes = Vec::with_capacity(key_count * 25);
        for (k, acc) in accs.into_iter().enumerate() {
            changes.extend_from_slice(&(k as u32).to_le_bytes());
            changes.push(1);
            put_acc(&mut changes, acc);
        }
        changes
    }

    fn merge(pairs: Vec<u8>) -> Vec<u8> {
        let mut out = Vec::new();
        let mut p = 0;
        while p < pairs.len() {
            let la = u32_at(&pairs, p);
            let a = decode(&pairs[p + 4..p + 4 + la]);
            p += 4 + la;
            let lb = u32_at(&pairs, p);
            let b = decode(&pairs[p + 4..p + 4 + lb]);
            p += 4 + lb;
            put_acc(&mut out, (a.0 + b.0, a.1.wrapping_add(b.1)));
        }
        out
    }

    fn result(fired: Vec<u8>) -> Vec<u8> {
        let mut out = Vec::with_capacity(fired.len());
        let mut p = 0;
        while p < fired.len() {
            let klen = u32_at(&fired, p);
            let key = &fired[p + 4..p + 4 + klen];
            p += 4 + klen;
            let len = u32_at(&fired, p);
            let (count, sum) = decode(&fired[p + 4..p + 4 + len]);
            p += 4 + len;
            out.extend_from_slice(&(klen as u32).to_le_bytes());
            out.extend_from_slice(key);
            out.extend_from_slice(&count.to_le_bytes());
            out.extend_from_slice(&sum.to_le_bytes());
        }
        out
    }
}

export!(G);
