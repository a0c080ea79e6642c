//! `file://PATH`: a file, bounded (the job finishes at its end), and
//! replayable by byte offset, so it needs no journal.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crossbeam_channel::Receiver;

use crate::connector::journal::JournalWriter;
use crate::connector::lines::spawn_lines;
use crate::connector::{
    ConnectorEnv, ConnectorError, Source, SourceEvent, SourceKind, SourceOptions, SourcePosition,
};

/// The `file://` scheme.
pub struct FileKind;

impl SourceKind for FileKind {
    fn matches(&self, uri: &str) -> bool {
        uri.starts_with("file://")
    }

    fn usage(&self) -> &'static str {
        "`file://PATH`"
    }

    fn parse(&self, uri: &str, env: &ConnectorEnv) -> Result<Arc<dyn Source>, ConnectorError> {
        let path = resolve(uri, env, "source")?;
        // A job remembers its source by an absolute path, so that it is the
        // same source wherever the job is restored from; a server's tenant
        // sees its own relative paths.
        let uri = match (&env.root, std::env::current_dir()) {
            (None, Ok(cwd)) if path.is_relative() => {
                format!("file://{}", cwd.join(&path).display())
            }
            _ => uri.to_string(),
        };
        Ok(Arc::new(FileSource { uri, path }))
    }
}

/// The path a `file://` URI names: relative to the job's root when it has
/// one, and then never outside it.
pub(crate) fn resolve(
    uri: &str,
    env: &ConnectorEnv,
    what: &str,
) -> Result<PathBuf, ConnectorError> {
    let path = uri.strip_prefix("file://").unwrap_or(uri);
    if path.is_empty() {
        return Err(ConnectorError::Input(format!(
            "{what} `{uri}` has no path; use `file://PATH`"
        )));
    }
    env.inside(Path::new(path)).ok_or_else(|| {
        ConnectorError::Input(format!(
            "{what} `{uri}` must be a relative path inside the job's files, without `..`"
        ))
    })
}

/// A file source.
pub struct FileSource {
    uri: String,
    path: PathBuf,
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

impl Source for FileSource {
    fn uri(&self) -> String {
        self.uri.clone()
    }

    fn check(&self, _options: &SourceOptions) -> Result<(), ConnectorError> {
        std::fs::File::open(&self.path).map(|_| ()).map_err(|e| {
            ConnectorError::Input(format!(
                "cannot open source `{}`: {e}; check the path and its permissions",
                self.uri
            ))
        })
    }

    fn replayable(&self) -> bool {
        true
    }

    fn start(
        &self,
        at: SourcePosition,
        options: &SourceOptions,
        _journal: Option<JournalWriter>,
        cancel: Arc<AtomicBool>,
    ) -> Result<Receiver<SourceEvent>, ConnectorError> {
        let path = self.path.clone();
        let uri = self.uri.clone();
        let open = move || {
            open_at(&path, at.offset).map_err(|e| {
                format!("cannot open source `{uri}`: {e}; check the path and its permissions")
            })
        };
        spawn_lines("sluice-source", open, at, None, options, None, cancel)
    }

    fn replay(
        &self,
        from: SourcePosition,
        until: Option<u64>,
        options: &SourceOptions,
    ) -> Result<Receiver<SourceEvent>, ConnectorError> {
        let file = open_at(&self.path, from.offset).map_err(|e| {
            ConnectorError::Environment(format!("cannot replay source `{}`: {e}", self.uri))
        })?;
        let cancel = Arc::new(AtomicBool::new(false));
        spawn_lines(
            "sluice-replay",
            move || Ok(file),
            from,
            until,
            options,
            None,
            cancel,
        )
    }
}
