//! The thin wasmtime layer: the engine and its compile cache, loading and
//! checking a module against the worlds this host serves (one module per
//! WIT version behind [`world`]), instances in their sandbox, calls, and
//! turning traps into failures a user can read.
//!
//! Nothing outside this module names a wasmtime type. It knows nothing of
//! sources, state or checkpoints: it runs batches through a guest instance
//! and says what went wrong when a call fails.

mod cache;
pub mod compiled;
pub mod engine;
pub mod instance;
mod log;
mod meter;
pub mod module;
mod sandbox;
pub mod trap;
mod types;
mod v0_1;
pub mod v0_2;
pub mod world;

pub use engine::{EngineOptions, Runtime};
pub use instance::Instance;
pub(crate) use meter::renice;
pub use module::{MAX_MODULE_BYTES, Module, ModuleInfo};
pub use trap::GuestFailure;
pub use types::{BatchOutput, EngineError, Header, ModuleError};
pub use v0_2::Call;
pub use world::{SERVED, Version};
