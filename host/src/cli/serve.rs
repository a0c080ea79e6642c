//! `host serve`: the multi-tenant server (see the library's `server`
//! module), and the hidden `host compile` it runs as a child process to
//! compile an untrusted module under memory and time limits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use clap::Args;
use sluice_host::server::compile::CompileLimits;
use sluice_host::server::listen::ConnLimits;
use sluice_host::server::state::RequestLimits;
use sluice_host::server::{ServerConfig, ServerError};
use sluice_host::units::{parse_bytes, parse_duration};

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on; a non-loopback address needs --tls-cert and --tls-key.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8470")]
    listen: SocketAddr,
    /// Where everything the server keeps goes (tenants, tokens, modules, jobs, checkpoints, savepoints, operations).
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// A file holding the admin's token (at least 16 characters).
    #[arg(long, value_name = "FILE")]
    admin_token_file: PathBuf,
    /// TLS certificate chain (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Address space a module's compile may use.
    #[arg(long, value_name = "SIZE", default_value = "2GiB")]
    compile_memory: String,
    /// How long a module's compile may take.
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    compile_timeout: String,
    /// The largest module upload the server takes (a tenant's quota may be lower).
    #[arg(long, value_name = "SIZE", default_value = "256MiB")]
    max_module_size: String,
    /// The largest file upload.
    #[arg(long, value_name = "SIZE", default_value = "256MiB")]
    max_file_size: String,
    /// Guest instances the pool holds for every tenant together [default: twice the sum of the tenants' parallelism quotas at start, at least 512, at most 2048].
    #[arg(long, value_name = "N")]
    max_instances: Option<u32>,
    /// Connections open at once; one more gets a 503 and is closed.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    max_connections: usize,
    /// How long a TLS handshake, a request's head, or an idle connection's next request may take.
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    header_timeout: String,
    /// How long a request's body may take to arrive (a slower one gets a 408).
    #[arg(long, value_name = "DURATION", default_value = "120s")]
    body_timeout: String,
    /// How long a response may wait for a client that stopped reading before its connection is closed.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    write_timeout: String,
}

fn duration(flag: &str, s: &str) -> anyhow::Result<std::time::Duration> {
    parse_duration(s).map_err(|e| anyhow!("{flag}: {e}"))
}

fn size(flag: &str, s: &str) -> anyhow::Result<u64> {
    parse_bytes(s).map_err(|e| anyhow!("{flag}: {e}"))
}

fn config(args: ServeArgs) -> anyhow::Result<ServerConfig> {
    let token = std::fs::read_to_string(&args.admin_token_file)
        .with_context(|| {
            format!(
                "cannot read the admin token file `{}`",
                args.admin_token_file.display()
            )
        })?
        .trim()
        .to_string();
    let binary =
        std::env::current_exe().context("cannot find the host binary to compile modules with")?;
    Ok(ServerConfig {
        listen: args.listen,
        data_dir: args.data_dir,
        admin_token: token,
        tls: args.tls_cert.zip(args.tls_key),
        compile: CompileLimits {
            binary,
            memory: size("--compile-memory", &args.compile_memory)?,
            timeout: duration("--compile-timeout", &args.compile_timeout)?,
        },
        limits: RequestLimits {
            module_bytes: usize::try_from(size("--max-module-size", &args.max_module_size)?)?,
            file_bytes: usize::try_from(size("--max-file-size", &args.max_file_size)?)?,
            json_bytes: 1 << 20,
            body_timeout: duration("--body-timeout", &args.body_timeout)?,
        },
        connections: ConnLimits {
            max_connections: args.max_connections,
            header_timeout: duration("--header-timeout", &args.header_timeout)?,
            write_timeout: duration("--write-timeout", &args.write_timeout)?,
        },
        instances: args.max_instances,
    })
}

pub fn serve(
    args: ServeArgs,
    router: std::sync::Arc<sluice_host::server::events::LogRouter>,
) -> anyhow::Result<ExitCode> {
    let config = config(args)?;
    match sluice_host::server::run(config, router) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(ServerError::Config(m)) => Err(anyhow!(m)),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

#[derive(Args)]
pub struct CompileArgs {
    /// The module to compile.
    #[arg(long)]
    module: PathBuf,
    /// Where the compiled module goes.
    #[arg(long)]
    compiled: PathBuf,
}

pub fn compile(args: CompileArgs) -> anyhow::Result<ExitCode> {
    sluice_host::server::compile::child_main(&args.module, &args.compiled)?;
    Ok(ExitCode::SUCCESS)
}
