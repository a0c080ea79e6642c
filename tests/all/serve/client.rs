//! The CLI client in the same binary, against a real server: push,
//! submit, list, status, exceptions, tokens, `-o json`; and the server's
//! refusal to listen beyond loopback without TLS, its TLS, and its API
//! document.

use serde_json::Value;
use sluice_tests::{HostCommand, TempDir};

use super::{ADMIN, Served, counts, wordcount};

fn cli(server: &Served, token: &str, args: &[&str]) -> sluice_tests::Output {
    let mut all = vec!["--server", server.url.as_str(), "--token", token];
    all.extend_from_slice(args);
    HostCommand::new(all).run()
}

#[test]
fn the_cli_pushes_submits_lists_and_shows_jobs() {
    let dir = TempDir::new("serve-cli");
    let server = Served::start(&dir, &[]);
    let made = cli(&server, ADMIN, &["tenants", "create", "acme"]);
    made.assert_code(0);
    assert!(made.stdout.contains("acme"), "{}", made.stdout);
    let token = cli(
        &server,
        ADMIN,
        &[
            "--tenant",
            "acme",
            "tokens",
            "create",
            "--role",
            "developer",
            "-o",
            "json",
        ],
    );
    let token: Value = serde_json::from_str(&token.assert_code(0).stdout).expect("json");
    let token = token["token"].as_str().unwrap_or_default().to_string();
    let input = dir.write("in.txt", "to be or not to be\n");
    cli(
        &server,
        &token,
        &["files", "put", &input.display().to_string()],
    )
    .assert_code(0);
    let module = dir.write("wordcount.wasm", wordcount());
    let pushed = cli(&server, &token, &["push", &module.display().to_string()]);
    let digest = pushed.assert_code(0).stdout.trim().to_string();
    assert_eq!(digest.len(), 64, "{}", pushed.stdout);
    let submitted = cli(
        &server,
        &token,
        &[
            "submit",
            "--module",
            &digest,
            "--source",
            "file://in.txt",
            "--sink",
            "file://out.txt",
            "--set",
            "max-line-bytes=4096",
        ],
    );
    submitted.assert_code(0);
    let table = submitted
        .stdout
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(
        table.starts_with("id") && table.contains("state"),
        "{}",
        submitted.stdout
    );
    let listed = cli(&server, &token, &["list", "-o", "json"]);
    let listed: Value = serde_json::from_str(&listed.assert_code(0).stdout).expect("json");
    let job = listed["jobs"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let api = server.api();
    api.wait_job("acme", &token, &job, "FINISHED", |v| {
        v["state"] == "FINISHED"
    });
    let status = cli(&server, &token, &["status", &job]);
    assert!(
        status.assert_code(0).stdout.contains("FINISHED"),
        "{}",
        status.stdout
    );
    let out = cli(&server, &token, &["files", "get", "out.txt"]);
    assert_eq!(out.assert_code(0).stdout, counts(&["to be or not to be"]));
    let missing = cli(&server, &token, &["status", "nope"]);
    missing
        .assert_code(2)
        .assert_stderr_has("no job `nope` (HTTP 404)");
    let viewer = cli(
        &server,
        ADMIN,
        &[
            "--tenant", "acme", "tokens", "create", "--role", "viewer", "-o", "json",
        ],
    );
    let viewer: Value = serde_json::from_str(&viewer.assert_code(0).stdout).expect("json");
    let viewer = viewer["token"].as_str().unwrap_or_default().to_string();
    cli(&server, &viewer, &["cancel", &job])
        .assert_code(2)
        .assert_stderr_has("(HTTP 403)");
}

#[test]
fn the_server_listens_beyond_loopback_only_with_tls() {
    let dir = TempDir::new("serve-tls");
    let token = dir.write("admin.token", ADMIN);
    let data = dir.path("data");
    let serve = |listen: &str, token: &std::path::Path| {
        let data = data.display().to_string();
        let token = token.display().to_string();
        HostCommand::new([
            "serve",
            "--listen",
            listen,
            "--data-dir",
            &data,
            "--admin-token-file",
            &token,
        ])
        .run()
    };
    let refused = serve("0.0.0.0:0", &token);
    refused
        .assert_code(2)
        .assert_stderr_has("refusing to listen on `0.0.0.0:0` without TLS");
    let weak = dir.write("weak.token", "short");
    serve("127.0.0.1:0", &weak)
        .assert_code(2)
        .assert_stderr_has("at least 16 characters");
    // A self-signed certificate, when openssl is there to make one.
    let (cert, key) = (dir.path("cert.pem"), dir.path("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("openssl is not installed: the TLS handshake is not tried");
        return;
    }
    let server = Served::start(
        &dir,
        &[
            "--tls-cert",
            &cert.display().to_string(),
            "--tls-key",
            &key.display().to_string(),
        ],
    );
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    let pem = std::fs::read(&cert).expect("cert");
    let der = ureq::tls::parse_pem(&pem)
        .find_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .expect("a certificate");
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::new_with_certs(&[der]))
        .build();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .get(format!("{}/healthz", server.url))
        .call()
        .expect("TLS request");
    assert_eq!(r.body_mut().read_to_string().unwrap_or_default(), "ok");
}

#[test]
fn the_api_document_is_served_and_describes_every_route_group() {
    let dir = TempDir::new("serve-openapi");
    let server = Served::start(&dir, &[]);
    let doc = server
        .api()
        .call("GET", "/openapi.json", None, super::Send::None)
        .expect(200);
    assert!(
        doc["openapi"]
            .as_str()
            .unwrap_or_default()
            .starts_with("3."),
        "{doc:#}"
    );
    for path in [
        "/v1/tenants",
        "/v1/tenants/{tenant}/modules",
        "/v1/tenants/{tenant}/jobs/{job}/stop",
        "/v1/tenants/{tenant}/operations/{op}",
        "/metrics",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} is not in the document"
        );
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert!(doc["components"]["schemas"]["Problem"].is_object());
}
