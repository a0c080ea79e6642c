//! `sluice-bench kafka`: Kafka → Sluice wordcount → Kafka against a
//! native Rust consume-and-produce of the same records on the same broker
//! in the same run, and the time to write and to restore a checkpoint of
//! 100,000 keys in S3 against local disk. Needs the servers
//! (`scripts/bench kafka` starts them): `SLUICE_KAFKA_BROKERS`, the AWS
//! variables and `SLUICE_S3_BUCKET`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use sluice_host::connector::kafka::Cluster;
use sluice_host::connector::kafka::cluster::encode_batch;

use crate::Env;

fn var(name: &str) -> Result<String> {
    std::env::var(name).map_err(|_| {
        anyhow!("{name} is not set: run `scripts/bench kafka`, which starts the servers")
    })
}

fn cluster(brokers: &str) -> Result<Cluster> {
    let list: Vec<String> = brokers.split(',').map(str::to_string).collect();
    Cluster::connect(&list, Duration::from_secs(10), Duration::from_secs(10))
        .map_err(|e| anyhow!("cannot reach {brokers}: {e}"))
}

/// Partition → leader of `topic`.
fn leaders(c: &mut Cluster, topic: &str) -> Result<BTreeMap<i32, i32>> {
    Ok(c.topic(topic)?
        .ok_or_else(|| anyhow!("no topic {topic}"))?
        .leaders)
}

/// The benchmark's input: `lines` lines of 5 words from a 10,000-word
/// vocabulary (as `throughput`'s), produced round robin in batches of 1000
/// per partition.
fn fill(c: &mut Cluster, topic: &str, partitions: i32, lines: usize) -> Result<()> {
    let leaders = leaders(c, topic)?;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut line = || {
        let mut s = String::new();
        for w in 0..5 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if w > 0 {
                s.push(' ');
            }
            s.push_str(&format!("w{}", x % 10_000));
        }
        Bytes::from(s)
    };
    let mut left = lines;
    let mut p = 0;
    while left > 0 {
        let n = left.min(1000);
        let batch = encode_batch((0..n).map(|_| (None, line(), Vec::new())), 0)?;
        for (_, r) in c.produce(leaders[&p], topic, vec![(p, batch)])? {
            r?;
        }
        left -= n;
        p = (p + 1) % partitions;
    }
    Ok(())
}

/// The sum of `topic`'s partitions' ends.
fn total(c: &mut Cluster, topic: &str) -> Result<i64> {
    let leaders = leaders(c, topic)?;
    let mut by_node: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for (p, n) in leaders {
        by_node.entry(n).or_default().push(p);
    }
    let mut sum = 0;
    for (node, parts) in by_node {
        sum += c.ends(node, topic, &parts)?.values().sum::<i64>();
    }
    Ok(sum)
}

/// The native baseline: fetch every record of `input` and produce it to
/// `output` (same key, same value), one produce per fetched partition
/// batch; the time until the last produce is acknowledged.
fn native(brokers: &str, input: &str, output: &str, records: i64) -> Result<(Duration, Duration)> {
    let mut c = cluster(brokers)?;
    let ins = leaders(&mut c, input)?;
    let outs = leaders(&mut c, output)?;
    let mut offsets: BTreeMap<i32, i64> = ins.keys().map(|p| (*p, 0)).collect();
    let started = Instant::now();
    let cpu = thread_cpu();
    let mut moved = 0;
    while moved < records {
        let asked: Vec<(i32, i64)> = offsets.iter().map(|(p, o)| (*p, *o)).collect();
        let node = ins[&0];
        for f in c.fetch(node, input, &asked, Duration::from_millis(100), 8 << 20)? {
            if let Some(e) = f.error {
                bail!("native fetch: {e}");
            }
            if f.records.is_empty() {
                continue;
            }
            offsets.insert(f.partition, f.next);
            moved += f.records.len() as i64;
            let p = f.partition % outs.len() as i32;
            let batch = encode_batch(
                f.records
                    .into_iter()
                    .map(|r| (r.key, r.value.unwrap_or_default(), Vec::new())),
                0,
            )?;
            for (_, r) in c.produce(outs[&p], output, vec![(p, batch)])? {
                r?;
            }
        }
    }
    Ok((started.elapsed(), thread_cpu().saturating_sub(cpu)))
}

/// The time of day, in seconds, of a log line that starts with an
/// RFC 3339 UTC timestamp (`2026-12-01T21:08:32.687858Z ...`).
fn day_seconds(line: &str) -> Option<f64> {
    let time = line.split_once('T')?.1.split_once('Z')?.0;
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// The CPU time this thread has used.
fn thread_cpu() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut t) };
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// The CPU time (user and system) process `pid` has used, from
/// `/proc/PID/stat` (in clock ticks).
fn process_cpu(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command's closing parenthesis; utime and
    // stime are the 14th and 15th fields of the line.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow::anyhow!("unreadable /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11..13)
        .ok_or_else(|| anyhow::anyhow!("short /proc/{pid}/stat"))?
        .iter()
        .map(|f| f.parse::<u64>().unwrap_or(0))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_millis(ticks * 1000 / hz))
}

/// Sluice: the wordcount from `input` to `output` until the output holds
/// `updates` records; the time from the host's start.
fn sluice(
    env: &Env,
    brokers: &str,
    input: &str,
    output: &str,
    updates: i64,
) -> Result<(Duration, Duration, Option<f64>)> {
    let log = env.work.join("host-kafka.log");
    let started = Instant::now();
    let spawned = std::time::SystemTime::now();
    let mut child = Command::new(&env.host)
        .args(["run", "--module"])
        .arg(&env.module)
        .args([
            "--source",
            &format!("kafka://{brokers}/{input}?start=earliest"),
        ])
        .args(["--sink", &format!("kafka://{brokers}/{output}")])
        .args(["--checkpoint-interval", "1s", "--checkpoint-dir"])
        .arg(env.work.join("ck-kafka"))
        .stdout(Stdio::null())
        // To a file, not a pipe nobody reads (a host logging more than a
        // pipe holds would stop).
        .stderr(std::fs::File::create(&log).context("create the host's log")?)
        .spawn()
        .context("start host")?;
    let mut c = cluster(brokers)?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let took = loop {
        if total(&mut c, output)? >= updates {
            break started.elapsed();
        }
        if Instant::now() > deadline || child.try_wait()?.is_some() {
            let _ = child.kill();
            bail!(
                "the host did not write {updates} updates; its log is {}",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let cpu = process_cpu(child.id())?;
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let since_midnight = spawned
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() % 86_400.0);
    let start_up = text
        .lines()
        .find(|l| l.contains("switched from CREATED to RUNNING"))
        .and_then(day_seconds)
        .map(|running| (running - since_midnight) * 1000.0);
    Ok((took, cpu, start_up))
}

/// Kafka → wordcount → Kafka against the native pass-through, `runs`
/// rounds of both one after the other on the same input topic (each
/// round writes to fresh output topics); medians, and each round's ratio.
fn pipeline(env: &Env, lines: usize, runs: usize) -> Result<()> {
    let brokers = var("SLUICE_KAFKA_BROKERS")?;
    let tag = std::process::id();
    let input = format!("bench-in-{tag}");
    let mut c = cluster(&brokers)?;
    c.create_topic(&input, 4)?;
    fill(&mut c, &input, 4, lines)?;
    let records = lines as i64;
    let rate = |d: Duration| records as f64 / d.as_secs_f64();
    let mut rounds = Vec::new();
    for round in 0..runs.max(1) {
        let (native_out, sluice_out) = (
            format!("bench-native-{tag}-{round}"),
            format!("bench-sluice-{tag}-{round}"),
        );
        c.create_topic(&native_out, 4)?;
        c.create_topic(&sluice_out, 4)?;
        let native = native(&brokers, &input, &native_out, records)?;
        let sluice = sluice(env, &brokers, &input, &sluice_out, records * 5)?;
        rounds.push((native, sluice));
    }
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (native, native_cpu) = (
        median(rounds.iter().map(|r| r.0.0).collect()),
        median(rounds.iter().map(|r| r.0.1).collect()),
    );
    let (sluice, sluice_cpu) = (
        median(rounds.iter().map(|r| r.1.0).collect()),
        median(rounds.iter().map(|r| r.1.1).collect()),
    );
    let mut ratios: Vec<f64> = rounds
        .iter()
        .map(|(n, s)| n.0.as_secs_f64() / s.0.as_secs_f64())
        .collect();
    let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    ratios.sort_by(f64::total_cmp);
    let start_up: Vec<f64> = rounds.iter().filter_map(|r| r.1.2).collect();
    println!(
        "Kafka → wordcount → Kafka, {lines} records of 5 words, 4 partitions, Tansu (memory storage), medians of {} rounds:",
        rounds.len()
    );
    println!(
        "  native consume-and-produce:  {:>7.0} ms  {:>9.0} records/s  CPU {:>5.0} ms  ({records} records out)",
        native.as_secs_f64() * 1000.0,
        rate(native),
        native_cpu.as_secs_f64() * 1000.0,
    );
    println!(
        "  Sluice wordcount (p=1):       {:>7.0} ms  {:>9.0} records/s  CPU {:>5.0} ms  ({} updates out, checkpoints every 1 s)  ratio {:.2}",
        sluice.as_secs_f64() * 1000.0,
        rate(sluice),
        sluice_cpu.as_secs_f64() * 1000.0,
        records * 5,
        ratios[ratios.len() / 2]
    );
    println!(
        "  (ratio: the median of the rounds' ratios, which were {}; CPU: the native loop's thread, the host process's; the host took {} from its start to RUNNING)",
        shown.join(", "),
        start_up
            .iter()
            .map(|ms| format!("{ms:.0} ms"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// A job that reads `keys` distinct words on stdin and checkpoints them
/// to `dir`; the checkpoint's write time from the log, then the time a
/// `--restore` of it takes to start running.
fn checkpoint_times(env: &Env, dir: &str, keys: usize) -> Result<(u64, Duration)> {
    let mut child = Command::new(&env.host)
        .args(["run", "--module"])
        .arg(&env.module)
        .args([
            "--source",
            "-",
            "--sink",
            "discard",
            "--checkpoint-interval",
            "300ms",
        ])
        .args(["--checkpoint-dir", dir, "--state-dir"])
        .arg(env.work.join("state"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().ok_or_else(|| anyhow!("stdin"))?;
    let mut text = String::with_capacity(keys * 8);
    for k in 0..keys {
        text.push_str(&format!("k{k}\n"));
    }
    stdin.write_all(text.as_bytes())?;
    let wanted = format!("({keys} keys");
    let log = wait_log(&mut child, &wanted)?;
    let ms = log
        .split("completed in ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow!("no time in {log}"))?;
    let _ = child.kill();
    let _ = child.wait();
    drop(stdin);
    let started = Instant::now();
    let mut restored = Command::new(&env.host)
        .args(["run", "--module"])
        .arg(&env.module)
        .args([
            "--restore",
            "latest",
            "--checkpoint-dir",
            dir,
            "--sink",
            "discard",
            "--state-dir",
        ])
        .arg(env.work.join("state"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    wait_log(&mut restored, "switched from CREATED to RUNNING")?;
    let took = started.elapsed();
    let _ = restored.kill();
    let _ = restored.wait();
    Ok((ms, took))
}

/// Reads the child's log until a line holds `needle`; that line.
fn wait_log(child: &mut std::process::Child, needle: &str) -> Result<String> {
    let stderr = child.stderr.take().ok_or_else(|| anyhow!("stderr"))?;
    let (tx, rx) = mpsc::channel();
    let needle = needle.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(&needle) {
                let _ = tx.send(line);
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(120))
        .map_err(|_| anyhow!("the host never logged it"))
}

/// Checkpoint write and restore times, S3 against local disk.
fn checkpoints(env: &Env, keys: usize) -> Result<()> {
    let bucket = var("SLUICE_S3_BUCKET")?;
    var("AWS_ENDPOINT_URL")?;
    let local = env.work.join("ck-local").display().to_string();
    let s3 = format!("s3://{bucket}/bench-{}", std::process::id());
    println!(
        "A checkpoint of {keys} keys (wordcount state), written in the background; restore = `--restore latest` to RUNNING:"
    );
    for (what, dir) in [
        ("local disk", local.as_str()),
        ("S3 (SeaweedFS)", s3.as_str()),
    ] {
        let (write_ms, restore) = checkpoint_times(env, dir, keys)?;
        println!(
            "  {what:<15} write {write_ms:>5} ms   restore {:>5.0} ms",
            restore.as_secs_f64() * 1000.0
        );
    }
    Ok(())
}

/// `sluice-bench kafka`.
pub fn run(env: &Env, lines: usize, keys: usize, runs: usize) -> Result<()> {
    pipeline(env, lines, runs)?;
    checkpoints(env, keys)
}
