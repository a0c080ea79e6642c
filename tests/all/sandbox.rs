//! Hostile guests: every way a guest can misbehave ends as an ordinary,
//! clearly reported task failure that the restart strategy handles, with no
//! other record lost — or, for what it may not do, a refusal before start.

use std::time::{Duration, Instant};

use sluice_tests::{HostCommand, LineServer, Output, Step, TempDir, guests, line};

/// Runs "a", the bad line, "b a" through the hostile guest with one allowed
/// restart; the bad record fails once and every other record is counted.
fn misbehave(bad: &str, extra: &[&str]) -> (Output, Duration) {
    let dir = TempDir::new("hostile");
    let mut args = vec![
        "run",
        "--module",
        guests::HOSTILE,
        "--source",
        "-",
        "--restart",
        "fixed-delay:1:0ms",
        "--call-timeout",
        "300ms",
        "--checkpoint-dir",
        dir.0.to_str().expect("utf8 path"),
    ];
    args.extend_from_slice(extra);
    let started = Instant::now();
    let out = HostCommand::new(args)
        .stdin(format!("a\n{bad}\nb a\n"))
        .timeout(Duration::from_secs(60))
        .run();
    let took = started.elapsed();
    out.assert_code(0);
    assert_eq!(
        out.stdout, "(a,1)\n(b,1)\n(a,2)\n",
        "stderr:\n{}",
        out.stderr
    );
    let failing: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("switched from RUNNING to FAILING"))
        .collect();
    assert_eq!(failing.len(), 1, "one failure:\n{}", out.stderr);
    assert!(
        failing[0].contains(&format!("guest fault in subtask 0 on record 2 \"{bad}\"")),
        "the failure names the record:\n{}",
        failing[0]
    );
    out.assert_stderr_has("switched from RESTARTING to RUNNING");
    (out, took)
}

#[test]
fn an_infinite_loop_in_flat_map_is_stopped_at_the_call_deadline() {
    let (out, took) = misbehave("loop", &[]);
    out.assert_stderr_has(
        "the guest ran past its call deadline of 300 ms (raise it with --call-timeout)",
    );
    // The batch call and the one-record probe each run into the deadline.
    assert!(
        took < Duration::from_secs(10),
        "stopped in about the deadline, took {took:?}"
    );
}

#[test]
fn at_parallelism_two_the_other_subtask_keeps_processing_while_one_spins() {
    // "loop" and "say b" arrive together: subtask 0 spins on the first,
    // subtask 1 maps the second. The lines after them go to subtask 1 too
    // (a batch of one record goes to the last subtask), and its guest must
    // see them before the spinning one is stopped at its 3 s deadline.
    let server = LineServer::start(
        vec![vec![
            Step::Send(b"loop\nsay b\n".to_vec()),
            Step::Sleep(Duration::from_millis(300)),
            line("say c"),
            Step::Sleep(Duration::from_millis(300)),
            line("say d"),
        ]],
        Duration::from_secs(60),
    );
    let dir = TempDir::new("spin-p2");
    let out = HostCommand::job(
        guests::HOSTILE,
        &server.uri(),
        &[
            "--parallelism",
            "2",
            "--call-timeout",
            "3s",
            "--restart",
            "fixed-delay:1:0ms",
            "--checkpoint-dir",
            dir.0.to_str().expect("utf8 path"),
        ],
    )
    .timeout(Duration::from_secs(60))
    .spawn()
    .stop_after_lines(6, "INT");
    out.assert_code(0);
    assert_eq!(
        out.stdout, "(say,1)\n(b,1)\n(say,2)\n(c,1)\n(say,3)\n(d,1)\n",
        "stderr:\n{}",
        out.stderr
    );
    let position = |needle: &str| {
        out.stderr
            .find(needle)
            .unwrap_or_else(|| panic!("stderr lacks {needle:?}:\n{}", out.stderr))
    };
    let failing = position("switched from RUNNING to FAILING");
    for said in ["said b", "said c", "said d"] {
        assert!(
            position(&format!("subtask 1 guest: {said}")) < failing,
            "subtask 1 processed `{said}` while subtask 0 spun:\n{}",
            out.stderr
        );
    }
    out.assert_stderr_has("guest fault in subtask 0 on record 1 \"loop\"")
        .assert_stderr_has(
            "the guest ran past its call deadline of 3000 ms (raise it with --call-timeout)",
        );
}

#[test]
fn an_infinite_loop_in_the_key_selector_is_stopped_too() {
    let (out, _) = misbehave("keyloop", &[]);
    out.assert_stderr_has(
        "the guest ran past its call deadline of 300 ms (raise it with --call-timeout)",
    );
}

#[test]
fn a_memory_bomb_hits_the_memory_limit() {
    let (out, _) = misbehave("alloc", &["--max-memory", "32MiB"]);
    out.assert_stderr_has("over the limit of 33554432 (--max-memory)");
}

#[test]
fn deep_recursion_hits_the_stack_limit() {
    let (out, _) = misbehave("recurse", &[]);
    out.assert_stderr_has(
        "the guest overflowed its wasm stack of 524288 bytes (raise it with --max-stack)",
    );
}

#[test]
fn a_huge_output_from_one_record_hits_the_output_limit() {
    let (out, _) = misbehave("huge", &["--max-memory", "256MiB"]);
    out.assert_stderr_has("over the limit of 16777216 (raise it with --max-bytes-per-record)");
}

#[test]
fn a_line_that_expands_into_half_a_million_rows_hits_the_row_limit() {
    let (out, _) = misbehave("bomb", &[]);
    out.assert_stderr_has(
        "the record emitted 500000 rows, over the limit of 100000 (raise it with --max-rows-per-record)",
    );
}

#[test]
fn a_stdout_flood_is_truncated_in_the_log_and_not_a_failure() {
    let out = HostCommand::new(["run", "--module", guests::HOSTILE, "--source", "-"])
        .stdin("a\nflood\nb a\n")
        .run();
    out.assert_code(0);
    assert_eq!(out.stdout, "(a,1)\n(flood,1)\n(b,1)\n(a,2)\n");
    out.assert_stderr_has("subtask 0 guest: flood line 0")
        .assert_stderr_has("more guest log line(s) dropped");
    assert!(
        out.stderr.len() < 64 * 1024,
        "the log stays small: {} bytes",
        out.stderr.len()
    );
}

#[test]
fn a_trap_in_the_job_description_is_refused_before_start() {
    let out = HostCommand::job(guests::HOSTILE, "-", &["--param", "describe=panic"]).run();
    out.assert_code(2);
    out.assert_stderr_has(
        "the guest's job description failed: guest panicked at tests/guests/hostile/src/lib.rs",
    )
    .assert_stderr_has("the job description failed on purpose");
    assert_eq!(out.stderr_lines().len(), 1, "{}", out.stderr);
}

#[test]
fn a_module_that_traps_while_starting_is_refused_before_start() {
    let dir = TempDir::new("start-trap");
    let out = HostCommand::job(
        guests::START_TRAP,
        "-",
        &["--checkpoint-dir", dir.0.to_str().expect("utf8 path")],
    )
    .stdin("a b\n")
    .run();
    out.assert_code(2);
    out.assert_stderr_has(
        "starting the guest (its initialisation, then `open`) failed: wasm trap: wasm `unreachable` instruction executed",
    );
    assert_eq!(out.stderr_lines().len(), 1, "{}", out.stderr);
    assert_eq!(out.stdout, "");
    assert!(
        !dir.0.exists() || std::fs::read_dir(&dir.0).expect("list").next().is_none(),
        "no job directory for a module that never started"
    );
}

#[test]
fn a_guest_that_needs_a_directory_is_refused_without_a_grant() {
    let out = HostCommand::new(["run", "--module", guests::FILE_READER, "--source", "-"]).run();
    out.assert_code(2);
    out.assert_stderr_has(
        "cannot run: module imports `wasi:filesystem/types@0.2.6`, which this job does not grant; \
         pass --allow-dir HOST_DIR[:GUEST_DIR][:ro] to give it a directory",
    );
    let inspect = HostCommand::new(["inspect", "--module", guests::FILE_READER]).run();
    inspect.assert_code(0);
    assert!(
        inspect.stdout.contains("needs:    --allow-dir\n"),
        "{}",
        inspect.stdout
    );
    let inspect = HostCommand::new(["inspect", "--module", guests::WORDCOUNT]).run();
    assert!(
        inspect.stdout.contains("needs:    no grants"),
        "{}",
        inspect.stdout
    );
}

#[test]
fn a_granted_directory_is_readable_and_nothing_outside_it() {
    let dir = TempDir::new("grant");
    let data = dir.path("data");
    std::fs::create_dir_all(&data).expect("data dir");
    std::fs::write(data.join("words.txt"), "x y\nz\n").expect("data file");
    std::fs::write(dir.path("secret.txt"), "secret\n").expect("secret file");
    let grant = format!("{}:/data:ro", data.display());
    let out = HostCommand::job(
        guests::FILE_READER,
        "-",
        &[
            "--allow-dir",
            &grant,
            "--restart",
            "fixed-delay:1:0ms",
            "--checkpoint-dir",
            dir.path("ck").to_str().expect("utf8 path"),
        ],
    )
    .stdin("words.txt\n../secret.txt\nwords.txt\n")
    .run();
    out.assert_code(0);
    assert_eq!(
        out.stdout, "(x y,1)\n(z,1)\n(x y,2)\n(z,2)\n",
        "stderr:\n{}",
        out.stderr
    );
    out.assert_stderr_has("on record 2 \"../secret.txt\": the guest failed the record: cannot read `/data/../secret.txt`");
}

#[test]
fn environment_variables_are_hidden_unless_granted() {
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "--module",
            guests::ENV_READER,
            "--source",
            "-",
            "--aggregate",
            "none",
        ];
        args.extend_from_slice(extra);
        HostCommand::new(args).stdin("HOME\nPATH\n").run()
    };
    let out = run(&[]);
    out.assert_code(0);
    assert_eq!(out.stdout, "(HOME,unset)\n(PATH,unset)\n");
    let out = run(&["--allow-env", "PATH"]);
    out.assert_code(0);
    let path = std::env::var("PATH").unwrap_or_default();
    assert_eq!(out.stdout, format!("(HOME,unset)\n(PATH,{path})\n"));
}

#[test]
fn an_oversized_module_is_refused() {
    let dir = TempDir::new("oversized");
    let path = dir.path("big.wasm");
    let file = std::fs::File::create(&path).expect("create");
    file.set_len(300 << 20).expect("sparse file");
    let out = HostCommand::job(path.to_str().expect("utf8 path"), "-", &[]).run();
    out.assert_code(2);
    out.assert_stderr_has("bytes, over the limit of 268435456 for a module");
}

#[test]
fn bad_limit_and_grant_flags_are_refused() {
    for (flag, value, needle) in [
        ("--max-memory", "lots", "--max-memory: `lots` is not a size"),
        (
            "--call-timeout",
            "0ms",
            "--call-timeout must be more than 0",
        ),
        (
            "--allow-dir",
            "/nonexistent/dir",
            "--allow-dir `/nonexistent/dir`: no such directory",
        ),
    ] {
        let out = HostCommand::job(guests::WORDCOUNT, "-", &[flag, value]).run();
        out.assert_code(2);
        out.assert_stderr_has(needle);
    }
}
