//! The `host` command: parses flags, runs a subcommand, maps the result to
//! an exit code (0 finished or cancelled, 1 job failed, 2 bad usage or bad
//! input) and prints an error once, without a backtrace.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::init_logging();
    match cli::main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
