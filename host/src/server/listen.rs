//! Connections: the accept loop, with what keeps slow or idle clients from
//! exhausting the server — a cap on open connections (taken before the TLS
//! handshake, so half-open handshakes count too), a deadline on the TLS
//! handshake and on reading a request's head (which also closes idle
//! keep-alive connections), a deadline on reading a request's body, and a
//! deadline on a write that makes no progress (a client that stops
//! reading). The route table and what a request may do are `routes`'.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::server::error::AppError;

/// How long connections may take and how many may be open.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Connections open at once (a new one past it gets a 503 and is
    /// closed).
    pub max_connections: usize,
    /// The longest a TLS handshake, a request's head, or the wait for the
    /// next request on an idle connection may take.
    pub header_timeout: Duration,
    /// The longest a write to the client may make no progress.
    pub write_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
        }
    }
}

/// How long open connections (a followed event stream, say) may keep the
/// server after it was asked to stop.
const GRACE: Duration = Duration::from_secs(5);

const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\nretry-after: 1\r\ncontent-length: 0\r\n\r\n";

/// Serves `app` on `listener` (over TLS with `tls`) until `stop` turns
/// true, then lets open connections finish for at most [`GRACE`]; counts
/// connections refused for being over the cap in `refused`.
pub async fn serve(
    (listener, tls): (TcpListener, Option<TlsAcceptor>),
    app: axum::Router,
    limits: ConnLimits,
    refused: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) {
    let open = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                // Out of descriptors, say: wait rather than spin.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.wait_for(|s| *s) => break,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            refused.fetch_add(1, Ordering::Relaxed);
            let _ = tcp.try_write(BUSY);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let watcher = graceful.watcher();
        let (app, tls) = (app.clone(), tls.clone());
        tokio::spawn(async move {
            let tcp = Stalled::new(tcp, limits.write_timeout);
            match tls {
                None => connection(tcp, app, limits, watcher).await,
                Some(acceptor) => {
                    let shake = tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp));
                    if let Ok(Ok(tls)) = shake.await {
                        connection(tls, app, limits, watcher).await;
                    }
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(GRACE, graceful.shutdown()).await;
}

/// Serves HTTP/1.1 on one connection.
async fn connection<I>(
    io: I,
    app: axum::Router,
    limits: ConnLimits,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(app);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let conn = http.serve_connection(TokioIo::new(io), service);
    let _ = watcher.watch(conn).await;
}

/// A stream whose writes fail once one made no progress for its timeout.
struct Stalled<S> {
    inner: S,
    timeout: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> Stalled<S> {
    fn new(inner: S, timeout: Duration) -> Self {
        Stalled {
            inner,
            timeout,
            stalled: None,
        }
    }

    /// `Pending` becomes an error once it lasted the timeout.
    fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let timeout = self.timeout;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client stopped reading",
            )));
        }
        Poll::Pending
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Stalled<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Stalled<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.check(cx, poll)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.check(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A request body that fails once reading it took longer than its
/// deadline, and says so in `late`.
struct Timed {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
    late: Arc<AtomicBool>,
}

impl HttpBody for Timed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.late.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(axum::Error::new(
                "the request body came too slowly",
            ))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Middleware: the request's body must arrive within `timeout`; a body
/// that does not is a 408.
pub async fn body_deadline(timeout: Duration, req: Request, next: Next) -> Response {
    let late = Arc::new(AtomicBool::new(false));
    let req = req.map(|inner| {
        Body::new(Timed {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            late: late.clone(),
        })
    });
    let response = next.run(req).await;
    if late.load(Ordering::Relaxed) {
        let mut r = AppError::Timeout(format!(
            "the request's body did not arrive within {} s",
            timeout.as_secs()
        ))
        .into_response();
        r.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
        return r;
    }
    response
}
