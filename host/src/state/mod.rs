//! Keyed state, owned by the host: key groups, and the backend that keeps
//! each key group's entries with copy-on-write snapshots for checkpoints.

pub mod key_groups;
pub mod keyed;
pub mod process_state;
pub mod store;
pub mod timers;
