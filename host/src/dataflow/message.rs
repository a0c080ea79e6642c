//! What flows through a job: batches of records with barriers among them.
//! A source cuts its input into [`SourceBatch`]es; the job puts a
//! [`Barrier`] into the stream where a checkpoint is to be taken, and it
//! flows through every stage behind the batches before it, so each stage's
//! state is snapshotted at the same point of the input without the
//! pipeline being drained.

use crate::connector::position::SourcePosition;
use crate::encoding::BatchWriter;

/// A record the source could not pass on.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// Its record number (0-based).
    pub seq: u64,
    /// Why, worded for the user.
    pub reason: String,
    /// The start of the line, lossily decoded, for the log.
    pub preview: String,
}

/// Records read in one go.
#[derive(Debug, Default)]
pub struct SourceBatch {
    /// The good records, encoded for the guest.
    pub records: BatchWriter,
    /// The record number of each good record.
    pub seqs: Vec<u64>,
    /// Records refused on the way in, in order.
    pub rejected: Vec<Rejected>,
    /// The record number after this batch.
    pub end_seq: u64,
    /// Bytes of input consumed after this batch, from where the source started.
    pub end_offset: u64,
    /// The processing time the job gave the batch (0.2.0 jobs), kept so a
    /// batch run again sees the same.
    pub processing_time: Option<i64>,
    /// For an empty batch the job makes while its source is idle: where the
    /// idle timeout moves the watermark.
    pub idle_watermark: Option<i64>,
}

impl SourceBatch {
    /// Where the source is after this batch.
    pub fn end(&self) -> SourcePosition {
        SourcePosition {
            seq: self.end_seq,
            offset: self.end_offset,
        }
    }

    /// The first `n` records, without the position.
    pub fn prefix(&self, n: usize) -> SourceBatch {
        let mut p = SourceBatch::default();
        for i in 0..n {
            p.records.push_text(self.records.text(i));
            p.seqs.push(self.seqs[i]);
        }
        p
    }

    /// The batch without the records for which `skip` holds.
    pub fn without(self, skip: impl Fn(u64) -> bool) -> SourceBatch {
        if !self.seqs.iter().any(|s| skip(*s)) {
            return self;
        }
        let mut kept = SourceBatch {
            end_seq: self.end_seq,
            end_offset: self.end_offset,
            processing_time: self.processing_time,
            idle_watermark: self.idle_watermark,
            ..Default::default()
        };
        for (i, seq) in self.seqs.iter().enumerate() {
            if !skip(*seq) {
                kept.records.push_text(self.records.text(i));
                kept.seqs.push(*seq);
            }
        }
        kept
    }

    /// A copy of the records and the position, without the rejected ones
    /// (already reported).
    pub fn again(&self) -> SourceBatch {
        SourceBatch {
            end_seq: self.end_seq,
            end_offset: self.end_offset,
            processing_time: self.processing_time,
            idle_watermark: self.idle_watermark,
            ..self.prefix(self.records.len())
        }
    }
}

/// Time as a batch sees it (0.2.0 stages): the processing time the host
/// gave it, and the event-time watermark before and after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// The batch's processing time (Unix ms).
    pub processing_time: i64,
    /// The watermark the batch's rows arrive at (lateness is judged by it).
    pub watermark: i64,
    /// The watermark after the batch: timers and windows up to it fire.
    pub advance_to: i64,
}

impl Default for Clock {
    fn default() -> Self {
        Clock {
            processing_time: 0,
            watermark: i64::MIN,
            advance_to: i64::MIN,
        }
    }
}

/// A checkpoint's mark in the stream: everything before it is in the
/// checkpoint, nothing after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Barrier {
    /// The checkpoint's id.
    pub id: u64,
    /// Where the source was when the barrier entered the stream.
    pub position: SourcePosition,
}
