//! The API's handlers, one file per group of routes: the server itself
//! (`system`), tenants and tokens, modules, jobs, job operations, streams
//! (events, logs), and tenants' files. Handlers check who calls and what
//! they may do, then call the server's parts; they never name a path the
//! client gave without checking it.

pub mod actions;
pub mod files;
pub mod jobs;
pub mod modules;
pub mod streams;
pub mod system;
pub mod tenants;

use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::server::disk;
use crate::server::error::AppError;
use crate::server::operations::Remembered;
use crate::server::state::AppState;
use crate::server::tenants::Tenant;

/// A JSON body whose rejections are problem+json.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Body(v)),
            Err(JsonRejection::JsonDataError(e)) => Err(AppError::Invalid(e.body_text())),
            Err(JsonRejection::BytesRejection(e)) => Err(bytes_rejection(&e)),
            Err(other) => Err(AppError::BadRequest(other.body_text())),
        }
    }
}

/// Raw bytes whose rejections are problem+json.
pub struct Raw(pub bytes::Bytes);

impl<S: Send + Sync> FromRequest<S> for Raw {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        bytes::Bytes::from_request(req, state)
            .await
            .map(Raw)
            .map_err(|e| bytes_rejection(&e))
    }
}

fn bytes_rejection(e: &BytesRejection) -> AppError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        AppError::TooLarge(format!(
            "the body is over this route's limit: {}",
            e.body_text()
        ))
    } else {
        AppError::BadRequest(e.body_text())
    }
}

/// A JSON answer with a status.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    (status, axum::Json(value)).into_response()
}

/// The `Idempotency-Key` of a request, checked.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, AppError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(k) if (1..=200).contains(&k.len()) => Ok(Some(k.to_string())),
        _ => Err(AppError::BadRequest(
            "Idempotency-Key must be 1 to 200 visible ASCII characters".into(),
        )),
    }
}

/// Runs `make` once per `Idempotency-Key` (when the request has one): a
/// retry with the same key and request gets the first answer again.
pub async fn once<F, Fut>(
    state: &AppState,
    tenant: &Tenant,
    headers: &HeaderMap,
    request: &str,
    make: F,
) -> Result<Response, AppError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(StatusCode, serde_json::Value), AppError>>,
{
    let Some(key) = idempotency_key(headers)? else {
        let (status, body) = make().await?;
        return Ok(json(status, &body));
    };
    let lock = state.idempotency.lock_of(&tenant.name);
    let _turn = lock.lock().await;
    let fingerprint = disk::sha256(request.as_bytes());
    if let Some(r) = state.idempotency.recall(tenant, &key, &fingerprint)? {
        let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK);
        return Ok(json(status, &r.body));
    }
    let (status, body) = make().await?;
    let remembered = Remembered {
        fingerprint,
        status: status.as_u16(),
        body: body.clone(),
        created_ms: disk::now_ms(),
    };
    state.idempotency.remember(tenant, &key, &remembered)?;
    Ok(json(status, &body))
}

/// Runs blocking work (guests, disks, waits) off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AppError> + Send + 'static,
) -> Result<T, AppError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(AppError::Internal(format!("a task panicked: {e}"))))
}

/// A page of a list: `limit` items (1 to 100, default 50) from the one
/// `page_token` names.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct Page {
    /// Items per page, 1 to 100.
    pub limit: Option<usize>,
    /// Where the page starts (from the last page's `next-page-token`).
    pub page_token: Option<String>,
}

impl Page {
    /// The items of this page and the next page's token.
    pub fn of<T>(&self, items: Vec<T>) -> Result<(Vec<T>, Option<String>), AppError> {
        let limit = self.limit.unwrap_or(50);
        if !(1..=100).contains(&limit) {
            return Err(AppError::BadRequest("`limit` must be 1 to 100".into()));
        }
        let start: usize = match &self.page_token {
            None => 0,
            Some(t) => t.parse().map_err(|_| {
                AppError::BadRequest("`page_token` is not one this server gave".into())
            })?,
        };
        let total = items.len();
        let page: Vec<T> = items.into_iter().skip(start).take(limit).collect();
        let next = (start + limit < total).then(|| (start + limit).to_string());
        Ok((page, next))
    }
}
