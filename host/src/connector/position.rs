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

/// The top bit marks the record number of a partitioned source.
const PARTITIONED: u64 = 1 << 63;
/// Bits of the offset in a partitioned record number.
const OFFSET_BITS: u32 = 47;
/// The most partitions a partitioned source may have.
pub const MAX_PARTITIONS: i32 = 1 << 16;
/// The offsets past which a partitioned record cannot be numbered.
pub const MAX_OFFSET: i64 = 1 << OFFSET_BITS;

/// The record number of `offset` in `partition`: `1 << 63 | partition << 47
/// | offset`. Callers keep `partition < MAX_PARTITIONS` and `offset <
/// MAX_OFFSET`.
pub fn partitioned_seq(partition: i32, offset: i64) -> u64 {
    PARTITIONED
        | (u64::from(partition as u32) << OFFSET_BITS)
        | (offset as u64 & (MAX_OFFSET as u64 - 1))
}

/// The partition and offset of a partitioned record number.
pub fn partition_of(seq: u64) -> Option<(i32, i64)> {
    (seq & PARTITIONED != 0).then(|| {
        (
            ((seq & !PARTITIONED) >> OFFSET_BITS) as i32,
            (seq & (MAX_OFFSET as u64 - 1)) as i64,
        )
    })
}

/// A record number for people: 1-based for a line source, `partition P
/// offset O` for a partitioned one.
pub fn shown_record(seq: u64) -> String {
    match partition_of(seq) {
        Some((p, o)) => format!("at partition {p} offset {o}"),
        None => (seq + 1).to_string(),
    }
}

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
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<Arc<Offsets>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitioned_record_numbers_round_trip() {
        for (p, o) in [(0, 0), (3, 17), (MAX_PARTITIONS - 1, MAX_OFFSET - 1)] {
            let seq = partitioned_seq(p, o);
            assert_eq!(partition_of(seq), Some((p, o)));
        }
        assert_eq!(partition_of(41), None);
        let at = SourcePosition::partitioned(Offsets::from([(0, 5), (1, 2)]));
        assert_eq!(at.seq, 7);
        assert!(at.may_replay(partitioned_seq(0, 5)));
        assert!(!at.may_replay(partitioned_seq(0, 4)));
        assert!(at.may_replay(partitioned_seq(2, 0)));
    }
}
