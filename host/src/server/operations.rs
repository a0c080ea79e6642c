//! Long operations — savepoint, stop, rescale, upgrade — return an id at
//! once and run in the background, one at a time per job; each is a record
//! on disk (`operations/ID.json`) updated as it ends, so polling it after a
//! server restart still answers (one the restart interrupted says so).
//! Also the `Idempotency-Key` store: a retried request with the same key
//! gets the first answer again and starts nothing twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

use crate::server::disk;
use crate::server::error::AppError;
use crate::server::jobs::{Desired, JobEntry, Jobs, StartFrom};
use crate::server::tenants::Tenant;

/// What an operation does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum OpKind {
    /// Take a savepoint; the job goes on.
    Savepoint,
    /// Take a savepoint, then stop the job.
    Stop,
    /// Stop with a savepoint, start again from it at `parallelism`.
    Rescale {
        /// The new parallelism.
        parallelism: u32,
    },
    /// Stop with a savepoint, start again from it with `module`.
    Upgrade {
        /// The new module (sha256).
        module: String,
    },
}

/// Where an operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OpStatus {
    /// Under way.
    Running,
    /// Done.
    Succeeded,
    /// Failed; `error` says why.
    Failed,
}

/// An operation as the server keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct Operation {
    /// Its id.
    pub id: String,
    /// Its tenant.
    pub tenant: String,
    /// The job it works on.
    pub job: String,
    /// What it does.
    #[serde(flatten)]
    pub kind: OpKind,
    /// Where it is.
    pub status: OpStatus,
    /// When it was asked for (Unix ms).
    pub created_ms: u64,
    /// When it ended (Unix ms).
    pub finished_ms: Option<u64>,
    /// The savepoint it took.
    pub savepoint: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
}

/// Every tenant's operations.
#[derive(Debug, Default)]
pub struct Operations {
    ops: RwLock<HashMap<(String, String), Operation>>,
}

fn path(tenant: &Tenant, id: &str) -> std::path::PathBuf {
    tenant.sub("operations").join(format!("{id}.json"))
}

impl Operations {
    /// Loads every tenant's operations; one still running was interrupted
    /// by the server's end and is failed, saying so.
    pub fn load(tenants: &[Arc<Tenant>]) -> std::io::Result<Self> {
        let mut ops = HashMap::new();
        for tenant in tenants {
            for e in std::fs::read_dir(tenant.sub("operations"))?.flatten() {
                let Some(mut op) = disk::read_json::<Operation>(&e.path())? else {
                    continue;
                };
                if op.status == OpStatus::Running {
                    op.status = OpStatus::Failed;
                    op.finished_ms = Some(disk::now_ms());
                    op.error = Some(
                        "the server stopped before the operation finished; the job was brought back from its latest checkpoint — ask again".into(),
                    );
                    disk::write_json(&e.path(), &op)?;
                }
                ops.insert((op.tenant.clone(), op.id.clone()), op);
            }
        }
        Ok(Operations {
            ops: RwLock::new(ops),
        })
    }

    /// Records a new operation.
    pub fn create(&self, tenant: &Tenant, job: &str, kind: OpKind) -> Result<Operation, AppError> {
        let op = Operation {
            id: disk::new_id(),
            tenant: tenant.name.clone(),
            job: job.to_string(),
            kind,
            status: OpStatus::Running,
            created_ms: disk::now_ms(),
            finished_ms: None,
            savepoint: None,
            error: None,
        };
        self.save(tenant, &op)?;
        Ok(op)
    }

    fn save(&self, tenant: &Tenant, op: &Operation) -> std::io::Result<()> {
        disk::write_json(&path(tenant, &op.id), op)?;
        self.ops
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert((op.tenant.clone(), op.id.clone()), op.clone());
        Ok(())
    }

    /// Operation `id` of `tenant`.
    pub fn get(&self, tenant: &str, id: &str) -> Option<Operation> {
        self.ops
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(tenant.to_string(), id.to_string()))
            .cloned()
    }

    /// The operations of `tenant` (on job `job`, when given), oldest first.
    pub fn list(&self, tenant: &str, job: Option<&str>) -> Vec<Operation> {
        let mut list: Vec<Operation> = self
            .ops
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|o| o.tenant == tenant && job.is_none_or(|j| o.job == j))
            .cloned()
            .collect();
        list.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        list
    }

    /// Runs `op` on `entry` in the background, after the job's operations
    /// before it, and records how it ended.
    pub fn spawn(self: &Arc<Self>, jobs: Arc<Jobs>, entry: Arc<JobEntry>, op: Operation) {
        let ops = self.clone();
        tokio::spawn(async move {
            let _turn = entry.ops.lock().await;
            let (e, o) = (entry.clone(), op.clone());
            let result = tokio::task::spawn_blocking(move || run(&jobs, &e, &o.kind))
                .await
                .unwrap_or_else(|p| {
                    Err(AppError::Internal(format!("the operation panicked: {p}")))
                });
            let mut done = op;
            done.finished_ms = Some(disk::now_ms());
            match result {
                Ok(savepoint) => {
                    done.status = OpStatus::Succeeded;
                    done.savepoint = savepoint;
                }
                Err(e) => {
                    done.status = OpStatus::Failed;
                    done.error = Some(e.to_string());
                }
            }
            let what = format!(
                "operation `{}` ({:?}) {:?}",
                done.id, done.kind, done.status
            );
            entry.events.push("operation", None, None, what);
            if let Err(e) = ops.save(&entry.tenant, &done) {
                tracing::error!("cannot record operation `{}`: {e}", done.id);
            }
        });
    }
}

/// Does operation `kind` on `entry`; the savepoint it took.
fn run(jobs: &Jobs, entry: &Arc<JobEntry>, kind: &OpKind) -> Result<Option<String>, AppError> {
    let savepoint = jobs.savepoint(entry)?;
    let id = Some(savepoint.id.clone());
    match kind {
        OpKind::Savepoint => return Ok(id),
        OpKind::Stop => {
            jobs.cancel(entry, Desired::Stopped)?;
            return Ok(id);
        }
        OpKind::Rescale { .. } | OpKind::Upgrade { .. } => {}
    }
    jobs.cancel(entry, Desired::Stopped)?;
    let before = entry.record();
    let allow_module_change = matches!(kind, OpKind::Upgrade { .. });
    entry_change(entry, kind)?;
    if let Err(e) = jobs.start(
        entry,
        StartFrom::Savepoint(savepoint.clone()),
        allow_module_change,
    ) {
        // Back to how it ran, from the same savepoint.
        entry_restore(entry, &before)?;
        jobs.start(entry, StartFrom::Savepoint(savepoint), false)
            .map_err(|again| {
                AppError::Unavailable(format!(
                    "{e}; and it could not be started again as it was: {again}"
                ))
            })?;
        return Err(e);
    }
    Ok(id)
}

fn entry_change(entry: &JobEntry, kind: &OpKind) -> Result<(), AppError> {
    entry.change(|r| match kind {
        OpKind::Rescale { parallelism } => r.settings.parallelism = Some(*parallelism),
        OpKind::Upgrade { module } => r.module = module.clone(),
        OpKind::Savepoint | OpKind::Stop => {}
    })?;
    Ok(())
}

fn entry_restore(
    entry: &JobEntry,
    before: &crate::server::jobs::JobRecord,
) -> Result<(), AppError> {
    entry.change(|r| {
        r.settings = before.settings.clone();
        r.module = before.module.clone();
    })?;
    Ok(())
}

/// A remembered answer to a request with an `Idempotency-Key`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Remembered {
    /// The sha256 of the request (method, path, body).
    pub fingerprint: String,
    /// The answer's status.
    pub status: u16,
    /// The answer's body.
    pub body: serde_json::Value,
    /// When (Unix ms).
    pub created_ms: u64,
}

/// How long a key is remembered.
const KEY_TTL_MS: u64 = 24 * 3600 * 1000;

/// The idempotency keys of every tenant.
#[derive(Debug, Default)]
pub struct Idempotency {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Idempotency {
    /// The lock a tenant's idempotent requests take turns on.
    pub fn lock_of(&self, tenant: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(tenant.to_string())
            .or_default()
            .clone()
    }

    fn path(tenant: &Tenant, key: &str) -> std::path::PathBuf {
        tenant.sub("idempotency").join(disk::sha256(key.as_bytes()))
    }

    /// The answer remembered for `key`, when the same request was made
    /// with it; a different request with the same key is refused.
    pub fn recall(
        &self,
        tenant: &Tenant,
        key: &str,
        fingerprint: &str,
    ) -> Result<Option<Remembered>, AppError> {
        let Some(r) = disk::read_json::<Remembered>(&Self::path(tenant, key))? else {
            return Ok(None);
        };
        if r.created_ms + KEY_TTL_MS < disk::now_ms() {
            return Ok(None);
        }
        if r.fingerprint != fingerprint {
            return Err(AppError::Invalid(
                "this Idempotency-Key was used for a different request; use a new key".into(),
            ));
        }
        Ok(Some(r))
    }

    /// Remembers the answer to a request with `key`.
    pub fn remember(&self, tenant: &Tenant, key: &str, r: &Remembered) -> std::io::Result<()> {
        disk::write_json(&Self::path(tenant, key), r)
    }
}
