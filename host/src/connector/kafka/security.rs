//! How a Kafka connection is secured: the URI's security options
//! (`security=`, `ca=`, `cert=`, `key=`, `sasl=`, `user=`,
//! `password-env=`, `password-file=`) read once into a [`Security`] that
//! every connection of a cluster shares, the TLS client configuration
//! (rustls with ring) it builds, and the [`Stream`] a broker connection
//! reads and writes, plain TCP or TLS. The SASL exchange itself is
//! `sasl.rs`; the connection, `client.rs`.
//!
//! A server's tenant ([`ConnectorEnv::root`] set) names files among its
//! own files only, and cannot read the server's environment: there
//! `password-env` is refused.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::connector::{ConnectorEnv, ConnectorError};

/// The security options a Kafka source and sink both take.
pub const OPTIONS: &[&str] = &[
    "security",
    "ca",
    "cert",
    "key",
    "sasl",
    "user",
    "password-env",
    "password-file",
];

/// Where the password comes from when neither `password-env` nor
/// `password-file` says.
pub const DEFAULT_PASSWORD_ENV: &str = "SLUICE_KAFKA_PASSWORD";

/// A SASL mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// `PLAIN`: the password as it is (over TLS only, sensibly).
    Plain,
    /// `SCRAM-SHA-256` (RFC 7677).
    ScramSha256,
    /// `SCRAM-SHA-512`.
    ScramSha512,
}

impl Mechanism {
    /// Its name in a SaslHandshake.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// A SASL login.
#[derive(Clone)]
pub struct Sasl {
    /// The mechanism.
    pub mechanism: Mechanism,
    /// The user.
    pub user: String,
    /// The password (never printed).
    pub password: String,
}

impl std::fmt::Debug for Sasl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sasl")
            .field("mechanism", &self.mechanism)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// How every connection of one cluster is secured.
#[derive(Clone, Default)]
pub struct Security {
    /// The options it was read from (for equality and logs; no secret).
    spec: BTreeMap<String, String>,
    /// TLS, when the connection is encrypted.
    pub tls: Option<Arc<ClientConfig>>,
    /// SASL, when the client logs in.
    pub sasl: Option<Sasl>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("spec", &self.spec)
            .field("tls", &self.tls.is_some())
            .field("sasl", &self.sasl)
            .finish()
    }
}

impl PartialEq for Security {
    fn eq(&self, other: &Security) -> bool {
        self.spec == other.spec
    }
}

impl Eq for Security {}

impl Security {
    /// Plain TCP, no login.
    pub fn none() -> Security {
        Security::default()
    }

    /// The protocol's name as Kafka clients spell `security.protocol`.
    pub fn protocol(&self) -> &'static str {
        match (self.tls.is_some(), self.sasl.is_some()) {
            (false, false) => "plaintext",
            (true, false) => "ssl",
            (false, true) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        }
    }

    /// Reads the security options of `options` (others are ignored), with
    /// files and the environment as `env` allows; a one-line error saying
    /// what to set when they do not fit together.
    pub fn from_options(
        options: &BTreeMap<String, String>,
        env: &ConnectorEnv,
    ) -> Result<Security, ConnectorError> {
        let spec: BTreeMap<String, String> = options
            .iter()
            .filter(|(k, _)| OPTIONS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let get = |k: &str| spec.get(k).map(String::as_str);
        let (tls, sasl) = match get("security") {
            None | Some("plaintext") => (false, false),
            Some("ssl") => (true, false),
            Some("sasl_plaintext") => (false, true),
            Some("sasl_ssl") => (true, true),
            Some(other) => {
                return Err(input(format!(
                    "option `security={other}` is not valid; use plaintext, ssl, sasl_ssl or sasl_plaintext"
                )));
            }
        };
        check_fits(&spec, tls, sasl)?;
        let tls = match tls {
            false => None,
            true => Some(Arc::new(tls_config(&spec, env)?)),
        };
        let sasl = match sasl {
            false => None,
            true => Some(login(&spec, env)?),
        };
        Ok(Security { spec, tls, sasl })
    }

    /// Reads the security options of a URI query (`security=ssl&ca=...`),
    /// as [`Security::from_options`] (for tests and tools).
    pub fn from_query(query: &str, env: &ConnectorEnv) -> Result<Security, ConnectorError> {
        let options = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_string(), v.to_string())
            })
            .collect();
        Security::from_options(&options, env)
    }
}

fn input(message: String) -> ConnectorError {
    ConnectorError::Input(format!("Kafka: {message}"))
}

/// Options that make no sense with the `security` chosen.
fn check_fits(
    spec: &BTreeMap<String, String>,
    tls: bool,
    sasl: bool,
) -> Result<(), ConnectorError> {
    let protocol = spec.get("security").map_or("plaintext", String::as_str);
    let has = |k: &str| spec.contains_key(k);
    if !tls && let Some(k) = ["ca", "cert", "key"].into_iter().find(|k| has(k)) {
        return Err(input(format!(
            "option `{k}` needs TLS, but `security` is `{protocol}`; add `security=ssl` (or `security=sasl_ssl` with SASL)"
        )));
    }
    if has("cert") != has("key") {
        return Err(input(
            "options `cert` and `key` go together (a client certificate and its private key); give both or neither".into(),
        ));
    }
    if !sasl
        && let Some(k) = ["sasl", "user", "password-env", "password-file"]
            .into_iter()
            .find(|k| has(k))
    {
        let with = if tls { "sasl_ssl" } else { "sasl_plaintext" };
        return Err(input(format!(
            "option `{k}` needs SASL, but `security` is `{protocol}`; add `security={with}`"
        )));
    }
    Ok(())
}

/// The path option `key` names: inside the tenant's files on a server.
fn path(
    spec: &BTreeMap<String, String>,
    key: &str,
    env: &ConnectorEnv,
) -> Result<PathBuf, ConnectorError> {
    let value = spec.get(key).map(String::as_str).unwrap_or_default();
    if value.is_empty() {
        return Err(input(format!(
            "option `{key}` names no file; use `{key}=PATH`"
        )));
    }
    env.inside(Path::new(value)).ok_or_else(|| {
        input(format!(
            "option `{key}={value}` must be a relative path inside the job's files, without `..`"
        ))
    })
}

fn read_file(
    spec: &BTreeMap<String, String>,
    key: &str,
    env: &ConnectorEnv,
) -> Result<Vec<u8>, ConnectorError> {
    let path = path(spec, key, env)?;
    std::fs::read(&path).map_err(|e| {
        input(format!(
            "cannot read `{}` (option `{key}`): {e}; give a readable file",
            path.display()
        ))
    })
}

/// The system's CA certificates, read once per process.
fn system_roots() -> &'static Result<Arc<RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            let why = found
                .errors
                .first()
                .map_or_else(|| "none found".to_string(), ToString::to_string);
            return Err(format!(
                "cannot load the system's CA certificates ({why}); give the brokers' CA with `ca=PATH`"
            ));
        }
        Ok(Arc::new(roots))
    })
}

/// The TLS configuration: trusted roots from `ca=` or the system, and a
/// client certificate from `cert=` and `key=` when given.
fn tls_config(
    spec: &BTreeMap<String, String>,
    env: &ConnectorEnv,
) -> Result<ClientConfig, ConnectorError> {
    let roots = match spec.get("ca") {
        None => system_roots().clone().map_err(input)?,
        Some(_) => {
            let pem = read_file(spec, "ca", env)?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert =
                    cert.map_err(|e| input(format!("option `ca`: a bad PEM certificate: {e}")))?;
                roots.add(cert).map_err(|e| {
                    input(format!("option `ca`: a certificate rustls cannot use: {e}"))
                })?;
            }
            if roots.is_empty() {
                return Err(input(
                    "option `ca` names a file with no PEM certificate (`-----BEGIN CERTIFICATE-----`); give the brokers' CA certificates".into(),
                ));
            }
            Arc::new(roots)
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| input(format!("TLS: {e}")))?
        .with_root_certificates(roots);
    if !spec.contains_key("cert") {
        return Ok(builder.with_no_client_auth());
    }
    let pem = read_file(spec, "cert", env)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| input(format!("option `cert`: a bad PEM certificate: {e}")))?;
    if chain.is_empty() {
        return Err(input(
            "option `cert` names a file with no PEM certificate; give the client certificate (and its chain)".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&read_file(spec, "key", env)?).map_err(|e| {
        input(format!(
            "option `key`: no PEM private key (PKCS#8, SEC1 or RSA) found: {e}; give the client certificate's key"
        ))
    })?;
    builder
        .with_client_auth_cert(chain, key)
        .map_err(|e| input(format!("options `cert` and `key` do not fit together: {e}")))
}

/// The SASL login: mechanism, user and password, the password from a file
/// or the environment.
fn login(spec: &BTreeMap<String, String>, env: &ConnectorEnv) -> Result<Sasl, ConnectorError> {
    let mechanism = match spec.get("sasl").map(String::as_str) {
        Some("scram-sha-256") => Mechanism::ScramSha256,
        Some("scram-sha-512") => Mechanism::ScramSha512,
        Some("plain") => Mechanism::Plain,
        None => {
            return Err(input(
                "SASL needs a mechanism; add `sasl=scram-sha-512` (or scram-sha-256, plain)".into(),
            ));
        }
        Some(other) => {
            return Err(input(format!(
                "option `sasl={other}` is not valid; use scram-sha-256, scram-sha-512 or plain"
            )));
        }
    };
    let user = match spec.get("user") {
        Some(u) if !u.is_empty() => u.clone(),
        _ => {
            return Err(input(format!(
                "SASL {} needs a user; add `user=NAME`",
                mechanism.name()
            )));
        }
    };
    let password = password(spec, env)?;
    Ok(Sasl {
        mechanism,
        user,
        password,
    })
}

fn password(spec: &BTreeMap<String, String>, env: &ConnectorEnv) -> Result<String, ConnectorError> {
    if spec.contains_key("password-file") {
        if spec.contains_key("password-env") {
            return Err(input(
                "options `password-file` and `password-env` both name a password; keep one".into(),
            ));
        }
        let bytes = read_file(spec, "password-file", env)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| input("option `password-file`: the password is not UTF-8".into()))?;
        // A trailing newline is the editor's, not the password's.
        let password = text.strip_suffix('\n').unwrap_or(&text);
        let password = password.strip_suffix('\r').unwrap_or(password);
        if password.is_empty() {
            return Err(input(
                "option `password-file` names an empty file; put the password in it".into(),
            ));
        }
        return Ok(password.to_string());
    }
    if env.root.is_some() {
        return Err(input(
            "on a server the password comes from a file among the job's files: use `password-file=PATH` (`password-env` would read the server's environment)".into(),
        ));
    }
    let var = spec
        .get("password-env")
        .map_or(DEFAULT_PASSWORD_ENV, String::as_str);
    match std::env::var(var) {
        Ok(p) if !p.is_empty() => Ok(p),
        _ => Err(input(format!(
            "SASL needs a password: set the environment variable `{var}`, or name another with `password-env=VAR` or a file with `password-file=PATH`"
        ))),
    }
}

/// A broker connection's byte stream: plain TCP or TLS over it. An enum,
/// so the plain path is a match and a direct call.
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    /// The socket under it, for timeouts and socket options.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }

    /// `tcp` as it is, or wrapped in TLS to `host` (the broker's host
    /// name or IP address) with the handshake done, when `tls` says.
    pub fn open(
        tcp: TcpStream,
        host: &str,
        tls: Option<&Arc<ClientConfig>>,
    ) -> Result<Stream, TlsError> {
        let Some(config) = tls else {
            return Ok(Stream::Plain(tcp));
        };
        let name = ServerName::try_from(
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
        )
        .map_err(|e| {
            TlsError::Refused(format!("`{host}` is not a host name TLS can check: {e}"))
        })?;
        let conn = ClientConnection::new(config.clone(), name)
            .map_err(|e| TlsError::Refused(e.to_string()))?;
        let mut stream = StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            if let Err(e) = stream.conn.complete_io(&mut stream.sock) {
                return Err(TlsError::classify(e));
            }
        }
        Ok(Stream::Tls(Box::new(stream)))
    }
}

/// A TLS handshake that failed.
#[derive(Debug)]
pub enum TlsError {
    /// The peer or the configuration refused it: trying again will not help.
    Refused(String),
    /// The connection broke or timed out.
    Io(io::Error),
}

impl TlsError {
    /// A handshake's I/O error: rustls's own errors (an untrusted
    /// certificate, a TLS alert) are refusals.
    pub fn classify(e: io::Error) -> TlsError {
        match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(tls) => TlsError::Refused(tls.to_string()),
            None => TlsError::Io(e),
        }
    }
}

impl Read for Stream {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    #[inline]
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(query: &str) -> Result<Security, String> {
        Security::from_query(query, &ConnectorEnv::default()).map_err(|e| e.to_string())
    }

    #[test]
    fn bad_combinations_say_what_to_set() {
        for (query, says) in [
            (
                "security=tls",
                "use plaintext, ssl, sasl_ssl or sasl_plaintext",
            ),
            ("ca=x.pem", "add `security=ssl`"),
            ("security=ssl&cert=c.pem", "give both or neither"),
            ("user=u", "add `security=sasl_plaintext`"),
            ("security=ssl&sasl=plain", "add `security=sasl_ssl`"),
            ("security=sasl_plaintext&user=u", "add `sasl=scram-sha-512`"),
            (
                "security=sasl_plaintext&sasl=md5&user=u",
                "use scram-sha-256",
            ),
            (
                "security=sasl_plaintext&sasl=plain",
                "needs a user; add `user=NAME`",
            ),
            (
                "security=sasl_plaintext&sasl=plain&user=u&password-env=SLUICE_TEST_NO_SUCH_VAR",
                "set the environment variable `SLUICE_TEST_NO_SUCH_VAR`",
            ),
            (
                "security=ssl&ca=/no/such/ca.pem",
                "cannot read `/no/such/ca.pem` (option `ca`)",
            ),
        ] {
            let e = options(query).expect_err(query);
            assert!(e.contains(says), "{query}: {e}");
        }
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused() {
        let dir = std::env::temp_dir().join(format!("sluice-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let ca = dir.join("empty.pem");
        std::fs::write(&ca, "not a certificate\n").expect("write");
        let e = options(&format!("security=ssl&ca={}", ca.display())).expect_err("no cert");
        assert!(e.contains("no PEM certificate"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_tenant_reads_only_its_files_and_not_the_environment() {
        let env = ConnectorEnv {
            root: Some(PathBuf::from("/tenant/files")),
            ..ConnectorEnv::default()
        };
        for (query, says) in [
            (
                "security=ssl&ca=/etc/ssl/ca.pem",
                "must be a relative path inside the job's files",
            ),
            ("security=ssl&ca=../x.pem", "must be a relative path"),
            (
                "security=sasl_plaintext&sasl=plain&user=u&password-file=/etc/shadow",
                "must be a relative path",
            ),
            (
                "security=sasl_plaintext&sasl=plain&user=u&password-env=HOME",
                "use `password-file=PATH`",
            ),
            (
                "security=sasl_plaintext&sasl=plain&user=u",
                "use `password-file=PATH`",
            ),
        ] {
            let e = Security::from_query(query, &env)
                .expect_err(query)
                .to_string();
            assert!(e.contains(says), "{query}: {e}");
        }
    }

    #[test]
    fn a_password_comes_from_a_file_without_its_newline() {
        let dir = std::env::temp_dir().join(format!("sluice-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("pw"), "s3cret\n").expect("write");
        let env = ConnectorEnv {
            root: Some(dir.clone()),
            ..ConnectorEnv::default()
        };
        let s = Security::from_query(
            "security=sasl_plaintext&sasl=scram-sha-256&user=u&password-file=pw",
            &env,
        )
        .expect("valid");
        let sasl = s.sasl.expect("sasl");
        assert_eq!(sasl.password, "s3cret");
        assert!(!format!("{:?}", s.spec).contains("s3cret"));
        assert!(s.tls.is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
