//! Checkpoints in S3 (SeaweedFS, started by `scripts/test` through
//! `scripts/servers`): a job checkpoints to `s3://BUCKET/PREFIX`, `host
//! checkpoints list|show` read them there, `--restore` by path and
//! `latest` resume from them; a missing bucket, wrong keys and an endpoint
//! nobody answers are refused at start with one clear line; an endpoint
//! that fails mid-job fails that checkpoint only.

use std::time::Duration;

use sluice_tests::servers;
use sluice_tests::{HostCommand, LineServer, Output, Proxy, Step, TempDir, guests, line};

/// A fresh prefix in the test bucket.
fn location(tag: &str) -> String {
    format!("s3://{}/{}", servers::bucket(), servers::unique(tag))
}

/// The job id a job logged.
fn job_id(stderr: &str) -> String {
    let start = stderr.find("` (").expect("a job id in the log") + 3;
    stderr[start..start + 32].to_string()
}

#[test]
fn checkpoints_in_s3_are_listed_shown_and_restored() {
    let dir = TempDir::new("s3-restore");
    let checkpoints = location("restore");
    let server = LineServer::start(
        vec![vec![
            line("a b"),
            line("a"),
            Step::Sleep(Duration::from_millis(800)),
        ]],
        Duration::from_secs(2),
    );
    let job = HostCommand::job(
        guests::wordcount("rust"),
        &server.uri(),
        &[
            "--checkpoint-interval",
            "100ms",
            "--checkpoint-dir",
            &checkpoints,
        ],
    )
    .current_dir(&dir.0)
    .spawn();
    job.wait_for_lines(3, Duration::from_secs(20));
    job.wait_for_log("completed", Duration::from_secs(20));
    job.signal("KILL");
    let killed = job.wait();
    assert_eq!(killed.stdout, "(a,1)\n(b,1)\n(a,2)\n");
    let id = job_id(&killed.stderr);
    assert!(
        killed.stderr.contains(&format!(
            "checkpoints every 100 ms go to `{checkpoints}/{id}`"
        )),
        "{}",
        killed.stderr
    );
    // The journal and the rest stay local, in the state directory.
    assert!(
        dir.path(&format!("sluice-checkpoints/wordcount/{id}/journal"))
            .is_dir()
    );

    let list = HostCommand::new(["checkpoints", "list", &checkpoints]).run();
    list.assert_code(0);
    assert!(
        list.stdout.contains(&id) && list.stdout.contains(" ok"),
        "{}",
        list.stdout
    );
    let show =
        HostCommand::new(["checkpoints", "show", &format!("{checkpoints}/{id}/chk-1")]).run();
    show.assert_code(0);
    assert!(
        show.stdout
            .contains("state:           complete, checksums ok"),
        "{}",
        show.stdout
    );

    // Restored by its path on S3, then by `latest`: both resume the counts
    // from the socket the job read (the second replays the first's `a` from
    // the journal, which stdout already has, then prints the new lines).
    let port = server.port;
    drop(server);
    let job_path = format!("{checkpoints}/{id}");
    let runs = [
        (job_path.as_str(), vec![line("a")], "(a,3)\n"),
        ("latest", vec![line("b"), line("b")], "(b,2)\n(b,3)\n"),
    ];
    for (restore, script, expected) in runs {
        let server = LineServer::start_on(port, vec![script], Duration::from_secs(2));
        let out = restore_from(&dir, restore, &checkpoints, expected.lines().count());
        assert_eq!(out.stdout, expected, "{restore}\n{}", out.stderr);
        drop(server);
    }
}

/// `host run --restore RESTORE --checkpoint-dir CHECKPOINTS`, stopped
/// after `lines` lines of output.
fn restore_from(dir: &TempDir, restore: &str, checkpoints: &str, lines: usize) -> Output {
    let out = HostCommand::new([
        "run",
        "--module",
        guests::wordcount("rust"),
        "--restore",
        restore,
        "--checkpoint-dir",
        checkpoints,
        "--checkpoint-interval",
        "off",
    ])
    .current_dir(&dir.0)
    .spawn()
    .stop_after_lines(lines, "TERM");
    out.assert_code(0);
    out
}

#[test]
fn a_missing_bucket_wrong_keys_and_a_dead_endpoint_are_one_clear_line_each() {
    let dir = TempDir::new("s3-errors");
    let input = dir.write("in.txt", "a\n");
    let source = format!("file://{}", input.display());
    let bucket = servers::bucket();
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://127.0.0.1:{}", l.local_addr().expect("addr").port())
    };
    let cases: [(&str, String, &str, &str); 3] = [
        (
            "",
            "s3://no-such-bucket-sluice/x".into(),
            "bucket `no-such-bucket-sluice` does not exist",
            "",
        ),
        (
            "AWS_SECRET_ACCESS_KEY",
            format!("s3://{bucket}/x"),
            "access denied (SignatureDoesNotMatch): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            "wrong",
        ),
        (
            "AWS_ENDPOINT_URL",
            format!("s3://{bucket}/x"),
            "cannot reach the S3 endpoint http://127.0.0.1:",
            &dead,
        ),
    ];
    for (var, checkpoints, message, value) in cases {
        let mut cmd = HostCommand::job(
            guests::wordcount("rust"),
            &source,
            &["--checkpoint-dir", &checkpoints, "--sink", "discard"],
        )
        .current_dir(&dir.0)
        .timeout(Duration::from_secs(60));
        if !var.is_empty() {
            cmd = cmd.env(var, value);
            if var == "AWS_ENDPOINT_URL" {
                cmd = cmd.env("AWS_ENDPOINT", value);
            }
        }
        let started = std::time::Instant::now();
        let out = cmd.run();
        out.assert_code(2).assert_stderr_has(message);
        let errors: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .collect();
        assert_eq!(errors.len(), 1, "{}", out.stderr);
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "bounded retries"
        );
        assert!(!dir.path("sluice-checkpoints").exists(), "nothing created");
    }
}

/// The S3 endpoint fails for a while mid-job: the checkpoint then fails,
/// the job goes on, and the next checkpoint once it is back succeeds.
#[test]
fn an_endpoint_that_fails_mid_job_fails_a_checkpoint_not_the_job() {
    let endpoint =
        std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL: run with scripts/test");
    servers::bucket();
    let upstream = endpoint.trim_start_matches("http://").to_string();
    let proxy = Proxy::start(&upstream);
    let proxied = format!("http://127.0.0.1:{}", proxy.port);
    let dir = TempDir::new("s3-flaky");
    let checkpoints = location("flaky");
    let script: Vec<Step> = (0..60)
        .flat_map(|_| [line("a"), Step::Sleep(Duration::from_millis(100))])
        .collect();
    let server = LineServer::start(vec![script], Duration::from_secs(2));
    let job = HostCommand::job(
        guests::wordcount("rust"),
        &server.uri(),
        &[
            "--checkpoint-interval",
            "200ms",
            "--checkpoint-dir",
            &checkpoints,
        ],
    )
    .env("AWS_ENDPOINT_URL", &proxied)
    .env("AWS_ENDPOINT", &proxied)
    .current_dir(&dir.0)
    .timeout(Duration::from_secs(90))
    .spawn();
    job.wait_for_log("`chk-1` completed", Duration::from_secs(20));
    proxy.down();
    job.wait_for_log("failed: cannot write", Duration::from_secs(30));
    proxy.up();
    let failed_at = job.stderr_so_far().len();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !job.stderr_so_far()[failed_at..].contains("completed in") {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint after the endpoint came back:\n{}",
            job.stderr_so_far()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = job.stop_after_lines(60, "TERM");
    out.assert_code(0)
        .assert_stderr_has("cannot reach the S3 endpoint");
    let expected: String = (1..=60).map(|i| format!("(a,{i})\n")).collect();
    assert_eq!(out.stdout, expected);
}
