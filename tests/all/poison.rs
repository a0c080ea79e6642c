//! Poison isolation for every guest fault, with a guest written against
//! the raw WIT contract (no SDK, which never produces these): malformed
//! output, failure reports for records the batch does not hold, and faults
//! that do not reproduce when their record runs alone in a fresh instance.
//! Each bad record costs exactly that record; a fault that does not
//! reproduce costs none; nothing panics the host.

use std::time::Duration;

use sluice_tests::{HostCommand, Output, TempDir, guests};

/// Runs "a", `bad`, "b a" through the raw guest from stdin with one
/// allowed restart.
fn run_raw(bad: &str, dir: &TempDir, extra: &[&str]) -> Output {
    let mut args = vec![
        "run",
        "--module",
        guests::RAW,
        "--source",
        "-",
        "--restart",
        "fixed-delay:1:0ms",
        "--checkpoint-dir",
        dir.0.to_str().expect("utf8 path"),
    ];
    args.extend_from_slice(extra);
    HostCommand::new(args)
        .stdin(format!("a\n{bad}\nb a\n"))
        .timeout(Duration::from_secs(60))
        .run()
}

/// The dead letters a job left in `dir`: (record, error) per line.
fn dead_letters(dir: &TempDir) -> Vec<(u64, String)> {
    let mut found = Vec::new();
    for job in std::fs::read_dir(&dir.0).expect("checkpoint dir").flatten() {
        let Ok(text) = std::fs::read_to_string(job.path().join("dead-letter.jsonl")) else {
            continue;
        };
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l).expect("one JSON object a line");
            found.push((
                v["record"].as_u64().expect("record number"),
                v["error"].as_str().expect("error").to_string(),
            ));
        }
    }
    found
}

/// No panic, no backtrace, no log line a person cannot read.
fn assert_sane_log(out: &Output) {
    for bad in ["panicked", "stack backtrace", "RUST_BACKTRACE"] {
        assert!(
            !out.stderr.contains(bad),
            "the host must not panic ({bad:?}):\n{}",
            out.stderr
        );
    }
    for l in out.stderr_lines() {
        assert!(l.len() < 2000, "a log line of {} bytes:\n{l}", l.len());
    }
}

/// One malformed record is dead-lettered with the decoder's message; every
/// other record is counted once, and the job goes on.
fn malformed(bad: &str, message: &str) {
    malformed_with(bad, message, &[]);
}

fn malformed_with(bad: &str, message: &str, extra: &[&str]) {
    let dir = TempDir::new("malformed");
    let out = run_raw(bad, &dir, extra);
    out.assert_code(0);
    assert_sane_log(&out);
    assert_eq!(
        out.stdout, "(a,1)\n(b,1)\n(a,2)\n",
        "stderr:\n{}",
        out.stderr
    );
    out.assert_stderr_has(&format!("guest fault in subtask 0 on record 2 \"{bad}\": "))
        .assert_stderr_has(message)
        .assert_stderr_has("switched from RESTARTING to RUNNING");
    let dead = dead_letters(&dir);
    assert_eq!(dead.len(), 1, "one dead letter: {dead:?}");
    assert_eq!(dead[0].0, 2);
    assert!(dead[0].1.contains(message), "{dead:?}");
}

#[test]
fn a_value_tag_the_encoding_lacks_costs_only_its_record() {
    let message = "the guest's output is malformed: unknown value tag 9";
    malformed("tag", message);
    // Flink's way too: restore the last checkpoint, replay without it.
    malformed_with("tag", message, &["--recovery", "checkpoint"]);
}

#[test]
fn text_that_is_not_utf8_costs_only_its_record() {
    malformed("utf8", "is not valid UTF-8");
}

#[test]
fn a_length_past_the_buffer_costs_only_its_record() {
    malformed("past", "runs past the output");
}

#[test]
fn a_row_count_past_the_buffer_costs_only_its_record() {
    // 2^31 rows announced: over the row limit, refused before any is read.
    malformed(
        "rows",
        "over the limit of 100000 (raise it with --max-rows-per-record)",
    );
}

#[test]
fn a_row_count_past_the_buffer_under_a_high_limit_costs_only_its_record() {
    let dir = TempDir::new("malformed-rows");
    let out = run_raw("rows", &dir, &["--max-rows-per-record", "4294967295"]);
    out.assert_code(0);
    assert_sane_log(&out);
    assert_eq!(out.stdout, "(a,1)\n(b,1)\n(a,2)\n");
    out.assert_stderr_has("the guest's output is malformed: output ends");
    assert_eq!(dead_letters(&dir).len(), 1);
}

#[test]
fn output_for_more_records_than_the_batch_held_costs_only_its_record() {
    malformed("extra", "bytes after the last record");
}

#[test]
fn a_failure_report_outside_the_batch_is_malformed_output_not_a_panic() {
    malformed(
        "index",
        "it reports record index 1000000 failed, but the batch held 1 record(s)",
    );
}

#[test]
fn a_failure_the_guest_reports_costs_only_its_record() {
    malformed(
        "fail",
        "the guest failed the record: the record says `fail`",
    );
}

/// 40 records that each keep 1 MiB for good: a fresh instance under a
/// 16 MiB limit holds a dozen or so, so every few records the one that
/// tips the instance over traps — and succeeds alone in a fresh instance.
fn leaky_input() -> String {
    (0..40).map(|_| "leak 1\n").collect()
}

#[test]
fn a_fault_that_does_not_reproduce_costs_no_record() {
    let dir = TempDir::new("leak");
    let out = HostCommand::new([
        "run",
        "--module",
        guests::RAW,
        "--source",
        "-",
        "--max-memory",
        "16MiB",
        "--restart",
        "fixed-delay:10:0ms",
        "--checkpoint-dir",
        dir.0.to_str().expect("utf8 path"),
    ])
    .stdin(leaky_input())
    .timeout(Duration::from_secs(60))
    .run();
    out.assert_code(0);
    assert_sane_log(&out);
    let expected: String = (1..=40).map(|n| format!("(leak,{n})\n")).collect();
    assert_eq!(out.stdout, expected, "stderr:\n{}", out.stderr);
    assert!(dead_letters(&dir).is_empty(), "no record is dead-lettered");
    let unreproduced: Vec<&str> = out
        .stderr_lines()
        .into_iter()
        .filter(|l| {
            l.contains("it did not reproduce when the record ran alone in a fresh instance")
        })
        .collect();
    assert!(
        !unreproduced.is_empty(),
        "the log names each fault that did not reproduce:\n{}",
        out.stderr
    );
    for l in &unreproduced {
        assert!(
            l.contains("guest fault in subtask 0 on record ") && l.contains("\"leak 1\""),
            "names the record: {l}"
        );
        assert!(l.contains("(--max-memory)"), "says which limit: {l}");
    }
    assert_eq!(
        out.stderr
            .matches("switched from RESTARTING to RUNNING")
            .count(),
        unreproduced.len(),
        "each counts as a restart:\n{}",
        out.stderr
    );
}

#[test]
fn a_guest_whose_faults_never_reproduce_still_stops_by_its_restart_strategy() {
    let dir = TempDir::new("leak-stops");
    let out = HostCommand::new([
        "run",
        "--module",
        guests::RAW,
        "--source",
        "-",
        "--max-memory",
        "16MiB",
        "--restart",
        "fixed-delay:1:0ms",
        "--checkpoint-dir",
        dir.0.to_str().expect("utf8 path"),
    ])
    .stdin(leaky_input())
    .timeout(Duration::from_secs(60))
    .run();
    out.assert_code(1);
    assert_sane_log(&out);
    out.assert_stderr_has("the restart strategy allows 1 restart(s) and all were used")
        .assert_stderr_has("switched to FAILED");
    assert!(dead_letters(&dir).is_empty(), "no record is dead-lettered");
}

#[test]
fn a_job_description_with_values_that_cannot_work_is_refused() {
    // The description is guest output too: a name that would climb out of
    // the checkpoint directory, a multiplier that is not a number.
    let dir = TempDir::new("describe");
    for (param, message) in [
        (
            "name=../../escape",
            "job name \"../../escape\" is not valid",
        ),
        ("name=", "job name \"\" is not valid"),
        (
            "multiplier=NaN",
            "the module's job description has a restart strategy that cannot work: the multiplier must be at least 1, not NaN",
        ),
    ] {
        let out = HostCommand::new([
            "run",
            "--module",
            guests::RAW,
            "--source",
            "-",
            "--param",
            param,
            "--checkpoint-dir",
            dir.0.to_str().expect("utf8 path"),
        ])
        .run();
        out.assert_code(2).assert_stderr_has(message);
        assert_sane_log(&out);
    }
    assert!(
        std::fs::read_dir(&dir.0).expect("dir").next().is_none(),
        "nothing was created"
    );
}
