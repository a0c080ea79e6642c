//! Slow and idle clients cannot exhaust the server: a request head sent a
//! byte at a time and an idle connection are closed after the header
//! timeout, a body that comes too slowly gets a 408, and past the
//! connection cap a new connection gets a 503 at once — and once the idle
//! ones are closed, requests are served again.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;
use sluice_tests::TempDir;

use super::{ADMIN, Served, tenant_with};

fn connect(server: &Served) -> TcpStream {
    let addr = server.url.trim_start_matches("http://");
    let conn = TcpStream::connect(addr).expect("connect to the server");
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    conn
}

/// Reads until the server closes `conn` (or 20 s pass); what it sent and
/// how long that took.
fn until_closed(conn: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
        if started.elapsed() > Duration::from_secs(20) {
            break;
        }
    }
    (
        String::from_utf8_lossy(&got).into_owned(),
        started.elapsed(),
    )
}

/// A GET of /healthz on a fresh connection; its status line.
fn healthz(server: &Served) -> String {
    let mut conn = connect(server);
    conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .expect("send");
    let (text, _) = until_closed(&mut conn);
    text.lines().next().unwrap_or_default().to_string()
}

#[test]
fn a_slow_head_and_an_idle_connection_are_closed_after_the_header_timeout() {
    let dir = TempDir::new("serve-slowloris");
    let server = Served::start(&dir, &["--header-timeout", "1s"]);
    let mut idle = connect(&server);
    let mut slow = connect(&server);
    slow.write_all(b"GET /healthz HTTP/1.1\r\n").expect("send");
    let started = Instant::now();
    // A byte every 200 ms, never a whole head, until the server hangs up.
    for _ in 0..25 {
        if slow.write_all(b"x").is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    until_closed(&mut slow);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "the slow head kept its connection for {took:?}"
    );
    let (text, _) = until_closed(&mut idle);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the idle one stayed {took:?}"
    );
    assert_eq!(healthz(&server), "HTTP/1.1 200 OK");
}

#[test]
fn a_body_that_comes_too_slowly_gets_a_408() {
    let dir = TempDir::new("serve-slowbody");
    let server = Served::start(&dir, &["--body-timeout", "1s"]);
    let api = server.api();
    let dev = tenant_with(&api, "a", None, json!({}));
    let mut conn = connect(&server);
    let head = format!(
        "PUT /v1/tenants/a/files/slow.txt HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {dev}\r\ncontent-length: 1000\r\n\r\nonly a little"
    );
    conn.write_all(head.as_bytes()).expect("send");
    let (text, took) = until_closed(&mut conn);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("did not arrive within 1 s"), "{text}");
    assert!(took < Duration::from_secs(6), "{took:?}");
    assert_eq!(api.file("a", &dev, "slow.txt"), "", "nothing was stored");
}

#[test]
fn past_the_connection_cap_a_new_connection_gets_a_503_until_idle_ones_close() {
    let dir = TempDir::new("serve-conncap");
    let server = Served::start(&dir, &["--max-connections", "4", "--header-timeout", "2s"]);
    let idle: Vec<TcpStream> = (0..4).map(|_| connect(&server)).collect();
    // Give the server time to accept all four.
    std::thread::sleep(Duration::from_millis(300));
    let mut over = connect(&server);
    let (text, took) = until_closed(&mut over);
    assert!(text.starts_with("HTTP/1.1 503"), "{text:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    // The idle ones time out; then the server serves again.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if healthz(&server) == "HTTP/1.1 200 OK" {
            break;
        }
        assert!(Instant::now() < deadline, "the server did not serve again");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(idle);
    let metrics = server.api().get("/metrics", ADMIN).expect(200).to_string();
    assert!(
        metrics.contains("sluice_connections_refused_total"),
        "{metrics}"
    );
}
