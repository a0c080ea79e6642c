//! Command-line parsing; one file per subcommand.

/// `println!` for a command's report: when stdout is closed early
/// (`host inspect ... | head`), the output ends quietly.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::print_line(format_args!($($arg)*))
    };
}

mod checkpoints;
mod inspect;
mod new;
mod remote;
mod run;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::Layer;

/// Run stateful stream functions written in WebAssembly.
#[derive(Parser)]
#[command(name = "host", version, about, long_about = None)]
struct Cli {
    /// Where compiled modules are kept, so a module is compiled once; `off` compiles at every start [env: SLUICE_COMPILE_CACHE; default: $XDG_CACHE_HOME/sluice or ~/.cache/sluice]
    #[arg(long, global = true, value_name = "DIR|off")]
    compile_cache: Option<String>,
    #[command(flatten)]
    remote: remote::Remote,
    #[command(subcommand)]
    command: Command,
}

/// The compile cache directory from the flag, the environment or the
/// user's cache directory; `None` when turned off or there is no home.
fn compile_cache(flag: Option<String>) -> Option<std::path::PathBuf> {
    let chosen = flag.or_else(|| std::env::var("SLUICE_COMPILE_CACHE").ok());
    match chosen.as_deref() {
        Some("off") => None,
        Some(dir) if !dir.is_empty() => Some(dir.into()),
        _ => std::env::var_os("XDG_CACHE_HOME")
            .filter(|d| !d.is_empty())
            .map(std::path::PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache")))
            .map(|d| d.join("sluice")),
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run a job: a 0.1.0 guest (source → flat-map → key-selector → keyed aggregation → sink) or a 0.2.0 pipeline (map, process and window stages with keyed state, timers and event time).
    Run(Box<run::RunArgs>),
    /// Show a module's world, exports, imports and job description, or why it is not a valid guest.
    Inspect(inspect::InspectArgs),
    /// List or show retained checkpoints.
    #[command(subcommand)]
    Checkpoints(checkpoints::CheckpointsCommand),
    /// Create a Rust guest crate that builds with one command, outside this repository too.
    New(new::NewArgs),
    /// Serve many tenants' jobs over a REST API (see the README's "Serve mode").
    Serve(Box<serve::ServeArgs>),
    /// Compile a module for `host serve`, in the child process it runs under limits.
    #[command(hide = true)]
    Compile(serve::CompileArgs),
    #[command(flatten)]
    Remote(remote::RemoteCommand),
}

/// Parses the command line and runs the subcommand.
pub fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let cache = compile_cache(cli.compile_cache);
    match cli.command {
        Command::Run(args) => {
            init_logging(None);
            run::run(*args, cache)
        }
        Command::Inspect(args) => {
            init_logging(None);
            inspect::inspect(args, cache)
        }
        Command::Checkpoints(cmd) => {
            init_logging(None);
            checkpoints::run(cmd)
        }
        Command::New(args) => {
            init_logging(None);
            new::new(args)
        }
        Command::Serve(args) => {
            let router = std::sync::Arc::new(sluice_host::server::events::LogRouter::default());
            init_logging(Some(sluice_host::server::events::LogLayer(router.clone())));
            serve::serve(*args, router)
        }
        Command::Compile(args) => serve::compile(args),
        Command::Remote(cmd) => {
            init_logging(None);
            remote::run(cli.remote, cmd)
        }
    }
}

/// Writes one line to stdout; exits quietly when the reader has gone.
pub(crate) fn print_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_fmt(args)
        .and_then(|()| stdout.write_all(b"\n"))
    {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

/// Logs go to stderr; `SLUICE_LOG` (e.g. `debug`) sets the level. A filter
/// that does not parse is a warning, never silence: errors always reach
/// stderr.
pub fn init_logging(layer: Option<sluice_host::server::events::LogLayer>) {
    use std::io::IsTerminal;
    // The S3 client's own retries are noise at `info`: each failed
    // request is reported once, by the host, with its cause.
    const DEFAULT: &str = "info,object_store=warn";
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let (filter, bad) = match std::env::var("SLUICE_LOG") {
        Ok(s) if !s.trim().is_empty() => match tracing_subscriber::EnvFilter::try_new(&s) {
            Ok(f) if valid_levels(&s) => (f, None),
            _ => (tracing_subscriber::EnvFilter::new(DEFAULT), Some(s)),
        },
        _ => (tracing_subscriber::EnvFilter::new(DEFAULT), None),
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_filter(filter);
    tracing_subscriber::registry().with(fmt).with(layer).init();
    if let Some(s) = bad {
        tracing::warn!(
            "SLUICE_LOG={s:?} is not a log filter; logging at `info` (use error, warn, info, debug or trace)"
        );
    }
}

/// Whether every directive of a filter names a known level: `EnvFilter`
/// takes `inf` for a target named `inf`, which turns every other log off.
fn valid_levels(filter: &str) -> bool {
    const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];
    filter
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .all(|d| {
            let level = d.rsplit_once('=').map_or(d, |(_, l)| l);
            LEVELS.contains(&level.to_ascii_lowercase().as_str())
        })
}

/// Parses `KEY=VALUE`.
fn parse_param(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}
