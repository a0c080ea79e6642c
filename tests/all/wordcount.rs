//! The Rust wordcount guest over every source, at parallelism 1 and 2.

use std::time::Duration;

use sluice_tests::{HostCommand, LineServer, Step, TempDir, guests, line};

const INPUT: &str =
    "to be or not to be\nthat is the question\n\nwhether tis nobler in the mind to suffer\n";

const EXPECTED: &str = "(to,1)\n(be,1)\n(or,1)\n(not,1)\n(to,2)\n(be,2)\n(that,1)\n(is,1)\n(the,1)\n\
(question,1)\n(whether,1)\n(tis,1)\n(nobler,1)\n(in,1)\n(the,2)\n(mind,1)\n(to,3)\n(suffer,1)\n";

fn run_file(dir: &TempDir, input: &str, extra: &[&str]) -> sluice_tests::Output {
    let path = dir.write("input.txt", input);
    let source = format!("file://{}", path.display());
    let mut args = vec!["run", "--module", guests::WORDCOUNT, "--source", &source];
    args.extend_from_slice(extra);
    HostCommand::new(args).run()
}

#[test]
fn file_source_prints_running_counts_and_finishes() {
    let dir = TempDir::new("wc-file");
    let out = run_file(&dir, INPUT, &[]);
    out.assert_code(0);
    assert_eq!(out.stdout, EXPECTED);
    out.assert_stderr_has("switched from CREATED to RUNNING")
        .assert_stderr_has("switched from RUNNING to FINISHED");
}

#[test]
fn stdin_source_gives_the_same_output() {
    let out = HostCommand::new(["run", "--module", guests::WORDCOUNT, "--source", "-"])
        .stdin(INPUT)
        .run();
    out.assert_code(0);
    assert_eq!(out.stdout, EXPECTED);
}

#[test]
fn parallelism_two_and_three_give_the_same_output() {
    let dir = TempDir::new("wc-par");
    // Many lines, so the records spread over several batches and subtasks.
    let mut input = String::new();
    for i in 0..5000 {
        input.push_str(&format!("w{} w{} common\n", i % 97, i % 13));
    }
    let one = run_file(&dir, &input, &["--parallelism", "1"]);
    one.assert_code(0);
    assert_eq!(one.stdout.lines().count(), 15000);
    assert!(one.stdout.ends_with("(common,5000)\n"));
    for p in ["2", "3"] {
        let many = run_file(&dir, &input, &["--parallelism", p]);
        many.assert_code(0);
        assert!(
            one.stdout == many.stdout,
            "parallelism {p} printed other lines than parallelism 1"
        );
    }
}

#[test]
fn file_sink_receives_the_output() {
    let dir = TempDir::new("wc-sink");
    let out_path = dir.path("out.txt");
    let sink = format!("file://{}", out_path.display());
    let out = run_file(&dir, INPUT, &["--sink", &sink]);
    out.assert_code(0);
    assert_eq!(out.stdout, "");
    assert_eq!(
        std::fs::read_to_string(&out_path).expect("sink file"),
        EXPECTED
    );

    let out = run_file(&dir, INPUT, &["--sink", "discard"]);
    out.assert_code(0);
    assert_eq!(out.stdout, "");
}

#[test]
fn socket_source_streams_and_survives_a_dropped_connection() {
    // Two connections: the first is dropped by the server mid-stream, the
    // host reconnects and the counts carry on.
    let server = LineServer::start(
        vec![
            vec![
                line("a"),
                line("a b"),
                Step::Sleep(Duration::from_millis(100)),
                Step::Close,
            ],
            vec![line("b"), line("a")],
        ],
        Duration::from_secs(30),
    );
    let out = HostCommand::job(guests::WORDCOUNT, &server.uri(), &[])
        .spawn()
        .stop_after_lines(5, "INT");
    out.assert_code(0);
    assert_eq!(out.stdout, "(a,1)\n(a,2)\n(b,1)\n(b,2)\n(a,3)\n");
    out.assert_stderr_has("was closed by the peer; reconnecting")
        .assert_stderr_has("reconnected")
        .assert_stderr_has("switched from RUNNING to CANCELED");
    assert_eq!(server.join(), 2);
}

#[test]
fn guest_panic_fails_the_job_with_the_record_and_the_message() {
    let dir = TempDir::new("wc-panic");
    let out = run_file(&dir, "a\nERROR\nb\n", &["--restart", "none"]);
    out.assert_code(1);
    out.assert_stderr_has(
        "guest fault in subtask 0 on record 2 \"ERROR\": flat-map failed: guest panicked at \
         examples/wordcount/src/lib.rs:13: received the line `ERROR`",
    )
    .assert_stderr_has("switched to FAILED");
}
