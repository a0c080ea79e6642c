//! Sources, one file each: newline-delimited text from a socket (as a
//! client, like Flink's `socketTextStream`), a file (bounded) or stdin
//! (bounded). Each reads on a thread of its own through the line framing
//! of `connector/lines.rs`.

pub mod file;
pub mod kafka;
pub mod socket;
pub mod stdin;
