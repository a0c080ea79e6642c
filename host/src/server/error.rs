//! Errors as the API answers them: one [`AppError`] whose kind chooses the
//! HTTP status, written as an RFC 9457 `application/problem+json` body (the
//! quota refusal names the resource, its limit and its use). Only the
//! server's own faults are logged; a client's mistake is not.

use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::Error;
use crate::fault::Fault;

/// A request that cannot be served, by whose doing.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// No token, or one that is wrong, expired or revoked (401).
    #[error("{0}")]
    Unauthorized(String),
    /// A valid token whose role does not allow this (403).
    #[error("{0}")]
    Forbidden(String),
    /// Nothing of that name for this caller — also another tenant's (404).
    #[error("{0}")]
    NotFound(String),
    /// The resource's state does not allow it (409).
    #[error("{0}")]
    Conflict(String),
    /// A body too large (413).
    #[error("{0}")]
    TooLarge(String),
    /// A request that is well-formed but cannot work (422).
    #[error("{0}")]
    Invalid(String),
    /// A request that is not well-formed (400).
    #[error("{0}")]
    BadRequest(String),
    /// A request whose body came too slowly (408).
    #[error("{0}")]
    Timeout(String),
    /// Admission control: the request would exceed a quota (429).
    #[error("{resource} quota exceeded: limit {limit}, in use {used}, requested {requested}")]
    Quota {
        /// The resource (`running-jobs`, `parallelism`, ...).
        resource: &'static str,
        /// Its limit.
        limit: u64,
        /// What is in use.
        used: u64,
        /// What the request asked for.
        requested: u64,
    },
    /// The environment failed (a disk, a child process) (503).
    #[error("{0}")]
    Unavailable(String),
    /// The server's own bug (500).
    #[error("{0}")]
    Internal(String),
}

/// The problem+json body.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong and what to do.
    pub detail: String,
    /// For a quota: the resource.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// For a quota: its limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// For a quota: what is in use.
    #[serde(rename = "use", skip_serializing_if = "Option::is_none")]
    pub used: Option<u64>,
    /// For a quota: what the request asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested: Option<u64>,
}

impl AppError {
    /// The status and the problem kind.
    pub fn status(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            AppError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            AppError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            AppError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            AppError::Conflict(_) => (StatusCode::CONFLICT, "conflict", "Conflict"),
            AppError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too-large", "Too large"),
            AppError::Invalid(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                "Invalid request",
            ),
            AppError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request", "Bad request"),
            AppError::Timeout(_) => (StatusCode::REQUEST_TIMEOUT, "timeout", "Request timeout"),
            AppError::Quota { .. } => (StatusCode::TOO_MANY_REQUESTS, "quota", "Quota exceeded"),
            AppError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Unavailable",
            ),
            AppError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            ),
        }
    }

    /// The problem+json body of this error.
    pub fn problem(&self) -> Problem {
        let (status, kind, title) = self.status();
        let mut problem = Problem {
            kind: format!("/problems/{kind}"),
            title: title.to_string(),
            status: status.as_u16(),
            detail: self.to_string(),
            resource: None,
            limit: None,
            used: None,
            requested: None,
        };
        if let AppError::Quota {
            resource,
            limit,
            used,
            requested,
        } = self
        {
            problem.resource = Some((*resource).to_string());
            problem.limit = Some(*limit);
            problem.used = Some(*used);
            problem.requested = Some(*requested);
        }
        problem
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, _, _) = self.status();
        if status.is_server_error() {
            tracing::error!("request failed: {self}");
        }
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        (status, [(CONTENT_TYPE, "application/problem+json")], body).into_response()
    }
}

impl From<Error> for AppError {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        match e.fault() {
            Fault::Input | Fault::Guest | Fault::Job => AppError::Invalid(message),
            Fault::Environment => AppError::Unavailable(message),
            Fault::Host => AppError::Internal(message),
        }
    }
}

impl From<std::io::Error> for AppError {
    fn from(e: std::io::Error) -> Self {
        AppError::Unavailable(format!("the server's storage failed: {e}"))
    }
}

/// Results of handlers.
pub type AppResult<T> = Result<T, AppError>;
