//! The server's state, shared by every handler (`with_state`): tenants and
//! tokens, modules, jobs, operations, idempotency keys, request counters,
//! and the limits on what a request may send; and the extractor that says
//! who a request comes from.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::server::auth::{self, AuthFailure, Caller, Role, no_tenant};
use crate::server::error::AppError;
use crate::server::jobs::{JobEntry, Jobs};
use crate::server::modules::Modules;
use crate::server::operations::{Idempotency, Operations};
use crate::server::tenants::{Tenant, Tenants};

/// Limits on what a request may send.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// The largest module upload (bytes).
    pub module_bytes: usize,
    /// The largest file upload (bytes).
    pub file_bytes: usize,
    /// The largest JSON body (bytes).
    pub json_bytes: usize,
    /// The longest reading a request's body may take.
    pub body_timeout: std::time::Duration,
}

/// Requests and refusals counted for the metrics.
#[derive(Debug, Default)]
pub struct ApiStats {
    /// Requests by (route, status).
    pub requests: Mutex<BTreeMap<(String, u16), u64>>,
    /// Refused tokens by reason.
    pub auth_failures: Mutex<BTreeMap<&'static str, u64>>,
    /// Connections refused for being over the cap.
    pub refused_connections: Arc<std::sync::atomic::AtomicU64>,
}

/// Everything the handlers share.
pub struct Server {
    /// The data directory.
    pub data: PathBuf,
    /// The sha256 of the admin's token.
    pub admin_hash: String,
    /// Tenants and tokens.
    pub tenants: Tenants,
    /// Modules.
    pub modules: Arc<Modules>,
    /// Jobs.
    pub jobs: Arc<Jobs>,
    /// Operations.
    pub ops: Arc<Operations>,
    /// Idempotency keys.
    pub idempotency: Idempotency,
    /// Counters.
    pub stats: ApiStats,
    /// Request limits.
    pub limits: RequestLimits,
}

/// The state handlers get.
pub type AppState = Arc<Server>;

impl Server {
    /// The tenant `name` for `caller` with at least `role`: 404 when it does
    /// not exist or is another tenant's, 403 when the role is too low.
    pub fn tenant(&self, caller: &Caller, name: &str, role: Role) -> Result<Arc<Tenant>, AppError> {
        caller.require(name, role)?;
        self.tenants.get(name).ok_or_else(|| no_tenant(name))
    }

    /// The job `id` of tenant `name` for `caller` with at least `role`.
    pub fn job(
        &self,
        caller: &Caller,
        name: &str,
        id: &str,
        role: Role,
    ) -> Result<(Arc<Tenant>, Arc<JobEntry>), AppError> {
        let tenant = self.tenant(caller, name, role)?;
        let job = self
            .jobs
            .get(&tenant.name, id)
            .ok_or_else(|| AppError::NotFound(format!("no job `{}`", auth::shown(id))))?;
        Ok((tenant, job))
    }

    fn refuse(&self, failure: AuthFailure) -> AppError {
        *self
            .stats
            .auth_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(failure.as_str())
            .or_default() += 1;
        failure.error()
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let Some(token) = header
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
        else {
            return Err(state.refuse(AuthFailure::Missing));
        };
        if auth::is_admin(&state.admin_hash, token) {
            return Ok(Caller::Admin);
        }
        state
            .tenants
            .authenticate(token)
            .map_err(|f| state.refuse(f))
    }
}
