//! What a job tells its tenant as it runs: its state changes and
//! operations ([`Feed`] of events) and its log lines (a [`Feed`] of logs),
//! kept in memory (the last few hundred) and streamed to clients as
//! server-sent events. [`LogRouter`] is a tracing layer that takes the
//! library's log lines, which name each job by its id, to the job's feed,
//! with the server's own paths taken out.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::server::disk;

/// How many events or log lines a feed keeps.
const KEPT: usize = 500;

/// One event or log line.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct Event {
    /// Its number in the feed, from 1.
    pub seq: u64,
    /// When (Unix ms).
    pub time_ms: u64,
    /// `state`, `operation` or `log`.
    pub kind: String,
    /// For a log line: its level.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// For a state change: the new state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// What happened.
    pub message: String,
}

/// A job's events or logs: the recent ones and a channel of new ones.
#[derive(Debug)]
pub struct Feed {
    recent: Mutex<VecDeque<Event>>,
    seq: AtomicU64,
    tx: broadcast::Sender<Event>,
}

impl Default for Feed {
    fn default() -> Self {
        Feed {
            recent: Mutex::new(VecDeque::new()),
            seq: AtomicU64::new(0),
            tx: broadcast::channel(256).0,
        }
    }
}

impl Feed {
    /// Adds an event.
    pub fn push(&self, kind: &str, level: Option<&str>, state: Option<&str>, message: String) {
        let event = Event {
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            time_ms: disk::now_ms(),
            kind: kind.to_string(),
            level: level.map(String::from),
            state: state.map(String::from),
            message,
        };
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == KEPT {
            recent.pop_front();
        }
        recent.push_back(event.clone());
        let _ = self.tx.send(event);
    }

    /// The events kept, oldest first, and a receiver of those after them.
    pub fn snapshot(&self) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        (recent.iter().cloned().collect(), self.tx.subscribe())
    }
}

/// Routes log lines that name a job's id to that job's feed.
#[derive(Debug, Default)]
pub struct LogRouter {
    routes: RwLock<HashMap<String, (Arc<Feed>, String)>>,
}

impl LogRouter {
    /// Sends log lines naming `id` (the library's job id) to `feed`, with
    /// `hide` (the tenant's directory) written as `.`.
    pub fn route(&self, id: &str, feed: Arc<Feed>, hide: String) {
        self.routes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), (feed, hide));
    }

    /// Stops routing `id`.
    pub fn unroute(&self, id: &str) {
        self.routes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    fn deliver(&self, level: &str, message: &str) {
        let Some(id) = job_id_in(message) else {
            return;
        };
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        if let Some((feed, hide)) = routes.get(id) {
            let shown = message.replace(hide.as_str(), ".");
            feed.push("log", Some(level), None, shown);
        }
    }
}

/// The first `(ID)` of 32 hex digits in a log line: how the library names
/// a job.
fn job_id_in(message: &str) -> Option<&str> {
    let bytes = message.as_bytes();
    let mut from = 0;
    while let Some(i) = message[from..].find('(') {
        let start = from + i + 1;
        let end = start + 32;
        if bytes.get(end) == Some(&b')') && bytes[start..end].iter().all(u8::is_ascii_hexdigit) {
            return Some(&message[start..end]);
        }
        from = start;
    }
    None
}

struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_string();
        }
    }
}

/// The tracing layer that feeds a [`LogRouter`].
pub struct LogLayer(pub Arc<LogRouter>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for LogLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _cx: tracing_subscriber::layer::Context<'_, S>) {
        let level = *event.metadata().level();
        if level > tracing::Level::INFO {
            return;
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        self.0.deliver(level.as_str(), &message.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_line_goes_to_the_job_it_names_without_the_servers_paths() {
        let router = LogRouter::default();
        let feed = Arc::new(Feed::default());
        let id = "0123456789abcdef0123456789abcdef";
        router.route(id, feed.clone(), "/data/tenants/a".into());
        router.deliver(
            "INFO",
            &format!("job `wc` ({id}) switched from CREATED to RUNNING in /data/tenants/a/jobs"),
        );
        router.deliver("INFO", "job `x` (ffff) is someone else's");
        let (events, _) = feed.snapshot();
        assert_eq!(events.len(), 1);
        assert!(
            events[0].message.ends_with("RUNNING in ./jobs"),
            "{}",
            events[0].message
        );
    }
}
