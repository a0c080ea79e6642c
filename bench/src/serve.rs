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

/// CPU time (user + system) of process `pid` and of its threads by name
/// (digits dropped, so `sluice-task-0` and `sluice-task-1` add up).
fn cpu_of(pid: u32) -> (f64, std::collections::BTreeMap<String, f64>) {
    let tick = 100.0; // USER_HZ on Linux
    let times = |stat: &str| -> f64 {
        // Fields after the command's closing parenthesis: utime is the
        // 12th, stime the 13th.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let n = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (n(11) + n(12)) / tick
    };
    let total = times(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default());
    let mut by = std::collections::BTreeMap::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let name: String = comm
            .trim()
            .chars()
            .filter(|c| !c.is_ascii_digit())
            .collect();
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        *by.entry(name).or_insert(0.0) += times(&stat);
    }
    (total, by)
}

/// What the server's process and tenants' meters used over a window.
struct Window {
    started: Instant,
    process: f64,
    threads: std::collections::BTreeMap<String, f64>,
    meters: [(f64, f64); 2],
}

impl Server {
    fn meters(&self, tokens: [&str; 2]) -> Result<[(f64, f64); 2]> {
        let one = |tenant: &str, token: &str| -> Result<(f64, f64)> {
            let q = self.call(
                "GET",
                &format!("/v1/tenants/{tenant}/quota"),
                token,
                None,
                None,
            )?;
            let u = |k: &str| q["usage"][k].as_f64().unwrap_or(0.0);
            Ok((u("cpu-seconds"), u("cpu-throttled-seconds")))
        };
        Ok([one("a", tokens[0])?, one("b", tokens[1])?])
    }

    fn window(&self, tokens: [&str; 2]) -> Result<Window> {
        let (process, threads) = cpu_of(self.child.id());
        Ok(Window {
            started: Instant::now(),
            process,
            threads,
            meters: self.meters(tokens)?,
        })
    }

    /// Cores used since `w`: the process, each thread name, A's and B's
    /// meters (used, throttled); and the window's length.
    fn since(&self, w: &Window, tokens: [&str; 2]) -> Result<Used> {
        let secs = w.started.elapsed().as_secs_f64();
        let (process, threads) = cpu_of(self.child.id());
        let m = self.meters(tokens)?;
        let threads = threads
            .into_iter()
            .map(|(k, v)| {
                let before = w.threads.get(&k).copied().unwrap_or(0.0);
                (k, (v - before) / secs)
            })
            .filter(|(_, v)| *v >= 0.005)
            .collect();
        Ok(Used {
            secs,
            process: (process - w.process) / secs,
            threads,
            a: (
                (m[0].0 - w.meters[0].0) / secs,
                (m[0].1 - w.meters[0].1) / secs,
            ),
            b: (
                (m[1].0 - w.meters[1].0) / secs,
                (m[1].1 - w.meters[1].1) / secs,
            ),
        })
    }
}

/// Cores used over a window.
struct Used {
    secs: f64,
    process: f64,
    threads: Vec<(String, f64)>,
    a: (f64, f64),
    b: (f64, f64),
}

impl Used {
    fn threads(&self) -> String {
        let mut t = self.threads.clone();
        t.sort_by(|x, y| y.1.total_cmp(&x.1));
        t.iter()
            .map(|(k, v)| format!("{k} {v:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Tenant B's hostile jobs, each at parallelism 1 on its own source and
/// restarting after every trap: one spinning (each call stopped at its
/// 2 s deadline), one allocating until its 64 MiB limit traps it, one
/// printing 200,000 lines a record; their ids.
fn start_hostile(s: &Server, b: &str, evil: &str, sources: &[Idle; 3]) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    for (source, line) in sources.iter().zip(["loop", "alloc", "flood"]) {
        let spec = json!({"module": evil, "settings": {"source": format!("socket://{}", source.addr), "sink": "print", "call-timeout": "2s", "max-memory": "64MiB", "restart": "fixed-delay:1000000:10ms"}});
        let job = s.call("POST", "/v1/tenants/b/jobs", b, Some(spec), None)?;
        ids.push(job["id"].as_str().unwrap_or_default().to_string());
        let deadline = Instant::now() + Duration::from_secs(30);
        while source
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
        {
            if Instant::now() > deadline {
                bail!("tenant B's job did not connect");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        source.send_all(&format!("{line}\n").repeat(2000));
    }
    std::thread::sleep(Duration::from_secs(1));
    Ok(ids)
}

/// Cancels tenant B's jobs and forgets their sources' connections.
fn cancel_hostile(s: &Server, b: &str, ids: &[String], sources: &[Idle; 3]) -> Result<()> {
    for id in ids {
        s.call(
            "POST",
            &format!("/v1/tenants/b/jobs/{id}/cancel"),
            b,
            Some(json!({})),
            None,
        )?;
    }
    for id in ids {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v = s.call("GET", &format!("/v1/tenants/b/jobs/{id}"), b, None, None)?;
            if v["state"] == "CANCELED" {
                break;
            }
            if Instant::now() > deadline {
                bail!("tenant B's job did not cancel: {v}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    for source in sources {
        source
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
    Ok(())
}

fn upload(s: &Server, tenant: &str, token: &str, module: &Path) -> Result<String> {
    let m = s.call(
        "POST",
        &format!("/v1/tenants/{tenant}/modules"),
        token,
        None,
        Some(&std::fs::read(module)?),
    )?;
    Ok(m["digest"].as_str().unwrap_or_default().to_string())
}

/// Tenant B (a CPU share of `share`) runs a spinning guest, a memory bomb
/// and an output flood while tenant A runs wordcount over `input`, in
/// `rounds` rounds of A alone then A beside B (interleaved, so a build on
/// the machine slows both alike); then B alone, to see what it costs.
pub fn noisy(host: &Path, paths: [&Path; 3], work: &Path, share: f64, rounds: usize) -> Result<()> {
    let [module, hostile, input] = paths;
    let s = Server::start(host, work)?;
    let b_sources = [Idle::start()?, Idle::start()?, Idle::start()?];
    let a = s.tenant("a", json!({"cpu": 2.0}), &[])?;
    let hosts: Vec<String> = b_sources.iter().map(|i| i.addr.clone()).collect();
    let b = s.tenant("b", json!({"cpu": share}), &hosts)?;
    let wc = upload(&s, "a", &a, module)?;
    let evil = upload(&s, "b", &b, hostile)?;
    s.agent
        .put(format!("{}/v1/tenants/a/files/input.txt", s.url))
        .header("Authorization", format!("Bearer {a}"))
        .send(&std::fs::read(input)?[..])?;
    let tokens = [a.as_str(), b.as_str()];
    wordcount_run(&s, &a, &wc)?; // warm up
    println!(
        "noisy neighbour: tenant B (cpu {share}) spins, bombs its memory and floods its output while tenant A counts words ({rounds} interleaved rounds)"
    );
    let (mut alone, mut busy, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        let w = s.window(tokens)?;
        let x = wordcount_run(&s, &a, &wc)?;
        let quiet = s.since(&w, tokens)?;
        let ids = start_hostile(&s, &b, &evil, &b_sources)?;
        let w = s.window(tokens)?;
        let y = wordcount_run(&s, &a, &wc)?;
        let u = s.since(&w, tokens)?;
        println!(
            "  round {round}: A alone {x:.2} M words/s (process {:.2} cores); beside B {y:.2} M words/s ({:.2} x); over {:.1} s the process used {:.2} cores: A's guest {:.2}, B's guest {:.2} (share {share}: {:+.0} %, waiting {:.2}), unmetered {:.2}",
            quiet.process,
            y / x,
            u.secs,
            u.process,
            u.a.0,
            u.b.0,
            (u.b.0 / share - 1.0) * 100.0,
            u.b.1,
            u.process - u.a.0 - u.b.0,
        );
        println!("    threads (cores): {}", u.threads());
        if round == rounds {
            let w = s.window(tokens)?;
            std::thread::sleep(Duration::from_secs(5));
            let u = s.since(&w, tokens)?;
            println!(
                "  B alone over {:.1} s: the process used {:.2} cores, B's meter {:.2} (waiting {:.2}); threads: {}",
                u.secs,
                u.process,
                u.b.0,
                u.b.1,
                u.threads()
            );
        }
        cancel_hostile(&s, &b, &ids, &b_sources)?;
        alone.push(x);
        busy.push(y);
        ratios.push(y / x);
    }
    println!(
        "  median: A alone {:.2} M words/s, beside B {:.2} M words/s; ratio per round median {:.2} x (min {:.2}, max {:.2})",
        median(alone),
        median(busy),
        median(ratios.clone()),
        ratios.iter().copied().fold(f64::INFINITY, f64::min),
        ratios.iter().copied().fold(0.0, f64::max),
    );
    Ok(())
}

/// The hostile test guest, built by the tests' build script.
pub fn hostile_guest() -> PathBuf {
    PathBuf::from("target/guests/wasm32-wasip2/guest/guest_hostile.wasm")
}
