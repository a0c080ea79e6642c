//! A tenant's files — the inputs of its `file://` sources and the outputs
//! of its `file://` sinks — uploaded, listed, downloaded and deleted under
//! its own directory, within its storage quota. A path is relative, of
//! plain names only (no `..`, no absolute path, nothing hidden), and is
//! opened through cap-std inside the tenant's directory, so no request can
//! reach a file outside it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cap_std::ambient_authority;
use cap_std::fs::Dir;
use serde::Serialize;

use crate::server::api::{Raw, json};
use crate::server::auth::{Caller, Role, shown};
use crate::server::error::{AppError, AppResult, Problem};
use crate::server::quotas;
use crate::server::state::AppState;
use crate::server::tenants::Tenant;

/// Checks a client's path: 1 to 8 plain names of at most 255 bytes.
pub fn check_path(path: &str) -> AppResult<Vec<&str>> {
    let parts: Vec<&str> = path.split('/').collect();
    let plain = |p: &&str| {
        !p.is_empty()
            && p.len() <= 255
            && !p.starts_with('.')
            && !p.contains('\\')
            && !p.chars().any(char::is_control)
    };
    if path.len() > 1024 || parts.len() > 8 || !parts.iter().all(plain) {
        return Err(AppError::Invalid(format!(
            "file path `{}` is not valid: use a relative path of plain names (no `..`, no leading `/` or `.`)",
            shown(path)
        )));
    }
    Ok(parts)
}

fn root(tenant: &Tenant) -> AppResult<Dir> {
    let files = tenant.files();
    std::fs::create_dir_all(&files)?;
    Ok(Dir::open_ambient_dir(&files, ambient_authority())?)
}

fn not_found(path: &str) -> AppError {
    AppError::NotFound(format!("no file `{}`", shown(path)))
}

/// Uploads a file (the body is its content), replacing one of that path.
#[utoipa::path(put, path = "/v1/tenants/{tenant}/files/{path}", tag = "files",
    params(("tenant" = String, Path, description = "the tenant"), ("path" = String, Path, description = "a relative path")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, description = "stored"), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 413, body = Problem), (status = 422, body = Problem), (status = 429, body = Problem)),
    security(("bearer" = [])))]
pub async fn put(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, path)): Path<(String, String)>,
    Raw(bytes): Raw,
) -> AppResult<Response> {
    let tenant = state.tenant(&caller, &name, Role::Developer)?;
    let parts = check_path(&path)?;
    let quota = tenant.record().quota;
    quotas::admit(
        "storage",
        quota.storage,
        tenant.stored(),
        bytes.len() as u64,
    )?;
    let dir = root(&tenant)?;
    if parts.len() > 1 {
        dir.create_dir_all(parts[..parts.len() - 1].join("/"))?;
    }
    let temp = format!("{}.upload", path);
    dir.write(&temp, &bytes)?;
    dir.rename(&temp, &dir, &path)?;
    tenant.measure();
    Ok(StatusCode::CREATED.into_response())
}

/// A file as listed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct FileView {
    /// Its path, relative to the tenant's files.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
}

fn walk(dir: &Dir, prefix: &str, depth: usize, out: &mut Vec<FileView>) {
    let Ok(entries) = dir.entries() else {
        return;
    };
    for e in entries.flatten() {
        let Some(n) = e.file_name().to_str().map(String::from) else {
            continue;
        };
        let path = if prefix.is_empty() {
            n.clone()
        } else {
            format!("{prefix}/{n}")
        };
        match e.file_type() {
            Ok(t) if t.is_dir() && depth < 8 => {
                if let Ok(sub) = dir.open_dir(&n) {
                    walk(&sub, &path, depth + 1, out);
                }
            }
            Ok(t) if t.is_file() && out.len() < 10_000 => out.push(FileView {
                path,
                size: e.metadata().map_or(0, |m| m.len()),
            }),
            _ => {}
        }
    }
}

/// Lists a tenant's files (the first 10,000).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/files", tag = "files",
    params(("tenant" = String, Path, description = "the tenant")),
    responses((status = 200, body = [FileView]), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> AppResult<Response> {
    let tenant = state.tenant(&caller, &name, Role::Viewer)?;
    let mut files = Vec::new();
    walk(&root(&tenant)?, "", 0, &mut files);
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(json(StatusCode::OK, &files))
}

/// Downloads a file.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/files/{path}", tag = "files",
    params(("tenant" = String, Path, description = "the tenant"), ("path" = String, Path, description = "a relative path")),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>), (status = 401, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, path)): Path<(String, String)>,
) -> AppResult<Response> {
    let tenant = state.tenant(&caller, &name, Role::Viewer)?;
    check_path(&path)?;
    let dir = root(&tenant)?;
    let meta = dir.metadata(&path).map_err(|_| not_found(&path))?;
    if !meta.is_file() {
        return Err(not_found(&path));
    }
    let bytes = dir.read(&path).map_err(|_| not_found(&path))?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        bytes,
    )
        .into_response())
}

/// Deletes a file.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/files/{path}", tag = "files",
    params(("tenant" = String, Path, description = "the tenant"), ("path" = String, Path, description = "a relative path")),
    responses((status = 204, description = "deleted"), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, path)): Path<(String, String)>,
) -> AppResult<Response> {
    let tenant = state.tenant(&caller, &name, Role::Developer)?;
    check_path(&path)?;
    root(&tenant)?
        .remove_file(&path)
        .map_err(|_| not_found(&path))?;
    tenant.measure();
    Ok(StatusCode::NO_CONTENT.into_response())
}
