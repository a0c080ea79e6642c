//! `-`: standard input, bounded like a file; it cannot be read twice, so
//! the job journals it.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crossbeam_channel::Receiver;

use crate::connector::journal::JournalWriter;
use crate::connector::lines::spawn_lines;
use crate::connector::{
    ConnectorEnv, ConnectorError, Source, SourceEvent, SourceKind, SourceOptions, SourcePosition,
};

/// The `-` source.
pub struct StdinKind;

impl SourceKind for StdinKind {
    fn matches(&self, uri: &str) -> bool {
        uri == "-"
    }

    fn usage(&self) -> &'static str {
        "`-` for stdin"
    }

    fn parse(&self, _uri: &str, env: &ConnectorEnv) -> Result<Arc<dyn Source>, ConnectorError> {
        if env.root.is_some() {
            return Err(ConnectorError::Input(
                "a job run by a server has no standard input; use a `file://` or `socket://` source"
                    .into(),
            ));
        }
        Ok(Arc::new(Stdin))
    }
}

/// Standard input.
pub struct Stdin;

impl Source for Stdin {
    fn uri(&self) -> String {
        "-".into()
    }

    fn replayable(&self) -> bool {
        false
    }

    fn start(
        &self,
        at: SourcePosition,
        options: &SourceOptions,
        journal: Option<JournalWriter>,
        cancel: Arc<AtomicBool>,
    ) -> Result<Receiver<SourceEvent>, ConnectorError> {
        let open = || Ok(std::io::stdin());
        spawn_lines("sluice-source", open, at, None, options, journal, cancel)
    }

    fn replay(
        &self,
        _from: SourcePosition,
        _until: Option<u64>,
        _options: &SourceOptions,
    ) -> Result<Receiver<SourceEvent>, ConnectorError> {
        Err(ConnectorError::Environment(
            "standard input cannot be read twice; it is replayed from the journal".into(),
        ))
    }
}
