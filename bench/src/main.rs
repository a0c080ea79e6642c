//! `sluice-bench`: measures the real `host` binary on the Rust wordcount
//! guest against a native Rust baseline run in the same process, and
//! reports ratios. Not part of the timed tests; run it with `scripts/bench`.
//!
//! - `throughput`: words/s, ratio to native, peak RSS, time to first output
//!   and the longest checkpoint pause, for the discard and file sinks at
//!   parallelism 1 and 2, with checkpoints every second.
//! - `recovery`: poison record to next output with a zero restart delay,
//!   with a handful of keys and with 100,000 keys in state.
//! - `soak`: thousands of trap-and-restart cycles; RSS at start and end and
//!   the median trap-to-ready time.
//! - `pipeline`: 0.2.0 jobs (keyed value state, windows, the fraud detector
//!   in every language) against native Rust doing the same work.
//! - `kafka`: Kafka → wordcount → Kafka against a native consume-and-produce
//!   on the same broker, and checkpoint write and restore times of 100,000
//!   keys in S3 against local disk (`kafka.rs`).

mod kafka;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

mod pipeline;
use clap::{Parser, Subcommand};

mod serve;

#[derive(Parser)]
#[command(about = "Benchmarks for Sluice against native Rust")]
struct Cli {
    /// The host binary [default: next to this one].
    #[arg(long, global = true)]
    host: Option<PathBuf>,
    /// The wordcount guest [default: TARGET/wasm32-wasip2/guest/wordcount.wasm, TARGET being this binary's target directory].
    #[arg(long, global = true)]
    module: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Throughput against native Rust.
    Throughput {
        /// Input lines (5 words each from a 10,000-word vocabulary).
        #[arg(long, default_value_t = 2_000_000)]
        lines: usize,
        /// Runs per configuration; the median is reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Poison record to next output.
    Recovery {
        /// Samples per case.
        #[arg(long, default_value_t = 15)]
        samples: usize,
    },
    /// Trap-and-restart cycles.
    Soak {
        /// Cycles.
        #[arg(long, default_value_t = 10_000)]
        cycles: usize,
    },
    /// The wordcount in every language on the same input and host.
    Languages {
        /// Input lines (5 words each from a 10,000-word vocabulary).
        #[arg(long, default_value_t = 200_000)]
        lines: usize,
        /// Runs per guest; the median is reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// 0.2.0 jobs (keyed value state, windows, the fraud detector in every
    /// language) against native Rust doing the same work.
    Pipeline {
        /// Input lines (the fraud detector gets a quarter as many).
        #[arg(long, default_value_t = 2_000_000)]
        lines: usize,
        /// Runs per configuration; the median is reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Kafka → wordcount → Kafka against native, and checkpoints in S3 against local disk (needs the servers: `scripts/bench kafka` starts them).
    Kafka {
        /// Input records (lines of 5 words).
        #[arg(long, default_value_t = 1_000_000)]
        lines: usize,
        /// Keys in the checkpoint timed.
        #[arg(long, default_value_t = 100_000)]
        keys: usize,
        /// Rounds of the native pass-through and the Sluice job, one after
        /// the other (medians reported).
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// `host serve` with many tenants' jobs, and a noisy neighbour.
    Serve {
        /// Tenants.
        #[arg(long, default_value_t = 10)]
        tenants: usize,
        /// Idle jobs per tenant.
        #[arg(long, default_value_t = 10)]
        jobs: usize,
        /// The noisy tenant's CPU share, in cores.
        #[arg(long, default_value_t = 0.5)]
        share: f64,
        /// Input lines of the quiet tenant's wordcount.
        #[arg(long, default_value_t = 1_000_000)]
        lines: usize,
        /// Rounds of the noisy neighbour (A alone, then beside B).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Only the noisy neighbour (not the 100 idle jobs).
        #[arg(long)]
        noisy_only: bool,
    },
    /// All of the above with their defaults.
    All,
}

struct Env {
    host: PathBuf,
    module: PathBuf,
    work: PathBuf,
    /// Cargo's target directory (this binary's, so `CARGO_TARGET_DIR` is
    /// followed): where the Rust guests are.
    target: PathBuf,
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    let exe = std::env::current_exe()?;
    let host = cli.host.unwrap_or_else(|| exe.with_file_name("host"));
    let target = exe
        .parent()
        .and_then(|release| release.parent())
        .map_or_else(|| PathBuf::from("target"), PathBuf::from);
    let module = cli
        .module
        .unwrap_or_else(|| target.join("wasm32-wasip2/guest/wordcount.wasm"));
    for p in [&host, &module] {
        if !p.exists() {
            bail!(
                "`{}` does not exist; run `scripts/bench`, which builds it",
                p.display()
            );
        }
    }
    let work = std::env::temp_dir().join(format!("sluice-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let env = Env {
        host,
        module,
        work,
        target,
    };
    let result = match cli.command {
        Cmd::Throughput { lines, runs } => throughput(&env, lines, runs),
        Cmd::Recovery { samples } => recovery(&env, samples),
        Cmd::Soak { cycles } => soak(&env, cycles),
        Cmd::Languages { lines, runs } => languages(&env, lines, runs),
        Cmd::Pipeline { lines, runs } => pipeline::pipeline(&env, lines, runs),
        Cmd::Kafka { lines, keys, runs } => kafka::run(&env, lines, keys, runs),
        Cmd::Serve {
            tenants,
            jobs,
            share,
            lines,
            rounds,
            noisy_only,
        } => serve_bench(&env, (tenants, jobs), share, (lines, rounds), noisy_only),
        Cmd::All => throughput(&env, 2_000_000, 3)
            .and_then(|()| recovery(&env, 15))
            .and_then(|()| soak(&env, 10_000))
            .and_then(|()| languages(&env, 200_000, 3))
            .and_then(|()| pipeline::pipeline(&env, 2_000_000, 3))
            .and_then(|()| kafka::run(&env, 1_000_000, 100_000, 3)),
    };
    let _ = std::fs::remove_dir_all(&env.work);
    result
}

/// `host serve`: many idle jobs, then the noisy neighbour.
fn serve_bench(
    env: &Env,
    (tenants, jobs): (usize, usize),
    share: f64,
    (lines, rounds): (usize, usize),
    noisy_only: bool,
) -> Result<()> {
    if !noisy_only {
        let many = env.work.join("serve-many");
        std::fs::create_dir_all(&many)?;
        serve::many(&env.host, &env.module, &many, tenants, jobs)?;
    }
    let noisy = env.work.join("serve-noisy");
    std::fs::create_dir_all(&noisy)?;
    let input = env.work.join("serve-input.txt");
    generate(&input, lines)?;
    let hostile = serve::hostile_guest();
    if !hostile.exists() {
        bail!(
            "`{}` does not exist; build the test guests first (`cargo test --release --no-run`)",
            hostile.display()
        );
    }
    serve::noisy(
        &env.host,
        [&env.module, &hostile, &input],
        &noisy,
        share,
        rounds,
    )
}

/// The seed's benchmark input: `lines` lines of 5 words drawn from a
/// 10,000-word vocabulary with a fixed seed.
fn generate(path: &Path, lines: usize) -> Result<u64> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..lines {
        for w in 0..5 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if w > 0 {
                out.write_all(b" ")?;
            }
            write!(out, "w{}", x % 10_000)?;
        }
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(lines as u64 * 5)
}

/// The native baseline: read the file, split on whitespace, sum in a HashMap.
fn native(path: &Path) -> Result<(Duration, usize)> {
    let started = Instant::now();
    let mut text = String::new();
    std::fs::File::open(path)?.read_to_string(&mut text)?;
    let mut counts: HashMap<String, i64> = HashMap::new();
    for line in text.lines() {
        for word in line.split_whitespace() {
            match counts.get_mut(word) {
                Some(c) => *c += 1,
                None => {
                    counts.insert(word.to_string(), 1);
                }
            }
        }
    }
    Ok((started.elapsed(), std::hint::black_box(counts).len()))
}

/// Resets this process's peak RSS to its current RSS; returns that, in KiB.
///
/// Linux carries a process's peak RSS over `exec`, so a child's peak as
/// `wait4` reports it is at least its parent's peak when it was spawned.
/// Without this reset, the host's figure would be this benchmark's own
/// peak, which held the whole input in memory for the native baseline.
fn reset_peak_rss() -> Result<u64> {
    std::fs::write("/proc/self/clear_refs", "5").context("reset peak RSS")?;
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS in /proc/self/status"))
}

/// Waits for a child and returns its peak RSS in KiB (see
/// [`reset_peak_rss`], called before it was spawned).
fn wait_rss(child: &mut Child) -> Result<(std::process::ExitStatus, u64)> {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own child, and status and usage outlive the call.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if r != pid {
        bail!("wait4 failed: {}", std::io::Error::last_os_error());
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    use std::os::unix::process::ExitStatusExt;
    Ok((
        std::process::ExitStatus::from_raw(code << 8),
        usage.ru_maxrss as u64,
    ))
}

struct Run {
    wall: Duration,
    first_output: Option<Duration>,
    rss_kib: u64,
    /// This benchmark's RSS when it spawned the host: the floor of `rss_kib`.
    floor_kib: u64,
    max_pause_us: u64,
    checkpoints: usize,
}

fn host_run(env: &Env, input: &Path, sink: &str, parallelism: u32, tag: &str) -> Result<Run> {
    host_run_module(env, &env.module, input, sink, parallelism, tag)
}

fn host_run_module(
    env: &Env,
    module: &Path,
    input: &Path,
    sink: &str,
    parallelism: u32,
    tag: &str,
) -> Result<Run> {
    let ckpt = env.work.join(format!("ck-{tag}"));
    let floor_kib = reset_peak_rss()?;
    let started = Instant::now();
    let mut child = Command::new(&env.host)
        .args(["run", "--module"])
        .arg(module)
        .arg("--source")
        .arg(format!("file://{}", input.display()))
        .args([
            "--sink",
            sink,
            "--checkpoint-interval",
            "1s",
            "--parallelism",
        ])
        .arg(parallelism.to_string())
        .arg("--checkpoint-dir")
        .arg(&ckpt)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("start host")?;
    let mut stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let mut stderr = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        let mut first = true;
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            if first {
                let _ = tx.send(Instant::now());
                first = false;
            }
        }
    });
    let log = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let (status, rss_kib) = wait_rss(&mut child)?;
    let wall = started.elapsed();
    let _ = reader.join();
    let log = log.join().unwrap_or_default();
    if !status.success() {
        bail!("host failed:\n{log}");
    }
    // A checkpoint holds up processing while it is taken, and later
    // batches while they copy the key groups it holds.
    let max_pause_us = log
        .lines()
        .map(|l| paused_us(l).max(copied_us(l)))
        .max()
        .unwrap_or(0);
    let checkpoints = log
        .lines()
        .filter(|l| l.contains("processing paused "))
        .count();
    Ok(Run {
        wall,
        first_output: rx.try_recv().ok().map(|t| t - started),
        rss_kib,
        floor_kib,
        max_pause_us,
        checkpoints,
    })
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Launch to first record processed: a one-line input, print sink.
fn startup(env: &Env, runs: usize) -> Result<Duration> {
    let one = env.work.join("one.txt");
    std::fs::write(&one, "hello\n")?;
    let mut t = Vec::new();
    for i in 0..runs {
        let r = host_run(env, &one, "print", 1, &format!("one-{i}"))?;
        t.push(r.first_output.unwrap_or(r.wall));
    }
    Ok(median(t))
}

fn throughput(env: &Env, lines: usize, runs: usize) -> Result<()> {
    let input = env.work.join("input.txt");
    let words = generate(&input, lines)?;
    println!("throughput: {lines} lines, {words} words, {runs} runs each, medians");
    let mut native_times = Vec::new();
    for _ in 0..runs {
        native_times.push(native(&input)?.0);
    }
    let native_wps = words as f64 / median(native_times).as_secs_f64();
    println!(
        "{:<34} {:>10} {:>9} {:>10} {:>12} {:>12}",
        "configuration", "M words/s", "x native", "peak RSS", "first output", "max ckpt pause"
    );
    println!(
        "{:<34} {:>10.2} {:>9.2}",
        "native Rust (split + HashMap)",
        native_wps / 1e6,
        1.0
    );
    let startup = startup(env, runs)?;
    let out_file = env.work.join("out.txt");
    let file_sink = format!("file://{}", out_file.display());
    let mut p1 = 0.0;
    let mut floor = 0;
    for (name, sink, p) in [
        ("discard sink, parallelism 1", "discard", 1),
        ("discard sink, parallelism 2", "discard", 2),
        ("file sink, parallelism 1", file_sink.as_str(), 1),
        ("file sink, parallelism 2", file_sink.as_str(), 2),
    ] {
        let mut walls = Vec::new();
        let mut rss = 0;
        let mut pause = 0;
        let mut checkpoints = 0;
        for i in 0..runs {
            let r = host_run(env, &input, sink, p, &format!("{p}-{i}"))?;
            walls.push(r.wall);
            rss = rss.max(r.rss_kib);
            floor = floor.max(r.floor_kib);
            pause = pause.max(r.max_pause_us);
            checkpoints += r.checkpoints;
        }
        // A run shorter than the checkpoint interval takes none.
        let pause = match checkpoints {
            0 => "none".to_string(),
            _ => format!("{pause} us"),
        };
        let wps = words as f64 / median(walls).as_secs_f64();
        if name == "discard sink, parallelism 1" {
            p1 = wps;
        }
        println!(
            "{name:<34} {:>10.2} {:>9.2} {:>7} MiB {:>12} {:>12}",
            wps / 1e6,
            wps / native_wps,
            rss / 1024,
            "",
            pause
        );
        if name == "discard sink, parallelism 2" && p1 > 0.0 {
            println!(
                "{:<34} {:>10.2}x",
                "  parallelism 2 / parallelism 1",
                wps / p1
            );
        }
    }
    println!(
        "launch to first record processed (one line, print sink): {} ms",
        startup.as_millis()
    );
    println!(
        "(peak RSS is the host's own; this benchmark's RSS when it started the host, {} MiB, is its floor)",
        floor / 1024
    );
    Ok(())
}

/// A host reading stdin, with a line reader on its stdout.
struct Live {
    child: Child,
    stdin: std::process::ChildStdin,
    lines: mpsc::Receiver<(Instant, String)>,
    log: mpsc::Receiver<String>,
}

impl Live {
    fn start(env: &Env, tag: &str, extra: &[&str]) -> Result<Live> {
        let mut child = Command::new(&env.host)
            .args(["run", "--module"])
            .arg(&env.module)
            .args(["--source", "-", "--restart", "fixed-delay:1000000:0ms"])
            .arg("--checkpoint-dir")
            .arg(env.work.join(format!("ck-{tag}")))
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let stderr = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        let (ltx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if ltx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Live {
            child,
            stdin,
            lines,
            log,
        })
    }

    fn send(&mut self, text: &str) -> Result<Instant> {
        self.stdin.write_all(text.as_bytes())?;
        self.stdin.flush()?;
        Ok(Instant::now())
    }

    /// Waits for an output line equal to `want`.
    fn expect(&self, want: &str) -> Result<Instant> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (at, line) = self
                .lines
                .recv_timeout(left)
                .map_err(|_| anyhow!("timed out waiting for {want}"))?;
            if line == want {
                return Ok(at);
            }
        }
    }

    /// Waits for a log line containing `needle`; returns it.
    fn wait_log(&self, needle: &str) -> Result<String> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .log
                .recv_timeout(left)
                .map_err(|_| anyhow!("timed out waiting for {needle:?} in the log"))?;
            if line.contains(needle) {
                return Ok(line);
            }
        }
    }

    /// The log lines so far, taken.
    fn drain_log(&self) -> Vec<String> {
        self.log.try_iter().collect()
    }

    fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Poison record to next output, `samples` times: sends `ERROR` and a fresh
/// word at once and times until the word's count appears.
fn poison_to_output(live: &mut Live, samples: usize, tag: &str) -> Result<Duration> {
    let mut times = Vec::new();
    for i in 0..samples {
        let word = format!("{tag}{i}");
        let sent = live.send(&format!("ERROR\n{word}\n"))?;
        let seen = live.expect(&format!("({word},1)"))?;
        times.push(seen - sent);
    }
    Ok(median(times))
}

/// The pause a "checkpoint completed" log line reports, in microseconds.
fn paused_us(line: &str) -> u64 {
    after_number(line, "processing paused ")
}

/// The longest a batch spent copying key groups a checkpoint held, as its
/// "copy-on-write" log line reports, in microseconds.
fn copied_us(line: &str) -> u64 {
    if line.contains("copy-on-write after") {
        after_number(line, "at most ")
    } else {
        0
    }
}

/// The number right after `label` in a log line (0 if none).
fn after_number(line: &str, label: &str) -> u64 {
    line.split(label)
        .nth(1)
        .map(|s| s.split(|c: char| !c.is_ascii_digit()).next().unwrap_or(""))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn recovery(env: &Env, samples: usize) -> Result<()> {
    println!("recovery: poison record to next output, zero restart delay, median of {samples}");
    let mut live = Live::start(env, "rec-small", &["--checkpoint-interval", "100ms"])?;
    live.send("a\n")?;
    live.expect("(a,1)")?;
    let small = poison_to_output(&mut live, samples, "s")?;
    live.stop();
    println!(
        "  few keys in state:      {:>8.2} ms",
        small.as_secs_f64() * 1e3
    );

    let mut live = Live::start(env, "rec-big", &["--checkpoint-interval", "100ms"])?;
    let mut keys = String::new();
    for i in 0..100_000 {
        keys.push_str(&format!("k{i}\n"));
    }
    live.send(&keys)?;
    live.expect("(k99999,1)")?;
    let first = paused_us(&live.wait_log("(100000 keys")?);
    let big = poison_to_output(&mut live, samples, "b")?;
    // Every key keeps changing, checkpoints every 100 ms: each reports
    // its own pause and the copying the one before caused (key groups a
    // batch had to copy before changing them).
    live.drain_log();
    for round in 2..=11 {
        live.send(&keys)?;
        live.expect(&format!("(k99999,{round})"))?;
    }
    let log = live.drain_log();
    let mut pauses: Vec<u64> = log
        .iter()
        .filter(|l| l.contains("processing paused"))
        .map(|l| paused_us(l))
        .collect();
    let mut copies: Vec<u64> = log
        .iter()
        .filter(|l| l.contains("copy-on-write after"))
        .map(|l| copied_us(l))
        .collect();
    if pauses.is_empty() || copies.is_empty() {
        bail!("no checkpoint completed while every key was changing");
    }
    pauses.sort_unstable();
    copies.sort_unstable();
    // Checkpoints of the same state after a few keys changed.
    let mut few = Vec::new();
    for i in 0..5 {
        live.send(&format!("c{i}\n"))?;
        live.expect(&format!("(c{i},1)"))?;
        few.push(paused_us(&live.wait_log("processing paused")?));
    }
    live.stop();
    println!(
        "  100,000 keys in state:  {:>8.2} ms",
        big.as_secs_f64() * 1e3
    );
    few.sort_unstable();
    println!(
        "checkpoint pause, 100,000 keys: {first} us for the first; median {} us after a few changed",
        few[few.len() / 2]
    );
    println!(
        "  every key changing, {} checkpoints: pause median {} us, max {} us; copy-on-write in one batch median {} us, max {} us",
        pauses.len(),
        pauses[pauses.len() / 2],
        pauses[pauses.len() - 1],
        copies[copies.len() / 2],
        copies[copies.len() - 1]
    );
    Ok(())
}

/// The wordcount guests: (language, component), the Rust one as given.
fn language_guests(env: &Env) -> Vec<(&'static str, PathBuf)> {
    let mut guests = vec![("Rust", env.module.clone())];
    for (name, dir) in [("Python", "python"), ("JavaScript", "js"), ("C", "c")] {
        guests.push((
            name,
            PathBuf::from(format!("target/guests/wordcount-{dir}.wasm")),
        ));
    }
    guests
}

/// Time of `host inspect` on `module` with `--compile-cache cache`.
fn inspect_time(env: &Env, module: &Path, cache: &str) -> Result<Duration> {
    let started = Instant::now();
    let out = Command::new(&env.host)
        .args(["--compile-cache", cache, "inspect", "--module"])
        .arg(module)
        .output()?;
    if !out.status.success() {
        bail!("host inspect failed on {}", module.display());
    }
    Ok(started.elapsed())
}

/// Median time of a fresh instance (with `open`) of `module`, through the
/// host's own library: pooling allocator, pre-instantiated component.
fn instantiation(module: &Path, samples: usize) -> Result<Duration> {
    let runtime = sluice_host::Runtime::new()?;
    let module = runtime.load(module)?;
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        let instance = module
            .instantiate(&[])
            .map_err(|f| anyhow!("cannot instantiate: {}", f.message))?;
        times.push(started.elapsed());
        drop(instance);
    }
    Ok(median(times))
}

fn languages(env: &Env, lines: usize, runs: usize) -> Result<()> {
    let input = env.work.join("languages.txt");
    let words = generate(&input, lines)?;
    let tiny = env.work.join("tiny.txt");
    generate(&tiny, 1)?;
    println!(
        "languages: wordcount on {lines} lines ({words} words), discard sink, checkpoint every 1 s, parallelism 1, {runs} runs each, medians"
    );
    println!(
        "  {:<11} {:>12} {:>10} {:>10} {:>12} {:>14} {:>16} {:>9}",
        "guest",
        "size",
        "compile",
        "cached",
        "instance",
        "M words/s run",
        "M words/s steady",
        "x Rust"
    );
    let mut rust_rate = None;
    for (name, module) in language_guests(env) {
        if !module.exists() {
            println!(
                "  {name:<11} not built ({}; see examples/)",
                module.display()
            );
            continue;
        }
        let size = std::fs::metadata(&module)?.len();
        let mut load = Vec::new();
        let mut cached = Vec::new();
        let cache = env.work.join("compile-cache");
        inspect_time(env, &module, cache.to_str().unwrap_or("off"))?;
        let mut start = Vec::new();
        let mut full = Vec::new();
        for i in 0..runs {
            load.push(inspect_time(env, &module, "off")?);
            cached.push(inspect_time(env, &module, cache.to_str().unwrap_or("off"))?);
            start.push(
                host_run_module(env, &module, &tiny, "discard", 1, &format!("t{name}{i}"))?.wall,
            );
            full.push(
                host_run_module(env, &module, &input, "discard", 1, &format!("f{name}{i}"))?.wall,
            );
        }
        let (load, cached, start, full) =
            (median(load), median(cached), median(start), median(full));
        let steady = full.saturating_sub(start).as_secs_f64().max(1e-9);
        let rate = words as f64 / steady / 1e6;
        let rust = *rust_rate.get_or_insert(rate);
        println!(
            "  {name:<11} {:>12} {:>7.0} ms {:>7.0} ms {:>9.1} us {:>14.2} {:>16.2} {:>8.2}x",
            size,
            load.as_secs_f64() * 1e3,
            cached.as_secs_f64() * 1e3,
            instantiation(&module, 200)?.as_secs_f64() * 1e6,
            words as f64 / full.as_secs_f64() / 1e6,
            rate,
            rate / rust
        );
    }
    println!(
        "  (compile: `host inspect` with the compile cache off: read, validate, compile, describe; cached: the same from the cache; steady: words over the run's time less a one-line run's)"
    );
    Ok(())
}

fn soak(env: &Env, cycles: usize) -> Result<()> {
    println!("soak: {cycles} trap-and-restart cycles");
    let mut live = Live::start(env, "soak", &["--checkpoint-interval", "10ms"])?;
    let mut times = Vec::with_capacity(cycles);
    let mut rss_start = 0;
    let started = Instant::now();
    for i in 0..cycles {
        // One key throughout, so the state does not grow with the cycles.
        let sent = live.send("ERROR\nsame\n")?;
        let seen = live.expect(&format!("(same,{})", i + 1))?;
        times.push(seen - sent);
        if i == 100 {
            rss_start = live.rss_kib();
        }
    }
    let rss_end = live.rss_kib();
    live.stop();
    println!(
        "  {cycles} cycles in {:.1} s; RSS after 100 cycles {} KiB, at the end {} KiB; median trap-to-next-output {:.2} ms",
        started.elapsed().as_secs_f64(),
        rss_start,
        rss_end,
        median(times).as_secs_f64() * 1e3
    );
    Ok(())
}
