//! Command-line parsing; one file per subcommand.

mod checkpoints;
mod inspect;
mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Run stateful stream functions written in WebAssembly.
#[derive(Parser)]
#[command(name = "host", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a job: source → guest flat-map → key-selector → keyed aggregation → sink.
    Run(Box<run::RunArgs>),
    /// Show a module's world, exports, imports and job description, or why it is not a valid guest.
    Inspect(inspect::InspectArgs),
    /// List or show retained checkpoints.
    #[command(subcommand)]
    Checkpoints(checkpoints::CheckpointsCommand),
}

/// Parses the command line and runs the subcommand.
pub fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run::run(*args),
        Command::Inspect(args) => inspect::inspect(args),
        Command::Checkpoints(cmd) => checkpoints::run(cmd),
    }
}

/// Logs go to stderr; `SLUICE_LOG` (e.g. `debug`) sets the level.
pub fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

/// Parses `KEY=VALUE`.
fn parse_param(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}
