//! Compiling untrusted modules in a child process: wasmtime treats a
//! compile that eats memory or time as outside its security model, so the
//! server runs `host compile` (a hidden subcommand) with an address-space
//! limit (`RLIMIT_AS`), a CPU-time limit and a wall-clock timeout, and
//! loads the serialized result it writes. The child's engine has the
//! server engine's settings, so what it writes loads there.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::server::error::AppError;
use crate::wasm::{EngineOptions, Runtime};

/// The limits of one compile.
#[derive(Debug, Clone)]
pub struct CompileLimits {
    /// The `host` binary to run as the child.
    pub binary: PathBuf,
    /// Address space the child may use, in bytes.
    pub memory: u64,
    /// How long it may take.
    pub timeout: Duration,
}

/// Runs `host compile --module INPUT --compiled OUTPUT` under `limits`,
/// at niceness `nice` (the tenant's, so a small share's compile yields).
pub async fn run_child(
    input: &Path,
    output: &Path,
    limits: &CompileLimits,
    nice: i32,
) -> Result<(), AppError> {
    let mut cmd = tokio::process::Command::new(&limits.binary);
    cmd.arg("compile")
        .arg("--module")
        .arg(input)
        .arg("--compiled")
        .arg(output)
        .env_remove("SLUICE_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    limit(&mut cmd, limits, nice);
    let child = cmd
        .spawn()
        .map_err(|e| AppError::Unavailable(format!("cannot start the compiler process: {e}")))?;
    let waited = tokio::time::timeout(limits.timeout, child.wait_with_output()).await;
    let out = match waited {
        Err(_) => {
            return Err(AppError::Invalid(format!(
                "compiling the module ran past its time limit of {} ms; the module is refused",
                limits.timeout.as_millis()
            )));
        }
        Ok(r) => {
            r.map_err(|e| AppError::Unavailable(format!("the compiler process failed: {e}")))?
        }
    };
    if out.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&out.stderr);
    let said = said
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    let said = crate::fault::shorten(said.strip_prefix("error: ").unwrap_or(said), 1024);
    match out.status.code() {
        Some(2) => Err(AppError::Invalid(said)),
        _ => Err(AppError::Invalid(format!(
            "compiling the module ran past its limits (memory {} bytes, time {} ms) and was stopped{}; the module is refused",
            limits.memory,
            limits.timeout.as_millis(),
            if said.is_empty() {
                String::new()
            } else {
                format!(": {said}")
            }
        ))),
    }
}

/// Puts the memory and CPU limits on the child.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit(cmd: &mut tokio::process::Command, limits: &CompileLimits, nice: i32) {
    let memory = limits.memory;
    let cpu = limits.timeout.as_secs().max(1) + 1;
    // SAFETY: the closure runs in the child between fork and exec and calls
    // only setrlimit and setpriority, which are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            let set = |resource, value: u64| {
                let lim = libc::rlimit {
                    rlim_cur: value,
                    rlim_max: value,
                };
                if libc::setrlimit(resource, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            };
            libc::setpriority(libc::PRIO_PROCESS, 0, nice.clamp(0, 19));
            set(libc::RLIMIT_AS, memory)?;
            set(libc::RLIMIT_CPU, cpu)?;
            set(libc::RLIMIT_CORE, 0)
        });
    }
}

/// Elsewhere only the timeout holds.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit(_cmd: &mut tokio::process::Command, _limits: &CompileLimits, _nice: i32) {}

/// Why the child could not compile a module.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The module is not a valid guest, or the engine failed.
    #[error(transparent)]
    Module(#[from] crate::Error),
    /// The input or output file.
    #[error("cannot {what} `{}`: {error}", path.display())]
    Io {
        /// `read` or `write`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
}

/// The child's side (`host compile`): checks and compiles `input` with the
/// server engine's settings and writes the compiled form to `output`.
pub fn child_main(input: &Path, output: &Path) -> Result<(), CompileError> {
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |error| CompileError::Io { what, path, error }
    };
    let bytes = std::fs::read(input).map_err(io("read", input))?;
    let runtime = Runtime::compiler(EngineOptions::default()).map_err(crate::Error::from)?;
    let compiled = runtime
        .precompile("the module", &bytes)
        .map_err(crate::Error::from)?;
    std::fs::write(output, compiled).map_err(io("write", output))
}
