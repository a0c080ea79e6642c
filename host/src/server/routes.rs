//! The route table: every route of the API, its handler, and the limits
//! on what its body may be; the counter of requests by route and status;
//! a problem+json 404 for anything else.

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::handler::Handler;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::server::api::{actions, files, jobs, modules, streams, system, tenants};
use crate::server::dashboard;
use crate::server::error::AppError;
use crate::server::state::AppState;

/// Counts each request by its route and the status it got.
async fn count(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_string(), |p| p.as_str().to_string());
    let method = req.method().as_str().to_string();
    let response = next.run(req).await;
    let key = (format!("{method} {route}"), response.status().as_u16());
    *state
        .stats
        .requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key)
        .or_default() += 1;
    response
}

async fn not_found() -> Response {
    AppError::NotFound("no such route; see /openapi.json".into()).into_response()
}

/// The API's router.
pub fn router(state: AppState) -> Router {
    let limits = state.limits;
    let t = "/v1/tenants/{tenant}";
    let j = "/v1/tenants/{tenant}/jobs/{job}";
    Router::new()
        .route("/", get(dashboard::root))
        .route("/ui", get(dashboard::root))
        .route("/ui/", get(dashboard::index))
        .route("/ui/app.js", get(dashboard::script))
        .route("/ui/app.css", get(dashboard::style))
        .route("/healthz", get(system::healthz))
        .route("/metrics", get(system::metrics))
        .route("/openapi.json", get(crate::server::openapi::serve))
        .route("/v1/whoami", get(system::whoami))
        .route("/v1/tenants", get(tenants::list).post(tenants::create))
        .route(t, get(tenants::get).patch(tenants::change))
        .route(&format!("{t}/quota"), get(tenants::quota))
        .route(
            &format!("{t}/tokens"),
            get(tenants::list_tokens).post(tenants::create_token),
        )
        .route(
            &format!("{t}/tokens/{{id}}"),
            axum::routing::delete(tenants::revoke_token),
        )
        .route(
            &format!("{t}/modules"),
            get(modules::list)
                .post(modules::upload.layer(DefaultBodyLimit::max(limits.module_bytes))),
        )
        .route(
            &format!("{t}/modules/{{digest}}"),
            get(modules::get).delete(modules::delete),
        )
        .route(&format!("{t}/jobs"), get(jobs::list).post(jobs::submit))
        .route(j, get(jobs::get).delete(jobs::delete))
        .route(&format!("{j}/cancel"), post(jobs::cancel))
        .route(&format!("{j}/start"), post(jobs::start))
        .route(&format!("{j}/stop"), post(actions::stop))
        .route(&format!("{j}/savepoint"), post(actions::savepoint))
        .route(&format!("{j}/rescale"), post(actions::rescale))
        .route(&format!("{j}/upgrade"), post(actions::upgrade))
        .route(&format!("{j}/savepoints"), get(jobs::list_savepoints))
        .route(&format!("{j}/checkpoints"), get(jobs::checkpoints))
        .route(&format!("{j}/exceptions"), get(jobs::exceptions))
        .route(&format!("{j}/output"), get(jobs::output))
        .route(&format!("{j}/events"), get(streams::events))
        .route(&format!("{j}/logs"), get(streams::logs))
        .route(&format!("{t}/operations"), get(actions::list_ops))
        .route(&format!("{t}/operations/{{op}}"), get(actions::get_op))
        .route(&format!("{t}/files"), get(files::list))
        .route(
            &format!("{t}/files/{{*path}}"),
            get(files::get)
                .put(files::put.layer(DefaultBodyLimit::max(limits.file_bytes)))
                .delete(files::delete),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), count))
        .fallback(not_found)
        .layer(middleware::from_fn(move |req, next| {
            crate::server::listen::body_deadline(limits.body_timeout, req, next)
        }))
        .layer(DefaultBodyLimit::max(limits.json_bytes))
        .with_state(state)
}
