//! Connectors: where a job's records come from and where its output goes,
//! named by URI and found in a registry by scheme (after Arroyo's
//! connector registry).
//!
//! A source reads on its own thread and sends batches of records, each
//! ending at a position the checkpoint stores. A source that cannot read
//! again from an earlier position (a socket, stdin) is wrapped in the
//! journal, which copies what it reads to disk and replays it. A sink takes
//! blocks of lines at their place in the job's output, leaves out what it
//! already has (a replay after a failure), and makes its output durable at
//! each checkpoint; what it keeps to stay exactly-once is its own business.
//!
//! Adding a source or a sink is one file in `source/` or `sink/` and one
//! line in [`SOURCES`] or [`SINKS`].

pub mod journal;
pub mod journaled;
pub mod kafka;
pub(crate) mod lines;
pub mod position;
pub mod sink;
pub mod source;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crossbeam_channel::Receiver;

use crate::dataflow::exchange::Block;
use crate::dataflow::message::SourceBatch;
use crate::fault::Fault;
pub use position::{Runs, SinkPosition, SourcePosition};

/// A connector could not be configured, opened or used.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// A URI or option that cannot work: the user's to fix.
    #[error("{0}")]
    Input(String),
    /// The source or sink failed: a file, a network, a server.
    #[error("{0}")]
    Environment(String),
}

impl ConnectorError {
    /// Whose fault it is.
    pub fn fault(&self) -> Fault {
        match self {
            ConnectorError::Input(_) => Fault::Input,
            ConnectorError::Environment(_) => Fault::Environment,
        }
    }
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
    /// How long to keep trying to reach a network source at start.
    pub connect_timeout: Duration,
    /// Whether the job's first stage takes what a source knows of each
    /// record besides its text (a 0.2.0 pipeline takes a Kafka record's
    /// key, timestamp and headers; a 0.1.0 guest only the value).
    pub record_meta: bool,
}

/// What a job gives its connectors: the resources they may use. A job run
/// from the command line gets the process's; a tenant's job gets its own.
#[derive(Debug, Clone, Default)]
pub struct ConnectorEnv {
    /// Where relative `file://` paths are resolved; `None`: the working
    /// directory.
    pub root: Option<PathBuf>,
    /// Only these `HOST:PORT`s may be reached; `None`: any.
    pub allowed_hosts: Option<Vec<String>>,
    /// The `print` sink writes to the job directory's `output.log` instead
    /// of stdout (a server's jobs, whose output each tenant reads apart).
    pub print_to_job_dir: bool,
}

impl ConnectorEnv {
    /// Where a path a job names is: as it is, or, for a job with a root (a
    /// server's tenant), inside the root; `None` when it would leave the
    /// root (absolute, or with `..`).
    pub fn inside(&self, path: &Path) -> Option<PathBuf> {
        let Some(root) = &self.root else {
            return Some(path.to_path_buf());
        };
        let inside = path.is_relative()
            && path.components().all(|c| {
                matches!(
                    c,
                    std::path::Component::Normal(_) | std::path::Component::CurDir
                )
            });
        inside.then(|| root.join(path))
    }
}

/// Where a restored job's input goes on: the live source from `live`, after
/// the records `replay` of a journal (`from`, up to record `until`).
#[derive(Debug, Clone)]
pub struct Resumption {
    /// Where the live source starts.
    pub live: SourcePosition,
    /// Records to replay first.
    pub replay: Option<(SourcePosition, u64)>,
}

/// A configured source.
pub trait Source: Send + Sync {
    /// Its URI, for logs and checkpoints.
    fn uri(&self) -> String;

    /// Whether it can read records again from an earlier position by
    /// itself (a file can). The job journals a source that cannot.
    fn replayable(&self) -> bool;

    /// Checks, before the job starts, that the source can be read (a file
    /// that is there, a topic that exists), so nothing is created or
    /// truncated for a job that cannot run.
    fn check(&self, _options: &SourceOptions) -> Result<(), ConnectorError> {
        Ok(())
    }

    /// Starts reading at `at` on a thread of its own. A source that cannot
    /// replay copies every byte it consumes into `journal` before the
    /// records reach the job (see [`journaled::Journaled`]).
    fn start(
        &self,
        at: SourcePosition,
        options: &SourceOptions,
        journal: Option<journal::JournalWriter>,
        cancel: Arc<AtomicBool>,
    ) -> Result<Receiver<SourceEvent>, ConnectorError>;

    /// Reads records `from.seq..until` again (to the end when `until` is
    /// `None`); the stream ends with [`SourceEvent::End`].
    fn replay(
        &self,
        from: SourcePosition,
        until: Option<u64>,
        options: &SourceOptions,
    ) -> Result<Receiver<SourceEvent>, ConnectorError>;

    /// Where a job restored at `from` goes on. `written`: the order in
    /// which the job had read the records whose output the sink already
    /// holds past the checkpoint (only a sink that records it, Kafka's,
    /// gives one): a source whose order depends on timing replays them in
    /// that order first.
    fn resume(&self, from: SourcePosition, _written: &Runs) -> Result<Resumption, ConnectorError> {
        Ok(Resumption {
            live: from,
            replay: None,
        })
    }

    /// A checkpoint at `at` completed: what the source kept for replays
    /// before it can go, and a source with a consumer group commits it.
    fn checkpointed(&self, _at: &SourcePosition) {}
}

/// A configured sink, opened.
pub trait Sink: Send {
    /// Writes `block`, the job's output lines from line `at` on, leaving
    /// out the lines it already has (a replay after a failure).
    fn write(&mut self, at: u64, block: &Block) -> Result<(), ConnectorError>;

    /// [`Sink::write`] with a block the caller no longer needs: a sink that
    /// keeps the block (to write it on a thread of its own) takes it
    /// instead of a copy.
    fn write_owned(&mut self, at: u64, block: Block) -> Result<(), ConnectorError> {
        self.write(at, &block)
    }

    /// Makes what was written visible (the end of a batch).
    fn flush(&mut self) -> Result<(), ConnectorError>;

    /// A failure the sink met on its own since it was last called (a
    /// write on a thread of its own that the broker refused), so that an
    /// idle job fails at once instead of at its next output.
    fn poll(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }

    /// Makes what was written durable (a checkpoint): the position to
    /// store, lines and bytes the sink holds.
    fn sync(&mut self) -> Result<SinkPosition, ConnectorError>;
}

/// Where a restored job's output continues: the sink it wrote to before
/// and its position at the checkpoint.
#[derive(Debug, Clone)]
pub struct Resume {
    /// The sink the checkpoint was taken with.
    pub previous: String,
    /// Its position at the checkpoint.
    pub position: SinkPosition,
}

/// What a sink is opened with.
#[derive(Debug, Clone)]
pub struct SinkContext {
    /// The job's own directory, for what the sink keeps between runs.
    pub job_dir: PathBuf,
    /// The job's id, for a sink that marks what it wrote.
    pub job_id: String,
    /// Where a restored job's output continues, when it is restored into
    /// the same sink.
    pub resume: Option<SinkPosition>,
}

/// A kind of source, by URI scheme.
pub trait SourceKind: Sync {
    /// Whether `uri` is of this kind.
    fn matches(&self, uri: &str) -> bool;
    /// How its URIs look, for messages: "`socket://HOST:PORT`".
    fn usage(&self) -> &'static str;
    /// Parses and checks `uri`.
    fn parse(&self, uri: &str, env: &ConnectorEnv) -> Result<Arc<dyn Source>, ConnectorError>;
}

/// A kind of sink, by URI scheme.
pub trait SinkKind: Sync {
    /// Whether `uri` is of this kind.
    fn matches(&self, uri: &str) -> bool;
    /// How its URIs look, for messages.
    fn usage(&self) -> &'static str;
    /// Checks `uri`.
    fn check(&self, uri: &str, env: &ConnectorEnv) -> Result<(), ConnectorError>;
    /// How the job remembers `uri`: the same sink wherever it is restored
    /// from (a file by its absolute path).
    fn canonical(&self, uri: &str, _env: &ConnectorEnv) -> String {
        uri.to_string()
    }
    /// Whether it drops everything (the job need not format lines for it).
    fn discards(&self) -> bool {
        false
    }
    /// Whether it keys its output: the job gives it each line's key.
    fn keys(&self) -> bool {
        false
    }
    /// Checks, before the job starts, that the sink can be written (a
    /// server that answers, a topic that exists).
    fn probe(
        &self,
        _uri: &str,
        _env: &ConnectorEnv,
        _connect_timeout: Duration,
    ) -> Result<(), ConnectorError> {
        Ok(())
    }
    /// The order in which the job read the records whose output this sink
    /// holds past the checkpoint at `position`, as it recorded it (Kafka's
    /// does, beside its output); empty for a sink that does not.
    fn written(
        &self,
        _uri: &str,
        _env: &ConnectorEnv,
        _position: &SinkPosition,
        _job_id: &str,
    ) -> Result<Runs, ConnectorError> {
        Ok(Runs::new())
    }
    /// Whether `a` and `b` name the same sink.
    fn same(&self, a: &str, b: &str, _env: &ConnectorEnv) -> bool {
        a == b
    }
    /// Checks, before a restored job starts, that its output up to the
    /// checkpoint (`position`) is still there to be continued or cut back.
    fn check_rewind(
        &self,
        _uri: &str,
        _position: &SinkPosition,
        _env: &ConnectorEnv,
    ) -> Result<(), ConnectorError> {
        Ok(())
    }
    /// Takes back what the sink got after the checkpoint, when the job is
    /// restored into another sink (a file is cut back).
    fn rewind(
        &self,
        _uri: &str,
        _position: &SinkPosition,
        _next: &str,
        _env: &ConnectorEnv,
    ) -> Result<(), ConnectorError> {
        Ok(())
    }
    /// Opens the sink.
    fn open(
        &self,
        uri: &str,
        env: &ConnectorEnv,
        cx: &SinkContext,
    ) -> Result<Box<dyn Sink>, ConnectorError>;
}

/// Every source the host knows, by scheme.
pub const SOURCES: &[&dyn SourceKind] = &[
    &source::socket::SocketKind,
    &source::file::FileKind,
    &source::stdin::StdinKind,
    &source::kafka::KafkaKind,
];

/// Every sink the host knows, by scheme.
pub const SINKS: &[&dyn SinkKind] = &[
    &sink::print::PrintKind,
    &sink::file::FileKind,
    &sink::discard::DiscardKind,
    &sink::kafka::KafkaKind,
];

fn usages(kinds: impl Iterator<Item = &'static str>) -> String {
    let all: Vec<&str> = kinds.collect();
    match all.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => all.join(""),
    }
}

/// The kind of source `uri` names.
pub fn source_kind(uri: &str) -> Result<&'static dyn SourceKind, ConnectorError> {
    SOURCES
        .iter()
        .copied()
        .find(|k| k.matches(uri))
        .ok_or_else(|| {
            ConnectorError::Input(format!(
                "unknown source `{uri}`; use {}",
                usages(SOURCES.iter().map(|k| k.usage()))
            ))
        })
}

/// The kind of sink `uri` names.
pub fn sink_kind(uri: &str) -> Result<&'static dyn SinkKind, ConnectorError> {
    SINKS
        .iter()
        .copied()
        .find(|k| k.matches(uri))
        .ok_or_else(|| {
            ConnectorError::Input(format!(
                "unknown sink `{uri}`; use {}",
                usages(SINKS.iter().map(|k| k.usage()))
            ))
        })
}

/// Parses a source URI.
pub fn source(uri: &str, env: &ConnectorEnv) -> Result<Arc<dyn Source>, ConnectorError> {
    source_kind(uri)?.parse(uri, env)
}

/// Checks a sink URI; the URI as the job remembers it.
pub fn check_sink(uri: &str, env: &ConnectorEnv) -> Result<String, ConnectorError> {
    let kind = sink_kind(uri)?;
    kind.check(uri, env)?;
    Ok(kind.canonical(uri, env))
}

/// Opens the sink of a job; a restored one continues its checkpoint's
/// output: in the same sink from its position, or, in another sink, after
/// the old one is cut back to the checkpoint.
pub fn open_sink(
    uri: &str,
    env: &ConnectorEnv,
    job_dir: PathBuf,
    job_id: &str,
    resume: Option<&Resume>,
) -> Result<Box<dyn Sink>, ConnectorError> {
    let kind = sink_kind(uri)?;
    let mut cx = SinkContext {
        job_dir,
        job_id: job_id.to_string(),
        resume: None,
    };
    if let Some(r) = resume {
        if kind.same(&r.previous, uri, env) {
            cx.resume = Some(r.position.clone());
        } else {
            sink_kind(&r.previous)?.rewind(&r.previous, &r.position, uri, env)?;
        }
    }
    kind.open(uri, env, &cx)
}

/// The order the job read the records in whose output the previous sink
/// holds past the checkpoint (see [`SinkKind::written`]).
pub fn written(resume: &Resume, env: &ConnectorEnv, job_id: &str) -> Result<Runs, ConnectorError> {
    sink_kind(&resume.previous)?.written(&resume.previous, env, &resume.position, job_id)
}

/// Checks before a job starts that its sink can be written (a Kafka
/// topic that exists).
pub fn probe_sink(
    uri: &str,
    env: &ConnectorEnv,
    connect_timeout: Duration,
) -> Result<(), ConnectorError> {
    sink_kind(uri)?.probe(uri, env, connect_timeout)
}

/// Checks before a restored job starts that its output can go on exactly
/// once from the checkpoint.
pub fn check_resume(uri: &str, env: &ConnectorEnv, resume: &Resume) -> Result<(), ConnectorError> {
    let previous = sink_kind(&resume.previous)?;
    previous.check_rewind(&resume.previous, &resume.position, env)?;
    check_sink(uri, env).map(drop)
}
