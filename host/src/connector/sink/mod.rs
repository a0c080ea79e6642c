//! Sinks, one file each: stdout (`print`), a file, or nowhere (`discard`).
//! A sink receives whole blocks of formatted lines and flushes once per
//! batch, so interactive jobs show output at once without a write per line.

pub mod discard;
pub mod file;
pub mod labelled;
pub mod print;

use crate::dataflow::exchange::Block;

/// Which lines of a block a sink still lacks. Lines are numbered across
/// the job's whole output; a sink that already has lines up to `written`
/// (a replay after a failure goes over them again) leaves them out.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Dedup {
    /// Lines the sink has, in the job's numbering.
    pub(crate) written: u64,
}

impl Dedup {
    /// The part of `block` (lines `at..`) the sink does not have yet.
    pub(crate) fn fresh<'a>(&mut self, at: u64, block: &'a Block) -> &'a [u8] {
        let already = self.written.saturating_sub(at).min(block.lines);
        self.written = self.written.max(at + block.lines);
        if already == 0 {
            return &block.bytes;
        }
        let cut = memchr::memchr_iter(b'\n', &block.bytes)
            .nth(already.saturating_sub(1) as usize)
            .map_or(block.bytes.len(), |i| i + 1);
        &block.bytes[cut..]
    }
}
