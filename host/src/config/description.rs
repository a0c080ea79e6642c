//! The job description a guest exports (every field optional), in the
//! host's own types, whatever WIT version the guest was built against: its
//! name, default source and sink, aggregation, checkpoint interval, restart
//! strategy, parallelism and limits. Flags and the TOML file override it.

use crate::restart::RestartStrategy;
use crate::units::ConfigError;

/// A keyed aggregation kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregateKind {
    /// Running sum.
    Sum,
    /// Running count.
    Count,
    /// Running minimum.
    Min,
    /// Running maximum.
    Max,
}

/// A keyed aggregation of one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aggregation {
    /// What to compute.
    pub kind: AggregateKind,
    /// Which field (0-based).
    pub field: u32,
}

impl Aggregation {
    /// Parses `sum:1`, `count:1`, `min:2`, `max:0`.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        let (kind, field) = s.split_once(':').ok_or_else(|| {
            ConfigError(format!(
                "aggregation `{s}` is not KIND:FIELD; use e.g. `sum:1` or `none`"
            ))
        })?;
        let kind = match kind {
            "sum" => AggregateKind::Sum,
            "count" => AggregateKind::Count,
            "min" => AggregateKind::Min,
            "max" => AggregateKind::Max,
            other => {
                return Err(ConfigError(format!(
                    "unknown aggregation `{other}`; use sum, count, min or max"
                )));
            }
        };
        let field = field.parse().map_err(|_| {
            ConfigError(format!("aggregation field `{field}` is not a field number"))
        })?;
        Ok(Aggregation { kind, field })
    }
}

impl std::fmt::Display for Aggregation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            AggregateKind::Sum => "sum",
            AggregateKind::Count => "count",
            AggregateKind::Min => "min",
            AggregateKind::Max => "max",
        };
        write!(f, "{kind}:{}", self.field)
    }
}

/// The job description a guest exports (every field optional).
#[derive(Debug, Clone, Default)]
pub struct Description {
    /// Job name.
    pub name: Option<String>,
    /// Default source URI.
    pub source: Option<String>,
    /// Default sink URI.
    pub sink: Option<String>,
    /// Keyed aggregation.
    pub aggregation: Option<Aggregation>,
    /// Checkpoint interval; 0 is off.
    pub checkpoint_interval_ms: Option<u64>,
    /// Restart strategy.
    pub restart: Option<RestartStrategy>,
    /// Default parallelism.
    pub parallelism: Option<u32>,
    /// Per-instance limits.
    pub limits: Option<DescribedLimits>,
    /// A 0.2.0 guest's pipeline; `None` for a 0.1.0 guest (flat-map,
    /// key-selector and a host aggregation).
    pub pipeline: Option<crate::config::pipeline::Pipeline>,
}

/// Limits a guest describes for itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct DescribedLimits {
    /// Memory bytes.
    pub memory_bytes: Option<u64>,
    /// Call deadline.
    pub call_timeout_ms: Option<u64>,
    /// Rows per record.
    pub max_rows_per_record: Option<u32>,
    /// Output bytes per record.
    pub max_bytes_per_record: Option<u64>,
}
