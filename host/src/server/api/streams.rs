//! A job's events (state changes, operations) and its log, as a JSON list
//! of the recent ones or, with `follow=true`, as server-sent events: the
//! recent ones, then each new one as it happens.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::broadcast;

use crate::server::api::json;
use crate::server::auth::{Caller, Role};
use crate::server::error::{AppResult, Problem};
use crate::server::events::{Event, Feed};
use crate::server::state::AppState;

/// How to read a feed.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct Follow {
    /// Stream new ones as server-sent events (`text/event-stream`).
    #[serde(default)]
    pub follow: bool,
    /// Only those after this sequence number.
    pub after: Option<u64>,
}

fn sse_of(event: &Event) -> SseEvent {
    SseEvent::default()
        .event(event.kind.clone())
        .id(event.seq.to_string())
        .data(serde_json::to_string(event).unwrap_or_default())
}

fn live(rx: broadcast::Receiver<Event>) -> impl Stream<Item = Event> {
    stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(e) => return Some((e, rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

fn answer(feed: &Arc<Feed>, f: &Follow) -> Response {
    let after = f.after.unwrap_or(0);
    let (recent, rx) = feed.snapshot();
    let recent: Vec<Event> = recent.into_iter().filter(|e| e.seq > after).collect();
    if !f.follow {
        return json(StatusCode::OK, &recent);
    }
    let last = recent.last().map_or(after, |e| e.seq);
    let events = stream::iter(recent)
        .chain(live(rx).filter(move |e| std::future::ready(e.seq > last)))
        .map(|e| Ok::<_, Infallible>(sse_of(&e)));
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// A job's events: state changes and operations.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/jobs/{job}/events", tag = "streams",
    params(("tenant" = String, Path, description = "the tenant"), ("job" = String, Path, description = "the job"), Follow),
    responses((status = 200, body = [Event], description = "a JSON list, or server-sent events with `follow=true`"), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
    Query(f): Query<Follow>,
) -> AppResult<Response> {
    let (_, entry) = state.job(&caller, &name, &id, Role::Viewer)?;
    Ok(answer(&entry.events, &f))
}

/// A job's log lines.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/jobs/{job}/logs", tag = "streams",
    params(("tenant" = String, Path, description = "the tenant"), ("job" = String, Path, description = "the job"), Follow),
    responses((status = 200, body = [Event], description = "a JSON list, or server-sent events with `follow=true`"), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn logs(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
    Query(f): Query<Follow>,
) -> AppResult<Response> {
    let (_, entry) = state.job(&caller, &name, &id, Role::Viewer)?;
    Ok(answer(&entry.logs, &f))
}
