//! The web dashboard: three files embedded in the binary (no CDN), served
//! at `/ui/`, that use only the public API with the token the user signs
//! in with — jobs with their state, throughput, restarts and checkpoint
//! age; a job's page with live counters, a throughput chart, checkpoints,
//! savepoints, exceptions, output and events, and buttons to savepoint,
//! stop with a savepoint, start and cancel; modules; the quota and its use.

use axum::http::header::{CONTENT_TYPE, HeaderName};
use axum::response::{IntoResponse, Redirect, Response};

const INDEX: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const APP_CSS: &str = include_str!("dashboard/app.css");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers: [(HeaderName, &str); 4] = [
        (CONTENT_TYPE, content_type),
        (
            HeaderName::from_static("content-security-policy"),
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        ),
        (HeaderName::from_static("x-content-type-options"), "nosniff"),
        (HeaderName::from_static("referrer-policy"), "no-referrer"),
    ];
    (headers, body).into_response()
}

/// `/`: to the dashboard.
pub async fn root() -> Redirect {
    Redirect::to("/ui/")
}

/// The dashboard's page.
pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

/// Its script.
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// Its style.
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}
