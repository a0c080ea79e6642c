//! Positions in a job's input and output, as checkpoints store them.

use serde::{Deserialize, Serialize};

/// A position in the input: records read and bytes consumed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePosition {
    /// Records read (the next record's number, 0-based).
    pub seq: u64,
    /// Bytes consumed, of the file or of the journal.
    pub offset: u64,
}

/// A position in the output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkPosition {
    /// Lines written.
    pub lines: u64,
    /// Bytes the sink holds (of its file, for a file sink).
    pub bytes: u64,
}
