//! The engine: one wasmtime `Engine` and `Linker` shared by every module and
//! job of a process, configured once (component model on, async
//! concurrency off, epoch interruption for call deadlines, the pooling
//! allocator so a fresh instance after a trap is cheap), and the thread that
//! ticks the epoch.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use wasmtime::component::Linker;
use wasmtime::{Config, Engine};

use crate::config::sandbox::{DEFAULT_MAX_STACK, MAX_MEMORY_LIMIT};
use crate::wasm::sandbox::{EPOCH_TICK, GuestState};
pub use crate::wasm::types::EngineError;

/// Settings fixed per engine (so per process for the CLI).
#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    /// Count fuel, for `--fuel` budgets (costs some speed).
    pub fuel: bool,
    /// Largest wasm stack of a guest call, in bytes (`--max-stack`).
    pub max_stack: usize,
    /// Guest instances the pooling allocator holds at once (a server sizes
    /// it from its tenants' quotas); each reserves address space, not memory.
    pub instances: u32,
}

/// Default size of the instance pool.
pub const DEFAULT_INSTANCES: u32 = 512;

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            fuel: false,
            max_stack: DEFAULT_MAX_STACK,
            instances: DEFAULT_INSTANCES,
        }
    }
}

/// One shared engine and linker; many modules and jobs use it at once.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Arc<Linker<GuestState>>,
    pub(crate) options: EngineOptions,
    /// Where compiled modules are kept between runs; `None`: compile each time.
    pub(crate) cache: Option<Arc<PathBuf>>,
    _ticker: Arc<Ticker>,
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
struct Ticker(Arc<AtomicBool>);

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Runtime {
    /// Creates the engine with default options.
    pub fn new() -> Result<Self, EngineError> {
        Self::with_options(EngineOptions::default())
    }

    /// Creates the engine: component model on, async concurrency off, epoch
    /// interruption for call deadlines, the pooling allocator so that a fresh
    /// instance after a trap is cheap.
    pub fn with_options(options: EngineOptions) -> Result<Self, EngineError> {
        Self::build(options, true)
    }

    /// An engine that only compiles (a child process compiling an untrusted
    /// module under memory and time limits): the same settings, so what it
    /// compiles loads into [`Runtime::with_options`]'s engine, without the
    /// instance pool's address-space reservation or the epoch thread.
    pub fn compiler(options: EngineOptions) -> Result<Self, EngineError> {
        Self::build(options, false)
    }

    fn build(options: EngineOptions, pooling: bool) -> Result<Self, EngineError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.wasm_backtrace_max_frames(None);
        config.epoch_interruption(true);
        config.consume_fuel(options.fuel);
        config.max_wasm_stack(options.max_stack);
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        // A Rust guest for wasm32-wasip2 is about four core instances (its
        // module and the WASI adapter's shims) with one or two memories.
        let instances = options.instances.max(1);
        pool.total_component_instances(instances)
            .total_core_instances(instances.saturating_mul(5))
            .total_memories(instances.saturating_mul(2))
            .total_tables(instances.saturating_mul(4))
            .max_memory_size(MAX_MEMORY_LIMIT as usize);
        if pooling {
            config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&config).map_err(|e| EngineError(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| EngineError(format!("{e:#}")))?;
        let stop = Arc::new(AtomicBool::new(!pooling));
        let ticking = engine.clone();
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("sluice-epoch".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticking.increment_epoch();
                }
            })
            .map_err(|e| EngineError(format!("cannot start the epoch thread: {e}")))?;
        Ok(Runtime {
            engine,
            linker: Arc::new(linker),
            options,
            cache: None,
            _ticker: Arc::new(Ticker(stop)),
        })
    }

    /// Keeps compiled modules in `dir` (created with mode 0700), so a module
    /// is compiled once, not at every start. The files are native code this
    /// process loads and runs: `dir` must be writable by this user only.
    pub fn with_compile_cache(mut self, dir: Option<PathBuf>) -> Self {
        self.cache = dir.map(Arc::new);
        self
    }

    /// The engine's settings.
    pub fn options(&self) -> EngineOptions {
        self.options
    }
}
