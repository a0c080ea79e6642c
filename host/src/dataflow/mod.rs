//! The dataflow: what flows (batches with barriers among them), the
//! operator trait every stage implements, the exchange between stages by
//! key group, and the worker threads that run the operators.

pub mod exchange;
pub mod message;
pub mod operator;
pub mod worker;
