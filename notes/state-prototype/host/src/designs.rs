//! One runner per design. Each runs every batch of a workload through its
//! path, starting from the given committed state, and returns the final
//! state, the time split and the bytes of output (handed to `sink`).

use std::time::Instant;

use hashbrown::HashTable;
use wasmtime::component::Component;

use crate::wasm::{self, Data, Runtime, WriteMode};
use crate::{StateMap, u32_at};

/// Where one run's time went, in nanoseconds.
#[derive(Default, Clone, Copy, Debug)]
pub struct Split {
    pub total: u64,
    /// Host work before the call (grouping, shipping state).
    pub pre: u64,
    /// The guest call (for A: with every import call inside it).
    pub call: u64,
    /// Host work after the call (applying writes, checking output).
    pub post: u64,
    /// C only: firing windows (building the fired buffer, `result`, clearing).
    pub fire: u64,
}

#[inline]
fn ns(since: Instant) -> u64 {
    since.elapsed().as_nanos() as u64
}

// ---------------------------------------------------------------- native

/// Native baseline: the same encoded batches, the same logic, a typed
/// `HashMap<key, (count, sum)>`, the same output encoding.
pub fn native(
    batches: &[Vec<u8>],
    map: &mut hashbrown::HashMap<Vec<u8>, (u64, i64)>,
    sink: &mut impl FnMut(&[u8]),
) -> Split {
    let t0 = Instant::now();
    let mut out = Vec::with_capacity(64 * 1024);
    for records in batches {
        out.clear();
        let mut p = 0;
        while p < records.len() {
            let klen = u32_at(records, p);
            let key = &records[p + 4..p + 4 + klen];
            let amount = i64::from_le_bytes(records[p + 4 + klen..p + 12 + klen].try_into().unwrap());
            p += 12 + klen;
            if amount == i64::MIN {
                panic!("poison record");
            }
            let st = map.entry_ref(key).or_insert((0, 0));
            st.0 += 1;
            st.1 = st.1.wrapping_add(amount);
            out.extend_from_slice(&(klen as u32).to_le_bytes());
            out.extend_from_slice(key);
            out.extend_from_slice(&st.0.to_le_bytes());
            out.extend_from_slice(&st.1.to_le_bytes());
        }
        sink(&out);
    }
    Split {
        total: ns(t0),
        ..Split::default()
    }
}

/// Native tumbling-window aggregate (C's baseline): per window a map of
/// (count, sum) per key, emitted and cleared every `window` batches.
pub fn native_window(
    batches: &[Vec<u8>],
    window: usize,
    win: &mut hashbrown::HashMap<Vec<u8>, (u64, i64)>,
    sink: &mut impl FnMut(&[u8]),
) -> Split {
    let t0 = Instant::now();
    let mut out = Vec::with_capacity(64 * 1024);
    let mut fire = |win: &mut hashbrown::HashMap<Vec<u8>, (u64, i64)>, out: &mut Vec<u8>| {
        out.clear();
        for (k, (count, sum)) in win.drain() {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(&k);
            out.extend_from_slice(&count.to_le_bytes());
            out.extend_from_slice(&sum.to_le_bytes());
        }
        sink(out);
    };
    for (b, records) in batches.iter().enumerate() {
        let mut p = 0;
        while p < records.len() {
            let klen = u32_at(records, p);
            let key = &records[p + 4..p + 4 + klen];
            let amount = i64::from_le_bytes(records[p + 4 + klen..p + 12 + klen].try_into().unwrap());
            p += 12 + klen;
            if amount == i64::MIN {
                panic!("poison record");
            }
            let st = win.entry_ref(key).or_insert((0, 0));
            st.0 += 1;
            st.1 = st.1.wrapping_add(amount);
        }
        if (b + 1) % window == 0 {
            fire(win, &mut out);
        }
    }
    if !win.is_empty() {
        fire(win, &mut out);
    }
    Split {
        total: ns(t0),
        ..Split::default()
    }
}

// ---------------------------------------------------------------- A

/// Design A: one `process` call per batch; the guest calls `state.get` and
/// `state.put` once per record each.
pub fn design_a(
    rt: &Runtime,
    component: &Component,
    mode: WriteMode,
    batches: &[Vec<u8>],
    state: StateMap,
    sink: &mut impl FnMut(&[u8]),
) -> anyhow::Result<(StateMap, Split)> {
    let pre = rt.pre_a(component)?;
    let mut store = rt.store(Data::new(state, mode));
    let job = pre.instantiate(&mut store)?;
    let op = job.proto_state_a_operator();
    let mut s = Split::default();
    let t0 = Instant::now();
    for records in batches {
        wasm::arm(&mut store);
        let t = Instant::now();
        let out = op.call_process(&mut store, records)?;
        s.call += ns(t);
        let t = Instant::now();
        store.data_mut().commit();
        sink(&out);
        s.post += ns(t);
    }
    s.total = ns(t0);
    let data = store.into_data();
    let expected = batches.iter().map(|b| count_records(b) as u64).sum::<u64>();
    anyhow::ensure!(data.gets == expected && data.puts == expected, "import count");
    Ok((data.committed, s))
}

/// Design A's lower bound: `process-at`, whose imports pass the record's
/// index and a typed (count, sum) instead of key and value bytes.
pub fn design_a_at(
    rt: &Runtime,
    component: &Component,
    mode: WriteMode,
    batches: &[Vec<u8>],
    state: StateMap,
    sink: &mut impl FnMut(&[u8]),
) -> anyhow::Result<(StateMap, Split)> {
    let pre = rt.pre_a(component)?;
    let mut store = rt.store(Data::new(state, mode));
    let job = pre.instantiate(&mut store)?;
    let op = job.proto_state_a_operator();
    let mut s = Split::default();
    let t0 = Instant::now();
    for records in batches {
        let t = Instant::now();
        store.data_mut().set_batch(records);
        s.pre += ns(t);
        wasm::arm(&mut store);
        let t = Instant::now();
        let out = op.call_process_at(&mut store, records)?;
        s.call += ns(t);
        let t = Instant::now();
        store.data_mut().commit();
        sink(&out);
        s.post += ns(t);
    }
    s.total = ns(t0);
    Ok((store.into_data().committed, s))
}

/// The stateless floor: the same records through `passthrough` (no state).
pub fn passthrough(
    rt: &Runtime,
    component: &Component,
    batches: &[Vec<u8>],
    sink: &mut impl FnMut(&[u8]),
) -> anyhow::Result<Split> {
    let pre = rt.pre_a(component)?;
    let mut store = rt.store(Data::new(StateMap::default(), WriteMode::Overlay));
    let job = pre.instantiate(&mut store)?;
    let op = job.proto_state_a_operator();
    let mut s = Split::default();
    let t0 = Instant::now();
    for records in batches {
        wasm::arm(&mut store);
        let out = op.call_passthrough(&mut store, records)?;
        sink(&out);
    }
    s.total = ns(t0);
    s.call = s.total;
    Ok(s)
}

/// A's host-side work alone: the same sequence of get (a clone out of the
/// map) and put, then commit, with no wasm. Tells A's call time apart into
/// map work and boundary crossing.
pub fn a_host_replay(batches: &[Vec<u8>], mode: WriteMode, state: StateMap) -> (StateMap, u64) {
    let mut d = Data::new(state, mode);
    let t0 = Instant::now();
    for records in batches {
        let mut p = 0;
        while p < records.len() {
            let klen = u32_at(records, p);
            let key = &records[p + 4..p + 4 + klen];
            let amount = i64::from_le_bytes(records[p + 4 + klen..p + 12 + klen].try_into().unwrap());
            p += 12 + klen;
            let prev = std::hint::black_box(d.get(key));
            let (c, s) = match prev.as_deref() {
                Some(v) => (
                    u64::from_le_bytes(v[..8].try_into().unwrap()),
                    i64::from_le_bytes(v[8..].try_into().unwrap()),
                ),
                None => (0, 0),
            };
            let mut value = [0u8; 16];
            value[..8].copy_from_slice(&(c + 1).to_le_bytes());
            value[8..].copy_from_slice(&s.wrapping_add(amount).to_le_bytes());
            d.put(key, &value);
        }
        d.commit();
    }
    (d.committed, ns(t0))
}

fn count_records(b: &[u8]) -> usize {
    let (mut p, mut n) = (0, 0);
    while p < b.len() {
        p += 12 + u32_at(b, p);
        n += 1;
    }
    n
}

// ---------------------------------------------------------------- B

/// Groups a batch by key and builds B's `keys` buffer (also C's). Each key
/// is hashed once, with the state map's hasher: the same hash finds the key
/// among the batch's keys, then its entry in the state, and the entry found
/// is remembered, so applying a change needs no second lookup.
#[derive(Default)]
pub struct Grouper {
    /// (hash, key index) of the batch's distinct keys.
    table: HashTable<(u64, u32)>,
    /// Per distinct key: offset and length in the records buffer, hash, and
    /// its entry in the state (`u32::MAX`: none yet).
    pub slots: Vec<KeySlot>,
    /// The `keys` argument.
    pub keys: Vec<u8>,
    states: Vec<u8>,
}

#[derive(Clone, Copy)]
pub struct KeySlot {
    off: u32,
    len: u32,
    hash: u64,
    at: u32,
}

const NONE: u32 = u32::MAX;

impl Grouper {
    /// `keys := u32 key-count, u32 record-count, u32{record-count} key-index, state{key-count}`
    pub fn group(&mut self, records: &[u8], committed: &StateMap) {
        let Grouper {
            table,
            slots,
            keys,
            states,
        } = self;
        table.clear();
        slots.clear();
        keys.clear();
        states.clear();
        keys.extend_from_slice(&[0; 8]);
        let mut n = 0u32;
        let mut p = 0;
        while p < records.len() {
            let klen = u32_at(records, p);
            let key = &records[p + 4..p + 4 + klen];
            let h = committed.hash(key);
            let idx = match table.find(h, |&(eh, i)| {
                let s = slots[i as usize];
                eh == h && &records[s.off as usize..(s.off + s.len) as usize] == key
            }) {
                Some(&(_, i)) => i,
                None => {
                    let i = slots.len() as u32;
                    let at = committed.find_hashed(h, key);
                    slots.push(KeySlot {
                        off: (p + 4) as u32,
                        len: klen as u32,
                        hash: h,
                        at: at.unwrap_or(NONE),
                    });
                    table.insert_unique(h, (h, i), |e| e.0);
                    match at {
                        Some(at) => {
                            let v = committed.value(at);
                            states.push(1);
                            states.extend_from_slice(&(v.len() as u32).to_le_bytes());
                            states.extend_from_slice(v);
                        }
                        None => states.push(0),
                    }
                    i
                }
            };
            keys.extend_from_slice(&idx.to_le_bytes());
            n += 1;
            p += 12 + klen;
        }
        keys[0..4].copy_from_slice(&(slots.len() as u32).to_le_bytes());
        keys[4..8].copy_from_slice(&n.to_le_bytes());
        keys.extend_from_slice(states);
    }

    /// Applies a `changes` buffer (untrusted: checked, never panics).
    pub fn apply(&mut self, records: &[u8], changes: &[u8], committed: &mut StateMap) -> anyhow::Result<()> {
        let mut p = 0;
        while p < changes.len() {
            anyhow::ensure!(changes.len() >= p + 5, "truncated change");
            let idx = u32_at(changes, p);
            let slot = self
                .slots
                .get_mut(idx)
                .ok_or_else(|| anyhow::anyhow!("change names key {idx}, outside the batch"))?;
            let key = &records[slot.off as usize..(slot.off + slot.len) as usize];
            match changes[p + 4] {
                0 => {
                    committed.remove(key);
                    slot.at = NONE;
                    p += 5;
                }
                1 => {
                    anyhow::ensure!(changes.len() >= p + 9, "truncated change");
                    let len = u32_at(changes, p + 5);
                    anyhow::ensure!(changes.len() >= p + 9 + len, "truncated change");
                    let v = &changes[p + 9..p + 9 + len];
                    if slot.at == NONE {
                        committed.put_hashed(slot.hash, key, v);
                    } else {
                        committed.set_at(slot.hash, slot.at, v);
                    }
                    p += 9 + len;
                }
                t => anyhow::bail!("bad change tag {t}"),
            }
        }
        Ok(())
    }
}

/// Design B: group, one `process` call per batch, apply the changes.
pub fn design_b(
    rt: &Runtime,
    component: &Component,
    batches: &[Vec<u8>],
    mut state: StateMap,
    sink: &mut impl FnMut(&[u8]),
) -> anyhow::Result<(StateMap, Split)> {
    let pre = rt.pre_b(component)?;
    let mut store = rt.store(Data::new(StateMap::default(), WriteMode::Overlay));
    let job = pre.instantiate(&mut store)?;
    let op = job.proto_state_b_operator();
    let mut g = Grouper::default();
    let mut s = Split::default();
    let t0 = Instant::now();
    for records in batches {
        let t = Instant::now();
        g.group(records, &state);
        s.pre += ns(t);
        wasm::arm(&mut store);
        let t = Instant::now();
        let r = op.call_process(&mut store, records, &g.keys)?;
        s.call += ns(t);
        let t = Instant::now();
        g.apply(records, &r.changes, &mut state)?;
        sink(&r.output);
        s.post += ns(t);
    }
    s.total = ns(t0);
    Ok((state, s))
}

// ---------------------------------------------------------------- C

/// Design C: a tumbling window of `window` batches whose accumulators the
/// host keeps; per batch the touched accumulators go to `add` (as B ships
/// state); when the window ends every accumulator goes to `result`, its
/// rows to the sink, and the window's state is dropped.
pub fn design_c(
    rt: &Runtime,
    component: &Component,
    batches: &[Vec<u8>],
    window: usize,
    sink: &mut impl FnMut(&[u8]),
) -> anyhow::Result<Split> {
    let pre = rt.pre_c(component)?;
    let mut store = rt.store(Data::new(StateMap::default(), WriteMode::Overlay));
    let job = pre.instantiate(&mut store)?;
    let agg = job.proto_state_c_aggregate();
    let mut g = Grouper::default();
    let mut win = StateMap::default();
    let mut fired = Vec::new();
    let mut s = Split::default();
    let mut fire = |store: &mut wasmtime::Store<Data>, win: &mut StateMap, s: &mut Split| -> anyhow::Result<()> {
        let t = Instant::now();
        fired.clear();
        for (k, v) in win.iter() {
            fired.extend_from_slice(&(k.len() as u32).to_le_bytes());
            fired.extend_from_slice(k);
            fired.extend_from_slice(&(v.len() as u32).to_le_bytes());
            fired.extend_from_slice(v);
        }
        win.clear();
        wasm::arm(store);
        let out = agg.call_result(&mut *store, &fired)?;
        sink(&out);
        s.fire += ns(t);
        Ok(())
    };
    let t0 = Instant::now();
    for (b, records) in batches.iter().enumerate() {
        let t = Instant::now();
        g.group(records, &win);
        s.pre += ns(t);
        wasm::arm(&mut store);
        let t = Instant::now();
        let changes = agg.call_add(&mut store, records, &g.keys)?;
        s.call += ns(t);
        let t = Instant::now();
        g.apply(records, &changes, &mut win)?;
        s.post += ns(t);
        if (b + 1) % window == 0 {
            fire(&mut store, &mut win, &mut s)?;
        }
    }
    if !win.is_empty() {
        fire(&mut store, &mut win, &mut s)?;
    }
    s.total = ns(t0);
    Ok(s)
}

/// C's `merge`, checked once (not on the benchmark's path).
pub fn check_merge(rt: &Runtime, component: &Component) -> anyhow::Result<()> {
    let pre = rt.pre_c(component)?;
    let mut store = rt.store(Data::new(StateMap::default(), WriteMode::Overlay));
    let job = pre.instantiate(&mut store)?;
    let mut pairs = Vec::new();
    for (c, s) in [(1u64, 5i64), (2, 7)] {
        pairs.extend_from_slice(&16u32.to_le_bytes());
        pairs.extend_from_slice(&c.to_le_bytes());
        pairs.extend_from_slice(&s.to_le_bytes());
    }
    let out = job.proto_state_c_aggregate().call_merge(&mut store, &pairs)?;
    anyhow::ensure!(out.len() == 20 && out[4..12] == 3u64.to_le_bytes() && out[12..20] == 12i64.to_le_bytes(), "merge");
    Ok(())
}
