//! Key groups, Flink's way: a key's hash picks one of `max_parallelism`
//! key groups, and each subtask owns a contiguous range of them, so keyed
//! state checkpointed by key group restores at any parallelism.

use std::ops::Range;

/// The key group of a key hash (Flink's `assignToKeyGroup`).
#[inline]
pub fn key_group(hash: u64, max_parallelism: u32) -> u32 {
    let m = u64::from(max_parallelism);
    // The same remainder, without a division for the usual power of two.
    if m.is_power_of_two() {
        (hash & (m - 1)) as u32
    } else {
        (hash % m) as u32
    }
}

/// Where a key hash goes in a key group's hash table. The hash's remainder
/// picks the key group (`hash % max_parallelism`), so every key of a group
/// shares its low bits: the table (which picks buckets by the low bits) is
/// indexed by the other bits, mixed.
#[inline]
pub fn table_hash(hash: u64) -> u64 {
    (hash >> 7).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Whether two keys are the same bytes: keys are mostly short, and up to
/// 16 bytes this is two loads and compares each instead of a call.
#[inline]
pub fn same_key(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&s[at..at + 8]);
        u64::from_ne_bytes(w)
    };
    let half = |s: &[u8], at: usize| -> u32 {
        let mut w = [0u8; 4];
        w.copy_from_slice(&s[at..at + 4]);
        u32::from_ne_bytes(w)
    };
    match n {
        // The first and the last 8 (or 4) bytes, overlapping.
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        4..=7 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        0..=3 => a.iter().zip(b).all(|(x, y)| x == y),
        _ => a == b,
    }
}

/// Asks the memory for the cache line holding `bytes[at]`, without
/// waiting for it.
#[inline]
pub fn prefetch(bytes: &[u8], at: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(b) = bytes.get(at) {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: a prefetch is a hint to the cache: it reads nothing the
        // program sees and cannot fault, and the address is in `bytes`.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(b).cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (bytes, at);
}

/// The subtask that owns a key group (Flink's `computeOperatorIndexForKeyGroup`).
#[inline]
pub fn subtask_of(key_group: u32, parallelism: u32, max_parallelism: u32) -> u32 {
    let (scaled, m) = (
        u64::from(key_group) * u64::from(parallelism),
        u64::from(max_parallelism),
    );
    // The same quotient, without a division for the usual power of two.
    if m.is_power_of_two() {
        (scaled >> m.trailing_zeros()) as u32
    } else {
        (scaled / m) as u32
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_is_byte_equality_at_every_length() {
        for n in 0..40usize {
            let a: Vec<u8> = (0..n as u8).collect();
            assert!(same_key(&a, &a.clone()));
            for i in 0..n {
                let mut b = a.clone();
                b[i] ^= 0x80;
                assert!(!same_key(&a, &b), "length {n}, byte {i}");
            }
            let mut longer = a.clone();
            longer.push(0);
            assert!(!same_key(&a, &longer));
        }
    }

    #[test]
    fn key_groups_and_their_subtasks_are_the_remainder_and_the_quotient() {
        let mut h: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..1000 {
            h = h.rotate_left(13).wrapping_mul(0xff51_afd7_ed55_8ccd);
            for m in [1, 2, 3, 100, 128, 1000, 32_768] {
                let g = key_group(h, m);
                assert_eq!(g, (h % u64::from(m)) as u32);
                for p in [1, 2, 3, 7].into_iter().filter(|p| *p <= m) {
                    let s = u64::from(g) * u64::from(p) / u64::from(m);
                    assert_eq!(subtask_of(g, p, m), s as u32);
                }
            }
        }
    }

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
}
