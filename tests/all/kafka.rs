//! Kafka sources and sinks against a real broker (Tansu, started by
//! `scripts/test` through `scripts/servers`): wordcount from topic to
//! topic with exactly the expected updates, the same after `kill -9` and
//! `--restore` at another parallelism with checkpoints in S3, a poison
//! record dead-lettered with its partition and offset, a broker restarted
//! mid-job, and each bad input (no broker, no topic, a record over the
//! limit). Every topic is the test's own.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sluice_host::connector::kafka::partition_for;
use sluice_tests::servers::{self, Read};
use sluice_tests::{HostCommand, Running, TempDir, guests};

/// The wordcount's updates per key, in the order the topic holds them.
fn updates(records: &[Read]) -> BTreeMap<String, Vec<String>> {
    let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in records {
        by_key
            .entry(r.key.clone().unwrap_or_default())
            .or_default()
            .push(r.value.clone());
    }
    by_key
}

/// What a wordcount over `lines` must leave: for each word, `(w,1)` to
/// `(w,n)` in that order.
fn expected(lines: &[&str]) -> BTreeMap<String, Vec<String>> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for word in lines.iter().flat_map(|l| l.split_whitespace()) {
        *counts.entry(word.to_string()).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(w, n)| {
            let all = (1..=n).map(|i| format!("({w},{i})")).collect();
            (w, all)
        })
        .collect()
}

/// Waits until `topic` holds `n` records; panics with the job's log after
/// `timeout`.
pub(crate) fn wait_for_records(
    brokers: &str,
    topic: &str,
    n: usize,
    job: &mut Running,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let got = servers::read_all(brokers, topic).len();
        if got >= n {
            return;
        }
        assert!(
            !job.has_exited(),
            "the job exited while {topic} holds {got} records, not {n}\n--- stderr\n{}",
            job.stderr_so_far()
        );
        assert!(
            Instant::now() < deadline,
            "{topic} holds {got} records, not {n}, after {timeout:?}\n--- stderr\n{}",
            job.stderr_so_far()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Checks the output topic: exactly the expected updates, each key in its
/// partition by Kafka's default partitioner, each write marked.
pub(crate) fn check_output(brokers: &str, topic: &str, lines: &[&str], partitions: u32) {
    let records = servers::read_all(brokers, topic);
    for r in &records {
        let key = r.key.as_deref().expect("a key");
        assert_eq!(
            r.partition,
            partition_for(key.as_bytes(), partitions),
            "{r:?}"
        );
    }
    assert_eq!(updates(&records), expected(lines));
}

/// The Rust wordcount from `source` to the Kafka topic `output`,
/// checkpointing every 200 ms, with `extra` flags.
fn topic_to_topic(source: &str, brokers: &str, output: &str, extra: &[&str]) -> HostCommand {
    let sink = format!("kafka://{brokers}/{output}");
    let mut args = vec!["--sink", &sink, "--checkpoint-interval", "200ms"];
    args.extend_from_slice(extra);
    HostCommand::job(guests::wordcount("rust"), source, &args)
}

/// Waits until the job's consumer group holds the offsets `want` of
/// `topic` (after a checkpoint, for lag tools).
fn wait_for_offsets(brokers: &str, topic: &str, want: &[(i32, i64)], job: &Running) {
    let group = format!("sluice-{topic}");
    let want: BTreeMap<i32, i64> = want.iter().copied().collect();
    let partitions: Vec<i32> = want.keys().copied().collect();
    let mut client = servers::cluster(brokers);
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.committed(&group, topic, &partitions).ok().as_ref() != Some(&want) {
        assert!(
            Instant::now() < deadline,
            "the group has not the offsets {want:?}\n{}",
            job.stderr_so_far()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Lines spread over the input partitions, round robin.
fn produce_lines(brokers: &str, topic: &str, partitions: i32, lines: &[&str]) {
    for p in 0..partitions {
        let mine: Vec<&[u8]> = lines
            .iter()
            .skip(p as usize)
            .step_by(partitions as usize)
            .map(|l| l.as_bytes())
            .collect();
        if !mine.is_empty() {
            servers::produce(brokers, topic, p, &mine);
        }
    }
}

const LINES: [&str; 9] = [
    "to be or not to be",
    "that is the question",
    "a b",
    "a",
    "b c",
    "c c",
    "whether tis nobler",
    "to be",
    "a",
];

#[test]
fn wordcount_from_topic_to_topic_holds_exactly_the_updates() {
    let brokers = servers::brokers();
    let (input, output) = (servers::unique("wc-in"), servers::unique("wc-out"));
    servers::create_topic(&brokers, &input, 3);
    servers::create_topic(&brokers, &output, 2);
    produce_lines(&brokers, &input, 3, &LINES);
    let dir = TempDir::new("kafka-wc");
    let total: usize = LINES.iter().map(|l| l.split_whitespace().count()).sum();
    let source = format!("kafka://{brokers}/{input}?start=earliest");
    let mut job = topic_to_topic(&source, &brokers, &output, &["--parallelism", "2"])
        .current_dir(&dir.0)
        .spawn();
    wait_for_records(&brokers, &output, total, &mut job, Duration::from_secs(30));
    // After a checkpoint, its offsets are in the consumer group, for lag
    // tools: 3 records in each partition.
    wait_for_offsets(&brokers, &input, &[(0, 3), (1, 3), (2, 3)], &job);
    job.signal("TERM");
    let out = job.wait();
    out.assert_code(0);
    check_output(&brokers, &output, &LINES, 2);
    let records = servers::read_all(&brokers, &output);
    assert!(
        records
            .iter()
            .any(|r| r.headers.contains(&"sluice".to_string()))
    );
}

/// `n` lines of words from a small vocabulary, the same every run.
pub(crate) fn many_lines(n: usize, seed: u64) -> Vec<String> {
    let words = [
        "alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta",
    ];
    let mut x = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..n)
        .map(|_| {
            let mut line = Vec::new();
            for _ in 0..5 {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                line.push(words[(x >> 33) as usize % words.len()]);
            }
            line.join(" ")
        })
        .collect()
}

/// Produces `lines` in chunks, round robin over the partitions.
pub(crate) fn produce_many(brokers: &str, topic: &str, partitions: i32, lines: &[String]) {
    for chunk in lines.chunks(2000) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        produce_lines(brokers, topic, partitions, &refs);
    }
}

/// A host killed with SIGKILL mid-stream, then restored from its S3
/// checkpoint at another parallelism: the output topic holds each update
/// exactly once — nothing the dead host wrote after its checkpoint is
/// written again, nothing is missing.
#[test]
fn kill_9_and_restore_at_another_parallelism_from_s3_is_exactly_once() {
    let brokers = servers::brokers();
    let bucket = servers::bucket();
    let (input, output) = (servers::unique("kill-in"), servers::unique("kill-out"));
    servers::create_topic(&brokers, &input, 4);
    servers::create_topic(&brokers, &output, 3);
    let dir = TempDir::new("kafka-kill");
    let checkpoints = format!("s3://{bucket}/{}", servers::unique("kill-ck"));
    let first = many_lines(2_000, 1);
    let second = many_lines(30_000, 2);
    produce_many(&brokers, &input, 4, &first);
    let source = format!("kafka://{brokers}/{input}?start=earliest");
    let sink = format!("kafka://{brokers}/{output}");
    let args = [
        "--sink",
        &sink,
        "--checkpoint-interval",
        "5s",
        "--checkpoint-dir",
        &checkpoints,
        "--parallelism",
        "1",
    ];
    let mut job = HostCommand::job(guests::wordcount("rust"), &source, &args)
        .current_dir(&dir.0)
        .spawn();
    wait_for_records(&brokers, &output, 10_000, &mut job, Duration::from_secs(30));
    job.wait_for_log("checkpoint `chk-1` completed", Duration::from_secs(20));
    // More input; the host dies while it writes the output, well before
    // its next checkpoint, so the topic holds output past the checkpoint.
    let (now, later) = second.split_at(9_000);
    produce_many(&brokers, &input, 4, now);
    wait_for_records(&brokers, &output, 40_000, &mut job, Duration::from_secs(60));
    job.signal("KILL");
    let killed = job.wait();
    assert_eq!(killed.code, None, "killed by the signal");
    assert!(
        !killed.stderr.contains("`chk-2` completed"),
        "the kill came after the next checkpoint:\n{}",
        killed.stderr
    );
    produce_many(&brokers, &input, 4, later);
    let mut restored = HostCommand::new([
        "run",
        "--module",
        guests::wordcount("rust"),
        "--restore",
        "latest",
        "--checkpoint-dir",
        &checkpoints,
        "--parallelism",
        "3",
    ])
    .current_dir(&dir.0)
    .spawn();
    wait_for_records(
        &brokers,
        &output,
        160_000,
        &mut restored,
        Duration::from_secs(90),
    );
    std::thread::sleep(Duration::from_millis(500));
    restored.signal("TERM");
    let out = restored.wait();
    out.assert_code(0);
    out.assert_stderr_has("the sink holds output past the checkpoint; replaying");
    let all: Vec<String> = first.iter().chain(&second).cloned().collect();
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    check_output(&brokers, &output, &refs, 3);
}

/// A guest that traps on a Kafka record: the record goes to the dead
/// letters with its partition and offset, the job restarts and goes on,
/// and the output holds every other record's updates.
#[test]
fn a_poison_record_is_dead_lettered_with_its_partition_and_offset() {
    let brokers = servers::brokers();
    let (input, output) = (servers::unique("poison-in"), servers::unique("poison-out"));
    servers::create_topic(&brokers, &input, 2);
    servers::create_topic(&brokers, &output, 1);
    servers::produce(&brokers, &input, 0, &[b"a", b"b"]);
    servers::produce(&brokers, &input, 1, &[b"c", b"ERROR", b"d"]);
    let dir = TempDir::new("kafka-poison");
    let dead = dir.path("dead.jsonl");
    let mut job = HostCommand::job(
        guests::wordcount("rust"),
        &format!("kafka://{brokers}/{input}?start=earliest"),
        &[
            "--sink",
            &format!("kafka://{brokers}/{output}"),
            "--restart",
            "fixed-delay:2:100ms",
            "--dead-letter",
            dead.to_str().expect("utf-8 path"),
        ],
    )
    .current_dir(&dir.0)
    .spawn();
    wait_for_records(&brokers, &output, 4, &mut job, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    job.signal("TERM");
    let out = job.wait();
    out.assert_code(0)
        .assert_stderr_has("guest fault in subtask 0 on record at partition 1 offset 1 \"ERROR\"");
    let letters = std::fs::read_to_string(&dead).expect("dead letters");
    let letter: serde_json::Value =
        serde_json::from_str(letters.lines().next().expect("one letter")).expect("json");
    assert_eq!(letter["position"]["partition"], 1, "{letter}");
    assert_eq!(letter["position"]["offset"], 1, "{letter}");
    assert_eq!(letter["input"], "ERROR", "{letter}");
    assert_eq!(letters.lines().count(), 1);
    check_output(&brokers, &output, &["a", "b", "c", "d"], 1);
}

/// A port nothing listens on.
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[test]
fn an_unreachable_broker_at_start_is_retried_then_a_clear_error() {
    let dir = TempDir::new("kafka-nobroker");
    let port = dead_port();
    let started = Instant::now();
    let out = HostCommand::job(
        guests::wordcount("rust"),
        &format!("kafka://127.0.0.1:{port}/t"),
        &["--connect-timeout", "1s"],
    )
    .current_dir(&dir.0)
    .run();
    out.assert_code(2).assert_stderr_has(&format!(
        "error: cannot reach Kafka at `127.0.0.1:{port}` (tried for 1000 ms)"
    ));
    out.assert_stderr_has("Connection refused");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "it retried"
    );
    assert!(!dir.path("sluice-checkpoints").exists(), "nothing created");
}

/// Tansu creates a topic that a metadata request names; Sluice asks for
/// every topic instead, so a missing one is an error and stays missing.
#[test]
fn a_topic_that_does_not_exist_is_refused_and_not_created() {
    let brokers = servers::brokers();
    let missing = servers::unique("missing");
    let there = servers::unique("there");
    servers::create_topic(&brokers, &there, 1);
    let dir = TempDir::new("kafka-notopic");
    for (source, sink) in [
        (format!("kafka://{brokers}/{missing}"), "print".to_string()),
        (
            format!("kafka://{brokers}/{there}"),
            format!("kafka://{brokers}/{missing}"),
        ),
    ] {
        let out = HostCommand::job(guests::wordcount("rust"), &source, &["--sink", &sink])
            .current_dir(&dir.0)
            .run();
        out.assert_code(2).assert_stderr_has(&format!(
            "Kafka topic `{missing}` does not exist on `{brokers}`; create it first"
        ));
    }
    let topics = servers::cluster(&brokers)
        .topic(&missing)
        .expect("metadata");
    assert_eq!(topics, None, "the missing topic was not created");
}

/// A record over --max-line-bytes is skipped with a warning that names
/// its partition and offset; an output line over the sink's
/// `max-record-bytes` fails the job with a message that says what to raise.
#[test]
fn records_over_the_size_limits_are_refused_clearly() {
    let brokers = servers::brokers();
    let (input, output) = (servers::unique("big-in"), servers::unique("big-out"));
    servers::create_topic(&brokers, &input, 1);
    servers::create_topic(&brokers, &output, 1);
    let long = "x".repeat(100);
    servers::produce(
        &brokers,
        &input,
        0,
        &[b"a", long.as_bytes(), b"\xff\xfe", b"b"],
    );
    let dir = TempDir::new("kafka-big");
    let mut job = HostCommand::job(
        guests::wordcount("rust"),
        &format!("kafka://{brokers}/{input}?start=earliest"),
        &[
            "--sink",
            &format!("kafka://{brokers}/{output}"),
            "--max-line-bytes",
            "64",
        ],
    )
    .current_dir(&dir.0)
    .spawn();
    wait_for_records(&brokers, &output, 2, &mut job, Duration::from_secs(30));
    job.signal("TERM");
    let out = job.wait();
    out.assert_code(0)
        .assert_stderr_has("input fault on record at partition 0 offset 1 \"xxxx")
        .assert_stderr_has("the record is 100 bytes, over the limit of 64; raise --max-line-bytes")
        .assert_stderr_has("input fault on record at partition 0 offset 2")
        .assert_stderr_has("not valid UTF-8");
    check_output(&brokers, &output, &["a", "b"], 1);

    let (input, output) = (servers::unique("big-in"), servers::unique("big-out"));
    servers::create_topic(&brokers, &input, 1);
    servers::create_topic(&brokers, &output, 1);
    let word = "y".repeat(40);
    servers::produce(&brokers, &input, 0, &[word.as_bytes()]);
    let out = HostCommand::job(
        guests::wordcount("rust"),
        &format!("kafka://{brokers}/{input}?start=earliest"),
        &[
            "--sink",
            &format!("kafka://{brokers}/{output}?max-record-bytes=16"),
        ],
    )
    .current_dir(&dir.0)
    .run();
    out.assert_code(1)
        .assert_stderr_has("output line 1 of 44 bytes (key `yyyy");
    out.assert_stderr_has("over the Kafka sink's limit of 16 bytes; raise `max-record-bytes`");
}

/// A broker of the test's own (Tansu keeping its log in S3, so it keeps
/// its topics across a restart), with a cluster id of its own (its topics
/// in the bucket's `clusters/ID/meta.json`), stopped when the test ends.
pub(crate) struct OwnBroker {
    dir: TempDir,
    port: u16,
    cluster: String,
    setup: Setup,
}

/// How an [`OwnBroker`] runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Setup {
    /// Its log in S3 (kept across a restart), or in memory.
    pub s3: bool,
    /// The port it names in metadata, when not its own (a TLS front's).
    pub advertised: Option<u16>,
    /// Whether it requires SASL (Tansu's `--authentication`).
    pub authentication: bool,
}

impl Default for Setup {
    fn default() -> Setup {
        Setup {
            s3: true,
            advertised: None,
            authentication: false,
        }
    }
}

impl OwnBroker {
    /// Runs `scripts/servers COMMAND` for this broker; what went wrong.
    fn servers(&self, command: &str) -> Result<(), String> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/servers");
        let s3_port = std::env::var("SLUICE_S3_PORT").map_err(|_| {
            "SLUICE_S3_PORT is not set: run the tests with scripts/test".to_string()
        })?;
        let dir = self
            .dir
            .0
            .to_str()
            .ok_or("the test directory is not UTF-8")?;
        let setup = self.setup;
        let out = std::process::Command::new(script)
            .args([command, dir, "kafka"])
            .env("SLUICE_KAFKA_PORT", self.port.to_string())
            .env(
                "SLUICE_KAFKA_ADVERTISED_PORT",
                setup.advertised.unwrap_or(self.port).to_string(),
            )
            .env(
                "SLUICE_KAFKA_AUTHENTICATION",
                if setup.authentication { "1" } else { "0" },
            )
            .env(
                "SLUICE_KAFKA_STORAGE",
                if setup.s3 { "s3" } else { "memory" },
            )
            .env("SLUICE_KAFKA_CLUSTER", &self.cluster)
            .env("SLUICE_S3_PORT", s3_port)
            .output()
            .map_err(|e| format!("cannot run scripts/servers: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "scripts/servers {command} failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    /// A broker on S3 storage on the port in the variable `port_var`
    /// (`scripts/test` sets one per test that needs one).
    fn start(port_var: &str) -> OwnBroker {
        OwnBroker::start_with(port_var, Setup::default())
    }

    /// A broker on the port in `port_var`, run as `setup` says.
    pub(crate) fn start_with(port_var: &str, setup: Setup) -> OwnBroker {
        let broker = OwnBroker {
            dir: TempDir::new("kafka-own-broker"),
            port: port_of(port_var),
            cluster: servers::unique("cluster"),
            setup,
        };
        if let Err(e) = broker.servers("start") {
            panic!("{e}");
        }
        broker
    }

    /// Gives `topic` `partitions` partitions, as the broker keeps them.
    /// Tansu 0.6 has no CreatePartitions request, but it reads a topic's
    /// partition count from its storage's `meta.json` at each request: so
    /// this rewrites that, through SeaweedFS's filer.
    fn set_partitions(&self, topic: &str, partitions: u32) {
        let path = format!("/buckets/tansu/clusters/{}/meta.json", self.cluster);
        let meta = servers::filer_get(&path);
        let mut meta: serde_json::Value = serde_json::from_slice(&meta).expect("meta.json is JSON");
        let count = &mut meta["topics"][topic]["topic"]["num_partitions"];
        assert!(count.is_number(), "no topic {topic} in {meta}");
        *count = partitions.into();
        servers::filer_put(&path, meta.to_string().as_bytes());
    }

    pub(crate) fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// The port in the variable `port_var`, which `scripts/test` sets.
pub(crate) fn port_of(port_var: &str) -> u16 {
    std::env::var(port_var)
        .unwrap_or_else(|_| panic!("{port_var} is not set: run the tests with scripts/test"))
        .parse()
        .unwrap_or_else(|_| panic!("{port_var} is not a port"))
}

impl Drop for OwnBroker {
    /// Stops the broker; never panics (a panic while a failed test unwinds
    /// would abort every test).
    fn drop(&mut self) {
        if let Err(e) = self.servers("stop") {
            eprintln!("{e}");
        }
    }
}

/// The broker stops mid-job and comes back: the source waits and reads
/// on, the sink waits and writes on, and the output is exactly the
/// updates of all the input.
#[test]
fn a_broker_restarted_mid_job_is_waited_for() {
    let broker = OwnBroker::start("SLUICE_KAFKA_RESTART_PORT");
    let brokers = broker.brokers();
    let (input, output) = (
        servers::unique("restart-in"),
        servers::unique("restart-out"),
    );
    servers::create_topic(&brokers, &input, 2);
    servers::create_topic(&brokers, &output, 2);
    let first = many_lines(200, 3);
    let second = many_lines(200, 4);
    produce_many(&brokers, &input, 2, &first);
    let dir = TempDir::new("kafka-restart");
    let source = format!("kafka://{brokers}/{input}?start=earliest");
    let mut job = topic_to_topic(&source, &brokers, &output, &[])
        .current_dir(&dir.0)
        .timeout(Duration::from_secs(120))
        .spawn();
    wait_for_records(&brokers, &output, 1000, &mut job, Duration::from_secs(30));
    broker.servers("stop").expect("the broker stops");
    job.wait_for_log("waiting for the broker", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(1));
    broker.servers("start").expect("the broker starts again");
    produce_many(&brokers, &input, 2, &second);
    wait_for_records(&brokers, &output, 2000, &mut job, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    job.signal("TERM");
    let out = job.wait();
    out.assert_code(0).assert_stderr_has("is readable again");
    let all: Vec<String> = first.iter().chain(&second).cloned().collect();
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    check_output(&brokers, &output, &refs, 2);
}

/// Partitions added to the input topic while the job runs are picked up at
/// the next discovery and read from their start: the output is exactly
/// the updates of the lines in the old partition and the new ones.
#[test]
fn partitions_added_while_the_job_runs_are_picked_up() {
    let broker = OwnBroker::start("SLUICE_KAFKA_PARTITIONS_PORT");
    let brokers = broker.brokers();
    let (input, output) = (servers::unique("grow-in"), servers::unique("grow-out"));
    servers::create_topic(&brokers, &input, 1);
    servers::create_topic(&brokers, &output, 2);
    let (before, after) = (many_lines(100, 5), many_lines(150, 6));
    produce_many(&brokers, &input, 1, &before);
    let dir = TempDir::new("kafka-grow");
    let source = format!("kafka://{brokers}/{input}?start=earliest&discovery=200ms");
    let mut job = topic_to_topic(&source, &brokers, &output, &["--parallelism", "2"])
        .current_dir(&dir.0)
        .timeout(Duration::from_secs(120))
        .spawn();
    wait_for_records(&brokers, &output, 500, &mut job, Duration::from_secs(30));
    broker.set_partitions(&input, 3);
    for p in 1..3 {
        let line = format!("Kafka topic `{input}`: new partition {p}, read from its start");
        job.wait_for_log(&line, Duration::from_secs(20));
    }
    produce_many(&brokers, &input, 3, &after);
    wait_for_records(&brokers, &output, 1250, &mut job, Duration::from_secs(30));
    // The group gets the new partitions' offsets too.
    wait_for_offsets(&brokers, &input, &[(0, 150), (1, 50), (2, 50)], &job);
    job.signal("TERM");
    job.wait().assert_code(0);
    let all: Vec<&str> = before.iter().chain(&after).map(String::as_str).collect();
    check_output(&brokers, &output, &all, 2);
}

#[test]
#[ignore = "a helper for measuring by hand: fills SLUICE_FILL_TOPIC"]
fn zz_fill() {
    let brokers = servers::brokers();
    let t = std::env::var("SLUICE_FILL_TOPIC").expect("topic");
    servers::create_topic(&brokers, &t, 4);
    produce_many(&brokers, &t, 4, &many_lines(1_000_000, 9));
}
