//! `file://PATH`: the output lines in a file. A new job creates (or
//! truncates) it. A job restored into the same file cuts it back to the
//! checkpoint's position and appends, so its contents are exactly-once
//! across crashes; a job restored into another sink cuts this one back
//! instead, so the two files together hold each update once.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::connector::sink::Dedup;
use crate::connector::source::file::resolve;
use crate::connector::{ConnectorEnv, ConnectorError, Sink, SinkContext, SinkKind, SinkPosition};
use crate::dataflow::exchange::Block;

/// The `file://` sink.
pub struct FileKind;

impl SinkKind for FileKind {
    fn matches(&self, uri: &str) -> bool {
        uri.starts_with("file://")
    }

    fn usage(&self) -> &'static str {
        "`file://PATH`"
    }

    fn check(&self, uri: &str, env: &ConnectorEnv) -> Result<(), ConnectorError> {
        let path = resolve(uri, env, "sink")?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.is_dir()
        {
            return Err(ConnectorError::Input(format!(
                "cannot write sink file `{}`: its directory `{}` does not exist",
                path.display(),
                dir.display()
            )));
        }
        Ok(())
    }

    fn canonical(&self, uri: &str, env: &ConnectorEnv) -> String {
        match (
            &env.root,
            resolve(uri, env, "sink"),
            std::env::current_dir(),
        ) {
            (None, Ok(path), Ok(cwd)) if path.is_relative() => {
                format!("file://{}", cwd.join(path).display())
            }
            _ => uri.to_string(),
        }
    }

    fn same(&self, a: &str, b: &str, env: &ConnectorEnv) -> bool {
        let (Ok(a), Ok(b)) = (resolve(a, env, "sink"), resolve(b, env, "sink")) else {
            return false;
        };
        a == b
            || matches!(
                (std::fs::canonicalize(&a), std::fs::canonicalize(&b)),
                (Ok(x), Ok(y)) if x == y
            )
    }

    fn check_rewind(
        &self,
        uri: &str,
        position: &SinkPosition,
        env: &ConnectorEnv,
    ) -> Result<(), ConnectorError> {
        let path = resolve(uri, env, "sink")?;
        length_at_least(&path, position.bytes).map(|_| ())
    }

    fn rewind(
        &self,
        uri: &str,
        position: &SinkPosition,
        next: &str,
        env: &ConnectorEnv,
    ) -> Result<(), ConnectorError> {
        let path = resolve(uri, env, "sink")?;
        let had = cut_back(&path, position.bytes)?;
        if had > position.bytes {
            tracing::info!(
                "sink file `{}` cut back to the checkpoint's {} bytes; the output after it goes to `{next}`",
                path.display(),
                position.bytes
            );
        }
        Ok(())
    }

    fn open(
        &self,
        uri: &str,
        env: &ConnectorEnv,
        cx: &SinkContext,
    ) -> Result<Box<dyn Sink>, ConnectorError> {
        let path = resolve(uri, env, "sink")?;
        let cannot = |e: io::Error| {
            ConnectorError::Environment(format!(
                "cannot open sink file `{}`: {e}; check that its directory exists and is writable",
                path.display()
            ))
        };
        let (file, position) = match cx.resume.clone() {
            Some(position) => {
                cut_back(&path, position.bytes)?;
                let file = OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(cannot)?;
                (file, position)
            }
            None => (
                File::create(&path).map_err(cannot)?,
                SinkPosition::default(),
            ),
        };
        Ok(Box::new(FileSink {
            uri: uri.to_string(),
            out: BufWriter::with_capacity(256 * 1024, file),
            dedup: Dedup {
                written: position.lines,
            },
            bytes: position.bytes,
            path,
        }))
    }
}

/// The file's length, if it is at least `bytes`; else why the output up to
/// the checkpoint is not all there.
fn length_at_least(path: &Path, bytes: u64) -> Result<u64, ConnectorError> {
    let shown = path.display();
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() >= bytes => Ok(meta.len()),
        Ok(meta) => Err(ConnectorError::Input(format!(
            "the checkpoint's sink file `{shown}` has {} bytes, fewer than the {bytes} it held at the checkpoint: \
             it was changed since, so the output cannot be continued exactly once; put the original back, \
             or start the job afresh without --restore",
            meta.len()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound && bytes == 0 => Ok(0),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ConnectorError::Input(format!(
            "the checkpoint's sink file `{shown}` is gone, and with it the {bytes} bytes of output up to the checkpoint; \
             put it back to restore this checkpoint, or start the job afresh without --restore"
        ))),
        Err(e) => Err(ConnectorError::Environment(format!(
            "cannot read the checkpoint's sink file `{shown}`: {e}"
        ))),
    }
}

/// Cuts the file back to `bytes`; its length before.
fn cut_back(path: &Path, bytes: u64) -> Result<u64, ConnectorError> {
    let had = length_at_least(path, bytes)?;
    if had == 0 && bytes == 0 && !path.exists() {
        return Ok(0);
    }
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(bytes))
        .map_err(|e| {
            ConnectorError::Environment(format!(
                "cannot cut the sink file `{}` back to the checkpoint's {bytes} bytes: {e}",
                path.display()
            ))
        })?;
    Ok(had)
}

/// A file sink.
pub struct FileSink {
    uri: String,
    path: PathBuf,
    out: BufWriter<File>,
    dedup: Dedup,
    /// Bytes in the file.
    bytes: u64,
}

impl FileSink {
    fn failed(&self, e: io::Error) -> ConnectorError {
        ConnectorError::Environment(format!("sink `{}` failed: {e}", self.uri))
    }
}

impl Sink for FileSink {
    fn write(&mut self, at: u64, block: &Block) -> Result<(), ConnectorError> {
        let fresh = self.dedup.fresh(at, block);
        if fresh.is_empty() {
            return Ok(());
        }
        self.bytes += fresh.len() as u64;
        let written = self.out.write_all(fresh).and_then(|()| self.out.flush());
        written.map_err(|e| self.failed(e))
    }

    fn flush(&mut self) -> Result<(), ConnectorError> {
        self.out.flush().map_err(|e| self.failed(e))
    }

    fn sync(&mut self) -> Result<SinkPosition, ConnectorError> {
        self.flush()?;
        self.out.get_ref().sync_data().map_err(|e| {
            ConnectorError::Environment(format!(
                "cannot sync sink file `{}`: {e}",
                self.path.display()
            ))
        })?;
        Ok(SinkPosition {
            lines: self.dedup.written,
            bytes: self.bytes,
            partitions: None,
        })
    }
}
