//! The compile cache: a module is compiled to native code once and kept,
//! keyed by its bytes and the engine's settings, in a directory only this
//! user may write (the files are native code this process runs).

use std::path::Path;

use wasmtime::component::Component;

use crate::wasm::engine::Runtime;

impl Runtime {
    /// Compiles a component, or loads it from the compile cache.
    pub(crate) fn compile(&self, shown: &str, bytes: &[u8]) -> wasmtime::Result<Component> {
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
                    "module `{shown}`: not using the compile cache `{}`: {e}; make it private with `chmod 700`",
                    dir.display()
                );
                return Component::new(&self.engine, bytes);
            }
            // SAFETY: the file was written by `Component::serialize` of this
            // same engine configuration (its name says so), atomically, into a
            // directory only this user may write (see `with_compile_cache`).
            match unsafe { Component::deserialize_file(&self.engine, &path) } {
                Ok(component) => return Ok(component),
                Err(e) => tracing::debug!(
                    "module `{shown}`: compile cache: ignoring {}: {e}",
                    path.display()
                ),
            }
        }
        let component = Component::new(&self.engine, bytes)?;
        if let Err(e) = store_compiled(dir, &path, &component) {
            tracing::debug!(
                "module `{shown}`: compile cache: cannot write {}: {e}",
                path.display()
            );
        }
        Ok(component)
    }
}

/// Writes a compiled component into the cache: private directory, temporary
/// file, rename.
fn store_compiled(dir: &Path, path: &Path, component: &Component) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| e.to_string())?;
    private_dir(dir)?;
    let bytes = component.serialize().map_err(|e| e.to_string())?;
    let temp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&temp, bytes).map_err(|e| e.to_string())?;
    std::fs::rename(&temp, path).map_err(|e| e.to_string())
}

/// Checks that `dir` belongs to this process's user and no one else may write it.
fn private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(dir).map_err(|e| e.to_string())?;
    let me = std::fs::metadata("/proc/self")
        .map_err(|e| e.to_string())?
        .uid();
    if meta.uid() != me {
        return Err(format!("it belongs to another user (uid {})", meta.uid()));
    }
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(format!("others may write it (mode {:o})", mode & 0o777));
    }
    Ok(())
}
