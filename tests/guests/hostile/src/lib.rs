//! A guest that misbehaves on command: the input line says how. Any other
//! line is counted like wordcount, so a test can see that nothing else is
//! lost.

use sluice_guest::{Collector, JobDescription, Params, Row, Value};
use std::hint::black_box;

fn flat_map(line: &str, out: &mut Collector) {
    match line {
        // Spins forever: the call deadline must stop it.
        "loop" => loop {
            black_box(());
        },
        // Allocates until the memory limit stops it.
        "alloc" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                black_box(&hoard);
            }
        }
        // Recurses until the stack limit stops it.
        "recurse" => {
            black_box(recurse(0));
        }
        // Prints far more than the host keeps; not a failure.
        "flood" => {
            for i in 0..200_000 {
                println!("flood line {i}");
            }
            out.emit(("flood", 1));
        }
        // One record, one enormous row.
        "huge" => out.emit(("huge", "x".repeat(20 << 20))),
        // One line expands into half a million rows.
        "bomb" => {
            for _ in 0..500_000 {
                out.emit(("bomb", 1));
            }
        }
        // The key-selector spins on this row.
        "keyloop" => out.emit(("keyloop", 1)),
        // Says it was here (in the host's log), then counts like any line.
        _ if line.starts_with("say ") => {
            eprintln!("said {}", &line[4..]);
            for word in line.split_whitespace() {
                out.emit((word, 1));
            }
        }
        _ => {
            for word in line.split_whitespace() {
                out.emit((word, 1));
            }
        }
    }
}

#[allow(unconditional_recursion)]
fn recurse(n: u64) -> u64 {
    black_box(recurse(black_box(n + 1))) + 1
}

fn key(row: &Row) -> Value<'_> {
    if row.field(0).as_str() == Some("keyloop") {
        loop {
            black_box(());
        }
    }
    row.field(0)
}

fn describe(params: &Params) -> JobDescription {
    if params.get("describe") == Some("panic") {
        panic!("the job description failed on purpose");
    }
    JobDescription::new("hostile").sum(1)
}

sluice_guest::export!(flat_map, key, describe = describe);
