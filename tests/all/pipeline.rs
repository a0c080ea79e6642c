//! 0.2.0 pipelines end to end, on the real binary: the fraud detector
//! (keyed value state and event-time timers) from one test body in every
//! language, the windowed wordcount (tumbling, sliding and session windows,
//! allowed lateness, a late output), each over fixed input with its exact
//! output; the same output after `kill -9` and a restore at another
//! parallelism; a guest trap mid-batch (state intact, only the bad record
//! dead-lettered); rows out of order and late; state expiring by TTL; and
//! windows firing after a restore.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sluice_tests::{HostCommand, LineServer, Output, Step, TempDir, guests, line};

mod examples;

/// Transactions `account,amount,timestamp`: alerts for alice (small then
/// large within a minute), carol and dave; none for bob (his large one
/// comes after the minute) nor erin; frank's small one comes before the
/// poison record and his large one after it, in the same batch.
pub(crate) const FRAUD_INPUT: &str = "\
alice,0.50,1000
bob,100.00,2000
alice,600.00,30000
bob,0.20,40000
carol,0.10,50000
carol,700.00,100000
bob,900.00,200000
not a line
dave,0.3,300000
dave,501,310000
erin,x,1
frank,0.10,315000
POISON,1,320000
frank,800,321000
erin,0.99,330000
erin,1000,391000
";
pub(crate) const FRAUD_ALERTS: &str = "(alice,600.0)\n(carol,700.0)\n(dave,501.0)\n(frank,800.0)\n";
pub(crate) const FRAUD_MALFORMED: &str = "(not a line)\n(erin,x,1)\n";

fn file_uri(path: &Path) -> String {
    format!("file://{}", path.display())
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The one job directory in a checkpoint directory.
fn job_dir(ckpt: &Path) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(ckpt)
        .expect("checkpoint dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one job under {}: {found:?}",
        ckpt.display()
    );
    found[0].clone()
}

fn sorted(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    lines
}

/// The fraud detector over fixed input at parallelism 1 and 3: the exact
/// alerts and malformed lines, each in its own sink file; the poison record
/// alone in the dead letters, and frank's state, set before it in the same
/// batch, intact after the fresh instance took over.
fn fraud_over_fixed_input(module: &str) {
    for p in ["1", "3"] {
        let dir = TempDir::new("fraud");
        let input = dir.write("tx.txt", FRAUD_INPUT);
        let (alerts, malformed, ckpt) = (
            dir.path("alerts.txt"),
            dir.path("malformed.txt"),
            dir.path("ck"),
        );
        let side = format!("malformed={}", file_uri(&malformed));
        let out = HostCommand::job(
            module,
            &file_uri(&input),
            &[
                "--sink",
                &file_uri(&alerts),
                "--side-output",
                &side,
                "--parallelism",
                p,
                "--restart",
                "fixed-delay:3:0s",
                "--checkpoint-dir",
                ckpt.to_str().expect("utf8 path"),
            ],
        )
        .timeout(Duration::from_secs(60))
        .run();
        out.assert_code(0)
            .assert_stderr_has("on record 13 \"POISON,1,320000\"")
            .assert_stderr_has("keyed state kept");
        assert_eq!(
            read(&alerts),
            FRAUD_ALERTS,
            "parallelism {p}; stderr:\n{}",
            out.stderr
        );
        assert_eq!(read(&malformed), FRAUD_MALFORMED, "parallelism {p}");
        let dead = read(&job_dir(&ckpt).join("dead-letter.jsonl"));
        assert_eq!(dead.lines().count(), 1, "only the poison record:\n{dead}");
        assert!(dead.contains("\"input\":\"POISON,1,320000\""), "{dead}");
        assert!(dead.contains("\"record\":13"), "{dead}");
    }
}

sluice_tests::for_each_language!(
    fraud_detects_over_fixed_input,
    fraud,
    super::fraud_over_fixed_input
);

/// `lines` deterministic transactions over 2,000 accounts, a tenth small,
/// a tenth large, 50 ms apart.
fn transactions(dir: &TempDir, lines: usize) -> PathBuf {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut text = String::with_capacity(lines * 24);
    for i in 0..lines {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let amount = match x % 10 {
            0 => format!("0.{:02}", x % 100),
            1 => format!("{}.00", 501 + x % 500),
            _ => format!("{}.50", 2 + x % 400),
        };
        text.push_str(&format!("acct{},{amount},{}\n", (x >> 8) % 2000, i * 50));
    }
    dir.write("tx.txt", text)
}

fn fraud_file_job(
    module: &str,
    input: &Path,
    sink: &Path,
    ckpt: &Path,
    p: &str,
    extra: &[&str],
) -> HostCommand {
    let mut args = vec![
        "--sink".to_string(),
        file_uri(sink),
        "--checkpoint-dir".into(),
        ckpt.display().to_string(),
        "--checkpoint-interval".into(),
        "50ms".into(),
        "--parallelism".into(),
        p.into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    HostCommand::job(module, &file_uri(input), &args).timeout(Duration::from_secs(300))
}

/// Kills a job with SIGKILL after its first checkpoint and resumes it at
/// another parallelism: the sink file holds the lines an uninterrupted run
/// writes, each once.
fn kill_and_restore(dir: &TempDir, job: impl Fn(&Path, &Path, &str, &[&str]) -> HostCommand) {
    let reference = dir.path("reference.txt");
    job(&reference, &dir.path("ck-ref"), "1", &[])
        .run()
        .assert_code(0);

    let (sink, ckpt) = (dir.path("out.txt"), dir.path("ck"));
    let running = job(&sink, &ckpt, "2", &[]).spawn();
    running.wait_for_log("checkpoint `chk-", Duration::from_secs(120));
    let jitter = Instant::now().elapsed().subsec_nanos() as u64 % 100;
    std::thread::sleep(Duration::from_millis(jitter));
    running.signal("KILL");
    let killed = running.wait();
    assert_eq!(
        killed.code, None,
        "the job was killed, not finished:\n{}",
        killed.stderr
    );

    let resumed = job(&sink, &ckpt, "3", &["--restore", "latest"]).run();
    resumed
        .assert_code(0)
        .assert_stderr_has("restoring checkpoint `chk-");
    let (expected, got) = (read(&reference), read(&sink));
    assert!(!expected.is_empty());
    assert!(
        sorted(&expected) == sorted(&got),
        "the restored job's output differs from an uninterrupted run's ({} vs {} lines)",
        got.lines().count(),
        expected.lines().count()
    );
}

fn fraud_after_kill_and_restore(module: &str, lines: usize) {
    let dir = TempDir::new("fraud-kill");
    let input = transactions(&dir, lines);
    kill_and_restore(&dir, |sink, ckpt, p, extra| {
        fraud_file_job(module, &input, sink, ckpt, p, extra)
    });
}

mod fraud_after_kill_and_restore {
    use sluice_tests::guests;

    #[test]
    fn rust() {
        super::fraud_after_kill_and_restore(guests::fraud("rust"), 1_000_000);
    }
    #[test]
    fn python() {
        super::fraud_after_kill_and_restore(guests::fraud("python"), 200_000);
    }
    #[test]
    fn js() {
        super::fraud_after_kill_and_restore(guests::fraud("js"), 200_000);
    }
    #[test]
    fn c() {
        super::fraud_after_kill_and_restore(guests::fraud("c"), 1_000_000);
    }
}

/// `timestamp words...` lines, in timestamp order.
pub(crate) const WORDS: &str = "\
1000 a b a
2000 b c
9999 a
10000 a d
15000 b
21000 z
";

fn windowed(module: &str, input: &str, params: &[&str]) -> Output {
    let dir = TempDir::new("windows");
    let path = dir.write("in.txt", input);
    let mut args = vec!["--checkpoint-dir", dir.0.to_str().expect("utf8 path")];
    for p in params {
        args.extend(["--param", p]);
    }
    let out = HostCommand::job(module, &file_uri(&path), &args)
        .timeout(Duration::from_secs(60))
        .run();
    out.assert_code(0);
    out
}

/// Tumbling, sliding and session windows over fixed input, by aggregate
/// and by a function over the window's contents: every window fires once
/// the watermark passes its end (the last ones at the end of the input).
fn windows_over_fixed_input(module: &str) {
    let tumbling = "(a,0,10000,3)\n(b,0,10000,2)\n(c,0,10000,1)\n(a,10000,20000,1)\n(b,10000,20000,1)\n(d,10000,20000,1)\n(z,20000,30000,1)\n";
    assert_eq!(windowed(module, WORDS, &[]).stdout, tumbling);
    assert_eq!(
        windowed(module, WORDS, &["function=process"]).stdout,
        tumbling
    );
    let sliding = windowed(
        module,
        WORDS,
        &["windows=sliding", "size=10000", "slide=5000"],
    );
    assert_eq!(
        sliding.stdout,
        "(a,-5000,5000,2)\n(b,-5000,5000,2)\n(c,-5000,5000,1)\n\
         (a,0,10000,3)\n(b,0,10000,2)\n(c,0,10000,1)\n\
         (a,5000,15000,2)\n(d,5000,15000,1)\n\
         (a,10000,20000,1)\n(b,10000,20000,1)\n(d,10000,20000,1)\n\
         (b,15000,25000,1)\n(z,15000,25000,1)\n(z,20000,30000,1)\n"
    );
    let sessions = "1000 a\n3000 a\n9000 a\n20000 a b\n26000 b\n";
    let expected = "(a,1000,8000,2)\n(a,9000,14000,1)\n(a,20000,25000,1)\n(b,20000,25000,1)\n(b,26000,31000,1)\n";
    for function in ["function=aggregate", "function=process"] {
        let out = windowed(
            module,
            sessions,
            &["windows=session", "size=5000", function],
        );
        assert_eq!(out.stdout, expected, "{function}");
    }
}

mod windows_over_fixed_input {
    use sluice_tests::guests;

    #[test]
    fn rust() {
        super::windows_over_fixed_input(guests::windowed_wordcount("rust"));
    }
    #[test]
    fn python() {
        super::windows_over_fixed_input(guests::windowed_wordcount("python"));
    }
    #[test]
    fn js() {
        super::windows_over_fixed_input(guests::windowed_wordcount("js"));
    }
    #[test]
    fn c() {
        super::windows_over_fixed_input(guests::windowed_wordcount("c"));
    }
}

/// Sends each of `batches` over a socket `gap` after the one before (so
/// that each is a batch of its own), and stops the job (a socket source
/// does not end) once it printed `lines` lines.
fn over_socket_gap(
    module: &str,
    batches: &[&str],
    params: &[&str],
    lines: usize,
    gap: Duration,
) -> Output {
    let dir = TempDir::new("late");
    let script = batches
        .iter()
        .flat_map(|b| [Step::Send(b.as_bytes().to_vec()), Step::Sleep(gap)])
        .collect();
    let server = LineServer::start(vec![script], Duration::from_secs(30));
    let mut args = vec!["--checkpoint-dir", dir.0.to_str().expect("utf8 path")];
    for p in params {
        args.extend(["--param", p]);
    }
    let out = HostCommand::job(module, &server.uri(), &args)
        .timeout(Duration::from_secs(60))
        .spawn()
        .stop_after_lines(lines, "INT");
    server.join();
    out
}

fn over_socket(module: &str, batches: &[&str], params: &[&str], lines: usize) -> Output {
    over_socket_gap(module, batches, params, lines, Duration::from_millis(400))
}

/// Rows out of order and late: a row behind the watermark but within the
/// allowed lateness updates its window, which fires again; later rows go to
/// the `late` side output, printed with its name.
#[test]
fn late_rows_update_their_window_or_go_to_the_late_output() {
    let module = guests::windowed_wordcount("rust");
    let batches = [
        "1000 a b a\n2000 b c\n",
        "15000 b\n",
        "3000 a\n",
        "9000 late\n",
        "21000 z\n",
    ];
    let on_time = "(a,0,10000,2)\n(b,0,10000,2)\n(c,0,10000,1)\n";
    let out = over_socket(module, &batches, &["lateness=0"], 6);
    assert_eq!(
        out.stdout,
        format!("{on_time}late> (a,1)\nlate> (late,1)\n(b,10000,20000,1)\n"),
        "stderr:\n{}",
        out.stderr
    );
    let out = over_socket(module, &batches, &["lateness=6000"], 6);
    assert_eq!(
        out.stdout,
        format!("{on_time}(a,0,10000,3)\n(late,0,10000,1)\n(b,10000,20000,1)\n"),
        "stderr:\n{}",
        out.stderr
    );
    // A late row that joins two sessions merges them (window-merge).
    let out = over_socket(
        module,
        &["1000 a\n", "9000 a\n", "3000 a\n", "5500 a\n", "30000 b\n"],
        &["windows=session", "size=5000", "lateness=100000"],
        3,
    );
    assert_eq!(
        out.stdout, "(a,1000,6000,1)\n(a,1000,8000,2)\n(a,1000,14000,4)\n",
        "stderr:\n{}",
        out.stderr
    );
}

/// A state TTL (processing time): a small transaction forgotten after
/// half a second raises no alert with the large one that comes a second
/// and a half later; bob's pair, in one batch, always does.
#[test]
fn state_expires_by_ttl() {
    let module = guests::fraud("rust");
    let run = |params: &[&str], lines: usize| {
        let batches = [
            "alice,0.5,1000\n",
            "alice,600,2000\nbob,0.5,3000\nbob,600,3500\n",
        ];
        let out = over_socket_gap(module, &batches, params, lines, Duration::from_millis(1500));
        out.stdout
    };
    assert_eq!(
        run(&["ttl=500"], 1),
        "(bob,600.0)\n",
        "alice's state expired"
    );
    assert_eq!(
        run(&["ttl=60000"], 2),
        "(alice,600.0)\n(bob,600.0)\n",
        "no state expired"
    );
    assert_eq!(run(&[], 2), "(alice,600.0)\n(bob,600.0)\n", "no TTL");
}

/// Windows open at a checkpoint fire after the job is killed and restored
/// at another parallelism, once the watermark passes their end.
#[test]
fn windows_fire_after_a_restore() {
    let module = guests::windowed_wordcount("rust");
    let dir = TempDir::new("fire-restore");
    let ckpt = dir.0.to_str().expect("utf8 path");
    let server = LineServer::start(
        vec![vec![line("1000 a b"), line("2000 a")]],
        Duration::from_secs(2),
    );
    let args = ["--checkpoint-dir", ckpt, "--checkpoint-interval", "50ms"];
    let running = HostCommand::job(module, &server.uri(), &args).spawn();
    running.wait_for_log("source at record 2", Duration::from_secs(30));
    running.signal("KILL");
    let killed = running.wait();
    assert_eq!(killed.stdout, "", "no window ended before the kill");
    server.join();

    let port = server_port(&job_dir(&dir.0));
    let server = LineServer::start_on(port, vec![vec![line("30000 z")]], Duration::from_secs(30));
    let out = HostCommand::new([
        "run",
        "--module",
        module,
        "--restore",
        "latest",
        "--checkpoint-dir",
        ckpt,
        "--parallelism",
        "2",
    ])
    .spawn()
    .stop_after_lines(2, "INT");
    server.join();
    out.assert_stderr_has("restoring checkpoint `chk-");
    assert_eq!(
        sorted(&out.stdout),
        ["(a,0,10000,2)", "(b,0,10000,1)"],
        "stderr:\n{}",
        out.stderr
    );
}

fn server_port(job: &Path) -> u16 {
    let record = read(&job.join("job.json"));
    let v: serde_json::Value = serde_json::from_str(&record).expect("job.json is JSON");
    let source = v["source"].as_str().expect("a source");
    source
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("source `{source}` has no port"))
}

/// A windowed job killed with SIGKILL and restored at another parallelism
/// writes what an uninterrupted run writes, each window once.
#[test]
fn windows_after_kill_and_restore() {
    let module = guests::windowed_wordcount("rust");
    let dir = TempDir::new("windows-kill");
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut text = String::new();
    for i in 0..400_000u64 {
        text.push_str(&(i * 2).to_string());
        for _ in 0..5 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            text.push_str(&format!(" w{}", x % 2000));
        }
        text.push('\n');
    }
    let input = dir.write("in.txt", text);
    kill_and_restore(&dir, |sink, ckpt, p, extra| {
        let mut all = vec!["--param", "size=1000"];
        all.extend_from_slice(extra);
        fraud_file_job(module, &input, sink, ckpt, p, &all)
    });
}

/// `host inspect` shows a 0.2.0 module's stages, states, windows, side
/// outputs and watermarks.
#[test]
fn inspect_shows_the_pipeline() {
    let out = HostCommand::new([
        "inspect",
        "--module",
        guests::fraud("rust"),
        "--param",
        "ttl=500",
    ])
    .run();
    out.assert_code(0);
    for line in [
        "world:    sluice:stream@0.2.0 pipeline-job",
        "    0 `parse`: map",
        "    1 `detect`: process, keyed; states: small (value, ttl 500 ms), deadline (value, ttl 500 ms)",
        "  side outputs: malformed (print)",
        "  watermarks:  0 ms out of order",
    ] {
        assert!(out.stdout.contains(line), "no `{line}` in:\n{}", out.stdout);
    }
    let out = HostCommand::new([
        "inspect",
        "--module",
        guests::windowed_wordcount("rust"),
        "--param",
        "windows=session",
    ])
    .run();
    assert!(
        out.stdout.contains(
            "    1 `count`: window, keyed: session, gap 10000 ms, event time, lateness 0 ms, late rows to `late`; aggregate (add, merge, fire)"
        ),
        "{}",
        out.stdout
    );
}
