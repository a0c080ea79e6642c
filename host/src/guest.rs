//! The thin wasmtime layer: engine configuration, loading and validating a
//! guest module, instantiation, calls, and turning traps into failures.
//!
//! Nothing outside this module names a wasmtime type. It does not know about
//! sources, state or checkpoints: it runs batches through a guest instance
//! and says what went wrong when a call fails.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::spec::{AggregateKind, Aggregation, DescribedLimits, Description, RestartStrategy};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "stream-job",
    });
}

use bindings::sluice::stream::types as wit;

/// The WIT package this host serves.
pub const WIT_PACKAGE: &str = "sluice:stream@0.1.0";
const OPERATOR_EXPORT: &str = "sluice:stream/operator@0.1.0";
const JOB_EXPORT: &str = "sluice:stream/job@0.1.0";

/// The largest module the host loads.
pub const MAX_MODULE_BYTES: usize = 256 << 20;
/// The highest `--max-memory` the engine is configured for.
pub const MAX_MEMORY_LIMIT: u64 = 4 << 30;

/// Why a module cannot be used as a Sluice guest. Always the user's input.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// The file cannot be read.
    #[error("cannot read module `{}`: {error}; check the path", path.display())]
    Read {
        /// The module's path.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// Anything else, already worded for the user.
    #[error("{0}")]
    Invalid(String),
}

/// How often the epoch ticks: the granularity of call deadlines.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Settings fixed per engine (so per process for the CLI).
#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    /// Count fuel, for `--fuel` budgets (costs some speed).
    pub fuel: bool,
    /// Largest wasm stack of a guest call, in bytes (`--max-stack`).
    pub max_stack: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            fuel: false,
            max_stack: DEFAULT_MAX_STACK,
        }
    }
}

/// Writes a compiled component into the cache: private directory, temporary
/// file, rename.
fn store_compiled(dir: &Path, path: &Path, component: &Component) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    private_dir(dir)?;
    let bytes = component.serialize()?;
    let temp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&temp, bytes)?;
    std::fs::rename(&temp, path)?;
    Ok(())
}

/// Checks that `dir` belongs to this process's user and no one else may write it.
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(dir)?;
    let me = std::fs::metadata("/proc/self")?.uid();
    if meta.uid() != me {
        anyhow::bail!("it belongs to another user (uid {})", meta.uid());
    }
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        anyhow::bail!("others may write it (mode {:o})", mode & 0o777);
    }
    Ok(())
}

/// Default wasm stack: 512 KiB (wasmtime's).
pub const DEFAULT_MAX_STACK: usize = 512 * 1024;

/// One shared engine and linker; many modules and jobs use it at once.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    linker: Arc<Linker<GuestState>>,
    options: EngineOptions,
    /// Where compiled modules are kept between runs; `None`: compile each time.
    cache: Option<Arc<PathBuf>>,
    _ticker: Arc<Ticker>,
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
struct Ticker(Arc<std::sync::atomic::AtomicBool>);

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Runtime {
    /// Creates the engine with default options.
    pub fn new() -> anyhow::Result<Self> {
        Self::with_options(EngineOptions::default())
    }

    /// Creates the engine: component model on, async concurrency off, epoch
    /// interruption for call deadlines, the pooling allocator so that a fresh
    /// instance after a trap is cheap.
    pub fn with_options(options: EngineOptions) -> anyhow::Result<Self> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.wasm_backtrace_max_frames(None);
        config.epoch_interruption(true);
        config.consume_fuel(options.fuel);
        config.max_wasm_stack(options.max_stack);
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        pool.total_component_instances(512)
            .total_core_instances(1024)
            .total_memories(1024)
            .total_tables(1024)
            .max_memory_size(MAX_MEMORY_LIMIT as usize);
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ticking = engine.clone();
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("sluice-epoch".into())
            .spawn(move || {
                while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticking.increment_epoch();
                }
            })?;
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

    /// Compiles a component, or loads it from the compile cache.
    fn compile(&self, bytes: &[u8]) -> wasmtime::Result<Component> {
        let Some(dir) = &self.cache else {
            return Component::new(&self.engine, bytes);
        };
        use std::hash::{Hash, Hasher};
        let mut engine = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut engine);
        let mut key = xxhash_rust::xxh3::Xxh3::new();
        key.update(bytes);
        key.update(&engine.finish().to_le_bytes());
        let path = dir.join(format!("{:032x}.cwasm", key.digest128()));
        if path.exists() {
            if let Err(e) = private_dir(dir) {
                tracing::warn!(
                    "not using the compile cache `{}`: {e}; make it private with `chmod 700`",
                    dir.display()
                );
                return Component::new(&self.engine, bytes);
            }
            // SAFETY: the file was written by `Component::serialize` of this
            // same engine configuration (its name says so), atomically, into a
            // directory only this user may write (see `with_compile_cache`).
            match unsafe { Component::deserialize_file(&self.engine, &path) } {
                Ok(component) => return Ok(component),
                Err(e) => tracing::debug!("compile cache: ignoring {}: {e}", path.display()),
            }
        }
        let component = Component::new(&self.engine, bytes)?;
        if let Err(e) = store_compiled(dir, &path, &component) {
            tracing::debug!("compile cache: cannot write {}: {e}", path.display());
        }
        Ok(component)
    }

    /// Reads, compiles and checks a guest module against `sluice:stream@0.1.0`.
    pub fn load(&self, path: &Path) -> Result<Module, ModuleError> {
        let size = std::fs::metadata(path)
            .map_err(|error| ModuleError::Read {
                path: path.to_owned(),
                error,
            })?
            .len();
        if size > MAX_MODULE_BYTES as u64 {
            return Err(ModuleError::Invalid(format!(
                "`{}` is {size} bytes, over the limit of {MAX_MODULE_BYTES} for a module; \
                 build it in release mode and strip it",
                path.display()
            )));
        }
        let bytes = std::fs::read(path).map_err(|error| ModuleError::Read {
            path: path.to_owned(),
            error,
        })?;
        self.load_bytes(path, &bytes)
    }

    fn load_bytes(&self, path: &Path, bytes: &[u8]) -> Result<Module, ModuleError> {
        let shown = path.display();
        if bytes.len() > MAX_MODULE_BYTES {
            return Err(ModuleError::Invalid(format!(
                "`{shown}` is {} bytes, over the limit of {MAX_MODULE_BYTES} for a module; \
                 build it in release mode and strip it",
                bytes.len()
            )));
        }
        let rebuild = format!("build it as a component against {WIT_PACKAGE} (see the README)");
        if !bytes.starts_with(b"\0asm") {
            return Err(ModuleError::Invalid(format!(
                "`{shown}` is not a WebAssembly file; {rebuild}"
            )));
        }
        if wasmparser::Parser::is_core_wasm(bytes) {
            return Err(ModuleError::Invalid(format!(
                "`{shown}` is a core WebAssembly module, not a component; build it for \
                 `wasm32-wasip2` or wrap it with `wasm-tools component new`"
            )));
        }
        let component = self.compile(bytes).map_err(|e| {
            ModuleError::Invalid(format!(
                "`{shown}` is not a valid WebAssembly component ({}); {rebuild}",
                first_line(&format!("{e:#}"))
            ))
        })?;
        let info = describe_component(&self.engine, &component);
        check_world(&shown.to_string(), &info)?;
        let pre = self.linker.instantiate_pre(&component).map_err(|e| {
            ModuleError::Invalid(format!(
                "`{shown}` needs an import this host does not provide: {}",
                first_line(&format!("{e:#}"))
            ))
        })?;
        let pre = bindings::StreamJobPre::new(pre).map_err(|e| {
            ModuleError::Invalid(format!(
                "`{shown}` does not match {WIT_PACKAGE}: {}; {rebuild}",
                first_line(&format!("{e:#}"))
            ))
        })?;
        Ok(Module {
            runtime: self.clone(),
            pre,
            info,
            digest: format!("{:016x}", xxhash_rust::xxh3::xxh3_64(bytes)),
            size: bytes.len(),
        })
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

fn check_world(shown: &str, info: &ModuleInfo) -> Result<(), ModuleError> {
    for needed in [OPERATOR_EXPORT, JOB_EXPORT] {
        if info.exports.iter().any(|e| e == needed) {
            continue;
        }
        let unversioned = needed.split('@').next().unwrap_or(needed);
        if let Some(other) = info
            .exports
            .iter()
            .find(|e| e.split('@').next() == Some(unversioned))
        {
            return Err(ModuleError::Invalid(format!(
                "`{shown}` was built against `{other}`, but this host serves {WIT_PACKAGE}; \
                 rebuild it with the matching SDK or run it on a host that serves that version"
            )));
        }
        let exports = if info.exports.is_empty() {
            "nothing".to_string()
        } else {
            info.exports
                .iter()
                .map(|e| format!("`{e}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(ModuleError::Invalid(format!(
            "`{shown}` does not export `{needed}` (it exports {exports}); \
             build it against {WIT_PACKAGE}, e.g. with `sluice_guest::export!`"
        )));
    }
    Ok(())
}

/// What a module declares: its imports and exports, by name.
#[derive(Debug, Clone)]
pub struct ModuleInfo {
    /// Imported interfaces and functions.
    pub imports: Vec<String>,
    /// Exported interfaces and functions.
    pub exports: Vec<String>,
    /// Functions of each exported Sluice interface, with their signatures.
    pub functions: Vec<String>,
}

fn describe_component(engine: &Engine, component: &Component) -> ModuleInfo {
    use wasmtime::component::types::ComponentItem;
    let ty = component.component_type();
    let imports = ty
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let mut exports = Vec::new();
    let mut functions = Vec::new();
    for (name, item) in ty.exports(engine) {
        exports.push(name.to_string());
        if let ComponentItem::ComponentInstance(instance) = item.ty {
            for (fname, fitem) in instance.exports(engine) {
                if let ComponentItem::ComponentFunc(func) = fitem.ty {
                    let params: Vec<String> = func
                        .params()
                        .map(|(p, t)| format!("{p}: {}", type_name(&t)))
                        .collect();
                    let results: Vec<String> = func.results().map(|t| type_name(&t)).collect();
                    let arrow = if results.is_empty() {
                        String::new()
                    } else {
                        format!(" -> {}", results.join(", "))
                    };
                    functions.push(format!("{name}.{fname}({}){arrow}", params.join(", ")));
                }
            }
        }
    }
    ModuleInfo {
        imports,
        exports,
        functions,
    }
}

fn type_name(ty: &wasmtime::component::types::Type) -> String {
    use wasmtime::component::types::Type;
    match ty {
        Type::List(l) => format!("list<{}>", type_name(&l.ty())),
        Type::Option(o) => format!("option<{}>", type_name(&o.ty())),
        Type::Result(_) => "result<..>".to_string(),
        Type::Record(_) => "record".to_string(),
        Type::Variant(_) => "variant".to_string(),
        Type::Tuple(t) => format!(
            "tuple<{}>",
            t.types()
                .map(|t| type_name(&t))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// A compiled, checked guest module, ready to instantiate many times.
#[derive(Clone)]
pub struct Module {
    runtime: Runtime,
    pre: bindings::StreamJobPre<GuestState>,
    info: ModuleInfo,
    digest: String,
    size: usize,
}

impl Module {
    /// Imports and exports.
    pub fn info(&self) -> &ModuleInfo {
        &self.info
    }

    /// A digest of the module's bytes (xxh3, hex).
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The module's size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The grants this module's imports need, or why it cannot run with `grants`.
    pub fn check_grants(&self, grants: &Grants) -> Result<(), String> {
        // Name the capability the module asks for before the types it drags in.
        let mut imports: Vec<&String> = self.info.imports.iter().collect();
        imports.sort_by_key(|i| !i.starts_with("wasi:filesystem/"));
        for import in imports {
            if let Some(missing) = grants.refuses(import) {
                return Err(format!(
                    "module imports `{import}`, which this job does not grant; {missing}"
                ));
            }
        }
        Ok(())
    }

    /// Creates a fresh instance with the default sandbox and calls its
    /// `open` with `params`.
    pub fn instantiate(&self, params: &[(String, String)]) -> Result<Instance, GuestFailure> {
        self.instantiate_with(params, &Sandbox::default())
    }

    /// Creates a fresh instance in `sandbox` and calls its `open` with `params`.
    pub fn instantiate_with(
        &self,
        params: &[(String, String)],
        sandbox: &Sandbox,
    ) -> Result<Instance, GuestFailure> {
        let log = GuestLog::new(sandbox.limits.log_bytes);
        let mut builder = WasiCtx::builder();
        builder.stdout(log.clone()).stderr(log.clone());
        for name in &sandbox.grants.env {
            if let Ok(value) = std::env::var(name) {
                builder.env(name, value);
            }
        }
        for dir in &sandbox.grants.dirs {
            let perms = if dir.read_only {
                wasmtime_wasi::FsPerms::ReadOnly
            } else {
                wasmtime_wasi::FsPerms::ReadWrite
            };
            builder
                .preopened_dir(&dir.host, &dir.guest, perms)
                .map_err(|e| GuestFailure {
                    message: format!(
                        "cannot grant directory `{}`: {e}; check that it exists",
                        dir.host.display()
                    ),
                    record: None,
                })?;
        }
        if !sandbox.grants.clocks {
            builder.wall_clock(FrozenClock).monotonic_clock(FrozenClock);
        }
        let wasi = builder.build();
        let mut store = Store::new(
            &self.runtime.engine,
            GuestState {
                wasi,
                table: ResourceTable::new(),
                limiter: MemoryLimiter {
                    limit: sandbox.limits.memory_bytes,
                    used: 0,
                },
            },
        );
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(sandbox.deadline_ticks());
        if self.runtime.options.fuel {
            let _ = store.set_fuel(sandbox.limits.fuel.unwrap_or(u64::MAX));
        }
        let bindings = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| GuestFailure::from_error("instantiating the guest", &e, &log))?;
        let mut instance = Instance {
            store,
            bindings,
            log,
            limits: sandbox.limits.clone(),
            ticks: sandbox.deadline_ticks(),
            fuel: self.runtime.options.fuel,
            max_stack: self.runtime.options.max_stack,
        };
        let opened = instance
            .bindings
            .sluice_stream_operator()
            .call_open(&mut instance.store, params);
        match opened {
            Ok(Ok(())) => Ok(instance),
            Ok(Err(message)) => Err(GuestFailure {
                message: format!("the guest's `open` failed: {message}"),
                record: None,
            }),
            Err(e) => {
                Err(instance.failure("starting the guest (its initialisation, then `open`)", &e))
            }
        }
    }

    /// Calls the guest's `describe` in a throwaway instance.
    pub fn describe(&self, params: &[(String, String)]) -> Result<Description, GuestFailure> {
        let mut instance = self.instantiate(params)?;
        instance.arm();
        let d = instance
            .bindings
            .sluice_stream_job()
            .call_describe(&mut instance.store, params)
            .map_err(|e| instance.failure("the guest's job description", &e))?;
        Ok(Description {
            name: d.name,
            source: d.source,
            sink: d.sink,
            aggregation: d.aggregation.map(|a| Aggregation {
                kind: match a.kind {
                    wit::AggregateKind::Sum => AggregateKind::Sum,
                    wit::AggregateKind::Count => AggregateKind::Count,
                    wit::AggregateKind::Min => AggregateKind::Min,
                    wit::AggregateKind::Max => AggregateKind::Max,
                },
                field: a.field,
            }),
            checkpoint_interval_ms: d.checkpoint_interval_ms,
            restart: d.restart.map(|r| match r {
                wit::RestartStrategy::None => RestartStrategy::None,
                wit::RestartStrategy::FixedDelay(f) => RestartStrategy::FixedDelay {
                    attempts: f.attempts,
                    delay_ms: f.delay_ms,
                },
                wit::RestartStrategy::FailureRate(f) => RestartStrategy::FailureRate {
                    max_failures: f.max_failures,
                    interval_ms: f.interval_ms,
                    delay_ms: f.delay_ms,
                },
                wit::RestartStrategy::ExponentialDelay(e) => RestartStrategy::Exponential {
                    initial_ms: e.initial_ms,
                    max_ms: e.max_ms,
                    multiplier: e.multiplier,
                    reset_after_ms: e.reset_after_ms,
                    jitter: e.jitter,
                },
            }),
            parallelism: d.parallelism,
            limits: d.limits.map(|l| DescribedLimits {
                memory_bytes: l.memory_bytes,
                call_timeout_ms: l.call_timeout_ms,
                max_rows_per_record: l.max_rows_per_record,
                max_bytes_per_record: l.max_bytes_per_record,
            }),
        })
    }
}

/// The store's data: WASI state that grants only what the job grants, and
/// the memory limiter.
struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
}

/// Caps the linear memory of all of an instance's memories together.
struct MemoryLimiter {
    limit: u64,
    used: u64,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.used + (desired - current) as u64;
        if total > self.limit {
            return Err(wasmtime::Error::msg(format!(
                "guest tried to grow its memory to {} bytes, over the limit of {} (--max-memory)",
                total, self.limit
            )));
        }
        self.used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            return Err(wasmtime::Error::msg(format!(
                "guest tried to grow a table to {desired} elements, over the limit of {MAX_TABLE_ELEMENTS}"
            )));
        }
        Ok(true)
    }
}

const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// Per-instance limits. Every breach is a trap with a message that names
/// the limit, its value and the flag that raises it.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Linear memory of all memories together, bytes (`--max-memory`).
    pub memory_bytes: u64,
    /// Wall-clock deadline of one guest call (`--call-timeout`).
    pub call_timeout: Duration,
    /// Fuel per call (`--fuel`), when the engine counts fuel.
    pub fuel: Option<u64>,
    /// Rows one input record may emit (`--max-rows-per-record`).
    pub rows_per_record: u32,
    /// Output bytes one input record may emit (`--max-bytes-per-record`).
    pub bytes_per_record: u64,
    /// Guest stdout and stderr kept per call (`--max-guest-log`).
    pub log_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 64 << 20,
            call_timeout: Duration::from_secs(10),
            fuel: None,
            rows_per_record: 100_000,
            bytes_per_record: 16 << 20,
            log_bytes: 16 << 10,
        }
    }
}

/// The clock a guest without `--allow-clocks` sees: always zero.
struct FrozenClock;

impl wasmtime_wasi::HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl wasmtime_wasi::HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// A directory the job grants its guests.
#[derive(Debug, Clone)]
pub struct DirGrant {
    /// The directory on the host.
    pub host: PathBuf,
    /// Where the guest sees it.
    pub guest: String,
    /// Read-only.
    pub read_only: bool,
}

impl DirGrant {
    /// Parses `HOST_DIR[:GUEST_DIR][:ro]`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (rest, read_only) = match s.strip_suffix(":ro") {
            Some(rest) => (rest, true),
            None => (s, false),
        };
        let (host, guest) = match rest.split_once(':') {
            Some((h, g)) => (h, g.to_string()),
            None => (rest, rest.to_string()),
        };
        if host.is_empty() || guest.is_empty() {
            return Err(format!("`{s}` is not HOST_DIR[:GUEST_DIR][:ro]"));
        }
        Ok(DirGrant {
            host: PathBuf::from(host),
            guest,
            read_only,
        })
    }
}

/// What a job grants its guests beyond computing: by default nothing.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// Directories (`--allow-dir`).
    pub dirs: Vec<DirGrant>,
    /// Environment variables passed through (`--allow-env`).
    pub env: Vec<String>,
    /// Wall and monotonic clocks (`--allow-clocks`).
    pub clocks: bool,
    /// Randomness (`--allow-random`).
    pub random: bool,
}

impl Grants {
    /// `None` when `import` is allowed, else what to pass to allow it.
    pub fn refuses(&self, import: &str) -> Option<String> {
        let name = import.split('@').next().unwrap_or(import);
        let (package, _) = name.split_once('/').unwrap_or((name, ""));
        match package {
            "sluice:stream" | "wasi:io" => None,
            "wasi:cli" => None,
            "wasi:filesystem" if self.dirs.is_empty() => {
                Some("pass --allow-dir HOST_DIR[:GUEST_DIR][:ro] to give it a directory".into())
            }
            "wasi:filesystem" => None,
            // The filesystem's types name wall-clock datetimes, so a guest
            // granted a directory imports the wall clock; it reads a frozen
            // clock (0) unless --allow-clocks.
            "wasi:clocks" if self.clocks => None,
            "wasi:clocks" if !self.dirs.is_empty() && name == "wasi:clocks/wall-clock" => None,
            "wasi:clocks" => Some("pass --allow-clocks to give it the time".into()),
            "wasi:random" if !self.random => {
                Some("pass --allow-random to give it randomness".into())
            }
            "wasi:random" => None,
            "wasi:sockets" => Some("guests get no network access".into()),
            _ => Some("the host does not provide it".into()),
        }
    }

    /// The flags a module with these imports needs, for `host inspect`.
    pub fn needed(imports: &[String]) -> Vec<&'static str> {
        let mut needed = Vec::new();
        let files = imports.iter().any(|i| i.starts_with("wasi:filesystem/"));
        for i in imports {
            let flag = if i.starts_with("wasi:filesystem/") {
                "--allow-dir"
            } else if files && i.starts_with("wasi:clocks/wall-clock@") {
                // Comes with the filesystem's types; frozen unless --allow-clocks.
                continue;
            } else if i.starts_with("wasi:clocks/") {
                "--allow-clocks"
            } else if i.starts_with("wasi:random/") {
                "--allow-random"
            } else if i.starts_with("wasi:sockets/") {
                "network (never granted)"
            } else {
                continue;
            };
            if !needed.contains(&flag) {
                needed.push(flag);
            }
        }
        needed
    }
}

/// Limits and grants for a job's instances.
#[derive(Debug, Clone, Default)]
pub struct Sandbox {
    /// Limits.
    pub limits: Limits,
    /// Grants.
    pub grants: Grants,
}

impl Sandbox {
    fn deadline_ticks(&self) -> u64 {
        (self.limits.call_timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64 + 1
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A live guest instance. One per subtask; dropped after any trap.
pub struct Instance {
    store: Store<GuestState>,
    bindings: bindings::StreamJob,
    log: GuestLog,
    limits: Limits,
    ticks: u64,
    fuel: bool,
    max_stack: usize,
}

/// The output of one batch: encoded rows and keys, and the failing record.
pub struct BatchOutput {
    /// `record-output*` as `wit/stream.wit` documents it.
    pub output: Vec<u8>,
    /// A record the guest failed without trapping: its index and message.
    pub failed: Option<(u32, String)>,
}

impl Instance {
    /// Resets the call deadline and the fuel budget before a call.
    fn arm(&mut self) {
        self.store.set_epoch_deadline(self.ticks);
        if self.fuel {
            let _ = self.store.set_fuel(self.limits.fuel.unwrap_or(u64::MAX));
        }
    }

    /// Runs flat-map on an encoded batch; with `keyed`, chained with the
    /// key-selector (`flat-map-keyed`).
    pub fn flat_map(&mut self, records: &[u8], keyed: bool) -> Result<BatchOutput, GuestFailure> {
        self.arm();
        let operator = self.bindings.sluice_stream_operator();
        let result = if keyed {
            operator.call_flat_map_keyed(&mut self.store, records)
        } else {
            operator.call_flat_map(&mut self.store, records)
        };
        match result {
            Ok(r) => Ok(BatchOutput {
                output: r.output,
                failed: r.failed.map(|e| (e.index, e.message)),
            }),
            Err(e) => Err(self.failure("flat-map", &e)),
        }
    }

    /// What the guest wrote to stdout and stderr since the last call, for the log.
    pub fn take_log(&self) -> String {
        self.log.take()
    }

    fn failure(&self, during: &str, e: &wasmtime::Error) -> GuestFailure {
        let mut f = GuestFailure::from_error(during, e, &self.log);
        match e.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => {
                f.message = format!(
                    "{during} failed: the guest ran past its call deadline of {} ms (raise it with --call-timeout)",
                    self.limits.call_timeout.as_millis()
                );
            }
            Some(wasmtime::Trap::OutOfFuel) => {
                f.message = format!(
                    "{during} failed: the guest used up its fuel budget of {} per call (raise it with --fuel)",
                    self.limits.fuel.unwrap_or(0)
                );
            }
            Some(wasmtime::Trap::StackOverflow) => {
                f.message = format!(
                    "{during} failed: the guest overflowed its wasm stack of {} bytes (raise it with --max-stack)",
                    self.max_stack
                );
            }
            _ => {}
        }
        f
    }
}

/// A guest call that failed: a trap or an error the guest returned.
#[derive(Debug, Clone)]
pub struct GuestFailure {
    /// What happened, in one line, with the guest's own message when it
    /// printed one (a Rust panic message, for example).
    pub message: String,
    /// The failing record's index in the batch, when the guest said which.
    pub record: Option<u32>,
}

impl GuestFailure {
    fn from_error(during: &str, e: &wasmtime::Error, log: &GuestLog) -> Self {
        let printed = log.take();
        if e.downcast_ref::<wasmtime::Trap>().is_none() {
            // A limit the host enforces: its own message says it all.
            let message = format!("{during} failed: {}", first_line(&format!("{e:#}")));
            if message.contains("(--max-memory)") || message.contains("over the limit of") {
                return GuestFailure {
                    message,
                    record: None,
                };
            }
        }
        let said = printed
            .lines()
            .rev()
            .find(|l| l.contains("panicked"))
            .or_else(|| printed.lines().rev().find(|l| !l.trim().is_empty()))
            .map(str::trim);
        let trap = match e.downcast_ref::<wasmtime::Trap>() {
            Some(trap) => trap.to_string(),
            None => first_line(&format!("{e:#}")).to_string(),
        };
        let message = match said {
            Some(said) => format!("{during} failed: guest {said} ({trap})"),
            None => format!("{during} failed: {trap}"),
        };
        GuestFailure {
            message,
            record: None,
        }
    }
}

impl fmt::Display for GuestFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for GuestFailure {}

/// A bounded capture of a guest's stdout and stderr. Writes past the
/// capacity are dropped (and counted), never refused, so a chatty guest is
/// not failed for it.
#[derive(Clone)]
struct GuestLog {
    inner: Arc<Mutex<GuestLogInner>>,
}

struct GuestLogInner {
    text: Vec<u8>,
    dropped: usize,
    capacity: usize,
}

impl GuestLog {
    fn new(capacity: usize) -> Self {
        GuestLog {
            inner: Arc::new(Mutex::new(GuestLogInner {
                text: Vec::new(),
                dropped: 0,
                capacity,
            })),
        }
    }

    fn append(&self, bytes: &[u8]) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let room = inner.capacity.saturating_sub(inner.text.len());
        let keep = bytes.len().min(room);
        inner.text.extend_from_slice(&bytes[..keep]);
        inner.dropped += bytes.len() - keep;
    }

    fn take(&self) -> String {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut text = String::from_utf8_lossy(&inner.text).into_owned();
        if inner.dropped > 0 {
            text.push_str(&format!("\n[{} more bytes dropped]", inner.dropped));
        }
        inner.text.clear();
        inner.dropped = 0;
        text
    }
}

impl wasmtime_wasi::cli::IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for GuestLog {
    fn p2_stream(&self) -> Box<dyn wasmtime_wasi::p2::OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(tokio::io::sink())
    }
}

#[async_trait::async_trait]
impl wasmtime_wasi::p2::Pollable for GuestLog {
    async fn ready(&mut self) {}
}

impl wasmtime_wasi::p2::OutputStream for GuestLog {
    fn write(&mut self, bytes: bytes::Bytes) -> wasmtime_wasi::p2::StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> wasmtime_wasi::p2::StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> wasmtime_wasi::p2::StreamResult<usize> {
        Ok(64 * 1024)
    }
}
