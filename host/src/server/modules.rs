//! A tenant's modules: uploaded as raw bytes, checked against the served
//! WIT worlds before anything else, content-addressed by sha256, compiled
//! once in a child process under memory and time limits ([`compile`]),
//! kept compiled (`modules/DIGEST/{module.wasm,module.cwasm,module.json}`)
//! and loaded from there without compiling again.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use crate::server::compile::{self, CompileLimits};
use crate::server::disk;
use crate::server::error::AppError;
use crate::server::tenants::Tenant;
use crate::wasm::{Module, Runtime};

/// What the server keeps of a module.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct ModuleRecord {
    /// The sha256 of its bytes, hex: its name.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
    /// The WIT package it implements.
    pub wit: String,
    /// When it was uploaded (Unix ms).
    pub uploaded_ms: u64,
    /// What it imports.
    pub imports: Vec<String>,
    /// What it exports.
    pub exports: Vec<String>,
    /// Its exported functions with their signatures.
    pub functions: Vec<String>,
    /// The grants its imports need (`--allow-clocks`, ...).
    pub needs: Vec<String>,
    /// How long compiling it took, in milliseconds.
    pub compile_ms: u64,
}

/// Every tenant's modules, loaded as they are first used.
pub struct Modules {
    runtime: Runtime,
    limits: CompileLimits,
    loaded: RwLock<HashMap<(String, String), Module>>,
    compiling: tokio::sync::Semaphore,
}

impl std::fmt::Debug for Modules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Modules").finish_non_exhaustive()
    }
}

fn dir_of(tenant: &Tenant, digest: &str) -> PathBuf {
    tenant.sub("modules").join(digest)
}

impl Modules {
    /// Modules compiled for `runtime`, in child processes under `limits`.
    pub fn new(runtime: Runtime, limits: CompileLimits) -> Self {
        Modules {
            runtime,
            limits,
            loaded: RwLock::new(HashMap::new()),
            compiling: tokio::sync::Semaphore::new(1),
        }
    }

    /// The engine modules are loaded into.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The record of module `digest` of `tenant`.
    pub fn record(&self, tenant: &Tenant, digest: &str) -> Option<ModuleRecord> {
        if !disk::valid_id(digest) {
            return None;
        }
        disk::read_json(&dir_of(tenant, digest).join("module.json"))
            .ok()
            .flatten()
    }

    /// Every module of `tenant`, oldest first.
    pub fn list(&self, tenant: &Tenant) -> Vec<ModuleRecord> {
        let mut list: Vec<ModuleRecord> = std::fs::read_dir(tenant.sub("modules"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                disk::read_json(&e.path().join("module.json"))
                    .ok()
                    .flatten()
            })
            .collect();
        list.sort_by(|a: &ModuleRecord, b| {
            (a.uploaded_ms, &a.digest).cmp(&(b.uploaded_ms, &b.digest))
        });
        list
    }

    /// Module `digest` of `tenant`, compiled, loading it from its compiled
    /// form the first time.
    pub fn get(&self, tenant: &Tenant, digest: &str) -> Result<Module, AppError> {
        let key = (tenant.name.clone(), digest.to_string());
        if let Some(m) = self
            .loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(m.clone());
        }
        let missing = || {
            AppError::NotFound(format!(
                "no module `{}`",
                crate::server::auth::shown(digest)
            ))
        };
        if self.record(tenant, digest).is_none() {
            return Err(missing());
        }
        let dir = dir_of(tenant, digest);
        let bytes = std::fs::read(dir.join("module.wasm"))?;
        let compiled = std::fs::read(dir.join("module.cwasm"))?;
        // SAFETY: `module.cwasm` was written by this server's own compile
        // child for this engine's options, into the server's data
        // directory, which only the server's user may write.
        let module =
            unsafe { self.runtime.load_precompiled(digest, &bytes, &compiled) }.map_err(|e| {
                AppError::Unavailable(format!("module `{digest}` cannot be loaded: {e}"))
            })?;
        self.loaded
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, module.clone());
        Ok(module)
    }

    /// Checks, compiles (in a child process) and keeps `bytes` as a module
    /// of `tenant`; `(record, true)` when it was new.
    pub async fn upload(
        &self,
        tenant: &Tenant,
        bytes: Vec<u8>,
    ) -> Result<(ModuleRecord, bool), AppError> {
        let digest = disk::sha256(&bytes);
        crate::wasm::compiled::precheck("the upload", &bytes)
            .map_err(|e| AppError::Invalid(e.to_string()))?;
        if let Some(record) = self.record(tenant, &digest) {
            return Ok((record, false));
        }
        let _turn = self
            .compiling
            .acquire()
            .await
            .map_err(|_| AppError::Unavailable("the server is shutting down".into()))?;
        let staging = tenant
            .sub("modules")
            .join(format!(".upload-{}", disk::new_id()));
        std::fs::create_dir_all(&staging)?;
        let result = self.compile_into(tenant, &digest, &bytes, &staging).await;
        let _ = std::fs::remove_dir_all(&staging);
        result.map(|r| (r, true))
    }

    async fn compile_into(
        &self,
        tenant: &Tenant,
        digest: &str,
        bytes: &[u8],
        staging: &std::path::Path,
    ) -> Result<ModuleRecord, AppError> {
        let input = staging.join("module.wasm");
        let output = staging.join("module.cwasm");
        std::fs::write(&input, bytes)?;
        let started = std::time::Instant::now();
        let nice = crate::config::sandbox::CpuMeter::niceness(&*tenant.cpu);
        compile::run_child(&input, &output, &self.limits, nice).await?;
        let compile_ms = started.elapsed().as_millis() as u64;
        let compiled = std::fs::read(&output)?;
        let runtime = self.runtime.clone();
        let (owned, name) = (bytes.to_vec(), digest.to_string());
        // SAFETY: `compiled` was just written by our own compile child.
        let module = tokio::task::spawn_blocking(move || unsafe {
            runtime.load_precompiled(&name, &owned, &compiled)
        })
        .await
        .map_err(|e| AppError::Internal(format!("loading a module panicked: {e}")))?
        .map_err(|e| AppError::Invalid(e.to_string()))?;
        let info = module.info();
        let record = ModuleRecord {
            digest: digest.to_string(),
            size: bytes.len() as u64,
            wit: module.wit_package().to_string(),
            uploaded_ms: disk::now_ms(),
            imports: info.imports.clone(),
            exports: info.exports.clone(),
            functions: info.functions.clone(),
            needs: crate::config::sandbox::Grants::needed(&info.imports)
                .into_iter()
                .map(String::from)
                .collect(),
            compile_ms,
        };
        disk::write_json(&staging.join("module.json"), &record)?;
        let dir = dir_of(tenant, digest);
        match std::fs::rename(staging, &dir) {
            Ok(()) => {}
            Err(_) if dir.join("module.json").exists() => {}
            Err(e) => return Err(e.into()),
        }
        self.loaded
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert((tenant.name.clone(), digest.to_string()), module);
        Ok(record)
    }

    /// Removes module `digest` of `tenant` (the caller checked no job or
    /// savepoint uses it).
    pub fn delete(&self, tenant: &Tenant, digest: &str) -> Result<(), AppError> {
        if self.record(tenant, digest).is_none() {
            return Err(AppError::NotFound(format!(
                "no module `{}`",
                crate::server::auth::shown(digest)
            )));
        }
        self.loaded
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(tenant.name.clone(), digest.to_string()));
        std::fs::remove_dir_all(dir_of(tenant, digest))?;
        Ok(())
    }
}
