//! `host serve`: one long-running process that many tenants deploy wasm
//! stream jobs to, over a REST API (axum on tokio).
//!
//! What it owns, one file per concern: who calls (`auth`), tenants and
//! their tokens (`tenants`), their quotas and CPU shares (`quotas`),
//! modules compiled in a child process (`modules`, `compile`), jobs and
//! their savepoints (`jobs`, `savepoints`), long operations and
//! idempotency keys (`operations`), events and logs (`events`), metrics
//! (`metrics`), the API document (`openapi`), problem+json errors
//! (`error`), the route table (`routes`) and its handlers (`api/`), the
//! web dashboard (`dashboard`, assets embedded in the binary), TLS
//! (`tls`), connections and their limits (`listen`) and crash-safe records
//! (`disk`).
//!
//! Everything it keeps is under the data directory, so a server killed
//! with `kill -9` and started again on it brings every job that was
//! running back from its latest checkpoint, and its operations still
//! answer. It runs the library's jobs; it adds no job semantics of its own.

pub mod api;
pub mod auth;
pub mod compile;
pub mod dashboard;
pub mod disk;
pub mod error;
pub mod events;
pub mod jobs;
pub mod listen;
pub mod metrics;
pub mod modules;
pub mod openapi;
pub mod operations;
pub mod quotas;
pub mod routes;
pub mod savepoints;
pub mod state;
pub mod tenants;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::server::compile::CompileLimits;
use crate::server::events::LogRouter;
use crate::server::state::{RequestLimits, Server};
use crate::wasm::{EngineOptions, Runtime};

/// The most guest instances the server sizes its pool for by itself.
pub const MAX_POOL: u32 = 2048;

/// The instance pool for `tenants`: room for every tenant's parallelism
/// quota, each instance with one more for isolating a poison record, and
/// never less than the engine's default; `--max-instances` overrides it.
/// Admission control keeps every tenant's jobs within it.
pub fn pool_size(tenants: &[Arc<tenants::Tenant>], given: Option<u32>) -> u32 {
    if let Some(n) = given {
        return n.max(1);
    }
    let wanted: u64 = tenants
        .iter()
        .map(|t| t.record().quota.parallelism.saturating_mul(2))
        .sum();
    let wanted = u32::try_from(wanted).unwrap_or(u32::MAX);
    wanted.clamp(crate::wasm::engine::DEFAULT_INSTANCES, MAX_POOL)
}

/// How a server is set up.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where it listens.
    pub listen: SocketAddr,
    /// Where it keeps everything.
    pub data_dir: PathBuf,
    /// The admin's token.
    pub admin_token: String,
    /// The TLS certificate chain and key (PEM), when serving over TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Limits of compiling a module.
    pub compile: CompileLimits,
    /// Limits of requests.
    pub limits: RequestLimits,
    /// Limits of connections.
    pub connections: listen::ConnLimits,
    /// The instance pool's size (`--max-instances`); by default sized from
    /// the tenants' quotas at start.
    pub instances: Option<u32>,
}

/// Why the server cannot start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A setting that cannot work: the user's to fix.
    #[error("{0}")]
    Config(String),
    /// The data directory or the network.
    #[error("{0}")]
    Io(String),
    /// The engine.
    #[error(transparent)]
    Engine(#[from] crate::wasm::EngineError),
    /// TLS.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

fn io(what: &str) -> impl Fn(std::io::Error) -> ServerError + '_ {
    move |e| ServerError::Io(format!("{what}: {e}"))
}

/// Refuses a setup that would expose the API: a non-loopback address
/// without TLS, an admin token too short to be secret.
pub fn check(config: &ServerConfig) -> Result<(), ServerError> {
    if !config.listen.ip().is_loopback() && config.tls.is_none() {
        return Err(ServerError::Config(format!(
            "refusing to listen on `{}` without TLS: pass --tls-cert and --tls-key, or listen on a loopback address (127.0.0.1)",
            config.listen
        )));
    }
    if config.admin_token.len() < 16 {
        return Err(ServerError::Config(
            "the admin token file must hold a token of at least 16 characters".into(),
        ));
    }
    Ok(())
}

/// Creates (private) and locks the data directory.
fn open_data(dir: &std::path::Path) -> Result<std::fs::File, ServerError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io("cannot create the data directory"))?;
    let meta = std::fs::metadata(dir).map_err(io("cannot read the data directory"))?;
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(ServerError::Config(format!(
            "the data directory `{}` may be written by others (mode {:o}); it holds native code the server runs: `chmod 700` it",
            dir.display(),
            meta.permissions().mode() & 0o777
        )));
    }
    let me = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(meta.uid());
    if meta.uid() != me {
        return Err(ServerError::Config(format!(
            "the data directory `{}` belongs to another user",
            dir.display()
        )));
    }
    let lock = std::fs::File::create(dir.join("server.lock"))
        .map_err(io("cannot create the lock file"))?;
    lock.try_lock().map_err(|_| {
        ServerError::Config(format!("another server is running on `{}`", dir.display()))
    })?;
    Ok(lock)
}

/// Loads everything under the data directory and resumes the jobs that
/// were running.
fn load(config: &ServerConfig, router: Arc<LogRouter>) -> Result<Arc<Server>, ServerError> {
    let data = std::path::absolute(&config.data_dir).map_err(io("the data directory"))?;
    let tenants =
        tenants::Tenants::load(&data.join("tenants")).map_err(io("cannot load the tenants"))?;
    let all = tenants.all();
    let instances = pool_size(&all, config.instances);
    let options = EngineOptions {
        instances,
        ..EngineOptions::default()
    };
    let runtime = Runtime::with_options(options)?;
    tracing::info!("instance pool: {instances} guest instances");
    let modules = Arc::new(modules::Modules::new(runtime, config.compile.clone()));
    let jobs = Arc::new(
        jobs::Jobs::load(&all, modules.clone(), router, u64::from(instances))
            .map_err(io("cannot load the jobs"))?,
    );
    let ops =
        Arc::new(operations::Operations::load(&all).map_err(io("cannot load the operations"))?);
    jobs.resume_all();
    Ok(Arc::new(Server {
        data,
        admin_hash: disk::sha256(config.admin_token.as_bytes()),
        tenants,
        modules,
        jobs,
        ops,
        idempotency: Default::default(),
        stats: Default::default(),
        limits: config.limits,
    }))
}

/// Takes in ended jobs, counts dead letters, enforces the keyed-state
/// quota, and measures each tenant's storage now and then.
fn monitor(state: Arc<Server>) {
    tokio::spawn(async move {
        let mut round = 0u64;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            round += 1;
            let s = state.clone();
            let _ = tokio::task::spawn_blocking(move || {
                s.jobs.tick();
                if round.is_multiple_of(10) {
                    for t in s.tenants.all() {
                        t.measure();
                    }
                }
            })
            .await;
        }
    });
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

/// A watch that turns true at SIGINT or SIGTERM.
fn stop_on_signal() -> tokio::sync::watch::Receiver<bool> {
    let (tell, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = tell.send(true);
    });
    stop
}

/// Runs the server until SIGINT or SIGTERM. Jobs are not cancelled then:
/// they are left as a crash would leave them and resume from their latest
/// checkpoint at the next start.
pub fn run(config: ServerConfig, router: Arc<LogRouter>) -> Result<(), ServerError> {
    check(&config)?;
    let tls = match &config.tls {
        Some((cert, key)) => Some(tls::config(cert, key)?),
        None => None,
    };
    let _lock = open_data(&config.data_dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sluice-serve")
        .build()
        .map_err(io("cannot start the server's threads"))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| ServerError::Io(format!("cannot listen on `{}`: {e}", config.listen)))?;
        let local = listener.local_addr().map_err(io("the listening address"))?;
        let state = tokio::task::block_in_place(|| load(&config, router))?;
        monitor(state.clone());
        let app = routes::router(state.clone());
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!("serving on {scheme}://{local}");
        let tls = tls.map(tokio_rustls::TlsAcceptor::from);
        let refused = state.stats.refused_connections.clone();
        let listening = (listener, tls);
        listen::serve(
            listening,
            app,
            config.connections,
            refused,
            stop_on_signal(),
        )
        .await;
        tracing::info!(
            "server stopped; running jobs resume from their latest checkpoint at the next start"
        );
        Ok(())
    })
}
