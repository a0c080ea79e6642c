//! What the Kafka source and sink share: the URI
//! (`kafka://HOST:PORT[,HOST:PORT...]/TOPIC[?OPTION=VALUE&...]`), the
//! client (`client.rs`: one connection per broker over the protocol codecs
//! of `kafka-protocol`; `cluster.rs`: metadata, fetch, produce, group
//! offsets; `batch.rs`: record batches written and read in place;
//! `security.rs` and `sasl.rs`: TLS and SASL logins), and
//! how their errors are worded. The source is `connector/source/kafka.rs`,
//! the sink `connector/sink/kafka.rs`.

pub mod batch;
pub mod client;
pub mod cluster;
pub mod sasl;
pub mod security;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::connector::{ConnectorEnv, ConnectorError};
use crate::units::parse_duration;
pub use client::KafkaError;
pub use cluster::Cluster;
pub use security::Security;

/// Each request's deadline, unless `timeout=` says.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A parsed `kafka://` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaUri {
    /// The bootstrap brokers, `HOST:PORT`.
    pub brokers: Vec<String>,
    /// The topic.
    pub topic: String,
    /// `OPTION=VALUE` pairs of the query.
    pub options: BTreeMap<String, String>,
    /// TLS and SASL, from the security options ([`security::OPTIONS`]).
    pub security: Arc<Security>,
}

impl KafkaUri {
    /// Parses `uri` for a `what` ("source" or "sink") that takes the
    /// options `known` and the security options, which it reads (files,
    /// the password) as `env` allows.
    pub fn parse(
        uri: &str,
        what: &str,
        known: &[&str],
        env: &ConnectorEnv,
    ) -> Result<KafkaUri, ConnectorError> {
        let bad = |m: String| ConnectorError::Input(format!("{what} `{uri}` {m}"));
        let usage = "use `kafka://HOST:PORT/TOPIC`";
        let rest = uri.strip_prefix("kafka://").unwrap_or(uri);
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (hosts, topic) = rest
            .split_once('/')
            .ok_or_else(|| bad(format!("names no topic; {usage}")))?;
        if topic.is_empty() || topic.contains('/') || !valid_topic(topic) {
            return Err(bad(format!(
                "has a bad topic `{topic}`: use letters, digits, `.`, `_` and `-`; {usage}"
            )));
        }
        let mut brokers = Vec::new();
        for host in hosts.split(',').filter(|h| !h.is_empty()) {
            let (name, port) = host
                .rsplit_once(':')
                .ok_or_else(|| bad(format!("has a broker `{host}` without a port; {usage}")))?;
            if name.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(bad(format!("has a bad broker `{host}`; {usage}")));
            }
            if let Some(allowed) = &env.allowed_hosts
                && !allowed.iter().any(|a| a == host)
            {
                return Err(bad(format!(
                    "names broker `{host}`, which is not on the list of addresses this server allows"
                )));
            }
            brokers.push(host.to_string());
        }
        if brokers.is_empty() {
            return Err(bad(format!("names no broker; {usage}")));
        }
        let mut options = BTreeMap::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if !known.contains(&k) && !security::OPTIONS.contains(&k) {
                return Err(bad(format!(
                    "has an unknown option `{k}`; a Kafka {what} takes {}, {}",
                    known.join(", "),
                    security::OPTIONS.join(", ")
                )));
            }
            options.insert(k.to_string(), v.to_string());
        }
        let security = Security::from_options(&options, env)?;
        Ok(KafkaUri {
            brokers,
            topic: topic.to_string(),
            options,
            security: Arc::new(security),
        })
    }

    /// The URI as the job remembers it: brokers, topic, then the options
    /// in order.
    pub fn canonical(&self) -> String {
        let mut uri = format!("kafka://{}/{}", self.brokers.join(","), self.topic);
        for (i, (k, v)) in self.options.iter().enumerate() {
            uri.push(if i == 0 { '?' } else { '&' });
            uri.push_str(&format!("{k}={v}"));
        }
        uri
    }

    /// The duration option `key`, or `default`.
    pub fn duration(&self, key: &str, default: Duration) -> Result<Duration, ConnectorError> {
        match self.options.get(key) {
            None => Ok(default),
            Some(v) => parse_duration(v).map_err(|e| {
                ConnectorError::Input(format!("option `{key}` of `{}`: {e}", self.canonical()))
            }),
        }
    }

    /// Each request's deadline (`timeout=`).
    pub fn timeout(&self) -> Result<Duration, ConnectorError> {
        let t = self.duration("timeout", DEFAULT_TIMEOUT)?;
        if t.is_zero() {
            return Err(ConnectorError::Input(format!(
                "option `timeout` of `{}` must be more than 0",
                self.canonical()
            )));
        }
        Ok(t)
    }

    /// Connects to the cluster, retrying for `deadline`; a clear error
    /// naming the brokers when it cannot.
    pub fn connect(&self, deadline: Duration) -> Result<Cluster, ConnectorError> {
        let security = self.security.clone();
        Cluster::connect_secured(&self.brokers, security, self.timeout()?, deadline).map_err(|e| match e {
            KafkaError::Security(m) => ConnectorError::Input(format!("Kafka: {m}")),
            e => ConnectorError::Environment(format!(
                "cannot reach Kafka at `{}` (tried for {} ms): {e}; start the broker or fix the URI",
                self.brokers.join(","),
                deadline.as_millis()
            )),
        })
    }

    /// The topic's partitions and leaders; an input error when the topic
    /// does not exist (it is never created).
    pub fn topic(&self, cluster: &mut Cluster) -> Result<cluster::Topic, ConnectorError> {
        match cluster.topic(&self.topic) {
            Ok(Some(t)) if !t.leaders.is_empty() => Ok(t),
            Ok(_) => Err(ConnectorError::Input(format!(
                "Kafka topic `{}` does not exist on `{}`; create it first (Sluice does not create topics)",
                self.topic,
                self.brokers.join(",")
            ))),
            Err(e) => Err(environment(&e)),
        }
    }
}

/// A Kafka error as a connector error: a broker that cannot be reached is
/// the environment's fault.
pub fn environment(e: &KafkaError) -> ConnectorError {
    match e {
        // A login the broker refuses is the user's to fix.
        KafkaError::Security(m) => ConnectorError::Input(format!("Kafka: {m}")),
        e => ConnectorError::Environment(format!("Kafka: {e}")),
    }
}

fn valid_topic(topic: &str) -> bool {
    topic.len() <= 249
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Kafka's default partitioner: murmur2 of the key bytes, made positive,
/// modulo the partitions, as the Java client computes it; so a key goes to
/// the partition other Kafka clients send it to.
pub fn partition_for(key: &[u8], partitions: u32) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) % partitions.max(1)) as i32
}

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`).
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if let Some(&b) = tail.first() {
        h ^= u32::from(b);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_java_client() {
        // Values from Kafka's UtilsTest.testMurmur2 / DefaultPartitioner.
        assert_eq!(murmur2(b"21") as i32, -973_932_308);
        assert_eq!(murmur2(b"foobar") as i32, -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985_981_536);
        assert_eq!(
            murmur2(b"a-little-bit-longer-string") as i32,
            -1_486_304_829
        );
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58_897_971
        );
        assert_eq!(murmur2(b"abc") as i32, 479_470_107);
    }

    #[test]
    fn uris_parse_and_refuse_clearly() {
        let env = ConnectorEnv::default();
        let u = KafkaUri::parse(
            "kafka://127.0.0.1:9092,h:1/t-1?group=g",
            "source",
            &["group"],
            &env,
        )
        .expect("valid");
        assert_eq!(u.brokers, ["127.0.0.1:9092", "h:1"]);
        assert_eq!(u.topic, "t-1");
        assert_eq!(u.canonical(), "kafka://127.0.0.1:9092,h:1/t-1?group=g");
        for bad in [
            "kafka://h:1",
            "kafka://h/t",
            "kafka://h:1/",
            "kafka://h:1/t?x=1",
            "kafka:///t",
        ] {
            assert!(
                KafkaUri::parse(bad, "source", &["group"], &env).is_err(),
                "{bad}"
            );
        }
    }
}
