//! A small blocking Kafka client over the protocol codecs of the
//! `kafka-protocol` crate: one TCP connection per broker (with
//! `TCP_NODELAY`, and every request written in one piece, so no request
//! waits on a delayed ACK), the API versions negotiated per broker, and
//! the few calls Sluice needs — metadata, fetch, produce, list offsets,
//! consumer-group offset commit and fetch, create topics. Every call has a
//! deadline; nothing here retries by itself, its callers decide.
//!
//! A connection is plain TCP or TLS, and logs in with SASL after the
//! API versions when its [`Security`] says (`security.rs`, `sasl.rs`).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    FetchRequest, FetchResponse, FindCoordinatorRequest, FindCoordinatorResponse,
    ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, SaslAuthenticateRequest,
    SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

use crate::connector::kafka::sasl::{self, Scram};
use crate::connector::kafka::security::{Sasl, Security, Stream, TlsError};

/// A request the client sends, with its API key and response.
pub trait Call: Encodable + HeaderVersion {
    /// Its API key.
    const KEY: ApiKey;
    /// What the broker answers.
    type Response: Decodable + HeaderVersion;
}

macro_rules! calls {
    ($($request:ident => $response:ident as $key:ident),* $(,)?) => {
        $(impl Call for $request {
            const KEY: ApiKey = ApiKey::$key;
            type Response = $response;
        })*
    };
}

calls! {
    ProduceRequest => ProduceResponse as Produce,
    FetchRequest => FetchResponse as Fetch,
    ListOffsetsRequest => ListOffsetsResponse as ListOffsets,
    MetadataRequest => MetadataResponse as Metadata,
    OffsetCommitRequest => OffsetCommitResponse as OffsetCommit,
    OffsetFetchRequest => OffsetFetchResponse as OffsetFetch,
    FindCoordinatorRequest => FindCoordinatorResponse as FindCoordinator,
    CreateTopicsRequest => CreateTopicsResponse as CreateTopics,
    SaslHandshakeRequest => SaslHandshakeResponse as SaslHandshake,
    SaslAuthenticateRequest => SaslAuthenticateResponse as SaslAuthenticate,
}

/// What went wrong talking to Kafka.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KafkaError {
    /// The broker cannot be reached, or the connection broke: it may work
    /// again later.
    #[error("{0}")]
    Unreachable(String),
    /// The broker answered with an error.
    #[error("{message}")]
    Broker {
        /// The Kafka error code.
        code: i16,
        /// What it means, with the call it answered.
        message: String,
        /// Whether trying again may work.
        retriable: bool,
    },
    /// A request or response that does not fit the protocol.
    #[error("{0}")]
    Protocol(String),
    /// The broker refused the client's TLS or SASL settings (a wrong
    /// password, an untrusted certificate, TLS against plain TCP): the
    /// user's to fix, trying again will not help.
    #[error("{0}")]
    Security(String),
}

impl KafkaError {
    /// The broker's error `code` for `what`, if it is one.
    pub fn check(code: i16, what: &str) -> Result<(), KafkaError> {
        match ResponseError::try_from_code(code) {
            None => Ok(()),
            Some(e) => Err(KafkaError::Broker {
                code,
                message: format!("{what}: the broker answered {e} (error {code})"),
                retriable: e.is_retriable(),
            }),
        }
    }

    /// Whether trying again later may work.
    pub fn retriable(&self) -> bool {
        match self {
            KafkaError::Unreachable(_) => true,
            KafkaError::Broker { retriable, .. } => *retriable,
            KafkaError::Protocol(_) | KafkaError::Security(_) => false,
        }
    }
}

/// The client's name in the brokers' logs.
const CLIENT_ID: &str = "sluice";
/// The largest response the client reads.
pub const MAX_RESPONSE: usize = 256 << 20;

/// The newest version of each API the client speaks (all older ones down
/// to the oldest it can use work too), and the oldest.
fn supported(key: ApiKey) -> (i16, i16) {
    match key {
        // v3: record batches; v9: flexible. v13 names topics by id.
        ApiKey::Produce => (3, 9),
        // v4: isolation levels, v12 the last that names topics.
        ApiKey::Fetch => (4, 12),
        ApiKey::ListOffsets => (1, 7),
        ApiKey::Metadata => (1, 12),
        ApiKey::OffsetCommit => (2, 8),
        // v8 batches groups.
        ApiKey::OffsetFetch => (1, 7),
        // v4 batches keys.
        ApiKey::FindCoordinator => (1, 3),
        ApiKey::CreateTopics => (2, 7),
        ApiKey::ApiVersions => (0, 3),
        // v1: the SASL exchange in SaslAuthenticate frames.
        ApiKey::SaslHandshake => (1, 1),
        ApiKey::SaslAuthenticate => (0, 2),
        _ => (0, 0),
    }
}

/// One connection to one broker.
pub struct Broker {
    stream: Stream,
    addr: String,
    correlation: i32,
    versions: HashMap<i16, i16>,
    timeout: Duration,
}

impl Broker {
    /// Connects to `addr` (`HOST:PORT`) within `timeout`, secured as
    /// `security` says, negotiates the API versions and logs in.
    pub fn connect(
        addr: &str,
        timeout: Duration,
        security: &Security,
    ) -> Result<Broker, KafkaError> {
        let unreachable =
            |e: String| KafkaError::Unreachable(format!("cannot reach broker `{addr}`: {e}"));
        let addrs: Vec<_> = addr
            .to_socket_addrs()
            .map_err(|e| unreachable(e.to_string()))?
            .collect();
        let mut last = "it has no address".to_string();
        let mut stream = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e.to_string(),
            }
        }
        let tcp = stream.ok_or_else(|| unreachable(last))?;
        let timeout = timeout.max(Duration::from_millis(1));
        tcp.set_nodelay(true)
            .and_then(|()| tcp.set_read_timeout(Some(timeout)))
            .and_then(|()| tcp.set_write_timeout(Some(timeout)))
            .map_err(|e| unreachable(e.to_string()))?;
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        let stream = Stream::open(tcp, host, security.tls.as_ref()).map_err(|e| match e {
            TlsError::Refused(why) => KafkaError::Security(format!(
                "TLS with broker `{addr}` failed: {why}; check the broker's address and certificate, and give its CA with `ca=PATH` if the system does not trust it"
            )),
            TlsError::Io(e) => unreachable(format!(
                "the TLS handshake failed: {e} (does the broker listen with TLS? if not, drop `security=ssl`)"
            )),
        })?;
        let mut broker = Broker {
            stream,
            addr: addr.to_string(),
            correlation: 0,
            versions: HashMap::new(),
            timeout,
        };
        broker.negotiate()?;
        if let Some(login) = &security.sasl {
            broker.authenticate(login)?;
        }
        Ok(broker)
    }

    /// The broker's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn negotiate(&mut self) -> Result<(), KafkaError> {
        // v0 first would do everywhere, but v3 is what current brokers
        // expect; a broker that cannot read it answers v0.
        let response: ApiVersionsResponse = self.call_version(
            ApiKey::ApiVersions,
            3,
            &ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str(CLIENT_ID))
                .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION"))),
            self.timeout,
        )?;
        KafkaError::check(response.error_code, "ApiVersions")?;
        for v in response.api_keys {
            let Ok(key) = ApiKey::try_from(v.api_key) else {
                continue;
            };
            let (min, max) = supported(key);
            let version = max.min(v.max_version);
            if version >= min && version >= v.min_version {
                self.versions.insert(v.api_key, version);
            }
        }
        Ok(())
    }

    /// The version of `R` both sides speak.
    fn version<R: Call>(&self) -> Result<i16, KafkaError> {
        let key = R::KEY;
        self.versions.get(&(key as i16)).copied().ok_or_else(|| {
            let (min, max) = supported(key);
            KafkaError::Protocol(format!(
                "broker `{}` does not speak {key:?} versions {min} to {max}, which Sluice needs",
                self.addr
            ))
        })
    }

    /// Sends `request` and reads its response, at the version both sides
    /// speak, within `timeout`.
    pub fn call<R: Call>(
        &mut self,
        request: &R,
        timeout: Duration,
    ) -> Result<(R::Response, i16), KafkaError> {
        let (key, version) = (R::KEY, self.version::<R>()?);
        let response = self.call_version(key, version, request, timeout)?;
        Ok((response, version))
    }

    fn call_version<Req: Encodable + HeaderVersion, Resp: Decodable + HeaderVersion>(
        &mut self,
        key: ApiKey,
        version: i16,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, KafkaError> {
        let sent = self.send_version(key, version, request, timeout)?;
        self.receive_version(sent, timeout)
    }

    /// Sends `request` at the version both sides speak without waiting for
    /// the answer, which [`Broker::receive`] reads. Nothing else may go on
    /// the connection in between.
    pub fn send<R: Call>(&mut self, request: &R, timeout: Duration) -> Result<Sent, KafkaError> {
        self.send_version(R::KEY, self.version::<R>()?, request, timeout)
    }

    /// Reads the answer to a request [`Broker::send`] sent.
    pub fn receive<R: Call>(
        &mut self,
        sent: Sent,
        timeout: Duration,
    ) -> Result<(R::Response, i16), KafkaError> {
        let version = sent.version;
        Ok((self.receive_version(sent, timeout)?, version))
    }

    fn send_version<Req: Encodable + HeaderVersion>(
        &mut self,
        key: ApiKey,
        version: i16,
        request: &Req,
        timeout: Duration,
    ) -> Result<Sent, KafkaError> {
        self.correlation = self.correlation.wrapping_add(1);
        let correlation = self.correlation;
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let bad = |e: anyhow::Error| KafkaError::Protocol(format!("{key:?} v{version}: {e}"));
        let mut buf = BytesMut::with_capacity(256);
        buf.put_i32(0);
        header
            .encode(&mut buf, Req::header_version(version))
            .map_err(bad)?;
        request.encode(&mut buf, version).map_err(bad)?;
        let len = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        self.write(&buf, timeout, key)?;
        Ok(Sent {
            key,
            version,
            correlation,
        })
    }

    fn receive_version<Resp: Decodable + HeaderVersion>(
        &mut self,
        sent: Sent,
        timeout: Duration,
    ) -> Result<Resp, KafkaError> {
        let Sent {
            key,
            version,
            correlation,
        } = sent;
        let bad = |e: anyhow::Error| KafkaError::Protocol(format!("{key:?} v{version}: {e}"));
        let mut body = self.read(timeout, key)?;
        let got = ResponseHeader::decode(&mut body, Resp::header_version(version)).map_err(bad)?;
        if got.correlation_id != correlation {
            return Err(KafkaError::Protocol(format!(
                "broker `{}` answered request {} for request {correlation}",
                self.addr, got.correlation_id
            )));
        }
        Resp::decode(&mut body, version).map_err(bad)
    }

    /// Writes one framed request.
    fn write(&mut self, request: &[u8], timeout: Duration, key: ApiKey) -> Result<(), KafkaError> {
        let timeout = timeout.max(Duration::from_millis(1));
        let stream = &mut self.stream;
        let result = stream
            .tcp()
            .set_write_timeout(Some(timeout))
            .and_then(|()| stream.write_all(request))
            .and_then(|()| stream.flush());
        result.map_err(broken(&self.addr, key))
    }

    /// Reads one framed response.
    fn read(&mut self, timeout: Duration, key: ApiKey) -> Result<Bytes, KafkaError> {
        let deadline = Instant::now() + timeout;
        let left = || {
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1))
        };
        let (addr, stream) = (&self.addr, &mut self.stream);
        stream
            .tcp()
            .set_read_timeout(Some(left()))
            .map_err(broken(addr, key))?;
        quick_ack(stream.tcp());
        let mut len = [0u8; 4];
        if let Err(e) = stream.read_exact(&mut len) {
            return Err(match (&*stream, e.kind()) {
                (Stream::Plain(_), std::io::ErrorKind::UnexpectedEof)
                    if key == ApiKey::ApiVersions =>
                {
                    KafkaError::Unreachable(format!(
                        "broker `{addr}` closed the connection at its first request (if it listens with TLS, add `security=ssl` or `security=sasl_ssl`)"
                    ))
                }
                _ => broken(addr, key)(e),
            });
        }
        if matches!(stream, Stream::Plain(_)) && matches!(len, [0x15 | 0x16, 3, 0..=4, _]) {
            return Err(KafkaError::Security(format!(
                "broker `{addr}` answered with TLS: it listens with TLS; add `security=ssl` (or `security=sasl_ssl`)"
            )));
        }
        let len = i32::from_be_bytes(len);
        let len = usize::try_from(len)
            .ok()
            .filter(|l| *l <= MAX_RESPONSE)
            .ok_or_else(|| {
                KafkaError::Protocol(format!(
                    "broker `{addr}` sent a response of {len} bytes to {key:?}, over the client's limit of {MAX_RESPONSE}"
                ))
            })?;
        let mut body = vec![0u8; len];
        let mut at = 0;
        while at < len {
            stream
                .tcp()
                .set_read_timeout(Some(left()))
                .map_err(broken(addr, key))?;
            match stream.read(&mut body[at..]) {
                Ok(0) => return Err(broken(addr, key)(std::io::ErrorKind::UnexpectedEof.into())),
                Ok(n) => at += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(broken(addr, key)(e)),
            }
        }
        Ok(Bytes::from(body))
    }

    /// Logs in with SASL: a SaslHandshake naming the mechanism, then its
    /// messages in SaslAuthenticate frames.
    fn authenticate(&mut self, login: &Sasl) -> Result<(), KafkaError> {
        let timeout = self.timeout;
        let mechanism = login.mechanism.name();
        let request =
            SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism));
        let (response, _) = match self.call(&request, timeout) {
            // Tansu closes the connection on a mechanism it lacks.
            Err(KafkaError::Unreachable(_)) => {
                return Err(KafkaError::Security(format!(
                    "broker `{}` closed the connection at the SASL handshake for {mechanism}: it does not offer {mechanism}, or takes no SASL on this listener; check `sasl=` and `security=`",
                    self.addr
                )));
            }
            other => other?,
        };
        if response.error_code != 0 {
            let offered: Vec<&str> = response.mechanisms.iter().map(|m| m.as_str()).collect();
            return Err(KafkaError::Security(format!(
                "broker `{}` refused SASL {mechanism} (error {}; it offers {}); set `sasl=` to one it offers, or drop SASL if the listener takes none",
                self.addr,
                response.error_code,
                if offered.is_empty() {
                    "none".to_string()
                } else {
                    offered.join(", ")
                }
            )));
        }
        match Scram::new(login.mechanism, &login.user, &login.password) {
            None => self
                .sasl_step(login, sasl::plain(&login.user, &login.password))
                .map(drop),
            Some(mut scram) => {
                let server_first = self.sasl_step(login, scram.client_first())?;
                let client_final = scram
                    .client_final(&server_first)
                    .map_err(|why| self.sasl_protocol(login, &why))?;
                let server_final = self.sasl_step(login, client_final)?;
                scram.verify(&server_final).map_err(|why| match why {
                    None => self.refused(login),
                    Some(why) => self.sasl_protocol(login, &why),
                })
            }
        }
    }

    /// One SASL message and the broker's answer.
    fn sasl_step(&mut self, login: &Sasl, message: Vec<u8>) -> Result<Bytes, KafkaError> {
        let request = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(message));
        let timeout = self.timeout;
        let (response, _) = match self.call(&request, timeout) {
            // A broker that closes the connection on a wrong login.
            Err(KafkaError::Unreachable(_)) => return Err(self.refused(login)),
            other => other?,
        };
        match response.error_code {
            0 => Ok(response.auth_bytes),
            // SASL_AUTHENTICATION_FAILED
            58 => Err(self.refused(login)),
            code => Err(KafkaError::Security(format!(
                "broker `{}` refused user `{}` (SASL {}): {} (error {code}){}",
                self.addr,
                login.user,
                login.mechanism.name(),
                ResponseError::try_from_code(code)
                    .map_or_else(|| "an unknown error".to_string(), |e| e.to_string()),
                response
                    .error_message
                    .map(|m| format!(": {}", m.as_str()))
                    .unwrap_or_default()
            ))),
        }
    }

    fn refused(&self, login: &Sasl) -> KafkaError {
        KafkaError::Security(format!(
            "broker `{}` refused user `{}` (SASL {}): authentication failed; check the user and password",
            self.addr,
            login.user,
            login.mechanism.name()
        ))
    }

    fn sasl_protocol(&self, login: &Sasl, why: &str) -> KafkaError {
        KafkaError::Security(format!(
            "broker `{}` answered user `{}`'s SASL {} login wrongly: {why}",
            self.addr,
            login.user,
            login.mechanism.name()
        ))
    }
}

fn broken(addr: &str, key: ApiKey) -> impl Fn(std::io::Error) -> KafkaError + '_ {
    move |e| {
        KafkaError::Unreachable(format!(
            "the connection to broker `{addr}` failed during {key:?}: {e}"
        ))
    }
}

/// A request sent whose answer is still to be read.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    key: ApiKey,
    version: i16,
    correlation: i32,
}

/// Asks the kernel to acknowledge what arrives at once rather than after
/// the delayed-ACK timer (40 ms on Linux): a broker that writes a response
/// in two pieces without `TCP_NODELAY` (Tansu) waits for that ACK before
/// it sends the second. Linux resets the flag after each read, so it is
/// set before every response.
fn quick_ack(stream: &TcpStream) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let one: libc::c_int = 1;
        // SAFETY: a valid socket, a valid option value of its size.
        unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_QUICKACK,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = stream;
}

/// Reads the record batches of a fetch response's `records`, each whole
/// (a response may end in a partial batch, which is left for the next
/// fetch).
pub fn whole_batches(mut records: Bytes) -> Vec<Bytes> {
    let mut batches = Vec::new();
    while records.len() >= 12 {
        let length = (&records[8..12]).get_i32();
        let Ok(length) = usize::try_from(length) else {
            break;
        };
        if records.len() < 12 + length {
            break;
        }
        batches.push(records.split_to(12 + length));
    }
    batches
}
