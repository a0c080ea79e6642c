//! `print`: one line per update on stdout, in Flink's tuple form; logs
//! stay on stderr. Stdout cannot take back what it printed, so the sink
//! keeps, in the job's directory (`printed`), how many lines it has
//! printed, and a resumed job does not print them again — except for the
//! one batch being written at the moment of a crash.

use std::io::{self, Write};
use std::os::unix::fs::FileExt;

use crate::connector::sink::Dedup;
use crate::connector::{ConnectorEnv, ConnectorError, Sink, SinkContext, SinkKind, SinkPosition};
use crate::dataflow::exchange::Block;

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
        _env: &ConnectorEnv,
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
        let before = match printed.read_at(&mut counter, 0) {
            Ok(8) => u64::from_le_bytes(counter),
            _ => 0,
        };
        let resumed = cx.resume.as_ref().map_or(0, |p| p.lines);
        Ok(Box::new(Print {
            out: io::stdout(),
            printed,
            dedup: Dedup {
                written: before.max(resumed),
            },
        }))
    }
}

/// Standard output.
pub struct Print {
    out: io::Stdout,
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
        let mut out = self.out.lock();
        out.write_all(fresh)
            .and_then(|()| out.flush())
            .map_err(failed)?;
        self.printed
            .write_all_at(&self.dedup.written.to_le_bytes(), 0)
            .map_err(|e| {
                ConnectorError::Environment(format!("cannot record the printed position: {e}"))
            })
    }

    fn flush(&mut self) -> Result<(), ConnectorError> {
        self.out
            .lock()
            .flush()
            .map_err(|e| ConnectorError::Environment(format!("sink `print` failed: {e}")))
    }

    fn sync(&mut self) -> Result<SinkPosition, ConnectorError> {
        self.flush()?;
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
