//! What a job allows its guest instances: limits on memory, time, stack
//! and output, and the grants beyond pure computation (directories,
//! environment variables, clocks, randomness). Settings only: the wasm
//! layer (`wasm::sandbox`) enforces them.

use std::path::PathBuf;
use std::time::Duration;

use crate::units::ConfigError;

/// The highest `--max-memory` the engine is configured for.
pub const MAX_MEMORY_LIMIT: u64 = 4 << 30;

/// Default wasm stack: 512 KiB (wasmtime's).
pub const DEFAULT_MAX_STACK: usize = 512 * 1024;

/// Per-instance limits. Every breach is a trap with a message that names
/// the limit, its value and the flag that raises it.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Linear memory of all memories together, bytes (`--max-memory`).
    pub memory_bytes: u64,
    /// Wall-clock deadline of one guest call (`--call-timeout`).
    pub call_timeout: Duration,
    /// Fuel per call (`--fuel`), when the engine counts fuel.
    pub fuel: Option<u64>,
    /// Rows one input record may emit (`--max-rows-per-record`).
    pub rows_per_record: u32,
    /// Output bytes one input record may emit (`--max-bytes-per-record`).
    pub bytes_per_record: u64,
    /// Guest stdout and stderr kept per call (`--max-guest-log`).
    pub log_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 64 << 20,
            call_timeout: Duration::from_secs(10),
            fuel: None,
            rows_per_record: 100_000,
            bytes_per_record: 16 << 20,
            log_bytes: 16 << 10,
        }
    }
}

/// A directory the job grants its guests.
#[derive(Debug, Clone)]
pub struct DirGrant {
    /// The directory on the host.
    pub host: PathBuf,
    /// Where the guest sees it.
    pub guest: String,
    /// Read-only.
    pub read_only: bool,
}

impl DirGrant {
    /// Parses `HOST_DIR[:GUEST_DIR][:ro]`.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        let (rest, read_only) = match s.strip_suffix(":ro") {
            Some(rest) => (rest, true),
            None => (s, false),
        };
        let (host, guest) = match rest.split_once(':') {
            Some((h, g)) => (h, g.to_string()),
            None => (rest, rest.to_string()),
        };
        if host.is_empty() || guest.is_empty() {
            return Err(ConfigError(format!(
                "`{s}` is not HOST_DIR[:GUEST_DIR][:ro]"
            )));
        }
        Ok(DirGrant {
            host: PathBuf::from(host),
            guest,
            read_only,
        })
    }
}

/// What a job grants its guests beyond computing: by default nothing.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// Directories (`--allow-dir`).
    pub dirs: Vec<DirGrant>,
    /// Environment variables passed through (`--allow-env`).
    pub env: Vec<String>,
    /// Wall and monotonic clocks (`--allow-clocks`).
    pub clocks: bool,
    /// Randomness (`--allow-random`).
    pub random: bool,
}

impl Grants {
    /// `None` when `import` is allowed, else what to pass to allow it.
    pub fn refuses(&self, import: &str) -> Option<String> {
        let name = import.split('@').next().unwrap_or(import);
        let (package, _) = name.split_once('/').unwrap_or((name, ""));
        match package {
            "sluice:stream" | "wasi:io" => None,
            "wasi:cli" => None,
            "wasi:filesystem" if self.dirs.is_empty() => {
                Some("pass --allow-dir HOST_DIR[:GUEST_DIR][:ro] to give it a directory".into())
            }
            "wasi:filesystem" => None,
            // The filesystem's types name wall-clock datetimes, so a guest
            // granted a directory imports the wall clock; it reads a frozen
            // clock (0) unless --allow-clocks.
            "wasi:clocks" if self.clocks => None,
            "wasi:clocks" if !self.dirs.is_empty() && name == "wasi:clocks/wall-clock" => None,
            "wasi:clocks" => Some("pass --allow-clocks to give it the time".into()),
            "wasi:random" if !self.random => {
                Some("pass --allow-random to give it randomness".into())
            }
            "wasi:random" => None,
            "wasi:sockets" => Some("guests get no network access".into()),
            _ => Some("the host does not provide it".into()),
        }
    }

    /// The flags a module with these imports needs, for `host inspect`.
    pub fn needed(imports: &[String]) -> Vec<&'static str> {
        let mut needed = Vec::new();
        let files = imports.iter().any(|i| i.starts_with("wasi:filesystem/"));
        for i in imports {
            let flag = if i.starts_with("wasi:filesystem/") {
                "--allow-dir"
            } else if files && i.starts_with("wasi:clocks/wall-clock@") {
                // Comes with the filesystem's types; frozen unless --allow-clocks.
                continue;
            } else if i.starts_with("wasi:clocks/") {
                "--allow-clocks"
            } else if i.starts_with("wasi:random/") {
                "--allow-random"
            } else if i.starts_with("wasi:sockets/") {
                "network (never granted)"
            } else {
                continue;
            };
            if !needed.contains(&flag) {
                needed.push(flag);
            }
        }
        needed
    }
}

/// Limits and grants for a job's instances.
#[derive(Debug, Clone, Default)]
pub struct Sandbox {
    /// Limits.
    pub limits: Limits,
    /// Grants.
    pub grants: Grants,
    /// Who is charged for the CPU time its guests use, and may make them
    /// wait (a server's tenant); `None`: nobody (the command line).
    pub meter: Option<std::sync::Arc<dyn CpuMeter>>,
}

/// Charges the CPU time guests use to someone (a tenant) and may make them
/// wait. Called on the guest's own thread while a guest call runs (about
/// every epoch tick) and when it returns; blocking in [`CpuMeter::charge`]
/// pauses only that guest, and the pause does not count against the call
/// deadline.
pub trait CpuMeter: Send + Sync + std::fmt::Debug {
    /// `used` more CPU time was spent in a guest call on this thread.
    fn charge(&self, used: Duration);

    /// Whether the guest call in progress should stop now (its job was
    /// cancelled): checked at every epoch tick.
    fn interrupted(&self) -> bool {
        false
    }

    /// The scheduling niceness (0 to 19) the guest's thread runs at, so
    /// that under contention the kernel gives it CPU in proportion to its
    /// owner's share; set when a call starts.
    fn niceness(&self) -> i32 {
        0
    }
}
