//! `host serve` end to end: a real server on loopback HTTP, driven by an
//! HTTP client as a tenant's tools would — tenants and tokens, modules,
//! jobs on the wordcount guest, operations, quotas, isolation, metrics,
//! the API document, a `kill -9` of the server — and the CLI client.
//!
//! Every server is started on `127.0.0.1:0` in a temporary directory and
//! killed when its test ends; every wait is bounded.

mod access;
mod client;
mod connections;
mod dashboard;
mod jobs;
mod pipeline;
mod restart;
mod uploads;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_tests::{TempDir, host_bin};

/// The admin's token every test server is started with.
pub const ADMIN: &str = "admin-token-for-the-tests-0123456789";

/// A `host serve` process; killed when dropped.
pub struct Served {
    child: Child,
    /// Its base URL (`http://127.0.0.1:PORT`).
    pub url: String,
    log: Arc<Mutex<String>>,
}

impl Served {
    /// Starts a server on `dir`'s `data` directory with `extra` flags and
    /// waits (up to 30 s) until it listens.
    pub fn start(dir: &TempDir, extra: &[&str]) -> Served {
        let token = dir.path("admin.token");
        if !token.exists() {
            std::fs::write(&token, ADMIN).expect("write the admin token");
        }
        let mut child = Command::new(host_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path("data"))
            .arg("--admin-token-file")
            .arg(&token)
            .args(extra)
            .env_remove("SLUICE_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start host serve");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let stderr = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap_or_else(|p| p.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = loop {
            let text = log.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if let Some(i) = text.find("serving on ") {
                let rest = &text[i + "serving on ".len()..];
                break rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("host serve exited ({status}) before listening\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "host serve did not listen within 30 s\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Served { child, url, log }
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Kills it with SIGKILL, as a crash would.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops it with SIGTERM and waits (up to 20 s); how long it took and
    /// its exit code.
    pub fn terminate(mut self) -> (Duration, Option<i32>) {
        let started = Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        while started.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (started.elapsed(), status.code());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "host serve did not stop within 20 s of SIGTERM\n{}",
            self.log()
        );
    }

    /// A client of it.
    pub fn api(&self) -> Api {
        Api::new(&self.url)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- the server's log\n{}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An answer.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// The body as JSON (a string when it is not JSON).
    pub body: Value,
    /// The `Content-Type`.
    pub content_type: String,
}

impl Reply {
    /// Panics unless the status is `status`.
    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {:#}",
            self.body
        );
        self.body
    }

    /// Panics unless this is a problem+json answer of `status` whose
    /// detail contains `needle`.
    #[track_caller]
    pub fn problem(self, status: u16, needle: &str) -> Value {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {:#}",
            self.body
        );
        assert_eq!(
            self.content_type, "application/problem+json",
            "body: {:#}",
            self.body
        );
        let detail = self.body["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(needle),
            "detail {detail:?} lacks {needle:?}"
        );
        assert_eq!(self.body["status"], status);
        self.body
    }
}

/// What a request sends.
#[derive(Clone)]
pub enum Send {
    /// Nothing.
    None,
    /// JSON.
    Json(Value),
    /// Raw bytes.
    Bytes(Vec<u8>),
}

/// A small HTTP client of the API.
pub struct Api {
    agent: ureq::Agent,
    url: String,
}

impl Api {
    fn new(url: &str) -> Api {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(90)))
            .build();
        Api {
            agent: config.into(),
            url: url.to_string(),
        }
    }

    /// `method path` with `token`, sending `body`.
    pub fn call(&self, method: &str, path: &str, token: Option<&str>, body: Send) -> Reply {
        // An idempotent request goes again once when the pooled connection
        // it went out on turns out closed (the server closes one after a
        // body it refuses from its length).
        let once = match method {
            "GET" | "PUT" | "DELETE" => self.try_call(method, path, token, body.clone()).ok(),
            _ => None,
        };
        once.unwrap_or_else(|| {
            self.try_call(method, path, token, body)
                .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
        })
    }

    /// Like [`Api::call`], with the transport's error when there is one.
    pub fn try_call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Send,
    ) -> Result<Reply, String> {
        let url = format!("{}{path}", self.url);
        let auth = token.map(|t| format!("Bearer {t}"));
        macro_rules! with_auth {
            ($req:expr) => {{
                let req = $req;
                match &auth {
                    Some(a) => req.header("Authorization", a),
                    None => req,
                }
            }};
        }
        let response = match method {
            "GET" => with_auth!(self.agent.get(&url)).call(),
            "DELETE" => with_auth!(self.agent.delete(&url)).call(),
            m => {
                let req = match m {
                    "PUT" => self.agent.put(&url),
                    "PATCH" => self.agent.patch(&url),
                    _ => self.agent.post(&url),
                };
                let req = with_auth!(req);
                match body {
                    Send::None => req.send_empty(),
                    Send::Json(v) => req.send_json(v),
                    Send::Bytes(b) => req.send(&b[..]),
                }
            }
        };
        let mut response = response.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let text = response
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Reply {
            status,
            body,
            content_type,
        })
    }

    /// GET.
    pub fn get(&self, path: &str, token: &str) -> Reply {
        self.call("GET", path, Some(token), Send::None)
    }

    /// POST of JSON.
    pub fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call("POST", path, Some(token), Send::Json(body))
    }

    /// Creates a tenant (as the admin) with `extra` fields.
    pub fn tenant(&self, name: &str, extra: Value) -> Value {
        let mut body = json!({ "name": name });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        self.post("/v1/tenants", ADMIN, body).expect(201)
    }

    /// A new token of `tenant` with `role` (made by the admin).
    pub fn token(&self, tenant: &str, role: &str) -> String {
        let body = json!({ "name": "t", "role": role });
        let made = self
            .post(&format!("/v1/tenants/{tenant}/tokens"), ADMIN, body)
            .expect(201);
        made["token"]
            .as_str()
            .expect("the token is shown once")
            .to_string()
    }

    /// Uploads a module; its digest.
    pub fn push(&self, tenant: &str, token: &str, bytes: Vec<u8>) -> String {
        let r = self.call(
            "POST",
            &format!("/v1/tenants/{tenant}/modules"),
            Some(token),
            Send::Bytes(bytes),
        );
        assert!(
            matches!(r.status, 200 | 201),
            "upload: {} {:#}",
            r.status,
            r.body
        );
        r.body["digest"].as_str().expect("a digest").to_string()
    }

    /// Submits a job; its id.
    pub fn submit(&self, tenant: &str, token: &str, module: &str, settings: Value) -> String {
        let body = json!({ "module": module, "settings": settings });
        let job = self
            .post(&format!("/v1/tenants/{tenant}/jobs"), token, body)
            .expect(201);
        job["id"].as_str().expect("a job id").to_string()
    }

    /// Uploads a tenant's file.
    pub fn put_file(&self, tenant: &str, token: &str, path: &str, bytes: &[u8]) -> Reply {
        self.call(
            "PUT",
            &format!("/v1/tenants/{tenant}/files/{path}"),
            Some(token),
            Send::Bytes(bytes.to_vec()),
        )
    }

    /// A tenant's file, as text ("" when there is none).
    pub fn file(&self, tenant: &str, token: &str, path: &str) -> String {
        match self.get(&format!("/v1/tenants/{tenant}/files/{path}"), token) {
            Reply {
                status: 200,
                body: Value::String(s),
                ..
            } => s,
            Reply {
                status: 200, body, ..
            } => body.to_string(),
            _ => String::new(),
        }
    }

    /// Polls a job until `done` holds of it (up to 60 s).
    #[track_caller]
    pub fn wait_job(
        &self,
        tenant: &str,
        token: &str,
        job: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v = self
                .get(&format!("/v1/tenants/{tenant}/jobs/{job}"), token)
                .expect(200);
            if done(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {v:#}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Polls an operation until it ends (up to 90 s).
    #[track_caller]
    pub fn wait_op(&self, tenant: &str, token: &str, op: &Value) -> Value {
        let id = op["id"].as_str().expect("an operation id");
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let v = self
                .get(&format!("/v1/tenants/{tenant}/operations/{id}"), token)
                .expect(200);
            if v["status"] != "running" {
                return v;
            }
            assert!(Instant::now() < deadline, "operation did not end: {v:#}");
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Polls a tenant's file until it has `n` lines (up to 60 s).
    #[track_caller]
    pub fn wait_lines(&self, tenant: &str, token: &str, path: &str, n: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = self.file(tenant, token, path);
            if text.lines().count() >= n {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {n} lines in {path}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

/// A loopback line server a job's `socket://` source connects to: the test
/// sends lines to the newest connection when it chooses.
pub struct Feeder {
    /// Its port.
    pub port: u16,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl Feeder {
    /// Listens on a free loopback port.
    pub fn start() -> Feeder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (conns.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => c.lock().unwrap_or_else(|p| p.into_inner()).push(conn),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Feeder { port, conns, stop }
    }

    /// `HOST:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.conns.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Sends `lines` on connection number `n` (from 1), waiting up to 30 s
    /// for it.
    #[track_caller]
    pub fn send(&self, n: usize, lines: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.connections() < n {
            assert!(
                Instant::now() < deadline,
                "the job did not connect (connection {n})"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        conns[n - 1].write_all(text.as_bytes()).expect("send lines");
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What wordcount prints for `lines`: `(word,count)` per word, in order.
pub fn counts(lines: &[&str]) -> String {
    let mut seen = std::collections::HashMap::new();
    let mut out = String::new();
    for line in lines {
        for word in line.split_whitespace() {
            let n = seen.entry(word.to_string()).or_insert(0);
            *n += 1;
            out.push_str(&format!("({word},{n})\n"));
        }
    }
    out
}

/// The wordcount guest's bytes.
pub fn wordcount() -> Vec<u8> {
    std::fs::read(sluice_tests::guests::WORDCOUNT)
        .expect("the wordcount guest (built by tests/build.rs)")
}

/// A guest's bytes.
pub fn guest(path: &str) -> Vec<u8> {
    std::fs::read(PathBuf::from(path)).expect("a test guest (built by tests/build.rs)")
}

/// A tenant `name` allowed to reach `feeder`, with its developer's token.
pub fn tenant_with(api: &Api, name: &str, feeder: Option<&Feeder>, quota: Value) -> String {
    let hosts: Vec<String> = feeder.map(Feeder::addr).into_iter().collect();
    api.tenant(name, json!({ "allowed-hosts": hosts, "quota": quota }));
    api.token(name, "developer")
}
