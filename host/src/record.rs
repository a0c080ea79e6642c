//! Record numbers, and how they are shown. A leaf: every area uses it.
//!
//! A line source (a file, a socket, stdin) numbers its records from 0 in
//! the order it reads them; people see them from 1. A partitioned source
//! (Kafka) numbers a record by its partition and offset, `1 << 63 |
//! partition << 47 | offset`, so a record keeps its number however the
//! partitions interleave when it is read again; people see `partition P
//! offset O`.

/// The top bit marks the record number of a partitioned source.
const PARTITIONED: u64 = 1 << 63;
/// Bits of the offset in a partitioned record number.
const OFFSET_BITS: u32 = 47;
/// The most partitions a partitioned source may have.
pub const MAX_PARTITIONS: i32 = 1 << 16;
/// The offsets past which a partitioned record cannot be numbered.
pub const MAX_OFFSET: i64 = 1 << OFFSET_BITS;

/// The record number of `offset` in `partition`. Callers keep
/// `partition < MAX_PARTITIONS` and `offset < MAX_OFFSET`.
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

/// A record number for people: `record 12` (1-based) for a line source,
/// `record at partition 3 offset 11` for a partitioned one.
pub fn shown(seq: u64) -> String {
    match partition_of(seq) {
        Some((p, o)) => format!("record at partition {p} offset {o}"),
        None => format!("record {}", seq + 1),
    }
}

/// Where a record is, for a dead letter: `{"seq": N}`, with `partition`
/// and `offset` for a partitioned source.
pub fn position_json(seq: u64) -> serde_json::Value {
    match partition_of(seq) {
        Some((p, o)) => serde_json::json!({ "seq": seq, "partition": p, "offset": o }),
        None => serde_json::json!({ "seq": seq }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitioned_record_numbers_round_trip() {
        for (p, o) in [(0, 0), (3, 17), (MAX_PARTITIONS - 1, MAX_OFFSET - 1)] {
            assert_eq!(partition_of(partitioned_seq(p, o)), Some((p, o)));
        }
        assert_eq!(partition_of(41), None);
        assert_eq!(shown(41), "record 42");
        assert_eq!(
            shown(partitioned_seq(2, 9)),
            "record at partition 2 offset 9"
        );
    }
}
