//! The Sluice runtime: runs stateful stream jobs whose per-record logic is
//! a WebAssembly component.
//!
//! The host owns everything that must survive a failure — sources and their
//! positions, keyed state, restarts, sinks — and the guest owns only pure
//! per-record logic (flat-map and key-selector), called in batches through
//! the `sluice:stream@0.1.0` WIT contract. Keyed state is checkpointed and
//! restored; a failed task restarts by the job's restart strategy.
//!
//! ```no_run
//! use sluice_host::{CancelToken, Runtime, JobOutcome};
//! use sluice_host::config::{FileConfig, FlagConfig, JobSpec};
//!
//! # fn main() -> anyhow::Result<()> {
//! let runtime = Runtime::new()?;
//! let module = runtime.load("wordcount.wasm".as_ref())?;
//! let description = module.describe(&[])?;
//! let settings = FileConfig { source: Some("file://input.txt".into()), ..Default::default() };
//! let flags = FlagConfig { settings, ..Default::default() };
//! let spec = JobSpec::resolve(&description, &FileConfig::default(), &flags)?;
//! let prepared = sluice_host::job::prepare(&module, &spec)?;
//! let handle = sluice_host::JobHandle::start(module, spec, prepared, CancelToken::new())?;
//! assert_eq!(handle.wait(), JobOutcome::Finished);
//! # Ok(())
//! # }
//! ```
//!
//! The library keeps no process-global state and never exits the process,
//! so one process can run many jobs side by side.
#![warn(missing_docs)]

pub mod checkpoint;
pub mod config;
pub mod connector;
pub mod dataflow;
pub mod encoding;
pub mod error;
pub mod fault;
pub mod job;
pub mod operators;
pub mod record;
pub mod restart;
pub mod server;
pub mod state;
pub mod units;
pub mod wasm;

pub use error::Error;
pub use fault::{Fault, TaskFailure};
pub use job::{CancelToken, JobHandle, JobOutcome, JobState};
pub use wasm::{GuestFailure, Module, ModuleError, Runtime};
