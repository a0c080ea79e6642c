//! Text framing shared by the line sources: cuts a byte stream into lines,
//! checks each (UTF-8, the length limit), numbers every record it reads,
//! good or rejected, so a record's position is stable, copies what it
//! consumes into the journal when the source cannot replay, and sends
//! batches of encoded records to the job.

use std::io::{self, BufRead, BufReader, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender, bounded};

use crate::connector::journal::JournalWriter;
use crate::connector::position::SourcePosition;
use crate::connector::{ConnectorError, SourceEvent, SourceOptions};
use crate::dataflow::message::{Rejected, SourceBatch};

/// Most records in one batch.
const MAX_BATCH_RECORDS: usize = 4096;
/// Most bytes in one batch (a batch may hold one longer line).
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// How much of a rejected line the log shows.
const PREVIEW: usize = 60;

/// Cuts a byte stream into checked lines and batches them.
pub(crate) struct Lines<R> {
    reader: BufReader<R>,
    max_line: usize,
    /// The current line when it spans reads.
    partial: Vec<u8>,
    /// The current line's length when it is over the limit.
    overlong: Option<usize>,
    pub(crate) seq: u64,
    pub(crate) offset: u64,
    batch: SourceBatch,
    /// Where consumed bytes are copied, for sources that cannot replay.
    pub(crate) journal: Option<JournalWriter>,
    /// Stop before this record number (replays).
    pub(crate) limit: Option<u64>,
}

impl<R: Read> Lines<R> {
    pub(crate) fn new(reader: BufReader<R>, max_line: usize) -> Self {
        Lines {
            reader,
            max_line,
            partial: Vec::new(),
            overlong: None,
            seq: 0,
            offset: 0,
            batch: SourceBatch::default(),
            journal: None,
            limit: None,
        }
    }

    pub(crate) fn start_at(&mut self, position: SourcePosition) {
        self.seq = position.seq;
        self.offset = position.offset;
        self.batch.end_seq = position.seq;
        self.batch.end_offset = position.offset;
    }

    fn journal(&mut self, bytes: &[u8]) -> Result<(), String> {
        match &mut self.journal {
            Some(j) => j.append(bytes).map_err(|e| {
                format!(
                    "cannot write the input journal: {e}; check the checkpoint directory's disk"
                )
            }),
            None => Ok(()),
        }
    }

    fn at_limit(&self) -> bool {
        self.limit.is_some_and(|l| self.seq >= l)
    }

    /// Reads to the end of the stream (or cancel), sending batches.
    /// `Err` is a read error, worded for the user.
    pub(crate) fn pump(
        &mut self,
        tx: &Sender<SourceEvent>,
        cancel: &AtomicBool,
    ) -> Result<(), String> {
        loop {
            if self.at_limit() {
                self.flush(tx);
                return Ok(());
            }
            if self.reader.buffer().is_empty() && !self.flush(tx) {
                return Ok(());
            }
            if cancel.load(Ordering::Relaxed) {
                return Ok(());
            }
            let available = match self.reader.fill_buf() {
                Ok(bytes) => bytes,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    self.end_stream(tx)?;
                    return Err(format!("source read failed: {e}"));
                }
            };
            if available.is_empty() {
                self.end_stream(tx)?;
                return Ok(());
            }
            match memchr::memchr(b'\n', available) {
                Some(i) => {
                    if let Some(j) = &mut self.journal {
                        j.append(&available[..=i]).map_err(|e| {
                            format!("cannot write the input journal: {e}; check the checkpoint directory's disk")
                        })?;
                    }
                    if self.partial.is_empty() && self.overlong.is_none() && i <= self.max_line {
                        let line = &available[..i];
                        Self::emit(&mut self.batch, self.seq, line, None);
                        self.seq += 1;
                    } else {
                        let piece = available[..i].to_vec();
                        self.append(&piece);
                        self.end_line();
                    }
                    self.reader.consume(i + 1);
                    self.offset += i as u64 + 1;
                    self.batch.end_seq = self.seq;
                    self.batch.end_offset = self.offset;
                }
                None => {
                    let n = available.len();
                    let piece = available.to_vec();
                    self.journal(&piece)?;
                    self.append(&piece);
                    self.reader.consume(n);
                    self.offset += n as u64;
                }
            }
            if (self.batch.records.len() >= MAX_BATCH_RECORDS
                || self.batch.records.buf.len() >= MAX_BATCH_BYTES)
                && !self.flush(tx)
            {
                return Ok(());
            }
        }
    }

    /// The stream ended: a last line without a newline still counts (and
    /// gets one in the journal, so a replay cuts it the same).
    fn end_stream(&mut self, tx: &Sender<SourceEvent>) -> Result<(), String> {
        if !(self.partial.is_empty() && self.overlong.is_none()) && self.journal.is_some() {
            self.journal(b"\n")?;
            self.offset += 1;
        }
        self.end_line();
        self.flush(tx);
        Ok(())
    }

    fn append(&mut self, piece: &[u8]) {
        match &mut self.overlong {
            Some(len) => *len += piece.len(),
            None if self.partial.len() + piece.len() > self.max_line => {
                // Keep only the start of an overlong line, for the log.
                self.overlong = Some(self.partial.len() + piece.len());
                let keep = PREVIEW.saturating_sub(self.partial.len()).min(piece.len());
                self.partial.extend_from_slice(&piece[..keep]);
                self.partial.truncate(PREVIEW);
            }
            None => self.partial.extend_from_slice(piece),
        }
    }

    /// Ends the line in `partial`, if any.
    fn end_line(&mut self) {
        if self.partial.is_empty() && self.overlong.is_none() {
            return;
        }
        let overlong = self.overlong.take();
        Self::emit(
            &mut self.batch,
            self.seq,
            &self.partial,
            overlong.map(|n| (n, self.max_line)),
        );
        self.partial.clear();
        self.seq += 1;
        self.batch.end_seq = self.seq;
        self.batch.end_offset = self.offset;
    }

    fn emit(batch: &mut SourceBatch, seq: u64, line: &[u8], overlong: Option<(usize, usize)>) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let preview = || {
            let end = line.len().min(PREVIEW);
            String::from_utf8_lossy(&line[..end]).into_owned()
        };
        if let Some((len, max)) = overlong {
            batch.rejected.push(Rejected {
                seq,
                reason: format!(
                    "the line is {len} bytes, over the limit of {max}; raise --max-line-bytes to accept it"
                ),
                preview: preview(),
            });
            return;
        }
        match std::str::from_utf8(line) {
            Ok(_) => {
                batch.records.push_text(line);
                batch.seqs.push(seq);
            }
            Err(e) => batch.rejected.push(Rejected {
                seq,
                reason: format!(
                    "the line is not valid UTF-8 (bad byte at offset {}); send UTF-8 text",
                    e.valid_up_to()
                ),
                preview: preview(),
            }),
        }
    }

    /// Sends the batch if it holds anything. `false` when the job is gone.
    fn flush(&mut self, tx: &Sender<SourceEvent>) -> bool {
        if self.batch.records.is_empty() && self.batch.rejected.is_empty() {
            return true;
        }
        let batch = std::mem::take(&mut self.batch);
        self.batch.end_seq = self.seq;
        self.batch.end_offset = self.offset;
        tx.send(SourceEvent::Batch(batch)).is_ok()
    }
}

/// Batches a source may have read ahead of the job.
const AHEAD: usize = 4;

/// Reads a whole stream on a thread of its own, from `at`, copying it into
/// `journal` if given; stops before record `until` when given.
pub(crate) fn spawn_lines<R: Read + Send + 'static>(
    name: &str,
    open: impl FnOnce() -> Result<R, String> + Send + 'static,
    at: SourcePosition,
    until: Option<u64>,
    options: &SourceOptions,
    journal: Option<JournalWriter>,
    cancel: Arc<AtomicBool>,
) -> Result<Receiver<SourceEvent>, ConnectorError> {
    let (tx, rx) = bounded(AHEAD);
    let max_line = options.max_line_bytes;
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let last = match open() {
                Ok(reader) => {
                    let mut lines =
                        Lines::new(BufReader::with_capacity(256 * 1024, reader), max_line);
                    lines.start_at(at);
                    lines.limit = until;
                    lines.journal = journal;
                    match lines.pump(&tx, &cancel) {
                        Ok(()) => SourceEvent::End,
                        Err(e) => SourceEvent::Failed(e),
                    }
                }
                Err(e) => SourceEvent::Failed(e),
            };
            send_last(&tx, last, &cancel);
        })
        .map_err(|e| {
            ConnectorError::Environment(format!("cannot start the source's thread: {e}"))
        })?;
    Ok(rx)
}

/// Sends the event that ends a source's stream, unless the job cancelled it.
pub(crate) fn send_last(tx: &Sender<SourceEvent>, last: SourceEvent, cancel: &AtomicBool) {
    if !cancel.load(Ordering::Relaxed) {
        let _ = tx.send(last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(input: &[u8], max_line_bytes: usize, buffer: usize) -> Vec<SourceBatch> {
        let (tx, rx) = crossbeam_channel::bounded(1000);
        let mut lines = Lines::new(BufReader::with_capacity(buffer, input), max_line_bytes);
        lines.pump(&tx, &AtomicBool::new(false)).expect("reads");
        drop(tx);
        rx.iter()
            .map(|e| match e {
                SourceEvent::Batch(b) => b,
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[test]
    fn lines_are_numbered_checked_and_batched() {
        for buffer in [1, 3, 7, 64 * 1024] {
            let batches = read_all(b"a b\r\nok\n\xff\xfe\ntoo long line\n\nlast", 8, buffer);
            let mut texts = Vec::new();
            let mut seqs: Vec<u64> = Vec::new();
            let mut rejected = Vec::new();
            for b in &batches {
                for i in 0..b.records.len() {
                    texts.push(String::from_utf8(b.records.text(i).to_vec()).expect("utf8"));
                }
                seqs.extend(&b.seqs);
                rejected.extend(b.rejected.iter().map(|r| r.seq));
            }
            assert_eq!(texts, ["a b", "ok", "", "last"], "buffer {buffer}");
            assert_eq!(seqs, [0, 1, 4, 5]);
            assert_eq!(rejected, [2, 3]);
            let last = batches.last().expect("a batch");
            assert_eq!(last.end_seq, 6);
            assert_eq!(last.end_offset, 30);
        }
    }
}
