//! `kafka://HOST:PORT[,...]/TOPIC[?OPTIONS]`: every partition of a Kafka
//! topic. Unbounded, and replayable from the broker by offset, so it needs
//! no journal.
//!
//! One reader thread fetches all the topic's partitions (one fetch request
//! per leader broker, covering all the partitions it leads) and cuts what
//! comes back into batches, partition by partition in the order the fetch
//! returned them. The job splits each batch over its subtasks, so every
//! partition is spread over the whole job. Because there is one reader,
//! there is nothing to merge and no barrier to align: a batch's end
//! position holds every partition's next offset, and a checkpoint's barrier,
//! which goes between two batches, is at its own offset in each partition.
//!
//! A record's value is the guest's text line (a null value is the empty
//! line; a value that is not UTF-8 or is over `--max-line-bytes` is skipped
//! with a warning, like a bad line); its key, timestamp and headers ride
//! along in [`RecordMeta`] for the first stage of a 0.2.0 pipeline, which
//! gets the record whole, its partition and offset in its record number ([`partitioned_seq`]), so a record keeps its number
//! (for dead letters and the skip list) however the partitions interleave.
//!
//! Because the partitions interleave by timing, reading them again does not
//! by itself give the same order. The source keeps the order it delivered
//! since the last completed checkpoint (runs of offsets per batch) and
//! replays exactly that after a failure; after a crash of the host, the
//! order comes from the Kafka sink, which wrote it beside its output (see
//! `connector/sink/kafka.rs`). After each completed checkpoint the offsets
//! are committed to the consumer group (without joining it, as Flink does),
//! so lag tools see them; the checkpoint, not the group, is what a restore
//! starts from. New partitions are picked up every `discovery` interval,
//! from their earliest offset.
//!
//! Options: `group=NAME` (default `sluice-TOPIC`), `start=committed|earliest|
//! latest` (default `committed`: the group's offsets, else earliest),
//! `commit=true|false`, `discovery=DURATION` (5s), `timeout=DURATION` (each
//! request, 30s), `max-wait=DURATION` (a fetch's longest wait, 100ms).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded};

use crate::connector::journal::JournalWriter;
use crate::connector::kafka::cluster::{Fetched, Record};
use crate::connector::kafka::{Cluster, KafkaError, KafkaUri};
use crate::connector::lines::send_last;
use crate::connector::position::{MAX_OFFSET, MAX_PARTITIONS, Offsets, Runs, partitioned_seq};
use crate::connector::{
    ConnectorEnv, ConnectorError, Resumption, Source, SourceEvent, SourceKind, SourceOptions,
    SourcePosition,
};
use crate::dataflow::message::{RecordMeta, Rejected, SourceBatch};

/// Most records in one batch.
const MAX_BATCH_RECORDS: usize = 4096;
/// Most bytes asked of one fetch.
const FETCH_BYTES: i32 = 8 << 20;
/// What the first fetch asks for: each next one asks twice as much, up
/// to `FETCH_BYTES`, so that the first records reach the job soon.
const FIRST_FETCH_BYTES: i32 = 256 << 10;
/// Batches the reader may be ahead of the job.
const AHEAD: usize = 4;
/// How much of a rejected record the log shows.
const PREVIEW: usize = 60;
/// The options a Kafka source takes.
const OPTIONS: &[&str] = &[
    "group",
    "start",
    "commit",
    "discovery",
    "timeout",
    "max-wait",
];

/// The `kafka://` source scheme.
pub struct KafkaKind;

impl SourceKind for KafkaKind {
    fn matches(&self, uri: &str) -> bool {
        uri.starts_with("kafka://")
    }

    fn usage(&self) -> &'static str {
        "`kafka://HOST:PORT/TOPIC`"
    }

    fn parse(&self, uri: &str, env: &ConnectorEnv) -> Result<Arc<dyn Source>, ConnectorError> {
        let parsed = KafkaUri::parse(uri, "source", OPTIONS, env)?;
        let bad = |m: String| ConnectorError::Input(format!("source `{uri}`: {m}"));
        let start = match parsed.options.get("start").map(String::as_str) {
            None | Some("committed") => Start::Committed,
            Some("earliest") => Start::Earliest,
            Some("latest") => Start::Latest,
            Some(other) => {
                return Err(bad(format!(
                    "`start={other}` is not valid; use committed, earliest or latest"
                )));
            }
        };
        let commit = match parsed.options.get("commit").map(String::as_str) {
            None | Some("true") => true,
            Some("false") => false,
            Some(other) => return Err(bad(format!("`commit={other}`: use true or false"))),
        };
        let group = parsed
            .options
            .get("group")
            .cloned()
            .unwrap_or_else(|| format!("sluice-{}", parsed.topic));
        let settings = Settings {
            group,
            start,
            commit,
            discovery: parsed.duration("discovery", Duration::from_secs(5))?,
            max_wait: parsed
                .duration("max-wait", Duration::from_millis(100))?
                .max(Duration::from_millis(1)),
        };
        parsed.timeout()?;
        Ok(Arc::new(KafkaSource {
            uri: parsed,
            settings,
            shared: Arc::default(),
        }))
    }
}

/// Where a partition the job has no position for starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    Committed,
    Earliest,
    Latest,
}

#[derive(Debug, Clone)]
struct Settings {
    group: String,
    start: Start,
    commit: bool,
    discovery: Duration,
    max_wait: Duration,
}

/// One batch as the source delivered it: its runs of offsets and where
/// every partition was after it.
#[derive(Debug, Clone)]
struct Logged {
    runs: Arc<Runs>,
    end: SourcePosition,
}

/// The order the source delivered since the last completed checkpoint,
/// for replays.
#[derive(Debug, Default)]
struct OrderLog {
    /// Where the first batch starts (the last completed checkpoint, or
    /// where the source started).
    base: Option<SourcePosition>,
    batches: VecDeque<Logged>,
}

impl OrderLog {
    /// The batches after position `from` (without partitions: from the
    /// start), up to the one that ends at record count `until`.
    fn after(&self, from: &SourcePosition, until: Option<u64>) -> Vec<Logged> {
        let start = if from.partitions.is_none() || self.base.as_ref() == Some(from) {
            0
        } else {
            match self.batches.iter().position(|b| b.end == *from) {
                Some(i) => i + 1,
                None => self.batches.len(),
            }
        };
        let mut out = Vec::new();
        for b in self.batches.iter().skip(start) {
            if until.is_some_and(|u| b.end.seq > u) {
                break;
            }
            out.push(b.clone());
        }
        out
    }

    /// Forgets the batches up to `at` (a completed checkpoint).
    fn trim(&mut self, at: &SourcePosition) {
        if let Some(i) = self.batches.iter().position(|b| b.end == *at) {
            self.batches.drain(..=i);
            self.base = Some(at.clone());
        }
    }
}

/// What the source shares with its reader thread.
#[derive(Debug, Default)]
struct Shared {
    log: Mutex<OrderLog>,
    /// Offsets of a completed checkpoint, to commit to the group.
    commit: Mutex<Option<Arc<Offsets>>>,
}

/// A Kafka topic as a source.
pub struct KafkaSource {
    uri: KafkaUri,
    settings: Settings,
    shared: Arc<Shared>,
}

impl KafkaSource {
    fn unreachable(&self, e: &KafkaError) -> ConnectorError {
        ConnectorError::Environment(format!(
            "cannot read Kafka topic `{}` at `{}`: {e}",
            self.uri.topic,
            self.uri.brokers.join(",")
        ))
    }
}

impl Source for KafkaSource {
    fn uri(&self) -> String {
        self.uri.canonical()
    }

    fn replayable(&self) -> bool {
        true
    }

    fn check(&self, options: &SourceOptions) -> Result<(), ConnectorError> {
        let mut cluster = self.uri.connect(options.connect_timeout)?;
        self.uri.topic(&mut cluster).map(drop)
    }

    fn start(
        &self,
        at: SourcePosition,
        options: &SourceOptions,
        _journal: Option<JournalWriter>,
        cancel: Arc<AtomicBool>,
    ) -> Result<Receiver<SourceEvent>, ConnectorError> {
        let mut cluster = self.uri.connect(options.connect_timeout)?;
        let topic = self.uri.topic(&mut cluster)?;
        let offsets = self.starting(&mut cluster, &at, &topic.leaders)?;
        if let Ok(mut log) = self.shared.log.lock()
            && log.base.is_none()
        {
            log.base = Some(at);
        }
        let mut reader = Reader {
            uri: self.uri.clone(),
            settings: self.settings.clone(),
            shared: self.shared.clone(),
            cluster,
            leaders: topic.leaders,
            offsets,
            max_line: options.max_line_bytes,
            meta: options.record_meta,
            last_discovery: Instant::now(),
            outage: None,
            fetch_bytes: FIRST_FETCH_BYTES,
        };
        let (tx, rx) = bounded(AHEAD);
        std::thread::Builder::new()
            .name("sluice-kafka".into())
            .spawn(move || {
                let last = match reader.run(&tx, &cancel) {
                    Ok(()) => return,
                    Err(e) => SourceEvent::Failed(e),
                };
                send_last(&tx, last, &cancel);
            })
            .map_err(|e| {
                ConnectorError::Environment(format!("cannot start the source's thread: {e}"))
            })?;
        Ok(rx)
    }

    fn replay(
        &self,
        from: SourcePosition,
        until: Option<u64>,
        options: &SourceOptions,
    ) -> Result<Receiver<SourceEvent>, ConnectorError> {
        let batches = self
            .shared
            .log
            .lock()
            .map_err(|_| ConnectorError::Environment("the source's order log is lost".into()))?
            .after(&from, until);
        let mut cluster = self.uri.connect(options.connect_timeout)?;
        let topic = self.uri.topic(&mut cluster)?;
        let (max_line, meta) = (options.max_line_bytes, options.record_meta);
        let (tx, rx) = bounded(AHEAD);
        let uri = self.uri.clone();
        std::thread::Builder::new()
            .name("sluice-kafka-replay".into())
            .spawn(move || {
                let mut replay = Replay {
                    uri,
                    cluster,
                    leaders: topic.leaders,
                    max_line,
                    meta,
                };
                let last = match replay.run(&batches, &tx) {
                    Ok(()) => SourceEvent::End,
                    Err(e) => SourceEvent::Failed(e),
                };
                let _ = tx.send(last);
            })
            .map_err(|e| {
                ConnectorError::Environment(format!("cannot start the replay's thread: {e}"))
            })?;
        Ok(rx)
    }

    fn resume(&self, from: SourcePosition, written: &Runs) -> Result<Resumption, ConnectorError> {
        let (batches, live) = recorded(&from, written);
        let Some(last) = batches.last() else {
            return Ok(Resumption {
                live: from,
                replay: None,
            });
        };
        let until = last.end.seq;
        let mut log =
            self.shared.log.lock().map_err(|_| {
                ConnectorError::Environment("the source's order log is lost".into())
            })?;
        log.batches = batches.into();
        log.base = Some(from.clone());
        Ok(Resumption {
            live,
            replay: Some((from, until)),
        })
    }

    fn checkpointed(&self, at: &SourcePosition) {
        if let Ok(mut log) = self.shared.log.lock() {
            log.trim(at);
        }
        if let (true, Some(offsets), Ok(mut commit)) = (
            self.settings.commit,
            &at.partitions,
            self.shared.commit.lock(),
        ) {
            *commit = Some(offsets.clone());
        }
    }
}

impl KafkaSource {
    /// Where each partition starts: the position's offset, else by `start=`.
    fn starting(
        &self,
        cluster: &mut Cluster,
        at: &SourcePosition,
        leaders: &BTreeMap<i32, i32>,
    ) -> Result<Offsets, ConnectorError> {
        let known = at.partitions.as_deref().cloned().unwrap_or_default();
        let missing: Vec<i32> = leaders
            .keys()
            .copied()
            .filter(|p| !known.contains_key(p))
            .collect();
        let mut offsets = known;
        if missing.is_empty() {
            return Ok(offsets);
        }
        // A restored job reads partitions it has no offset for from their
        // start; a new one as `start=` says.
        let start = match at.partitions {
            Some(_) => Start::Earliest,
            None => self.settings.start,
        };
        let group = &self.settings.group;
        let topic = &self.uri.topic;
        let committed = match start {
            Start::Committed => cluster
                .committed(group, topic, &missing)
                .map_err(|e| self.unreachable(&e))?,
            _ => BTreeMap::new(),
        };
        for (node, parts) in by_leader(leaders, &missing) {
            let found = match start {
                Start::Latest => cluster.ends(node, topic, &parts),
                _ => cluster.earliest(node, topic, &parts),
            }
            .map_err(|e| self.unreachable(&e))?;
            for p in parts {
                let o = committed.get(&p).or(found.get(&p)).copied().unwrap_or(0);
                offsets.insert(p, o);
            }
        }
        check_limits(&offsets, leaders.len()).map_err(ConnectorError::Input)?;
        Ok(offsets)
    }
}

/// The partitions of `wanted`, by the node that leads them.
fn by_leader(leaders: &BTreeMap<i32, i32>, wanted: &[i32]) -> BTreeMap<i32, Vec<i32>> {
    let mut out: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for p in wanted {
        if let Some(&node) = leaders.get(p) {
            out.entry(node).or_default().push(*p);
        }
    }
    out
}

/// Refuses a topic whose records cannot be numbered.
fn check_limits(offsets: &Offsets, partitions: usize) -> Result<(), String> {
    if partitions > MAX_PARTITIONS as usize {
        return Err(format!(
            "the topic has {partitions} partitions; Sluice reads at most {MAX_PARTITIONS}"
        ));
    }
    if offsets.values().any(|o| *o >= MAX_OFFSET) {
        return Err(format!(
            "the topic has offsets past {MAX_OFFSET}, which Sluice cannot number"
        ));
    }
    Ok(())
}

/// The batches a sink recorded it wrote after `from` (runs of record
/// numbers, in order), as the replay goes over them, with the records it
/// did not record (they made no output, so where they go does not matter)
/// put in before the next run of their partition; and where the live
/// source goes on after them.
fn recorded(from: &SourcePosition, written: &Runs) -> (Vec<Logged>, SourcePosition) {
    let mut offsets = from.partitions.as_deref().cloned().unwrap_or_default();
    let mut batches = Vec::new();
    for &(start, end) in written {
        let (Some((p, _)), Some((_, b))) = (
            crate::connector::position::partition_of(start),
            crate::connector::position::partition_of(end),
        ) else {
            continue;
        };
        let at = offsets.get(&p).copied().unwrap_or(0);
        if b <= at {
            continue;
        }
        let run = (partitioned_seq(p, at), partitioned_seq(p, b));
        offsets.insert(p, b);
        batches.push(Logged {
            runs: Arc::new(vec![run]),
            end: SourcePosition::partitioned(offsets.clone()),
        });
    }
    (batches, SourcePosition::partitioned(offsets))
}

/// Cuts fetched records into batches.
struct Cutter {
    batch: SourceBatch,
    runs: Runs,
    max_line: usize,
}

impl Cutter {
    fn new(max_line: usize, meta: bool) -> Self {
        Cutter {
            batch: SourceBatch {
                meta: meta.then(Box::default),
                ..Default::default()
            },
            runs: Vec::new(),
            max_line,
        }
    }

    fn len(&self) -> usize {
        self.batch.seqs.len() + self.batch.rejected.len()
    }

    /// Adds `records` of `partition`, which end before offset `next`.
    fn add(&mut self, partition: i32, records: &[Record], next: i64) {
        let Some(first) = records.first() else {
            return;
        };
        let start = partitioned_seq(partition, first.offset);
        for r in records {
            self.push(partition, r);
        }
        let end = partitioned_seq(partition, next);
        match self.runs.last_mut() {
            Some(last) if last.1 == start => last.1 = end,
            _ => self.runs.push((start, end)),
        }
    }

    fn push(&mut self, partition: i32, r: &Record) {
        let seq = partitioned_seq(partition, r.offset);
        let value = r.value.as_deref().unwrap_or_default();
        let preview = || String::from_utf8_lossy(&value[..value.len().min(PREVIEW)]).into_owned();
        let reject = |reason: String| Rejected {
            seq,
            reason,
            preview: preview(),
        };
        if value.len() > self.max_line {
            let reason = format!(
                "the record is {} bytes, over the limit of {}; raise --max-line-bytes to accept it",
                value.len(),
                self.max_line
            );
            self.batch.rejected.push(reject(reason));
            return;
        }
        if let Err(e) = std::str::from_utf8(value) {
            let reason = format!(
                "the record's value is not valid UTF-8 (bad byte at offset {}); send UTF-8 text",
                e.valid_up_to()
            );
            self.batch.rejected.push(reject(reason));
            return;
        }
        self.batch.records.push_text(value);
        self.batch.seqs.push(seq);
        if let Some(meta) = &mut self.batch.meta {
            push_meta(meta, r);
        }
    }

    /// The batch so far, ending at `offsets`; `None` when it is empty.
    fn take(&mut self, offsets: &Offsets) -> Option<(SourceBatch, Logged)> {
        if self.len() == 0 {
            return None;
        }
        let meta = self.batch.meta.is_some();
        let mut batch = std::mem::replace(&mut self.batch, Cutter::new(self.max_line, meta).batch);
        let end = SourcePosition::partitioned(offsets.clone());
        batch.end_seq = end.seq;
        batch.end_partitions = end.partitions.clone();
        let runs = Arc::new(std::mem::take(&mut self.runs));
        batch.runs = Some(runs.clone());
        Some((batch, Logged { runs, end }))
    }
}

fn push_meta(meta: &mut RecordMeta, r: &Record) {
    meta.keys.push(r.key.clone());
    meta.timestamps.push(r.timestamp);
    meta.headers.push(r.headers.clone());
}

/// A fetch to one leader: its node, and the partitions and offsets asked.
type Request = (i32, Vec<(i32, i64)>);

/// The live reader: its connections, the partitions and their next offsets.
struct Reader {
    uri: KafkaUri,
    settings: Settings,
    shared: Arc<Shared>,
    cluster: Cluster,
    leaders: BTreeMap<i32, i32>,
    offsets: Offsets,
    max_line: usize,
    /// Whether batches carry each record's key, timestamp and headers.
    meta: bool,
    last_discovery: Instant,
    /// Since when the broker cannot be reached.
    outage: Option<Instant>,
    /// What the next fetch asks for.
    fetch_bytes: i32,
}

impl Reader {
    /// Reads until cancelled; `Err` is a lasting failure, worded for the user.
    fn run(&mut self, tx: &Sender<SourceEvent>, cancel: &AtomicBool) -> Result<(), String> {
        while !cancel.load(Ordering::Relaxed) {
            self.commit(tx);
            if self.last_discovery.elapsed() >= self.settings.discovery {
                self.discover(tx)?;
            }
            let fetched = match self.fetch_all() {
                Ok(f) => f,
                Err(e) if e.retriable() => {
                    self.wait_out(tx, &e, cancel)?;
                    continue;
                }
                Err(e) => return Err(format!("Kafka source `{}`: {e}", self.uri.canonical())),
            };
            if self.outage.take().is_some() {
                notice(
                    tx,
                    format!("Kafka topic `{}` is readable again", self.uri.topic),
                );
            }
            self.prefetch(&fetched);
            if !self.deliver(fetched, tx)? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// What to ask each leader for, from `offsets`, and how long each
    /// may wait.
    fn requests(&self, offsets: &Offsets) -> (Vec<Request>, Duration) {
        let wanted: Vec<i32> = offsets.keys().copied().collect();
        let leaders = by_leader(&self.leaders, &wanted);
        let wait = self.settings.max_wait / leaders.len().max(1) as u32;
        let requests = leaders
            .into_iter()
            .map(|(node, parts)| {
                let asked = parts
                    .iter()
                    .map(|p| (*p, offsets.get(p).copied().unwrap_or(0)))
                    .collect();
                (node, asked)
            })
            .collect();
        (requests, wait)
    }

    /// One fetch from every leader (the answers of the prefetch, when it
    /// asked for the same offsets).
    fn fetch_all(&mut self) -> Result<Vec<Fetched>, KafkaError> {
        let (requests, wait) = self.requests(&self.offsets);
        let mut all = Vec::new();
        for (node, asked) in requests {
            all.extend(self.cluster.fetch(
                node,
                &self.uri.topic,
                &asked,
                wait,
                self.fetch_bytes,
            )?);
        }
        Ok(all)
    }

    /// Sends the next fetch to every leader, for the offsets after
    /// `fetched`, before `fetched` is cut and delivered; not after a
    /// partition's error, which may move its offset.
    fn prefetch(&mut self, fetched: &[Fetched]) {
        if fetched.iter().any(|f| f.error.is_some()) {
            return;
        }
        let mut next = self.offsets.clone();
        for f in fetched {
            if let Some(at) = next.get_mut(&f.partition) {
                *at = (*at).max(f.next);
            }
        }
        self.fetch_bytes = self.fetch_bytes.saturating_mul(2).min(FETCH_BYTES);
        let (requests, wait) = self.requests(&next);
        for (node, asked) in requests {
            self.cluster
                .prefetch(node, &self.uri.topic, &asked, wait, self.fetch_bytes);
        }
    }

    /// Cuts fetched records into batches and sends them; `false` when the
    /// job is gone.
    fn deliver(&mut self, fetched: Vec<Fetched>, tx: &Sender<SourceEvent>) -> Result<bool, String> {
        let mut cutter = Cutter::new(self.max_line, self.meta);
        for f in fetched {
            if let Some(e) = f.error {
                self.partition_error(f.partition, &e, tx)?;
                continue;
            }
            for chunk in f.records.chunks(MAX_BATCH_RECORDS) {
                let next = match chunk.last() {
                    Some(last) if last.offset + 1 < f.next => last.offset + 1,
                    _ => f.next,
                };
                cutter.add(f.partition, chunk, next);
                self.offsets.insert(f.partition, next);
                if cutter.len() >= MAX_BATCH_RECORDS && !self.send(&mut cutter, tx) {
                    return Ok(false);
                }
            }
            if f.records.is_empty() && f.next > self.offsets.get(&f.partition).copied().unwrap_or(0)
            {
                // Only control records (transaction markers): move past them.
                self.offsets.insert(f.partition, f.next);
            }
        }
        Ok(self.send(&mut cutter, tx))
    }

    /// Sends the batch the cutter holds, logging its order first.
    fn send(&mut self, cutter: &mut Cutter, tx: &Sender<SourceEvent>) -> bool {
        let Some((batch, logged)) = cutter.take(&self.offsets) else {
            return true;
        };
        if let Ok(mut log) = self.shared.log.lock() {
            log.batches.push_back(logged);
        }
        tx.send(SourceEvent::Batch(batch)).is_ok()
    }

    /// A partition's fetch failed: a moved leader is looked up again, an
    /// offset that is gone (retention) starts over at the earliest one.
    fn partition_error(
        &mut self,
        partition: i32,
        e: &KafkaError,
        tx: &Sender<SourceEvent>,
    ) -> Result<(), String> {
        match e {
            KafkaError::Broker { code: 1, .. } => {
                let node = self.leaders.get(&partition).copied().unwrap_or(-1);
                let earliest = self
                    .cluster
                    .earliest(node, &self.uri.topic, &[partition])
                    .map_err(|e| e.to_string())?;
                let to = earliest.get(&partition).copied().unwrap_or(0);
                notice(
                    tx,
                    format!(
                        "Kafka topic `{}` partition {partition}: offset {} is gone (retention); going on at {to}, records in between are lost",
                        self.uri.topic,
                        self.offsets.get(&partition).copied().unwrap_or(0)
                    ),
                );
                self.offsets.insert(partition, to);
                Ok(())
            }
            e if e.retriable() => {
                self.last_discovery = Instant::now() - self.settings.discovery;
                Ok(())
            }
            e => Err(format!("Kafka source `{}`: {e}", self.uri.canonical())),
        }
    }

    /// Looks for new partitions (and moved leaders).
    fn discover(&mut self, tx: &Sender<SourceEvent>) -> Result<(), String> {
        self.last_discovery = Instant::now();
        let topic = match self.cluster.topic(&self.uri.topic) {
            Ok(Some(t)) => t,
            Ok(None) => return Err(format!("Kafka topic `{}` was deleted", self.uri.topic)),
            Err(_) => return Ok(()),
        };
        let new: Vec<i32> = topic
            .leaders
            .keys()
            .copied()
            .filter(|p| !self.offsets.contains_key(p))
            .collect();
        self.leaders = topic.leaders;
        for (node, parts) in by_leader(&self.leaders, &new) {
            let Ok(earliest) = self.cluster.earliest(node, &self.uri.topic, &parts) else {
                return Ok(());
            };
            for p in parts {
                self.offsets
                    .insert(p, earliest.get(&p).copied().unwrap_or(0));
                notice(
                    tx,
                    format!(
                        "Kafka topic `{}`: new partition {p}, read from its start",
                        self.uri.topic
                    ),
                );
            }
        }
        check_limits(&self.offsets, self.leaders.len())
    }

    /// The broker cannot be reached: says so once, then waits and
    /// reconnects until it can, or the job is cancelled.
    /// `Err` when the broker is back but refuses the connection's
    /// security (a rotated password, a new certificate): waiting longer
    /// will not help.
    fn wait_out(
        &mut self,
        tx: &Sender<SourceEvent>,
        e: &KafkaError,
        cancel: &AtomicBool,
    ) -> Result<(), String> {
        if self.outage.is_none() {
            self.outage = Some(Instant::now());
            notice(
                tx,
                format!(
                    "Kafka topic `{}` cannot be read ({e}); waiting for the broker",
                    self.uri.topic
                ),
            );
        }
        let until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < until && !cancel.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
        match self.cluster.reconnect(Duration::ZERO) {
            Ok(()) => self.last_discovery = Instant::now() - self.settings.discovery,
            Err(e @ KafkaError::Security(_)) => {
                return Err(format!("Kafka source `{}`: {e}", self.uri.canonical()));
            }
            Err(_) => {}
        }
        Ok(())
    }

    /// Commits a completed checkpoint's offsets to the group.
    fn commit(&mut self, tx: &Sender<SourceEvent>) {
        let Some(offsets) = self.shared.commit.lock().ok().and_then(|mut c| c.take()) else {
            return;
        };
        if let Err(e) = self
            .cluster
            .commit(&self.settings.group, &self.uri.topic, &offsets)
        {
            notice(
                tx,
                format!(
                    "cannot commit the checkpoint's offsets to group `{}`: {e}; the next checkpoint tries again",
                    self.settings.group
                ),
            );
        }
    }
}

fn notice(tx: &Sender<SourceEvent>, message: String) {
    let _ = tx.try_send(SourceEvent::Notice(message));
}

/// A replay of batches the source delivered before (or a sink recorded).
struct Replay {
    uri: KafkaUri,
    cluster: Cluster,
    leaders: BTreeMap<i32, i32>,
    max_line: usize,
    meta: bool,
}

impl Replay {
    fn run(&mut self, batches: &[Logged], tx: &Sender<SourceEvent>) -> Result<(), String> {
        for logged in batches {
            let mut cutter = Cutter::new(self.max_line, self.meta);
            for &(start, end) in logged.runs.iter() {
                self.read_run(start, end, &mut cutter)?;
            }
            let offsets = logged
                .end
                .partitions
                .as_deref()
                .cloned()
                .unwrap_or_default();
            let batch = match cutter.take(&offsets) {
                Some((mut batch, _)) => {
                    batch.runs = Some(logged.runs.clone());
                    batch
                }
                None => SourceBatch {
                    end_seq: logged.end.seq,
                    end_partitions: logged.end.partitions.clone(),
                    runs: Some(logged.runs.clone()),
                    ..Default::default()
                },
            };
            if tx.send(SourceEvent::Batch(batch)).is_err() {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Reads the records of one run, offsets `[a, b)` of one partition.
    fn read_run(&mut self, start: u64, end: u64, cutter: &mut Cutter) -> Result<(), String> {
        use crate::connector::position::partition_of;
        let (Some((p, a)), Some((_, b))) = (partition_of(start), partition_of(end)) else {
            return Ok(());
        };
        let mut at = a;
        let mut tries = 0;
        while at < b {
            let node = self.leaders.get(&p).copied().unwrap_or(-1);
            let fetched = self
                .cluster
                .fetch(
                    node,
                    &self.uri.topic,
                    &[(p, at)],
                    Duration::from_millis(100),
                    FETCH_BYTES,
                )
                .map_err(|e| format!("cannot replay Kafka topic `{}`: {e}", self.uri.topic))?;
            let Some(f) = fetched.into_iter().find(|f| f.partition == p) else {
                return Err(format!("the broker did not answer for partition {p}"));
            };
            if let Some(e) = f.error {
                return Err(format!(
                    "cannot replay Kafka topic `{}`: {e}",
                    self.uri.topic
                ));
            }
            let records: Vec<Record> = f.records.into_iter().filter(|r| r.offset < b).collect();
            let next = f.next.min(b);
            if next <= at {
                tries += 1;
                if tries > 50 {
                    return Err(format!(
                        "Kafka topic `{}` partition {p} no longer holds offsets {at}..{b} to replay",
                        self.uri.topic
                    ));
                }
                continue;
            }
            cutter.add(p, &records, next);
            at = next;
        }
        Ok(())
    }
}
