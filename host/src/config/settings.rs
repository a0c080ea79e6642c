//! The one settings struct: every setting of a job, each optional, named
//! like its `host run` flag. The same struct is what flags give, what a TOML
//! file (`--config`) gives, what `job.json` remembers of a job, and what a
//! server's JSON job spec gives, field for field; layers of it combine, the
//! later over the earlier.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::units::ConfigError;

/// Settings of a job; `None` (or empty) where a layer does not say.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// Job name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Source URI.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Sink URI.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sink: Option<String>,
    /// Parallel subtasks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<u32>,
    /// Key groups.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_parallelism: Option<u32>,
    /// `sum:1`, ... or `none`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<String>,
    /// Longest input line in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_line_bytes: Option<usize>,
    /// How long to keep trying to reach a socket source at start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<String>,
    /// Checkpoint interval (`1s`, `off`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_interval: Option<String>,
    /// Restart strategy (`fixed-delay:3:10s`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart: Option<String>,
    /// Least time between two checkpoints.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_pause: Option<String>,
    /// Time after which a checkpoint is abandoned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_timeout: Option<String>,
    /// Where checkpoints go.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_dir: Option<PathBuf>,
    /// Completed checkpoints kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retain_checkpoints: Option<usize>,
    /// `retain` or `delete`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_cancel: Option<String>,
    /// `local` or `checkpoint`: how a restart after a guest fault recovers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery: Option<String>,
    /// Where failed records go.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<PathBuf>,
    /// Memory per guest instance (`64MiB`, bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_memory: Option<String>,
    /// Deadline of one guest call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_timeout: Option<String>,
    /// Rows one record may emit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_rows_per_record: Option<u32>,
    /// Output bytes one record may emit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bytes_per_record: Option<String>,
    /// Guest stdout and stderr kept per call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_guest_log: Option<String>,
    /// Directories granted: `HOST[:GUEST][:ro]` (an array in TOML).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_dir: Vec<String>,
    /// Environment variables granted (an array in TOML).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_env: Vec<String>,
    /// Grant clocks.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_clocks: bool,
    /// Grant randomness.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_random: bool,
    /// Fuel per guest call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// Wasm stack per call (`512KiB`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_stack: Option<String>,
    /// Job parameters (a table in TOML).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    /// The sinks of a 0.2.0 pipeline's side outputs, by name (a table in
    /// TOML; `--side-output NAME=URI`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub side_outputs: BTreeMap<String, String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

macro_rules! over {
    ($top:expr, $lower:expr, $($field:ident),*) => {
        Settings {
            $($field: $top.$field.clone().or_else(|| $lower.$field.clone()),)*
            allow_dir: [$lower.allow_dir.clone(), $top.allow_dir.clone()].concat(),
            allow_env: [$lower.allow_env.clone(), $top.allow_env.clone()].concat(),
            allow_clocks: $top.allow_clocks || $lower.allow_clocks,
            allow_random: $top.allow_random || $lower.allow_random,
            params: $lower.params.clone().into_iter().chain($top.params.clone()).collect(),
            side_outputs: $lower
                .side_outputs
                .clone()
                .into_iter()
                .chain($top.side_outputs.clone())
                .collect(),
        }
    };
}

impl Settings {
    /// These settings over `lower`: each field from here when set, else from
    /// `lower`; grants and parameters from both.
    pub fn over(&self, lower: &Settings) -> Settings {
        over!(
            self,
            lower,
            name,
            source,
            sink,
            parallelism,
            max_parallelism,
            aggregate,
            max_line_bytes,
            connect_timeout,
            checkpoint_interval,
            restart,
            min_pause,
            checkpoint_timeout,
            checkpoint_dir,
            retain_checkpoints,
            on_cancel,
            recovery,
            dead_letter,
            max_memory,
            call_timeout,
            max_rows_per_record,
            max_bytes_per_record,
            max_guest_log,
            fuel,
            max_stack
        )
    }

    /// Reads a TOML file (`--config`). Relative paths in it — `file://`
    /// URIs, the checkpoint directory, the dead-letter file, granted
    /// directories — are relative to the file's own directory.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError(format!(
                "cannot read config `{}`: {e}; check the path",
                path.display()
            ))
        })?;
        let settings: Settings = toml::from_str(&text).map_err(|e| toml_error(path, &text, &e))?;
        let base = path.parent().filter(|p| !p.as_os_str().is_empty());
        Ok(match base {
            Some(base) => settings.rebased(base),
            None => settings,
        })
    }

    /// The settings with every relative path made relative to `base`.
    pub fn rebased(mut self, base: &Path) -> Settings {
        let path = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };
        let uri = |u: String| match u.strip_prefix("file://") {
            Some(p) if Path::new(p).is_relative() && !p.is_empty() => {
                format!("file://{}", base.join(p).display())
            }
            _ => u,
        };
        self.source = self.source.map(uri);
        self.sink = self.sink.map(uri);
        self.side_outputs = self
            .side_outputs
            .into_iter()
            .map(|(name, sink)| (name, uri(sink)))
            .collect();
        self.checkpoint_dir = self.checkpoint_dir.map(path);
        self.dead_letter = self.dead_letter.map(path);
        self.allow_dir = self
            .allow_dir
            .into_iter()
            .map(|d| match Path::new(&d).is_relative() {
                true => base.join(d).display().to_string(),
                false => d,
            })
            .collect();
        self
    }
}

/// A TOML error in one line: the file, the line, the key and what is wrong.
fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let shown = path.display();
    let message = e.message().trim();
    let Some(span) = e.span() else {
        return ConfigError(format!("config `{shown}` is not valid: {message}"));
    };
    let line_no = text[..span.start.min(text.len())].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("");
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"'))
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    let value = line.split_once('=').map_or("", |(_, v)| v.trim());
    let unquoted = !value.is_empty()
        && !value.starts_with(['"', '\'', '[', '{'])
        && value.parse::<f64>().is_err()
        && !matches!(value, "true" | "false");
    match key {
        Some(key) if unquoted => ConfigError(format!(
            "config `{shown}` is not valid: {message} (line {line_no}, key `{key}`); text values need quotes, e.g. `{key} = \"...\"`"
        )),
        Some(key) => ConfigError(format!(
            "config `{shown}` is not valid: {message} (line {line_no}, key `{key}`)"
        )),
        None => ConfigError(format!(
            "config `{shown}` is not valid: {message} (line {line_no})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_combine_the_later_over_the_earlier() {
        let lower = Settings {
            source: Some("file://a".into()),
            parallelism: Some(2),
            allow_env: vec!["A".into()],
            ..Default::default()
        };
        let top = Settings {
            parallelism: Some(3),
            allow_env: vec!["B".into()],
            ..Default::default()
        };
        let both = top.over(&lower);
        assert_eq!(both.source.as_deref(), Some("file://a"));
        assert_eq!(both.parallelism, Some(3));
        assert_eq!(both.allow_env, ["A", "B"]);
    }

    #[test]
    fn relative_paths_are_the_files_own() {
        let s = Settings {
            source: Some("file://in.txt".into()),
            sink: Some("file:///abs/out.txt".into()),
            checkpoint_dir: Some("ck".into()),
            ..Default::default()
        }
        .rebased(Path::new("/jobs/a"));
        assert_eq!(s.source.as_deref(), Some("file:///jobs/a/in.txt"));
        assert_eq!(s.sink.as_deref(), Some("file:///abs/out.txt"));
        assert_eq!(s.checkpoint_dir, Some(PathBuf::from("/jobs/a/ck")));
    }
}
