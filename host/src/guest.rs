//! The thin wasmtime layer: engine configuration, loading and validating a
//! guest module, instantiation, calls, and turning traps into failures.
//!
//! Nothing outside this module names a wasmtime type. It does not know about
//! sources, state or checkpoints: it runs batches through a guest instance
//! and says what went wrong when a call fails.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::spec::{AggregateKind, Aggregation, Description, RestartStrategy};

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

/// How much of a guest's stdout and stderr is kept per instance for the log.
const GUEST_LOG_CAPACITY: usize = 16 * 1024;

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

/// One shared engine and linker; many modules and jobs use it at once.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    linker: Arc<Linker<GuestState>>,
}

impl Runtime {
    /// Creates the engine (component model on, async concurrency off).
    pub fn new() -> anyhow::Result<Self> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.wasm_backtrace_max_frames(None);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        Ok(Runtime {
            engine,
            linker: Arc::new(linker),
        })
    }

    /// Reads, compiles and checks a guest module against `sluice:stream@0.1.0`.
    pub fn load(&self, path: &Path) -> Result<Module, ModuleError> {
        let bytes = std::fs::read(path).map_err(|error| ModuleError::Read {
            path: path.to_owned(),
            error,
        })?;
        self.load_bytes(path, &bytes)
    }

    fn load_bytes(&self, path: &Path, bytes: &[u8]) -> Result<Module, ModuleError> {
        let shown = path.display();
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
        let component = Component::new(&self.engine, bytes).map_err(|e| {
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

    /// Creates a fresh instance and calls its `open` with `params`.
    pub fn instantiate(&self, params: &[(String, String)]) -> Result<Instance, GuestFailure> {
        let log = GuestLog::default();
        let wasi = WasiCtx::builder()
            .stdout(log.clone())
            .stderr(log.clone())
            .build();
        let mut store = Store::new(
            &self.runtime.engine,
            GuestState {
                wasi,
                table: ResourceTable::new(),
            },
        );
        let bindings = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| GuestFailure::from_error("instantiating the guest", &e, &log))?;
        let mut instance = Instance {
            store,
            bindings,
            log,
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
            Err(e) => Err(instance.failure("the guest's `open`", &e)),
        }
    }

    /// Calls the guest's `describe` in a throwaway instance.
    pub fn describe(&self, params: &[(String, String)]) -> Result<Description, GuestFailure> {
        let mut instance = self.instantiate(params)?;
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
        })
    }
}

/// The store's data: WASI state that grants nothing but captured stdio.
struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
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
}

/// The output of one batch: encoded rows and keys, and the failing record.
pub struct BatchOutput {
    /// `record-output*` as `wit/stream.wit` documents it.
    pub output: Vec<u8>,
    /// A record the guest failed without trapping: its index and message.
    pub failed: Option<(u32, String)>,
}

impl Instance {
    /// Runs flat-map and key-selector on an encoded batch.
    pub fn flat_map_keyed(&mut self, records: &[u8]) -> Result<BatchOutput, GuestFailure> {
        let result = self
            .bindings
            .sluice_stream_operator()
            .call_flat_map_keyed(&mut self.store, records);
        match result {
            Ok(r) => Ok(BatchOutput {
                output: r.output,
                failed: r.failed.map(|e| (e.index, e.message)),
            }),
            Err(e) => Err(self.failure("flat-map", &e)),
        }
    }

    /// Runs flat-map alone on an encoded batch.
    pub fn flat_map(&mut self, records: &[u8]) -> Result<BatchOutput, GuestFailure> {
        let result = self
            .bindings
            .sluice_stream_operator()
            .call_flat_map(&mut self.store, records);
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
        GuestFailure::from_error(during, e, &self.log)
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
#[derive(Clone, Default)]
struct GuestLog {
    inner: Arc<Mutex<GuestLogInner>>,
}

#[derive(Default)]
struct GuestLogInner {
    text: Vec<u8>,
    dropped: usize,
}

impl GuestLog {
    fn append(&self, bytes: &[u8]) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let room = GUEST_LOG_CAPACITY.saturating_sub(inner.text.len());
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
