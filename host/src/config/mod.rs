//! What a job is: its source, sink, aggregation, parallelism and settings,
//! and how they combine into one [`JobSpec`]: command-line flags over a
//! TOML file over what the job remembers of itself (`job.json`, when it is
//! restored) over the guest's own description. Every layer but the last is
//! a [`Settings`].
//!
//! This module parses and checks settings; it runs nothing.

pub mod description;
pub mod pipeline;
pub mod sandbox;
pub mod settings;

use std::path::PathBuf;
use std::time::Duration;

use crate::checkpoint::Location;
use crate::config::description::{Aggregation, DescribedLimits, Description};
use crate::config::pipeline::Pipeline;
use crate::config::sandbox::{DirGrant, Grants, Limits, MAX_MEMORY_LIMIT, Sandbox};
use crate::connector::{self, ConnectorEnv};
use crate::restart::RestartStrategy;
pub use crate::units::ConfigError;
use crate::units::{parse_bytes, parse_duration};
pub use settings::Settings;

/// The settings a TOML file gives: the one settings struct.
pub type FileConfig = Settings;

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

/// Settings from command-line flags: every setting a TOML file can give
/// (`None` where the flag was not given), and the ones only flags give.
#[derive(Debug, Default, Clone)]
pub struct FlagConfig {
    /// `--module` (for messages).
    pub module_path: PathBuf,
    /// The flags named like the TOML file's keys.
    pub settings: Settings,
    /// What a restored job remembers of how it started (its `job.json`):
    /// under the file and the flags, over the guest's description.
    pub stored: Option<Settings>,
    /// `--restore`.
    pub restore: Option<String>,
    /// `--allow-module-change`.
    pub allow_module_change: bool,
    /// `--allow-source-change`.
    pub allow_source_change: bool,
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
    /// Where the job's checkpoints go: a directory or `s3://BUCKET/PREFIX`.
    pub checkpoint_dir: Location,
    /// Where the job's local files (journal, dead letters, `skipped`,
    /// `printed`) go, one directory per job inside: `--state-dir`, else the
    /// checkpoint directory when it is local, else
    /// `sluice-checkpoints/JOB_NAME`.
    pub state_dir: PathBuf,
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
    /// Restore a checkpoint onto another source, read from its beginning.
    pub allow_source_change: bool,
    /// Limits and grants of each guest instance.
    pub sandbox: Sandbox,
    /// The settings the job was given (every layer but the description),
    /// for its `job.json`, so that `--restore` alone resumes it as it was.
    pub settings: Settings,
    /// A 0.2.0 guest's pipeline; `None` for a 0.1.0 guest.
    pub pipeline: Option<Pipeline>,
    /// The sinks of the pipeline's side outputs, by tag - 1: (name, URI).
    pub side_sinks: Vec<(String, String)>,
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

/// The checkpoint settings of a job.
struct Checkpointing {
    interval: Option<Duration>,
    min_pause: Duration,
    timeout: Duration,
    dir: Location,
    state_dir: PathBuf,
    retain: usize,
    retain_on_cancel: bool,
    local_recovery: bool,
}

impl JobSpec {
    /// Combines the guest's description, the file and the flags (and what
    /// a restored job remembers, `flags.stored`).
    pub fn resolve(
        description: &Description,
        file: &Settings,
        flags: &FlagConfig,
    ) -> Result<Self, ConfigError> {
        let stored = flags.stored.clone().unwrap_or_default();
        let given = flags.settings.over(&file.over(&stored));
        Self::resolve_settings(description, &given, flags).map_err(ConfigError)
    }

    fn resolve_settings(d: &Description, s: &Settings, flags: &FlagConfig) -> Result<Self, String> {
        let name = s
            .name
            .clone()
            .or_else(|| d.name.clone())
            .unwrap_or_else(|| "job".to_string());
        check_name(&name)?;
        let env = flags.env.clone();
        let (source, sink) = resolve_connectors(d, s, &env)?;
        let (aggregation, parallelism, max_parallelism) = resolve_keys(d, s)?;
        let side_sinks = resolve_pipeline(d, s, &env)?;
        let mut params: Vec<(String, String)> = s
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        params.extend(flags.params.iter().cloned());
        let max_line_bytes = s.max_line_bytes.unwrap_or(DEFAULT_MAX_LINE_BYTES);
        if max_line_bytes == 0 {
            return Err("--max-line-bytes must be at least 1".to_string());
        }
        let connect_timeout = match s.connect_timeout.as_deref() {
            Some(s) => parse_duration(s).map_err(|e| format!("--connect-timeout: {e}"))?,
            None => DEFAULT_CONNECT_TIMEOUT,
        };
        let checkpointing = resolve_checkpointing(d, s, &name)?;
        let sandbox = Sandbox {
            limits: resolve_limits(d.limits.unwrap_or_default(), s)?,
            grants: resolve_grants(s)?,
            meter: None,
        };
        Ok(JobSpec {
            sandbox,
            min_pause: checkpointing.min_pause,
            checkpoint_timeout: checkpointing.timeout,
            checkpoint_dir: checkpointing.dir,
            state_dir: checkpointing.state_dir,
            retain_checkpoints: checkpointing.retain,
            retain_on_cancel: checkpointing.retain_on_cancel,
            local_recovery: checkpointing.local_recovery,
            checkpoint_interval: checkpointing.interval,
            dead_letter: s.dead_letter.clone(),
            restore: flags.restore.clone(),
            allow_module_change: flags.allow_module_change,
            allow_source_change: flags.allow_source_change,
            module_path: flags.module_path.clone(),
            restart: resolve_restart(d, s)?,
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
            settings: s.clone(),
            pipeline: d.pipeline.clone(),
            side_sinks,
        })
    }
}

impl JobSpec {
    /// What the job's source is given.
    pub fn source_options(&self) -> connector::SourceOptions {
        connector::SourceOptions {
            max_line_bytes: self.max_line_bytes,
            connect_timeout: self.connect_timeout,
            record_meta: self.pipeline.is_some(),
        }
    }
}

/// The source and the sink, checked by the connector registry.
fn resolve_connectors(
    d: &Description,
    s: &Settings,
    env: &ConnectorEnv,
) -> Result<(String, String), String> {
    let source = s
        .source
        .as_deref()
        .or(d.source.as_deref())
        .ok_or("the job has no source: the module does not name one; pass --source URI")?;
    let source = connector::source(source, env)
        .map_err(|e| e.to_string())?
        .uri();
    let sink = s.sink.as_deref().or(d.sink.as_deref()).unwrap_or("print");
    let sink = connector::check_sink(sink, env).map_err(|e| e.to_string())?;
    Ok((source, sink))
}

/// Checks a 0.2.0 pipeline and resolves its side outputs' sinks: the
/// settings' (`--side-output NAME=URI`), else the description's, else
/// `print`.
fn resolve_pipeline(
    d: &Description,
    s: &Settings,
    env: &ConnectorEnv,
) -> Result<Vec<(String, String)>, String> {
    let Some(p) = &d.pipeline else {
        if let Some(name) = s.side_outputs.keys().next() {
            return Err(format!(
                "--side-output `{name}`: a 0.1.0 guest has no side outputs"
            ));
        }
        return Ok(Vec::new());
    };
    p.check()?;
    if s.aggregate.is_some() {
        return Err("--aggregate: a 0.2.0 pipeline keeps its own state; drop --aggregate".into());
    }
    if let Some(name) = s.side_outputs.keys().find(|n| p.side_tag(n).is_none()) {
        let known: Vec<String> = p
            .side_outputs
            .iter()
            .map(|o| format!("`{}`", o.name))
            .collect();
        return Err(format!(
            "--side-output `{name}`: the module has no side output of that name (it has {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        ));
    }
    p.side_outputs
        .iter()
        .map(|o| {
            let uri = s
                .side_outputs
                .get(&o.name)
                .or(o.sink.as_ref())
                .map_or("print", |u| u);
            let uri = connector::check_sink(uri, env)
                .map_err(|e| format!("side output `{}`: {e}", o.name))?;
            Ok((o.name.clone(), uri))
        })
        .collect()
}

/// The aggregation, the parallelism and the key groups.
fn resolve_keys(d: &Description, s: &Settings) -> Result<(Option<Aggregation>, u32, u32), String> {
    let aggregation = match s.aggregate.as_deref() {
        Some("none") => None,
        Some(a) => Some(Aggregation::parse(a)?),
        None => d.aggregation,
    };
    let parallelism = s.parallelism.or(d.parallelism).unwrap_or(1);
    let max_parallelism = s.max_parallelism.unwrap_or(DEFAULT_MAX_PARALLELISM);
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
    Ok((aggregation, parallelism, max_parallelism))
}

/// The restart strategy: the settings', or the description's (checked:
/// a guest's description is untrusted input).
fn resolve_restart(d: &Description, s: &Settings) -> Result<RestartStrategy, String> {
    if let Some(r) = s.restart.as_deref() {
        return Ok(RestartStrategy::parse(r)?);
    }
    let described = d.restart.unwrap_or(RestartStrategy::None);
    described.validate().map_err(|e| {
        format!("the module's job description has a restart strategy that cannot work: {e}")
    })?;
    Ok(described)
}

/// Interval, pause, timeout, directory, retention and recovery.
fn resolve_checkpointing(
    d: &Description,
    s: &Settings,
    name: &str,
) -> Result<Checkpointing, String> {
    let duration = |v: &Option<String>, flag: &str, default: Duration| match v.as_deref() {
        Some(v) => parse_duration(v).map_err(|e| format!("{flag}: {e}")),
        None => Ok(default),
    };
    let interval = match s.checkpoint_interval.as_deref() {
        Some("off") => None,
        Some(v) => {
            let every = parse_duration(v).map_err(|e| format!("--checkpoint-interval: {e}"))?;
            (!every.is_zero()).then_some(every)
        }
        None => d
            .checkpoint_interval_ms
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis),
    };
    let timeout = duration(
        &s.checkpoint_timeout,
        "--checkpoint-timeout",
        DEFAULT_CHECKPOINT_TIMEOUT,
    )?;
    if timeout.is_zero() {
        return Err(
            "--checkpoint-timeout must be more than 0: every checkpoint would be abandoned".into(),
        );
    }
    let retain = s.retain_checkpoints.unwrap_or(DEFAULT_RETAIN_CHECKPOINTS);
    if retain == 0 {
        return Err("--retain-checkpoints must be at least 1".into());
    }
    let default_dir = PathBuf::from("sluice-checkpoints").join(name);
    let dir = match &s.checkpoint_dir {
        Some(d) => Location::of_path(d).map_err(|e| format!("--checkpoint-dir: {e}"))?,
        None => Location::Local(default_dir.clone()),
    };
    let state_dir = s
        .state_dir
        .clone()
        .or_else(|| dir.local().map(std::path::Path::to_path_buf))
        .unwrap_or(default_dir);
    Ok(Checkpointing {
        interval,
        min_pause: duration(&s.min_pause, "--min-pause", Duration::ZERO)?,
        timeout,
        dir,
        state_dir,
        retain,
        retain_on_cancel: either("--on-cancel", s.on_cancel.as_deref(), ("retain", "delete"))?,
        local_recovery: either("--recovery", s.recovery.as_deref(), ("local", "checkpoint"))?,
    })
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

fn resolve_limits(d: DescribedLimits, s: &Settings) -> Result<Limits, String> {
    let defaults = Limits::default();
    let bytes = |v: &Option<String>, flag: &str| -> Result<Option<u64>, String> {
        v.as_deref()
            .map(|v| parse_bytes(v).map_err(|e| format!("{flag}: {e}")))
            .transpose()
    };
    let memory_bytes = bytes(&s.max_memory, "--max-memory")?
        .or(d.memory_bytes)
        .unwrap_or(defaults.memory_bytes);
    if memory_bytes > MAX_MEMORY_LIMIT {
        return Err(format!(
            "--max-memory {memory_bytes} is over the most this host allows ({MAX_MEMORY_LIMIT})"
        ));
    }
    let call_timeout = match s.call_timeout.as_deref() {
        Some(v) => parse_duration(v).map_err(|e| format!("--call-timeout: {e}"))?,
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
        fuel: s.fuel,
        rows_per_record: s
            .max_rows_per_record
            .or(d.max_rows_per_record)
            .unwrap_or(defaults.rows_per_record),
        bytes_per_record: bytes(&s.max_bytes_per_record, "--max-bytes-per-record")?
            .or(d.max_bytes_per_record)
            .unwrap_or(defaults.bytes_per_record),
        log_bytes: bytes(&s.max_guest_log, "--max-guest-log")?
            .map_or(defaults.log_bytes, |b| b as usize),
    })
}

fn resolve_grants(s: &Settings) -> Result<Grants, String> {
    let dirs = s
        .allow_dir
        .iter()
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
        env: s.allow_env.clone(),
        clocks: s.allow_clocks,
        random: s.allow_random,
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
        // A file source is remembered by its absolute path.
        let cwd = std::env::current_dir().expect("a working directory");
        assert_eq!(
            spec.source,
            format!("file://{}", cwd.join("in.txt").display())
        );
        assert_eq!(spec.parallelism, 2);
        assert_eq!(spec.sink, "print");
    }
}
