//! Sinks: where a job's output lines go — stdout (`print`), a file, or
//! nowhere (`discard`). A sink receives whole blocks of formatted lines and
//! flushes once per batch, so interactive jobs show output at once without
//! a write per line.

use std::fs::File;
use std::io::{self, BufWriter, Write};

use crate::spec::SinkSpec;

/// An opened sink.
pub enum Sink {
    /// Standard output.
    Print(io::Stdout),
    /// A file, created or truncated when the job starts.
    File(BufWriter<File>),
    /// Drops everything.
    Discard,
}

impl Sink {
    /// Opens the sink; a file sink's error says which path failed.
    pub fn open(spec: &SinkSpec) -> Result<Sink, String> {
        Ok(match spec {
            SinkSpec::Print => Sink::Print(io::stdout()),
            SinkSpec::File(path) => {
                let file = File::create(path).map_err(|e| {
                    format!(
                        "cannot create sink file `{}`: {e}; check the directory exists and is writable",
                        path.display()
                    )
                })?;
                Sink::File(BufWriter::with_capacity(256 * 1024, file))
            }
            SinkSpec::Discard => Sink::Discard,
        })
    }

    /// Writes a block of lines.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Sink::Print(out) => out.lock().write_all(bytes),
            Sink::File(out) => out.write_all(bytes),
            Sink::Discard => Ok(()),
        }
    }

    /// Makes what was written visible (end of a batch).
    pub fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Print(out) => out.lock().flush(),
            Sink::File(out) => out.flush(),
            Sink::Discard => Ok(()),
        }
    }
}
