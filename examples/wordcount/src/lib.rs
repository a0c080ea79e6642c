//! Flink's WordCount as a Sluice guest.
//!
//! Splits each line on whitespace into `(word, 1)`, keys by the word (field
//! 0) and lets the host sum field 1. The line `ERROR` panics: the seed scenario's
//! failure signal, which the host answers with its restart strategy.

use sluice_guest::{Collector, JobDescription, Params, Restart};
use std::time::Duration;

/// Split a line into `(word, 1)` pairs; the line `ERROR` fails the task.
fn flat_map(line: &str, out: &mut Collector) {
    if line == "ERROR" {
        panic!("received the line `ERROR`");
    }
    for word in line.split_whitespace() {
        out.emit((word, 1));
    }
}

/// The job as the seed describes it.
fn describe(_params: &Params) -> JobDescription {
    JobDescription::new("wordcount")
        .source("socket://localhost:9100")
        .sum(1)
        .checkpoint_every(Duration::from_secs(1))
        .restart(Restart::fixed_delay(3, Duration::from_secs(10)))
}

sluice_guest::export!(flat_map, field = 0, describe = describe);
