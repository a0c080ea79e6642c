//! What a job is: its source, sink, aggregation, parallelism and settings,
//! and how the guest's own description, a TOML file and command-line flags
//! combine into one [`JobSpec`] (flags over the file over the description).
//!
//! This module parses and checks settings; it runs nothing.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::guest::{DirGrant, Grants, Limits, MAX_MEMORY_LIMIT, Sandbox};

pub use crate::restart::RestartStrategy;

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
    pub fn parse(s: &str) -> Result<Self, String> {
        let (kind, field) = s.split_once(':').ok_or_else(|| {
            format!("aggregation `{s}` is not KIND:FIELD; use e.g. `sum:1` or `none`")
        })?;
        let kind = match kind {
            "sum" => AggregateKind::Sum,
            "count" => AggregateKind::Count,
            "min" => AggregateKind::Min,
            "max" => AggregateKind::Max,
            other => {
                return Err(format!(
                    "unknown aggregation `{other}`; use sum, count, min or max"
                ));
            }
        };
        let field = field
            .parse()
            .map_err(|_| format!("aggregation field `{field}` is not a field number"))?;
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

/// Where records come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// `socket://HOST:PORT`: connect as a client, newline-delimited text.
    Socket {
        /// Host name or address.
        host: String,
        /// TCP port.
        port: u16,
    },
    /// `file://PATH`: a bounded file; the job finishes at its end.
    File(PathBuf),
    /// `-`: standard input; the job finishes at its end.
    Stdin,
}

impl SourceSpec {
    /// Parses a source URI.
    pub fn parse(uri: &str) -> Result<Self, String> {
        if uri == "-" {
            return Ok(SourceSpec::Stdin);
        }
        if let Some(path) = uri.strip_prefix("file://") {
            if path.is_empty() {
                return Err(format!("source `{uri}` has no path; use `file://PATH`"));
            }
            return Ok(SourceSpec::File(PathBuf::from(path)));
        }
        if let Some(addr) = uri.strip_prefix("socket://") {
            let (host, port) = addr
                .rsplit_once(':')
                .ok_or_else(|| format!("source `{uri}` has no port; use `socket://HOST:PORT`"))?;
            let port = port
                .parse()
                .map_err(|_| format!("source `{uri}` has a bad port `{port}`; use 1 to 65535"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() {
                return Err(format!(
                    "source `{uri}` has no host; use `socket://HOST:PORT`"
                ));
            }
            return Ok(SourceSpec::Socket {
                host: host.to_string(),
                port,
            });
        }
        Err(format!(
            "unknown source `{uri}`; use `socket://HOST:PORT`, `file://PATH` or `-` for stdin"
        ))
    }
}

impl std::fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceSpec::Socket { host, port } => write!(f, "socket://{host}:{port}"),
            SourceSpec::File(p) => write!(f, "file://{}", p.display()),
            SourceSpec::Stdin => f.write_str("-"),
        }
    }
}

/// Where output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkSpec {
    /// One line per update on stdout.
    Print,
    /// One line per update in a file (created or truncated).
    File(PathBuf),
    /// Nowhere (for benchmarks).
    Discard,
}

impl SinkSpec {
    /// Parses a sink URI.
    pub fn parse(uri: &str) -> Result<Self, String> {
        match uri {
            "print" => Ok(SinkSpec::Print),
            "discard" => Ok(SinkSpec::Discard),
            _ => match uri.strip_prefix("file://") {
                Some("") => Err(format!("sink `{uri}` has no path; use `file://PATH`")),
                Some(path) => Ok(SinkSpec::File(PathBuf::from(path))),
                None => Err(format!(
                    "unknown sink `{uri}`; use `print`, `file://PATH` or `discard`"
                )),
            },
        }
    }
}

impl std::fmt::Display for SinkSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SinkSpec::Print => f.write_str("print"),
            SinkSpec::File(p) => write!(f, "file://{}", p.display()),
            SinkSpec::Discard => f.write_str("discard"),
        }
    }
}

/// A setting with two values: `true` for the first (the default), `false`
/// for the second.
fn either(flag: &str, value: Option<&str>, (yes, no): (&str, &str)) -> Result<bool, String> {
    match value {
        None => Ok(true),
        Some(v) if v == yes => Ok(true),
        Some(v) if v == no => Ok(false),
        Some(other) => Err(format!(
            "{flag} `{other}` is not valid; use `{yes}` or `{no}`"
        )),
    }
}

/// Parses `1s`, `500ms`, `2m`, `1h`, `1.5s`; a bare number is milliseconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration; use e.g. `500ms`, `1s`, `2m` or `1h`"))?;
    let scale = match unit {
        "" | "ms" => 0.001,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "`{s}` has an unknown unit `{unit}`; use ms, s, m or h"
            ));
        }
    };
    Duration::try_from_secs_f64(value * scale)
        .map_err(|_| format!("`{s}` is not a duration we can represent"))
}

/// Settings as a TOML file gives them (`--config FILE.toml`); every key is
/// optional and named like its flag.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    /// Job name.
    pub name: Option<String>,
    /// Source URI.
    pub source: Option<String>,
    /// Sink URI.
    pub sink: Option<String>,
    /// Parallel subtasks.
    pub parallelism: Option<u32>,
    /// Key groups.
    pub max_parallelism: Option<u32>,
    /// `sum:1`, ... or `none`.
    pub aggregate: Option<String>,
    /// Longest input line in bytes.
    pub max_line_bytes: Option<usize>,
    /// How long to keep trying to reach a socket source at start.
    pub connect_timeout: Option<String>,
    /// Checkpoint interval (`1s`, `off`).
    pub checkpoint_interval: Option<String>,
    /// Restart strategy (`fixed-delay:3:10s`, ...).
    pub restart: Option<String>,
    /// Least time between two checkpoints.
    pub min_pause: Option<String>,
    /// Time after which a checkpoint is abandoned.
    pub checkpoint_timeout: Option<String>,
    /// Where checkpoints go.
    pub checkpoint_dir: Option<PathBuf>,
    /// Completed checkpoints kept.
    pub retain_checkpoints: Option<usize>,
    /// `retain` or `delete`.
    pub on_cancel: Option<String>,
    /// `local` or `checkpoint`: how a restart after a guest fault recovers.
    pub recovery: Option<String>,
    /// Where failed records go.
    pub dead_letter: Option<PathBuf>,
    /// Memory per guest instance (`64MiB`, bytes).
    pub max_memory: Option<String>,
    /// Deadline of one guest call.
    pub call_timeout: Option<String>,
    /// Rows one record may emit.
    pub max_rows_per_record: Option<u32>,
    /// Output bytes one record may emit.
    pub max_bytes_per_record: Option<String>,
    /// Guest stdout and stderr kept per call.
    pub max_guest_log: Option<String>,
    /// Directories granted: `HOST[:GUEST][:ro]`.
    #[serde(default)]
    pub allow_dir: Vec<String>,
    /// Environment variables granted.
    #[serde(default)]
    pub allow_env: Vec<String>,
    /// Grant clocks.
    #[serde(default)]
    pub allow_clocks: bool,
    /// Grant randomness.
    #[serde(default)]
    pub allow_random: bool,
    /// Fuel per guest call.
    pub fuel: Option<u64>,
    /// Wasm stack per call (`512KiB`).
    pub max_stack: Option<String>,
    /// Job parameters.
    #[serde(default)]
    pub params: std::collections::BTreeMap<String, String>,
}

impl FileConfig {
    /// Reads and parses a TOML file.
    pub fn read(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config `{}`: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| {
            format!(
                "config `{}` is not valid: {}",
                path.display(),
                e.message().trim()
            )
        })
    }
}

/// Settings from command-line flags: every setting a TOML file can give
/// (`None` where the flag was not given), and the ones only flags give.
#[derive(Debug, Default, Clone)]
pub struct FlagConfig {
    /// `--module` (for messages).
    pub module_path: PathBuf,
    /// The flags named like the TOML file's keys.
    pub settings: FileConfig,
    /// `--restore`.
    pub restore: Option<String>,
    /// `--allow-module-change`.
    pub allow_module_change: bool,
    /// `--param KEY=VALUE`, in order.
    pub params: Vec<(String, String)>,
}

/// A fully resolved job.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Job name.
    pub name: String,
    /// The module's path (for messages).
    pub module_path: PathBuf,
    /// Where records come from.
    pub source: SourceSpec,
    /// Where output goes.
    pub sink: SinkSpec,
    /// The keyed aggregation; `None` passes rows through.
    pub aggregation: Option<Aggregation>,
    /// Parallel subtasks, each with its own guest instance.
    pub parallelism: u32,
    /// Number of key groups (the most subtasks state can be split over).
    pub max_parallelism: u32,
    /// Parameters handed to the guest.
    pub params: Vec<(String, String)>,
    /// Longest accepted input line, in bytes.
    pub max_line_bytes: usize,
    /// How long to keep trying to connect a socket source at start.
    pub connect_timeout: Duration,
    /// Checkpoint interval; `None` is off.
    pub checkpoint_interval: Option<Duration>,
    /// What to do when a task fails.
    pub restart: RestartStrategy,
    /// Least time from the end of one checkpoint to the start of the next.
    pub min_pause: Duration,
    /// Time after which a checkpoint in progress is abandoned.
    pub checkpoint_timeout: Duration,
    /// Where the job's checkpoints, journal and dead letters go.
    pub checkpoint_dir: PathBuf,
    /// Completed checkpoints kept.
    pub retain_checkpoints: usize,
    /// Keep checkpoints when the job is cancelled.
    pub retain_on_cancel: bool,
    /// After a guest fault, keep the host's keyed state and go on after the
    /// failing record, instead of restoring the last checkpoint and replaying.
    pub local_recovery: bool,
    /// Where failed records go; `None` is the job directory's `dead-letter.jsonl`.
    pub dead_letter: Option<PathBuf>,
    /// `latest` or a checkpoint path to resume from.
    pub restore: Option<String>,
    /// Restore a checkpoint taken with another module.
    pub allow_module_change: bool,
    /// Limits and grants of each guest instance.
    pub sandbox: Sandbox,
}

/// Default checkpoint timeout (Flink's: 10 minutes).
pub const DEFAULT_CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(600);
/// Default number of completed checkpoints kept (one more than Flink's, so
/// a damaged newest checkpoint has one to fall back to).
pub const DEFAULT_RETAIN_CHECKPOINTS: usize = 2;

/// Defaults where neither the guest, the file nor the flags say.
pub const DEFAULT_MAX_PARALLELISM: u32 = 128;
/// Default longest line: 1 MiB.
pub const DEFAULT_MAX_LINE_BYTES: usize = 1 << 20;
/// Default time to reach a socket source at start.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl JobSpec {
    /// Combines the guest's description, the file and the flags.
    pub fn resolve(
        description: &Description,
        file: &FileConfig,
        flags: &FlagConfig,
    ) -> Result<Self, String> {
        let name = flags
            .settings
            .name
            .clone()
            .or_else(|| file.name.clone())
            .or_else(|| description.name.clone())
            .unwrap_or_else(|| "job".to_string());
        check_name(&name)?;
        let source = flags
            .settings
            .source
            .as_deref()
            .or(file.source.as_deref())
            .or(description.source.as_deref())
            .ok_or("the job has no source: the module does not name one; pass --source URI")?;
        let source = SourceSpec::parse(source)?;
        let sink = flags
            .settings
            .sink
            .as_deref()
            .or(file.sink.as_deref())
            .or(description.sink.as_deref())
            .unwrap_or("print");
        let sink = SinkSpec::parse(sink)?;
        let aggregation = match flags
            .settings
            .aggregate
            .as_deref()
            .or(file.aggregate.as_deref())
        {
            Some("none") => None,
            Some(s) => Some(Aggregation::parse(s)?),
            None => description.aggregation,
        };
        let parallelism = flags
            .settings
            .parallelism
            .or(file.parallelism)
            .or(description.parallelism)
            .unwrap_or(1);
        let max_parallelism = flags
            .settings
            .max_parallelism
            .or(file.max_parallelism)
            .unwrap_or(DEFAULT_MAX_PARALLELISM);
        if !(1..=32768).contains(&max_parallelism) {
            return Err(format!(
                "max parallelism {max_parallelism} is out of range; use 1 to 32768"
            ));
        }
        if parallelism == 0 || parallelism > max_parallelism {
            return Err(format!(
                "parallelism {parallelism} is out of range; use 1 to the max parallelism ({max_parallelism})"
            ));
        }
        let mut params: Vec<(String, String)> = file
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        params.extend(flags.params.iter().cloned());
        let max_line_bytes = flags
            .settings
            .max_line_bytes
            .or(file.max_line_bytes)
            .unwrap_or(DEFAULT_MAX_LINE_BYTES);
        if max_line_bytes == 0 {
            return Err("max line bytes must be at least 1".to_string());
        }
        let connect_timeout = match flags
            .settings
            .connect_timeout
            .as_deref()
            .or(file.connect_timeout.as_deref())
        {
            Some(s) => parse_duration(s).map_err(|e| format!("connect timeout: {e}"))?,
            None => DEFAULT_CONNECT_TIMEOUT,
        };
        let checkpoint_interval = match flags
            .settings
            .checkpoint_interval
            .as_deref()
            .or(file.checkpoint_interval.as_deref())
        {
            Some("off") => None,
            Some(s) => {
                let d = parse_duration(s).map_err(|e| format!("checkpoint interval: {e}"))?;
                (!d.is_zero()).then_some(d)
            }
            None => description
                .checkpoint_interval_ms
                .filter(|ms| *ms > 0)
                .map(Duration::from_millis),
        };
        let restart = match flags
            .settings
            .restart
            .as_deref()
            .or(file.restart.as_deref())
        {
            Some(s) => RestartStrategy::parse(s)?,
            None => {
                let described = description.restart.unwrap_or(RestartStrategy::None);
                described.validate().map_err(|e| {
                    format!(
                        "the module's job description has a restart strategy that cannot work: {e}"
                    )
                })?;
                described
            }
        };
        let duration = |flag: &Option<String>,
                        file: &Option<String>,
                        what: &str,
                        default: Duration| {
            match flag.as_deref().or(file.as_deref()) {
                Some(s) => parse_duration(s).map_err(|e| format!("{what}: {e}")),
                None => Ok(default),
            }
        };
        let min_pause = duration(
            &flags.settings.min_pause,
            &file.min_pause,
            "min pause",
            Duration::ZERO,
        )?;
        let checkpoint_timeout = duration(
            &flags.settings.checkpoint_timeout,
            &file.checkpoint_timeout,
            "checkpoint timeout",
            DEFAULT_CHECKPOINT_TIMEOUT,
        )?;
        let checkpoint_dir = flags
            .settings
            .checkpoint_dir
            .clone()
            .or_else(|| file.checkpoint_dir.clone())
            .unwrap_or_else(|| PathBuf::from("sluice-checkpoints").join(&name));
        let retain_checkpoints = flags
            .settings
            .retain_checkpoints
            .or(file.retain_checkpoints)
            .unwrap_or(DEFAULT_RETAIN_CHECKPOINTS);
        if retain_checkpoints == 0 {
            return Err("--retain-checkpoints must be at least 1".into());
        }
        let retain_on_cancel = either(
            "--on-cancel",
            flags
                .settings
                .on_cancel
                .as_deref()
                .or(file.on_cancel.as_deref()),
            ("retain", "delete"),
        )?;
        let local_recovery = either(
            "--recovery",
            flags
                .settings
                .recovery
                .as_deref()
                .or(file.recovery.as_deref()),
            ("local", "checkpoint"),
        )?;
        let sandbox = Sandbox {
            limits: resolve_limits(description.limits.unwrap_or_default(), file, flags)?,
            grants: resolve_grants(file, flags)?,
        };
        Ok(JobSpec {
            sandbox,
            min_pause,
            checkpoint_timeout,
            checkpoint_dir,
            retain_checkpoints,
            retain_on_cancel,
            local_recovery,
            dead_letter: flags
                .settings
                .dead_letter
                .clone()
                .or_else(|| file.dead_letter.clone()),
            restore: flags.restore.clone(),
            allow_module_change: flags.allow_module_change,
            module_path: flags.module_path.clone(),
            name,
            source,
            sink,
            aggregation,
            parallelism,
            max_parallelism,
            params,
            max_line_bytes,
            connect_timeout,
            checkpoint_interval,
            restart,
        })
    }
}

/// The longest job name: it is a directory name and part of every log line.
pub const MAX_NAME_BYTES: usize = 100;

/// A job name is a directory (`sluice-checkpoints/NAME`) and part of every
/// log line, and may come from the guest's description: letters, digits,
/// `-`, `_` and `.`, not starting with a dot.
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        return Ok(());
    }
    let shown: String = name.chars().take(MAX_NAME_BYTES).collect();
    Err(format!(
        "job name {shown:?} is not valid: use 1 to {MAX_NAME_BYTES} letters, digits, `-`, `_` and `.`, not starting with `.`; \
         pass --name to choose another"
    ))
}

/// Parses `64MiB`, `512KiB`, `1GiB`, `1000` (bytes).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size; use e.g. `64MiB`, `512KiB` or bytes"))?;
    let scale = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "KB" => 1 << 10,
        "MiB" | "M" | "MB" => 1 << 20,
        "GiB" | "G" | "GB" => 1 << 30,
        other => {
            return Err(format!(
                "`{s}` has an unknown unit `{other}`; use KiB, MiB or GiB"
            ));
        }
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("`{s}` is too large"))
}

fn resolve_limits(
    d: DescribedLimits,
    file: &FileConfig,
    flags: &FlagConfig,
) -> Result<Limits, String> {
    let defaults = Limits::default();
    let bytes =
        |flag: &Option<String>, file: &Option<String>, what: &str| -> Result<Option<u64>, String> {
            flag.as_deref()
                .or(file.as_deref())
                .map(|s| parse_bytes(s).map_err(|e| format!("{what}: {e}")))
                .transpose()
        };
    let memory_bytes = bytes(&flags.settings.max_memory, &file.max_memory, "--max-memory")?
        .or(d.memory_bytes)
        .unwrap_or(defaults.memory_bytes);
    if memory_bytes > MAX_MEMORY_LIMIT {
        return Err(format!(
            "--max-memory {memory_bytes} is over the most this host allows ({MAX_MEMORY_LIMIT})"
        ));
    }
    let call_timeout = match flags
        .settings
        .call_timeout
        .as_deref()
        .or(file.call_timeout.as_deref())
    {
        Some(s) => parse_duration(s).map_err(|e| format!("--call-timeout: {e}"))?,
        None => d
            .call_timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(defaults.call_timeout),
    };
    if call_timeout.is_zero() {
        return Err("--call-timeout must be more than 0".into());
    }
    Ok(Limits {
        memory_bytes,
        call_timeout,
        fuel: flags.settings.fuel.or(file.fuel),
        rows_per_record: flags
            .settings
            .max_rows_per_record
            .or(file.max_rows_per_record)
            .or(d.max_rows_per_record)
            .unwrap_or(defaults.rows_per_record),
        bytes_per_record: bytes(
            &flags.settings.max_bytes_per_record,
            &file.max_bytes_per_record,
            "--max-bytes-per-record",
        )?
        .or(d.max_bytes_per_record)
        .unwrap_or(defaults.bytes_per_record),
        log_bytes: bytes(
            &flags.settings.max_guest_log,
            &file.max_guest_log,
            "--max-guest-log",
        )?
        .map_or(defaults.log_bytes, |b| b as usize),
    })
}

fn resolve_grants(file: &FileConfig, flags: &FlagConfig) -> Result<Grants, String> {
    let dirs = file
        .allow_dir
        .iter()
        .chain(&flags.settings.allow_dir)
        .map(|d| DirGrant::parse(d))
        .collect::<Result<Vec<_>, _>>()?;
    for d in &dirs {
        if !d.host.is_dir() {
            return Err(format!(
                "--allow-dir `{}`: no such directory; create it or fix the path",
                d.host.display()
            ));
        }
    }
    Ok(Grants {
        dirs,
        env: file
            .allow_env
            .iter()
            .chain(&flags.settings.allow_env)
            .cloned()
            .collect(),
        clocks: flags.settings.allow_clocks || file.allow_clocks,
        random: flags.settings.allow_random || file.allow_random,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("250"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("1 fortnight").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn sources_and_sinks() {
        assert_eq!(
            SourceSpec::parse("socket://localhost:9100"),
            Ok(SourceSpec::Socket {
                host: "localhost".into(),
                port: 9100
            })
        );
        assert_eq!(SourceSpec::parse("-"), Ok(SourceSpec::Stdin));
        assert!(SourceSpec::parse("kafka://x").is_err());
        assert!(SourceSpec::parse("socket://localhost").is_err());
        assert!(SourceSpec::parse("socket://localhost:99999").is_err());
        assert_eq!(SinkSpec::parse("discard"), Ok(SinkSpec::Discard));
        assert!(SinkSpec::parse("s3://bucket").is_err());
    }

    #[test]
    fn flags_override_file_over_description() {
        let description = Description {
            name: Some("wordcount".into()),
            source: Some("socket://localhost:9100".into()),
            parallelism: Some(4),
            ..Default::default()
        };
        let file = FileConfig {
            source: Some("file://in.txt".into()),
            parallelism: Some(3),
            ..Default::default()
        };
        let flags = FlagConfig {
            settings: FileConfig {
                parallelism: Some(2),
                ..Default::default()
            },
            ..Default::default()
        };
        let spec = JobSpec::resolve(&description, &file, &flags).expect("valid");
        assert_eq!(spec.name, "wordcount");
        assert_eq!(spec.source, SourceSpec::File("in.txt".into()));
        assert_eq!(spec.parallelism, 2);
        assert_eq!(spec.sink, SinkSpec::Print);
    }
}
