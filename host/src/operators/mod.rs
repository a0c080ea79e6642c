//! Operators, one per file: the guest's flat-map (chained with its
//! key-selector) and the host's keyed aggregation.

pub mod aggregate;
pub mod flat_map;
pub mod guest;
pub mod guest_map;
pub mod process;
pub mod window;
