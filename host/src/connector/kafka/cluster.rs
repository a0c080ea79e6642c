//! A Kafka cluster as Sluice's source and sink see it: the bootstrap
//! brokers, a connection per broker made when first needed, a topic's
//! partitions and their leaders, and the calls the connectors make —
//! fetch, produce, high watermarks, group offsets. A topic is looked up in
//! the metadata of all topics, never by name, because some brokers (Tansu)
//! create a topic that a metadata request names.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, FetchRequest, GroupId, ListOffsetsRequest, MetadataRequest,
    OffsetCommitRequest, OffsetFetchRequest, ProduceRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Record as ProtocolRecord;

pub use crate::connector::kafka::batch::Record;
use crate::connector::kafka::batch::read_batch;
use crate::connector::kafka::client::{Broker, Call, KafkaError, Sent, whole_batches};
use crate::connector::kafka::security::Security;

/// A topic's partitions and the node that leads each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topic {
    /// Partition → leader node (-1: none now).
    pub leaders: BTreeMap<i32, i32>,
}

/// A partition's fetched records.
#[derive(Debug, Default)]
pub struct Fetched {
    /// The partition.
    pub partition: i32,
    /// Data records, in offset order (control records and aborted
    /// transactions left out).
    pub records: Vec<Record>,
    /// The offset to fetch next.
    pub next: i64,
    /// The partition's high watermark.
    pub high_watermark: i64,
    /// An error for this partition.
    pub error: Option<KafkaError>,
}

/// A partition's base offset after a produce, or its error.
pub type Produced = (i32, Result<i64, KafkaError>);

/// The brokers of one cluster.
pub struct Cluster {
    bootstrap: Vec<String>,
    /// How every connection is secured: bootstrap, each broker, each
    /// reconnection.
    security: Arc<Security>,
    /// Each request's deadline.
    pub timeout: Duration,
    nodes: HashMap<i32, String>,
    connections: HashMap<i32, Broker>,
    /// A connection to any broker, for metadata.
    any: Option<Broker>,
    /// Per node, a fetch sent whose answer is still to be read.
    in_flight: HashMap<i32, InFlight>,
}

/// A fetch sent ahead ([`Cluster::prefetch`]).
struct InFlight {
    sent: Sent,
    topic: String,
    asked: Vec<(i32, i64)>,
    timeout: Duration,
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

impl Cluster {
    /// Connects to one of `bootstrap` over plain TCP, trying them in turn
    /// with backoff until `deadline` passes.
    pub fn connect(
        bootstrap: &[String],
        timeout: Duration,
        deadline: Duration,
    ) -> Result<Cluster, KafkaError> {
        Cluster::connect_secured(bootstrap, Arc::new(Security::none()), timeout, deadline)
    }

    /// As [`Cluster::connect`], every connection secured as `security`
    /// says. A refusal of the security settings (a wrong password, an
    /// untrusted certificate) is not retried.
    pub fn connect_secured(
        bootstrap: &[String],
        security: Arc<Security>,
        timeout: Duration,
        deadline: Duration,
    ) -> Result<Cluster, KafkaError> {
        let mut cluster = Cluster {
            bootstrap: bootstrap.to_vec(),
            security,
            timeout,
            nodes: HashMap::new(),
            connections: HashMap::new(),
            any: None,
            in_flight: HashMap::new(),
        };
        cluster.reconnect(deadline)?;
        Ok(cluster)
    }

    /// Drops every connection and connects to a bootstrap broker again,
    /// retrying until `deadline` passes.
    pub fn reconnect(&mut self, deadline: Duration) -> Result<(), KafkaError> {
        self.connections.clear();
        self.in_flight.clear();
        self.any = None;
        let until = Instant::now() + deadline;
        let mut wait = Duration::from_millis(50);
        loop {
            let mut last = None;
            for addr in &self.bootstrap {
                match Broker::connect(
                    addr,
                    self.timeout.min(Duration::from_secs(5)),
                    &self.security,
                ) {
                    Ok(b) => {
                        self.any = Some(b);
                        return Ok(());
                    }
                    Err(e @ KafkaError::Security(_)) => return Err(e),
                    Err(e) => last = Some(e),
                }
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(last.unwrap_or_else(|| {
                    KafkaError::Unreachable("no bootstrap broker given".into())
                }));
            }
            std::thread::sleep(wait.min(left));
            wait = (wait * 2).min(Duration::from_secs(1));
        }
    }

    fn any(&mut self) -> Result<&mut Broker, KafkaError> {
        if self.any.is_none() {
            self.reconnect(Duration::ZERO)?;
        }
        self.any
            .as_mut()
            .ok_or_else(|| KafkaError::Unreachable("no broker connected".into()))
    }

    /// The connection to node `node`, made when first needed; a fetch
    /// still in flight on it is read and dropped first.
    pub fn node(&mut self, node: i32) -> Result<&mut Broker, KafkaError> {
        if let Some(f) = self.in_flight.remove(&node)
            && let Some(broker) = self.connections.get_mut(&node)
            && broker.receive::<FetchRequest>(f.sent, f.timeout).is_err()
        {
            self.connections.remove(&node);
        }
        if !self.connections.contains_key(&node) {
            let addr = self.nodes.get(&node).cloned().ok_or_else(|| {
                KafkaError::Unreachable(format!("broker node {node} is not in the metadata"))
            })?;
            let connect_timeout = self.timeout.min(Duration::from_secs(5));
            let broker = Broker::connect(&addr, connect_timeout, &self.security)?;
            self.connections.insert(node, broker);
        }
        self.connections
            .get_mut(&node)
            .ok_or_else(|| KafkaError::Unreachable(format!("broker node {node} went away")))
    }

    /// Forgets the connection to `node` (it failed); the next call makes a
    /// new one.
    pub fn forget(&mut self, node: i32) {
        self.connections.remove(&node);
        self.in_flight.remove(&node);
        self.any = None;
    }

    /// The topic's partitions and leaders; `None` when the cluster has no
    /// such topic. Asks for every topic, so no broker creates this one.
    pub fn topic(&mut self, topic: &str) -> Result<Option<Topic>, KafkaError> {
        let timeout = self.timeout;
        let request = MetadataRequest::default()
            .with_topics(None)
            .with_allow_auto_topic_creation(false);
        let result = self.any()?.call(&request, timeout);
        let (response, _) = result.inspect_err(|_| self.any = None)?;
        self.nodes = response
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port)))
            .collect();
        let Some(t) = response
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
        else {
            return Ok(None);
        };
        KafkaError::check(t.error_code, &format!("metadata of topic `{topic}`"))?;
        Ok(Some(Topic {
            leaders: t
                .partitions
                .iter()
                .map(|p| (p.partition_index, p.leader_id.0))
                .collect(),
        }))
    }

    /// Fetches `partitions` (partition, offset) of `topic` from node
    /// `node`, waiting up to `max_wait` for data; the answer to a
    /// [`Cluster::prefetch`] of the same when there is one.
    pub fn fetch(
        &mut self,
        node: i32,
        topic: &str,
        partitions: &[(i32, i64)],
        max_wait: Duration,
        max_bytes: i32,
    ) -> Result<Vec<Fetched>, KafkaError> {
        let ahead = self.in_flight.remove(&node);
        let sent = match ahead {
            Some(f) if f.topic == topic && f.asked == partitions => f.sent,
            other => {
                if let Some(f) = other {
                    // Asked for other offsets: drop its answer.
                    self.in_flight.insert(node, f);
                }
                self.send_fetch(node, topic, partitions, max_wait, max_bytes)?
            }
        };
        let timeout = self.timeout + max_wait;
        let response = self.receive_from::<FetchRequest>(node, sent, timeout)?;
        KafkaError::check(response.error_code, "fetch")?;
        Ok(fetched(response, topic, partitions))
    }

    /// Sends the fetch [`Cluster::fetch`] will make with the same
    /// arguments now, so that the broker reads while the caller works.
    /// Any other call on `node` before that drops it. An error here is
    /// left for that fetch to meet.
    pub fn prefetch(
        &mut self,
        node: i32,
        topic: &str,
        partitions: &[(i32, i64)],
        max_wait: Duration,
        max_bytes: i32,
    ) {
        if let Ok(sent) = self.send_fetch(node, topic, partitions, max_wait, max_bytes) {
            self.in_flight.insert(
                node,
                InFlight {
                    sent,
                    topic: topic.to_string(),
                    asked: partitions.to_vec(),
                    timeout: self.timeout + max_wait,
                },
            );
        }
    }

    fn send_fetch(
        &mut self,
        node: i32,
        topic: &str,
        partitions: &[(i32, i64)],
        max_wait: Duration,
        max_bytes: i32,
    ) -> Result<Sent, KafkaError> {
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(max_wait.as_millis().clamp(1, 30_000) as i32)
            .with_min_bytes(1)
            .with_max_bytes(max_bytes)
            .with_isolation_level(1)
            .with_session_epoch(-1)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(name(topic))
                    .with_partitions(
                        partitions
                            .iter()
                            .map(|&(p, offset)| {
                                FetchPartition::default()
                                    .with_partition(p)
                                    .with_fetch_offset(offset)
                                    .with_current_leader_epoch(-1)
                                    .with_last_fetched_epoch(-1)
                                    .with_log_start_offset(-1)
                                    .with_partition_max_bytes(max_bytes)
                            })
                            .collect(),
                    ),
            ]);
        self.send_to(node, &request)
    }

    /// Sends `request` to node `node` without waiting for the answer; the
    /// connection is forgotten if it fails.
    fn send_to<R: Call>(&mut self, node: i32, request: &R) -> Result<Sent, KafkaError> {
        let timeout = self.timeout;
        let result = self.node(node)?.send(request, timeout);
        result.inspect_err(|_| self.forget(node))
    }

    /// The answer to what [`Cluster::send_to`] sent on node `node`; the
    /// connection is forgotten if it fails.
    fn receive_from<R: Call>(
        &mut self,
        node: i32,
        sent: Sent,
        timeout: Duration,
    ) -> Result<R::Response, KafkaError> {
        let broker = self
            .connections
            .get_mut(&node)
            .ok_or_else(|| KafkaError::Unreachable(format!("broker node {node} went away")))?;
        let result = broker.receive::<R>(sent, timeout);
        result.map(|(r, _)| r).inspect_err(|_| self.forget(node))
    }

    /// Produces one encoded record batch per partition to node `node`;
    /// each partition's base offset, or its error.
    pub fn produce(
        &mut self,
        node: i32,
        topic: &str,
        batches: Vec<(i32, Bytes)>,
    ) -> Result<Vec<Produced>, KafkaError> {
        let sent = self.send_produce(node, topic, batches)?;
        self.produced(node, topic, sent)
    }

    /// Sends a [`Cluster::produce`] without waiting for its answer, which
    /// [`Cluster::produced`] reads; no other call may go to `node` in
    /// between.
    pub fn send_produce(
        &mut self,
        node: i32,
        topic: &str,
        batches: Vec<(i32, Bytes)>,
    ) -> Result<Sent, KafkaError> {
        let timeout = self.timeout;
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(timeout.as_millis().min(i32::MAX as u128) as i32)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(name(topic))
                    .with_partition_data(
                        batches
                            .into_iter()
                            .map(|(p, records)| {
                                PartitionProduceData::default()
                                    .with_index(p)
                                    .with_records(Some(records))
                            })
                            .collect(),
                    ),
            ]);
        self.send_to(node, &request)
    }

    /// The answer to a produce [`Cluster::send_produce`] sent.
    pub fn produced(
        &mut self,
        node: i32,
        topic: &str,
        sent: Sent,
    ) -> Result<Vec<Produced>, KafkaError> {
        let response = self.receive_from::<ProduceRequest>(node, sent, self.timeout)?;
        let mut out = Vec::new();
        for t in response.responses {
            for p in t.partition_responses {
                let what = format!("produce to `{topic}` partition {}", p.index);
                let result = KafkaError::check(p.error_code, &what).map(|()| p.base_offset);
                out.push((p.index, result));
            }
        }
        Ok(out)
    }

    /// The earliest offset of each partition led by `node`.
    pub fn earliest(
        &mut self,
        node: i32,
        topic: &str,
        partitions: &[i32],
    ) -> Result<BTreeMap<i32, i64>, KafkaError> {
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(name(topic))
                    .with_partitions(
                        partitions
                            .iter()
                            .map(|&p| {
                                ListOffsetsPartition::default()
                                    .with_partition_index(p)
                                    .with_current_leader_epoch(-1)
                                    .with_timestamp(-2)
                            })
                            .collect(),
                    ),
            ]);
        let timeout = self.timeout;
        let result = self.node(node)?.call(&request, timeout);
        let (response, _) = result.inspect_err(|_| self.forget(node))?;
        let mut out = BTreeMap::new();
        for t in response.topics {
            for p in t.partitions {
                let what = format!(
                    "earliest offset of `{topic}` partition {}",
                    p.partition_index
                );
                KafkaError::check(p.error_code, &what)?;
                out.insert(p.partition_index, p.offset.max(0));
            }
        }
        Ok(out)
    }

    /// The end (high watermark) of each partition led by `node`, from a
    /// fetch at its start: a fetch's high watermark is right on every
    /// broker, a ListOffsets "latest" is not on all (Tansu).
    pub fn ends(
        &mut self,
        node: i32,
        topic: &str,
        partitions: &[i32],
    ) -> Result<BTreeMap<i32, i64>, KafkaError> {
        let starts: Vec<(i32, i64)> = self
            .earliest(node, topic, partitions)?
            .into_iter()
            .collect();
        let fetched = self.fetch(node, topic, &starts, Duration::from_millis(1), 1)?;
        let mut out = BTreeMap::new();
        for f in fetched {
            if let Some(e) = f.error {
                return Err(e);
            }
            out.insert(f.partition, f.high_watermark.max(0));
        }
        Ok(out)
    }

    /// The node that coordinates consumer group `group`.
    pub fn coordinator(&mut self, group: &str) -> Result<i32, KafkaError> {
        let request = FindCoordinatorRequest::default()
            .with_key(StrBytes::from_string(group.to_string()))
            .with_key_type(0);
        let timeout = self.timeout;
        let result = self.any()?.call(&request, timeout);
        let (response, _) = result.inspect_err(|_| self.any = None)?;
        KafkaError::check(
            response.error_code,
            &format!("the coordinator of group `{group}`"),
        )?;
        self.nodes.insert(
            response.node_id.0,
            format!("{}:{}", response.host, response.port),
        );
        Ok(response.node_id.0)
    }

    /// Commits `offsets` (the next offset to read, per partition) of
    /// `topic` for group `group`, without joining it, as Flink does.
    pub fn commit(
        &mut self,
        group: &str,
        topic: &str,
        offsets: &BTreeMap<i32, i64>,
    ) -> Result<(), KafkaError> {
        let node = self.coordinator(group)?;
        let request = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
            .with_generation_id_or_member_epoch(-1)
            .with_member_id(StrBytes::from_static_str(""))
            .with_topics(vec![
                OffsetCommitRequestTopic::default()
                    .with_name(name(topic))
                    .with_partitions(
                        offsets
                            .iter()
                            .map(|(&p, &o)| {
                                OffsetCommitRequestPartition::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(o)
                                    .with_committed_leader_epoch(-1)
                            })
                            .collect(),
                    ),
            ]);
        let timeout = self.timeout;
        let result = self.node(node)?.call(&request, timeout);
        let (response, _) = result.inspect_err(|_| self.forget(node))?;
        for t in response.topics {
            for p in t.partitions {
                KafkaError::check(
                    p.error_code,
                    &format!("commit of group `{group}` partition {}", p.partition_index),
                )?;
            }
        }
        Ok(())
    }

    /// The offsets group `group` committed for `partitions` of `topic`
    /// (partitions without a commit left out).
    pub fn committed(
        &mut self,
        group: &str,
        topic: &str,
        partitions: &[i32],
    ) -> Result<BTreeMap<i32, i64>, KafkaError> {
        let node = self.coordinator(group)?;
        let request = OffsetFetchRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
            .with_topics(Some(vec![
                OffsetFetchRequestTopic::default()
                    .with_name(name(topic))
                    .with_partition_indexes(partitions.to_vec()),
            ]));
        let timeout = self.timeout;
        let result = self.node(node)?.call(&request, timeout);
        let (response, _) = result.inspect_err(|_| self.forget(node))?;
        KafkaError::check(response.error_code, &format!("offsets of group `{group}`"))?;
        let mut out = BTreeMap::new();
        for t in response.topics {
            for p in t.partitions {
                if p.error_code == 0 && p.committed_offset >= 0 {
                    out.insert(p.partition_index, p.committed_offset);
                }
            }
        }
        Ok(out)
    }
}

impl Cluster {
    /// Creates `topic` with `partitions` partitions (for tests and tools:
    /// the connectors never create topics).
    pub fn create_topic(&mut self, topic: &str, partitions: i32) -> Result<(), KafkaError> {
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(self.timeout.as_millis().min(60_000) as i32)
            .with_topics(vec![
                CreatableTopic::default()
                    .with_name(name(topic))
                    .with_num_partitions(partitions)
                    .with_replication_factor(1),
            ]);
        let timeout = self.timeout;
        let result = self.any()?.call(&request, timeout);
        let (response, _) = result.inspect_err(|_| self.any = None)?;
        for t in response.topics {
            KafkaError::check(t.error_code, &format!("create topic `{topic}`"))?;
        }
        Ok(())
    }
}

/// A record to write with [`encode_records`] (tests and tools; the sink
/// writes its batches in place).
#[derive(Debug, Clone, Default)]
pub struct NewRecord {
    /// Its key.
    pub key: Option<Bytes>,
    /// Its value.
    pub value: Bytes,
    /// Its timestamp (Unix ms).
    pub timestamp: i64,
    /// Its headers: name and value (none: null).
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// Encodes records (key, value, headers) with one timestamp as one
/// uncompressed record batch, for a produce request.
pub fn encode_batch(
    records: impl IntoIterator<Item = (Option<Bytes>, Bytes, Vec<(String, Bytes)>)>,
    timestamp: i64,
) -> Result<Bytes, KafkaError> {
    encode_records(records.into_iter().map(|(key, value, headers)| NewRecord {
        key,
        value,
        timestamp,
        headers: headers.into_iter().map(|(k, v)| (k, Some(v))).collect(),
    }))
}

/// Encodes records as one uncompressed record batch, for a produce request.
pub fn encode_records(records: impl IntoIterator<Item = NewRecord>) -> Result<Bytes, KafkaError> {
    let records: Vec<ProtocolRecord> = records
        .into_iter()
        .enumerate()
        .map(|(i, r)| ProtocolRecord {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: kafka_protocol::records::TimestampType::Creation,
            offset: i as i64,
            // One batch (kafka-protocol cuts where `offset - sequence`
            // changes), base sequence -1.
            sequence: (i as i32).wrapping_sub(1),
            timestamp: r.timestamp,
            key: r.key,
            value: Some(r.value),
            headers: r
                .headers
                .into_iter()
                .map(|(k, v)| (StrBytes::from_string(k), v))
                .collect(),
        })
        .collect();
    let mut buf = bytes::BytesMut::with_capacity(
        records
            .iter()
            .map(|r| r.value.as_ref().map_or(0, |v| v.len()) + 32)
            .sum(),
    );
    kafka_protocol::records::RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &kafka_protocol::records::RecordEncodeOptions {
            version: 2,
            compression: kafka_protocol::records::Compression::None,
        },
    )
    .map_err(|e| KafkaError::Protocol(format!("cannot encode a record batch: {e}")))?;
    Ok(buf.freeze())
}

/// A fetch response's partitions, their records decoded.
fn fetched(
    response: kafka_protocol::messages::FetchResponse,
    topic: &str,
    partitions: &[(i32, i64)],
) -> Vec<Fetched> {
    let asked: HashMap<i32, i64> = partitions.iter().copied().collect();
    let mut out = Vec::new();
    for t in response.responses {
        for p in t.partitions {
            let from = asked.get(&p.partition_index).copied().unwrap_or(0);
            let mut fetched = Fetched {
                partition: p.partition_index,
                next: from,
                high_watermark: p.high_watermark,
                ..Default::default()
            };
            let what = format!("fetch of `{topic}` partition {}", p.partition_index);
            match KafkaError::check(p.error_code, &what) {
                Err(e) => fetched.error = Some(e),
                Ok(()) => {
                    let aborted = p
                        .aborted_transactions
                        .unwrap_or_default()
                        .iter()
                        .map(|a| (a.first_offset, a.producer_id.0))
                        .collect();
                    if let Err(e) = decode(p.records, from, aborted, &mut fetched) {
                        fetched.error = Some(KafkaError::Protocol(format!(
                            "cannot read the records of `{topic}` partition {} at offset {}: {e}",
                            p.partition_index, fetched.next
                        )));
                    }
                }
            }
            out.push(fetched);
        }
    }
    out
}

/// Decodes a partition's fetched batches into `fetched`, leaving out
/// control records and the records of aborted transactions (`aborted`:
/// (first offset, producer id), as the fetch response lists them).
fn decode(
    records: Option<Bytes>,
    from: i64,
    mut aborted: Vec<(i64, i64)>,
    fetched: &mut Fetched,
) -> Result<(), String> {
    aborted.sort_unstable();
    let mut aborted = aborted.into_iter().peekable();
    let mut aborting: Vec<i64> = Vec::new();
    for batch in whole_batches(records.unwrap_or_default()) {
        let start = fetched.records.len();
        let info = read_batch(&batch, &mut fetched.records)?;
        let mut kept = start;
        for i in start..fetched.records.len() {
            let offset = fetched.records[i].offset;
            if offset < from {
                continue;
            }
            while let Some(&(first, producer)) = aborted.peek() {
                if first > offset {
                    break;
                }
                aborting.push(producer);
                aborted.next();
            }
            fetched.next = offset + 1;
            if info.control {
                // A transaction's end: an abort marker ends its skipping.
                let key = fetched.records[i].key.as_ref();
                if key.is_some_and(|k| k.get(2..4) == Some(&[0, 0])) {
                    aborting.retain(|p| *p != info.producer_id);
                }
                continue;
            }
            if info.transactional && aborting.contains(&info.producer_id) {
                continue;
            }
            fetched.records.swap(kept, i);
            kept += 1;
        }
        fetched.records.truncate(kept);
    }
    Ok(())
}
