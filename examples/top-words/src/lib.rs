//! The top 3 words of every event-time window: a pipeline with two keyed
//! stages, re-keyed in between.
//!
//! Input lines are `timestamp words...` (timestamp in milliseconds since
//! the Unix epoch). Stage `count` counts each word per tumbling window
//! (keyed by word); its results are keyed again by window and stage `top`
//! (a process function keyed by the window's end) collects each window's
//! counts in a list state until the watermark passes the window, then
//! emits `(start, end, rank, word, count)` for its three most frequent
//! words (ties by word). Lines without a timestamp go to the side output
//! `malformed`.
//!
//! Parameters: `size=MS` (window length; default 10000), `top=N` (how many
//! words; default 3), `out-of-orderness=MS` (default 0).

use sluice_guest::pipeline::{Ctx, Event, Job, Out, Record, State, WindowInfo, Windows};
use sluice_guest::{Params, Row, Value};
use std::time::Duration;

/// The window's counts so far: `(word, start, count)` rows.
const COUNTS: usize = 0;

/// `timestamp words...` into `(word,)` rows at that timestamp.
fn split(r: &Record, out: &mut Out) {
    let line = r.text();
    let mut words = line.split_whitespace();
    let Some(ts) = words.next().and_then(|t| t.parse::<i64>().ok()) else {
        return out.side("malformed", (line,));
    };
    for word in words {
        out.emit_at(ts, (word,));
    }
}

fn add(acc: Option<&Row>, _row: &Row) -> (i64,) {
    (acc.and_then(|a| a.field(0).as_int()).unwrap_or(0) + 1,)
}

fn merge(a: &Row, b: &Row) -> (i64,) {
    (a.field(0).as_int().unwrap_or(0) + b.field(0).as_int().unwrap_or(0),)
}

/// A word's count in a window, as `(word, start, end, count)`.
fn counted(w: &WindowInfo, acc: Option<&Row>, out: &mut Out) {
    let count = acc.and_then(|a| a.field(0).as_int()).unwrap_or(0);
    out.emit((w.key.clone(), w.start, w.end, count));
}

/// Keeps each window's counts; when the watermark passes the window (its
/// counts all arrived: they fire at the same watermark), emits the top.
fn top(n: usize) -> impl Fn(&mut Ctx, Event, &mut Out) + Send + Sync + 'static {
    move |cx, event, out| match event {
        Event::Row(r) => {
            let row = r.row();
            cx.push(COUNTS, (row.field(0), row.field(1), row.field(3)));
            cx.set_timer(sluice_guest::pipeline::Time::Event, r.timestamp());
        }
        Event::Timer { .. } => {
            let end = cx.key().as_int().unwrap_or(0);
            let mut counts: Vec<(Value, i64, i64)> = cx
                .list(COUNTS)
                .into_iter()
                .map(|r| {
                    (
                        r.field(0),
                        r.field(1).as_int().unwrap_or(0),
                        r.field(2).as_int().unwrap_or(0),
                    )
                })
                .collect();
            counts.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.as_str().cmp(&b.0.as_str())));
            let rows: Vec<_> = counts
                .into_iter()
                .take(n)
                .enumerate()
                .map(|(i, (word, start, count))| (start, end, i + 1, word.into_owned(), count))
                .collect();
            cx.clear(COUNTS);
            for row in rows {
                out.emit(row);
            }
        }
    }
}

fn param(params: &Params, key: &str, default: u64) -> u64 {
    params
        .get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn job(params: &Params) -> Job {
    let size = Duration::from_millis(param(params, "size", 10_000));
    let n = usize::try_from(param(params, "top", 3)).unwrap_or(3);
    Job::new("top-words")
        .source("socket://localhost:9100")
        .checkpoint_every(Duration::from_secs(1))
        .watermarks(Duration::from_millis(param(params, "out-of-orderness", 0)))
        .side_output("malformed")
        .map("split", split)
        .key_by(|row: &Row| row.field(0))
        .aggregate("count", Windows::tumbling(size), add, merge, counted)
        .key_by(|row: &Row| row.field(2))
        .process("top", [State::list("counts")], top(n))
}

sluice_guest::pipeline!(job);
