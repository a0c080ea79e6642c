//! Units in settings: durations (`500ms`, `1s`, `2m`, `1h`) and sizes
//! (`64MiB`, `512KiB`, bytes). Shared by flags, the TOML file and the
//! restart strategies; and the error of a setting that cannot work.

use std::time::Duration;

/// Settings that cannot work, worded for the user: always the user's to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl From<String> for ConfigError {
    fn from(message: String) -> Self {
        ConfigError(message)
    }
}

impl From<ConfigError> for String {
    fn from(e: ConfigError) -> String {
        e.0
    }
}

impl From<&str> for ConfigError {
    fn from(message: &str) -> Self {
        ConfigError(message.to_string())
    }
}

/// Parses `1s`, `500ms`, `2m`, `1h`, `1.5s`. A number needs its unit
/// (`5` could be milliseconds or seconds), except `0`.
pub fn parse_duration(s: &str) -> Result<Duration, ConfigError> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().map_err(|_| {
        ConfigError(format!(
            "`{s}` is not a duration; use e.g. `500ms`, `1s`, `2m` or `1h`"
        ))
    })?;
    let scale = match unit {
        "" if value == 0.0 => 0.0,
        "" => {
            return Err(ConfigError(format!(
                "`{s}` has no unit; write `{s}ms` or `{s}s` (or `m`, `h`)"
            )));
        }
        "ms" => 0.001,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(ConfigError(format!(
                "`{s}` has an unknown unit `{unit}`; use ms, s, m or h"
            )));
        }
    };
    Duration::try_from_secs_f64(value * scale)
        .map_err(|_| ConfigError(format!("`{s}` is not a duration we can represent")))
}

/// Parses `64MiB`, `512KiB`, `1GiB`, `1000` (bytes).
pub fn parse_bytes(s: &str) -> Result<u64, ConfigError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        ConfigError(format!(
            "`{s}` is not a size; use e.g. `64MiB`, `512KiB` or bytes"
        ))
    })?;
    let scale = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "KB" => 1 << 10,
        "MiB" | "M" | "MB" => 1 << 20,
        "GiB" | "G" | "GB" => 1 << 30,
        other => {
            return Err(ConfigError(format!(
                "`{s}` has an unknown unit `{other}`; use KiB, MiB or GiB"
            )));
        }
    };
    n.checked_mul(scale)
        .ok_or_else(|| ConfigError(format!("`{s}` is too large")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(
            parse_duration("250"),
            Err(ConfigError(
                "`250` has no unit; write `250ms` or `250s` (or `m`, `h`)".into()
            ))
        );
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("1 fortnight").is_err());
        assert!(parse_duration("s").is_err());
    }
}
