//! `sluice-bench serve`: one `host serve` with many tenants' jobs —
//! module upload to compiled, submit to RUNNING, the resident memory an
//! idle job costs, REST latency with every job running, and a noisy
//! neighbour (a tenant limited to a CPU share running a spinning guest, a
//! memory bomb and an output flood beside a tenant running wordcount).

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

const ADMIN: &str = "admin-token-of-the-benchmark-0123456789";

/// A server under measurement; killed when dropped.
struct Server {
    child: Child,
    url: String,
    agent: ureq::Agent,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(host: &Path, work: &Path) -> Result<Server> {
        let token = work.join("admin.token");
        std::fs::write(&token, ADMIN)?;
        let log = std::fs::File::create(work.join("serve.log"))?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(host)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(work.join("data"))
            .arg("--admin-token-file")
            .arg(&token)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("start host serve")?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        let server = Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
            agent,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while server
            .agent
            .get(format!("{}/healthz", server.url))
            .call()
            .is_err()
        {
            if Instant::now() > deadline {
                bail!("host serve did not listen within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
        raw: Option<&[u8]>,
    ) -> Result<Value> {
        let url = format!("{}{path}", self.url);
        let auth = format!("Bearer {token}");
        let mut r = match (method, body, raw) {
            ("GET", _, _) => self.agent.get(&url).header("Authorization", &auth).call()?,
            (_, Some(b), _) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .send_json(b)?,
            (_, None, Some(bytes)) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .send(bytes)?,
            _ => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .send_empty()?,
        };
        let status = r.status().as_u16();
        let text = r
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status >= 400 {
            bail!("{method} {path}: HTTP {status}: {v}");
        }
        Ok(v)
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// A tenant with `quota` allowed to reach `hosts`; a developer's token.
    fn tenant(&self, name: &str, quota: Value, hosts: &[String]) -> Result<String> {
        self.call(
            "POST",
            "/v1/tenants",
            ADMIN,
            Some(json!({"name": name, "quota": quota, "allowed-hosts": hosts})),
            None,
        )?;
        let t = self.call(
            "POST",
            &format!("/v1/tenants/{name}/tokens"),
            ADMIN,
            Some(json!({"name": "bench", "role": "developer"})),
            None,
        )?;
        t["token"]
            .as_str()
            .map(String::from)
            .ok_or_else(|| anyhow!("no token"))
    }
}

/// A socket that accepts every connection and keeps it (idle jobs'
/// sources); lines can be sent to all of them.
struct Idle {
    addr: String,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Idle {
    fn start() -> Result<Idle> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?.to_string();
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let c = conns.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                c.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
            }
        });
        Ok(Idle { addr, conns })
    }

    fn send_all(&self, text: &str) {
        for c in self
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter_mut()
        {
            let _ = c.write_all(text.as_bytes());
        }
    }
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v.get(((v.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Submits a job and waits until it is RUNNING; how long that took.
fn submit_running(
    s: &Server,
    tenant: &str,
    token: &str,
    body: Value,
) -> Result<(String, Duration)> {
    let started = Instant::now();
    let job = s.call(
        "POST",
        &format!("/v1/tenants/{tenant}/jobs"),
        token,
        Some(body),
        None,
    )?;
    let id = job["id"].as_str().unwrap_or_default().to_string();
    loop {
        let v = s.call(
            "GET",
            &format!("/v1/tenants/{tenant}/jobs/{id}"),
            token,
            None,
            None,
        )?;
        if v["state"] == "RUNNING" {
            return Ok((id, started.elapsed()));
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("job {id} did not run: {v}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Many tenants' idle jobs: compile, submit-to-RUNNING, memory, REST.
pub fn many(host: &Path, module: &Path, work: &Path, tenants: usize, per: usize) -> Result<()> {
    let s = Server::start(host, work)?;
    let idle = Idle::start()?;
    let bytes = std::fs::read(module)?;
    let mut compiles = Vec::new();
    let mut tokens = Vec::new();
    for t in 0..tenants {
        let name = format!("t{t}");
        let token = s.tenant(
            &name,
            json!({"running-jobs": per, "parallelism": per}),
            std::slice::from_ref(&idle.addr),
        )?;
        let started = Instant::now();
        let m = s.call(
            "POST",
            &format!("/v1/tenants/{name}/modules"),
            &token,
            None,
            Some(&bytes),
        )?;
        compiles.push(started.elapsed());
        tokens.push((
            name,
            token,
            m["digest"].as_str().unwrap_or_default().to_string(),
        ));
    }
    let before = s.rss_kib();
    let mut starts = Vec::new();
    let mut jobs = Vec::new();
    for (name, token, digest) in &tokens {
        for _ in 0..per {
            let body = json!({"module": digest, "settings": {"source": format!("socket://{}", idle.addr), "sink": "discard", "checkpoint-interval": "10s"}});
            let (id, took) = submit_running(&s, name, token, body)?;
            starts.push(took);
            jobs.push((name.clone(), token.clone(), id));
        }
    }
    idle.send_all("warm up\n");
    std::thread::sleep(Duration::from_secs(2));
    let after = s.rss_kib();
    let n = jobs.len();
    println!("serve: {tenants} tenants x {per} jobs = {n} idle wordcount jobs in one server");
    println!(
        "  upload to compiled (Rust wordcount, {} KB): median {}, max {}",
        bytes.len() / 1000,
        ms(percentile(compiles.clone(), 0.5)),
        ms(percentile(compiles, 1.0))
    );
    println!(
        "  submit to RUNNING: p50 {}, p99 {}",
        ms(percentile(starts.clone(), 0.5)),
        ms(percentile(starts, 0.99))
    );
    println!(
        "  RSS: {} MiB before the jobs, {} MiB with them: {:.2} MiB per idle job",
        before / 1024,
        after / 1024,
        (after.saturating_sub(before)) as f64 / 1024.0 / n as f64
    );
    rest_latency(&s, &jobs)
}

/// GETs of job details and lists with every job running.
fn rest_latency(s: &Server, jobs: &[(String, String, String)]) -> Result<()> {
    let mut times = Vec::new();
    for i in 0..1000 {
        let (tenant, token, id) = &jobs[i % jobs.len()];
        let path = if i % 5 == 0 {
            format!("/v1/tenants/{tenant}/jobs?limit=100")
        } else {
            format!("/v1/tenants/{tenant}/jobs/{id}")
        };
        let started = Instant::now();
        s.call("GET", &path, token, None, None)?;
        times.push(started.elapsed());
    }
    println!(
        "  REST latency over 1000 GETs (job details, 1 in 5 a job list): p50 {}, p99 {}",
        ms(percentile(times.clone(), 0.5)),
        ms(percentile(times, 0.99))
    );
    Ok(())
}

/// Runs tenant A's wordcount over `input` once; M words/s.
fn wordcount_run(s: &Server, token: &str, digest: &str) -> Result<f64> {
    let started = Instant::now();
    let body = json!({"module": digest, "settings": {"source": "file://input.txt", "sink": "discard", "checkpoint-interval": "off"}});
    let job = s.call("POST", "/v1/tenants/a/jobs", token, Some(body), None)?;
    let id = job["id"].as_str().unwrap_or_default().to_string();
    loop {
        let v = s.call(
            "GET",
            &format!("/v1/tenants/a/jobs/{id}"),
            token,
            None,
            None,
        )?;
        if v["state"] == "FINISHED" {
            let words = v["metrics"]["records_in"].as_u64().unwrap_or(0) * 5;
            return Ok(words as f64 / started.elapsed().as_secs_f64() / 1e6);
        }
        if v["state"] == "FAILED" {
            bail!("wordcount failed: {v}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Tenant B (a CPU share of `share`) runs a spinning guest, a memory bomb
/// and an output flood while tenant A runs wordcount over `input`.
pub fn noisy(
    host: &Path,
    module: &Path,
    hostile: &Path,
    input: &Path,
    work: &Path,
    share: f64,
) -> Result<()> {
    let s = Server::start(host, work)?;
    let b_source = Idle::start()?;
    let a = s.tenant("a", json!({"cpu": 2.0}), &[])?;
    let b = s.tenant(
        "b",
        json!({"cpu": share}),
        std::slice::from_ref(&b_source.addr),
    )?;
    let wc = s.call(
        "POST",
        "/v1/tenants/a/modules",
        &a,
        None,
        Some(&std::fs::read(module)?),
    )?["digest"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let evil = s.call(
        "POST",
        "/v1/tenants/b/modules",
        &b,
        None,
        Some(&std::fs::read(hostile)?),
    )?["digest"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let agent = &s.agent;
    agent
        .put(format!("{}/v1/tenants/a/files/input.txt", s.url))
        .header("Authorization", format!("Bearer {a}"))
        .send(&std::fs::read(input)?[..])?;
    let alone = median(
        (0..3)
            .map(|_| wordcount_run(&s, &a, &wc))
            .collect::<Result<Vec<_>>>()?,
    );
    let spin = json!({"module": evil, "settings": {"source": format!("socket://{}", b_source.addr), "sink": "print", "parallelism": 2, "call-timeout": "120s", "max-memory": "64MiB", "restart": "fixed-delay:1000:10ms"}});
    s.call("POST", "/v1/tenants/b/jobs", &b, Some(spin), None)?;
    std::thread::sleep(Duration::from_millis(500));
    b_source.send_all(&"loop\nalloc\nflood\n".repeat(20));
    std::thread::sleep(Duration::from_secs(1));
    let q0 = s.call("GET", "/v1/tenants/b/quota", &b, None, None)?;
    let t0 = Instant::now();
    let busy = median(
        (0..3)
            .map(|_| wordcount_run(&s, &a, &wc))
            .collect::<Result<Vec<_>>>()?,
    );
    let q1 = s.call("GET", "/v1/tenants/b/quota", &b, None, None)?;
    let secs = t0.elapsed().as_secs_f64();
    let used = |q: &Value, k: &str| q["usage"][k].as_f64().unwrap_or(0.0);
    let cpu = (used(&q1, "cpu-seconds") - used(&q0, "cpu-seconds")) / secs;
    let waited = (used(&q1, "cpu-throttled-seconds") - used(&q0, "cpu-throttled-seconds")) / secs;
    println!(
        "noisy neighbour: tenant B (cpu {share}) spins, bombs its memory and floods its output while tenant A counts words"
    );
    println!(
        "  A alone: {alone:.2} M words/s; beside B: {busy:.2} M words/s ({:.2} x)",
        busy / alone
    );
    println!(
        "  B's guests used {cpu:.3} cores over {secs:.1} s (share {share}: {:+.0} %), waiting {waited:.2} thread-seconds per second",
        (cpu / share - 1.0) * 100.0
    );
    Ok(())
}

/// The hostile test guest, built by the tests' build script.
pub fn hostile_guest() -> PathBuf {
    PathBuf::from("target/guests/wasm32-wasip2/guest/guest_hostile.wasm")
}
