//! The timeline of a timed (0.2.0) job: where each batch it ran ended, the
//! processing time it gave the batch and, for a tick, where the idle
//! timeout moved the watermark, with a mark where each checkpoint's
//! barrier went in. A job restored from a checkpoint (or restarted from
//! one after a failure) runs the input after it again in the same batches,
//! with the same processing times and ticks, so that its timers, windows,
//! TTLs and late rows come out as they did the first time: the replay is
//! deterministic, and the sinks, which leave out the lines they already
//! have, get the same lines.
//!
//! The file (`timeline` in the job's directory) is a sequence of 33-byte
//! entries: `u8 kind (0 batch, 1 checkpoint), u64 end-seq, u64 end-offset,
//! s64 processing-time, s64 idle-watermark` (`i64::MIN`: none; for a
//! checkpoint, end-seq is its id). A torn last entry (a crash while it was
//! written) is ignored.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::connector::position::SourcePosition;
use crate::dataflow::message::SourceBatch;

const ENTRY: usize = 33;
/// Past this size, a completed checkpoint compacts the file.
const COMPACT_AT: u64 = 4 << 20;

/// A batch as the job ran it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// The record number after it.
    pub end_seq: u64,
    /// The source offset after it.
    pub end_offset: u64,
    /// Its processing time.
    pub processing_time: i64,
    /// A tick's watermark.
    pub idle_watermark: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Batch(Mark),
    Checkpoint(u64),
}

/// A job's timeline: the file, and the batches to run again after a
/// restore.
pub struct Timeline {
    path: PathBuf,
    file: Option<File>,
    /// Recorded batches still to run again, in order.
    pending: VecDeque<Mark>,
    /// Records read that the next recorded batch has not taken yet.
    carry: SourceBatch,
}

fn encode(e: Entry) -> [u8; ENTRY] {
    let mut b = [0u8; ENTRY];
    let (kind, seq, offset, ptime, idle) = match e {
        Entry::Batch(m) => (
            0,
            m.end_seq,
            m.end_offset,
            m.processing_time,
            m.idle_watermark.unwrap_or(i64::MIN),
        ),
        Entry::Checkpoint(id) => (1, id, 0, 0, i64::MIN),
    };
    b[0] = kind;
    b[1..9].copy_from_slice(&seq.to_le_bytes());
    b[9..17].copy_from_slice(&offset.to_le_bytes());
    b[17..25].copy_from_slice(&ptime.to_le_bytes());
    b[25..33].copy_from_slice(&idle.to_le_bytes());
    b
}

fn decode(b: &[u8]) -> Option<Entry> {
    let u = |r: std::ops::Range<usize>| {
        b.get(r)
            .and_then(|s| s.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let i = |r: std::ops::Range<usize>| {
        b.get(r)
            .and_then(|s| s.try_into().ok())
            .map(i64::from_le_bytes)
    };
    match b.first()? {
        0 => Some(Entry::Batch(Mark {
            end_seq: u(1..9)?,
            end_offset: u(9..17)?,
            processing_time: i(17..25)?,
            idle_watermark: i(25..33).filter(|w| *w != i64::MIN),
        })),
        1 => Some(Entry::Checkpoint(u(1..9)?)),
        _ => None,
    }
}

fn read_all(path: &Path) -> std::io::Result<Vec<Entry>> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => f.read_to_end(&mut bytes)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(bytes.chunks_exact(ENTRY).map_while(decode).collect())
}

/// The batches recorded after checkpoint `from` (all of them for `None`,
/// a restore from the job's start).
fn after(entries: &[Entry], from: Option<u64>) -> VecDeque<Mark> {
    let start = match from {
        None => 0,
        Some(id) => match entries.iter().rposition(|e| *e == Entry::Checkpoint(id)) {
            Some(i) => i + 1,
            // Not recorded (a checkpoint of a job from before timelines):
            // nothing to run again as it was.
            None => entries.len(),
        },
    };
    entries[start..]
        .iter()
        .filter_map(|e| match e {
            Entry::Batch(m) => Some(*m),
            Entry::Checkpoint(_) => None,
        })
        .collect()
}

impl Timeline {
    /// The timeline in `dir`; a restored job (`restoring`) runs again the
    /// batches recorded after checkpoint `from` (or after its start), from
    /// source position `at`.
    pub fn open(
        dir: &Path,
        restoring: bool,
        from: Option<u64>,
        at: SourcePosition,
    ) -> Result<Self, String> {
        let path = dir.join("timeline");
        let pending = if restoring {
            let entries = read_all(&path)
                .map_err(|e| format!("cannot read the job's timeline `{}`: {e}", path.display()))?;
            after(&entries, from)
        } else {
            VecDeque::new()
        };
        Ok(Timeline {
            path,
            file: None,
            pending,
            carry: at_position(at),
        })
    }

    /// Whether recorded batches are still to run again.
    pub fn replaying(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Goes back to the batches recorded after checkpoint `from` (a restart
    /// from it, at source position `at`).
    pub fn rewind(&mut self, from: Option<u64>, at: SourcePosition) -> Result<(), String> {
        let entries = read_all(&self.path).map_err(|e| {
            format!(
                "cannot read the job's timeline `{}`: {e}",
                self.path.display()
            )
        })?;
        self.pending = after(&entries, from);
        self.carry = at_position(at);
        Ok(())
    }

    /// The recorded batches (ticks) due where the source already is.
    pub fn due(&mut self) -> Vec<(SourceBatch, bool)> {
        if self.pending.is_empty() {
            return Vec::new();
        }
        self.recut(SourceBatch::default())
    }

    fn append(&mut self, e: Entry) -> Result<(), String> {
        if self.file.is_none() {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(|e| {
                    format!(
                        "cannot open the job's timeline `{}`: {e}",
                        self.path.display()
                    )
                })?;
            self.file = Some(f);
        }
        if let Some(f) = self.file.as_mut() {
            f.write_all(&encode(e)).map_err(|e| {
                format!(
                    "cannot write the job's timeline `{}`: {e}",
                    self.path.display()
                )
            })?;
        }
        Ok(())
    }

    /// Records a batch the job runs for the first time.
    pub fn record(&mut self, batch: &SourceBatch) -> Result<(), String> {
        self.append(Entry::Batch(Mark {
            end_seq: batch.end_seq,
            end_offset: batch.end_offset,
            processing_time: batch.processing_time.unwrap_or(0),
            idle_watermark: batch.idle_watermark,
        }))
    }

    /// Records where checkpoint `id`'s barrier went in.
    pub fn record_checkpoint(&mut self, id: u64) -> Result<(), String> {
        self.append(Entry::Checkpoint(id))
    }

    /// Cuts what the source read into the batches recorded for it: each
    /// with its recorded processing time (and tick), `true` beside a batch
    /// run for the first time (to record). Past the recorded batches, the
    /// source's batches go on as they come.
    pub fn recut(&mut self, incoming: SourceBatch) -> Vec<(SourceBatch, bool)> {
        if self.pending.is_empty() {
            return vec![(incoming, true)];
        }
        append(&mut self.carry, incoming);
        let mut out = Vec::new();
        while let Some(m) = self.pending.front().copied() {
            if self.carry.end_seq < m.end_seq {
                break;
            }
            self.pending.pop_front();
            let mut b = split_to(&mut self.carry, m.end_seq);
            b.end_seq = m.end_seq;
            b.end_offset = m.end_offset;
            b.processing_time = Some(m.processing_time);
            b.idle_watermark = m.idle_watermark;
            out.push((b, false));
        }
        if self.pending.is_empty() {
            let rest = std::mem::take(&mut self.carry);
            if !rest.records.is_empty() || !rest.rejected.is_empty() {
                out.push((rest, true));
            } else if let Some((last, _)) = out.last_mut() {
                // Nothing new past the recorded batches but the position.
                last.end_seq = last.end_seq.max(rest.end_seq);
                last.end_offset = last.end_offset.max(rest.end_offset);
            }
        }
        out
    }

    /// The input ended: recorded batches it did not reach are dropped (the
    /// input is shorter than the first time), and what it read past the
    /// last one it reached runs as it is.
    pub fn finish(&mut self) -> Option<SourceBatch> {
        if self.pending.is_empty() {
            return None;
        }
        let mut out = self.due();
        self.pending.clear();
        let rest = std::mem::take(&mut self.carry);
        out.push((rest, true));
        let mut all = SourceBatch::default();
        for (b, _) in out {
            append(&mut all, b);
        }
        Some(all)
    }

    /// After a completed checkpoint: a large file keeps only what a restore
    /// from checkpoint `oldest` (the oldest one kept) or later needs.
    pub fn compact(&mut self, oldest: u64) -> Result<(), String> {
        let big = std::fs::metadata(&self.path).is_ok_and(|m| m.len() > COMPACT_AT);
        if !big || self.replaying() {
            return Ok(());
        }
        let entries = read_all(&self.path).map_err(|e| e.to_string())?;
        let Some(start) = entries.iter().position(|e| *e == Entry::Checkpoint(oldest)) else {
            return Ok(());
        };
        let tmp = self.path.with_extension("tmp");
        let bytes: Vec<u8> = entries[start..].iter().flat_map(|e| encode(*e)).collect();
        std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::rename(&tmp, &self.path))
            .map_err(|e| {
                format!(
                    "cannot compact the job's timeline `{}`: {e}",
                    self.path.display()
                )
            })?;
        self.file = None;
        Ok(())
    }
}

fn at_position(at: SourcePosition) -> SourceBatch {
    SourceBatch {
        end_seq: at.seq,
        end_offset: at.offset,
        ..SourceBatch::default()
    }
}

/// Adds `more`'s records (and position) to `carry`.
fn append(carry: &mut SourceBatch, more: SourceBatch) {
    for i in 0..more.records.len() {
        carry.records.push_text(more.records.text(i));
    }
    carry.seqs.extend_from_slice(&more.seqs);
    carry.rejected.extend(more.rejected);
    carry.end_seq = carry.end_seq.max(more.end_seq);
    carry.end_offset = carry.end_offset.max(more.end_offset);
}

/// Takes the records before record number `seq` out of `carry`.
fn split_to(carry: &mut SourceBatch, seq: u64) -> SourceBatch {
    let n = carry.seqs.partition_point(|s| *s < seq);
    let mut head = carry.prefix(n);
    let mut rest = SourceBatch {
        end_seq: carry.end_seq,
        end_offset: carry.end_offset,
        ..SourceBatch::default()
    };
    for i in n..carry.records.len() {
        rest.records.push_text(carry.records.text(i));
        rest.seqs.push(carry.seqs[i]);
    }
    let (early, late): (Vec<_>, Vec<_>) = std::mem::take(&mut carry.rejected)
        .into_iter()
        .partition(|r| r.seq < seq);
    head.rejected = early;
    rest.rejected = late;
    *carry = rest;
    head
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(seqs: std::ops::Range<u64>) -> SourceBatch {
        let mut b = SourceBatch::default();
        for s in seqs.clone() {
            b.records.push_text(format!("r{s}").as_bytes());
            b.seqs.push(s);
        }
        b.end_seq = seqs.end;
        b.end_offset = seqs.end * 3;
        b
    }

    #[test]
    fn a_restore_runs_the_recorded_batches_again_as_they_were() {
        let dir = std::env::temp_dir().join(format!("sluice-timeline-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let _ = std::fs::remove_file(dir.join("timeline"));
        let mut t = Timeline::open(&dir, false, None, SourcePosition::default()).expect("opens");
        let mut first = batch(0..3);
        first.processing_time = Some(100);
        t.record(&first).expect("records");
        t.record_checkpoint(1).expect("records");
        for (range, ptime) in [(3..5, 200), (5..9, 300)] {
            let mut b = batch(range);
            b.processing_time = Some(ptime);
            t.record(&b).expect("records");
        }
        let mut tick = batch(9..9);
        tick.processing_time = Some(400);
        tick.idle_watermark = Some(7);
        t.record(&tick).expect("records");

        let at = SourcePosition { seq: 3, offset: 9 };
        let mut r = Timeline::open(&dir, true, Some(1), at).expect("opens");
        // The source cuts the input differently this time.
        let mut got = r.recut(batch(3..4));
        assert!(got.is_empty());
        got.extend(r.recut(batch(4..9)));
        got.extend(r.recut(batch(9..11)));
        let cuts: Vec<_> = got
            .iter()
            .map(|(b, fresh)| (b.seqs.clone(), b.processing_time, b.idle_watermark, *fresh))
            .collect();
        assert_eq!(
            cuts,
            vec![
                (vec![3, 4], Some(200), None, false),
                (vec![5, 6, 7, 8], Some(300), None, false),
                (vec![], Some(400), Some(7), false),
                (vec![9, 10], None, None, true),
            ]
        );
        assert!(!r.replaying());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
