//! The errors the library returns, by area.
//!
//! Every error type of the library says whose fault it is ([`Fault`]), so a
//! caller can choose an exit code or an HTTP status from it: a user's
//! mistake is refused with a message that says what to do, a guest's fault
//! is isolated to its record, and only a fault of the environment or the
//! host is the operator's to look at.

pub use crate::fault::{Fault, MAX_MESSAGE, TaskFailure, shorten};

/// Every error of the library, by area; [`Error::fault`] says whose.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Settings that cannot work (a flag, the TOML file, a job spec).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A module that is not a valid guest.
    #[error(transparent)]
    Module(#[from] crate::wasm::ModuleError),
    /// The engine could not start.
    #[error(transparent)]
    Engine(#[from] crate::wasm::EngineError),
    /// A guest failed outside any record (its start, its description).
    #[error(transparent)]
    Guest(#[from] crate::wasm::GuestFailure),
    /// Checkpoints: storage, a damaged checkpoint, a restore that cannot work.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    /// A source or sink could not be opened or failed.
    #[error(transparent)]
    Connector(#[from] crate::connector::ConnectorError),
}

impl Error {
    /// Whose fault it is.
    pub fn fault(&self) -> Fault {
        match self {
            Error::Config(_) | Error::Module(_) => Fault::Input,
            Error::Engine(_) => Fault::Environment,
            Error::Guest(_) => Fault::Guest,
            Error::Checkpoint(e) => e.fault(),
            Error::Connector(e) => e.fault(),
        }
    }
}
