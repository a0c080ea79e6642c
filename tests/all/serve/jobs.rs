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

#[test]
fn savepoint_stop_start_rescale_and_upgrade_each_keep_the_exact_counts() {
    let dir = TempDir::new("serve-ops");
    let server = Served::start(&dir, &[]);
    let api = server.api();
    let feeder = Feeder::start();
    let dev = tenant_with(&api, "a", Some(&feeder), Value::Null);
    let module = api.push("a", &dev, wordcount());
    let job = socket_job(&api, &dev, &module, &feeder, json!({}));
    let path = |op: &str| match op {
        "" => format!("/v1/tenants/a/jobs/{job}"),
        op => format!("/v1/tenants/a/jobs/{job}/{op}"),
    };
    let mut sent: Vec<&str> = Vec::new();
    let feed = |conn: usize, lines: &[&'static str], sent: &mut Vec<&str>| {
        feeder.send(conn, lines);
        sent.extend_from_slice(lines);
        let want = counts(sent);
        assert_eq!(
            api.wait_lines("a", &dev, "out.txt", want.lines().count()),
            want
        );
    };
    feed(1, &["a b", "a"], &mut sent);

    // A savepoint: the job goes on.
    let op = api.post(&path("savepoint"), &dev, json!({})).expect(202);
    let done = api.wait_op("a", &dev, &op);
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let savepoint = done["savepoint"].as_str().unwrap_or_default().to_string();
    feed(1, &["b"], &mut sent);

    // Stop with a savepoint.
    let op = api.post(&path("stop"), &dev, json!({})).expect(202);
    assert_eq!(api.wait_op("a", &dev, &op)["status"], "succeeded");
    assert_eq!(api.get(&path(""), &dev).expect(200)["state"], "STOPPED");
    assert_eq!(
        api.get(&path("savepoints"), &dev)
            .expect(200)
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    // Start from the first savepoint: the output goes back to it and the
    // journal replays what came after, so nothing is lost or doubled.
    let started = api
        .post(&path("start"), &dev, json!({"savepoint": savepoint}))
        .expect(200);
    assert_eq!(started["starts"], 2);
    feed(2, &["c"], &mut sent);

    // Rescale to 2: the keyed state is split by key group.
    let op = api
        .post(&path("rescale"), &dev, json!({"parallelism": 2}))
        .expect(202);
    assert_eq!(api.wait_op("a", &dev, &op)["status"], "succeeded");
    assert_eq!(api.get(&path(""), &dev).expect(200)["parallelism"], 2);
    feed(3, &["a c", "b d"], &mut sent);

    // Upgrade: a dry run of an incompatible module says why; a compatible
    // one (the hostile guest counts words like wordcount) says what changes.
    let other = api.push("a", &dev, guest(sluice_tests::guests::ENV_READER));
    let report = api
        .post(
            &path("upgrade"),
            &dev,
            json!({"module": other, "dry-run": true}),
        )
        .expect(200);
    assert_eq!(report["compatible"], false, "{report:#}");
    assert!(
        report["problems"][0]
            .as_str()
            .unwrap_or_default()
            .contains("aggregation `sum:1`"),
        "{report:#}"
    );
    api.post(&path("upgrade"), &dev, json!({"module": other}))
        .problem(422, "not compatible");
    let next = api.push("a", &dev, guest(sluice_tests::guests::HOSTILE));
    let report = api
        .post(
            &path("upgrade"),
            &dev,
            json!({"module": next, "dry-run": true}),
        )
        .expect(200);
    assert_eq!(report["compatible"], true, "{report:#}");
    assert!(
        report["changes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["field"] == "name" && c["to"] == "hostile"),
        "{report:#}"
    );
    let op = api
        .post(&path("upgrade"), &dev, json!({"module": next}))
        .expect(202);
    assert_eq!(api.wait_op("a", &dev, &op)["status"], "succeeded");
    let upgraded = api.wait_job("a", &dev, &job, "RUNNING", |v| v["state"] == "RUNNING");
    assert_eq!(upgraded["module"], json!(next));
    feed(4, &["a b c d"], &mut sent);
    assert_eq!(
        api.file("a", &dev, "out.txt"),
        counts(&["a b", "a", "b", "c", "a c", "b d", "a b c d"])
    );

    // The upgraded guest's poison record is an exception with its record
    // and message, and the job goes on.
    feeder.send(4, &["recurse", "e"]);
    let want = counts(&["a b", "a", "b", "c", "a c", "b d", "a b c d", "e"]);
    assert_eq!(
        api.wait_lines("a", &dev, "out.txt", want.lines().count()),
        want
    );
    let exceptions = api.get(&path("exceptions"), &dev).expect(200);
    assert_eq!(exceptions[0]["input"], "recurse", "{exceptions:#}");
    assert!(
        exceptions[0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("wasm stack"),
        "{exceptions:#}"
    );
    assert_eq!(exceptions[0]["key"], Value::Null);

    let events = api.get(&path("events"), &dev).expect(200);
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
    let logs = api.get(&path("logs"), &dev).expect(200).to_string();
    assert!(logs.contains("switched from CREATED to RUNNING"), "{logs}");
    assert!(
        !logs.contains(&dir.0.display().to_string()),
        "the server's paths stay hidden: {logs}"
    );
}

#[test]
fn idempotency_keys_start_nothing_twice_and_deleted_jobs_leave_no_series() {
    let dir = TempDir::new("serve-idem");
    let server = Served::start(&dir, &[]);
    let api = server.api();
    let feeder = Feeder::start();
    let dev = tenant_with(&api, "a", Some(&feeder), Value::Null);
    let module = api.push("a", &dev, wordcount());
    let body = json!({"module": module, "settings": {"source": format!("socket://{}", feeder.addr()), "sink": "print", "checkpoint-interval": "100ms"}});
    let submit = |key: &str, body: Value| {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut r = agent
            .post(format!("{}/v1/tenants/a/jobs", server.url))
            .header("Authorization", format!("Bearer {dev}"))
            .header("Idempotency-Key", key)
            .send_json(body)
            .expect("submit");
        let status = r.status().as_u16();
        (
            status,
            serde_json::from_str::<Value>(&r.body_mut().read_to_string().unwrap_or_default())
                .unwrap_or(Value::Null),
        )
    };
    let (s1, first) = submit("job-1", body.clone());
    let (s2, again) = submit("job-1", body.clone());
    assert_eq!((s1, s2), (201, 201));
    assert_eq!(first["id"], again["id"]);
    assert_eq!(
        api.get("/v1/tenants/a/jobs", &dev).expect(200)["jobs"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    let (s3, refused) = submit(
        "job-1",
        json!({"module": module, "settings": {"source": "socket://x:1"}}),
    );
    assert_eq!(s3, 422, "{refused:#}");
    let job = first["id"].as_str().unwrap_or_default().to_string();

    // The print sink's output is the job's own, tailed through the API.
    feeder.send(1, &["x y", "x"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let output = loop {
        let out = api
            .get(&format!("/v1/tenants/a/jobs/{job}/output?lines=10"), &dev)
            .expect(200);
        if out.as_array().map(Vec::len) == Some(3) || std::time::Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    };
    assert_eq!(output, json!(["(x,1)", "(y,1)", "(x,2)"]));

    let metrics = api
        .get("/metrics", &dev)
        .expect(200)
        .as_str()
        .unwrap_or_default()
        .to_string();
    let series = format!("sluice_job_records_in_total{{tenant=\"a\",job=\"{job}\"}} 2");
    assert!(metrics.contains(&series), "{metrics}");
    assert!(
        metrics.contains(&format!(
            "sluice_job_state{{tenant=\"a\",job=\"{job}\",state=\"RUNNING\"}} 1"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_tenant_quota_limit{tenant=\"a\",resource=\"running-jobs\"} 10"),
        "{metrics}"
    );
    api.call(
        "DELETE",
        &format!("/v1/tenants/a/jobs/{job}"),
        Some(&dev),
        Send::None,
    )
    .problem(409, "cancel or stop it first");
    api.post(&format!("/v1/tenants/a/jobs/{job}/cancel"), &dev, json!({}))
        .expect(200);
    api.call(
        "DELETE",
        &format!("/v1/tenants/a/jobs/{job}"),
        Some(&dev),
        Send::None,
    )
    .expect(204);
    let metrics = api
        .get("/metrics", &dev)
        .expect(200)
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        !metrics.contains(&job),
        "a deleted job's series are gone: {metrics}"
    );
    api.get(&format!("/v1/tenants/a/jobs/{job}"), &dev)
        .problem(404, "no job");
}
