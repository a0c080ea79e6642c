//! What a job is: its source, sink, aggregation, parallelism and settings,
//! and how the guest's own description, a TOML file and command-line flags
//! combine into one [`JobSpec`] (flags over the file over the description).
//!
//! This module parses and checks settings; it runs nothing.

pub mod description;
pub mod sandbox;

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::description::{Aggregation, DescribedLimits, Description};
use crate::config::sandbox::{DirGrant, Grants, Limits, MAX_MEMORY_LIMIT, Sandbox};
use crate::connector::{self, ConnectorEnv};
use crate::restart::RestartStrategy;
pub use crate::units::ConfigError;
use crate::units::{parse_bytes, parse_duration};

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
    pub fn read(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config `{}`: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| {
            ConfigError(format!(
                "config `{}` is not valid: {}",
                path.display(),
                e.message().trim()
            ))
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
    /// What the job's connectors may use.
    pub env: ConnectorEnv,
}

/// A fully resolved job.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Job name.
    pub name: String,
    /// The module's path (for messages).
    pub module_path: PathBuf,
    /// Where records come from (a URI the connector registry knows).
    pub source: String,
    /// Where output goes (a URI the connector registry knows).
    pub sink: String,
    /// What the job's connectors may use (a server's tenant's files).
    pub env: ConnectorEnv,
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
    ) -> Result<Self, ConfigError> {
        Self::resolve_settings(description, file, flags).map_err(ConfigError)
    }

    fn resolve_settings(
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
        let env = flags.env.clone();
        let source = connector::source(source, &env)
            .map_err(|e| e.to_string())?
            .uri();
        let sink = flags
            .settings
            .sink
            .as_deref()
            .or(file.sink.as_deref())
            .or(description.sink.as_deref())
            .unwrap_or("print");
        connector::check_sink(sink, &env).map_err(|e| e.to_string())?;
        let sink = sink.to_string();
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
            env,
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
        assert_eq!(spec.source, "file://in.txt");
        assert_eq!(spec.parallelism, 2);
        assert_eq!(spec.sink, "print");
    }
}
