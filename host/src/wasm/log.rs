//! A guest's stdout and stderr: captured into a bounded buffer per call,
//! for the host's log. Writes past the capacity are dropped (and counted),
//! never refused, so a chatty guest is not failed for it.

use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub(crate) struct GuestLog {
    inner: Arc<Mutex<GuestLogInner>>,
}

struct GuestLogInner {
    text: Vec<u8>,
    dropped: usize,
    capacity: usize,
}

impl GuestLog {
    pub(crate) fn new(capacity: usize) -> Self {
        GuestLog {
            inner: Arc::new(Mutex::new(GuestLogInner {
                text: Vec::new(),
                dropped: 0,
                capacity,
            })),
        }
    }

    pub(crate) fn append(&self, bytes: &[u8]) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let room = inner.capacity.saturating_sub(inner.text.len());
        let keep = bytes.len().min(room);
        inner.text.extend_from_slice(&bytes[..keep]);
        inner.dropped += bytes.len() - keep;
    }

    pub(crate) fn take(&self) -> String {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut text = String::from_utf8_lossy(&inner.text).into_owned();
        if inner.dropped > 0 {
            text.push_str(&format!("\n[{} more bytes dropped]", inner.dropped));
        }
        inner.text.clear();
        inner.dropped = 0;
        text
    }
}

impl wasmtime_wasi::cli::IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for GuestLog {
    fn p2_stream(&self) -> Box<dyn wasmtime_wasi::p2::OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(tokio::io::sink())
    }
}

#[async_trait::async_trait]
impl wasmtime_wasi::p2::Pollable for GuestLog {
    async fn ready(&mut self) {}
}

impl wasmtime_wasi::p2::OutputStream for GuestLog {
    fn write(&mut self, bytes: bytes::Bytes) -> wasmtime_wasi::p2::StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> wasmtime_wasi::p2::StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> wasmtime_wasi::p2::StreamResult<usize> {
        Ok(64 * 1024)
    }
}
