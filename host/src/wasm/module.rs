//! Loading a guest module: reading it, checking that it is a component of a
//! world this host serves before anything else, compiling it (through the
//! compile cache) and pre-instantiating it, so that instances are cheap.
//! Every refusal is the user's input and says what to do.

use std::path::Path;

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::config::sandbox::Grants;
use crate::wasm::engine::Runtime;
pub use crate::wasm::types::ModuleError;
use crate::wasm::types::first_line;
use crate::wasm::world::{self, Pre};

/// The largest module the host loads.
pub const MAX_MODULE_BYTES: usize = 256 << 20;

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

/// A compiled, checked guest module, ready to instantiate many times.
#[derive(Clone)]
pub struct Module {
    pub(crate) runtime: Runtime,
    pub(crate) pre: Pre,
    info: ModuleInfo,
    digest: String,
    size: usize,
}

impl Runtime {
    /// Reads, compiles and checks a guest module against the worlds this
    /// host serves.
    pub fn load(&self, path: &Path) -> Result<Module, ModuleError> {
        let read = |error| ModuleError::Read {
            path: path.to_owned(),
            error,
        };
        let size = std::fs::metadata(path).map_err(read)?.len();
        if size > MAX_MODULE_BYTES as u64 {
            return Err(too_big(&path.display().to_string(), size));
        }
        let bytes = std::fs::read(path).map_err(read)?;
        self.load_bytes(&path.display().to_string(), &bytes)
    }

    /// Checks and compiles a module from its bytes; `shown` names it in
    /// messages.
    pub fn load_bytes(&self, shown: &str, bytes: &[u8]) -> Result<Module, ModuleError> {
        check_bytes(shown, bytes)?;
        let component = self
            .compile(shown, bytes)
            .map_err(|e| not_component(shown, &e))?;
        self.finish(shown, bytes, component)
    }

    /// Checks a compiled component against the served worlds and
    /// pre-instantiates it.
    pub(crate) fn finish(
        &self,
        shown: &str,
        bytes: &[u8],
        component: Component,
    ) -> Result<Module, ModuleError> {
        let info = describe_component(&self.engine, &component);
        let version = world::detect(shown, &info.exports)?;
        let pre = self.linker.instantiate_pre(&component).map_err(|e| {
            ModuleError::Invalid(format!(
                "`{shown}` needs an import this host does not provide: {}",
                first_line(&format!("{e:#}"))
            ))
        })?;
        let pre = Pre::new(version, pre).map_err(|e| {
            ModuleError::Invalid(format!(
                "`{shown}` does not match {}: {}; {}",
                version.package(),
                first_line(&format!("{e:#}")),
                rebuild()
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

/// What to do about a module that is not a guest.
fn rebuild() -> String {
    format!(
        "build it as a component against {} (see the README)",
        world::SERVED
    )
}

/// Refuses what is too big, not wasm or a core module, before compiling.
pub(crate) fn check_bytes(shown: &str, bytes: &[u8]) -> Result<(), ModuleError> {
    if bytes.len() > MAX_MODULE_BYTES {
        return Err(too_big(shown, bytes.len() as u64));
    }
    if !bytes.starts_with(b"\0asm") {
        return Err(ModuleError::Invalid(format!(
            "`{shown}` is not a WebAssembly file; {}",
            rebuild()
        )));
    }
    if wasmparser::Parser::is_core_wasm(bytes) {
        return Err(ModuleError::Invalid(format!(
            "`{shown}` is a core WebAssembly module, not a component; build it for \
             `wasm32-wasip2` or wrap it with `wasm-tools component new`"
        )));
    }
    Ok(())
}

/// A component that does not compile.
pub(crate) fn not_component(shown: &str, e: &wasmtime::Error) -> ModuleError {
    ModuleError::Invalid(format!(
        "`{shown}` is not a valid WebAssembly component ({}); {}",
        first_line(&format!("{e:#}")),
        rebuild()
    ))
}

fn too_big(shown: &str, size: u64) -> ModuleError {
    ModuleError::Invalid(format!(
        "`{shown}` is {size} bytes, over the limit of {MAX_MODULE_BYTES} for a module; \
         build it in release mode and strip it"
    ))
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

    /// The WIT package the module implements.
    pub fn wit_package(&self) -> &'static str {
        self.pre.version().package()
    }

    /// The world it targets in that package.
    pub fn wit_world(&self) -> &'static str {
        self.pre.version().world()
    }

    /// The grants this module's imports need, or why it cannot run with `grants`.
    pub fn check_grants(&self, grants: &Grants) -> Result<(), ModuleError> {
        // Name the capability the module asks for before the types it drags in.
        let mut imports: Vec<&String> = self.info.imports.iter().collect();
        imports.sort_by_key(|i| !i.starts_with("wasi:filesystem/"));
        for import in imports {
            if let Some(missing) = grants.refuses(import) {
                return Err(ModuleError::Invalid(format!(
                    "module imports `{import}`, which this job does not grant; {missing}"
                )));
            }
        }
        Ok(())
    }
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
        let ComponentItem::ComponentInstance(instance) = item.ty else {
            continue;
        };
        for (fname, fitem) in instance.exports(engine) {
            if let ComponentItem::ComponentFunc(func) = fitem.ty {
                functions.push(signature(name, fname, &func));
            }
        }
    }
    ModuleInfo {
        imports,
        exports,
        functions,
    }
}

fn signature(
    interface: &str,
    name: &str,
    func: &wasmtime::component::types::ComponentFunc,
) -> String {
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
    format!("{interface}.{name}({}){arrow}", params.join(", "))
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
