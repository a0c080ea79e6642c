//! A 0.2.0 pipeline over Kafka records whole. The first stage sends each
//! record's metadata to the side output `meta`, as `(key, partition,
//! offset, timestamp, headers, value)` (the key and header values as text,
//! the headers as `name=value;...`), and emits each word of the value at
//! the record's own timestamp (the default for a Kafka record); a line that
//! is not a Kafka record goes to `meta` as `(line, TEXT)`. Words are
//! counted per key in tumbling windows of 10 s of event time (a window
//! function over their rows), emitted as `(word, start, end, count)`.

use sluice_guest::pipeline::{Job, Out, Record, WindowInfo, Windows};
use sluice_guest::{Params, Row, Value};
use std::time::Duration;

fn text(bytes: Option<&[u8]>) -> String {
    bytes.map_or_else(
        || "null".into(),
        |b| String::from_utf8_lossy(b).into_owned(),
    )
}

fn split(r: &Record, out: &mut Out) {
    let Some(k) = r.kafka() else {
        return out.side("meta", ("line", r.text()));
    };
    let headers: Vec<String> = k
        .headers()
        .map(|(name, value)| format!("{name}={}", text(value)))
        .collect();
    let meta = (
        text(k.key()),
        k.partition(),
        k.offset(),
        k.timestamp(),
        headers.join(";"),
        r.text(),
    );
    out.side("meta", meta);
    for word in r.text().split_whitespace() {
        out.emit((word, 1));
    }
}

fn count(w: &WindowInfo, rows: &[(i64, &Row)], out: &mut Out) {
    out.emit((w.key.clone(), w.start, w.end, rows.len()));
}

fn job(_params: &Params) -> Job {
    Job::new("kafka-records")
        .watermarks(Duration::from_secs(60))
        .side_output("meta")
        .map("split", split)
        .key_by(|row: &Row| -> Value<'_> { row.field(0) })
        .window("count", Windows::tumbling(Duration::from_secs(10)), count)
}

sluice_guest::pipeline!(job);
