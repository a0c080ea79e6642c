//! What a trap costs, per design: the failing call (a poison record in the
//! middle of a batch), throwing the call's writes away, and a fresh
//! instance; and a check that the committed state is exactly as before.

use std::time::Instant;

use wasmtime::component::Component;

use crate::designs::Grouper;
use crate::wasm::{self, Data, Runtime, WriteMode};
use crate::{StateMap, digest};

#[derive(Default, Clone, Copy, Debug)]
pub struct TrapCost {
    /// The call that trapped, until it returned its error.
    pub call: u64,
    /// Dropping the trapped store and the call's writes (A: the overlay or
    /// the undo replay; B: nothing but the store).
    pub discard: u64,
    /// A fresh store and instance from the pre-instantiated component.
    pub fresh: u64,
    /// The same batch without the poison record, for comparison.
    pub ok_call: u64,
}

fn ns(t: Instant) -> u64 {
    t.elapsed().as_nanos() as u64
}

pub fn trap_a(
    rt: &Runtime,
    component: &Component,
    mode: WriteMode,
    warm: &[Vec<u8>],
    ok: &[u8],
    poison: &[u8],
    state: StateMap,
) -> anyhow::Result<(StateMap, TrapCost)> {
    let pre = rt.pre_a(component)?;
    let mut store = rt.store(Data::new(state, mode));
    let job = pre.instantiate(&mut store)?;
    let op = job.proto_state_a_operator();
    for b in warm {
        wasm::arm(&mut store);
        op.call_process(&mut store, b)?;
        store.data_mut().commit();
    }
    let before = digest(&store.data().committed);
    let mut cost = TrapCost::default();
    // The successful call, then undone by hand, for the comparison figure.
    wasm::arm(&mut store);
    let t = Instant::now();
    op.call_process(&mut store, ok)?;
    cost.ok_call = ns(t);
    store.data_mut().discard();
    anyhow::ensure!(digest(&store.data().committed) == before, "A: discard of a good call");

    wasm::arm(&mut store);
    let t = Instant::now();
    let r = op.call_process(&mut store, poison);
    cost.call = ns(t);
    anyhow::ensure!(r.is_err(), "the poison record did not trap");
    let t = Instant::now();
    let mut data = store.into_data();
    data.discard();
    cost.discard = ns(t);
    let t = Instant::now();
    let mut store = rt.store(data);
    let _job = pre.instantiate(&mut store)?;
    cost.fresh = ns(t);
    let data = store.into_data();
    anyhow::ensure!(digest(&data.committed) == before, "A ({mode:?}): state changed by a trap");
    anyhow::ensure!(data.overlay.is_empty() && data.undo_at.is_empty(), "A: writes left over");
    Ok((data.committed, cost))
}

pub fn trap_b(
    rt: &Runtime,
    component: &Component,
    warm: &[Vec<u8>],
    ok: &[u8],
    poison: &[u8],
    mut state: StateMap,
) -> anyhow::Result<(StateMap, TrapCost)> {
    let pre = rt.pre_b(component)?;
    let mut store = rt.store(Data::new(StateMap::default(), WriteMode::Overlay));
    let job = pre.instantiate(&mut store)?;
    let op = job.proto_state_b_operator();
    let mut g = Grouper::default();
    for b in warm {
        g.group(b, &state);
        wasm::arm(&mut store);
        let r = op.call_process(&mut store, b, &g.keys)?;
        g.apply(b, &r.changes, &mut state)?;
    }
    let before = digest(&state);
    let mut cost = TrapCost::default();
    g.group(ok, &state);
    wasm::arm(&mut store);
    let t = Instant::now();
    let _not_applied = op.call_process(&mut store, ok, &g.keys)?;
    cost.ok_call = ns(t);

    g.group(poison, &state);
    wasm::arm(&mut store);
    let t = Instant::now();
    let r = op.call_process(&mut store, poison, &g.keys);
    cost.call = ns(t);
    anyhow::ensure!(r.is_err(), "the poison record did not trap");
    let t = Instant::now();
    drop(store);
    cost.discard = ns(t);
    let t = Instant::now();
    let mut store = rt.store(Data::new(StateMap::default(), WriteMode::Overlay));
    let _job = pre.instantiate(&mut store)?;
    cost.fresh = ns(t);
    anyhow::ensure!(digest(&state) == before, "B: state changed by a trap");
    Ok((state, cost))
}
