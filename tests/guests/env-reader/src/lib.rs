//! Emits `(NAME, value)` for the environment variable each line names, or
//! `(NAME, unset)`: a guest sees only the variables the job grants.

use sluice_guest::{Collector, Row, Value};

fn flat_map(line: &str, out: &mut Collector) {
    let value = std::env::var(line).unwrap_or_else(|_| "unset".to_string());
    out.emit((line, value));
}

fn key(row: &Row) -> Value<'_> {
    row.field(0)
}

sluice_guest::export!(flat_map, key);
