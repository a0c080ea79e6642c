//! Benchmark guest: WordCount in a keyed process function whose count is
//! a value state the host keeps, emitting each word's new count (the
//! updates the 0.1.0 wordcount emits), for `sluice-bench pipeline`.

use sluice_guest::pipeline::{Ctx, Event, Job, Out, Record, State};
use sluice_guest::{Params, Row};

fn split(r: &Record, out: &mut Out) {
    for word in r.text().split_whitespace() {
        out.emit((word,));
    }
}

fn count(cx: &mut Ctx, event: Event, out: &mut Out) {
    if let Event::Row(_) = event {
        let n = cx.value(0).and_then(|r| r.field(0).as_int()).unwrap_or(0) + 1;
        cx.set(0, (n,));
        out.emit((cx.key(), n));
    }
}

fn job(_params: &Params) -> Job {
    Job::new("keyed-count")
        .map("split", split)
        .key_by(|row: &Row| row.field(0))
        .process("count", [State::value("count")], count)
}

sluice_guest::pipeline!(job);
