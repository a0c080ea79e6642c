//! Sources: newline-delimited text from a socket (as a client, like Flink's
//! `socketTextStream`), a file (bounded) or stdin (bounded).
//!
//! A source runs on its own thread, cuts its input into lines, checks each
//! (UTF-8, the length limit), and sends batches of encoded records to the
//! job. It numbers every record it reads, good or rejected, so a record's
//! position is stable. It owns no state beyond its read position and does
//! not know about guests or keyed state.

use std::io::{self, BufRead, BufReader, Read};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded};

use std::path::{Path, PathBuf};

use crate::checkpoint::SourcePosition;
use crate::journal::{JournalReader, JournalWriter};
use crate::row::BatchWriter;
use crate::spec::SourceSpec;

/// Most records in one batch.
const MAX_BATCH_RECORDS: usize = 4096;
/// Most bytes in one batch (a batch may hold one longer line).
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// How often a blocked socket read looks at the cancel flag.
const POLL: Duration = Duration::from_millis(100);
/// How much of a rejected line the log shows.
const PREVIEW: usize = 60;

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
}

/// What a source sends to its job.
#[derive(Debug)]
pub enum SourceEvent {
    /// More records.
    Batch(SourceBatch),
    /// The input ended (a bounded source); the job can finish.
    End,
    /// A lasting failure, worded for the user.
    Failed(String),
    /// Something the job should log (a reconnect, say).
    Notice(String),
}

/// Options every source shares.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// Longest accepted line, in bytes.
    pub max_line_bytes: usize,
    /// How long to keep trying to connect a socket at start.
    pub connect_timeout: Duration,
}

/// Where a source starts and where it keeps its journal.
#[derive(Debug, Clone, Default)]
pub struct StartAt {
    /// The first record's number and byte offset (of the file or journal).
    pub position: SourcePosition,
    /// The journal directory, for sources that cannot replay (socket, stdin).
    pub journal: Option<PathBuf>,
}

/// Starts reading `spec` on a new thread.
pub fn spawn(
    spec: &SourceSpec,
    options: SourceOptions,
    start: StartAt,
    cancel: Arc<AtomicBool>,
) -> io::Result<Receiver<SourceEvent>> {
    let (tx, rx) = bounded(4);
    let spec = spec.clone();
    let journal = match &start.journal {
        Some(dir) if !matches!(spec, SourceSpec::File(_)) => {
            Some(JournalWriter::open(dir, start.position.offset)?)
        }
        _ => None,
    };
    std::thread::Builder::new()
        .name("sluice-source".into())
        .spawn(move || {
            let outcome = match &spec {
                SourceSpec::File(path) => match open_at(path, start.position.offset) {
                    Ok(file) => {
                        let mut lines =
                            Lines::new(BufReader::with_capacity(256 * 1024, file), &options);
                        lines.start_at(start.position);
                        lines.pump(&tx, &cancel).map(|_| SourceEvent::End)
                    }
                    Err(e) => Err(format!(
                        "cannot open source `{spec}`: {e}; check the path and its permissions"
                    )),
                },
                SourceSpec::Stdin => {
                    let mut lines =
                        Lines::new(BufReader::with_capacity(64 * 1024, io::stdin()), &options);
                    lines.start_at(start.position);
                    lines.journal = journal;
                    lines.pump(&tx, &cancel).map(|_| SourceEvent::End)
                }
                SourceSpec::Socket { host, port } => socket(
                    &spec,
                    host,
                    *port,
                    &options,
                    start.position,
                    journal,
                    &tx,
                    &cancel,
                ),
            };
            let last = outcome.unwrap_or_else(SourceEvent::Failed);
            if !cancel.load(Ordering::Relaxed) {
                let _ = tx.send(last);
            }
        })?;
    Ok(rx)
}

fn open_at(path: &Path, offset: u64) -> io::Result<std::fs::File> {
    use std::io::{Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    if offset > 0 {
        let len = file.metadata()?.len();
        if len < offset {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the file is {len} bytes, shorter than the checkpoint's position {offset}"),
            ));
        }
        file.seek(SeekFrom::Start(offset))?;
    }
    Ok(file)
}

/// Where a replay reads from.
#[derive(Debug, Clone)]
pub enum ReplayFrom {
    /// The source file itself.
    File(PathBuf),
    /// The journal directory.
    Journal(PathBuf),
}

/// Replays records `from.seq..until` (to the end when `until` is `None`)
/// on a new thread; the stream ends with [`SourceEvent::End`].
pub fn spawn_replay(
    store: ReplayFrom,
    from: SourcePosition,
    until: Option<u64>,
    options: SourceOptions,
) -> io::Result<Receiver<SourceEvent>> {
    let reader: Box<dyn Read + Send> = match &store {
        ReplayFrom::File(path) => Box::new(open_at(path, from.offset)?),
        ReplayFrom::Journal(dir) => Box::new(JournalReader::open(dir, from.offset)?),
    };
    let (tx, rx) = bounded(4);
    std::thread::Builder::new()
        .name("sluice-replay".into())
        .spawn(move || {
            let mut lines = Lines::new(BufReader::with_capacity(256 * 1024, reader), &options);
            lines.start_at(from);
            lines.limit = until;
            let last = match lines.pump(&tx, &AtomicBool::new(false)) {
                Ok(()) => SourceEvent::End,
                Err(e) => SourceEvent::Failed(format!("replay failed: {e}")),
            };
            let _ = tx.send(last);
        })?;
    Ok(rx)
}

/// The journal's end after `from`: records and bytes up to its last
/// complete line (a torn last line from a crash does not count).
pub fn journal_end(dir: &Path, from: SourcePosition) -> io::Result<SourcePosition> {
    let mut reader = JournalReader::open(dir, from.offset)?;
    let mut end = from;
    let mut pending = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(end);
        }
        let mut last = 0;
        for i in memchr::memchr_iter(b'\n', &buf[..n]) {
            end.seq += 1;
            end.offset += pending + (i + 1 - last) as u64;
            pending = 0;
            last = i + 1;
        }
        pending += (n - last) as u64;
    }
}

/// Connects, reads until the peer goes away, reconnects with backoff; ends
/// only when cancelled or when the first connection cannot be made in time.
#[allow(clippy::too_many_arguments)]
fn socket(
    spec: &SourceSpec,
    host: &str,
    port: u16,
    options: &SourceOptions,
    start: SourcePosition,
    mut journal: Option<JournalWriter>,
    tx: &Sender<SourceEvent>,
    cancel: &AtomicBool,
) -> Result<SourceEvent, String> {
    let mut position = start;
    let mut first = true;
    loop {
        let deadline = first.then(|| Instant::now() + options.connect_timeout);
        let Some(stream) = connect(spec, host, port, deadline, tx, cancel)? else {
            return Ok(SourceEvent::End);
        };
        if !first {
            notice(tx, format!("source `{spec}` reconnected"));
        }
        first = false;
        stream
            .set_read_timeout(Some(POLL))
            .map_err(|e| format!("source `{spec}`: {e}"))?;
        let mut lines = Lines::new(BufReader::with_capacity(64 * 1024, stream), options);
        lines.start_at(position);
        lines.journal = journal.take();
        let ended = lines.pump(tx, cancel);
        position = SourcePosition {
            seq: lines.seq,
            offset: lines.offset,
        };
        journal = lines.journal.take();
        match ended {
            Ok(()) if cancel.load(Ordering::Relaxed) => return Ok(SourceEvent::End),
            Ok(()) => notice(
                tx,
                format!("source `{spec}` was closed by the peer; reconnecting"),
            ),
            Err(e) => notice(tx, format!("{e}; reconnecting")),
        }
    }
}

fn notice(tx: &Sender<SourceEvent>, message: String) {
    let _ = tx.send(SourceEvent::Notice(message));
}

/// Tries to connect until `deadline` (forever when `None`), backing off
/// from 100 ms to 2 s. `Ok(None)` when cancelled.
fn connect(
    spec: &SourceSpec,
    host: &str,
    port: u16,
    deadline: Option<Instant>,
    tx: &Sender<SourceEvent>,
    cancel: &AtomicBool,
) -> Result<Option<TcpStream>, String> {
    let started = Instant::now();
    let mut backoff = Duration::from_millis(100);
    let mut attempts = 0u32;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Ok(None);
        }
        attempts += 1;
        let error = match TcpStream::connect((host, port)) {
            Ok(stream) => return Ok(Some(stream)),
            Err(e) => e,
        };
        if let Some(deadline) = deadline
            && Instant::now() + backoff > deadline
        {
            return Err(format!(
                "cannot connect to source `{spec}` after {attempts} attempt(s) over {:.1} s: {error}; \
                 start the server first (e.g. `nc -lk {port}`) or pass another --source",
                started.elapsed().as_secs_f64()
            ));
        }
        if deadline.is_none() && attempts % 10 == 1 {
            notice(
                tx,
                format!("source `{spec}` is unreachable ({error}); retrying"),
            );
        }
        let until = Instant::now() + backoff;
        while Instant::now() < until {
            if cancel.load(Ordering::Relaxed) {
                return Ok(None);
            }
            std::thread::sleep(POLL.min(backoff));
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Cuts a byte stream into checked lines and batches them.
struct Lines<R> {
    reader: BufReader<R>,
    max_line: usize,
    /// The current line when it spans reads.
    partial: Vec<u8>,
    /// The current line's length when it is over the limit.
    overlong: Option<usize>,
    seq: u64,
    offset: u64,
    batch: SourceBatch,
    /// Where consumed bytes are copied, for sources that cannot replay.
    journal: Option<JournalWriter>,
    /// Stop before this record number (replays).
    limit: Option<u64>,
}

impl<R: Read> Lines<R> {
    fn new(reader: BufReader<R>, options: &SourceOptions) -> Self {
        Lines {
            reader,
            max_line: options.max_line_bytes,
            partial: Vec::new(),
            overlong: None,
            seq: 0,
            offset: 0,
            batch: SourceBatch::default(),
            journal: None,
            limit: None,
        }
    }

    fn start_at(&mut self, position: SourcePosition) {
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
    fn pump(&mut self, tx: &Sender<SourceEvent>, cancel: &AtomicBool) -> Result<(), String> {
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
                    if !(self.partial.is_empty() && self.overlong.is_none())
                        && self.journal.is_some()
                    {
                        self.journal(b"\n")?;
                        self.offset += 1;
                    }
                    self.end_line();
                    self.flush(tx);
                    return Err(format!("source read failed: {e}"));
                }
            };
            if available.is_empty() {
                // End of stream: a last line without a newline still counts
                // (and gets one in the journal, so a replay cuts it the same).
                if !(self.partial.is_empty() && self.overlong.is_none()) && self.journal.is_some() {
                    self.journal(b"\n")?;
                    self.offset += 1;
                }
                self.end_line();
                self.flush(tx);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(input: &[u8], max_line_bytes: usize, buffer: usize) -> Vec<SourceBatch> {
        let options = SourceOptions {
            max_line_bytes,
            connect_timeout: Duration::from_secs(1),
        };
        let (tx, rx) = bounded(1000);
        let mut lines = Lines::new(BufReader::with_capacity(buffer, input), &options);
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
