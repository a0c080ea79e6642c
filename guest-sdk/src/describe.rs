//! The job description a guest may give of itself, and its parameters.

use std::time::Duration;

/// The job's parameters (`--param KEY=VALUE`), in the order given.
#[derive(Debug, Clone, Default)]
pub struct Params(pub(crate) Vec<(String, String)>);

impl Params {
    /// The value of `key`, if it was given (the last one wins).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// All parameters in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// A keyed aggregation the host runs on the guest's rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Aggregation {
    /// Running sum of field N.
    Sum(u32),
    /// Running count of rows, written into field N.
    Count(u32),
    /// Running minimum of field N.
    Min(u32),
    /// Running maximum of field N.
    Max(u32),
}

/// What the job does when a task fails, with Flink's semantics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Restart {
    /// Fail on the first task failure.
    None,
    /// At most `attempts` restarts over the job's life, `delay` apart.
    FixedDelay {
        /// Restarts allowed.
        attempts: u32,
        /// Delay before each restart.
        delay: Duration,
    },
    /// Fail when more than `max_failures` happen within `interval`.
    FailureRate {
        /// Failures tolerated per interval.
        max_failures: u32,
        /// The measuring interval.
        interval: Duration,
        /// Delay before each restart.
        delay: Duration,
    },
    /// A delay growing from `initial` to `max` by `multiplier`.
    ExponentialDelay {
        /// First delay.
        initial: Duration,
        /// Largest delay.
        max: Duration,
        /// Growth per failure.
        multiplier: f64,
        /// Quiet time after which the delay resets.
        reset_after: Duration,
        /// Random jitter as a fraction of the delay.
        jitter: f64,
    },
}

impl Restart {
    /// Fixed-delay restarts: `attempts` restarts, `delay` apart.
    pub fn fixed_delay(attempts: u32, delay: Duration) -> Self {
        Restart::FixedDelay { attempts, delay }
    }
}

/// Limits for each guest instance; `None` keeps the host's default.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    /// Linear memory of all memories together, in bytes.
    pub memory_bytes: Option<u64>,
    /// Deadline of one call (one batch of records).
    pub call_timeout: Option<Duration>,
    /// Rows one input record may emit.
    pub max_rows_per_record: Option<u32>,
    /// Encoded output bytes one input record may emit.
    pub max_bytes_per_record: Option<u64>,
}

/// The job's defaults; command-line flags and a TOML file override them.
#[derive(Debug, Clone, Default)]
pub struct JobDescription {
    pub(crate) name: Option<String>,
    pub(crate) source: Option<String>,
    pub(crate) sink: Option<String>,
    pub(crate) aggregation: Option<Aggregation>,
    pub(crate) checkpoint_interval: Option<Duration>,
    pub(crate) restart: Option<Restart>,
    pub(crate) parallelism: Option<u32>,
    pub(crate) limits: Option<Limits>,
}

impl JobDescription {
    /// A description with the job's name.
    pub fn new(name: impl Into<String>) -> Self {
        JobDescription {
            name: Some(name.into()),
            ..Default::default()
        }
    }

    /// The default source: `socket://HOST:PORT`, `file://PATH` or `-`.
    pub fn source(mut self, uri: impl Into<String>) -> Self {
        self.source = Some(uri.into());
        self
    }

    /// The default sink: `print`, `file://PATH` or `discard`.
    pub fn sink(mut self, uri: impl Into<String>) -> Self {
        self.sink = Some(uri.into());
        self
    }

    /// The keyed aggregation.
    pub fn aggregate(mut self, aggregation: Aggregation) -> Self {
        self.aggregation = Some(aggregation);
        self
    }

    /// Shorthand for `aggregate(Aggregation::Sum(field))`.
    pub fn sum(self, field: u32) -> Self {
        self.aggregate(Aggregation::Sum(field))
    }

    /// Checkpoint every `interval`.
    pub fn checkpoint_every(mut self, interval: Duration) -> Self {
        self.checkpoint_interval = Some(interval);
        self
    }

    /// Turn checkpointing off by default.
    pub fn no_checkpoints(mut self) -> Self {
        self.checkpoint_interval = Some(Duration::ZERO);
        self
    }

    /// The restart strategy.
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = Some(restart);
        self
    }

    /// The default number of parallel subtasks.
    pub fn parallelism(mut self, parallelism: u32) -> Self {
        self.parallelism = Some(parallelism);
        self
    }

    /// Limits for each guest instance.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = Some(limits);
        self
    }
}
