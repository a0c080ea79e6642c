//! Kafka over TLS and with SASL, against Tansu: a wordcount from topic to
//! topic through a TLS listener with exactly the expected updates; and
//! what a user sees when the security settings are wrong — a broker
//! certificate the client does not trust, a plain client at a TLS
//! listener, a wrong password, options that do not fit together — each a
//! one-line error at start, not a retry.
//!
//! Tansu 0.6.0 has no working TLS listener (`--cert` and `--key` refuse
//! each other, and either alone leaves the listener plain), so the TLS
//! listener is the test's own front ([`sluice_tests::tls::Front`]) before
//! a Tansu that names the front in its metadata. Its `--authentication`
//! does SCRAM-SHA-256/512 (no PLAIN), but users cannot be made on it
//! (`tansu user create` needs a login itself, and a user made before a
//! restart is kept in memory only), so the SASL test is the refusal; a
//! successful SCRAM login is the RFC 7677 vectors in `sasl.rs`.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use sluice_tests::servers;
use sluice_tests::{HostCommand, LineServer, Output, Running, Step, TempDir, guests, line, tls};

use crate::kafka::{
    OwnBroker, Setup, check_output, many_lines, port_of, produce_many, wait_for_records,
};

/// A wordcount job from `source` that is expected to stop at start (its
/// output, and how long it took): `connect` is its `--connect-timeout`,
/// `password` its `SLUICE_KAFKA_PASSWORD`.
fn refused(
    dir: &TempDir,
    source: &str,
    connect: &str,
    password: Option<&str>,
) -> (Output, Duration) {
    let started = Instant::now();
    let mut job = HostCommand::job(
        guests::wordcount("rust"),
        source,
        &["--connect-timeout", connect],
    );
    if let Some(password) = password {
        job = job.env("SLUICE_KAFKA_PASSWORD", password);
    }
    let out = job.current_dir(&dir.0).run();
    (out, started.elapsed())
}

/// Held by the test that has the TLS front's ports (one at a time).
static TLS_PORTS: Mutex<()> = Mutex::new(());

/// A Tansu behind the test's TLS front: the front's address, the CA that
/// signed its certificate, and what must live as long as the test (the
/// ports' lock last: fields drop in order).
struct TlsBroker {
    brokers: String,
    ca: String,
    front: Option<tls::Front>,
    _broker: OwnBroker,
    _dir: TempDir,
    _ports: MutexGuard<'static, ()>,
}

impl TlsBroker {
    fn start() -> TlsBroker {
        // A test that failed while it held the ports still let them go.
        let ports = TLS_PORTS.lock().unwrap_or_else(PoisonError::into_inner);
        let secure = port_of("SLUICE_KAFKA_SECURE_PORT");
        let setup = Setup {
            s3: false,
            advertised: Some(secure),
            authentication: false,
        };
        let broker = OwnBroker::start_with("SLUICE_KAFKA_TLS_BACKEND_PORT", setup);
        let dir = TempDir::new("kafka-tls");
        let certs = tls::certs(&dir.0, "sluice-test-ca");
        let backend = port_of("SLUICE_KAFKA_TLS_BACKEND_PORT");
        let front = tls::Front::start(secure, backend, &certs);
        let brokers = format!("127.0.0.1:{secure}");
        let ca = certs.ca.display().to_string();
        servers::secure(&brokers, &format!("security=ssl&ca={ca}"));
        TlsBroker {
            brokers,
            ca,
            front: Some(front),
            _broker: broker,
            _dir: dir,
            _ports: ports,
        }
    }

    /// Replaces the listener's certificate, under the running `job`, by
    /// one of a CA the job does not trust: the job (its connector `named`)
    /// fails with the reason within seconds instead of waiting for the
    /// broker.
    fn untrusted_under(&mut self, job: Running, named: &str) {
        let other = TempDir::new("kafka-tls-other");
        let certs = tls::certs(&other.0, "another-ca");
        drop(self.front.take());
        let secure = port_of("SLUICE_KAFKA_SECURE_PORT");
        let _front = tls::Front::start(secure, port_of("SLUICE_KAFKA_TLS_BACKEND_PORT"), &certs);
        let started = Instant::now();
        let out = job.wait();
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not waited out"
        );
        out.assert_code(1).assert_stderr_has(named);
        out.assert_stderr_has("invalid peer certificate: UnknownIssuer");
    }
}

/// Wordcount from a topic to a topic, both over TLS with the CA given by
/// `ca=`: the output is exactly the updates. Then the same broker with the
/// wrong settings: no `ca=` (the system does not trust the test's CA), and
/// no TLS at all. Each fails at start with one clear line, quickly.
#[test]
fn wordcount_over_tls_holds_exactly_the_updates_and_bad_tls_is_refused() {
    let mut b = TlsBroker::start();
    let brokers = &b.brokers;
    let (input, output) = (servers::unique("tls-in"), servers::unique("tls-out"));
    servers::create_topic(brokers, &input, 2);
    servers::create_topic(brokers, &output, 2);
    let lines = many_lines(300, 11);
    produce_many(brokers, &input, 2, &lines);
    let tls = format!("security=ssl&ca={}", b.ca);
    let dir = TempDir::new("kafka-tls-wc");
    let source = format!("kafka://{brokers}/{input}?start=earliest&{tls}");
    let sink = format!("kafka://{brokers}/{output}?{tls}");
    let mut job = HostCommand::job(
        guests::wordcount("rust"),
        &source,
        &["--sink", &sink, "--checkpoint-interval", "200ms"],
    )
    .current_dir(&dir.0)
    .timeout(Duration::from_secs(120))
    .spawn();
    let total: usize = lines.iter().map(|l| l.split_whitespace().count()).sum();
    wait_for_records(brokers, &output, total, &mut job, Duration::from_secs(60));
    job.signal("TERM");
    job.wait().assert_code(0);
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    check_output(brokers, &output, &refs, 2);

    // Not trusted: the system's roots do not hold the test's CA.
    let (out, took) = refused(
        &dir,
        &format!("kafka://{brokers}/{input}?security=ssl"),
        "20s",
        None,
    );
    out.assert_code(2).assert_stderr_has(&format!(
        "error: Kafka: TLS with broker `{brokers}` failed: invalid peer certificate: UnknownIssuer; \
         check the broker's address and certificate, and give its CA with `ca=PATH` if the system does not trust it"
    ));
    assert!(took < Duration::from_secs(10), "not retried");

    // A plain client at the TLS listener.
    let (out, took) = refused(&dir, &format!("kafka://{brokers}/{input}"), "3s", None);
    out.assert_code(2);
    let err = out
        .stderr_lines()
        .into_iter()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_default()
        .to_string();
    assert!(
        err.contains("security=ssl"),
        "the error says to add `security=ssl`: {err}"
    );
    assert!(took < Duration::from_secs(15), "not hung");

    // The broker's certificate replaced, mid-job, by one of a CA the job
    // does not trust: once the broker is back the job fails with the
    // reason, instead of waiting for it forever.
    let job = HostCommand::job(guests::wordcount("rust"), &source, &[])
        .current_dir(&dir.0)
        .timeout(Duration::from_secs(60))
        .spawn();
    job.wait_for_lines(1, Duration::from_secs(30));
    let named = format!("Kafka source `kafka://{brokers}/{input}");
    b.untrusted_under(job, &named);
}

/// The sink's broker certificate replaced, mid-job, by one of a CA the
/// job does not trust: the next write reconnects, is refused, and the job
/// fails with the reason within seconds instead of waiting for the broker.
#[test]
fn a_sink_whose_broker_certificate_changes_mid_job_fails_with_the_reason() {
    let mut b = TlsBroker::start();
    let brokers = b.brokers.clone();
    let output = servers::unique("tls-sink-out");
    servers::create_topic(&brokers, &output, 1);
    // Two words, then (after the certificate changed) two more.
    let server = LineServer::start(
        vec![vec![
            line("a b"),
            Step::Sleep(Duration::from_secs(6)),
            line("c d"),
        ]],
        Duration::from_secs(30),
    );
    let sink = format!("kafka://{brokers}/{output}?security=ssl&ca={}", b.ca);
    let dir = TempDir::new("kafka-tls-sink");
    let mut job = HostCommand::job(guests::wordcount("rust"), &server.uri(), &["--sink", &sink])
        .current_dir(&dir.0)
        .timeout(Duration::from_secs(60))
        .spawn();
    wait_for_records(&brokers, &output, 2, &mut job, Duration::from_secs(30));
    let named = format!("Kafka sink `kafka://{brokers}/{output}");
    b.untrusted_under(job, &named);
    server.join();
}

/// A wrong password: Tansu refuses the SCRAM-SHA-512 login, and the job
/// stops at once with the one line that says so (not retried as if the
/// broker were down).
#[test]
fn a_wrong_password_is_a_clear_error_at_start() {
    let setup = Setup {
        s3: false,
        advertised: None,
        authentication: true,
    };
    let broker = OwnBroker::start_with("SLUICE_KAFKA_AUTH_PORT", setup);
    let brokers = broker.brokers();
    let dir = TempDir::new("kafka-sasl");
    for (mechanism, name) in [
        ("scram-sha-512", "SCRAM-SHA-512"),
        ("scram-sha-256", "SCRAM-SHA-256"),
    ] {
        let source =
            format!("kafka://{brokers}/t?security=sasl_plaintext&sasl={mechanism}&user=alice");
        let (out, took) = refused(&dir, &source, "30s", Some("not-the-password"));
        out.assert_code(2).assert_stderr_has(&format!(
            "error: Kafka: broker `{brokers}` refused user `alice` (SASL {name}): authentication failed; \
             check the user and password"
        ));
        assert!(took < Duration::from_secs(10), "not retried");
    }
    // Tansu offers no PLAIN: it closes the connection at the handshake.
    let source = format!("kafka://{brokers}/t?security=sasl_plaintext&sasl=plain&user=alice");
    let (out, _) = refused(&dir, &source, "30s", Some("pw"));
    out.assert_code(2).assert_stderr_has(&format!(
        "error: Kafka: broker `{brokers}` closed the connection at the SASL handshake for PLAIN"
    ));
}

/// Security options that cannot work are refused before anything is
/// reached, each with a line saying what to set.
#[test]
fn bad_security_options_say_what_to_set() {
    let dir = TempDir::new("kafka-sec-options");
    let empty = dir.write("empty.pem", "no certificate here\n");
    let empty = empty.display();
    let cases = [
        (
            "security=sasl_ssl&sasl=scram-sha-512".to_string(),
            "error: Kafka: SASL SCRAM-SHA-512 needs a user; add `user=NAME`".to_string(),
        ),
        (
            "security=sasl_ssl&sasl=scram-sha-512&user=u&password-env=SLUICE_TEST_UNSET_PASSWORD".to_string(),
            "error: Kafka: SASL needs a password: set the environment variable `SLUICE_TEST_UNSET_PASSWORD`, \
             or name another with `password-env=VAR` or a file with `password-file=PATH`"
                .to_string(),
        ),
        (
            "security=ssl&ca=missing.pem".to_string(),
            "error: Kafka: cannot read `missing.pem` (option `ca`): No such file or directory (os error 2); give a readable file".to_string(),
        ),
        (
            format!("security=ssl&ca={empty}"),
            "error: Kafka: option `ca` names a file with no PEM certificate (`-----BEGIN CERTIFICATE-----`); \
             give the brokers' CA certificates"
                .to_string(),
        ),
        (
            "ca=x.pem".to_string(),
            "error: Kafka: option `ca` needs TLS, but `security` is `plaintext`; add `security=ssl` \
             (or `security=sasl_ssl` with SASL)"
                .to_string(),
        ),
        (
            "security=tls".to_string(),
            "error: Kafka: option `security=tls` is not valid; use plaintext, ssl, sasl_ssl or sasl_plaintext".to_string(),
        ),
    ];
    for (query, line) in cases {
        let out = HostCommand::job(
            guests::wordcount("rust"),
            &format!("kafka://127.0.0.1:1/t?{query}"),
            &[],
        )
        .current_dir(&dir.0)
        .run();
        out.assert_code(2).assert_stderr_has(&line);
    }
}
