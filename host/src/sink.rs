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
use std::path::Path;

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

/// Where a restored job's output continues: the sink it wrote to before
/// and how many bytes of it the checkpoint covers.
#[derive(Debug, Clone)]
pub struct Resume {
    /// The sink the checkpoint was taken with.
    pub previous: SinkSpec,
    /// Bytes of its output up to the checkpoint.
    pub bytes: u64,
}

/// Checks, before the job starts, that a restored job's output can go on
/// exactly once (see [`Sink::open`]): the checkpoint's sink file is there,
/// as long as it was.
pub fn check_resume(spec: &SinkSpec, resume: &Resume) -> Result<(), String> {
    let SinkSpec::File(old) = &resume.previous else {
        return Ok(());
    };
    let shown = old.display();
    let bytes = resume.bytes;
    let have = match std::fs::metadata(old) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound && bytes == 0 => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(format!(
                "the checkpoint's sink file `{shown}` is gone, and with it the {bytes} bytes of output up to the checkpoint; \
                 put it back to restore this checkpoint, or start the job afresh without --restore"
            ));
        }
        Err(e) => {
            return Err(format!(
                "cannot read the checkpoint's sink file `{shown}`: {e}"
            ));
        }
    };
    if have < bytes {
        return Err(format!(
            "the checkpoint's sink file `{shown}` has {have} bytes, fewer than the {bytes} it held at the checkpoint: \
             it was changed since, so the output cannot be continued exactly once; put the original back, \
             or start the job afresh without --restore"
        ));
    }
    if let SinkSpec::File(new) = spec
        && !same_file(&resume.previous, spec)
        && let Some(dir) = new.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        return Err(format!(
            "cannot write sink file `{}`: its directory `{}` does not exist",
            new.display(),
            dir.display()
        ));
    }
    Ok(())
}

impl Sink {
    /// Opens the sink. A new job's file sink is created (or truncated). A
    /// restored job's file sink is cut back to the checkpoint's position and
    /// appended to; when the job is restored into another sink, the old file
    /// is cut back instead and the new sink starts empty, so the two files
    /// together hold each update once. `Ok((sink, true))` when output
    /// continues in the same file, at `resume.bytes`.
    pub fn open(spec: &SinkSpec, resume: Option<&Resume>) -> Result<(Sink, bool), String> {
        let same = resume.is_some_and(|r| same_file(&r.previous, spec));
        if let Some(r) = resume
            && let SinkSpec::File(old) = &r.previous
        {
            cut_back(old, r.bytes, spec, same)?;
        }
        let sink = match spec {
            SinkSpec::Print => Sink::Print(io::stdout()),
            SinkSpec::Discard => Sink::Discard,
            SinkSpec::File(path) => {
                let opened = if same {
                    OpenOptions::new().append(true).open(path)
                } else {
                    File::create(path)
                };
                let file = opened.map_err(|e| {
                    format!(
                        "cannot open sink file `{}`: {e}; check that its directory exists and is writable",
                        path.display()
                    )
                })?;
                Sink::File(BufWriter::with_capacity(256 * 1024, file))
            }
        };
        Ok((sink, same))
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

/// Whether two sinks are the same file.
fn same_file(a: &SinkSpec, b: &SinkSpec) -> bool {
    match (a, b) {
        (SinkSpec::File(a), SinkSpec::File(b)) => {
            a == b
                || matches!(
                    (std::fs::canonicalize(a), std::fs::canonicalize(b)),
                    (Ok(x), Ok(y)) if x == y
                )
        }
        _ => false,
    }
}

/// Cuts a restored job's old sink file back to the checkpoint's `bytes`,
/// so that what follows the checkpoint is written once: again into the
/// same file (`same`), or into the new sink `next`. [`check_resume`] has
/// checked that the file is there and long enough.
fn cut_back(old: &Path, bytes: u64, next: &SinkSpec, same: bool) -> Result<(), String> {
    let shown = old.display();
    let file = match OpenOptions::new().write(true).open(old) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound && bytes == 0 => return Ok(()),
        Err(e) => {
            return Err(format!(
                "cannot open the checkpoint's sink file `{shown}` to cut it back to the checkpoint: {e}"
            ));
        }
    };
    let have = file.metadata().map(|m| m.len()).unwrap_or(0);
    file.set_len(bytes).map_err(|e| {
        format!("cannot cut the sink file `{shown}` back to the checkpoint's {bytes} bytes: {e}")
    })?;
    if !same && have > bytes {
        tracing::info!(
            "sink file `{shown}` cut back to the checkpoint's {bytes} bytes; the output after it goes to `{next}`"
        );
    }
    Ok(())
}
