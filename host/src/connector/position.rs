//! Positions in a job's input and output, as checkpoints store them, and
//! the record numbers of a partitioned source.
//!
//! A line source (a file, a journal) is at a record number and a byte
//! offset. A partitioned source (Kafka) is at an offset in each of its
//! partitions; its records are numbered by partition and offset
//! ([`partitioned_seq`]), so a record keeps its number however the
//! partitions interleave when it is read again.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use crate::record::{MAX_OFFSET, MAX_PARTITIONS, partition_of, partitioned_seq};

/// The next offset to read in each partition of a partitioned source.
pub type Offsets = BTreeMap<i32, i64>;

/// The order records were read in, as runs of record numbers `[from,
/// to)`: for a partitioned source, a run is offsets of one partition.
pub type Runs = Vec<(u64, u64)>;

/// A position in the input.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePosition {
    /// Records read (the next record's number, 0-based); for a partitioned
    /// source, the sum of its partitions' offsets.
    pub seq: u64,
    /// Bytes consumed, of the file or of the journal.
    pub offset: u64,
    /// A partitioned source's next offset in each partition (absent for
    /// line sources, and in checkpoints older than partitioned sources).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "offsets")]
    pub partitions: Option<Arc<Offsets>>,
}

impl SourcePosition {
    /// The position of a partitioned source at `offsets`.
    pub fn partitioned(offsets: Offsets) -> Self {
        SourcePosition {
            seq: offsets.values().map(|o| *o as u64).sum(),
            offset: 0,
            partitions: Some(Arc::new(offsets)),
        }
    }

    /// Whether record `seq` comes after this position, so a replay from
    /// here may read it again.
    pub fn may_replay(&self, seq: u64) -> bool {
        match (partition_of(seq), &self.partitions) {
            (Some((p, o)), Some(offsets)) => offsets.get(&p).is_none_or(|at| o >= *at),
            (Some(_), None) => true,
            (None, _) => seq >= self.seq,
        }
    }
}

/// A position in the output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkPosition {
    /// Lines written.
    pub lines: u64,
    /// Bytes the sink holds (of its file, for a file sink).
    pub bytes: u64,
    /// A partitioned sink's (Kafka's) end offset in each partition at the
    /// checkpoint: where it looks for what it wrote after it.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "offsets")]
    pub partitions: Option<Arc<Offsets>>,
}

/// Offsets in JSON: an object from partition (a string, as JSON keys are)
/// to offset, `{"0": 17, "1": 5}`. Written by hand because the manifest
/// flattens positions, and a flattened map cannot read numeric keys.
mod offsets {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Offsets;

    pub fn serialize<S: Serializer>(v: &Option<Arc<Offsets>>, s: S) -> Result<S::Ok, S::Error> {
        let shown: Option<BTreeMap<String, i64>> = v
            .as_ref()
            .map(|o| o.iter().map(|(p, o)| (p.to_string(), *o)).collect());
        shown.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Arc<Offsets>>, D::Error> {
        let shown: Option<BTreeMap<String, i64>> = Option::deserialize(d)?;
        let Some(shown) = shown else {
            return Ok(None);
        };
        let mut out = Offsets::new();
        for (p, o) in shown {
            let p = p
                .parse()
                .map_err(|_| serde::de::Error::custom(format!("`{p}` is not a partition")))?;
            out.insert(p, o);
        }
        Ok(Some(Arc::new(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitioned_positions_know_what_a_replay_reads() {
        let at = SourcePosition::partitioned(Offsets::from([(0, 5), (1, 2)]));
        assert_eq!(at.seq, 7);
        assert!(at.may_replay(partitioned_seq(0, 5)));
        assert!(!at.may_replay(partitioned_seq(0, 4)));
        assert!(at.may_replay(partitioned_seq(2, 0)));
    }

    #[test]
    fn offsets_survive_a_flattened_json_round_trip() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Entry {
            uri: String,
            #[serde(flatten)]
            position: SourcePosition,
        }
        let e = Entry {
            uri: "kafka://h:1/t".into(),
            position: SourcePosition::partitioned(Offsets::from([(0, 5), (12, 2)])),
        };
        let json = serde_json::to_string(&e).expect("json");
        assert!(json.contains(r#""partitions":{"0":5,"12":2}"#), "{json}");
        assert_eq!(serde_json::from_str::<Entry>(&json).expect("back"), e);
        let old: Entry = serde_json::from_str(r#"{"uri":"-","seq":3,"offset":9}"#).expect("old");
        assert_eq!(old.position.partitions, None);
    }
}
