//! WordCount over event-time windows as a Sluice pipeline.
//!
//! Input lines are `timestamp words...` (timestamp in milliseconds since
//! the Unix epoch). Each word is counted per window; a window's counts are
//! emitted as `(word, start, end, count)` once the watermark passes its
//! end, and again when a late word within the allowed lateness updates it.
//! Words later than that go to the side output `late`.
//!
//! Parameters: `windows=tumbling|sliding|session` (default tumbling),
//! `size=MS` (window length, or the session gap; default 10000),
//! `slide=MS` (sliding windows; default size / 2), `lateness=MS`
//! (default 0), `out-of-orderness=MS` (default 0), and `function=process`
//! to count in a window function over the window's words instead of an
//! aggregate.

use sluice_guest::pipeline::{Job, Out, Record, WindowInfo, Windows};
use sluice_guest::{Params, Row, Value};
use std::time::Duration;

/// `timestamp words...` into `(word, 1)` rows at that timestamp.
fn split(r: &Record, out: &mut Out) {
    let line = r.text();
    let mut words = line.split_whitespace();
    let Some(ts) = words.next().and_then(|t| t.parse::<i64>().ok()) else {
        return out.side("malformed", (line,));
    };
    for word in words {
        out.emit_at(ts, (word, 1));
    }
}

fn word(row: &Row) -> Value<'_> {
    row.field(0)
}

/// The count so far plus one.
fn add(acc: Option<&Row>, _row: &Row) -> (i64,) {
    (acc.and_then(|a| a.field(0).as_int()).unwrap_or(0) + 1,)
}

/// Two sessions' counts together.
fn merge(a: &Row, b: &Row) -> (i64,) {
    (a.field(0).as_int().unwrap_or(0) + b.field(0).as_int().unwrap_or(0),)
}

fn fire(w: &WindowInfo, acc: Option<&Row>, out: &mut Out) {
    let count = acc.and_then(|a| a.field(0).as_int()).unwrap_or(0);
    out.emit((w.key.clone(), w.start, w.end, count));
}

fn fire_contents(w: &WindowInfo, rows: &[(i64, &Row)], out: &mut Out) {
    out.emit((w.key.clone(), w.start, w.end, rows.len()));
}

fn ms(params: &Params, key: &str, default: u64) -> Duration {
    let v = params
        .get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    Duration::from_millis(v)
}

fn job(params: &Params) -> Job {
    let size = ms(params, "size", 10_000);
    let slide = ms(
        params,
        "slide",
        u64::try_from(size.as_millis() / 2).unwrap_or(1).max(1),
    );
    let windows = match params.get("windows") {
        Some("sliding") => Windows::sliding(size, slide),
        Some("session") => Windows::session(size),
        _ => Windows::tumbling(size),
    }
    .allowed_lateness(ms(params, "lateness", 0))
    .late_output("late");
    let job = Job::new("windowed-wordcount")
        .source("socket://localhost:9100")
        .checkpoint_every(Duration::from_secs(1))
        .watermarks(ms(params, "out-of-orderness", 0))
        .side_output("late")
        .side_output("malformed")
        .map("split", split)
        .key_by(word);
    if params.get("function") == Some("process") {
        job.window("count", windows, fire_contents)
    } else {
        job.aggregate("count", windows, add, merge, fire)
    }
}

sluice_guest::pipeline!(job);
