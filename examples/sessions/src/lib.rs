//! Sessions per user: a user's clicks grouped into activity sessions that
//! end after a gap with no click (session windows in event time).
//!
//! Input lines are `user,timestamp,action` (timestamp in milliseconds since
//! the Unix epoch; any action, `buy` counted apart). Once the watermark
//! passes a session's end, it is emitted as `(user, start, end, clicks,
//! buys)`; `end` is one gap after the session's last click. A click that
//! arrives late and joins or bridges sessions within the allowed lateness
//! merges them and the session is emitted again; clicks later than that go
//! to the side output `late`, lines that do not parse to `malformed`.
//!
//! Parameters: `gap=MS` (default 1800000, half an hour), `lateness=MS`
//! (default 0), `out-of-orderness=MS` (default 0).

use sluice_guest::pipeline::{Job, Out, Record, WindowInfo, Windows};
use sluice_guest::{Params, Row};
use std::time::Duration;

/// `user,timestamp,action` into `(user, is_buy)` at the timestamp.
fn parse(r: &Record, out: &mut Out) {
    let line = r.text();
    let mut fields = line.split(',').map(str::trim);
    let (Some(user), Some(ts), Some(action), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return out.side("malformed", (line,));
    };
    match ts.parse::<i64>() {
        Ok(ts) if !user.is_empty() => out.emit_at(ts, (user, action == "buy")),
        _ => out.side("malformed", (line,)),
    }
}

fn int(row: &Row, field: usize) -> i64 {
    row.field(field).as_int().unwrap_or(0)
}

/// `(clicks, buys)` so far, with one more click.
fn add(acc: Option<&Row>, click: &Row) -> (i64, i64) {
    let (clicks, buys) = acc.map_or((0, 0), |a| (int(a, 0), int(a, 1)));
    let buy = i64::from(click.field(1) == sluice_guest::Value::Bool(true));
    (clicks + 1, buys + buy)
}

/// Two sessions that a click brought together.
fn merge(a: &Row, b: &Row) -> (i64, i64) {
    (int(a, 0) + int(b, 0), int(a, 1) + int(b, 1))
}

fn session(w: &WindowInfo, acc: Option<&Row>, out: &mut Out) {
    let (clicks, buys) = acc.map_or((0, 0), |a| (int(a, 0), int(a, 1)));
    out.emit((w.key.clone(), w.start, w.end, clicks, buys));
}

fn ms(params: &Params, key: &str, default: u64) -> Duration {
    let v = params
        .get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    Duration::from_millis(v)
}

fn job(params: &Params) -> Job {
    let sessions = Windows::session(ms(params, "gap", 1_800_000))
        .allowed_lateness(ms(params, "lateness", 0))
        .late_output("late");
    Job::new("sessions")
        .source("socket://localhost:9100")
        .checkpoint_every(Duration::from_secs(1))
        .watermarks(ms(params, "out-of-orderness", 0))
        .side_output("late")
        .side_output("malformed")
        .map("parse", parse)
        .key_by(|row: &Row| row.field(0))
        .aggregate("sessions", sessions, add, merge, session)
}

sluice_guest::pipeline!(job);
