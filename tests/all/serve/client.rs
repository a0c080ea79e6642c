//! The CLI client in the same binary, against a real server: push,
//! submit, list, status, files, tokens, `-o json`, errors with their HTTP
//! status; and the server's refusal to listen beyond loopback without
//! TLS, its TLS, and its API document.

use std::path::{Path, PathBuf};

use serde_json::Value;
use sluice_tests::{HostCommand, TempDir};

use super::{ADMIN, Served, counts, wordcount};

fn cli(server: &Served, token: &str, args: &[&str]) -> sluice_tests::Output {
    let mut all = vec!["--server", server.url.as_str(), "--token", token];
    all.extend_from_slice(args);
    HostCommand::new(all).run()
}

/// Runs the CLI with `-o json`; its JSON.
fn cli_json(server: &Served, token: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend_from_slice(&["-o", "json"]);
    let out = cli(server, token, &all);
    serde_json::from_str(&out.assert_code(0).stdout).expect("json on stdout")
}

/// A token of tenant `acme` with `role`, made through the CLI.
fn cli_token(server: &Served, role: &str) -> String {
    let made = cli_json(
        server,
        ADMIN,
        &["--tenant", "acme", "tokens", "create", "--role", role],
    );
    made["token"].as_str().unwrap_or_default().to_string()
}

#[test]
fn the_cli_pushes_submits_lists_and_shows_jobs() {
    let dir = TempDir::new("serve-cli");
    let server = Served::start(&dir, &[]);
    let made = cli(&server, ADMIN, &["tenants", "create", "acme"]);
    assert!(
        made.assert_code(0).stdout.contains("acme"),
        "{}",
        made.stdout
    );
    let token = cli_token(&server, "developer");
    let input = dir
        .write("in.txt", "to be or not to be\n")
        .display()
        .to_string();
    cli(&server, &token, &["files", "put", &input]).assert_code(0);
    let module = dir
        .write("wordcount.wasm", wordcount())
        .display()
        .to_string();
    let pushed = cli(&server, &token, &["push", &module]);
    let digest = pushed.assert_code(0).stdout.trim().to_string();
    assert_eq!(digest.len(), 64, "{}", pushed.stdout);
    let args = [
        "submit",
        "--module",
        &digest,
        "--source",
        "file://in.txt",
        "--sink",
        "file://out.txt",
        "--set",
        "max-line-bytes=4096",
    ];
    let submitted = cli(&server, &token, &args);
    let header = submitted
        .assert_code(0)
        .stdout
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(
        header.starts_with("id") && header.contains("state"),
        "{}",
        submitted.stdout
    );
    let listed = cli_json(&server, &token, &["list"]);
    assert_eq!(listed["jobs"][0]["settings"]["max-line-bytes"], 4096);
    let job = listed["jobs"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    server
        .api()
        .wait_job("acme", &token, &job, "FINISHED", |v| {
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
    cli(&server, &token, &["status", "nope"])
        .assert_code(2)
        .assert_stderr_has("no job `nope` (HTTP 404)");
    let viewer = cli_token(&server, "viewer");
    cli(&server, &viewer, &["cancel", &job])
        .assert_code(2)
        .assert_stderr_has("(HTTP 403)");
    cli(&server, "sluice_0_0", &["list"])
        .assert_code(2)
        .assert_stderr_has("(HTTP 401)");
}

#[test]
fn the_server_refuses_to_listen_beyond_loopback_without_tls() {
    let dir = TempDir::new("serve-loopback");
    let data = dir.path("data").display().to_string();
    let serve = |listen: &str, token: &Path| {
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
    let token = dir.write("admin.token", ADMIN);
    let refused = serve("0.0.0.0:0", &token);
    refused
        .assert_code(2)
        .assert_stderr_has("refusing to listen on `0.0.0.0:0` without TLS");
    let weak = dir.write("weak.token", "short");
    serve("127.0.0.1:0", &weak)
        .assert_code(2)
        .assert_stderr_has("at least 16 characters");
}

/// A self-signed certificate for 127.0.0.1 and its key, when openssl is
/// there to make one.
fn self_signed(dir: &TempDir) -> Option<(PathBuf, PathBuf)> {
    let (cert, key) = (dir.path("cert.pem"), dir.path("key.pem"));
    let san = "subjectAltName=IP:127.0.0.1";
    let leaf = "basicConstraints=critical,CA:FALSE";
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
        ])
        .args(["-addext", san, "-addext", leaf])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    made.is_ok_and(|s| s.success()).then_some((cert, key))
}

/// A client that trusts `cert` only.
fn trusting(cert: &Path) -> ureq::Agent {
    let pem = std::fs::read(cert).expect("cert");
    let der = ureq::tls::parse_pem(&pem)
        .find_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .expect("a certificate");
    let roots = ureq::tls::RootCerts::new_with_certs(&[der]);
    let tls = ureq::tls::TlsConfig::builder().root_certs(roots).build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .build()
        .into()
}

#[test]
fn the_server_speaks_tls_with_a_certificate_and_key() {
    let dir = TempDir::new("serve-tls");
    let Some((cert, key)) = self_signed(&dir) else {
        eprintln!("openssl is not installed: the TLS handshake is not tried");
        return;
    };
    let (cert_arg, key_arg) = (cert.display().to_string(), key.display().to_string());
    let server = Served::start(&dir, &["--tls-cert", &cert_arg, "--tls-key", &key_arg]);
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    let mut r = trusting(&cert)
        .get(format!("{}/healthz", server.url))
        .call()
        .expect("TLS request");
    assert_eq!(r.body_mut().read_to_string().unwrap_or_default(), "ok");
    // Plain HTTP to it gets no answer.
    let plain = format!("http{}/healthz", server.url.trim_start_matches("https"));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(5)))
        .build()
        .into();
    assert!(agent.get(plain).call().is_err());
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
        "/v1/tenants/{tenant}/files/{path}",
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
