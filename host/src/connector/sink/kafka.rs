//! `kafka://HOST:PORT[,...]/TOPIC[?OPTIONS]`: each output line as a Kafka
//! record, its value the line (`(a,3)`), its key the job's key (the
//! aggregation's key, as text; without an aggregation, no key), in the
//! partition Kafka's default partitioner gives the key (murmur2, as the
//! Java client), or, without a key, the line's value.
//!
//! Exactly once by deterministic replay, without transactions: lines are
//! numbered across the job's output (the same numbers in a replay), and
//! every write to a partition — one record batch, which the broker appends
//! whole or not at all — carries, on its first record, the header
//! `sluice` (see [`Mark`]): the job, the lines `[first, first + count)` of
//! the job's output the block held, and the order the job read the
//! block's records in (runs of record numbers). So the topic itself says
//! what the job wrote: after a crash, the sink reads each partition's tail
//! from the checkpoint's end offsets, skips every line up to the last block
//! it finds there in that partition, and gives the source the recorded
//! order, which it replays first (a source whose partitions interleave by
//! timing would read them in another order). A write whose outcome is
//! unknown (a broker gone mid-request) is settled the same way before it is
//! tried again. Nothing a consumer reads is ever taken back, so it reads
//! with the default `isolation.level` and needs no deduplication; the
//! header can be ignored.
//!
//! The number of partitions is fixed when the job starts (a restored job
//! keeps its checkpoint's), so a key keeps its partition. Options:
//! `timeout=DURATION` (each request, 30s), `retry-for=DURATION` (how long a
//! write waits for a broker that is gone before the job fails, 60s),
//! `max-record-bytes=SIZE` (1MiB; a longer line fails the job, since the
//! broker would refuse it).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};

use crate::connector::kafka::batch::BatchBuilder;
use crate::connector::kafka::client::Sent;
use crate::connector::kafka::{Cluster, KafkaError, KafkaUri, environment, partition_for};
use crate::connector::position::{Offsets, Runs};
use crate::connector::{ConnectorEnv, ConnectorError, Sink, SinkContext, SinkKind, SinkPosition};
use crate::dataflow::exchange::Block;
use crate::units::parse_bytes;

/// The options a Kafka sink takes.
const OPTIONS: &[&str] = &["timeout", "retry-for", "max-record-bytes"];
/// The header that marks a write.
pub const HEADER: &str = "sluice";
/// The mark's format version.
const MARK_VERSION: u8 = 1;

/// The `kafka://` sink scheme.
pub struct KafkaKind;

fn parse(uri: &str, env: &ConnectorEnv) -> Result<KafkaUri, ConnectorError> {
    KafkaUri::parse(uri, "sink", OPTIONS, env)
}

impl SinkKind for KafkaKind {
    fn matches(&self, uri: &str) -> bool {
        uri.starts_with("kafka://")
    }

    fn usage(&self) -> &'static str {
        "`kafka://HOST:PORT/TOPIC`"
    }

    fn check(&self, uri: &str, env: &ConnectorEnv) -> Result<(), ConnectorError> {
        Settings::of(&parse(uri, env)?).map(drop)
    }

    fn canonical(&self, uri: &str, env: &ConnectorEnv) -> String {
        parse(uri, env).map_or_else(|_| uri.to_string(), |u| u.canonical())
    }

    fn same(&self, a: &str, b: &str, env: &ConnectorEnv) -> bool {
        match (parse(a, env), parse(b, env)) {
            (Ok(a), Ok(b)) => a.topic == b.topic && a.brokers == b.brokers,
            _ => false,
        }
    }

    fn keys(&self) -> bool {
        true
    }

    fn probe(
        &self,
        uri: &str,
        env: &ConnectorEnv,
        connect_timeout: Duration,
    ) -> Result<(), ConnectorError> {
        let uri = parse(uri, env)?;
        let mut cluster = uri.connect(connect_timeout)?;
        uri.topic(&mut cluster).map(drop)
    }

    fn written(
        &self,
        uri: &str,
        env: &ConnectorEnv,
        position: &SinkPosition,
        job_id: &str,
    ) -> Result<Runs, ConnectorError> {
        let uri = parse(uri, env)?;
        let mut cluster = uri.connect(Settings::of(&uri)?.retry_for)?;
        let topic = uri.topic(&mut cluster)?;
        let from = position.partitions.as_deref().cloned().unwrap_or_default();
        let tails = read_tails(&mut cluster, &uri.topic, &topic.leaders, &from, tag(job_id))
            .map_err(|e| environment(&e))?;
        Ok(order(
            tails.values().flat_map(|t| t.marks.iter()),
            position.lines,
        ))
    }

    fn open(
        &self,
        uri: &str,
        env: &ConnectorEnv,
        cx: &SinkContext,
    ) -> Result<Box<dyn Sink>, ConnectorError> {
        let parsed = parse(uri, env)?;
        let settings = Settings::of(&parsed)?;
        let mut cluster = parsed.connect(settings.retry_for)?;
        let topic = parsed.topic(&mut cluster)?;
        let tag = tag(&cx.job_id);
        let mut sink = Writer {
            uri: parsed,
            settings,
            cluster,
            leaders: topic.leaders,
            tag,
            through: BTreeMap::new(),
            ends: Offsets::new(),
            lines: 0,
            in_flight: None,
        };
        match &cx.resume {
            Some(position) => sink.resume(position)?,
            None => sink.start()?,
        }
        Ok(Box::new(KafkaSink::spawn(sink)?))
    }
}

/// The job's tag in marks: the first 8 bytes of its id's hash.
fn tag(job_id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(job_id.as_bytes())
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    retry_for: Duration,
    max_record: usize,
}

impl Settings {
    fn of(uri: &KafkaUri) -> Result<Settings, ConnectorError> {
        uri.timeout()?;
        let max_record = match uri.options.get("max-record-bytes") {
            None => 1 << 20,
            Some(v) => parse_bytes(v)
                .map_err(|e| ConnectorError::Input(format!("option `max-record-bytes`: {e}")))?
                as usize,
        };
        Ok(Settings {
            retry_for: uri.duration("retry-for", Duration::from_secs(60))?,
            max_record,
        })
    }
}

/// What a write's `sluice` header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    /// The job's tag.
    pub tag: u64,
    /// The block's first line, in the job's numbering.
    pub first: u64,
    /// The block's lines (all partitions').
    pub count: u64,
    /// The order its records were read in.
    pub runs: Runs,
}

impl Mark {
    /// `version u8, tag u64, first u64, count u64, runs u32, (from u64, to
    /// u64) * runs`, little-endian.
    pub fn encode(&self) -> Bytes {
        let mut b = Vec::with_capacity(29 + 16 * self.runs.len());
        b.push(MARK_VERSION);
        b.extend_from_slice(&self.tag.to_le_bytes());
        b.extend_from_slice(&self.first.to_le_bytes());
        b.extend_from_slice(&self.count.to_le_bytes());
        b.extend_from_slice(&(self.runs.len() as u32).to_le_bytes());
        for (from, to) in &self.runs {
            b.extend_from_slice(&from.to_le_bytes());
            b.extend_from_slice(&to.to_le_bytes());
        }
        Bytes::from(b)
    }

    /// Reads a mark; `None` when it is not one.
    pub fn decode(b: &[u8]) -> Option<Mark> {
        let u64_at = |at: usize| Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?));
        if b.first() != Some(&MARK_VERSION) {
            return None;
        }
        let runs = u32::from_le_bytes(b.get(25..29)?.try_into().ok()?) as usize;
        if b.len() != 29 + 16 * runs {
            return None;
        }
        Some(Mark {
            tag: u64_at(1)?,
            first: u64_at(9)?,
            count: u64_at(17)?,
            runs: (0..runs)
                .map(|i| Some((u64_at(29 + 16 * i)?, u64_at(37 + 16 * i)?)))
                .collect::<Option<_>>()?,
        })
    }
}

/// What the job wrote to one partition past some offset.
#[derive(Debug, Default)]
struct Tail {
    /// The job's marks, in offset order.
    marks: Vec<Mark>,
    /// The partition's end.
    end: i64,
}

/// Reads the tail of every partition from `from` (the partition's start
/// when absent), collecting the marks of job `tag`.
fn read_tails(
    cluster: &mut Cluster,
    topic: &str,
    leaders: &BTreeMap<i32, i32>,
    from: &Offsets,
    tag: u64,
) -> Result<BTreeMap<i32, Tail>, KafkaError> {
    let mut tails = BTreeMap::new();
    for (&p, &node) in leaders {
        let mut at = from.get(&p).copied().unwrap_or(0);
        let mut tail = Tail::default();
        let mut empty = 0;
        loop {
            // Some brokers (Tansu) answer only what they read within the
            // wait: an empty answer below the high watermark is asked again.
            let fetched =
                cluster.fetch(node, topic, &[(p, at)], Duration::from_millis(200), 8 << 20)?;
            let Some(f) = fetched.into_iter().find(|f| f.partition == p) else {
                break;
            };
            if let Some(e) = f.error {
                return Err(e);
            }
            tail.end = f.high_watermark.max(at);
            for r in &f.records {
                let mark = r
                    .headers
                    .iter()
                    .find(|(k, _)| k.as_str() == HEADER)
                    .and_then(|(_, v)| v.as_deref())
                    .and_then(Mark::decode);
                if let Some(m) = mark.filter(|m| m.tag == tag) {
                    tail.marks.push(m);
                }
            }
            if f.next >= f.high_watermark {
                break;
            }
            if f.next <= at {
                empty += 1;
                if empty > 20 {
                    return Err(KafkaError::Unreachable(format!(
                        "`{topic}` partition {p} does not give its records from offset {at} on"
                    )));
                }
                continue;
            }
            empty = 0;
            at = f.next;
        }
        tails.insert(p, tail);
    }
    Ok(tails)
}

/// The order the marks record, from line `from` on: the marks by first
/// line, each block once (a block a replay wrote again in parts is within
/// the block first written), their runs one after the other.
fn order<'a>(marks: impl Iterator<Item = &'a Mark>, from: u64) -> Runs {
    let mut marks: Vec<&Mark> = marks.filter(|m| m.first >= from).collect();
    marks.sort_by_key(|m| (m.first, std::cmp::Reverse(m.count)));
    let mut covered = from;
    let mut runs = Runs::new();
    for m in marks {
        if m.first < covered || m.count == 0 {
            continue;
        }
        covered = m.first + m.count;
        runs.extend(m.runs.iter().copied());
    }
    runs
}

/// Per partition, the records still to write: how many, and their batch.
type Pending = BTreeMap<i32, (i64, Bytes)>;

/// What writes to the topic, on the sink's own thread ([`KafkaSink`]).
struct Writer {
    uri: KafkaUri,
    settings: Settings,
    cluster: Cluster,
    /// Partition → leader; the partitions the job writes to.
    leaders: BTreeMap<i32, i32>,
    tag: u64,
    /// Per partition, the line up to which it holds the job's output.
    through: BTreeMap<i32, u64>,
    /// Per partition, the offset after the job's last write.
    ends: Offsets,
    /// Lines of output so far.
    lines: u64,
    /// The write sent whose acknowledgement is still to be read.
    in_flight: Option<InFlight>,
}

/// A write sent ([`Writer::send`]) and not yet acknowledged.
struct InFlight {
    /// The line after the block's last.
    through: u64,
    /// Each partition's records.
    pending: Pending,
    /// Each leader's request.
    sent: Vec<(i32, Sent)>,
    /// The first request that could not be sent.
    failed: Option<KafkaError>,
}

impl Writer {
    /// A new job: every partition's end now.
    fn start(&mut self) -> Result<(), ConnectorError> {
        let mut by_node: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for (&p, &node) in &self.leaders {
            by_node.entry(node).or_default().push(p);
        }
        for (node, parts) in by_node {
            let ends = self
                .cluster
                .ends(node, &self.uri.topic, &parts)
                .map_err(|e| environment(&e))?;
            self.ends.extend(ends);
        }
        Ok(())
    }

    /// A restored job: the partitions of the checkpoint, and what the job
    /// wrote to each past it.
    fn resume(&mut self, position: &SinkPosition) -> Result<(), ConnectorError> {
        self.lines = position.lines;
        let from = position.partitions.as_deref().cloned().unwrap_or_default();
        if !from.is_empty() {
            if let Some(p) = from.keys().find(|p| !self.leaders.contains_key(p)) {
                return Err(ConnectorError::Input(format!(
                    "Kafka topic `{}` has no partition {p}, which the checkpoint wrote to; it was recreated, so the output cannot go on exactly once",
                    self.uri.topic
                )));
            }
            self.leaders.retain(|p, _| from.contains_key(p));
        }
        self.settle(&from)?;
        Ok(())
    }

    /// Reads what the job wrote past `from` in each partition of `from`
    /// (each partition, when `from` is empty).
    fn settle(&mut self, from: &Offsets) -> Result<(), ConnectorError> {
        let leaders: BTreeMap<i32, i32> = self
            .leaders
            .iter()
            .filter(|(p, _)| from.is_empty() || from.contains_key(p))
            .map(|(p, n)| (*p, *n))
            .collect();
        let tails = read_tails(&mut self.cluster, &self.uri.topic, &leaders, from, self.tag)
            .map_err(|e| environment(&e))?;
        for (p, tail) in tails {
            if let Some(last) = tail.marks.iter().map(|m| m.first + m.count).max() {
                let through = self.through.entry(p).or_default();
                *through = (*through).max(last);
            }
            self.ends.insert(p, tail.end);
        }
        Ok(())
    }

    fn partitions(&self) -> u32 {
        self.leaders.len() as u32
    }

    /// The records of `block` (lines `at..`) each partition lacks.
    fn records(&self, at: u64, block: &Block) -> Result<Pending, ConnectorError> {
        let now = crate::job::now_ms() as i64;
        let keyed = !block.key_ends.is_empty();
        let partitions = self.partitions();
        let n = partitions.max(1) as usize;
        // Per partition (by index: the partitioner's numbers), the line
        // up to which it holds the output, and the batch being written.
        let through: Vec<u64> = (0..n)
            .map(|p| self.through.get(&(p as i32)).copied().unwrap_or(0))
            .collect();
        let mut out: Vec<Option<BatchBuilder>> = (0..n).map(|_| None).collect();
        // About 10 bytes of framing a record.
        let per = (block.bytes.len() + block.keys.len() + 10 * block.lines as usize) / n;
        let (mut start, mut key_start) = (0usize, 0usize);
        for (i, end) in memchr::memchr_iter(b'\n', &block.bytes).enumerate() {
            let line = &block.bytes[start..end];
            start = end + 1;
            let key: &[u8] = match block.key_ends.get(i) {
                Some(&key_end) => {
                    let key = block.keys.get(key_start..key_end as usize);
                    key_start = key_end as usize;
                    key.unwrap_or_default()
                }
                None => &[],
            };
            let p = partition_for(if keyed { key } else { line }, partitions);
            let (Some(&through), Some(slot)) = (through.get(p as usize), out.get_mut(p as usize))
            else {
                continue;
            };
            if at + (i as u64) < through {
                continue;
            }
            if line.len() > self.settings.max_record {
                return Err(self.too_long(at + i as u64, line, key));
            }
            let key = keyed.then_some(key);
            match slot {
                Some(batch) => batch.push_plain(key, line),
                None => {
                    let mut batch = BatchBuilder::new(now, per + per / 4);
                    let mark = Mark {
                        tag: self.tag,
                        first: at,
                        count: block.lines,
                        runs: block.runs.as_deref().cloned().unwrap_or_default(),
                    };
                    batch.push(key, line, &[(HEADER, &mark.encode())]);
                    *slot = Some(batch);
                }
            }
        }
        Ok(out
            .into_iter()
            .enumerate()
            .filter_map(|(p, b)| Some((p as i32, b?)))
            .map(|(p, b)| (p, (b.len() as i64, b.finish())))
            .collect())
    }

    /// The error for output line `line` (0-based number `at`), over the
    /// limit.
    fn too_long(&self, at: u64, line: &[u8], key: &[u8]) -> ConnectorError {
        ConnectorError::Input(format!(
            "output line {} of {} bytes (key `{}`) is over the Kafka sink's limit of {} bytes; raise `max-record-bytes` in the sink's URI (and the topic's max.message.bytes)",
            at + 1,
            line.len(),
            String::from_utf8_lossy(&key[..key.len().min(60)]),
            self.settings.max_record
        ))
    }

    /// Sends the partitions' records of `block` (lines `at..`), each
    /// partition in one request per leader, without waiting for the
    /// broker's acknowledgement: [`Writer::complete`] reads it (before
    /// the next write, a sync or a flush), so the broker appends one
    /// block while the job makes the next.
    fn send(&mut self, at: u64, block: &Block) -> Result<(), ConnectorError> {
        // A block that goes over lines the write in flight holds (a replay)
        // waits for it, so that its lines are left out; any other is made
        // while the broker appends that one (its acknowledgement moves no
        // partition past this block's first line).
        if self.in_flight.as_ref().is_some_and(|f| at < f.through) {
            self.complete()?;
        }
        let pending = self.records(at, block)?;
        self.complete()?;
        if pending.is_empty() {
            return Ok(());
        }
        let mut by_node: BTreeMap<i32, Vec<(i32, Bytes)>> = BTreeMap::new();
        for (p, (_, batch)) in &pending {
            let node = self.leaders.get(p).copied().unwrap_or(-1);
            by_node.entry(node).or_default().push((*p, batch.clone()));
        }
        let mut sent = Vec::new();
        let mut failed = None;
        for (node, batches) in by_node {
            match self.cluster.send_produce(node, &self.uri.topic, batches) {
                Ok(s) => sent.push((node, s)),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        self.in_flight = Some(InFlight {
            through: at + block.lines,
            pending,
            sent,
            failed,
        });
        Ok(())
    }

    /// Reads the acknowledgement of the write in flight, if any; settles
    /// and retries what failed until `retry-for` passes.
    fn complete(&mut self) -> Result<(), ConnectorError> {
        let Some(f) = self.in_flight.take() else {
            return Ok(());
        };
        let (mut pending, through) = (f.pending, f.through);
        let mut first = f.failed;
        for (node, sent) in f.sent {
            match self.cluster.produced(node, &self.uri.topic, sent) {
                Ok(results) => self.written(&mut pending, results, through, &mut first),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        let e = first.unwrap_or_else(|| {
            KafkaError::Unreachable("the broker did not answer for every partition".into())
        });
        self.retry(pending, through, e)
    }

    /// Takes the partitions a produce wrote out of `pending`, keeping the
    /// first error.
    fn written(
        &mut self,
        pending: &mut Pending,
        results: Vec<(i32, Result<i64, KafkaError>)>,
        through: u64,
        first: &mut Option<KafkaError>,
    ) {
        for (p, result) in results {
            match result {
                Ok(base) => {
                    let count = pending.get(&p).map_or(0, |r| r.0);
                    self.ends.insert(p, base + count);
                    self.through.insert(p, through);
                    pending.remove(&p);
                }
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
    }

    /// Writes what is still `pending` after the error `e`, waiting for a
    /// broker that is gone up to `retry-for`.
    fn retry(
        &mut self,
        mut pending: Pending,
        through: u64,
        e: KafkaError,
    ) -> Result<(), ConnectorError> {
        let deadline = Instant::now() + self.settings.retry_for;
        let mut wait = Duration::from_millis(100);
        let mut reported = false;
        let mut error = Some(e);
        while !pending.is_empty() {
            let Some(e) = error.take() else {
                error = self.try_produce(&mut pending, through);
                continue;
            };
            if !e.retriable() || Instant::now() + wait > deadline {
                let retried = match e.retriable() {
                    true => format!(
                        " (retried for {} s, `retry-for`)",
                        self.settings.retry_for.as_secs()
                    ),
                    false => String::new(),
                };
                return Err(ConnectorError::Environment(format!(
                    "sink `{}` failed: {e}{retried}",
                    self.uri.canonical()
                )));
            }
            if !reported {
                tracing::warn!(
                    "sink `{}`: {e}; waiting for the broker (up to {} s)",
                    self.uri.canonical(),
                    self.settings.retry_for.as_secs()
                );
                reported = true;
            }
            std::thread::sleep(wait);
            wait = (wait * 2).min(Duration::from_secs(2));
            if self.recover(&mut pending, through)? && pending.is_empty() {
                tracing::info!("sink `{}`: the broker is back", self.uri.canonical());
            }
        }
        Ok(())
    }

    /// After a failed write: reconnects, reads what reached the broker
    /// before the failure, and leaves in `pending` only what is still
    /// missing (a batch is appended whole or not at all, so a partition
    /// whose write got there holds the block through line `through`).
    /// `Ok(false)` when the broker cannot be asked yet.
    fn recover(&mut self, pending: &mut Pending, through: u64) -> Result<bool, ConnectorError> {
        match self.cluster.reconnect(Duration::ZERO) {
            Ok(()) => {}
            // The broker is back but refuses the connection's security (a
            // rotated password, a new certificate): waiting will not help.
            Err(e @ KafkaError::Security(_)) => {
                return Err(ConnectorError::Input(format!(
                    "Kafka sink `{}`: {e}",
                    self.uri.canonical()
                )));
            }
            Err(_) => return Ok(false),
        }
        if let Ok(Some(t)) = self.cluster.topic(&self.uri.topic) {
            for (p, leader) in t.leaders {
                self.leaders.entry(p).and_modify(|l| *l = leader);
            }
        }
        let from: Offsets = pending
            .keys()
            .map(|p| (*p, self.ends.get(p).copied().unwrap_or(0)))
            .collect();
        if self.settle(&from).is_err() {
            return Ok(false);
        }
        pending.retain(|p, _| self.through.get(p).copied().unwrap_or(0) < through);
        Ok(true)
    }

    /// One try at every pending partition: those written leave `pending`;
    /// the first error, if any.
    fn try_produce(&mut self, pending: &mut Pending, through: u64) -> Option<KafkaError> {
        let mut by_node: BTreeMap<i32, Vec<(i32, Bytes)>> = BTreeMap::new();
        for (p, (_, batch)) in pending.iter() {
            let node = self.leaders.get(p).copied().unwrap_or(-1);
            by_node.entry(node).or_default().push((*p, batch.clone()));
        }
        let mut first = None;
        for (node, batches) in by_node {
            match self.cluster.produce(node, &self.uri.topic, batches) {
                Ok(results) => self.written(pending, results, through, &mut first),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        first
    }
}

impl Writer {
    fn write(&mut self, at: u64, block: &Block) -> Result<(), ConnectorError> {
        if block.lines > 0 {
            self.send(at, block)?;
        }
        self.lines = self.lines.max(at + block.lines);
        Ok(())
    }

    fn sync(&mut self) -> Result<SinkPosition, ConnectorError> {
        self.complete()?;
        // Every write was acknowledged by all in-sync replicas (acks=all):
        // it is as durable as the topic makes it.
        let ends: Offsets = self
            .leaders
            .keys()
            .map(|p| (*p, self.ends.get(p).copied().unwrap_or(0)))
            .collect();
        Ok(SinkPosition {
            lines: self.lines,
            bytes: 0,
            partitions: Some(Arc::new(ends)),
        })
    }

    /// Works through the job's requests until the job lets go of the
    /// sink: writes, and syncs and flushes, which are answered on
    /// `replies`. A write that could not be made (met by the write itself,
    /// or by a sync or a flush while it was in flight) fails the sink for
    /// good: it goes into `dead`, which the job checks at every call and
    /// while idle, and answers every request after it.
    fn run(
        mut self,
        work: &Receiver<Work>,
        replies: &Sender<Reply>,
        stop: &AtomicBool,
        dead: &OnceLock<ConnectorError>,
    ) {
        for item in work.iter() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let reply = match (dead.get(), item) {
                (Some(_), Work::Write(..)) => continue,
                (Some(e), _) => Err(again(e)),
                (None, Work::Write(at, block)) => {
                    if let Err(e) = self.write(at, &block) {
                        let _ = dead.set(e);
                    }
                    continue;
                }
                (None, Work::Sync) => self.sync(),
                (None, Work::Flush) => self.complete().map(|()| SinkPosition::default()),
            };
            if let Err(e) = &reply {
                let _ = dead.set(again(e));
            }
            if replies.send(reply).is_err() {
                break;
            }
        }
        // A write still in flight is settled before the sink is let go.
        let _ = self.complete();
    }
}

fn again(e: &ConnectorError) -> ConnectorError {
    match e {
        ConnectorError::Input(m) => ConnectorError::Input(m.clone()),
        ConnectorError::Environment(m) => ConnectorError::Environment(m.clone()),
    }
}

/// What the job asks of the writer's thread.
enum Work {
    Write(u64, Block),
    Sync,
    Flush,
}

/// The writer's answer to a sync or a flush.
type Reply = Result<SinkPosition, ConnectorError>;

/// A Kafka topic as a sink. The job's thread hands each block
/// to a writer thread of the sink's own, which cuts it into record
/// batches and produces them while the job works on the next block; a
/// sync (a checkpoint) or a flush waits until everything before it is
/// acknowledged. The one check made on the job's thread is the records'
/// size limit, so a line over it fails the write that holds it.
pub struct KafkaSink {
    max_record: usize,
    work: Option<Sender<Work>>,
    replies: Receiver<Reply>,
    stop: Arc<AtomicBool>,
    /// The writer's failure, once a write failed for good: every later
    /// call fails the same way, and the job fails at once, even idle.
    dead: Arc<OnceLock<ConnectorError>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KafkaSink {
    fn spawn(writer: Writer) -> Result<KafkaSink, ConnectorError> {
        let (work_tx, work_rx) = crossbeam_channel::bounded(1);
        let (reply_tx, reply_rx) = crossbeam_channel::unbounded();
        let stop = Arc::new(AtomicBool::new(false));
        let max_record = writer.settings.max_record;
        let flag = stop.clone();
        let dead = Arc::new(OnceLock::new());
        let failure = dead.clone();
        let thread = std::thread::Builder::new()
            .name("sluice-kafka-out".into())
            .spawn(move || writer.run(&work_rx, &reply_tx, &flag, &failure))
            .map_err(|e| {
                ConnectorError::Environment(format!("cannot start the sink's thread: {e}"))
            })?;
        Ok(KafkaSink {
            max_record,
            work: Some(work_tx),
            replies: reply_rx,
            stop,
            dead,
            thread: Some(thread),
        })
    }

    fn stopped() -> ConnectorError {
        ConnectorError::Environment("the Kafka sink's writer stopped".into())
    }

    /// Sends `item` and waits for its answer (an earlier write's failure,
    /// if one failed).
    fn ask(&mut self, item: Work) -> Reply {
        self.failed()?;
        let work = self.work.as_ref().ok_or_else(Self::stopped)?;
        work.send(item).map_err(|_| Self::stopped())?;
        self.replies.recv().map_err(|_| Self::stopped())?
    }

    /// Fails like the writer's first failed write, if one failed.
    fn failed(&self) -> Result<(), ConnectorError> {
        self.dead.get().map_or(Ok(()), |e| Err(again(e)))
    }

    /// Refuses a block with a line over `max-record-bytes`.
    fn check(&self, at: u64, block: &Block) -> Result<(), ConnectorError> {
        if block.bytes.len() <= self.max_record {
            return Ok(());
        }
        let mut start = 0usize;
        for (i, end) in memchr::memchr_iter(b'\n', &block.bytes).enumerate() {
            let len = end - start;
            start = end + 1;
            if len > self.max_record {
                let key = block.key(i);
                return Err(ConnectorError::Input(format!(
                    "output line {} of {len} bytes (key `{}`) is over the Kafka sink's limit of {} bytes; raise `max-record-bytes` in the sink's URI (and the topic's max.message.bytes)",
                    at + i as u64 + 1,
                    String::from_utf8_lossy(&key[..key.len().min(60)]),
                    self.max_record
                )));
            }
        }
        Ok(())
    }
}

impl Sink for KafkaSink {
    fn write(&mut self, at: u64, block: &Block) -> Result<(), ConnectorError> {
        let copy = Block {
            bytes: block.bytes.clone(),
            lines: block.lines,
            keys: block.keys.clone(),
            key_ends: block.key_ends.clone(),
            runs: block.runs.clone(),
        };
        self.write_owned(at, copy)
    }

    fn write_owned(&mut self, at: u64, block: Block) -> Result<(), ConnectorError> {
        self.failed()?;
        if block.lines == 0 {
            return Ok(());
        }
        self.check(at, &block)?;
        let work = self.work.as_ref().ok_or_else(Self::stopped)?;
        work.send(Work::Write(at, block))
            .map_err(|_| Self::stopped())
    }

    fn flush(&mut self) -> Result<(), ConnectorError> {
        self.ask(Work::Flush).map(drop)
    }

    fn poll(&mut self) -> Result<(), ConnectorError> {
        self.failed()
    }

    fn sync(&mut self) -> Result<SinkPosition, ConnectorError> {
        self.ask(Work::Sync)
    }
}

impl Drop for KafkaSink {
    fn drop(&mut self) {
        // Writes not yet sent are dropped (the job replays them, like after
        // a crash); the one in flight is settled before the sink goes.
        self.stop.store(true, Ordering::Relaxed);
        self.work = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_round_trip_and_order_blocks_once() {
        let m = Mark {
            tag: 7,
            first: 10,
            count: 5,
            runs: vec![(1, 4), (9, 12)],
        };
        assert_eq!(Mark::decode(&m.encode()), Some(m.clone()));
        assert_eq!(Mark::decode(b"junk"), None);
        // A block written whole, then again in two parts by a replay.
        let part1 = Mark {
            first: 10,
            count: 2,
            runs: vec![(1, 4)],
            ..m.clone()
        };
        let part2 = Mark {
            first: 12,
            count: 3,
            runs: vec![(9, 12)],
            ..m.clone()
        };
        let next = Mark {
            first: 15,
            count: 1,
            runs: vec![(12, 13)],
            ..m.clone()
        };
        let marks = [part2, next, part1, m];
        assert_eq!(order(marks.iter(), 10), vec![(1, 4), (9, 12), (12, 13)]);
    }
}
