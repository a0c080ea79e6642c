//! Reads the file the input line names under `/data` and emits its lines.
//! It needs a directory grant (`--allow-dir HOST:/data:ro`); without one the
//! host refuses to start it.

use sluice_guest::{Collector, JobDescription, Params, Row, Value};

fn flat_map(line: &str, out: &mut Collector) -> Result<(), String> {
    let text = std::fs::read_to_string(format!("/data/{line}"))
        .map_err(|e| format!("cannot read `/data/{line}`: {e}"))?;
    for l in text.lines() {
        out.emit((l, 1));
    }
    Ok(())
}

fn key(row: &Row) -> Value<'_> {
    row.field(0)
}

fn describe(_params: &Params) -> JobDescription {
    JobDescription::new("file-reader").sum(1)
}

sluice_guest::export!(flat_map, key, describe = describe);
