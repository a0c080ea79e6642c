//! What flows through a job: batches of records with barriers among them.
//! A source cuts its input into [`SourceBatch`]es; the job puts a
//! [`Barrier`] into the stream where a checkpoint is to be taken, and it
//! flows through every stage behind the batches before it, so each stage's
//! state is snapshotted at the same point of the input without the
//! pipeline being drained.

use std::ops::Range;
use std::sync::Arc;

use crate::connector::position::{Offsets, Runs, SourcePosition};
use crate::encoding::{BatchWriter, Field};
use crate::record::partition_of;

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

/// What a source knows of each good record besides its text: a Kafka
/// record's key, timestamp and headers (its partition and offset are in
/// its record number). The first stage of a `sluice:stream@0.2.0`
/// pipeline gets the record whole ([`SourceBatch::push_rows`]);
/// `sluice:stream@0.1.0` guests see the text only.
#[derive(Debug, Default, Clone)]
pub struct RecordMeta {
    /// Each record's key.
    pub keys: Vec<Option<bytes::Bytes>>,
    /// Each record's timestamp (Unix ms).
    pub timestamps: Vec<i64>,
    /// Each record's headers: name and value (none: null).
    pub headers: Vec<Vec<(String, Option<bytes::Bytes>)>>,
}

impl RecordMeta {
    fn push_from(&mut self, other: &RecordMeta, i: usize) {
        self.keys.push(other.keys.get(i).cloned().flatten());
        self.timestamps
            .push(other.timestamps.get(i).copied().unwrap_or(-1));
        self.headers
            .push(other.headers.get(i).cloned().unwrap_or_default());
    }
}

/// Records read in one go.
#[derive(Debug, Default)]
pub struct SourceBatch {
    /// The good records, encoded for the guest.
    pub records: BatchWriter,
    /// The record number of each good record.
    pub seqs: Vec<u64>,
    /// What the source knows of each good record besides its text, when it
    /// knows more (Kafka).
    pub meta: Option<Box<RecordMeta>>,
    /// Records refused on the way in, in order.
    pub rejected: Vec<Rejected>,
    /// The record number after this batch.
    pub end_seq: u64,
    /// Bytes of input consumed after this batch, from where the source started.
    pub end_offset: u64,
    /// A partitioned source's next offset in each partition after this batch.
    pub end_partitions: Option<Arc<Offsets>>,
    /// The order a partitioned source read the batch's records in (its
    /// partitions interleave by timing): what a sink records so that a
    /// replay after a crash reads them in the same order.
    pub runs: Option<Arc<Runs>>,
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
            partitions: self.end_partitions.clone(),
        }
    }

    /// Adds record `i` of `other`.
    fn push_from(&mut self, other: &SourceBatch, i: usize) {
        self.records.push_text(other.records.text(i));
        self.seqs.push(other.seqs[i]);
        if let Some(meta) = &other.meta {
            self.meta
                .get_or_insert_with(Default::default)
                .push_from(meta, i);
        }
    }

    /// Appends records `range` to `out` as the first stage of a 0.2.0
    /// pipeline gets them (`map` in `wit/sluice-stream@0.2.0`): a line
    /// source's record is its text, one value; a Kafka record is its value
    /// as text, then its key (bytes, or null), partition, offset and
    /// timestamp (ints), then each header's name (text) and value (bytes,
    /// or null).
    pub fn push_rows(&self, range: Range<usize>, out: &mut BatchWriter) {
        let Some(meta) = &self.meta else {
            return out.push_raw(self.records.slice(range.clone()), range.len());
        };
        for i in range {
            let (partition, offset) = (self.seqs.get(i).copied())
                .and_then(partition_of)
                .unwrap_or((-1, -1));
            let key = meta.keys.get(i).and_then(Option::as_deref);
            let headers = meta.headers.get(i).map_or(&[][..], Vec::as_slice);
            let fixed = [
                Field::Text(self.records.text(i)),
                key.map_or(Field::Null, Field::Bytes),
                Field::Int(partition.into()),
                Field::Int(offset),
                Field::Int(meta.timestamps.get(i).copied().unwrap_or(-1)),
            ];
            let pairs = headers.iter().flat_map(|(name, value)| {
                [
                    Field::Text(name.as_bytes()),
                    value.as_deref().map_or(Field::Null, Field::Bytes),
                ]
            });
            out.push_row(
                fixed.len() + 2 * headers.len(),
                fixed.into_iter().chain(pairs),
            );
        }
    }

    /// The first `n` records, without the position (but with the order
    /// they were read in, up to the last of them).
    pub fn prefix(&self, n: usize) -> SourceBatch {
        let mut p = SourceBatch::default();
        for i in 0..n {
            p.push_from(self, i);
        }
        if let (Some(runs), Some(&last)) = (&self.runs, p.seqs.last()) {
            let mut cut = Runs::new();
            for &(a, b) in runs.iter() {
                if (a..b).contains(&last) {
                    cut.push((a, last + 1));
                    break;
                }
                cut.push((a, b));
            }
            p.runs = Some(Arc::new(cut));
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
            end_partitions: self.end_partitions.clone(),
            runs: self.runs.clone(),
            processing_time: self.processing_time,
            idle_watermark: self.idle_watermark,
            ..Default::default()
        };
        for (i, seq) in self.seqs.iter().enumerate() {
            if !skip(*seq) {
                kept.push_from(&self, i);
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
            end_partitions: self.end_partitions.clone(),
            runs: self.runs.clone(),
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Barrier {
    /// The checkpoint's id.
    pub id: u64,
    /// Where the source was when the barrier entered the stream.
    pub position: SourcePosition,
}
