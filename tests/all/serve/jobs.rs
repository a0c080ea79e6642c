//! Jobs through the API: quotas refuse before anything starts; a
//! savepoint, a stop, a start from the savepoint, a rescale and an upgrade
//! each leave the exact counts; idempotency keys start nothing twice;
//! exceptions, events, logs, the output tail and metrics follow the job,
//! and a deleted job's series are gone.

use serde_json::{Value, json};
use sluice_tests::TempDir;

use super::{Api, Feeder, Send, Served, counts, guest, tenant_with, wordcount};

/// A wordcount job on `feeder` into `out.txt`, checkpointing often, that
/// restarts at once.
fn socket_job(api: &Api, token: &str, module: &str, feeder: &Feeder, extra: Value) -> String {
    let mut settings = json!({
        "source": format!("socket://{}", feeder.addr()),
        "sink": "file://out.txt",
        "checkpoint-interval": "100ms",
        "restart": "fixed-delay:100:10ms",
    });
    if let (Some(s), Some(e)) = (settings.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    api.submit("a", token, module, settings)
}

#[test]
fn quotas_refuse_with_problem_json_naming_the_resource_its_limit_and_its_use() {
    let dir = TempDir::new("serve-quotas");
    let server = Served::start(&dir, &[]);
    let api = server.api();
    let feeder = Feeder::start();
    let quota =
        json!({"running-jobs": 1, "parallelism": 2, "memory-per-instance": 64 << 20, "modules": 1});
    let dev = tenant_with(&api, "a", Some(&feeder), quota);
    let module = api.push("a", &dev, wordcount());
    let job = socket_job(&api, &dev, &module, &feeder, json!({}));
    let body = |extra: Value| {
        let mut s = json!({"source": format!("socket://{}", feeder.addr())});
        if let (Some(s), Some(e)) = (s.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        json!({"module": module, "settings": s})
    };
    let p = api
        .post("/v1/tenants/a/jobs", &dev, body(json!({})))
        .problem(429, "running-jobs");
    assert_eq!(
        (p["resource"].clone(), p["limit"].clone(), p["use"].clone()),
        (json!("running-jobs"), json!(1), json!(1))
    );
    api.post(&format!("/v1/tenants/a/jobs/{job}/cancel"), &dev, json!({}))
        .expect(200);
    let p = api
        .post("/v1/tenants/a/jobs", &dev, body(json!({"parallelism": 3})))
        .problem(429, "parallelism");
    assert_eq!(
        (p["limit"].clone(), p["use"].clone(), p["requested"].clone()),
        (json!(2), json!(0), json!(3))
    );
    let p = api
        .post(
            "/v1/tenants/a/jobs",
            &dev,
            body(json!({"max-memory": "128MiB"})),
        )
        .problem(429, "memory-per-instance");
    assert_eq!(p["limit"], json!(64 << 20));
    let p = api
        .call(
            "POST",
            "/v1/tenants/a/modules",
            Some(&dev),
            Send::Bytes(guest(sluice_tests::guests::HOSTILE)),
        )
        .problem(429, "modules");
    assert_eq!((p["limit"].clone(), p["use"].clone()), (json!(1), json!(1)));
    // Nothing was left of the refused jobs.
    assert_eq!(
        api.get("/v1/tenants/a/jobs", &dev).expect(200)["jobs"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    let quota = api.get("/v1/tenants/a/quota", &dev).expect(200);
    assert_eq!(quota["usage"]["running-jobs"], 0);
}

/// One job driven through its operations, with the lines sent so far.
struct Drive<'a> {
    api: &'a Api,
    dev: &'a str,
    feeder: &'a Feeder,
    job: String,
    sent: Vec<&'static str>,
}

impl Drive<'_> {
    fn path(&self, op: &str) -> String {
        match op {
            "" => format!("/v1/tenants/a/jobs/{}", self.job),
            op => format!("/v1/tenants/a/jobs/{}/{op}", self.job),
        }
    }

    /// Sends `lines` on connection `conn`; the output must then be exactly
    /// wordcount's of every line sent.
    fn feed(&mut self, conn: usize, lines: &[&'static str]) {
        self.feeder.send(conn, lines);
        self.sent.extend_from_slice(lines);
        let want = counts(&self.sent);
        let got = self
            .api
            .wait_lines("a", self.dev, "out.txt", want.lines().count());
        assert_eq!(got, want);
    }

    /// Runs operation `op` to its end; the operation.
    fn op(&self, op: &str, body: Value) -> Value {
        let started = self.api.post(&self.path(op), self.dev, body).expect(202);
        let done = self.api.wait_op("a", self.dev, &started);
        assert_eq!(done["status"], "succeeded", "{done:#}");
        done
    }

    fn get(&self, what: &str) -> Value {
        self.api.get(&self.path(what), self.dev).expect(200)
    }
}

/// Upgrades: an incompatible module is reported and refused; a compatible
/// one (the hostile guest counts words like wordcount) says what changes
/// and takes over the state.
fn upgrade(d: &mut Drive<'_>) {
    let other = d
        .api
        .push("a", d.dev, guest(sluice_tests::guests::ENV_READER));
    let report = d
        .api
        .post(
            &d.path("upgrade"),
            d.dev,
            json!({"module": other, "dry-run": true}),
        )
        .expect(200);
    assert_eq!(report["compatible"], false, "{report:#}");
    let problem = report["problems"][0].as_str().unwrap_or_default();
    assert!(problem.contains("aggregation `sum:1`"), "{report:#}");
    d.api
        .post(&d.path("upgrade"), d.dev, json!({"module": other}))
        .problem(422, "not compatible");
    let next = d.api.push("a", d.dev, guest(sluice_tests::guests::HOSTILE));
    let report = d
        .api
        .post(
            &d.path("upgrade"),
            d.dev,
            json!({"module": next, "dry-run": true}),
        )
        .expect(200);
    assert_eq!(report["compatible"], true, "{report:#}");
    let renamed = |c: &Value| c["field"] == "name" && c["to"] == "hostile";
    assert!(
        report["changes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(renamed),
        "{report:#}"
    );
    d.op("upgrade", json!({"module": next}));
    let upgraded = d
        .api
        .wait_job("a", d.dev, &d.job, "RUNNING", |v| v["state"] == "RUNNING");
    assert_eq!(upgraded["module"], json!(next));
}

#[test]
fn savepoint_stop_start_rescale_and_upgrade_each_keep_the_exact_counts() {
    let dir = TempDir::new("serve-ops");
    let server = Served::start(&dir, &[]);
    let api = server.api();
    let feeder = Feeder::start();
    let dev = tenant_with(&api, "a", Some(&feeder), Value::Null);
    let module = api.push("a", &dev, wordcount());
    let job = socket_job(&api, &dev, &module, &feeder, json!({}));
    let mut d = Drive {
        api: &api,
        dev: &dev,
        feeder: &feeder,
        job,
        sent: Vec::new(),
    };
    d.feed(1, &["a b", "a"]);
    // A savepoint: the job goes on.
    let savepoint = d.op("savepoint", json!({}))["savepoint"].clone();
    d.feed(1, &["b"]);
    // Stop with a savepoint.
    d.op("stop", json!({}));
    assert_eq!(d.get("")["state"], "STOPPED");
    assert_eq!(d.get("savepoints").as_array().map(Vec::len), Some(2));
    // Start from the first savepoint: the output goes back to it and the
    // journal replays what came after, so nothing is lost or doubled.
    let started = api
        .post(&d.path("start"), &dev, json!({"savepoint": savepoint}))
        .expect(200);
    assert_eq!(started["starts"], 2);
    d.feed(2, &["c"]);
    // Rescale to 2: the keyed state is split by key group.
    d.op("rescale", json!({"parallelism": 2}));
    assert_eq!(d.get("")["parallelism"], 2);
    d.feed(3, &["a c", "b d"]);
    upgrade(&mut d);
    d.feed(4, &["a b c d"]);
    // The upgraded guest's poison record is an exception with its record
    // and message, and the job goes on.
    d.feeder.send(4, &["recurse"]);
    d.feed(4, &["e"]);
    // After the restart the job reports RUNNING again, not RESTARTING.
    let after = d
        .api
        .wait_job("a", d.dev, &d.job, "RUNNING", |v| v["state"] == "RUNNING");
    assert_eq!(after["metrics"]["restarts"], 1);
    let exceptions = d.get("exceptions");
    assert_eq!(exceptions[0]["input"], "recurse", "{exceptions:#}");
    let message = exceptions[0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("wasm stack"), "{exceptions:#}");
    assert_eq!(exceptions[0]["key"], Value::Null);
    let events = d.get("events");
    let states: Vec<&str> = events
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["state"].as_str())
        .collect();
    assert!(
        states.contains(&"RUNNING") && states.contains(&"STOPPED"),
        "{events:#}"
    );
    let logs = d.get("logs").to_string();
    assert!(logs.contains("switched from CREATED to RUNNING"), "{logs}");
    assert!(
        !logs.contains(&dir.0.display().to_string()),
        "the server's paths stay hidden: {logs}"
    );
}

/// Submits with an `Idempotency-Key`: the status and the answer.
fn submit_once(url: &str, token: &str, key: &str, body: Value) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .post(format!("{url}/v1/tenants/a/jobs"))
        .header("Authorization", format!("Bearer {token}"))
        .header("Idempotency-Key", key)
        .send_json(body)
        .expect("submit");
    let text = r.body_mut().read_to_string().unwrap_or_default();
    (
        r.status().as_u16(),
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

/// The job's output tail once it has `n` lines (up to 30 s).
fn output(api: &Api, dev: &str, job: &str, n: usize) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = api
            .get(&format!("/v1/tenants/a/jobs/{job}/output?lines=10"), dev)
            .expect(200);
        if out.as_array().map(Vec::len) == Some(n) || std::time::Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
}

#[test]
fn idempotency_keys_start_nothing_twice_and_deleted_jobs_leave_no_series() {
    let dir = TempDir::new("serve-idem");
    let server = Served::start(&dir, &[]);
    let api = server.api();
    let feeder = Feeder::start();
    let dev = tenant_with(&api, "a", Some(&feeder), Value::Null);
    let module = api.push("a", &dev, wordcount());
    let source = format!("socket://{}", feeder.addr());
    let body = json!({"module": module, "settings": {"source": source, "sink": "print", "checkpoint-interval": "100ms"}});
    let (s1, first) = submit_once(&server.url, &dev, "job-1", body.clone());
    let (s2, again) = submit_once(&server.url, &dev, "job-1", body);
    assert_eq!((s1, s2), (201, 201));
    assert_eq!(first["id"], again["id"]);
    assert_eq!(
        api.get("/v1/tenants/a/jobs", &dev).expect(200)["jobs"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    let other = json!({"module": module, "settings": {"source": "socket://x:1"}});
    assert_eq!(submit_once(&server.url, &dev, "job-1", other).0, 422);
    let job = first["id"].as_str().unwrap_or_default().to_string();
    // The print sink's output is the job's own, tailed through the API.
    feeder.send(1, &["x y", "x"]);
    assert_eq!(
        output(&api, &dev, &job, 3),
        json!(["(x,1)", "(y,1)", "(x,2)"])
    );
    let metrics = api.get("/metrics", &dev).expect(200);
    let metrics = metrics.as_str().unwrap_or_default();
    for series in [
        format!("sluice_job_records_in_total{{tenant=\"a\",job=\"{job}\"}} 2"),
        format!("sluice_job_state{{tenant=\"a\",job=\"{job}\",state=\"RUNNING\"}} 1"),
        "sluice_tenant_quota_limit{tenant=\"a\",resource=\"running-jobs\"} 10".to_string(),
    ] {
        assert!(metrics.contains(&series), "{series} is missing:\n{metrics}");
    }
    let path = format!("/v1/tenants/a/jobs/{job}");
    api.call("DELETE", &path, Some(&dev), Send::None)
        .problem(409, "cancel or stop it first");
    api.post(&format!("{path}/cancel"), &dev, json!({}))
        .expect(200);
    api.call("DELETE", &path, Some(&dev), Send::None)
        .expect(204);
    let metrics = api.get("/metrics", &dev).expect(200);
    assert!(
        !metrics.as_str().unwrap_or_default().contains(&job),
        "a deleted job's series are gone: {metrics}"
    );
    api.get(&path, &dev).problem(404, "no job");
}

#[test]
fn the_servers_instance_pool_is_a_limit_across_tenants() {
    let dir = TempDir::new("serve-pool");
    let server = Served::start(&dir, &["--max-instances", "4"]);
    assert!(
        server.log().contains("instance pool: 4 guest instances"),
        "{}",
        server.log()
    );
    let api = server.api();
    let feeder = Feeder::start();
    let a = tenant_with(&api, "a", Some(&feeder), Value::Null);
    let module = api.push("a", &a, wordcount());
    // Two instances each (one more to isolate a poison record): one job of
    // parallelism 2 fills the pool of 4.
    socket_job(&api, &a, &module, &feeder, json!({"parallelism": 2}));
    let body =
        json!({"module": module, "settings": {"source": format!("socket://{}", feeder.addr())}});
    let p = api
        .post("/v1/tenants/a/jobs", &a, body)
        .problem(429, "server-instances");
    assert_eq!(
        (p["limit"].clone(), p["use"].clone(), p["requested"].clone()),
        (json!(4), json!(4), json!(2))
    );
}

/// Regression: a cancel waited for a spinning guest's call deadline (two
/// minutes here, and longer while the tenant was throttled) and then
/// failed with 503; now the cancel stops the call, and the record it was
/// on is not an exception.
#[test]
fn a_cancel_stops_a_spinning_guest_at_once_and_blames_no_record() {
    let dir = TempDir::new("serve-cancel-spin");
    let server = Served::start(&dir, &[]);
    let api = server.api();
    let feeder = Feeder::start();
    let dev = tenant_with(&api, "a", Some(&feeder), json!({"cpu": 0.5}));
    let module = api.push("a", &dev, guest(sluice_tests::guests::HOSTILE));
    let job = socket_job(
        &api,
        &dev,
        &module,
        &feeder,
        json!({"call-timeout": "120s"}),
    );
    feeder.send(1, &["loop"]);
    api.wait_job("a", &dev, &job, "a call in progress", |v| {
        v["metrics"]["records_in"].as_u64() >= Some(1)
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    let started = std::time::Instant::now();
    api.post(&format!("/v1/tenants/a/jobs/{job}/cancel"), &dev, json!({}))
        .expect(200);
    let done = api.wait_job("a", &dev, &job, "CANCELED", |v| v["state"] == "CANCELED");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "the cancel took {:?}: {done:#}",
        started.elapsed()
    );
    let exceptions = api
        .get(&format!("/v1/tenants/a/jobs/{job}/exceptions"), &dev)
        .expect(200);
    assert_eq!(
        exceptions.as_array().map(Vec::len),
        Some(0),
        "{exceptions:#}"
    );
}
