//! Who may do what: every role and a missing, wrong, expired and revoked
//! token against every group of routes; another tenant's resources are
//! not found; no request reaches a path outside the tenant's own.

use serde_json::{Value, json};
use sluice_tests::TempDir;

use super::{ADMIN, Api, Send, Served, counts, tenant_with, wordcount};

const ROLES: [&str; 4] = ["viewer", "operator", "developer", "tenant-admin"];

/// One route of each group, the least role it needs, and what it answers
/// when allowed (the job is finished, so operations on it conflict).
fn routes(job: &str) -> Vec<(&'static str, String, usize, Send, u16)> {
    let t = "/v1/tenants/a";
    let j = format!("{t}/jobs/{job}");
    vec![
        ("GET", t.to_string(), 0, Send::None, 200),
        ("GET", format!("{t}/quota"), 0, Send::None, 200),
        ("GET", format!("{t}/modules"), 0, Send::None, 200),
        ("GET", format!("{t}/jobs"), 0, Send::None, 200),
        ("GET", j.clone(), 0, Send::None, 200),
        ("GET", format!("{j}/checkpoints"), 0, Send::None, 200),
        ("GET", format!("{j}/exceptions"), 0, Send::None, 200),
        ("GET", format!("{j}/events"), 0, Send::None, 200),
        ("GET", format!("{j}/logs"), 0, Send::None, 200),
        ("GET", format!("{t}/files"), 0, Send::None, 200),
        ("GET", format!("{t}/operations"), 0, Send::None, 200),
        ("POST", format!("{j}/cancel"), 1, Send::None, 409),
        ("POST", format!("{j}/savepoint"), 1, Send::None, 409),
        ("POST", format!("{j}/stop"), 1, Send::None, 409),
        (
            "POST",
            format!("{j}/rescale"),
            1,
            Send::Json(json!({"parallelism": 2})),
            409,
        ),
        (
            "POST",
            format!("{t}/modules"),
            2,
            Send::Bytes(b"not wasm".to_vec()),
            422,
        ),
        (
            "PUT",
            format!("{t}/files/notes.txt"),
            2,
            Send::Bytes(b"hello".to_vec()),
            201,
        ),
        (
            "POST",
            format!("{t}/jobs"),
            2,
            Send::Json(json!({"module": "00", "settings": {}})),
            422,
        ),
        ("GET", format!("{t}/tokens"), 3, Send::None, 200),
        (
            "POST",
            format!("{t}/tokens"),
            3,
            Send::Json(json!({"name": "x", "role": "viewer"})),
            201,
        ),
    ]
}

fn send(s: &Send) -> Send {
    match s {
        Send::None => Send::None,
        Send::Json(v) => Send::Json(v.clone()),
        Send::Bytes(b) => Send::Bytes(b.clone()),
    }
}

/// A finished wordcount job of tenant `a`.
fn finished_job(api: &Api, dev: &str) -> String {
    let module = api.push("a", dev, wordcount());
    api.put_file("a", dev, "in.txt", b"to be or not to be\n")
        .expect(201);
    let settings = json!({"source": "file://in.txt", "sink": "file://out.txt"});
    let job = api.submit("a", dev, &module, settings);
    api.wait_job("a", dev, &job, "FINISHED", |v| v["state"] == "FINISHED");
    let out = api.wait_lines("a", dev, "out.txt", 6);
    assert_eq!(out, counts(&["to be or not to be"]));
    job
}

/// Tokens of tenant `a` that must be refused: missing, wrong, expired,
/// revoked, garbage.
fn bad_tokens(api: &Api, good: &str) -> Vec<(&'static str, Option<String>)> {
    let body = json!({"name": "soon", "role": "tenant-admin", "expires-in-s": 1});
    let expiring = api.post("/v1/tenants/a/tokens", ADMIN, body).expect(201);
    let revoked = api.token("a", "tenant-admin");
    let id = revoked.split('_').nth(1).unwrap_or_default().to_string();
    let path = format!("/v1/tenants/a/tokens/{id}");
    api.call("DELETE", &path, Some(ADMIN), Send::None)
        .expect(200);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    vec![
        ("missing", None),
        ("wrong", Some(format!("{}x", &good[..good.len() - 1]))),
        ("expired", expiring["token"].as_str().map(String::from)),
        ("revoked", Some(revoked)),
        ("garbage", Some("sluice_zz".into())),
    ]
}

#[test]
fn every_role_and_every_bad_token_against_every_route_group() {
    let dir = TempDir::new("serve-roles");
    let server = Served::start(&dir, &[]);
    let api = server.api();
    let dev = tenant_with(&api, "a", None, Value::Null);
    let other = tenant_with(&api, "b", None, Value::Null);
    let job = finished_job(&api, &dev);
    let tokens: Vec<String> = ROLES.iter().map(|r| api.token("a", r)).collect();
    let bad = bad_tokens(&api, &tokens[3]);
    for (method, path, needs, body, allowed) in routes(&job) {
        for (rank, token) in tokens.iter().enumerate() {
            let r = api.call(method, &path, Some(token), send(&body));
            let want = if rank >= needs { allowed } else { 403 };
            assert_eq!(
                r.status, want,
                "{}: {method} {path}: {:#}",
                ROLES[rank], r.body
            );
        }
        let r = api.call(method, &path, Some(ADMIN), send(&body));
        assert_eq!(r.status, allowed, "admin: {method} {path}");
        for (what, token) in &bad {
            let r = api.call(method, &path, token.as_deref(), send(&body));
            assert_eq!(r.status, 401, "{what} token: {method} {path}");
            assert_eq!(r.content_type, "application/problem+json");
        }
        // Another tenant's resources do not exist for it: 404, never 403.
        let r = api.call(method, &path, Some(&other), send(&body));
        assert_eq!(r.status, 404, "tenant b: {method} {path}: {:#}", r.body);
    }
    // The admin's own routes.
    for token in tokens.iter().chain([&other]) {
        let body = Send::Json(json!({"name": "c"}));
        api.call("POST", "/v1/tenants", Some(token), body)
            .problem(403, "admin");
        api.call("GET", "/v1/tenants", Some(token), Send::None)
            .problem(403, "admin");
    }
    let metrics = api.get("/metrics", ADMIN).expect(200);
    let metrics = metrics.as_str().unwrap_or_default();
    for series in [
        "sluice_auth_failures_total{reason=\"expired\"}",
        "sluice_auth_failures_total{reason=\"revoked\"}",
        "sluice_api_requests_total{route=\"GET /v1/tenants/{tenant}/jobs\",status=\"404\"}",
    ] {
        assert!(metrics.contains(series), "{series} is missing:\n{metrics}");
    }
}

/// Submits a job of tenant `b` with `settings`: the answer.
fn submit_b(api: &Api, b: &str, module: &str, settings: Value) -> super::Reply {
    api.post(
        "/v1/tenants/b/jobs",
        b,
        json!({"module": module, "settings": settings}),
    )
}

/// Nothing tenant `b` sends reaches a path outside its own directory.
fn paths_stay_inside(api: &Api, b: &str) {
    api.put_file("b", b, "x", b"1\n").expect(201);
    let module = api.push("b", b, wordcount());
    for source in [
        "file://../a/files/secret.txt",
        "file:///etc/passwd",
        "file://../../../../etc/passwd",
    ] {
        let r = submit_b(api, b, &module, json!({"source": source}));
        assert_eq!(r.status, 422, "{source}: {:#}", r.body);
    }
    let r = submit_b(
        api,
        b,
        &module,
        json!({"source": "file://x", "sink": "file://../a/files/secret.txt"}),
    );
    assert_eq!(r.status, 422, "{:#}", r.body);
    for path in [
        "%2E%2E/a/files/secret.txt",
        "..%2F..%2Ftenant.json",
        ".hidden",
    ] {
        api.get(&format!("/v1/tenants/b/files/{path}"), b)
            .problem(422, "not valid");
        api.put_file("b", b, path, b"x").problem(422, "not valid");
    }
    // Settings that name the server's paths or environment are refused.
    for (key, value) in [
        ("checkpoint-dir", json!("/tmp")),
        ("dead-letter", json!("/tmp/x")),
        ("allow-dir", json!(["/"])),
        ("allow-env", json!(["HOME"])),
        ("source", json!("-")),
    ] {
        submit_b(api, b, &module, json!({key: value})).problem(422, "cannot be set on a server");
    }
    // A socket only to the admin's allow-list.
    let r = submit_b(api, b, &module, json!({"source": "socket://127.0.0.1:9"}));
    assert_eq!(r.status, 422, "{:#}", r.body);
}

#[test]
fn a_tenant_cannot_see_read_or_touch_anothers_modules_jobs_checkpoints_metrics_or_files() {
    let dir = TempDir::new("serve-isolation");
    let server = Served::start(&dir, &[]);
    let api = server.api();
    let a = tenant_with(&api, "a", None, Value::Null);
    let b = tenant_with(&api, "b", None, Value::Null);
    let module = api.push("a", &a, wordcount());
    api.put_file("a", &a, "secret.txt", b"a b\n").expect(201);
    let settings = json!({"source": "file://secret.txt", "sink": "file://out.txt"});
    let job = api.submit("a", &a, &module, settings);
    api.wait_job("a", &a, &job, "FINISHED", |v| v["state"] == "FINISHED");
    // Through b's own paths, a's ids name nothing.
    for path in [
        format!("/v1/tenants/b/jobs/{job}"),
        format!("/v1/tenants/b/jobs/{job}/checkpoints"),
        format!("/v1/tenants/b/modules/{module}"),
        "/v1/tenants/b/files/secret.txt".to_string(),
    ] {
        api.get(&path, &b).problem(404, "no ");
    }
    assert_eq!(
        api.get("/v1/tenants/b/jobs", &b).expect(200)["jobs"],
        json!([])
    );
    assert_eq!(api.get("/v1/tenants/b/modules", &b).expect(200), json!([]));
    assert_eq!(api.get("/v1/tenants/b/files", &b).expect(200), json!([]));
    paths_stay_inside(&api, &b);
    // b's metrics hold b's series only.
    let metrics = api.get("/metrics", &b).expect(200);
    let metrics = metrics.as_str().unwrap_or_default();
    assert!(metrics.contains("tenant=\"b\""), "{metrics}");
    assert!(
        !metrics.contains("tenant=\"a\"") && !metrics.contains(&job),
        "{metrics}"
    );
    assert!(
        !metrics.contains("sluice_api_requests"),
        "the server's own series are the admin's: {metrics}"
    );
    // And a's own view is intact.
    assert_eq!(api.file("a", &a, "out.txt"), counts(&["a b"]));
}
