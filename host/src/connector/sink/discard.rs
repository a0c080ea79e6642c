//! `discard`: drops the output (for benchmarks); the job does not even
//! format lines for it.

use crate::connector::{ConnectorEnv, ConnectorError, Sink, SinkContext, SinkKind, SinkPosition};
use crate::dataflow::exchange::Block;

/// The `discard` sink.
pub struct DiscardKind;

impl SinkKind for DiscardKind {
    fn matches(&self, uri: &str) -> bool {
        uri == "discard"
    }

    fn usage(&self) -> &'static str {
        "`discard`"
    }

    fn check(&self, _uri: &str, _env: &ConnectorEnv) -> Result<(), ConnectorError> {
        Ok(())
    }

    fn discards(&self) -> bool {
        true
    }

    fn open(
        &self,
        _uri: &str,
        _env: &ConnectorEnv,
        _cx: &SinkContext,
    ) -> Result<Box<dyn Sink>, ConnectorError> {
        Ok(Box::new(Discard))
    }
}

/// Drops everything.
pub struct Discard;

impl Sink for Discard {
    fn write(&mut self, _at: u64, _block: &Block) -> Result<(), ConnectorError> {
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }

    fn sync(&mut self) -> Result<SinkPosition, ConnectorError> {
        Ok(SinkPosition::default())
    }
}
