//! Helpers for the end-to-end tests: the guests' paths, a command runner
//! for the real `host` binary with a hard timeout, and a loopback line
//! server that plays the part of `nc -lk`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Paths of the guest components built by `build.rs`.
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));

    /// The wordcount guest of `language` (`rust`, `python`, `js`, `c`);
    /// says how to build it when it is missing.
    pub fn wordcount(language: &str) -> &'static str {
        of("wordcount", WORDCOUNTS, language)
    }

    /// The fraud detector guest of `language`.
    pub fn fraud(language: &str) -> &'static str {
        of("fraud", FRAUDS, language)
    }

    /// The windowed wordcount guest of `language`.
    pub fn windowed_wordcount(language: &str) -> &'static str {
        of("windowed-wordcount", WINDOWED_WORDCOUNTS, language)
    }

    fn of(example: &str, all: &[(&str, &'static str)], language: &str) -> &'static str {
        let Some((_, path)) = all.iter().find(|(l, _)| *l == language) else {
            panic!("no {example} guest in {language}");
        };
        assert!(
            std::path::Path::new(path).exists(),
            "{path} is missing: build it with `examples/{example}-{language}/build` \
             (the README's test command, `scripts/test`, builds every guest first)"
        );
        path
    }
}

/// Defines one test per language (Rust, Python, JavaScript, C) in a module
/// named `$name`: `$name::rust`, `$name::python`, ..., each calling
/// `$body(module_path)` with that language's `$example` guest
/// (`guests::$example(language)`).
#[macro_export]
macro_rules! for_each_language {
    ($name:ident, $example:ident, $body:expr) => {
        mod $name {
            #[test]
            fn rust() {
                ($body)($crate::guests::$example("rust"));
            }
            #[test]
            fn python() {
                ($body)($crate::guests::$example("python"));
            }
            #[test]
            fn js() {
                ($body)($crate::guests::$example("js"));
            }
            #[test]
            fn c() {
                ($body)($crate::guests::$example("c"));
            }
        }
    };
}

/// [`for_each_language!`] over the wordcount guests.
#[macro_export]
macro_rules! for_each_wordcount {
    ($name:ident, $body:expr) => {
        $crate::for_each_language!($name, wordcount, $body);
    };
}

/// The `host` binary of this build (`cargo build -p sluice-host` first;
/// the test script does).
pub fn host_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("SLUICE_HOST_BIN") {
        return path.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/all-HASH -> target/<profile>/host
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable in target/<profile>/deps");
    let host = dir.join("host");
    assert!(
        host.exists(),
        "{} does not exist; build it first with `cargo build --release -p sluice-host` \
         (the README's test command does)",
        host.display()
    );
    host
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh directory under the system's temp dir.
    pub fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sluice-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    /// A path inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Writes a file and returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, contents).expect("write temp file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a finished `host` run left behind.
#[derive(Debug)]
pub struct Output {
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error (the log).
    pub stderr: String,
}

impl Output {
    /// Panics with both streams unless the exit code is `code`.
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "unexpected exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Panics unless stderr contains `needle`.
    pub fn assert_stderr_has(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}\n--- stderr\n{}",
            self.stderr
        );
        self
    }

    /// The non-empty lines of stderr.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }
}

/// A `host` invocation.
pub struct HostCommand {
    cmd: Command,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
}

impl HostCommand {
    /// `host ARGS...`, 60 s timeout.
    pub fn new<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let host = host_bin();
        let mut cmd = Command::new(&host);
        cmd.args(args)
            .env_remove("SLUICE_LOG")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        // Compiled modules go to a cache of the tests' own, not the user's.
        if let Some(dir) = host.parent() {
            cmd.env("SLUICE_COMPILE_CACHE", dir.join("test-compile-cache"));
        }
        HostCommand {
            cmd,
            stdin: None,
            timeout: Duration::from_secs(60),
        }
    }

    /// `host run --module MODULE --source SOURCE EXTRA...`.
    pub fn job(module: &str, source: &str, extra: &[&str]) -> Self {
        let mut args = vec!["run", "--module", module, "--source", source];
        args.extend_from_slice(extra);
        Self::new(args)
    }

    /// Sets an environment variable for the host.
    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    /// Runs the host in `dir`, as a user who `cd`s there first.
    pub fn current_dir(mut self, dir: impl AsRef<std::path::Path>) -> Self {
        self.cmd.current_dir(dir);
        self
    }

    /// Feeds `bytes` on stdin, then closes it.
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self.cmd.stdin(Stdio::piped());
        self
    }

    /// Sets the hard timeout after which the process is killed and the test fails.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Starts the process without waiting.
    pub fn spawn(mut self) -> Running {
        let mut child = self.cmd.spawn().expect("start host");
        if let Some(bytes) = self.stdin.take() {
            let mut stdin = child.stdin.take().expect("piped stdin");
            std::thread::spawn(move || {
                let _ = stdin.write_all(&bytes);
            });
        }
        let stdout = reader(child.stdout.take().expect("piped stdout"));
        let stderr = reader(child.stderr.take().expect("piped stderr"));
        Running {
            child,
            stdout,
            stderr,
            timeout: self.timeout,
        }
    }

    /// Runs to the end (or the timeout).
    pub fn run(self) -> Output {
        self.spawn().wait()
    }
}

type Shared = std::sync::Arc<std::sync::Mutex<Vec<u8>>>;

fn reader(mut r: impl Read + Send + 'static) -> (Shared, Option<JoinHandle<()>>) {
    let shared = Shared::default();
    let sink = shared.clone();
    let handle = std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => sink
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(&buf[..n]),
            }
        }
    });
    (shared, Some(handle))
}

fn text(shared: &Shared) -> String {
    String::from_utf8_lossy(&shared.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

/// A `host` process under test.
pub struct Running {
    child: Child,
    stdout: (Shared, Option<JoinHandle<()>>),
    stderr: (Shared, Option<JoinHandle<()>>),
    timeout: Duration,
}

impl Running {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has exited.
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// What the process printed on stdout so far.
    pub fn stdout_so_far(&self) -> String {
        text(&self.stdout.0)
    }

    /// What the process logged on stderr so far.
    pub fn stderr_so_far(&self) -> String {
        text(&self.stderr.0)
    }

    /// Waits until stdout has at least `n` lines; panics after `timeout`
    /// with what was printed and logged.
    pub fn wait_for_lines(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.stdout_so_far().lines().count() < n {
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {n} output lines\n--- stdout\n{}\n--- stderr\n{}",
                    self.stdout_so_far(),
                    self.stderr_so_far()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the log contains `needle`; panics after `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.stderr_so_far().contains(needle) {
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {needle:?} in the log\n--- stderr\n{}",
                    self.stderr_so_far()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for `n` output lines, then stops the process with `signal`
    /// and returns what it left.
    pub fn stop_after_lines(self, n: usize, signal: &str) -> Output {
        self.wait_for_lines(n, Duration::from_secs(20));
        self.signal(signal);
        self.wait()
    }

    /// Sends a signal (e.g. `"INT"`, `"TERM"`, `"KILL"`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the exit; kills the process and panics after the timeout.
    pub fn wait(mut self) -> Output {
        let deadline = Instant::now() + self.timeout;
        let status: ExitStatus = loop {
            if let Some(status) = self.child.try_wait().expect("wait for host") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "host did not exit within {:?}\n--- stderr\n{}",
                    self.timeout,
                    self.stderr_so_far()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for handle in [self.stdout.1.take(), self.stderr.1.take()]
            .into_iter()
            .flatten()
        {
            let _ = handle.join();
        }
        Output {
            code: status.code(),
            stdout: text(&self.stdout.0),
            stderr: text(&self.stderr.0),
        }
    }
}

impl Drop for Running {
    /// A test that fails before it waits for the host leaves no host
    /// running behind it.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What a [`LineServer`] connection does, step by step.
#[derive(Debug, Clone)]
pub enum Step {
    /// Send these bytes.
    Send(Vec<u8>),
    /// Wait.
    Sleep(Duration),
    /// Close this connection (the next accepted one runs the next script).
    Close,
}

/// Shorthand: one line (a newline is added).
pub fn line(s: &str) -> Step {
    Step::Send(format!("{s}\n").into_bytes())
}

/// A loopback TCP server that plays scripts to the clients that connect,
/// one script per connection, like `nc -lk PORT` typed into by hand.
pub struct LineServer {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    handle: Option<JoinHandle<usize>>,
}

impl LineServer {
    /// Listens on a free loopback port; serves `scripts` in order to
    /// successive connections, then keeps the last connection open until
    /// the peer closes it or `linger` passes.
    pub fn start(scripts: Vec<Vec<Step>>, linger: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        Self::serve(listener, scripts, linger)
    }

    /// Like [`LineServer::start`], on `port` — the one a restored job
    /// remembers, as `nc -lk PORT` started again would. Waits (up to 10 s)
    /// for the port to be free, since a server of the job before may only
    /// now be closing.
    pub fn start_on(port: u16, scripts: Vec<Vec<Step>>, linger: Duration) -> Self {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", port)) {
                Ok(listener) => break listener,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("cannot listen on 127.0.0.1:{port} again: {e}"),
            }
        };
        Self::serve(listener, scripts, linger)
    }

    fn serve(listener: TcpListener, scripts: Vec<Vec<Step>>, linger: Duration) -> Self {
        let port = listener.local_addr().expect("local addr").port();
        let handle = std::thread::spawn(move || {
            let mut served = 0;
            for script in scripts {
                let Ok((mut conn, _)) = listener.accept() else {
                    break;
                };
                served += 1;
                let mut closed = false;
                for step in script {
                    match step {
                        Step::Send(bytes) => {
                            if conn.write_all(&bytes).is_err() {
                                break;
                            }
                        }
                        Step::Sleep(d) => std::thread::sleep(d),
                        Step::Close => {
                            closed = true;
                            break;
                        }
                    }
                }
                if !closed {
                    hold_open(&mut conn, linger);
                }
            }
            served
        });
        LineServer {
            port,
            handle: Some(handle),
        }
    }

    /// The source URI for this server.
    pub fn uri(&self) -> String {
        format!("socket://127.0.0.1:{}", self.port)
    }

    /// Waits for the server thread; returns how many connections it served.
    pub fn join(mut self) -> usize {
        self.handle
            .take()
            .map(|h| h.join().unwrap_or(0))
            .unwrap_or(0)
    }
}

/// Keeps a connection open until the peer closes it or `linger` passes.
fn hold_open(conn: &mut TcpStream, linger: Duration) {
    let deadline = Instant::now() + linger;
    let _ = conn.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = [0u8; 64];
    while Instant::now() < deadline {
        match conn.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// Waits until `cond` holds, polling every 20 ms; panics after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The real servers the Kafka and S3 tests run against, as `scripts/test`
/// starts them (`scripts/servers`): their addresses come from the
/// environment, and a test that needs one fails, naming what to run, when
/// it is not set.
pub mod servers {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    use std::time::Duration;

    use bytes::Bytes;
    use sluice_host::connector::ConnectorEnv;
    pub use sluice_host::connector::kafka::cluster::NewRecord;
    use sluice_host::connector::kafka::cluster::encode_records;
    use sluice_host::connector::kafka::{Cluster, Security};

    fn var(name: &str) -> String {
        match std::env::var(name) {
            Ok(v) if !v.is_empty() => v,
            _ => panic!(
                "{name} is not set: this test needs the Kafka and S3 servers; run it with `scripts/test`, \
                 which starts them, or `eval \"$(scripts/servers start DIR)\"` first"
            ),
        }
    }

    /// `HOST:PORT` of the test broker (`SLUICE_KAFKA_BROKERS`).
    pub fn brokers() -> String {
        var("SLUICE_KAFKA_BROKERS")
    }

    /// The test bucket (`SLUICE_S3_BUCKET`), after checking the S3
    /// variables are set.
    pub fn bucket() -> String {
        var("AWS_ENDPOINT_URL");
        var("AWS_ACCESS_KEY_ID");
        var("SLUICE_S3_BUCKET")
    }

    /// A topic name no other test uses.
    pub fn unique(tag: &str) -> String {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        format!(
            "{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// The security settings the helpers use per broker list (none:
    /// plain TCP), set by [`secure`].
    fn securities() -> &'static Mutex<HashMap<String, Arc<Security>>> {
        static S: OnceLock<Mutex<HashMap<String, Arc<Security>>>> = OnceLock::new();
        S.get_or_init(Mutex::default)
    }

    /// From now on the helpers connect to `brokers` with the security
    /// options `query` (`security=ssl&ca=PATH`, as a `kafka://` URI
    /// takes them).
    pub fn secure(brokers: &str, query: &str) {
        let security = Security::from_query(query, &ConnectorEnv::default())
            .unwrap_or_else(|e| panic!("bad security options `{query}`: {e}"));
        securities()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(brokers.to_string(), Arc::new(security));
    }

    /// A client of `brokers` (secured as [`secure`] said).
    pub fn cluster(brokers: &str) -> Cluster {
        let list: Vec<String> = brokers.split(',').map(str::to_string).collect();
        let security = securities()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(brokers)
            .cloned()
            .unwrap_or_default();
        let t = Duration::from_secs(10);
        Cluster::connect_secured(&list, security, t, t)
            .unwrap_or_else(|e| panic!("cannot reach the test broker at {brokers}: {e}"))
    }

    /// Creates `topic` with `partitions` partitions on `brokers`.
    pub fn create_topic(brokers: &str, topic: &str, partitions: i32) {
        cluster(brokers)
            .create_topic(topic, partitions)
            .unwrap_or_else(|e| panic!("cannot create topic {topic}: {e}"));
    }

    /// Appends `values` (no key) to one partition.
    pub fn produce(brokers: &str, topic: &str, partition: i32, values: &[&[u8]]) {
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let records = values.iter().map(|v| NewRecord {
            value: Bytes::copy_from_slice(v),
            timestamp,
            ..NewRecord::default()
        });
        produce_records(brokers, topic, partition, records.collect());
    }

    /// Appends `records` (keys, timestamps and headers their own) to one
    /// partition, in one batch.
    pub fn produce_records(brokers: &str, topic: &str, partition: i32, records: Vec<NewRecord>) {
        let mut c = cluster(brokers);
        let t = c.topic(topic).expect("metadata").expect("the topic exists");
        let node = t.leaders[&partition];
        let batch = encode_records(records).expect("encode");
        let results = c
            .produce(node, topic, vec![(partition, batch)])
            .expect("produce");
        for (p, r) in results {
            r.unwrap_or_else(|e| panic!("produce to {topic}/{p}: {e}"));
        }
    }

    /// SeaweedFS's filer, which serves the S3 buckets as `/buckets/NAME/`:
    /// its port moves with the S3 port (`scripts/servers`).
    fn filer() -> String {
        let s3: u16 = var("SLUICE_S3_PORT")
            .parse()
            .expect("SLUICE_S3_PORT is a port");
        format!("127.0.0.1:{}", u32::from(s3) + 8888 - 8333)
    }

    /// One HTTP/1.0 request to the filer: the status and the body.
    fn filer_request(method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(filer()).expect("connect to SeaweedFS's filer");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.set_write_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let head = format!(
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).expect("write to the filer");
        s.write_all(body).expect("write to the filer");
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).expect("read the filer's answer");
        let split = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("an HTTP answer");
        let status = std::str::from_utf8(&answer[..split])
            .ok()
            .and_then(|h| h.split(' ').nth(1)?.parse().ok())
            .expect("an HTTP status");
        (status, answer[split + 4..].to_vec())
    }

    /// The file at `path` in SeaweedFS (`/buckets/BUCKET/KEY`).
    pub fn filer_get(path: &str) -> Vec<u8> {
        let (status, body) = filer_request("GET", path, &[]);
        assert_eq!(
            status,
            200,
            "GET {path}: {}",
            String::from_utf8_lossy(&body)
        );
        body
    }

    /// Writes the file at `path` in SeaweedFS.
    pub fn filer_put(path: &str, bytes: &[u8]) {
        let (status, body) = filer_request("PUT", path, bytes);
        assert!(
            (200..300).contains(&status),
            "PUT {path}: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }

    /// A record read back.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Read {
        /// Its partition.
        pub partition: i32,
        /// Its offset.
        pub offset: i64,
        /// Its key, as text.
        pub key: Option<String>,
        /// Its value, as text.
        pub value: String,
        /// Its header names.
        pub headers: Vec<String>,
    }

    /// Every record of `topic`, partition by partition.
    pub fn read_all(brokers: &str, topic: &str) -> Vec<Read> {
        let mut c = cluster(brokers);
        let t = c.topic(topic).expect("metadata").expect("the topic exists");
        let mut out = Vec::new();
        for (&p, &node) in &t.leaders {
            let mut at = 0;
            let mut empty = 0;
            loop {
                // Tansu answers what it read within the wait: ask again.
                let fetched = c
                    .fetch(node, topic, &[(p, at)], Duration::from_millis(200), 4 << 20)
                    .expect("fetch");
                let f = fetched
                    .into_iter()
                    .find(|f| f.partition == p)
                    .expect("partition");
                assert!(f.error.is_none(), "fetch {topic}/{p}: {:?}", f.error);
                for r in &f.records {
                    out.push(Read {
                        partition: p,
                        offset: r.offset,
                        key: r
                            .key
                            .as_ref()
                            .map(|k| String::from_utf8_lossy(k).into_owned()),
                        value: String::from_utf8_lossy(r.value.as_deref().unwrap_or_default())
                            .into_owned(),
                        headers: r.headers.iter().map(|(k, _)| k.clone()).collect(),
                    });
                }
                if f.next >= f.high_watermark {
                    break;
                }
                if f.next <= at {
                    empty += 1;
                    assert!(empty < 50, "{topic}/{p} gives no records from {at}");
                    continue;
                }
                at = f.next;
            }
        }
        out
    }
}

/// A TCP proxy on loopback in front of a real server, which a test can
/// take down (connections refused, open ones cut) and bring back, to
/// stand for the server failing for a while.
pub struct Proxy {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>>,
    upstream: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Proxy {
    /// Forwards a free loopback port to `upstream` (`HOST:PORT`).
    pub fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let port = listener.local_addr().expect("addr").port();
        let proxy = Proxy {
            port,
            up: Default::default(),
            open: Default::default(),
            upstream: upstream.to_string(),
            stop: Default::default(),
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: TcpListener) {
        use std::sync::atomic::Ordering;
        self.up.store(true, Ordering::SeqCst);
        listener.set_nonblocking(true).expect("nonblocking");
        let (up, open, stop, upstream) = (
            self.up.clone(),
            self.open.clone(),
            self.stop.clone(),
            self.upstream.clone(),
        );
        std::thread::spawn(move || {
            while up.load(Ordering::SeqCst) && !stop.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
                        continue;
                    };
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
                let mut open = open.lock().unwrap_or_else(|p| p.into_inner());
                open.extend([client, server]);
            }
            // Dropping the listener refuses new connections.
        });
    }

    /// Takes the proxy down: new connections are refused, open ones cut.
    pub fn down(&self) {
        use std::sync::atomic::Ordering;
        self.up.store(false, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(50));
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        for s in open.drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Brings it back on the same port.
    pub fn up(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(l) => break l,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "cannot listen again on {}: {e}",
                        self.port
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        self.serve(listener);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.down();
    }
}

/// TLS for the Kafka tests: certificates made at run time with the
/// `openssl` command into the test's directory (no key is committed), and
/// a TLS front — a listener that terminates TLS and forwards the bytes to
/// a plain broker, as a load balancer in front of a managed Kafka does.
/// Tansu 0.6.0 takes `--cert`/`--key` but refuses the two together and
/// listens in plain TCP with either alone, so the front stands in for a
/// broker's own TLS listener.
pub mod tls {
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::Arc;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    /// A CA and a server certificate it signed, for `127.0.0.1` and
    /// `localhost`, as PEM files.
    pub struct Certs {
        /// The CA's certificate.
        pub ca: PathBuf,
        /// The server's certificate.
        pub cert: PathBuf,
        /// The server's private key.
        pub key: PathBuf,
    }

    fn openssl(dir: &Path, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the `openssl` command runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Makes a CA (common name `cn`) and a server certificate signed by
    /// it in `dir`.
    pub fn certs(dir: &Path, cn: &str) -> Certs {
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let subject = format!("/CN={cn}");
        let mut ca = vec![
            "req", "-x509", "-days", "2", "-keyout", "ca.key", "-out", "ca.pem", "-subj",
        ];
        ca.push(&subject);
        ca.extend_from_slice(&ec);
        openssl(dir, &ca);
        let mut csr = vec![
            "req",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ];
        csr.extend_from_slice(&ec);
        openssl(dir, &csr);
        std::fs::write(
            dir.join("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .expect("write san.ext");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-days",
                "2",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-extfile",
                "san.ext",
            ],
        );
        Certs {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        }
    }

    /// A TLS listener on `127.0.0.1:PORT` that forwards each connection to
    /// a plain broker; stopped when dropped.
    pub struct Front {
        runtime: Option<tokio::runtime::Runtime>,
    }

    impl Front {
        /// Listens on `port` with `certs`' server certificate and forwards
        /// to `127.0.0.1:backend`.
        pub fn start(port: u16, backend: u16, certs: &Certs) -> Front {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&certs.cert)
                .expect("the server certificate")
                .collect::<Result<_, _>>()
                .expect("PEM certificates");
            let key = PrivateKeyDer::from_pem_file(&certs.key).expect("the server key");
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .expect("a server certificate");
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_io()
                .build()
                .expect("a runtime");
            // A front just stopped on the same port lets it go in the
            // background: wait for it (up to 10 s).
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            let listener = loop {
                match runtime.block_on(tokio::net::TcpListener::bind(("127.0.0.1", port))) {
                    Ok(listener) => break listener,
                    Err(e)
                        if e.kind() == std::io::ErrorKind::AddrInUse
                            && std::time::Instant::now() < deadline =>
                    {
                        std::thread::sleep(std::time::Duration::from_millis(50));
                    }
                    Err(e) => panic!("cannot listen on 127.0.0.1:{port}: {e}"),
                }
            };
            runtime.spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        let Ok(mut tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let Ok(mut plain) =
                            tokio::net::TcpStream::connect(("127.0.0.1", backend)).await
                        else {
                            return;
                        };
                        let _ = plain.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    });
                }
            });
            Front {
                runtime: Some(runtime),
            }
        }
    }

    impl Drop for Front {
        fn drop(&mut self) {
            if let Some(r) = self.runtime.take() {
                r.shutdown_background();
            }
        }
    }
}
