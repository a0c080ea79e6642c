//! A new user's first hour (issue 17): resume commands that work as
//! printed, a restore onto another source, settings that say what they
//! mean, tools that find what they are pointed at, and nothing left behind.

use std::path::Path;
use std::time::Duration;

use sluice_tests::{HostCommand, LineServer, Output, TempDir, guests, line};

/// The last line of the log that mentions `needle`.
fn log_line<'a>(out: &'a Output, needle: &str) -> &'a str {
    out.stderr
        .lines()
        .rev()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no log line with {needle:?}:\n{}", out.stderr))
}

/// 300,000 lines of five words each.
fn big_input(dir: &TempDir) -> std::path::PathBuf {
    let mut text = String::new();
    for i in 0..300_000u64 {
        let w = |k: u64| format!("w{}", (i * 7 + k * 13) % 5000);
        text.push_str(&format!("{} {} {} {} {}\n", w(1), w(2), w(3), w(4), w(5)));
    }
    dir.write("big.txt", text)
}

#[test]
fn the_printed_resume_command_alone_resumes_a_file_job_as_it_was() {
    // Issue 17, blocker 2: `--restore JOB_DIR` without the source and sink
    // failed with "the journal ... does not reach back".
    let dir = TempDir::new("resume-alone");
    big_input(&dir);
    let reference = HostCommand::new([
        "run",
        "--module",
        guests::WORDCOUNT,
        "--source",
        "file://big.txt",
        "--sink",
        "file://reference.txt",
        "--checkpoint-dir",
        "ck-ref",
    ])
    .current_dir(&dir.0)
    .run();
    reference.assert_code(0);
    // Relative paths, from the job's own directory.
    let running = HostCommand::new([
        "run",
        "--module",
        guests::WORDCOUNT,
        "--source",
        "file://big.txt",
        "--sink",
        "file://out.txt",
        "--checkpoint-interval",
        "50ms",
        "--checkpoint-dir",
        "ck",
    ])
    .current_dir(&dir.0)
    .timeout(Duration::from_secs(120))
    .spawn();
    running.wait_for_log("checkpoint `chk-", Duration::from_secs(60));
    running.signal("INT");
    let stopped = running.wait();
    stopped.assert_code(0);
    let hint = log_line(&stopped, "resume with `");
    let command = hint
        .split("resume with `")
        .nth(1)
        .and_then(|c| c.strip_suffix('`'))
        .expect("a command in backticks");
    let job_dir = command.rsplit(' ').next().expect("the job directory");
    // The printed command, from anywhere else; and the shortest one.
    let elsewhere = TempDir::new("resume-elsewhere");
    let resumed = HostCommand::new(["run", "--restore", job_dir])
        .current_dir(&elsewhere.0)
        .timeout(Duration::from_secs(120))
        .run();
    resumed.assert_code(0);
    resumed.assert_stderr_has("restoring checkpoint `chk-");
    let expected = std::fs::read(dir.path("reference.txt")).expect("reference");
    let got = std::fs::read(dir.path("out.txt")).expect("resumed output");
    assert!(
        expected == got,
        "the resumed output differs ({} vs {} bytes)\n{}",
        got.len(),
        expected.len(),
        resumed.stderr
    );
    assert!(
        !elsewhere.path("out.txt").exists(),
        "the sink is the job's own file, not one in the working directory"
    );
}

/// A socket job on `lines`, checkpointed once into `dir`, then cancelled.
fn socket_job_with_a_checkpoint(dir: &TempDir, lines: &[&str]) -> Output {
    let server = LineServer::start(
        vec![lines.iter().map(|l| line(l)).collect()],
        Duration::from_secs(30),
    );
    let running = HostCommand::job(
        guests::WORDCOUNT,
        &server.uri(),
        &[
            "--checkpoint-interval",
            "50ms",
            "--checkpoint-dir",
            dir.0.to_str().expect("utf8 path"),
        ],
    )
    .spawn();
    running.wait_for_log("checkpoint `chk-1` completed", Duration::from_secs(20));
    running.signal("INT");
    running.wait()
}

#[test]
fn a_restore_onto_another_source_is_refused_unless_the_user_means_it() {
    // Issue 17, item 3: the socket's byte offset was applied to the file.
    let dir = TempDir::new("other-source");
    socket_job_with_a_checkpoint(&dir, &["a b"]).assert_code(0);
    let other = dir.write("other.txt", "a\nc\n");
    let source = format!("file://{}", other.display());
    let ckpt = dir.0.to_str().expect("utf8 path");
    let restore = ["--restore", "latest", "--checkpoint-dir", ckpt];
    let refused = HostCommand::job(guests::WORDCOUNT, &source, &restore).run();
    refused.assert_code(2);
    refused
        .assert_stderr_has("is of source `socket://127.0.0.1:")
        .assert_stderr_has(&format!("not `{source}`"))
        .assert_stderr_has("pass --allow-source-change");
    let mut allowed = restore.to_vec();
    allowed.push("--allow-source-change");
    let out = HostCommand::job(guests::WORDCOUNT, &source, &allowed).run();
    out.assert_code(0);
    // The checkpoint's state (a=1, b=1), and the new file from its start.
    assert_eq!(out.stdout, "(a,2)\n(c,1)\n", "stderr:\n{}", out.stderr);
    out.assert_stderr_has("reading `file://")
        .assert_stderr_has("from its beginning");
}

#[test]
fn a_misspelled_sluice_log_is_a_warning_and_errors_still_show() {
    let out = HostCommand::job(guests::WORDCOUNT, "file:///no/such/input.txt", &[])
        .env("SLUICE_LOG", "inf")
        .run();
    out.assert_code(2)
        .assert_stderr_has("SLUICE_LOG=\"inf\" is not a log filter; logging at `info`")
        .assert_stderr_has("error: cannot open source `file:///no/such/input.txt`");
}

#[test]
fn a_duration_needs_its_unit() {
    let out = HostCommand::job(guests::WORDCOUNT, "-", &["--checkpoint-interval", "5"]).run();
    out.assert_code(2)
        .assert_stderr_has("--checkpoint-interval: `5` has no unit; write `5ms` or `5s`");
    let out = HostCommand::job(guests::WORDCOUNT, "-", &["--checkpoint-interval", "0s"])
        .stdin("a\n")
        .run();
    out.assert_code(0).assert_stderr_has("checkpointing is off");
}

#[test]
fn a_config_file_is_read_from_its_own_directory_and_its_errors_name_key_and_line() {
    let dir = TempDir::new("toml-relative");
    std::fs::create_dir_all(dir.path("jobs")).expect("mkdir");
    std::fs::write(dir.path("jobs/in.txt"), "x y x\n").expect("input");
    let config = dir.write(
        "jobs/job.toml",
        "source = \"file://in.txt\"\nsink = \"file://out.txt\"\ncheckpoint-dir = \"ck\"\nallow-env = [\"HOME\"]\n",
    );
    let elsewhere = TempDir::new("toml-cwd");
    let out = HostCommand::new([
        "run",
        "--module",
        guests::WORDCOUNT,
        "--config",
        config.to_str().expect("utf8 path"),
    ])
    .current_dir(&elsewhere.0)
    .run();
    out.assert_code(0);
    assert_eq!(
        std::fs::read_to_string(dir.path("jobs/out.txt")).expect("sink next to the file"),
        "(x,1)\n(y,1)\n(x,2)\n"
    );
    let bad = dir.write("bad.toml", "parallelism = 2\nsource = file://in.txt\n");
    let out = HostCommand::new([
        "run",
        "--module",
        guests::WORDCOUNT,
        "--config",
        bad.to_str().expect("utf8 path"),
    ])
    .run();
    out.assert_code(2).assert_stderr_has(
        "(line 2, key `source`); text values need quotes, e.g. `source = \"...\"`",
    );
}

#[test]
fn a_job_that_cannot_start_leaves_its_sink_file_alone() {
    let dir = TempDir::new("sink-alone");
    let sink = dir.write("out.txt", "keep me\n");
    let sink_uri = format!("file://{}", sink.display());
    let missing = format!("file://{}", dir.path("missing.txt").display());
    let ckpt = dir.path("ck");
    let out = HostCommand::job(
        guests::WORDCOUNT,
        &missing,
        &[
            "--sink",
            &sink_uri,
            "--checkpoint-dir",
            ckpt.to_str().expect("utf8"),
        ],
    )
    .run();
    out.assert_code(2).assert_stderr_has("cannot open source");
    assert_eq!(std::fs::read_to_string(&sink).expect("sink"), "keep me\n");
    assert!(
        !ckpt.exists(),
        "no job directory for a job that cannot start"
    );
    // Limits too small for the guest to start: refused before anything is
    // set up, naming the flag that raises them.
    let input = dir.write("in.txt", "a\n");
    let out = HostCommand::job(
        guests::WORDCOUNT,
        &format!("file://{}", input.display()),
        &["--sink", &sink_uri, "--max-memory", "100KiB"],
    )
    .run();
    out.assert_code(2)
        .assert_stderr_has("cannot start in this job's sandbox")
        .assert_stderr_has("(--max-memory)");
    assert_eq!(std::fs::read_to_string(&sink).expect("sink"), "keep me\n");
}

#[test]
fn values_that_cannot_work_are_refused_up_front() {
    for (flag, value, message) in [
        (
            "--checkpoint-timeout",
            "0s",
            "--checkpoint-timeout must be more than 0: every checkpoint would be abandoned",
        ),
        (
            "--restart",
            "exponential:10s:1s",
            "the initial delay (10000 ms) is longer than the maximum (1000 ms)",
        ),
    ] {
        let out = HostCommand::job(guests::WORDCOUNT, "-", &[flag, value]).run();
        out.assert_code(2).assert_stderr_has(message);
    }
}

/// Runs a bounded job in `cwd` with the default checkpoint directory.
fn job_in(cwd: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "run",
        "--module",
        guests::WORDCOUNT,
        "--source",
        "file://in.txt",
    ];
    args.extend_from_slice(extra);
    HostCommand::new(args).current_dir(cwd).run()
}

#[test]
fn a_finished_job_leaves_no_empty_directories_behind() {
    let dir = TempDir::new("no-empty-dirs");
    dir.write("in.txt", "a\n");
    job_in(&dir.0, &["--sink", "discard"]).assert_code(0);
    assert!(
        !dir.path("sluice-checkpoints").exists(),
        "the default checkpoint directory is gone with the job"
    );
}

#[test]
fn checkpoints_list_and_show_find_what_they_are_pointed_at() {
    // Issue 17, item 9: `list sluice-checkpoints` found nothing two levels
    // down, `show JOB_DIR` did not list a job's checkpoints, and a missing
    // path was "damaged".
    let dir = TempDir::new("list-deep");
    let server = LineServer::start(vec![vec![line("a")]], Duration::from_secs(30));
    let running = HostCommand::job(
        guests::WORDCOUNT,
        &server.uri(),
        &["--checkpoint-interval", "50ms"],
    )
    .current_dir(&dir.0)
    .spawn();
    running.wait_for_log("checkpoint `chk-1` completed", Duration::from_secs(20));
    running.signal("INT");
    running.wait().assert_code(0);
    let top = dir.path("sluice-checkpoints");
    let listed = HostCommand::new(["checkpoints", "list", top.to_str().expect("utf8")]).run();
    listed.assert_code(0);
    assert!(
        listed.stdout.contains("wordcount/") && listed.stdout.contains("chk-1"),
        "{}",
        listed.stdout
    );
    let job_dir = std::fs::read_dir(top.join("wordcount"))
        .expect("job dirs")
        .flatten()
        .next()
        .expect("a job")
        .path();
    let shown = HostCommand::new(["checkpoints", "show", job_dir.to_str().expect("utf8")]).run();
    shown.assert_code(0);
    assert!(shown.stdout.contains("chk-1"), "{}", shown.stdout);
    let missing = dir.path("nope/chk-3");
    let out = HostCommand::new(["checkpoints", "show", missing.to_str().expect("utf8")]).run();
    out.assert_code(2)
        .assert_stderr_has("there is no checkpoint at");
    assert!(!out.stderr.contains("damaged"), "{}", out.stderr);
}

#[test]
fn guest_output_in_the_log_names_the_job() {
    let out = HostCommand::job(guests::HOSTILE, "-", &[])
        .stdin("say hi\n")
        .run();
    out.assert_code(0);
    let said = log_line(&out, "guest: said hi");
    assert!(
        said.contains("job `hostile` (") && said.contains(") subtask 0 guest: said hi"),
        "{said}"
    );
}
