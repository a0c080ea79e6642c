//! A guest written against `sluice:stream@0.1.0` with plain wit-bindgen and
//! no SDK, the way a guest in a language without a Sluice helper is
//! written. It counts words like wordcount, and misbehaves on command in
//! ways the SDK never would: the input line says how.
//!
//! - `tag`: a value with a tag the encoding does not have
//! - `utf8`: a text value that is not UTF-8
//! - `past`: a text length that runs past the end of the buffer
//! - `rows`: a row count that runs past the end of the buffer
//! - `extra`: output for one more record than the batch held
//! - `index`: a `batch-result.failed` whose index lies outside the batch
//! - `fail`: a clean `batch-result.failed` for this record
//! - `leak N`: keeps N MiB more memory for good, then counts `leak`: the
//!   record that tips the instance over its memory limit succeeds alone in a
//!   fresh one
//!
//! Its job description takes `--param name=X` (the job's name) and
//! `--param multiplier=X` (an exponential restart strategy's multiplier),
//! so a test can make it describe values that cannot work.
//!
//! Any other line is split on whitespace into `(word, 1)`, keyed by word.

wit_bindgen::generate!({
    path: "../../../wit/sluice-stream@0.1.0",
    world: "stream-job",
});

use exports::sluice::stream::job::Guest as JobGuest;
use exports::sluice::stream::operator::Guest as OperatorGuest;
use sluice::stream::types::{
    AggregateKind, Aggregation, BatchResult, ExponentialDelay, FixedDelay, JobDescription,
    RecordError, RestartStrategy,
};

struct Raw;

/// Memory kept between calls by `leak` lines.
static mut HOARD: Vec<Vec<u8>> = Vec::new();

fn put_u32(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(&n.to_le_bytes());
}

fn put_text(out: &mut Vec<u8>, s: &[u8]) {
    out.push(4);
    put_u32(out, s.len() as u32);
    out.extend_from_slice(s);
}

/// A `(word, 1)` row followed by its key (the word), when keyed.
fn put_pair(out: &mut Vec<u8>, word: &[u8], keyed: bool) {
    put_u32(out, 2);
    put_text(out, word);
    out.push(2);
    out.extend_from_slice(&1i64.to_le_bytes());
    if keyed {
        put_text(out, word);
    }
}

/// The records of an input batch: one text value each.
fn records(batch: &[u8]) -> Vec<&[u8]> {
    let mut at = 0;
    let mut lines = Vec::new();
    while at + 9 <= batch.len() {
        let len = u32::from_le_bytes([batch[at + 5], batch[at + 6], batch[at + 7], batch[at + 8]])
            as usize;
        lines.push(&batch[at + 9..at + 9 + len]);
        at += 9 + len;
    }
    lines
}

fn run(batch: Vec<u8>, keyed: bool) -> BatchResult {
    let mut out = Vec::new();
    let lines = records(&batch);
    for (index, line) in lines.iter().enumerate() {
        match *line {
            b"tag" => {
                put_u32(&mut out, 1);
                put_u32(&mut out, 1);
                out.push(9);
            }
            b"utf8" => {
                put_u32(&mut out, 1);
                put_u32(&mut out, 1);
                put_text(&mut out, &[0xff, 0xfe]);
                if keyed {
                    put_text(&mut out, b"k");
                }
            }
            b"past" => {
                put_u32(&mut out, 1);
                put_u32(&mut out, 1);
                out.push(4);
                put_u32(&mut out, 1 << 30);
                out.extend_from_slice(b"short");
            }
            b"rows" => {
                put_u32(&mut out, u32::MAX / 2);
                put_pair(&mut out, b"rows", keyed);
            }
            b"extra" => {
                put_u32(&mut out, 1);
                put_pair(&mut out, b"extra", keyed);
                put_u32(&mut out, 1);
                put_pair(&mut out, b"extra", keyed);
            }
            b"index" => {
                return BatchResult {
                    output: out,
                    failed: Some(RecordError {
                        index: 1_000_000 + index as u32,
                        message: "a failure report for a record the batch does not hold".into(),
                    }),
                };
            }
            b"fail" => {
                return BatchResult {
                    output: out,
                    failed: Some(RecordError {
                        index: index as u32,
                        message: "the record says `fail`".into(),
                    }),
                };
            }
            _ if line.starts_with(b"leak ") => {
                let mib: usize = std::str::from_utf8(&line[5..])
                    .ok()
                    .and_then(|n| n.trim().parse().ok())
                    .unwrap_or(1);
                // SAFETY: the guest is single-threaded.
                #[allow(static_mut_refs)]
                unsafe {
                    HOARD.push(vec![1u8; mib << 20]);
                }
                put_u32(&mut out, 1);
                put_pair(&mut out, b"leak", keyed);
            }
            _ => {
                let words: Vec<&[u8]> = line
                    .split(|b| b.is_ascii_whitespace())
                    .filter(|w| !w.is_empty())
                    .collect();
                put_u32(&mut out, words.len() as u32);
                for w in words {
                    put_pair(&mut out, w, keyed);
                }
            }
        }
    }
    BatchResult {
        output: out,
        failed: None,
    }
}

impl OperatorGuest for Raw {
    fn open(_params: Vec<(String, String)>) -> Result<(), String> {
        Ok(())
    }

    fn flat_map(records: Vec<u8>) -> BatchResult {
        run(records, false)
    }

    fn key_selector(rows: Vec<u8>) -> Result<Vec<u8>, RecordError> {
        // Not used by the host's hot path; the first field of each row.
        let _ = rows;
        Ok(Vec::new())
    }

    fn flat_map_keyed(records: Vec<u8>) -> BatchResult {
        run(records, true)
    }
}

impl JobGuest for Raw {
    fn describe(params: Vec<(String, String)>) -> JobDescription {
        let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        // `--param multiplier=X`: an exponential strategy with that multiplier.
        let restart = match param("multiplier").and_then(|m| m.parse::<f64>().ok()) {
            Some(multiplier) => RestartStrategy::ExponentialDelay(ExponentialDelay {
                initial_ms: 10,
                max_ms: 100,
                multiplier,
                reset_after_ms: 1000,
                jitter: 0.0,
            }),
            None => RestartStrategy::FixedDelay(FixedDelay {
                attempts: 3,
                delay_ms: 0,
            }),
        };
        JobDescription {
            // `--param name=X`: the job names itself X.
            name: Some(param("name").unwrap_or_else(|| "raw".into())),
            source: None,
            sink: None,
            aggregation: Some(Aggregation {
                kind: AggregateKind::Sum,
                field: 1,
            }),
            checkpoint_interval_ms: None,
            restart: Some(restart),
            parallelism: None,
            limits: None,
        }
    }
}

export!(Raw);
