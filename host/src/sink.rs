//! Sinks: where a job's output lines go — stdout (`print`), a file, or
//! nowhere (`discard`). A sink receives whole blocks of formatted lines and
//! flushes once per batch, so interactive jobs show output at once without
//! a write per line.
//!
//! The job tracks the sink's position (lines and bytes written). A file
//! sink restored from a checkpoint is cut back to the checkpoint's byte
//! position, so its contents are exactly-once across crashes; stdout cannot
//! take back what it printed.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};

use crate::spec::SinkSpec;

/// An opened sink.
pub enum Sink {
    /// Standard output.
    Print(io::Stdout),
    /// A file.
    File(BufWriter<File>),
    /// Drops everything.
    Discard,
}

impl Sink {
    /// Opens the sink. A file sink is created, or, when `resume_at` is
    /// given, cut back to that many bytes and appended to.
    pub fn open(spec: &SinkSpec, resume_at: Option<u64>) -> Result<Sink, String> {
        Ok(match spec {
            SinkSpec::Print => Sink::Print(io::stdout()),
            SinkSpec::File(path) => {
                let opened = match resume_at {
                    None => File::create(path),
                    Some(len) => OpenOptions::new()
                        .create(true)
                        .truncate(false)
                        .write(true)
                        .open(path)
                        .and_then(|f| {
                            let have = f.metadata()?.len();
                            if have < len {
                                return Err(io::Error::other(format!(
                                    "it has {have} bytes, fewer than the {len} the checkpoint recorded"
                                )));
                            }
                            f.set_len(len)?;
                            let mut f = f;
                            std::io::Seek::seek(&mut f, io::SeekFrom::End(0))?;
                            Ok(f)
                        }),
                };
                let file = opened.map_err(|e| {
                    format!(
                        "cannot open sink file `{}`: {e}; check the directory exists and is writable",
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

    /// Makes what was written durable (a checkpoint).
    pub fn sync(&mut self) -> io::Result<()> {
        self.flush()?;
        match self {
            Sink::File(out) => out.get_ref().sync_data(),
            _ => Ok(()),
        }
    }
}
