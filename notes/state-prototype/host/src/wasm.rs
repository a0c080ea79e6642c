//! The wasmtime side, configured as the Sluice host configures it
//! (`host/src/guest.rs`): component model on, component-model-async not
//! compiled in (`default-features = false`), epoch interruption with a
//! 10 ms ticker and a deadline armed before every call, the pooling
//! allocator, WASI p2 linked for the std guest's imports.
//!
//! Design A's imports are defined here with `func_wrap` over `WasmList<u8>`,
//! so that the host reads the key and the value straight out of guest
//! memory (no `Vec` per argument, as bindgen's `Host` trait would make).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::{Component, Linker, ResourceTable, WasmList};
use wasmtime::{Config, Engine, Store, StoreContextMut};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::StateMap;

pub mod a {
    wasmtime::component::bindgen!({ path: "../wit/a", world: "job-a" });
}
pub mod b {
    wasmtime::component::bindgen!({ path: "../wit/b", world: "job-b" });
}
pub mod c {
    wasmtime::component::bindgen!({ path: "../wit/c", world: "job-c" });
}

const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Call deadline, in ticks (as Sluice's default 1 s call timeout would be).
const DEADLINE_TICKS: u64 = 101;

/// How design A keeps a call's writes away from the committed state.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum WriteMode {
    /// Writes go to an overlay map; `get` reads the overlay, then the
    /// committed map; the overlay is applied after the call returned and
    /// dropped on a trap.
    Overlay,
    /// Writes go straight to the committed map; the old values are appended
    /// to an undo log (one flat buffer), cleared after the call returned and
    /// replayed backwards on a trap.
    Undo,
}

/// Store data: WASI, and design A's state (B and C keep theirs outside).
pub struct Data {
    wasi: WasiCtx,
    table: ResourceTable,
    pub committed: StateMap,
    pub overlay: StateMap,
    pub mode: WriteMode,
    /// Undo log: `u32 key-len, key, u8 had, [u32 len, old value]`.
    pub undo: Vec<u8>,
    /// Start offsets of the undo entries, to replay them backwards.
    pub undo_at: Vec<u32>,
    scratch: Vec<u8>,
    /// For `get-at`/`put-at`: the current batch's keys, back to back, and
    /// each record's key as (offset, length) in them.
    pub batch_keys: Vec<u8>,
    pub key_at: Vec<(u32, u32)>,
    /// Import calls made (a check that the guest really called per record).
    pub gets: u64,
    pub puts: u64,
}

impl WasiView for Data {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl Data {
    pub fn new(committed: StateMap, mode: WriteMode) -> Data {
        Data {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            committed,
            overlay: StateMap::default(),
            mode,
            undo: Vec::new(),
            undo_at: Vec::new(),
            scratch: Vec::new(),
            batch_keys: Vec::new(),
            key_at: Vec::new(),
            gets: 0,
            puts: 0,
        }
    }

    /// The host's side of `state.get`.
    #[inline]
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self.mode {
            WriteMode::Overlay => self
                .overlay
                .get(key)
                .or_else(|| self.committed.get(key))
                .map(<[u8]>::to_vec),
            WriteMode::Undo => self.committed.get(key).map(<[u8]>::to_vec),
        }
    }

    /// The host's side of `state.put`.
    #[inline]
    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        match self.mode {
            WriteMode::Overlay => self.overlay.put(key, value),
            WriteMode::Undo => {
                self.undo_at.push(self.undo.len() as u32);
                self.undo
                    .extend_from_slice(&(key.len() as u32).to_le_bytes());
                self.undo.extend_from_slice(key);
                let h = self.committed.hash(key);
                match self.committed.find_hashed(h, key) {
                    Some(at) => {
                        let old = self.committed.value(at);
                        self.undo.push(1);
                        self.undo.extend_from_slice(&(old.len() as u32).to_le_bytes());
                        self.undo.extend_from_slice(old);
                        self.committed.set_at(h, at, value);
                    }
                    None => {
                        self.undo.push(0);
                        self.committed.insert_new(h, key, value);
                    }
                }
            }
        }
    }

    /// Before a `process-at` call: the keys of the batch's records.
    pub fn set_batch(&mut self, records: &[u8]) {
        self.batch_keys.clear();
        self.key_at.clear();
        let mut p = 0;
        while p < records.len() {
            let klen = u32::from_le_bytes(records[p..p + 4].try_into().unwrap()) as usize;
            self.key_at.push((self.batch_keys.len() as u32, klen as u32));
            self.batch_keys.extend_from_slice(&records[p + 4..p + 4 + klen]);
            p += 12 + klen;
        }
    }

    fn record_key(keys: &[u8], key_at: &[(u32, u32)], i: u32) -> wasmtime::Result<std::ops::Range<usize>> {
        let &(o, l) = key_at
            .get(i as usize)
            .ok_or_else(|| wasmtime::format_err!("record {i} is outside the batch"))?;
        let _ = keys;
        Ok(o as usize..(o + l) as usize)
    }

    /// After a call returned: make its writes the committed state.
    pub fn commit(&mut self) {
        match self.mode {
            WriteMode::Overlay => {
                for (k, v) in self.overlay.iter() {
                    self.committed.put(k, v);
                }
                self.overlay.clear();
            }
            WriteMode::Undo => {
                self.undo.clear();
                self.undo_at.clear();
            }
        }
    }

    /// After a trap: forget the call's writes.
    pub fn discard(&mut self) {
        match self.mode {
            WriteMode::Overlay => self.overlay.clear(),
            WriteMode::Undo => {
                while let Some(at) = self.undo_at.pop() {
                    let e = &self.undo[at as usize..];
                    let klen = u32::from_le_bytes(e[..4].try_into().unwrap()) as usize;
                    let key = &e[4..4 + klen];
                    if e[4 + klen] == 1 {
                        let vlen =
                            u32::from_le_bytes(e[5 + klen..9 + klen].try_into().unwrap()) as usize;
                        let old = &e[9 + klen..9 + klen + vlen];
                        self.committed.put(key, old);
                    } else {
                        self.committed.remove(key);
                    }
                }
                self.undo.clear();
            }
        }
    }
}

/// Advances the engine's epoch until dropped.
struct Ticker(Arc<AtomicBool>);
impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

pub struct Runtime {
    pub engine: Engine,
    linker: Linker<Data>,
    _ticker: Ticker,
}

impl Runtime {
    pub fn new() -> anyhow::Result<Runtime> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.wasm_backtrace_max_frames(None);
        config.epoch_interruption(true);
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        pool.total_component_instances(64)
            .total_core_instances(128)
            .total_memories(128)
            .total_tables(128)
            .max_memory_size(1 << 30);
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)?;
        let mut linker = Linker::<Data>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        let mut state = linker.instance("proto:state-a/state")?;
        state.func_wrap(
            "get",
            |mut cx: StoreContextMut<'_, Data>, (key,): (WasmList<u8>,)| {
                let mut scratch = std::mem::take(&mut cx.data_mut().scratch);
                scratch.clear();
                scratch.extend_from_slice(key.as_le_slice(&cx));
                let d = cx.data_mut();
                d.gets += 1;
                let r = d.get(&scratch);
                d.scratch = scratch;
                Ok((r,))
            },
        )?;
        state.func_wrap(
            "put",
            |mut cx: StoreContextMut<'_, Data>, (key, value): (WasmList<u8>, WasmList<u8>)| {
                let mut scratch = std::mem::take(&mut cx.data_mut().scratch);
                scratch.clear();
                scratch.extend_from_slice(key.as_le_slice(&cx));
                scratch.extend_from_slice(value.as_le_slice(&cx));
                let d = cx.data_mut();
                d.puts += 1;
                d.put(&scratch[..key.len()], &scratch[key.len()..]);
                d.scratch = scratch;
                Ok(())
            },
        )?;
        state.func_wrap(
            "get-at",
            |mut cx: StoreContextMut<'_, Data>, (i,): (u32,)| {
                let d = cx.data_mut();
                d.gets += 1;
                let r = Data::record_key(&d.batch_keys, &d.key_at, i)?;
                let key = &d.batch_keys[r];
                let v = match d.mode {
                    WriteMode::Overlay => d.overlay.get(key).or_else(|| d.committed.get(key)),
                    WriteMode::Undo => d.committed.get(key),
                };
                let v = v.filter(|v| v.len() == 16).map(|v| {
                    (
                        u64::from_le_bytes(v[..8].try_into().unwrap()),
                        i64::from_le_bytes(v[8..].try_into().unwrap()),
                    )
                });
                Ok((v,))
            },
        )?;
        state.func_wrap(
            "put-at",
            |mut cx: StoreContextMut<'_, Data>, (i, count, sum): (u32, u64, i64)| {
                let d = cx.data_mut();
                d.puts += 1;
                let r = Data::record_key(&d.batch_keys, &d.key_at, i)?;
                let keys = std::mem::take(&mut d.batch_keys);
                let mut value = [0u8; 16];
                value[..8].copy_from_slice(&count.to_le_bytes());
                value[8..].copy_from_slice(&sum.to_le_bytes());
                d.put(&keys[r], &value);
                d.batch_keys = keys;
                Ok(())
            },
        )?;
        let stop = Arc::new(AtomicBool::new(false));
        let (ticking, stopped) = (engine.clone(), stop.clone());
        std::thread::Builder::new()
            .name("epoch".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticking.increment_epoch();
                }
            })?;
        Ok(Runtime {
            engine,
            linker,
            _ticker: Ticker(stop),
        })
    }

    pub fn load(&self, path: &str) -> anyhow::Result<Component> {
        Ok(Component::from_file(&self.engine, path)?)
    }

    pub fn pre_a(&self, c: &Component) -> anyhow::Result<a::JobAPre<Data>> {
        Ok(a::JobAPre::new(self.linker.instantiate_pre(c)?)?)
    }
    pub fn pre_b(&self, c: &Component) -> anyhow::Result<b::JobBPre<Data>> {
        Ok(b::JobBPre::new(self.linker.instantiate_pre(c)?)?)
    }
    pub fn pre_c(&self, c: &Component) -> anyhow::Result<c::JobCPre<Data>> {
        Ok(c::JobCPre::new(self.linker.instantiate_pre(c)?)?)
    }

    pub fn store(&self, data: Data) -> Store<Data> {
        let mut store = Store::new(&self.engine, data);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(DEADLINE_TICKS);
        store
    }
}

/// Resets the call deadline, as Sluice does before every call.
#[inline]
pub fn arm(store: &mut Store<Data>) {
    store.set_epoch_deadline(DEADLINE_TICKS);
}
