//! Operations on a job that take a while — savepoint, stop (with a
//! savepoint), rescale, upgrade — each answered at once with an operation
//! to poll (202), started once per `Idempotency-Key`; the upgrade's dry
//! run, which says whether the state is compatible and what would change;
//! and the operations themselves.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};

use crate::config::JobSpec;
use crate::server::api::{Body, blocking, json, once};
use crate::server::auth::{Caller, Role, shown};
use crate::server::error::{AppError, AppResult, Problem};
use crate::server::jobs::JobEntry;
use crate::server::operations::{OpKind, Operation};
use crate::server::quotas;
use crate::server::state::AppState;
use crate::server::tenants::Tenant;

async fn start_op(
    state: &AppState,
    tenant: &std::sync::Arc<Tenant>,
    entry: std::sync::Arc<JobEntry>,
    headers: &HeaderMap,
    kind: OpKind,
) -> AppResult<Response> {
    if !entry.is_running() {
        return Err(AppError::Conflict(format!(
            "job `{}` is not running ({})",
            entry.id,
            entry.state()
        )));
    }
    let request = format!("op {} {:?}", entry.id, kind);
    let (s, t) = (state.clone(), tenant.clone());
    once(state, tenant, headers, &request, move || async move {
        let op = s.ops.create(&t, &entry.id, kind)?;
        s.ops.spawn(s.jobs.clone(), entry, op.clone());
        Ok((
            StatusCode::ACCEPTED,
            serde_json::to_value(&op).unwrap_or_default(),
        ))
    })
    .await
}

/// Takes a savepoint; the job goes on.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/jobs/{job}/savepoint", tag = "operations",
    params(("tenant" = String, Path, description = "the tenant"), ("job" = String, Path, description = "the job"), ("Idempotency-Key" = Option<String>, Header, description = "a retry with the same key starts nothing twice")),
    responses((status = 202, body = Operation), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem), (status = 429, body = Problem)),
    security(("bearer" = [])))]
pub async fn savepoint(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> AppResult<Response> {
    let (tenant, entry) = state.job(&caller, &name, &id, Role::Operator)?;
    let quota = tenant.record().quota;
    quotas::admit("storage", quota.storage, tenant.stored(), 0)?;
    start_op(&state, &tenant, entry, &headers, OpKind::Savepoint).await
}

/// Stops a job with a savepoint, to be started again from it.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/jobs/{job}/stop", tag = "operations",
    params(("tenant" = String, Path, description = "the tenant"), ("job" = String, Path, description = "the job"), ("Idempotency-Key" = Option<String>, Header, description = "a retry with the same key starts nothing twice")),
    responses((status = 202, body = Operation), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = [])))]
pub async fn stop(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> AppResult<Response> {
    let (tenant, entry) = state.job(&caller, &name, &id, Role::Operator)?;
    start_op(&state, &tenant, entry, &headers, OpKind::Stop).await
}

/// A new parallelism.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RescaleRequest {
    /// Subtasks, 1 to the job's max parallelism.
    pub parallelism: u32,
}

/// Rescales a job: stops it with a savepoint and starts it from there at
/// the new parallelism (its keyed state is split by key group).
#[utoipa::path(post, path = "/v1/tenants/{tenant}/jobs/{job}/rescale", tag = "operations", request_body = RescaleRequest,
    params(("tenant" = String, Path, description = "the tenant"), ("job" = String, Path, description = "the job"), ("Idempotency-Key" = Option<String>, Header, description = "a retry with the same key starts nothing twice")),
    responses((status = 202, body = Operation), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem), (status = 429, body = Problem)),
    security(("bearer" = [])))]
pub async fn rescale(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
    headers: HeaderMap,
    Body(req): Body<RescaleRequest>,
) -> AppResult<Response> {
    let (tenant, entry) = state.job(&caller, &name, &id, Role::Operator)?;
    let record = entry.record();
    let max = record
        .settings
        .max_parallelism
        .unwrap_or(crate::config::DEFAULT_MAX_PARALLELISM);
    if req.parallelism == 0 || req.parallelism > max {
        return Err(AppError::Invalid(format!(
            "parallelism {} is out of range; use 1 to the job's max parallelism ({max})",
            req.parallelism
        )));
    }
    // Admission before anything stops: the job's own instances are freed
    // by the stop.
    let quota = tenant.record().quota;
    let usage = state.jobs.usage(&tenant);
    let others = usage
        .parallelism
        .saturating_sub(u64::from(record.parallelism));
    quotas::admit(
        "parallelism",
        quota.parallelism,
        others,
        u64::from(req.parallelism),
    )?;
    start_op(
        &state,
        &tenant,
        entry,
        &headers,
        OpKind::Rescale {
            parallelism: req.parallelism,
        },
    )
    .await
}

/// An upgrade to another module.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct UpgradeRequest {
    /// The new module's sha256 (uploaded first).
    pub module: String,
    /// Only report whether the state is compatible and what would change.
    #[serde(default)]
    pub dry_run: bool,
}

/// One setting that would change.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct Change {
    /// The setting.
    pub field: String,
    /// Its value now.
    pub from: String,
    /// Its value after the upgrade.
    pub to: String,
}

/// What an upgrade would do.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct UpgradeReport {
    /// Whether the job's state can be restored with the new module.
    pub compatible: bool,
    /// Why not, when it cannot.
    pub problems: Vec<String>,
    /// The settings that would change.
    pub changes: Vec<Change>,
}

fn fields(spec: &JobSpec, wit: &str) -> Vec<(&'static str, String)> {
    vec![
        ("wit", wit.to_string()),
        ("name", spec.name.clone()),
        ("source", spec.source.clone()),
        ("sink", spec.sink.clone()),
        (
            "aggregate",
            spec.aggregation
                .map_or_else(|| "none".into(), |a| a.to_string()),
        ),
        ("parallelism", spec.parallelism.to_string()),
        ("max-parallelism", spec.max_parallelism.to_string()),
        (
            "checkpoint-interval",
            format!("{:?}", spec.checkpoint_interval),
        ),
        ("restart", spec.restart.to_string()),
        ("max-memory", spec.sandbox.limits.memory_bytes.to_string()),
        (
            "call-timeout",
            format!("{:?}", spec.sandbox.limits.call_timeout),
        ),
    ]
}

/// Compares the job as it runs with the job on `digest`.
fn report(state: &AppState, entry: &JobEntry, digest: &str) -> UpgradeReport {
    let now = match state.jobs.trial(entry, &entry.record().module) {
        Ok((m, spec)) => fields(&spec, m.wit_package()),
        Err(e) => {
            return UpgradeReport {
                compatible: false,
                problems: vec![format!("the job as it is does not resolve: {e}")],
                changes: vec![],
            };
        }
    };
    let then = match state.jobs.trial(entry, digest) {
        Ok((m, spec)) => fields(&spec, m.wit_package()),
        Err(e) => {
            return UpgradeReport {
                compatible: false,
                problems: vec![e.to_string()],
                changes: vec![],
            };
        }
    };
    let mut problems = Vec::new();
    let mut changes = Vec::new();
    for ((field, from), (_, to)) in now.into_iter().zip(then) {
        if from == to {
            continue;
        }
        match field {
            "aggregate" => problems.push(format!(
                "the job's state is of aggregation `{from}`; the new module's job aggregates `{to}`"
            )),
            "max-parallelism" => problems.push(format!(
                "the job's state has {from} key groups; the new module's job has {to}"
            )),
            _ => {}
        }
        changes.push(Change {
            field: field.to_string(),
            from,
            to,
        });
    }
    UpgradeReport {
        compatible: problems.is_empty(),
        problems,
        changes,
    }
}

/// Upgrades a job to another module, keeping its state: stops it with a
/// savepoint and starts it from there with the new module. With `dry-run`,
/// only reports whether the state is compatible and what would change; an
/// incompatible upgrade is refused before anything stops.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/jobs/{job}/upgrade", tag = "operations", request_body = UpgradeRequest,
    params(("tenant" = String, Path, description = "the tenant"), ("job" = String, Path, description = "the job"), ("Idempotency-Key" = Option<String>, Header, description = "a retry with the same key starts nothing twice")),
    responses((status = 202, body = Operation), (status = 200, body = UpgradeReport, description = "the dry run's report"), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn upgrade(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
    headers: HeaderMap,
    Body(req): Body<UpgradeRequest>,
) -> AppResult<Response> {
    let (tenant, entry) = state.job(&caller, &name, &id, Role::Developer)?;
    if state.modules.record(&tenant, &req.module).is_none() {
        return Err(AppError::Invalid(format!(
            "no module `{}`; upload it first",
            shown(&req.module)
        )));
    }
    let (s, e, digest) = (state.clone(), entry.clone(), req.module.clone());
    let report = blocking(move || Ok(report(&s, &e, &digest))).await?;
    if req.dry_run {
        return Ok(json(StatusCode::OK, &report));
    }
    if !report.compatible {
        return Err(AppError::Invalid(format!(
            "the upgrade is not compatible: {}",
            report.problems.join("; ")
        )));
    }
    start_op(
        &state,
        &tenant,
        entry,
        &headers,
        OpKind::Upgrade { module: req.module },
    )
    .await
}

/// An operation.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/operations/{op}", tag = "operations",
    params(("tenant" = String, Path, description = "the tenant"), ("op" = String, Path, description = "the operation")),
    responses((status = 200, body = Operation), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn get_op(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
) -> AppResult<Response> {
    let tenant = state.tenant(&caller, &name, Role::Viewer)?;
    let op = state
        .ops
        .get(&tenant.name, &id)
        .ok_or_else(|| AppError::NotFound(format!("no operation `{}`", shown(&id))))?;
    Ok(json(StatusCode::OK, &op))
}

/// Which operations to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct OpFilter {
    /// Only those on this job.
    pub job: Option<String>,
}

/// A tenant's operations, oldest first (the last 1000).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/operations", tag = "operations",
    params(("tenant" = String, Path, description = "the tenant"), OpFilter),
    responses((status = 200, body = [Operation]), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn list_ops(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(f): Query<OpFilter>,
) -> AppResult<Response> {
    let tenant = state.tenant(&caller, &name, Role::Viewer)?;
    let mut list = state.ops.list(&tenant.name, f.job.as_deref());
    let cut = list.len().saturating_sub(1000);
    list.drain(..cut);
    Ok(json(StatusCode::OK, &list))
}
