//! Tenants and their tokens: the records (`tenants/NAME/tenant.json`,
//! `tenants/NAME/tokens/ID.json`), the directories every tenant's resources
//! live in, and the index the server authenticates requests against.
//!
//! A tenant's directory holds all it owns: `files/` (the root of its
//! `file://` URIs), `modules/`, `jobs/`, `savepoints/`, `operations/` and
//! `idempotency/`. Nothing a client sends names a path outside it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::connector::ConnectorEnv;
use crate::server::auth::{AuthFailure, Caller, TokenRecord, parse_token, verify};
use crate::server::disk;
use crate::server::quotas::{CpuShare, Quota};

/// A tenant as the server keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct TenantRecord {
    /// Its name (lowercase letters, digits, `-`).
    pub name: String,
    /// When it was made (Unix ms).
    pub created_ms: u64,
    /// Its limits.
    pub quota: Quota,
    /// The `HOST:PORT`s its `socket://` sources may reach (the admin's
    /// allow-list); none by default.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

/// A tenant: its record, its directory and its CPU share.
#[derive(Debug)]
pub struct Tenant {
    /// Its name.
    pub name: String,
    /// Its directory.
    pub dir: PathBuf,
    /// Its record.
    pub record: RwLock<TenantRecord>,
    /// Its CPU share, charged by its guests.
    pub cpu: Arc<CpuShare>,
    /// Bytes it stores, as last measured.
    stored: AtomicU64,
}

impl Tenant {
    /// Where its `file://` URIs are resolved.
    pub fn files(&self) -> PathBuf {
        self.dir.join("files")
    }

    /// A subdirectory of its own.
    pub fn sub(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Its record, as it is now.
    pub fn record(&self) -> TenantRecord {
        self.record
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// What its jobs' connectors may use: its files, its allowed hosts,
    /// output printed into each job's directory.
    pub fn env(&self) -> ConnectorEnv {
        ConnectorEnv {
            root: Some(self.files()),
            allowed_hosts: Some(self.record().allowed_hosts),
            print_to_job_dir: true,
        }
    }

    /// Bytes it stores (checkpoints, savepoints, modules, files), as last
    /// measured.
    pub fn stored(&self) -> u64 {
        self.stored.load(Ordering::Relaxed)
    }

    /// Measures the bytes it stores again.
    pub fn measure(&self) -> u64 {
        let bytes = disk::dir_size(&self.dir);
        self.stored.store(bytes, Ordering::Relaxed);
        bytes
    }

    /// Saves its record.
    pub fn save(&self) -> std::io::Result<()> {
        disk::write_json(&self.dir.join("tenant.json"), &self.record())
    }
}

/// Every tenant and token.
#[derive(Debug)]
pub struct Tenants {
    root: PathBuf,
    tenants: RwLock<BTreeMap<String, Arc<Tenant>>>,
    tokens: RwLock<HashMap<String, TokenRecord>>,
}

impl Tenants {
    /// Loads every tenant and token under `root` (`DATA/tenants`).
    pub fn load(root: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(root)?;
        let mut tenants = BTreeMap::new();
        let mut tokens = HashMap::new();
        for entry in std::fs::read_dir(root)?.flatten() {
            let dir = entry.path();
            let Some(record) = disk::read_json::<TenantRecord>(&dir.join("tenant.json"))? else {
                continue;
            };
            for t in std::fs::read_dir(dir.join("tokens"))
                .into_iter()
                .flatten()
                .flatten()
            {
                if let Some(token) = disk::read_json::<TokenRecord>(&t.path())? {
                    tokens.insert(token.id.clone(), token);
                }
            }
            let t = tenant(dir, record);
            t.measure();
            tenants.insert(t.name.clone(), Arc::new(t));
        }
        Ok(Tenants {
            root: root.to_path_buf(),
            tenants: RwLock::new(tenants),
            tokens: RwLock::new(tokens),
        })
    }

    /// The tenant `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Tenant>> {
        self.tenants
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Every tenant, by name.
    pub fn all(&self) -> Vec<Arc<Tenant>> {
        self.tenants
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Creates a tenant; `Ok(None)` when one of that name exists.
    pub fn create(&self, record: TenantRecord) -> std::io::Result<Option<Arc<Tenant>>> {
        let mut tenants = self.tenants.write().unwrap_or_else(|p| p.into_inner());
        if tenants.contains_key(&record.name) {
            return Ok(None);
        }
        let dir = self.root.join(&record.name);
        for sub in [
            "files",
            "modules",
            "jobs",
            "savepoints",
            "operations",
            "idempotency",
            "tokens",
        ] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let t = Arc::new(tenant(dir, record));
        t.save()?;
        t.measure();
        tenants.insert(t.name.clone(), t.clone());
        Ok(Some(t))
    }

    /// Saves and indexes a token.
    pub fn put_token(&self, tenant: &Tenant, record: TokenRecord) -> std::io::Result<()> {
        disk::write_json(
            &tenant.sub("tokens").join(format!("{}.json", record.id)),
            &record,
        )?;
        self.tokens
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(record.id.clone(), record);
        Ok(())
    }

    /// The tokens of `tenant`, oldest first.
    pub fn tokens_of(&self, tenant: &str) -> Vec<TokenRecord> {
        let mut list: Vec<TokenRecord> = self
            .tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|t| t.tenant == tenant)
            .cloned()
            .collect();
        list.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        list
    }

    /// The token `id` of `tenant`.
    pub fn token(&self, tenant: &str, id: &str) -> Option<TokenRecord> {
        self.tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .filter(|t| t.tenant == tenant)
            .cloned()
    }

    /// Who `token` is, or why it is refused.
    pub fn authenticate(&self, token: &str) -> Result<Caller, AuthFailure> {
        let (id, secret) = parse_token(token).ok_or(AuthFailure::Wrong)?;
        let tokens = self.tokens.read().unwrap_or_else(|p| p.into_inner());
        let record = tokens.get(id).ok_or(AuthFailure::Wrong)?;
        let caller = verify(record, secret, disk::now_ms())?;
        match self.get(&record.tenant) {
            Some(_) => Ok(caller),
            None => Err(AuthFailure::Wrong),
        }
    }
}

fn tenant(dir: PathBuf, record: TenantRecord) -> Tenant {
    Tenant {
        name: record.name.clone(),
        dir,
        cpu: Arc::new(CpuShare::new(record.quota.cpu)),
        record: RwLock::new(record),
        stored: AtomicU64::new(0),
    }
}
