//! Checkpoints, restarts and restore: the seed scenario end to end, a host
//! killed with SIGKILL and resumed, a damaged checkpoint, and every restart
//! strategy. Each scenario runs with the real binary on a compiled guest.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sluice_tests::{HostCommand, LineServer, Output, Step, TempDir, guests, line};

/// The seed's input and the output it must print.
const SEED: [&str; 11] = [
    "a", "a", "b", "ERROR", "b", "a", "ERROR", "a", "ERROR", "b", "ERROR",
];
const SEED_OUTPUT: &str = "(a,1)\n(a,2)\n(b,1)\n(b,2)\n(a,3)\n(a,4)\n(b,3)\n";

/// How the seed's lines arrive.
enum Arrival {
    /// One at a time, `gap` apart.
    Gaps(Duration),
    /// All in one write.
    AllAtOnce,
}

/// Runs the seed scenario over a loopback socket and checks what the user
/// sees: the exact output, three restarts, exit 1 after the fourth ERROR,
/// and a checkpoint directory left on disk.
fn seed_scenario(
    module: &str,
    arrival: Arrival,
    interval: &str,
    dir: &TempDir,
    extra: &[&str],
) -> Output {
    let script = match arrival {
        Arrival::Gaps(gap) => SEED
            .iter()
            .flat_map(|l| [line(l), Step::Sleep(gap)])
            .collect(),
        Arrival::AllAtOnce => vec![Step::Send(
            SEED.map(|l| format!("{l}\n")).concat().into_bytes(),
        )],
    };
    let server = LineServer::start(vec![script], Duration::from_secs(30));
    let mut args = vec![
        "--checkpoint-interval",
        interval,
        "--restart",
        "fixed-delay:3:1s",
        "--checkpoint-dir",
        dir.0.to_str().expect("utf8 path"),
    ];
    args.extend_from_slice(extra);
    let out = HostCommand::job(module, &server.uri(), &args)
        .timeout(Duration::from_secs(60))
        .run();
    out.assert_code(1);
    assert_eq!(out.stdout, SEED_OUTPUT, "stderr:\n{}", out.stderr);
    let restarts = out
        .stderr
        .matches("switched from RESTARTING to RUNNING")
        .count();
    assert_eq!(restarts, 3, "expected three restarts:\n{}", out.stderr);
    for n in 1..=3 {
        out.assert_stderr_has(&format!("restart {n} of 3 in 1000 ms"));
    }
    out.assert_stderr_has("on record 11 \"ERROR\"")
        .assert_stderr_has("the restart strategy allows 3 restart(s) and all were used")
        .assert_stderr_has("switched to FAILED")
        .assert_stderr_has("resume with `host run --module");
    // The dead-letter file holds the four ERROR records.
    let job_dir = single_job_dir(&dir.0);
    out.assert_stderr_has(&format!(
        " in `{0}`; resume with `host run --module {module} --restore {0}`",
        job_dir.display()
    ));
    let dead =
        std::fs::read_to_string(job_dir.join("dead-letter.jsonl")).expect("dead-letter file");
    let records: Vec<u64> = dead
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            assert_eq!(v["input"], "ERROR");
            assert!(
                v["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("received the line `ERROR`"))
            );
            v["record"].as_u64().expect("record number")
        })
        .collect();
    assert_eq!(records, [4, 7, 9, 11]);
    out
}

fn single_job_dir(dir: &Path) -> std::path::PathBuf {
    let dirs: Vec<_> = std::fs::read_dir(dir)
        .expect("checkpoint dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(
        dirs.len(),
        1,
        "one job directory expected in {}",
        dir.display()
    );
    dirs[0].clone()
}

fn checkpoint_ids(job_dir: &Path) -> Vec<u64> {
    let mut ids: Vec<u64> = std::fs::read_dir(job_dir)
        .expect("job dir")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("chk-")?.parse().ok())
        .collect();
    ids.sort_unstable();
    ids
}

/// Resumes the latest job in a checkpoint directory, sends `lines` over a
/// new socket, waits for as many lines of output, and cancels it.
fn resume_and_send(module: &str, dir: &TempDir, lines: &[&str], extra: &[&str]) -> Output {
    let mut args = vec!["--checkpoint-dir", dir.0.to_str().expect("utf8 path")];
    args.extend_from_slice(extra);
    resume_and_send_to(module, "latest", lines, &args)
}

/// The port of the socket source a job (a job directory, a checkpoint, or
/// any job in a checkpoint directory) remembers in its `job.json`.
fn remembered_port(path: &Path) -> u16 {
    let mut dirs = vec![path.to_path_buf()];
    if let Some(parent) = path.parent() {
        dirs.push(parent.to_path_buf());
    }
    dirs.extend(
        std::fs::read_dir(path)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path()),
    );
    let record = dirs
        .iter()
        .find_map(|d| std::fs::read_to_string(d.join("job.json")).ok())
        .unwrap_or_else(|| panic!("no job.json in or around {}", path.display()));
    let v: serde_json::Value = serde_json::from_str(&record).expect("job.json is JSON");
    let source = v["source"].as_str().expect("a source");
    source
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("source `{source}` has no port"))
}

/// Resumes with `--restore RESTORE` (and the job's own settings: the same
/// socket source, started again), sends `lines` over it, waits for as many
/// lines of output, and cancels it.
fn resume_and_send_to(module: &str, restore: &str, lines: &[&str], extra: &[&str]) -> Output {
    let at = match restore {
        "latest" => extra
            .iter()
            .position(|a| *a == "--checkpoint-dir")
            .map(|i| PathBuf::from(extra[i + 1]))
            .expect("--checkpoint-dir with latest"),
        path => PathBuf::from(path),
    };
    let server = LineServer::start_on(
        remembered_port(&at),
        vec![lines.iter().map(|l| line(l)).collect()],
        Duration::from_secs(30),
    );
    let mut args = vec!["run", "--module", module, "--restore", restore];
    args.extend_from_slice(extra);
    let out = HostCommand::new(args)
        .spawn()
        .stop_after_lines(lines.len(), "INT");
    server.join();
    out
}

/// Runs wordcount on a socket that sends `lines`, checkpointing every
/// 50 ms into `dir`, until checkpoint 1 completes; then stops it with
/// `signal` and returns what it printed and logged.
fn checkpoint_once(dir: &TempDir, lines: &[&str], signal: &str, extra: &[&str]) -> Output {
    let server = LineServer::start(
        vec![lines.iter().map(|l| line(l)).collect()],
        Duration::from_secs(30),
    );
    let mut args = vec![
        "--checkpoint-interval",
        "50ms",
        "--checkpoint-dir",
        dir.0.to_str().expect("utf8 path"),
    ];
    args.extend_from_slice(extra);
    let running = HostCommand::job(guests::WORDCOUNT, &server.uri(), &args).spawn();
    running.wait_for_log("checkpoint `chk-1` completed", Duration::from_secs(20));
    running.signal(signal);
    running.wait()
}

// The whole seed story, for the wordcount in every language.
sluice_tests::for_each_wordcount!(
    seed_scenario_with_gaps_then_resume,
    super::seed_with_gaps_then_resume
);

fn seed_with_gaps_then_resume(module: &str) {
    let dir = TempDir::new("seed-gaps");
    let out = seed_scenario(
        module,
        Arrival::Gaps(Duration::from_millis(300)),
        "100ms",
        &dir,
        &[],
    );
    // A guest fault leaves the host's state as it was: no restore needed.
    out.assert_stderr_has("fresh guest instances, keyed state kept");
    let job_dir = single_job_dir(&dir.0);
    assert!(
        !checkpoint_ids(&job_dir).is_empty(),
        "a checkpoint stays on disk"
    );
    let out = resume_and_send(module, &dir, &["a"], &[]);
    out.assert_code(0);
    assert_eq!(out.stdout, "(a,5)\n", "stderr:\n{}", out.stderr);
    out.assert_stderr_has("restoring checkpoint `chk-");
}

#[test]
fn seed_scenario_when_no_checkpoint_completes() {
    let dir = TempDir::new("seed-nockpt");
    let out = seed_scenario(
        guests::WORDCOUNT,
        Arrival::Gaps(Duration::from_millis(150)),
        "1h",
        &dir,
        &["--recovery", "checkpoint"],
    );
    out.assert_stderr_has("state restored from the job's start");
    // Issue 12: the printed resume command used to fail with "no intact
    // checkpoint"; the job's journal holds every record since its start.
    let job_dir = single_job_dir(&dir.0);
    assert!(
        checkpoint_ids(&job_dir).is_empty(),
        "no checkpoint completed"
    );
    let by_dir = resume_and_send_to(
        guests::WORDCOUNT,
        job_dir.to_str().expect("utf8"),
        &["a"],
        &[],
    );
    by_dir.assert_code(0);
    assert_eq!(by_dir.stdout, "(a,5)\n", "stderr:\n{}", by_dir.stderr);
    by_dir.assert_stderr_has(
        "no checkpoint of it completed: restoring from the job's start and replaying its journal (4 skipped record(s))",
    );
}

#[test]
fn seed_resume_by_latest_when_no_checkpoint_completes() {
    let dir = TempDir::new("seed-nockpt-latest");
    seed_scenario(
        guests::WORDCOUNT,
        Arrival::Gaps(Duration::from_millis(100)),
        "1h",
        &dir,
        &[],
    );
    let out = resume_and_send(guests::WORDCOUNT, &dir, &["a"], &[]);
    out.assert_code(0);
    assert_eq!(out.stdout, "(a,5)\n", "stderr:\n{}", out.stderr);
    out.assert_stderr_has("restoring from the job's start");
}

#[test]
fn a_job_killed_before_its_first_checkpoint_resumes_from_its_start() {
    let dir = TempDir::new("kill-nockpt");
    let server = LineServer::start(vec![vec![line("a"), line("b a")]], Duration::from_secs(30));
    let running = HostCommand::job(
        guests::WORDCOUNT,
        &server.uri(),
        &[
            "--checkpoint-interval",
            "1h",
            "--checkpoint-dir",
            dir.0.to_str().expect("utf8 path"),
        ],
    )
    .spawn();
    running.wait_for_lines(3, Duration::from_secs(20));
    running.signal("KILL");
    let killed = running.wait();
    assert_eq!(killed.stdout, "(a,1)\n(b,1)\n(a,2)\n");
    let job_dir = single_job_dir(&dir.0);
    let out = resume_and_send_to(
        guests::WORDCOUNT,
        "latest",
        &["a b"],
        &["--checkpoint-dir", dir.0.to_str().expect("utf8 path")],
    );
    out.assert_code(0);
    // What was printed before the kill is not printed again.
    assert_eq!(out.stdout, "(a,3)\n(b,2)\n", "stderr:\n{}", out.stderr);
    out.assert_stderr_has("restoring from the job's start and replaying its journal");
    // The same job again, by its directory: it goes on from there.
    let out = resume_and_send_to(
        guests::WORDCOUNT,
        job_dir.to_str().expect("utf8 path"),
        &["b"],
        &[],
    );
    out.assert_code(0);
    assert_eq!(out.stdout, "(b,3)\n", "stderr:\n{}", out.stderr);
}

/// Issue 12: restoring with a new `--sink file://OTHER` failed with
/// "it has 0 bytes, fewer than ... the checkpoint recorded".
#[test]
fn a_killed_file_job_restored_into_a_new_sink_file_writes_each_update_once() {
    let dir = TempDir::new("new-sink");
    let input = big_input(&dir, 600_000);
    let reference = dir.path("reference.txt");
    file_job(&input, &reference, &dir.path("ck-ref"), "1", &[])
        .run()
        .assert_code(0);
    let first = dir.path("first.txt");
    let ckpt = dir.path("ck");
    let running = file_job(&input, &first, &ckpt, "2", &[]).spawn();
    running.wait_for_log("checkpoint `chk-", Duration::from_secs(60));
    running.signal("KILL");
    running.wait();
    let second = dir.path("second.txt");
    let out = file_job(&input, &second, &ckpt, "1", &["--restore", "latest"]).run();
    out.assert_code(0);
    out.assert_stderr_has(&format!(
        "sink file `{}` cut back to the checkpoint's",
        first.display()
    ));
    let mut both = std::fs::read(&first).expect("first sink file");
    both.extend(std::fs::read(&second).expect("second sink file"));
    let expected = std::fs::read(&reference).expect("reference output");
    assert!(
        both == expected,
        "the two files together differ from an uninterrupted run ({} vs {} bytes)",
        both.len(),
        expected.len()
    );
}

#[test]
fn a_restore_whose_old_sink_file_changed_is_refused() {
    let dir = TempDir::new("sink-changed");
    let input = big_input(&dir, 300_000);
    let first = dir.path("first.txt");
    let ckpt = dir.path("ck");
    let running = file_job(&input, &first, &ckpt, "1", &[]).spawn();
    running.wait_for_log("checkpoint `chk-", Duration::from_secs(60));
    running.signal("KILL");
    running.wait();
    std::fs::write(&first, "").expect("truncate the old sink");
    for sink in [&first, &dir.path("second.txt")] {
        let out = file_job(&input, sink, &ckpt, "1", &["--restore", "latest"]).run();
        out.assert_code(2);
        out.assert_stderr_has(&format!(
            "the checkpoint's sink file `{}` has 0 bytes, fewer than the",
            first.display()
        ))
        .assert_stderr_has("it was changed since");
    }
    std::fs::remove_file(&first).expect("remove the old sink");
    let out = file_job(
        &input,
        &dir.path("third.txt"),
        &ckpt,
        "1",
        &["--restore", "latest"],
    )
    .run();
    out.assert_code(2);
    out.assert_stderr_has(&format!(
        "the checkpoint's sink file `{}` is gone",
        first.display()
    ));
}

#[test]
fn seed_scenario_all_at_once() {
    let dir = TempDir::new("seed-burst");
    // Restores and replays on every restart, all lines in the journal.
    let out = seed_scenario(
        guests::WORDCOUNT,
        Arrival::AllAtOnce,
        "1s",
        &dir,
        &["--recovery", "checkpoint"],
    );
    assert_eq!(
        out.stderr.matches("state restored from").count(),
        3,
        "{}",
        out.stderr
    );
}

/// Regression: a checkpoint due while the batch of a guest fault waited to
/// run again (local recovery) was taken at once, at a position past that
/// batch's records but without their updates or output; a restore from it
/// lost `a` and `b`, and left out the next two lines as printed.
#[test]
fn a_checkpoint_due_during_local_recovery_waits_for_the_batch_run_again() {
    let dir = TempDir::new("local-ckpt");
    let server = LineServer::start(
        vec![vec![Step::Send(b"a\nERROR\nb\n".to_vec())]],
        Duration::from_secs(30),
    );
    let args = [
        "--checkpoint-interval",
        "1ms",
        "--restart",
        "fixed-delay:1:300ms",
        "--checkpoint-dir",
        dir.0.to_str().expect("utf8 path"),
    ];
    let running = HostCommand::job(guests::WORDCOUNT, &server.uri(), &args).spawn();
    running.wait_for_log("keyed state kept", Duration::from_secs(20));
    running.wait_for_lines(2, Duration::from_secs(20));
    running.wait_for_log("completed", Duration::from_secs(20));
    // No more input, so no more checkpoints: the last one is what a
    // restore gets.
    std::thread::sleep(Duration::from_millis(200));
    running.signal("INT");
    let out = running.wait();
    assert_eq!(out.stdout, "(a,1)\n(b,1)\n", "stderr:\n{}", out.stderr);
    // Every checkpoint past the three records holds both keys.
    assert!(
        !out.stderr.contains("(0 keys, source at record 3"),
        "a checkpoint without the records it is past:\n{}",
        out.stderr
    );
    out.assert_stderr_has("(2 keys, source at record 3");
    server.join();
    let out = resume_and_send(guests::WORDCOUNT, &dir, &["a", "b"], &[]);
    out.assert_code(0);
    assert_eq!(out.stdout, "(a,2)\n(b,2)\n", "stderr:\n{}", out.stderr);
}

/// A deterministic input of `lines` lines × 5 words from 10,000 words.
fn big_input(dir: &TempDir, lines: usize) -> std::path::PathBuf {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut text = String::with_capacity(lines * 30);
    for _ in 0..lines {
        for w in 0..5 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if w > 0 {
                text.push(' ');
            }
            text.push_str(&format!("w{}", x % 10_000));
        }
        text.push('\n');
    }
    dir.write("big.txt", text)
}

fn file_job(
    input: &Path,
    sink: &Path,
    ckpt: &Path,
    parallelism: &str,
    extra: &[&str],
) -> HostCommand {
    let source = format!("file://{}", input.display());
    let sink = format!("file://{}", sink.display());
    let mut args = vec![
        "run".to_string(),
        "--module".into(),
        guests::WORDCOUNT.into(),
        "--source".into(),
        source,
        "--sink".into(),
        sink,
        "--checkpoint-dir".into(),
        ckpt.display().to_string(),
        "--checkpoint-interval".into(),
        "50ms".into(),
        "--parallelism".into(),
        parallelism.into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    HostCommand::new(args).timeout(Duration::from_secs(120))
}

/// Kills a bounded file job with SIGKILL at a random moment after its first
/// checkpoint, resumes it at `resume_parallelism`, and checks the sink file
/// is byte for byte the one an uninterrupted run writes.
fn kill_and_resume(tag: &str, parallelism: &str, resume_parallelism: &str) {
    let dir = TempDir::new(tag);
    let input = big_input(&dir, 1_200_000);
    let reference = dir.path("reference.txt");
    file_job(&input, &reference, &dir.path("ck-ref"), "1", &[])
        .run()
        .assert_code(0);

    let sink = dir.path("out.txt");
    let ckpt = dir.path("ck");
    let running = file_job(&input, &sink, &ckpt, parallelism, &[]).spawn();
    running.wait_for_log("checkpoint `chk-", Duration::from_secs(60));
    let jitter = Instant::now().elapsed().subsec_nanos() as u64 % 150;
    std::thread::sleep(Duration::from_millis(jitter));
    running.signal("KILL");
    let killed = running.wait();
    assert_eq!(
        killed.code, None,
        "the job was killed, not finished:\n{}",
        killed.stderr
    );

    let resumed = file_job(
        &input,
        &sink,
        &ckpt,
        resume_parallelism,
        &["--restore", "latest"],
    )
    .run();
    resumed.assert_code(0);
    resumed.assert_stderr_has("restoring checkpoint `chk-");
    let expected = std::fs::read(&reference).expect("reference output");
    let got = std::fs::read(&sink).expect("resumed output");
    assert!(
        expected == got,
        "the resumed output differs from an uninterrupted run ({} vs {} bytes)",
        got.len(),
        expected.len()
    );
}

#[test]
fn killed_file_job_resumes_to_the_same_output() {
    kill_and_resume("kill-same", "1", "1");
}

#[test]
fn killed_file_job_resumes_at_another_parallelism() {
    kill_and_resume("kill-rescale", "2", "3");
}

/// How a test damages a checkpoint's state file.
enum Damage {
    Truncate,
    FlipByte,
}

fn damaged_newest_checkpoint_falls_back(damage: Damage) {
    let dir = TempDir::new("damaged");
    let script: Vec<Step> = ["a", "b", "a", "c"]
        .iter()
        .flat_map(|l| [line(l), Step::Sleep(Duration::from_millis(250))])
        .collect();
    let server = LineServer::start(vec![script], Duration::from_secs(30));
    let running = HostCommand::job(
        guests::WORDCOUNT,
        &server.uri(),
        &[
            "--checkpoint-interval",
            "50ms",
            "--retain-checkpoints",
            "3",
            "--checkpoint-dir",
            dir.0.to_str().expect("utf8 path"),
        ],
    )
    .spawn();
    running.wait_for_lines(4, Duration::from_secs(20));
    running.wait_for_log("(3 keys, source at record 4,", Duration::from_secs(20));
    running.signal("KILL");
    running.wait();

    let job_dir = single_job_dir(&dir.0);
    let ids = checkpoint_ids(&job_dir);
    assert!(ids.len() >= 2, "at least two checkpoints retained: {ids:?}");
    let newest = *ids.last().expect("a checkpoint");
    let state = job_dir.join(format!("chk-{newest}")).join("state-0.bin");
    let mut bytes = std::fs::read(&state).expect("state file");
    let why = match damage {
        Damage::Truncate => {
            bytes.truncate(bytes.len() / 2);
            "state-0.bin is"
        }
        Damage::FlipByte => {
            let last = bytes.len() - 1;
            bytes[last] ^= 0x55;
            "state-0.bin fails its checksum"
        }
    };
    std::fs::write(&state, bytes).expect("damage the state file");

    let listed =
        HostCommand::new(["checkpoints", "list", dir.0.to_str().expect("utf8 path")]).run();
    listed.assert_code(0);
    assert!(
        listed.stdout.contains(&format!("chk-{newest}  damaged")),
        "list shows the damage:\n{}",
        listed.stdout
    );

    let out = resume_and_send(
        guests::WORDCOUNT,
        &dir,
        &["a"],
        &["--retain-checkpoints", "3"],
    );
    out.assert_code(0);
    out.assert_stderr_has(&format!("checkpoint `chk-{newest}` is damaged ({why}"))
        .assert_stderr_has("falling back to an older checkpoint");
    assert_eq!(out.stdout, "(a,3)\n", "stderr:\n{}", out.stderr);
}

#[test]
fn a_truncated_newest_checkpoint_falls_back_to_the_previous_one() {
    damaged_newest_checkpoint_falls_back(Damage::Truncate);
}

#[test]
fn a_corrupted_newest_checkpoint_falls_back_to_the_previous_one() {
    damaged_newest_checkpoint_falls_back(Damage::FlipByte);
}

#[test]
fn checkpoints_show_prints_what_a_checkpoint_holds() {
    let dir = TempDir::new("show");
    checkpoint_once(&dir, &["a b a"], "INT", &[]).assert_code(0);
    let chk = single_job_dir(&dir.0).join("chk-1");
    let out = HostCommand::new(["checkpoints", "show", chk.to_str().expect("utf8 path")]).run();
    out.assert_code(0);
    for needle in [
        "checkpoint:      chk-1 (format sluice-checkpoint v1)",
        "state:           complete, checksums ok",
        "parallelism:     1 (max 128)",
        "aggregation:     sum:1",
        "at record 1 (byte 6)",
        "sink:            print at line 3",
        "keys:            2",
        "skipped records: none",
        "state-0.bin    key groups 0..128  2 keys",
    ] {
        assert!(
            out.stdout.contains(needle),
            "missing {needle:?} in\n{}",
            out.stdout
        );
    }
}

#[test]
fn a_checkpoint_keeps_its_state_while_the_job_changes_it() {
    // The checkpoint shares the key groups' memory; the job's next change
    // copies them first, so each checkpoint restores what it held.
    let dir = TempDir::new("cow");
    let server = LineServer::start(
        vec![vec![
            line("a b"),
            Step::Sleep(Duration::from_millis(400)),
            line("a"),
        ]],
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
    running.wait_for_log("checkpoint `chk-2` completed", Duration::from_secs(20));
    running.signal("INT");
    let out = running.wait();
    out.assert_code(0);
    assert_eq!(out.stdout, "(a,1)\n(b,1)\n(a,2)\n");
    out.assert_stderr_has("copy-on-write after checkpoint `chk-1`: ");
    // `chk-1` holds a=1, b=1; the journal replays the `a` read after it.
    let chk1 = single_job_dir(&dir.0).join("chk-1");
    let first = resume_and_send_to(
        guests::WORDCOUNT,
        chk1.to_str().expect("utf8 path"),
        &["a b"],
        &[],
    );
    assert_eq!(first.stdout, "(a,3)\n(b,2)\n");
    first.assert_stderr_has("restoring checkpoint `chk-1` (2 keys, source at record 1,");
    // Its checkpoints went on in the restored job's directory: the hint
    // names that one, not the default `--checkpoint-dir`.
    first.assert_stderr_has(&format!(
        "checkpoints kept in `{0}`; resume with `host run --module {1} --restore {0}`",
        chk1.parent().expect("job dir").display(),
        guests::WORDCOUNT
    ));
}

#[test]
fn a_checkpoint_of_another_module_is_refused_unless_allowed() {
    let dir = TempDir::new("other-module");
    checkpoint_once(&dir, &["a"], "TERM", &[]).assert_code(0);

    // The same guest with a custom section appended: valid, but another digest.
    let mut bytes = std::fs::read(guests::WORDCOUNT).expect("guest");
    bytes.extend_from_slice(&[0, 6, 5, b'n', b'o', b't', b'e', b's']);
    let other = dir.write("other.wasm", bytes);
    let other = other.to_str().expect("utf8 path");
    let out = HostCommand::job(
        other,
        "-",
        &[
            "--restore",
            "latest",
            "--checkpoint-dir",
            dir.0.to_str().expect("utf8 path"),
        ],
    )
    .run();
    out.assert_code(2);
    out.assert_stderr_has("was taken with another module")
        .assert_stderr_has("pass --allow-module-change to restore it anyway");
    let out = resume_and_send(other, &dir, &["a"], &["--allow-module-change"]);
    out.assert_code(0);
    assert_eq!(out.stdout, "(a,2)\n");
}

#[test]
fn cancel_keeps_or_deletes_checkpoints() {
    for (policy, kept) in [("retain", true), ("delete", false)] {
        let dir = TempDir::new("cancel");
        let out = checkpoint_once(&dir, &["a"], "TERM", &["--on-cancel", policy]);
        out.assert_code(0)
            .assert_stderr_has("switched from RUNNING to CANCELED");
        if !kept {
            // Nothing left worth keeping: not even an empty job directory.
            let left: Vec<_> = std::fs::read_dir(&dir.0).expect("dir").flatten().collect();
            assert!(left.is_empty(), "--on-cancel delete left {left:?}");
            continue;
        }
        let job_dir = single_job_dir(&dir.0);
        assert!(!checkpoint_ids(&job_dir).is_empty(), "--on-cancel {policy}");
    }
}

/// Runs "a ERROR b ERROR c ERROR" from a file under `strategy`; returns the
/// output and the wall time.
fn with_strategy(strategy: &str) -> (Output, Duration) {
    let dir = TempDir::new("strategy");
    let input = dir.write("in.txt", "a\nERROR\nb\nERROR\nc\nERROR\nd\n");
    let source = format!("file://{}", input.display());
    let started = Instant::now();
    let out = HostCommand::job(
        guests::WORDCOUNT,
        &source,
        &[
            "--restart",
            strategy,
            "--checkpoint-dir",
            dir.0.to_str().expect("utf8 path"),
        ],
    )
    .run();
    (out, started.elapsed())
}

fn restarts(out: &Output) -> usize {
    out.stderr
        .matches("switched from RESTARTING to RUNNING")
        .count()
}

#[test]
fn restart_strategy_none_fails_at_once() {
    let (out, _) = with_strategy("none");
    out.assert_code(1)
        .assert_stderr_has("the restart strategy is `none`");
    assert_eq!(restarts(&out), 0);
    assert_eq!(out.stdout, "(a,1)\n");
}

#[test]
fn restart_strategy_fixed_delay_counts_attempts_and_waits() {
    let (out, took) = with_strategy("fixed-delay:2:300ms");
    out.assert_code(1)
        .assert_stderr_has("restart 1 of 2 in 300 ms")
        .assert_stderr_has("restart 2 of 2 in 300 ms")
        .assert_stderr_has("allows 2 restart(s) and all were used");
    assert_eq!(restarts(&out), 2);
    assert_eq!(out.stdout, "(a,1)\n(b,1)\n(c,1)\n");
    assert!(
        took >= Duration::from_millis(600),
        "two 300 ms delays, took {took:?}"
    );

    let (out, _) = with_strategy("fixed-delay:3:10ms");
    out.assert_code(0);
    assert_eq!(restarts(&out), 3);
    assert_eq!(out.stdout, "(a,1)\n(b,1)\n(c,1)\n(d,1)\n");
}

#[test]
fn restart_strategy_failure_rate_counts_within_its_interval() {
    // Three failures within 10 s are more than two: the third fails the job.
    let (out, _) = with_strategy("failure-rate:2:10s:50ms");
    out.assert_code(1)
        .assert_stderr_has("3 failures within 10000 ms exceed the allowed 2");
    assert_eq!(restarts(&out), 2);
    // With 300 ms between restarts, never two failures within 100 ms.
    let (out, took) = with_strategy("failure-rate:1:100ms:300ms");
    out.assert_code(0);
    assert_eq!(restarts(&out), 3);
    assert!(
        took >= Duration::from_millis(900),
        "three 300 ms delays, took {took:?}"
    );
}

#[test]
fn restart_strategy_exponential_doubles_its_delay() {
    let (out, took) = with_strategy("exponential:100ms:1s:2:1h:0");
    out.assert_code(0)
        .assert_stderr_has("restart 1 in 100 ms")
        .assert_stderr_has("restart 2 in 200 ms")
        .assert_stderr_has("restart 3 in 400 ms");
    assert_eq!(out.stdout, "(a,1)\n(b,1)\n(c,1)\n(d,1)\n");
    assert!(
        took >= Duration::from_millis(700),
        "100 + 200 + 400 ms, took {took:?}"
    );
}
