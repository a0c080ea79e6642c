//! Tenants (the admin's), their quotas and use, and their tokens (the
//! admin's or a tenant-admin's).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use crate::server::api::{Body, json};
use crate::server::auth::{Caller, Role, TokenRecord, make_token, shown};
use crate::server::disk;
use crate::server::error::{AppError, AppResult, Problem};
use crate::server::quotas::{Quota, Usage};
use crate::server::state::AppState;
use crate::server::tenants::TenantRecord;

/// A new tenant.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct NewTenant {
    /// Its name: 1 to 63 lowercase letters, digits and `-`.
    pub name: String,
    /// Its limits (the defaults where not given).
    #[serde(default)]
    pub quota: Option<Quota>,
    /// `HOST:PORT`s its socket sources may reach.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

/// Changes to a tenant.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TenantChange {
    /// New limits.
    pub quota: Option<Quota>,
    /// A new allow-list of `HOST:PORT`s.
    pub allowed_hosts: Option<Vec<String>>,
}

/// A tenant with its quota and use.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct TenantView {
    /// The tenant.
    #[serde(flatten)]
    pub tenant: TenantRecord,
    /// What it uses.
    pub usage: Usage,
}

/// A tenant's quota and use.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct QuotaView {
    /// Its limits.
    pub quota: Quota,
    /// What it uses.
    pub usage: Usage,
}

fn check_hosts(hosts: &[String]) -> AppResult<()> {
    for h in hosts {
        let ok = h.len() <= 255
            && h.rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !ok {
            return Err(AppError::Invalid(format!(
                "allowed host `{}` is not HOST:PORT",
                shown(h)
            )));
        }
    }
    if hosts.len() > 1000 {
        return Err(AppError::Invalid("at most 1000 allowed hosts".into()));
    }
    Ok(())
}

fn check_quota(q: &Quota) -> AppResult<()> {
    if !(q.cpu.is_finite() && q.cpu > 0.0 && q.cpu <= 1024.0) {
        return Err(AppError::Invalid(
            "quota `cpu` must be more than 0 and at most 1024 cores".into(),
        ));
    }
    Ok(())
}

/// Creates a tenant (admin).
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", request_body = NewTenant,
    responses((status = 201, body = TenantView), (status = 401, body = Problem), (status = 403, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(new): Body<NewTenant>,
) -> AppResult<Response> {
    caller.require_admin()?;
    if !disk::valid_name(&new.name) {
        return Err(AppError::Invalid(format!(
            "tenant name `{}` is not valid: use 1 to 63 lowercase letters, digits and `-`, starting with a letter",
            shown(&new.name)
        )));
    }
    check_hosts(&new.allowed_hosts)?;
    let quota = new.quota.unwrap_or_default();
    check_quota(&quota)?;
    let record = TenantRecord {
        name: new.name.clone(),
        created_ms: disk::now_ms(),
        quota,
        allowed_hosts: new.allowed_hosts,
    };
    let tenant = state
        .tenants
        .create(record)?
        .ok_or_else(|| AppError::Conflict(format!("tenant `{}` exists", new.name)))?;
    let view = TenantView {
        tenant: tenant.record(),
        usage: state.jobs.usage(&tenant),
    };
    Ok(json(StatusCode::CREATED, &view))
}

/// Lists the tenants (admin).
#[utoipa::path(get, path = "/v1/tenants", tag = "tenants",
    responses((status = 200, body = [TenantRecord]), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> AppResult<Response> {
    caller.require_admin()?;
    let all: Vec<TenantRecord> = state.tenants.all().iter().map(|t| t.record()).collect();
    Ok(json(StatusCode::OK, &all))
}

/// A tenant, its quota and use.
#[utoipa::path(get, path = "/v1/tenants/{tenant}", tag = "tenants",
    params(("tenant" = String, Path, description = "the tenant")),
    responses((status = 200, body = TenantView), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> AppResult<Response> {
    let tenant = state.tenant(&caller, &name, Role::Viewer)?;
    let view = TenantView {
        tenant: tenant.record(),
        usage: state.jobs.usage(&tenant),
    };
    Ok(json(StatusCode::OK, &view))
}

/// Changes a tenant's quota or allow-list (admin).
#[utoipa::path(patch, path = "/v1/tenants/{tenant}", tag = "tenants", request_body = TenantChange,
    params(("tenant" = String, Path, description = "the tenant")),
    responses((status = 200, body = TenantView), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn change(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Body(change): Body<TenantChange>,
) -> AppResult<Response> {
    let tenant = state.tenant(&caller, &name, Role::Viewer)?;
    caller.require_admin()?;
    if let Some(q) = &change.quota {
        check_quota(q)?;
    }
    if let Some(h) = &change.allowed_hosts {
        check_hosts(h)?;
    }
    {
        let mut record = tenant.record.write().unwrap_or_else(|p| p.into_inner());
        if let Some(q) = change.quota {
            tenant.cpu.set_cores(q.cpu);
            record.quota = q;
        }
        if let Some(h) = change.allowed_hosts {
            record.allowed_hosts = h;
        }
    }
    tenant.save()?;
    let view = TenantView {
        tenant: tenant.record(),
        usage: state.jobs.usage(&tenant),
    };
    Ok(json(StatusCode::OK, &view))
}

/// A tenant's quota and what it uses.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/quota", tag = "tenants",
    params(("tenant" = String, Path, description = "the tenant")),
    responses((status = 200, body = QuotaView), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn quota(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> AppResult<Response> {
    let tenant = state.tenant(&caller, &name, Role::Viewer)?;
    let view = QuotaView {
        quota: tenant.record().quota,
        usage: state.jobs.usage(&tenant),
    };
    Ok(json(StatusCode::OK, &view))
}

/// A new token.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct NewToken {
    /// A name for people (1 to 63 lowercase letters, digits, `-`).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Seconds until it expires; never, when not given.
    pub expires_in_s: Option<u64>,
}

/// A token as listed: never its secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct TokenView {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// When it was made (Unix ms).
    pub created_ms: u64,
    /// When it expires (Unix ms).
    pub expires_ms: Option<u64>,
    /// Whether it was revoked.
    pub revoked: bool,
    /// The token itself: only in the answer that created it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

fn view(t: &TokenRecord, token: Option<String>) -> TokenView {
    TokenView {
        id: t.id.clone(),
        name: t.name.clone(),
        role: t.role,
        created_ms: t.created_ms,
        expires_ms: t.expires_ms,
        revoked: t.revoked,
        token,
    }
}

/// Creates a token; its secret is in this answer only.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/tokens", tag = "tokens", request_body = NewToken,
    params(("tenant" = String, Path, description = "the tenant")),
    responses((status = 201, body = TokenView), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Body(new): Body<NewToken>,
) -> AppResult<Response> {
    let tenant = state.tenant(&caller, &name, Role::TenantAdmin)?;
    if !disk::valid_name(&new.name) {
        return Err(AppError::Invalid(format!(
            "token name `{}` is not valid: use 1 to 63 lowercase letters, digits and `-`",
            shown(&new.name)
        )));
    }
    if state.tenants.tokens_of(&tenant.name).len() >= 1000 {
        return Err(AppError::Conflict(
            "the tenant has 1000 tokens; revoke some first".into(),
        ));
    }
    let expires_ms = match new.expires_in_s {
        Some(s) if s > 10 * 365 * 86_400 => {
            return Err(AppError::Invalid(
                "`expires-in-s` is at most ten years".into(),
            ));
        }
        Some(s) => Some(disk::now_ms() + s * 1000),
        None => None,
    };
    let (token, record) = make_token(&tenant.name, &new.name, new.role, expires_ms);
    state.tenants.put_token(&tenant, record.clone())?;
    Ok(json(StatusCode::CREATED, &view(&record, Some(token))))
}

/// Lists a tenant's tokens (without their secrets).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/tokens", tag = "tokens",
    params(("tenant" = String, Path, description = "the tenant")),
    responses((status = 200, body = [TokenView]), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> AppResult<Response> {
    let tenant = state.tenant(&caller, &name, Role::TenantAdmin)?;
    let list: Vec<TokenView> = state
        .tenants
        .tokens_of(&tenant.name)
        .iter()
        .map(|t| view(t, None))
        .collect();
    Ok(json(StatusCode::OK, &list))
}

/// Revokes a token.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/tokens/{id}", tag = "tokens",
    params(("tenant" = String, Path, description = "the tenant"), ("id" = String, Path, description = "the token's id")),
    responses((status = 200, body = TokenView), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
) -> AppResult<Response> {
    let tenant = state.tenant(&caller, &name, Role::TenantAdmin)?;
    let mut record = state
        .tenants
        .token(&tenant.name, &id)
        .ok_or_else(|| AppError::NotFound(format!("no token `{}`", shown(&id))))?;
    record.revoked = true;
    state.tenants.put_token(&tenant, record.clone())?;
    Ok(json(StatusCode::OK, &view(&record, None)))
}
