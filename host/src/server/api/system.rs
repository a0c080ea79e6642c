//! The server itself: its health, who a token is, its metrics.

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::server::api::json;
use crate::server::auth::{Caller, Role};
use crate::server::error::{AppResult, Problem};
use crate::server::state::AppState;

/// Whether the server is up (no token needed).
#[utoipa::path(get, path = "/healthz", tag = "server", responses((status = 200, description = "`ok`")))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// Who a token is.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct Whoami {
    /// `admin` or `tenant`.
    pub kind: String,
    /// The tenant, for a tenant's token.
    pub tenant: Option<String>,
    /// The role, for a tenant's token.
    pub role: Option<Role>,
}

/// Who the token is.
#[utoipa::path(get, path = "/v1/whoami", tag = "server",
    responses((status = 200, body = Whoami), (status = 401, body = Problem)),
    security(("bearer" = [])))]
pub async fn whoami(caller: Caller) -> AppResult<Response> {
    let me = match caller {
        Caller::Admin => Whoami {
            kind: "admin".into(),
            tenant: None,
            role: None,
        },
        Caller::Tenant { tenant, role } => Whoami {
            kind: "tenant".into(),
            tenant: Some(tenant),
            role: Some(role),
        },
    };
    Ok(json(StatusCode::OK, &me))
}

/// Metrics in Prometheus text: a tenant's token reads its own tenant's
/// series, the admin's every series.
#[utoipa::path(get, path = "/metrics", tag = "server",
    responses((status = 200, content_type = "text/plain", body = String), (status = 401, body = Problem)),
    security(("bearer" = [])))]
pub async fn metrics(State(state): State<AppState>, caller: Caller) -> AppResult<Response> {
    let text = crate::server::metrics::render(&state, caller.tenant());
    Ok((
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
