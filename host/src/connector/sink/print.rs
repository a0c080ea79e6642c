//! `print`: one line per update on stdout, in Flink's tuple form; logs
//! stay on stderr. Stdout cannot take back what it printed, so the sink
//! keeps, in the job's directory (`printed`), how many lines it has
//! printed, and a resumed job does not print them again — except for the
//! one batch being written at the moment of a crash.
//!
//! A job whose [`ConnectorEnv::print_to_job_dir`] is set (a server's) prints
//! into `output.log` in its directory instead. That file is its own record
//! of what was printed: on open, a line cut short by a crash is cut off and
//! its complete lines are the count, so it holds each line exactly once.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::connector::sink::Dedup;
use crate::connector::{ConnectorEnv, ConnectorError, Sink, SinkContext, SinkKind, SinkPosition};
use crate::dataflow::exchange::Block;

/// The file a job printing to its directory prints into.
pub const OUTPUT_FILE: &str = "output.log";

/// The `print` sink.
pub struct PrintKind;

impl SinkKind for PrintKind {
    fn matches(&self, uri: &str) -> bool {
        uri == "print"
    }

    fn usage(&self) -> &'static str {
        "`print`"
    }

    fn check(&self, _uri: &str, _env: &ConnectorEnv) -> Result<(), ConnectorError> {
        Ok(())
    }

    fn open(
        &self,
        _uri: &str,
        env: &ConnectorEnv,
        cx: &SinkContext,
    ) -> Result<Box<dyn Sink>, ConnectorError> {
        let path = cx.job_dir.join("printed");
        let printed = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| {
                ConnectorError::Environment(format!("cannot open `{}`: {e}", path.display()))
            })?;
        let mut counter = [0u8; 8];
        let mut before = match printed.read_at(&mut counter, 0) {
            Ok(8) => u64::from_le_bytes(counter),
            _ => 0,
        };
        let out = if env.print_to_job_dir {
            let (file, lines) = open_output(&cx.job_dir.join(OUTPUT_FILE))?;
            before = lines;
            Out::File(file)
        } else {
            Out::Stdout(io::stdout())
        };
        let resumed = cx.resume.as_ref().map_or(0, |p| p.lines);
        Ok(Box::new(Print {
            out,
            printed,
            dedup: Dedup {
                written: before.max(resumed),
            },
        }))
    }
}

/// Opens (creating it) the job's output file for appending, cut back to
/// its last complete line; the lines it holds.
fn open_output(path: &Path) -> Result<(File, u64), ConnectorError> {
    let failed = |e: io::Error| {
        ConnectorError::Environment(format!("cannot open `{}`: {e}", path.display()))
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(failed(e)),
    };
    let complete = memchr::memrchr(b'\n', &bytes).map_or(0, |i| i + 1);
    let lines = memchr::memchr_iter(b'\n', &bytes[..complete]).count() as u64;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(failed)?;
    if complete < bytes.len() {
        file.set_len(complete as u64).map_err(failed)?;
    }
    Ok((file, lines))
}

/// Where printed lines go.
enum Out {
    Stdout(io::Stdout),
    File(File),
}

impl Out {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Out::Stdout(out) => {
                let mut out = out.lock();
                out.write_all(bytes).and_then(|()| out.flush())
            }
            Out::File(f) => f.write_all(bytes),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Out::Stdout(out) => out.lock().flush(),
            Out::File(_) => Ok(()),
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        match self {
            Out::Stdout(out) => out.lock().flush(),
            Out::File(f) => f.sync_data(),
        }
    }
}

/// Standard output, or the job's output file.
pub struct Print {
    out: Out,
    /// Where `dedup.written` is kept across runs.
    printed: std::fs::File,
    dedup: Dedup,
}

impl Sink for Print {
    fn write(&mut self, at: u64, block: &Block) -> Result<(), ConnectorError> {
        let fresh = self.dedup.fresh(at, block);
        if fresh.is_empty() {
            return Ok(());
        }
        let failed =
            |e: io::Error| ConnectorError::Environment(format!("sink `print` failed: {e}"));
        self.out.write_all(fresh).map_err(failed)?;
        self.printed
            .write_all_at(&self.dedup.written.to_le_bytes(), 0)
            .map_err(|e| {
                ConnectorError::Environment(format!("cannot record the printed position: {e}"))
            })
    }

    fn flush(&mut self) -> Result<(), ConnectorError> {
        self.out
            .flush()
            .map_err(|e| ConnectorError::Environment(format!("sink `print` failed: {e}")))
    }

    fn sync(&mut self) -> Result<SinkPosition, ConnectorError> {
        self.out
            .sync()
            .map_err(|e| ConnectorError::Environment(format!("sink `print` failed: {e}")))?;
        self.printed.sync_data().map_err(|e| {
            ConnectorError::Environment(format!("cannot record the printed position: {e}"))
        })?;
        Ok(SinkPosition {
            lines: self.dedup.written,
            bytes: 0,
            partitions: None,
        })
    }
}
