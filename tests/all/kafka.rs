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
fn wait_for_records(brokers: &str, topic: &str, n: usize, job: &Running, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let got = servers::read_all(brokers, topic).len();
        if got >= n {
            return;
        }
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
fn check_output(brokers: &str, topic: &str, lines: &[&str], partitions: u32) {
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
    let job = HostCommand::job(
        guests::wordcount("rust"),
        &format!("kafka://{brokers}/{input}?start=earliest"),
        &[
            "--sink",
            &format!("kafka://{brokers}/{output}"),
            "--checkpoint-interval",
            "200ms",
            "--parallelism",
            "2",
        ],
    )
    .current_dir(&dir.0)
    .spawn();
    wait_for_records(&brokers, &output, total, &job, Duration::from_secs(30));
    // Nothing more comes: wait a little, then stop it.
    std::thread::sleep(Duration::from_millis(500));
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
