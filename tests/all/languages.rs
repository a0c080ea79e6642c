//! The wordcount in every language (Rust, Python, JavaScript, C) behaves
//! the same: byte-identical output for the same file, and no import beyond
//! what a job grants. The seed scenario runs for every language in
//! `recovery.rs`.

use sluice_tests::{HostCommand, TempDir, guests};

/// Separators Rust's `split_whitespace` splits on, and look-alikes it does
/// not (U+001C, U+FEFF, U+200B): each language's helper must agree.
const SEPARATORS: [&str; 8] = [
    " ",
    "\t",
    "  ",
    "\u{a0}",
    "\u{3000}",
    "\u{2003}",
    "\u{85}",
    " \u{2029} ",
];
const WORDS: [&str; 12] = [
    "to",
    "be",
    "héllo",
    "naïve",
    "日本",
    "a\u{1c}b",
    "\u{feff}bom",
    "zero\u{200b}width",
    "ÉTÉ",
    "x",
    "ERRORS",
    "🦀",
];

/// A deterministic input with every separator, multi-byte words, empty and
/// blank lines.
fn input(lines: usize) -> String {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    let mut text = String::new();
    for i in 0..lines {
        match i % 50 {
            7 => text.push('\n'),
            8 => text.push_str(" \t \n"),
            _ => {
                let words = 1 + next(6);
                for w in 0..words {
                    if w > 0 || next(4) == 0 {
                        text.push_str(SEPARATORS[next(SEPARATORS.len())]);
                    }
                    text.push_str(WORDS[next(WORDS.len())]);
                }
                if next(5) == 0 {
                    text.push('\t');
                }
                text.push('\n');
            }
        }
    }
    text
}

/// Runs `module` over `input.txt` in `dir` into a file sink; its bytes.
fn file_job(module: &str, dir: &TempDir, out: &str) -> Vec<u8> {
    let source = format!("file://{}", dir.path("input.txt").display());
    let sink = format!("file://{}", dir.path(out).display());
    let checkpoints = dir.path(&format!("{out}.checkpoints"));
    let result = HostCommand::job(
        module,
        &source,
        &[
            "--sink",
            &sink,
            "--checkpoint-dir",
            checkpoints.to_str().expect("utf8 path"),
        ],
    )
    .run();
    result.assert_code(0);
    std::fs::read(dir.path(out)).expect("the sink file")
}

sluice_tests::for_each_wordcount!(
    a_file_job_writes_the_same_bytes_as_the_rust_guest,
    super::same_bytes_as_rust
);

fn same_bytes_as_rust(module: &str) {
    let dir = TempDir::new("lang-bytes");
    dir.write("input.txt", input(20_000));
    let expected = file_job(guests::WORDCOUNT, &dir, "rust.out");
    let text = String::from_utf8(expected.clone()).expect("utf8 output");
    // The input's traps for a wrong split are in the Rust guest's output.
    for needle in ["(a\u{1c}b,", "(\u{feff}bom,", "(zero\u{200b}width,", "(🦀,"] {
        assert!(text.contains(needle), "rust output lacks {needle:?}");
    }
    let got = file_job(module, &dir, "guest.out");
    if got != expected {
        let got = String::from_utf8_lossy(&got);
        let first = text
            .lines()
            .zip(got.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(text.lines().count().min(got.lines().count()));
        panic!(
            "{module} wrote other bytes than the Rust guest; first difference at line {}: \
             rust {:?}, guest {:?}",
            first + 1,
            text.lines().nth(first),
            got.lines().nth(first)
        );
    }
}

sluice_tests::for_each_wordcount!(
    inspect_shows_no_import_beyond_the_grants,
    super::imports_within_the_grants
);

fn imports_within_the_grants(module: &str) {
    let out = HostCommand::new(["inspect", "--module", module]).run();
    out.assert_code(0);
    let imports: Vec<&str> = out
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("imports:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(str::trim)
        .collect();
    assert!(
        imports.contains(&"sluice:stream/types@0.1.0"),
        "{}",
        out.stdout
    );
    for import in &imports {
        assert!(
            ["sluice:stream/", "wasi:cli/", "wasi:io/"]
                .iter()
                .any(|p| import.starts_with(p)),
            "{module} imports {import}, which a job does not grant by default"
        );
    }
    assert!(
        out.stdout
            .contains("needs:    no grants (pure computation)"),
        "{}",
        out.stdout
    );
    // Every language describes the seed's job.
    for line in [
        "  source:      socket://localhost:9100",
        "  aggregation: sum:1",
        "  checkpoint:  every 1000 ms",
        "  restart:     fixed-delay:3:10000ms",
    ] {
        assert!(out.stdout.contains(line), "{}", out.stdout);
    }
}
