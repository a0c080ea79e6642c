//! The benchmark input: records `(key, amount)` over a fixed set of keys,
//! uniform or Zipf-distributed, encoded in batches.
//!
//! ```text
//! record := u32 key-len, u8{key-len} key, s64 amount
//! ```

/// splitmix64: a small deterministic generator (no dependency).
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Dist {
    Uniform,
    /// Zipf with this exponent over the keys, ranks shuffled over the keys.
    Zipf(f64),
}

impl Dist {
    pub fn name(&self) -> String {
        match self {
            Dist::Uniform => "uniform".into(),
            Dist::Zipf(s) => format!("zipf s={s}"),
        }
    }
}

pub fn key_name(i: usize) -> Vec<u8> {
    format!("acct{i:08}").into_bytes()
}

pub struct Workload {
    pub dist: Dist,
    pub batches: Vec<Vec<u8>>,
    pub records: usize,
    /// Mean distinct keys per batch.
    pub distinct_per_batch: f64,
    /// Distinct keys over the whole input.
    pub distinct_total: usize,
}

pub fn generate(dist: Dist, keys: usize, batch: usize, batches: usize, seed: u64) -> Workload {
    let mut rng = Rng::new(seed);
    let names: Vec<Vec<u8>> = (0..keys).map(key_name).collect();
    // For Zipf: cumulative weights of ranks, and a shuffled rank -> key map.
    let (cdf, perm) = match dist {
        Dist::Uniform => (Vec::new(), Vec::new()),
        Dist::Zipf(s) => {
            let mut cdf = Vec::with_capacity(keys);
            let mut total = 0.0;
            for r in 1..=keys {
                total += 1.0 / (r as f64).powf(s);
                cdf.push(total);
            }
            for c in &mut cdf {
                *c /= total;
            }
            let mut perm: Vec<usize> = (0..keys).collect();
            for i in (1..keys).rev() {
                let j = (rng.next() % (i as u64 + 1)) as usize;
                perm.swap(i, j);
            }
            (cdf, perm)
        }
    };
    let mut seen = vec![false; keys];
    let mut distinct_total = 0;
    let mut distinct_sum = 0usize;
    let mut out = Vec::with_capacity(batches);
    let mut in_batch = vec![u32::MAX; keys];
    for b in 0..batches {
        let mut buf = Vec::with_capacity(batch * 24);
        let mut distinct = 0;
        for _ in 0..batch {
            let k = match dist {
                Dist::Uniform => (rng.next() % keys as u64) as usize,
                Dist::Zipf(_) => {
                    let u = rng.unit();
                    let r = cdf.partition_point(|&c| c < u).min(keys - 1);
                    perm[r]
                }
            };
            if !seen[k] {
                seen[k] = true;
                distinct_total += 1;
            }
            if in_batch[k] != b as u32 {
                in_batch[k] = b as u32;
                distinct += 1;
            }
            let amount = (rng.next() % 10_000) as i64 + 1;
            buf.extend_from_slice(&(names[k].len() as u32).to_le_bytes());
            buf.extend_from_slice(&names[k]);
            buf.extend_from_slice(&amount.to_le_bytes());
        }
        distinct_sum += distinct;
        out.push(buf);
    }
    Workload {
        dist,
        batches: out,
        records: batch * batches,
        distinct_per_batch: distinct_sum as f64 / batches as f64,
        distinct_total,
    }
}

/// A copy of `batch` whose record number `at` has the poison amount.
pub fn poison(batch: &[u8], at: usize) -> Vec<u8> {
    let mut b = batch.to_vec();
    let mut p = 0;
    let mut i = 0;
    while p < b.len() {
        let klen = u32::from_le_bytes(b[p..p + 4].try_into().unwrap()) as usize;
        if i == at {
            b[p + 4 + klen..p + 12 + klen].copy_from_slice(&i64::MIN.to_le_bytes());
            return b;
        }
        p += 12 + klen;
        i += 1;
    }
    panic!("batch has fewer than {at} records");
}
