//! Bad input of every kind gets a one- or two-line message that says what
//! is wrong and what to do, the right exit code, and no panic or backtrace.

use std::time::Duration;

use sluice_tests::{HostCommand, LineServer, Output, Step, TempDir, guests, line};

/// Asserts a short, clean error: exit code, one `error:` line containing
/// `needle`, and no panic or backtrace.
fn assert_clean_error(out: &Output, code: i32, needle: &str) {
    out.assert_code(code);
    let lines = out.stderr_lines();
    assert!(
        lines.len() <= 2,
        "expected at most two lines on stderr, got:\n{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(needle),
        "stderr lacks {needle:?}:\n{}",
        out.stderr
    );
    for bad in ["panicked", "backtrace", "RUST_BACKTRACE"] {
        assert!(
            !out.stderr.contains(bad),
            "stderr has {bad:?}:\n{}",
            out.stderr
        );
    }
}

fn run_module(module: &str) -> Output {
    HostCommand::new(["run", "--module", module, "--source", "-"]).run()
}

#[test]
fn a_file_that_is_not_wasm() {
    let dir = TempDir::new("bad-notwasm");
    let path = dir.write("notes.wasm", "hello, I am text\n");
    let out = run_module(path.to_str().expect("utf8 path"));
    assert_clean_error(
        &out,
        2,
        "is not a WebAssembly file; build it as a component against sluice:stream@0.1.0",
    );
}

#[test]
fn a_missing_module_file() {
    let out = run_module("/nonexistent/wordcount.wasm");
    assert_clean_error(
        &out,
        2,
        "cannot read module `/nonexistent/wordcount.wasm`: No such file or directory",
    );
}

#[test]
fn a_core_module_instead_of_a_component() {
    let dir = TempDir::new("bad-core");
    let path = dir.write("core.wasm", b"\0asm\x01\0\0\0");
    let out = run_module(path.to_str().expect("utf8 path"));
    assert_clean_error(
        &out,
        2,
        "is a core WebAssembly module, not a component; build it for `wasm32-wasip2`",
    );
}

#[test]
fn a_truncated_component() {
    let dir = TempDir::new("bad-trunc");
    let bytes = std::fs::read(guests::WORDCOUNT).expect("wordcount guest");
    let path = dir.write("half.wasm", &bytes[..bytes.len() / 2]);
    let out = run_module(path.to_str().expect("utf8 path"));
    assert_clean_error(&out, 2, "is not a valid WebAssembly component");
}

#[test]
fn a_component_of_another_world() {
    let out = run_module(guests::OTHER_WORLD);
    assert_clean_error(
        &out,
        2,
        "does not export `sluice:stream/operator@0.1.0` (it exports `hello`); build it against sluice:stream@0.1.0",
    );
}

#[test]
fn a_component_of_another_wit_version() {
    let out = run_module(guests::OLD_VERSION);
    assert_clean_error(
        &out,
        2,
        "was built against `sluice:stream/operator@0.9.0`, but this host serves sluice:stream@0.1.0 or sluice:stream@0.2.0",
    );
}

#[test]
fn a_component_with_a_missing_export() {
    let out = run_module(guests::MISSING_EXPORT);
    assert_clean_error(
        &out,
        2,
        "does not match sluice:stream@0.1.0: instance export `sluice:stream/operator@0.1.0` does not have export `flat-map`",
    );
}

#[test]
fn an_unknown_flag() {
    let out = HostCommand::new(["run", "--module", guests::WORDCOUNT, "--frobnicate"]).run();
    out.assert_code(2);
    out.assert_stderr_has("unexpected argument '--frobnicate'");
    assert!(!out.stderr.contains("panicked"));
}

#[test]
fn bad_flag_values() {
    for (flag, value, needle) in [
        (
            "--source",
            "kafka://broker:9092",
            "unknown source `kafka://broker:9092`; use `socket://HOST:PORT`, `file://PATH` or `-` for stdin",
        ),
        (
            "--source",
            "socket://localhost",
            "has no port; use `socket://HOST:PORT`",
        ),
        (
            "--sink",
            "s3://bucket",
            "unknown sink `s3://bucket`; use `print`, `file://PATH` or `discard`",
        ),
        ("--parallelism", "0", "parallelism 0 is out of range"),
        (
            "--parallelism",
            "129",
            "parallelism 129 is out of range; use 1 to the max parallelism (128)",
        ),
        (
            "--restart",
            "sometimes",
            "restart strategy `sometimes` is not valid",
        ),
        ("--checkpoint-interval", "soon", "`soon` is not a duration"),
        ("--aggregate", "avg:1", "unknown aggregation `avg`"),
        (
            "--recovery",
            "fast",
            "--recovery `fast` is not valid; use `local` or `checkpoint`",
        ),
    ] {
        let out = HostCommand::new(["run", "--module", guests::WORDCOUNT, flag, value]).run();
        assert_clean_error(&out, 2, needle);
    }
}

#[test]
fn a_bad_config_file() {
    let dir = TempDir::new("bad-toml");
    let path = dir.write("job.toml", "parallelism = 2\nsauce = \"hot\"\n");
    let out = HostCommand::new([
        "run",
        "--module",
        guests::WORDCOUNT,
        "--config",
        path.to_str().expect("utf8 path"),
    ])
    .run();
    assert_clean_error(&out, 2, "is not valid: unknown field `sauce`");
}

#[test]
fn a_config_file_is_overridden_by_flags() {
    let dir = TempDir::new("toml");
    let input = dir.write("in.txt", "x y x\n");
    let path = dir.write(
        "job.toml",
        format!(
            "source = \"file://{}\"\nsink = \"discard\"\naggregate = \"count:1\"\n",
            input.display()
        ),
    );
    let out = HostCommand::new([
        "run",
        "--module",
        guests::WORDCOUNT,
        "--config",
        path.to_str().expect("utf8 path"),
        "--sink",
        "print",
    ])
    .run();
    out.assert_code(0);
    assert_eq!(out.stdout, "(x,1)\n(y,1)\n(x,2)\n");
}

#[test]
fn an_unreachable_socket_at_start() {
    // A port nobody listens on: bind, note the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let source = format!("socket://127.0.0.1:{port}");
    let out = HostCommand::job(guests::WORDCOUNT, &source, &["--connect-timeout", "1s"])
        .timeout(Duration::from_secs(30))
        .run();
    out.assert_code(1);
    out.assert_stderr_has(&format!("cannot connect to source `{source}` after"))
        .assert_stderr_has(&format!(
            "start the server first (e.g. `nc -lk {port}`) or pass another --source"
        ));
    assert!(!out.stderr.contains("panicked"));
}

#[test]
fn invalid_utf8_and_overlong_lines_are_skipped_with_a_message() {
    let dir = TempDir::new("bad-lines");
    let mut input = b"a\n".to_vec();
    input.extend_from_slice(b"caf\xe9\n");
    input.extend_from_slice(&[b'x'; 100]);
    input.extend_from_slice(b"\nb a\n");
    let path = dir.write("in.txt", &input);
    let source = format!("file://{}", path.display());
    let out = HostCommand::job(guests::WORDCOUNT, &source, &["--max-line-bytes", "64"]).run();
    out.assert_code(0);
    assert_eq!(out.stdout, "(a,1)\n(b,1)\n(a,2)\n");
    out.assert_stderr_has(
        "input fault on record 2 \"caf\u{fffd}\": the line is not valid UTF-8 (bad byte at offset 3); send UTF-8 text; record skipped",
    )
    .assert_stderr_has(
        "input fault on record 3 \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\": the line is 100 bytes, over the limit of 64; raise --max-line-bytes to accept it",
    );
}

#[test]
fn invalid_utf8_over_a_socket_does_not_break_the_stream() {
    let server = LineServer::start(
        vec![vec![
            line("a"),
            Step::Send(b"\xff\xfe\n".to_vec()),
            line("a"),
        ]],
        Duration::from_secs(30),
    );
    let out = HostCommand::job(guests::WORDCOUNT, &server.uri(), &[])
        .spawn()
        .stop_after_lines(2, "TERM");
    out.assert_code(0);
    assert_eq!(out.stdout, "(a,1)\n(a,2)\n");
    out.assert_stderr_has("input fault on record 2");
}
