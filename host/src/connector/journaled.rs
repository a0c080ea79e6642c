//! A source that cannot read again (a socket, stdin), made replayable by
//! the journal: everything it reads is copied into the job's journal
//! before the records reach the job, replays read the journal, and a
//! restored job goes on after the journal's last complete line.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crossbeam_channel::Receiver;

use crate::connector::journal::{JournalReader, JournalWriter};
use crate::connector::lines::spawn_lines;
use crate::connector::{
    ConnectorError, Resumption, Runs, Source, SourceEvent, SourceOptions, SourcePosition,
};

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

/// A source that cannot read again (a socket, stdin), made replayable:
/// everything it reads is copied into the journal in `dir` before the
/// records reach the job, and replays read the journal.
pub struct Journaled {
    inner: Arc<dyn Source>,
    dir: PathBuf,
}

impl Journaled {
    /// Wraps `inner`, journaling into `dir`.
    pub fn new(inner: Arc<dyn Source>, dir: PathBuf) -> Self {
        Journaled { inner, dir }
    }

    /// The journal's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Source for Journaled {
    fn uri(&self) -> String {
        self.inner.uri()
    }

    fn replayable(&self) -> bool {
        true
    }

    fn check(&self, options: &SourceOptions) -> Result<(), ConnectorError> {
        self.inner.check(options)
    }

    fn start(
        &self,
        at: SourcePosition,
        options: &SourceOptions,
        _journal: Option<JournalWriter>,
        cancel: Arc<AtomicBool>,
    ) -> Result<Receiver<SourceEvent>, ConnectorError> {
        let writer = JournalWriter::open(&self.dir, at.offset).map_err(|e| {
            ConnectorError::Environment(format!(
                "cannot open the input journal in `{}`: {e}; check the checkpoint directory's disk",
                self.dir.display()
            ))
        })?;
        self.inner.start(at, options, Some(writer), cancel)
    }

    fn checkpointed(&self, at: &SourcePosition) {
        self.inner.checkpointed(at);
    }

    fn replay(
        &self,
        from: SourcePosition,
        until: Option<u64>,
        options: &SourceOptions,
    ) -> Result<Receiver<SourceEvent>, ConnectorError> {
        let reader = JournalReader::open(&self.dir, from.offset).map_err(|e| {
            ConnectorError::Environment(format!("cannot replay the input journal: {e}"))
        })?;
        let cancel = Arc::new(AtomicBool::new(false));
        spawn_lines(
            "sluice-replay",
            move || Ok(reader),
            from,
            until,
            options,
            None,
            cancel,
        )
    }

    fn resume(&self, from: SourcePosition, _written: &Runs) -> Result<Resumption, ConnectorError> {
        let end = journal_end(&self.dir, from.clone()).map_err(|e| {
            ConnectorError::Input(format!(
                "cannot read the input journal in `{}`: {e}; the records read after the checkpoint are lost",
                self.dir.display()
            ))
        })?;
        let replay = (end.seq > from.seq).then_some((from, end.seq));
        Ok(Resumption { live: end, replay })
    }
}
