//! Event time and processing time for a 0.2.0 job: the processing time
//! each batch gets (sampled once per batch, and the same when the batch
//! runs again), and the watermark, derived from the largest timestamp of
//! the first stage's rows less the bounded out-of-orderness, advanced with
//! processing time when the source is idle for the idle timeout. Both are
//! deterministic given the batches, so a replay sees what the run saw.

use std::time::Instant;

use crate::config::pipeline::WatermarkStrategy;
use crate::dataflow::message::Clock;

/// A job's event time.
#[derive(Debug, Clone)]
pub struct EventTime {
    strategy: Option<WatermarkStrategy>,
    /// The watermark after the last batch that went past the first stage.
    pub watermark: i64,
    /// The largest timestamp of a row the first stage emitted.
    pub max_timestamp: Option<i64>,
    /// When the last record came (for the idle timeout).
    last_record: Instant,
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    super::now_ms() as i64
}

impl EventTime {
    /// Event time following `strategy`, from `watermark` and the largest
    /// timestamp seen (a restored job's).
    pub fn new(
        strategy: Option<WatermarkStrategy>,
        watermark: i64,
        max_timestamp: Option<i64>,
    ) -> Self {
        EventTime {
            strategy,
            watermark,
            max_timestamp,
            last_record: Instant::now(),
        }
    }

    /// The clock of a batch about to enter the first stage.
    pub fn entering(&self, processing_time: i64) -> Clock {
        Clock {
            processing_time,
            watermark: self.watermark,
            advance_to: self.watermark,
        }
    }

    /// The batch with `clock` went past the first stage, whose rows' largest
    /// timestamp was `max_ts`, and (for an idle tick) with an idle advance:
    /// its clock for the later stages, and the watermark moves on.
    pub fn passed(&mut self, clock: Clock, max_ts: Option<i64>, idle: Option<i64>) -> Clock {
        let Some(strategy) = self.strategy else {
            return Clock {
                watermark: i64::MIN,
                advance_to: i64::MIN,
                ..clock
            };
        };
        if let Some(ts) = max_ts {
            self.max_timestamp = Some(self.max_timestamp.map_or(ts, |m| m.max(ts)));
        }
        let bound = self.max_timestamp.map_or(i64::MIN, |m| {
            m.saturating_sub(strategy.out_of_orderness_ms as i64)
        });
        let before = self.watermark;
        self.watermark = before.max(bound).max(idle.unwrap_or(i64::MIN));
        Clock {
            processing_time: clock.processing_time,
            watermark: before,
            advance_to: self.watermark,
        }
    }

    /// A record came: the source is not idle.
    pub fn saw_records(&mut self) {
        self.last_record = Instant::now();
    }

    /// Where the watermark goes when the source has been idle for its idle
    /// timeout: the largest timestamp seen, plus the processing time since
    /// the timeout passed. `None` when not idle, or no idle timeout is set.
    pub fn idle_advance(&self) -> Option<i64> {
        let timeout = self.strategy?.idle_timeout_ms?;
        let idle = self.last_record.elapsed().as_millis() as u64;
        if idle < timeout {
            return None;
        }
        let base = self.max_timestamp?;
        Some(base.saturating_add((idle - timeout) as i64))
    }

    /// Goes back to `watermark` (a batch that had moved it is run again).
    pub fn rewind(&mut self, watermark: i64) {
        self.watermark = watermark;
    }
}
