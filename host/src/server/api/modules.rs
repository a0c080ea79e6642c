//! A tenant's modules: upload (the raw component as the body), list,
//! inspect, delete (refused while a job or a savepoint uses it).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use crate::server::api::{Raw, blocking, json};
use crate::server::auth::{Caller, Role, shown};
use crate::server::error::{AppError, AppResult, Problem};
use crate::server::modules::ModuleRecord;
use crate::server::quotas;
use crate::server::savepoints;
use crate::server::state::AppState;

/// Uploads a module: the body is the component's bytes, nothing else.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/modules", tag = "modules",
    params(("tenant" = String, Path, description = "the tenant")),
    request_body(content = Vec<u8>, content_type = "application/wasm"),
    responses((status = 201, body = ModuleRecord, description = "compiled and kept"), (status = 200, body = ModuleRecord, description = "already there"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 413, body = Problem),
        (status = 422, body = Problem, description = "not a valid guest, or its compile ran past its limits"), (status = 429, body = Problem)),
    security(("bearer" = [])))]
pub async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Raw(bytes): Raw,
) -> AppResult<Response> {
    let tenant = state.tenant(&caller, &name, Role::Developer)?;
    let quota = tenant.record().quota;
    if bytes.len() as u64 > quota.module_size {
        return Err(AppError::TooLarge(format!(
            "the module is {} bytes, over the tenant's module-size quota of {}",
            bytes.len(),
            quota.module_size
        )));
    }
    let digest = crate::server::disk::sha256(&bytes);
    if state.modules.record(&tenant, &digest).is_none() {
        let usage = state.jobs.usage(&tenant);
        quotas::admit("modules", quota.modules, usage.modules, 1)?;
        quotas::admit("storage", quota.storage, usage.storage, bytes.len() as u64)?;
    }
    let (record, new) = state.modules.upload(&tenant, bytes.to_vec()).await?;
    tenant.measure();
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json(status, &record))
}

/// Lists a tenant's modules.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/modules", tag = "modules",
    params(("tenant" = String, Path, description = "the tenant")),
    responses((status = 200, body = [ModuleRecord]), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> AppResult<Response> {
    let tenant = state.tenant(&caller, &name, Role::Viewer)?;
    Ok(json(StatusCode::OK, &state.modules.list(&tenant)))
}

/// A module and its job description, as `host inspect` shows them.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct ModuleView {
    /// The module.
    #[serde(flatten)]
    pub module: ModuleRecord,
    /// Its job description (what `host inspect` prints), or why it failed.
    #[schema(value_type = Object)]
    pub description: serde_json::Value,
}

/// Inspects a module.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/modules/{digest}", tag = "modules",
    params(("tenant" = String, Path, description = "the tenant"), ("digest" = String, Path, description = "the module's sha256")),
    responses((status = 200, body = ModuleView), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, digest)): Path<(String, String)>,
) -> AppResult<Response> {
    let tenant = state.tenant(&caller, &name, Role::Viewer)?;
    let record = state
        .modules
        .record(&tenant, &digest)
        .ok_or_else(|| AppError::NotFound(format!("no module `{}`", shown(&digest))))?;
    let module = state.modules.get(&tenant, &digest)?;
    let description = blocking(move || {
        Ok(match module.describe(&[]) {
            Ok(d) => serde_json::json!({
                "name": d.name,
                "source": d.source,
                "sink": d.sink,
                "aggregation": d.aggregation.map(|a| a.to_string()),
                "checkpoint-interval-ms": d.checkpoint_interval_ms,
                "restart": d.restart.map(|r| r.to_string()),
                "parallelism": d.parallelism,
            }),
            Err(f) => serde_json::json!({ "error": f.to_string() }),
        })
    })
    .await?;
    Ok(json(
        StatusCode::OK,
        &ModuleView {
            module: record,
            description,
        },
    ))
}

/// Deletes a module no job or savepoint uses.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/modules/{digest}", tag = "modules",
    params(("tenant" = String, Path, description = "the tenant"), ("digest" = String, Path, description = "the module's sha256")),
    responses((status = 204, description = "deleted"), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, digest)): Path<(String, String)>,
) -> AppResult<Response> {
    let tenant = state.tenant(&caller, &name, Role::Developer)?;
    if state.modules.record(&tenant, &digest).is_none() {
        return Err(AppError::NotFound(format!(
            "no module `{}`",
            shown(&digest)
        )));
    }
    if let Some(job) = state
        .jobs
        .list(Some(&tenant.name))
        .iter()
        .find(|j| j.record().module == digest)
    {
        return Err(AppError::Conflict(format!(
            "module `{digest}` is used by job `{}`; delete the job first",
            job.id
        )));
    }
    if let Some(sp) = savepoints::list(&tenant, None)
        .iter()
        .find(|s| s.module == digest)
    {
        return Err(AppError::Conflict(format!(
            "module `{digest}` is used by savepoint `{}` of job `{}`; delete the job first",
            sp.id, sp.job
        )));
    }
    state.modules.delete(&tenant, &digest)?;
    tenant.measure();
    Ok(axum::response::IntoResponse::into_response(
        StatusCode::NO_CONTENT,
    ))
}
