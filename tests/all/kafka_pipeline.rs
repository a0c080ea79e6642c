//! `sluice:stream@0.2.0` pipelines over a Kafka topic (Tansu, started by
//! `scripts/test`): the first stage gets each record whole — value, key,
//! partition, offset, timestamp and headers — and the record's timestamp
//! is its event time, by which windows fire. A line stays one text value.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use sluice_tests::servers::{self, NewRecord};
use sluice_tests::{HostCommand, TempDir, guests, wait_until};

fn record(
    key: Option<&str>,
    value: &str,
    timestamp: i64,
    headers: &[(&str, Option<&str>)],
) -> NewRecord {
    let bytes = |s: &str| Bytes::copy_from_slice(s.as_bytes());
    NewRecord {
        key: key.map(bytes),
        value: bytes(value),
        timestamp,
        headers: headers
            .iter()
            .map(|(name, value)| (name.to_string(), value.map(bytes)))
            .collect(),
    }
}

fn sorted_lines(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    lines
}

fn lines_in(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Five records with keys, timestamps and headers of their own in two
/// partitions.
fn produce_records_of_their_own(brokers: &str, topic: &str) {
    let trace = |t| [("trace", Some(t))];
    servers::produce_records(
        brokers,
        topic,
        0,
        vec![
            record(Some("k1"), "a b", 1_000, &trace("t1")),
            record(None, "a", 5_000, &[]),
            record(Some("k3"), "b", 12_000, &[("x", None), ("y", Some(""))]),
        ],
    );
    servers::produce_records(
        brokers,
        topic,
        1,
        vec![
            record(
                Some("k2"),
                "c a",
                2_000,
                &[("trace", Some("t2")), ("span", Some("s2"))],
            ),
            record(None, "b", 11_000, &[]),
        ],
    );
}

/// What the guest sends to `meta` for them, and for the two ticks.
const META: [&str; 7] = [
    "(k1,0,0,1000,trace=t1,a b)",
    "(k2,1,0,2000,trace=t2;span=s2,c a)",
    "(k3,0,2,12000,x=null;y=,b)",
    "(null,0,1,5000,,a)",
    "(null,0,3,200000,,tick)",
    "(null,1,1,11000,,b)",
    "(null,1,2,200000,,tick)",
];

/// Records with timestamps of their own in two partitions: the guest's
/// side output shows each record's metadata, and the tumbling windows
/// (10 s, out-of-orderness 60 s) count the words by the records'
/// timestamps, not by when they were read. The windows fire once records
/// far later in event time (200 s) arrive in both partitions, and theirs
/// never do.
#[test]
fn a_pipeline_gets_kafka_records_whole_with_their_timestamps_as_event_time() {
    let brokers = servers::brokers();
    let topic = servers::unique("records-in");
    servers::create_topic(&brokers, &topic, 2);
    produce_records_of_their_own(&brokers, &topic);
    let dir = TempDir::new("kafka-records");
    let meta = dir.path("meta.txt");
    let job = HostCommand::job(
        guests::KAFKA_RECORDS,
        &format!("kafka://{brokers}/{topic}?start=earliest"),
        &[
            "--side-output",
            &format!("meta=file://{}", meta.display()),
            "--checkpoint-interval",
            "200ms",
            "--parallelism",
            "2",
        ],
    )
    .current_dir(&dir.0)
    .timeout(Duration::from_secs(60))
    .spawn();
    wait_until(
        "the five records' metadata",
        Duration::from_secs(30),
        || lines_in(&meta).lines().count() >= 5,
    );
    // Only now, so that no record is late behind them. (The watermark
    // follows the rows the first stage emits: a tick is a word.)
    for p in 0..2 {
        servers::produce_records(
            &brokers,
            &topic,
            p,
            vec![record(None, "tick", 200_000, &[])],
        );
    }
    job.wait_for_lines(4, Duration::from_secs(30));
    wait_until("the ticks' metadata", Duration::from_secs(30), || {
        lines_in(&meta).lines().count() >= 7
    });
    job.signal("TERM");
    let out = job.wait();
    out.assert_code(0);
    assert_eq!(
        sorted_lines(&out.stdout),
        [
            "(a,0,10000,3)",
            "(b,0,10000,1)",
            "(b,10000,20000,2)",
            "(c,0,10000,1)"
        ],
        "stderr:\n{}",
        out.stderr
    );
    assert_eq!(sorted_lines(&lines_in(&meta)), META);
}

/// The same guest over a file: each line is one text value, with no Kafka
/// record behind it.
#[test]
fn a_line_is_no_kafka_record() {
    let dir = TempDir::new("kafka-records-lines");
    let input = dir.write("in.txt", "a b\nc\n");
    let out = HostCommand::job(
        guests::KAFKA_RECORDS,
        &format!("file://{}", input.display()),
        &[],
    )
    .current_dir(&dir.0)
    .timeout(Duration::from_secs(60))
    .run();
    out.assert_code(0);
    assert_eq!(out.stdout, "meta> (line,a b)\nmeta> (line,c)\n");
}
