//! Modules compiled ahead, for a server that must not compile untrusted
//! code in its own process: [`precheck`] reads a module's exports and
//! checks them against the served worlds without compiling anything;
//! [`Runtime::precompile`] (run in a child process under memory and time
//! limits) checks and compiles a module and serializes it; and
//! [`Runtime::load_precompiled`] loads what it wrote.

use wasmtime::component::Component;

use crate::wasm::engine::Runtime;
use crate::wasm::module::{Module, check_bytes, not_component};
use crate::wasm::types::ModuleError;
use crate::wasm::world::{self, Version};

/// Checks a module's bytes — size, a component, its exports against the
/// worlds this host serves — by reading its sections only, without
/// compiling it (cheap, safe for any input). The version it implements.
pub fn precheck(shown: &str, bytes: &[u8]) -> Result<Version, ModuleError> {
    check_bytes(shown, bytes)?;
    let mut depth = 0usize;
    let mut exports = Vec::new();
    let malformed = |e: wasmparser::BinaryReaderError| {
        ModuleError::Invalid(format!(
            "`{shown}` is not a valid WebAssembly component ({e}); build it as a component against {} (see the README)",
            world::SERVED
        ))
    };
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        use wasmparser::Payload;
        match payload.map_err(malformed)? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader {
                    exports.push(export.map_err(malformed)?.name.0.to_string());
                }
            }
            _ => {}
        }
    }
    world::detect(shown, &exports)
}

impl Runtime {
    /// Checks a module as [`Runtime::load_bytes`] does and compiles it
    /// (never through the compile cache); the compiled form, for
    /// [`Runtime::load_precompiled`] of an engine with the same options.
    pub fn precompile(&self, shown: &str, bytes: &[u8]) -> Result<Vec<u8>, ModuleError> {
        check_bytes(shown, bytes)?;
        let component =
            Component::new(&self.engine, bytes).map_err(|e| not_component(shown, &e))?;
        self.finish(shown, bytes, component.clone())?;
        component.serialize().map_err(|e| {
            ModuleError::Invalid(format!("`{shown}` compiled but cannot be serialized: {e}"))
        })
    }

    /// Loads a module `bytes` that [`Runtime::precompile`] compiled into
    /// `compiled`, checking it against the served worlds again.
    ///
    /// # Safety
    ///
    /// `compiled` is native code this process will run: it must be what
    /// `precompile` wrote, for an engine with these options, kept where
    /// nobody else could change it since.
    pub unsafe fn load_precompiled(
        &self,
        shown: &str,
        bytes: &[u8],
        compiled: &[u8],
    ) -> Result<Module, ModuleError> {
        // SAFETY: the caller guarantees `compiled` is `Component::serialize`
        // output of a compatible engine, unchanged; wasmtime checks the
        // engine's compatibility itself.
        let component = unsafe { Component::deserialize(&self.engine, compiled) }.map_err(|e| {
            ModuleError::Invalid(format!(
                "the compiled form of `{shown}` cannot be loaded ({e}); compile it again"
            ))
        })?;
        self.finish(shown, bytes, component)
    }
}
