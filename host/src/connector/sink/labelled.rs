//! A side output printed beside the main one: each line starts with the
//! side output's name (`late> (word,3)`), as Flink's print sink does with
//! an identifier, so that the two can be told apart on one stdout.

use crate::connector::{ConnectorError, Sink, SinkPosition};
use crate::dataflow::exchange::Block;

/// A sink whose lines carry a label.
pub struct Labelled {
    inner: Box<dyn Sink>,
    label: Vec<u8>,
}

impl Labelled {
    /// `inner`, with each line starting `LABEL> `.
    pub fn new(inner: Box<dyn Sink>, label: &str) -> Self {
        Labelled {
            inner,
            label: format!("{label}> ").into_bytes(),
        }
    }
}

impl Sink for Labelled {
    fn write(&mut self, at: u64, block: &Block) -> Result<(), ConnectorError> {
        if block.bytes.is_empty() {
            return self.inner.write(at, block);
        }
        let mut bytes =
            Vec::with_capacity(block.bytes.len() + self.label.len() * block.lines as usize);
        for line in block.bytes.split_inclusive(|b| *b == b'\n') {
            bytes.extend_from_slice(&self.label);
            bytes.extend_from_slice(line);
        }
        let labelled = Block {
            bytes,
            lines: block.lines,
            keys: block.keys.clone(),
            key_ends: block.key_ends.clone(),
            runs: block.runs.clone(),
        };
        self.inner.write_owned(at, labelled)
    }

    fn flush(&mut self) -> Result<(), ConnectorError> {
        self.inner.flush()
    }

    fn poll(&mut self) -> Result<(), ConnectorError> {
        self.inner.poll()
    }

    fn sync(&mut self) -> Result<SinkPosition, ConnectorError> {
        self.inner.sync()
    }
}
