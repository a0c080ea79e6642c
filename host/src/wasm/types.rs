//! Types the wasm layer's modules share: why a module is refused, why the
//! engine cannot start, and what one batch call returns.

use std::path::PathBuf;

/// Why a module cannot be used as a Sluice guest. Always the user's input.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// The file cannot be read.
    #[error("cannot read module `{}`: {error}; check the path", path.display())]
    Read {
        /// The module's path.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// Anything else, already worded for the user.
    #[error("{0}")]
    Invalid(String),
}

/// The engine could not be set up: the host's environment (memory for the
/// instance pool, a thread), never the user's input.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the WebAssembly engine: {0}")]
pub struct EngineError(pub(crate) String);

/// The output of one batch: encoded rows and keys, and the failing record.
pub struct BatchOutput {
    /// `record-output*` as the WIT documents it.
    pub output: Vec<u8>,
    /// A record the guest failed without trapping: its index and message.
    pub failed: Option<(u32, String)>,
    /// The state changes (0.2.0 stateful calls; empty otherwise).
    pub changes: Vec<u8>,
}

/// What the host tells a 0.2.0 call about time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The batch's processing time (Unix ms).
    pub processing_time: i64,
    /// The event-time watermark (`i64::MIN` before the first).
    pub watermark: i64,
}

/// The first line of a (wasmtime) error message.
pub(crate) fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}
