//! `sluice-bench pipeline`: 0.2.0 jobs against native Rust doing the same
//! work in the same run — WordCount with its count in keyed value state
//! (100,000 keys), a windowed WordCount, and the fraud detector in every
//! language.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{Env, median};

/// One run of `module` over `input` to the discard sink; its wall time.
fn run(env: &Env, module: &Path, input: &Path, extra: &[&str], tag: &str) -> Result<Duration> {
    let started = Instant::now();
    let out = Command::new(&env.host)
        .args(["run", "--module"])
        .arg(module)
        .arg("--source")
        .arg(format!("file://{}", input.display()))
        .args(["--sink", "discard", "--checkpoint-interval", "1s"])
        .arg("--checkpoint-dir")
        .arg(env.work.join(format!("ck-{tag}")))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("start host")?;
    let wall = started.elapsed();
    if !out.status.success() {
        bail!(
            "host failed on {}:\n{}",
            module.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(wall)
}

fn median_of(runs: usize, mut f: impl FnMut(usize) -> Result<Duration>) -> Result<Duration> {
    let mut times = Vec::with_capacity(runs);
    for i in 0..runs {
        times.push(f(i)?);
    }
    Ok(median(times))
}

/// xorshift64: the benchmarks' fixed pseudo-random sequence.
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// `lines` lines of 5 words from a vocabulary of `vocabulary`, each line
/// prefixed with its timestamp (`i * step` ms) when `step` is given.
fn words(path: &Path, lines: usize, vocabulary: u64, step: Option<u64>) -> Result<u64> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for i in 0..lines as u64 {
        if let Some(step) = step {
            write!(out, "{} ", i * step)?;
        }
        for w in 0..5 {
            if w > 0 {
                out.write_all(b" ")?;
            }
            write!(out, "w{}", next(&mut x) % vocabulary)?;
        }
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(lines as u64 * 5)
}

/// Native: every word's count in a HashMap, each new count produced (the
/// update the keyed job emits).
fn native_counts(path: &Path) -> Result<Duration> {
    let text = std::fs::read_to_string(path)?;
    let started = Instant::now();
    let mut counts: HashMap<String, i64> = HashMap::new();
    let mut last = 0;
    for word in text.split_ascii_whitespace() {
        let c = match counts.get_mut(word) {
            Some(c) => c,
            None => counts.entry(word.to_string()).or_insert(0),
        };
        *c += 1;
        last = std::hint::black_box(*c);
    }
    std::hint::black_box((counts.len(), last));
    Ok(started.elapsed())
}

/// Native: a tumbling window's counts per word, all emitted when a line's
/// timestamp passes the window's end (the input is in timestamp order).
fn native_windows(path: &Path, size: i64) -> Result<Duration> {
    let text = std::fs::read_to_string(path)?;
    let started = Instant::now();
    let mut window = i64::MIN;
    let mut counts: HashMap<&str, i64> = HashMap::new();
    let mut fired = 0usize;
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(ts) = fields.next().and_then(|t| t.parse::<i64>().ok()) else {
            continue;
        };
        let start = ts - ts.rem_euclid(size);
        if start != window {
            fired += std::hint::black_box(counts.drain().count());
            window = start;
        }
        for word in fields {
            *counts.entry(word).or_insert(0) += 1;
        }
    }
    fired += counts.len();
    std::hint::black_box(fired);
    Ok(started.elapsed())
}

/// Transactions as the fraud tests make them: 2,000 accounts, a tenth of
/// the amounts small, a tenth large, 50 ms apart.
fn transactions(path: &Path, lines: usize) -> Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..lines {
        let r = next(&mut x);
        let amount = match r % 10 {
            0 => format!("0.{:02}", r % 100),
            1 => format!("{}.00", 501 + r % 500),
            _ => format!("{}.50", 2 + r % 400),
        };
        writeln!(out, "acct{},{amount},{}", (r >> 8) % 2000, i * 50)?;
    }
    out.flush()?;
    Ok(())
}

/// Native: the fraud detector's logic over the same lines.
fn native_fraud(path: &Path) -> Result<Duration> {
    let text = std::fs::read_to_string(path)?;
    let started = Instant::now();
    let mut small: HashMap<&str, i64> = HashMap::new();
    let mut alerts = 0usize;
    for line in text.lines() {
        let mut f = line.split(',');
        let (Some(account), Some(amount), Some(ts)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let (Ok(amount), Ok(ts)) = (amount.parse::<f64>(), ts.parse::<i64>()) else {
            continue;
        };
        if let Some(deadline) = small.remove(account)
            && amount > 500.0
            && ts <= deadline
        {
            alerts += 1;
        }
        if amount < 1.0 {
            small.insert(account, ts + 60_000);
        }
    }
    std::hint::black_box(alerts);
    Ok(started.elapsed())
}

fn guest(env: &Env, name: &str) -> PathBuf {
    env.target.join(format!("wasm32-wasip2/guest/{name}.wasm"))
}

fn row(name: &str, records: u64, t: Duration, native: Duration) {
    let rate = records as f64 / t.as_secs_f64() / 1e6;
    println!(
        "  {name:<46} {rate:>10.2} {:>10.3} {:>9.2}",
        t.as_secs_f64(),
        native.as_secs_f64() / t.as_secs_f64()
    );
}

fn header(title: &str) {
    println!("{title}");
    println!(
        "  {:<46} {:>10} {:>10} {:>9}",
        "", "M recs/s", "seconds", "x native"
    );
}

/// Keyed value state and windows against native Rust.
fn state_and_windows(env: &Env, lines: usize, runs: usize) -> Result<()> {
    let input = env.work.join("keyed.txt");
    let records = words(&input, lines, 100_000, None)?;
    let native = median_of(runs, |_| native_counts(&input))?;
    header(&format!(
        "keyed state: {lines} lines, {records} words from 100,000 keys, discard sink, parallelism 1, medians of {runs}"
    ));
    row(
        "native Rust (HashMap, each new count)",
        records,
        native,
        native,
    );
    let t = median_of(runs, |i| {
        run(
            env,
            &guest(env, "keyed_count"),
            &input,
            &[],
            &format!("kc{i}"),
        )
    })?;
    row(
        "0.2.0 process function, count in value state",
        records,
        t,
        native,
    );
    let t = median_of(runs, |i| {
        run(env, &env.module, &input, &[], &format!("wc{i}"))
    })?;
    row("0.1.0 wordcount (host-side sum)", records, t, native);

    let input = env.work.join("windowed.txt");
    let records = words(&input, lines, 10_000, Some(1))?;
    let native = median_of(runs, |_| native_windows(&input, 10_000))?;
    header(&format!(
        "windows: {lines} lines 1 ms apart, {records} words from 10,000, tumbling 10 s windows, medians of {runs}"
    ));
    row("native Rust (HashMap per window)", records, native, native);
    for (name, params) in [
        (
            "windowed-wordcount, aggregate",
            &["--param", "size=10000"][..],
        ),
        (
            "windowed-wordcount, window function",
            &["--param", "size=10000", "--param", "function=process"][..],
        ),
    ] {
        let t = median_of(runs, |i| {
            run(
                env,
                &guest(env, "windowed_wordcount"),
                &input,
                params,
                &format!("ww{i}"),
            )
        })?;
        row(name, records, t, native);
    }
    Ok(())
}

/// The fraud detector in every language.
fn fraud(env: &Env, lines: usize, runs: usize) -> Result<()> {
    let input = env.work.join("fraud.txt");
    transactions(&input, lines)?;
    let native = median_of(runs, |_| native_fraud(&input))?;
    header(&format!(
        "fraud detector: {lines} transactions over 2,000 accounts, medians of {runs}"
    ));
    row(
        "native Rust (HashMap of deadlines)",
        lines as u64,
        native,
        native,
    );
    for (name, module) in [
        ("Rust", guest(env, "fraud")),
        ("Python", PathBuf::from("target/guests/fraud-python.wasm")),
        ("JavaScript", PathBuf::from("target/guests/fraud-js.wasm")),
        ("C", PathBuf::from("target/guests/fraud-c.wasm")),
    ] {
        if !module.exists() {
            println!("  {name:<46} not built ({})", module.display());
            continue;
        }
        let t = median_of(runs, |i| {
            run(env, &module, &input, &[], &format!("fr{name}{i}"))
        })?;
        row(name, lines as u64, t, native);
    }
    Ok(())
}

/// `sluice-bench pipeline`.
pub fn pipeline(env: &Env, lines: usize, runs: usize) -> Result<()> {
    for name in ["keyed_count", "windowed_wordcount", "fraud"] {
        if !guest(env, name).exists() {
            bail!(
                "`{}` is not built; run `scripts/bench pipeline`, which builds it",
                guest(env, name).display()
            );
        }
    }
    state_and_windows(env, lines, runs)?;
    fraud(env, lines / 4, runs)
}
