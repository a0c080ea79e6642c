//! A tenant's jobs: submit (a module and `host run`'s settings), list
//! (filtered, in pages), details, cancel, start (from a savepoint or the
//! latest checkpoint), delete; and what a job leaves: its checkpoints,
//! savepoints, exceptions (dead letters) and the tail of its printed
//! output.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::config::Settings;
use crate::server::api::{Body, Page, blocking, json, once};
use crate::server::auth::{Caller, Role, shown};
use crate::server::error::{AppError, AppResult, Problem};
use crate::server::jobs::{Desired, JobEntry, StartFrom};
use crate::server::savepoints::{self, SavepointRecord};
use crate::server::state::AppState;

/// A job to submit: the module and the settings, one to one with `host
/// run`'s flags and the TOML file's keys (kebab-case).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct JobSubmit {
    /// The module's sha256 (from its upload).
    pub module: String,
    /// The job's settings: `source`, `sink`, `parallelism`, `aggregate`,
    /// `checkpoint-interval`, `restart`, `max-memory`, `params`, ...
    #[serde(default)]
    #[schema(value_type = Object)]
    pub settings: Settings,
}

/// A job as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct JobView {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its module (sha256).
    pub module: String,
    /// Its state: Flink's names while it runs, else `STOPPED`, `CANCELED`,
    /// `FINISHED` or `FAILED`.
    pub state: String,
    /// The state the server keeps it in.
    pub desired: Desired,
    /// Its parallelism at its last start.
    pub parallelism: u32,
    /// When it was submitted (Unix ms).
    pub created_ms: u64,
    /// Times it was started.
    pub starts: u64,
    /// Why it last failed.
    pub last_error: Option<String>,
    /// Its settings as submitted.
    #[schema(value_type = Object)]
    pub settings: Settings,
    /// Its counters: records in and out, restarts, failures, the last
    /// checkpoint, per stage and subtask.
    #[schema(value_type = Object)]
    pub metrics: Option<crate::job::JobMetrics>,
}

/// The view of `entry`.
pub fn view(entry: &JobEntry) -> JobView {
    let r = entry.record();
    let metrics = entry.metrics();
    JobView {
        id: r.id,
        name: r.name,
        module: r.module,
        state: entry.state().to_string(),
        desired: r.desired,
        parallelism: r.parallelism,
        created_ms: r.created_ms,
        starts: r.starts,
        last_error: r
            .last_error
            .or_else(|| metrics.as_ref().and_then(|m| m.last_error.clone())),
        settings: r.settings,
        metrics,
    }
}

/// Submits a job; it is kept only if it starts.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/jobs", tag = "jobs", request_body = JobSubmit,
    params(("tenant" = String, Path, description = "the tenant"), ("Idempotency-Key" = Option<String>, Header, description = "a retry with the same key submits nothing twice")),
    responses((status = 201, body = JobView), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem), (status = 429, body = Problem, description = "a quota would be exceeded")),
    security(("bearer" = [])))]
pub async fn submit(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    Body(submit): Body<JobSubmit>,
) -> AppResult<Response> {
    let tenant = state.tenant(&caller, &name, Role::Developer)?;
    let request = format!(
        "submit {}",
        serde_json::to_string(&submit).unwrap_or_default()
    );
    let (s, t) = (state.clone(), tenant.clone());
    once(&state, &tenant, &headers, &request, move || async move {
        if s.modules.record(&t, &submit.module).is_none() {
            return Err(AppError::Invalid(format!(
                "no module `{}`; upload it first",
                shown(&submit.module)
            )));
        }
        let jobs = s.jobs.clone();
        let entry = blocking(move || jobs.submit(&t, &submit.module, submit.settings)).await?;
        Ok((
            StatusCode::CREATED,
            serde_json::to_value(view(&entry)).unwrap_or_default(),
        ))
    })
    .await
}

/// Filters of the job list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct JobFilter {
    /// Only jobs in this state (`RUNNING`, `STOPPED`, ...).
    pub state: Option<String>,
    /// Only jobs of this name.
    pub name: Option<String>,
}

/// A page of jobs.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct JobPage {
    /// The jobs, oldest first.
    pub jobs: Vec<JobView>,
    /// The token of the next page, when there is one.
    pub next_page_token: Option<String>,
}

/// Lists a tenant's jobs.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/jobs", tag = "jobs",
    params(("tenant" = String, Path, description = "the tenant"), JobFilter, Page),
    responses((status = 200, body = JobPage), (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(filter): Query<JobFilter>,
    Query(page): Query<Page>,
) -> AppResult<Response> {
    let tenant = state.tenant(&caller, &name, Role::Viewer)?;
    let all: Vec<Arc<JobEntry>> = state
        .jobs
        .list(Some(&tenant.name))
        .into_iter()
        .filter(|e| {
            filter
                .state
                .as_deref()
                .is_none_or(|s| e.state().eq_ignore_ascii_case(s))
        })
        .filter(|e| filter.name.as_deref().is_none_or(|n| e.record().name == n))
        .collect();
    let (page, next) = page.of(all)?;
    let jobs = page.iter().map(|e| view(e)).collect();
    Ok(json(
        StatusCode::OK,
        &JobPage {
            jobs,
            next_page_token: next,
        },
    ))
}

/// A job's details.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/jobs/{job}", tag = "jobs",
    params(("tenant" = String, Path, description = "the tenant"), ("job" = String, Path, description = "the job")),
    responses((status = 200, body = JobView), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
) -> AppResult<Response> {
    let (_, entry) = state.job(&caller, &name, &id, Role::Viewer)?;
    Ok(json(StatusCode::OK, &view(&entry)))
}

/// Cancels a job (its checkpoints are kept unless its `on-cancel` says
/// otherwise) and waits for it to end.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/jobs/{job}/cancel", tag = "jobs",
    params(("tenant" = String, Path, description = "the tenant"), ("job" = String, Path, description = "the job")),
    responses((status = 200, body = JobView), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
) -> AppResult<Response> {
    let (_, entry) = state.job(&caller, &name, &id, Role::Operator)?;
    let _turn = entry.ops.lock().await;
    if !entry.is_running() {
        return Err(AppError::Conflict(format!(
            "job `{}` is not running ({})",
            entry.id,
            entry.state()
        )));
    }
    let (jobs, e) = (state.jobs.clone(), entry.clone());
    blocking(move || jobs.cancel(&e, Desired::Canceled)).await?;
    Ok(json(StatusCode::OK, &view(&entry)))
}

/// Where to start a job from.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct StartRequest {
    /// A savepoint of the job; its latest checkpoint when not given.
    pub savepoint: Option<String>,
}

/// Starts a job that is not running, from a savepoint or its latest
/// checkpoint.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/jobs/{job}/start", tag = "jobs", request_body = StartRequest,
    params(("tenant" = String, Path, description = "the tenant"), ("job" = String, Path, description = "the job")),
    responses((status = 200, body = JobView), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem), (status = 429, body = Problem)),
    security(("bearer" = [])))]
pub async fn start(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
    Body(req): Body<StartRequest>,
) -> AppResult<Response> {
    let (tenant, entry) = state.job(&caller, &name, &id, Role::Operator)?;
    let from = match &req.savepoint {
        None => StartFrom::Latest,
        Some(sp) => match savepoints::get(&tenant, sp).filter(|s| s.job == entry.id) {
            Some(s) => StartFrom::Savepoint(s),
            None => {
                return Err(AppError::NotFound(format!(
                    "no savepoint `{}` of this job",
                    shown(sp)
                )));
            }
        },
    };
    let _turn = entry.ops.lock().await;
    let (jobs, e) = (state.jobs.clone(), entry.clone());
    blocking(move || jobs.start(&e, from, false)).await?;
    Ok(json(StatusCode::OK, &view(&entry)))
}

/// Deletes a job that is not running, with its checkpoints and savepoints.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/jobs/{job}", tag = "jobs",
    params(("tenant" = String, Path, description = "the tenant"), ("job" = String, Path, description = "the job")),
    responses((status = 204, description = "deleted"), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
) -> AppResult<Response> {
    let (tenant, entry) = state.job(&caller, &name, &id, Role::Developer)?;
    let _turn = entry.ops.lock().await;
    let (jobs, e) = (state.jobs.clone(), entry.clone());
    blocking(move || jobs.delete(&e)).await?;
    tenant.measure();
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A job's savepoints.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/jobs/{job}/savepoints", tag = "jobs",
    params(("tenant" = String, Path, description = "the tenant"), ("job" = String, Path, description = "the job")),
    responses((status = 200, body = [SavepointRecord]), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn list_savepoints(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
) -> AppResult<Response> {
    let (tenant, entry) = state.job(&caller, &name, &id, Role::Viewer)?;
    Ok(json(
        StatusCode::OK,
        &savepoints::list(&tenant, Some(&entry.id)),
    ))
}

/// A checkpoint as listed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct CheckpointView {
    /// Its id (`chk-N`).
    pub id: u64,
    /// When it was taken (Unix ms).
    pub created_ms: u64,
    /// Keys of state.
    pub keys: u64,
    /// Records read up to it.
    pub records: u64,
    /// Its parallelism.
    pub parallelism: u64,
}

/// A job's retained checkpoints, oldest first.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/jobs/{job}/checkpoints", tag = "jobs",
    params(("tenant" = String, Path, description = "the tenant"), ("job" = String, Path, description = "the job")),
    responses((status = 200, body = [CheckpointView]), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn checkpoints(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
) -> AppResult<Response> {
    let (_, entry) = state.job(&caller, &name, &id, Role::Viewer)?;
    let mut list = Vec::new();
    if let Some(dir) = entry.lib_dir() {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let Some(Ok(n)) = e
                .file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("chk-"))
                .map(str::parse::<u64>)
            else {
                continue;
            };
            let Ok(Some(m)) = crate::server::disk::read_json::<serde_json::Value>(
                &e.path().join("manifest.json"),
            ) else {
                continue;
            };
            list.push(CheckpointView {
                id: n,
                created_ms: m["created_at_ms"].as_u64().unwrap_or(0),
                keys: m["keys"].as_u64().unwrap_or(0),
                records: m["source"]["seq"].as_u64().unwrap_or(0),
                parallelism: m["parallelism"].as_u64().unwrap_or(0),
            });
        }
    }
    list.sort_by_key(|c| c.id);
    Ok(json(StatusCode::OK, &list))
}

/// How many of the last lines to show.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct Tail {
    /// Lines from the end, 1 to 1000 (default 100).
    pub lines: Option<usize>,
}

/// The last `lines` lines of `path` (at most 1 MiB of it).
fn tail(path: &std::path::Path, lines: usize) -> Vec<String> {
    use std::io::{Read, Seek};
    let Ok(mut f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = f.metadata().map_or(0, |m| m.len());
    let from = len.saturating_sub(1 << 20);
    if f.seek(std::io::SeekFrom::Start(from)).is_err() {
        return Vec::new();
    }
    let mut buf = Vec::new();
    let _ = f.take(1 << 20).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().skip(usize::from(from > 0)).collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn tail_lines(t: &Tail) -> AppResult<usize> {
    let n = t.lines.unwrap_or(100);
    if !(1..=1000).contains(&n) {
        return Err(AppError::BadRequest("`lines` must be 1 to 1000".into()));
    }
    Ok(n)
}

/// A job's exceptions: each record that failed alone in a fresh instance
/// (its dead letter), with its record, input, key and the guest's message.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/jobs/{job}/exceptions", tag = "jobs",
    params(("tenant" = String, Path, description = "the tenant"), ("job" = String, Path, description = "the job"), Tail),
    responses((status = 200, body = [Object]), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn exceptions(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
    Query(t): Query<Tail>,
) -> AppResult<Response> {
    let (_, entry) = state.job(&caller, &name, &id, Role::Viewer)?;
    let n = tail_lines(&t)?;
    let lines = entry
        .lib_dir()
        .map(|d| tail(&d.join("dead-letter.jsonl"), n))
        .unwrap_or_default();
    let list: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|mut v| {
            // A flat-map failure comes before any key is selected.
            v["key"] = serde_json::Value::Null;
            v["message"] = v["error"].clone();
            v
        })
        .collect();
    Ok(json(StatusCode::OK, &list))
}

/// The tail of a job's printed output (`print` sink).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/jobs/{job}/output", tag = "jobs",
    params(("tenant" = String, Path, description = "the tenant"), ("job" = String, Path, description = "the job"), Tail),
    responses((status = 200, body = [String]), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn output(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
    Query(t): Query<Tail>,
) -> AppResult<Response> {
    let (_, entry) = state.job(&caller, &name, &id, Role::Viewer)?;
    let n = tail_lines(&t)?;
    let file = crate::connector::sink::print::OUTPUT_FILE;
    let lines = entry
        .lib_dir()
        .map(|d| tail(&d.join(file), n))
        .unwrap_or_default();
    Ok(json(StatusCode::OK, &lines))
}
