//! `socket://HOST:PORT`: newline-delimited text from a TCP server, as a
//! client, like Flink's `socketTextStream`. At start it retries with
//! backoff for the connect timeout, then fails the job with a message that
//! names the server to start; when the peer goes away it reconnects with
//! backoff for as long as the job runs. Unbounded, and read once: the job
//! journals it.

use std::io::BufReader;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded};

use crate::connector::journal::JournalWriter;
use crate::connector::lines::Lines;
use crate::connector::lines::send_last;
use crate::connector::{
    ConnectorEnv, ConnectorError, Source, SourceEvent, SourceKind, SourceOptions, SourcePosition,
};

/// How often a blocked socket read looks at the cancel flag.
const POLL: Duration = Duration::from_millis(100);

/// The `socket://` scheme.
pub struct SocketKind;

impl SourceKind for SocketKind {
    fn matches(&self, uri: &str) -> bool {
        uri.starts_with("socket://")
    }

    fn usage(&self) -> &'static str {
        "`socket://HOST:PORT`"
    }

    fn parse(&self, uri: &str, env: &ConnectorEnv) -> Result<Arc<dyn Source>, ConnectorError> {
        let bad = |m: String| ConnectorError::Input(m);
        let addr = uri.strip_prefix("socket://").unwrap_or(uri);
        let (host, port) = addr.rsplit_once(':').ok_or_else(|| {
            bad(format!(
                "source `{uri}` has no port; use `socket://HOST:PORT`"
            ))
        })?;
        let port: u16 = port.parse().ok().filter(|p| *p > 0).ok_or_else(|| {
            bad(format!(
                "source `{uri}` has a bad port `{port}`; use 1 to 65535"
            ))
        })?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad(format!(
                "source `{uri}` has no host; use `socket://HOST:PORT`"
            )));
        }
        if let Some(allowed) = &env.allowed_hosts
            && !allowed.iter().any(|a| a == &format!("{host}:{port}"))
        {
            return Err(bad(format!(
                "source `{uri}` is not on the list of addresses this server allows; ask its admin to allow `{host}:{port}`"
            )));
        }
        Ok(Arc::new(SocketSource {
            uri: format!("socket://{host}:{port}"),
            host: host.to_string(),
            port,
        }))
    }
}

/// A socket source.
pub struct SocketSource {
    uri: String,
    host: String,
    port: u16,
}

impl Source for SocketSource {
    fn uri(&self) -> String {
        self.uri.clone()
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
        let (tx, rx) = bounded(4);
        let socket = SocketSource {
            uri: self.uri.clone(),
            host: self.host.clone(),
            port: self.port,
        };
        let options = options.clone();
        std::thread::Builder::new()
            .name("sluice-source".into())
            .spawn(move || {
                let last = read(&socket, &options, at, journal, &tx, &cancel)
                    .unwrap_or_else(SourceEvent::Failed);
                send_last(&tx, last, &cancel);
            })
            .map_err(|e| {
                ConnectorError::Environment(format!("cannot start the source's thread: {e}"))
            })?;
        Ok(rx)
    }

    fn replay(
        &self,
        _from: SourcePosition,
        _until: Option<u64>,
        _options: &SourceOptions,
    ) -> Result<Receiver<SourceEvent>, ConnectorError> {
        Err(ConnectorError::Environment(
            "a socket cannot be read twice; it is replayed from the journal".into(),
        ))
    }
}

/// Connects, reads until the peer goes away, reconnects with backoff; ends
/// only when cancelled or when the first connection cannot be made in time.
fn read(
    socket: &SocketSource,
    options: &SourceOptions,
    start: SourcePosition,
    mut journal: Option<JournalWriter>,
    tx: &Sender<SourceEvent>,
    cancel: &AtomicBool,
) -> Result<SourceEvent, String> {
    let spec = &socket.uri;
    let mut position = start;
    let mut first = true;
    loop {
        let deadline = first.then(|| Instant::now() + options.connect_timeout);
        let Some(stream) = connect(socket, deadline, tx, cancel)? else {
            return Ok(SourceEvent::End);
        };
        if !first {
            notice(tx, format!("source `{spec}` reconnected"));
        }
        first = false;
        stream
            .set_read_timeout(Some(POLL))
            .map_err(|e| format!("source `{spec}`: {e}"))?;
        let mut lines = Lines::new(
            BufReader::with_capacity(64 * 1024, stream),
            options.max_line_bytes,
        );
        lines.start_at(position);
        lines.journal = journal.take();
        let ended = lines.pump(tx, cancel);
        position = SourcePosition {
            seq: lines.seq,
            offset: lines.offset,
            partitions: None,
        };
        journal = lines.journal.take();
        match ended {
            Ok(()) if cancel.load(Ordering::Relaxed) => return Ok(SourceEvent::End),
            Ok(()) => notice(
                tx,
                format!("source `{spec}` was closed by the peer; reconnecting"),
            ),
            Err(e) => notice(tx, format!("{e}; reconnecting")),
        }
    }
}

fn notice(tx: &Sender<SourceEvent>, message: String) {
    let _ = tx.send(SourceEvent::Notice(message));
}

/// Tries to connect until `deadline` (forever when `None`), backing off
/// from 100 ms to 2 s. `Ok(None)` when cancelled.
fn connect(
    socket: &SocketSource,
    deadline: Option<Instant>,
    tx: &Sender<SourceEvent>,
    cancel: &AtomicBool,
) -> Result<Option<TcpStream>, String> {
    let started = Instant::now();
    let mut backoff = Duration::from_millis(100);
    let mut attempts = 0u32;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Ok(None);
        }
        attempts += 1;
        let (spec, port) = (&socket.uri, socket.port);
        let error = match TcpStream::connect((socket.host.as_str(), port)) {
            Ok(stream) => return Ok(Some(stream)),
            Err(e) => e,
        };
        if let Some(deadline) = deadline
            && Instant::now() + backoff > deadline
        {
            return Err(format!(
                "cannot connect to source `{spec}` after {attempts} attempt(s) over {:.1} s: {error}; \
                 start the server first (e.g. `nc -lk {port}`) or pass another --source",
                started.elapsed().as_secs_f64()
            ));
        }
        if deadline.is_none() && attempts % 10 == 1 {
            notice(
                tx,
                format!("source `{spec}` is unreachable ({error}); retrying"),
            );
        }
        let until = Instant::now() + backoff;
        while Instant::now() < until {
            if cancel.load(Ordering::Relaxed) {
                return Ok(None);
            }
            std::thread::sleep(POLL.min(backoff));
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}
