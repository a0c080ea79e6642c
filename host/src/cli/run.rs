//! `host run`: load the module, resolve the job, run it until it finishes,
//! fails or is cancelled (SIGINT, SIGTERM).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use clap::Args;
use sluice_host::config::sandbox::DEFAULT_MAX_STACK;
use sluice_host::config::{FileConfig, FlagConfig, JobSpec};
use sluice_host::units::parse_bytes;
use sluice_host::wasm::EngineOptions;
use sluice_host::{CancelToken, JobHandle, JobOutcome, Runtime};

#[derive(Args)]
pub struct RunArgs {
    /// The guest component (.wasm) built against sluice:stream@0.1.0.
    #[arg(long, value_name = "PATH")]
    module: PathBuf,
    /// Source: `socket://HOST:PORT`, `file://PATH` or `-` for stdin [default: the module's].
    #[arg(long, value_name = "URI")]
    source: Option<String>,
    /// Sink: `print`, `file://PATH` or `discard` [default: the module's, else print].
    #[arg(long, value_name = "URI")]
    sink: Option<String>,
    /// Parallel subtasks, each with its own guest instance [default: the module's, else 1].
    #[arg(long, value_name = "N")]
    parallelism: Option<u32>,
    /// Number of key groups: the most subtasks keyed state can be split over [default: 128].
    #[arg(long, value_name = "N")]
    max_parallelism: Option<u32>,
    /// Keyed aggregation: `sum:FIELD`, `count:FIELD`, `min:FIELD`, `max:FIELD` or `none` [default: the module's].
    #[arg(long, value_name = "KIND:FIELD")]
    aggregate: Option<String>,
    /// Checkpoint interval (`1s`, `500ms`) or `off` [default: the module's].
    #[arg(long, value_name = "DURATION")]
    checkpoint_interval: Option<String>,
    /// Restart strategy: `none`, `fixed-delay:ATTEMPTS:DELAY`, `failure-rate:MAX:INTERVAL:DELAY`, `exponential:INITIAL:MAX[:MULT[:RESET[:JITTER]]]`.
    #[arg(long, value_name = "STRATEGY")]
    restart: Option<String>,
    /// Least time between the end of one checkpoint and the start of the next [default: 0].
    #[arg(long, value_name = "DURATION")]
    min_pause: Option<String>,
    /// A checkpoint taking longer is abandoned (logged, not fatal) [default: 10m].
    #[arg(long, value_name = "DURATION")]
    checkpoint_timeout: Option<String>,
    /// Where checkpoints, the input journal and dead letters go [default: sluice-checkpoints/JOB_NAME].
    #[arg(long, value_name = "DIR")]
    checkpoint_dir: Option<PathBuf>,
    /// Completed checkpoints kept [default: 2].
    #[arg(long, value_name = "N")]
    retain_checkpoints: Option<usize>,
    /// Keep (`retain`) or delete the checkpoints when the job is cancelled [default: retain].
    #[arg(long, value_name = "retain|delete")]
    on_cancel: Option<String>,
    /// After a guest fault: keep the host's keyed state and go on after the failing record (`local`), or restore the last checkpoint and replay (`checkpoint`) [default: local].
    #[arg(long, value_name = "local|checkpoint")]
    recovery: Option<String>,
    /// File for failed records, one JSON line each [default: JOB_DIR/dead-letter.jsonl].
    #[arg(long, value_name = "PATH")]
    dead_letter: Option<PathBuf>,
    /// Resume from a retained checkpoint: `latest` (in --checkpoint-dir) or a `chk-N` or job directory.
    #[arg(long, value_name = "latest|PATH")]
    restore: Option<String>,
    /// Restore a checkpoint taken with a different module.
    #[arg(long)]
    allow_module_change: bool,
    /// Linear memory per guest instance, all memories together (`64MiB`) [default: 64MiB].
    #[arg(long, value_name = "SIZE")]
    max_memory: Option<String>,
    /// Deadline of one guest call (a batch of records); a guest past it is stopped [default: 10s].
    #[arg(long, value_name = "DURATION")]
    call_timeout: Option<String>,
    /// Fuel per guest call: a deterministic instruction budget (costs some speed) [default: off].
    #[arg(long, value_name = "UNITS")]
    fuel: Option<u64>,
    /// Wasm stack per guest call [default: 512KiB].
    #[arg(long, value_name = "SIZE")]
    max_stack: Option<String>,
    /// Rows one input record may emit [default: 100000].
    #[arg(long, value_name = "N")]
    max_rows_per_record: Option<u32>,
    /// Output bytes one input record may emit [default: 16MiB].
    #[arg(long, value_name = "SIZE")]
    max_bytes_per_record: Option<String>,
    /// Guest stdout and stderr kept per call for the log; the rest is dropped [default: 16KiB].
    #[arg(long, value_name = "SIZE")]
    max_guest_log: Option<String>,
    /// Grant guests a directory: `HOST_DIR[:GUEST_DIR][:ro]` (repeatable).
    #[arg(long, value_name = "HOST_DIR[:GUEST_DIR][:ro]")]
    allow_dir: Vec<String>,
    /// Pass an environment variable to guests (repeatable).
    #[arg(long, value_name = "NAME")]
    allow_env: Vec<String>,
    /// Grant guests the wall and monotonic clocks.
    #[arg(long)]
    allow_clocks: bool,
    /// Grant guests randomness.
    #[arg(long)]
    allow_random: bool,
    /// Longest accepted input line in bytes; longer lines are skipped with an error [default: 1048576].
    #[arg(long, value_name = "BYTES")]
    max_line_bytes: Option<usize>,
    /// How long to keep trying to reach a socket source at start [default: 10s].
    #[arg(long, value_name = "DURATION")]
    connect_timeout: Option<String>,
    /// The job's name in logs [default: the module's].
    #[arg(long)]
    name: Option<String>,
    /// A parameter for the guest (repeatable).
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = super::parse_param)]
    params: Vec<(String, String)>,
    /// Settings in a TOML file; flags override it, it overrides the module's description.
    #[arg(long, value_name = "FILE.toml")]
    config: Option<PathBuf>,
}

pub fn run(args: RunArgs, cache: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let file = match &args.config {
        Some(path) => FileConfig::read(path).map_err(|e| anyhow!(e))?,
        None => FileConfig::default(),
    };
    let flags = FlagConfig {
        module_path: args.module.clone(),
        settings: FileConfig {
            name: args.name,
            source: args.source,
            sink: args.sink,
            parallelism: args.parallelism,
            max_parallelism: args.max_parallelism,
            aggregate: args.aggregate,
            max_line_bytes: args.max_line_bytes,
            connect_timeout: args.connect_timeout,
            checkpoint_interval: args.checkpoint_interval,
            restart: args.restart,
            min_pause: args.min_pause,
            checkpoint_timeout: args.checkpoint_timeout,
            checkpoint_dir: args.checkpoint_dir,
            retain_checkpoints: args.retain_checkpoints,
            on_cancel: args.on_cancel,
            recovery: args.recovery,
            dead_letter: args.dead_letter,
            max_memory: args.max_memory,
            call_timeout: args.call_timeout,
            max_rows_per_record: args.max_rows_per_record,
            max_bytes_per_record: args.max_bytes_per_record,
            max_guest_log: args.max_guest_log,
            allow_dir: args.allow_dir,
            allow_env: args.allow_env,
            allow_clocks: args.allow_clocks,
            allow_random: args.allow_random,
            fuel: args.fuel,
            max_stack: args.max_stack,
            params: Default::default(),
        },
        restore: args.restore,
        allow_module_change: args.allow_module_change,
        params: args.params,
        env: Default::default(),
    };
    let max_stack = match flags
        .settings
        .max_stack
        .as_deref()
        .or(file.max_stack.as_deref())
    {
        Some(s) => usize::try_from(parse_bytes(s).map_err(|e| anyhow!("--max-stack: {e}"))?)?,
        None => DEFAULT_MAX_STACK,
    };
    let options = EngineOptions {
        fuel: flags.settings.fuel.or(file.fuel).is_some(),
        max_stack,
    };
    let runtime = Runtime::with_options(options)
        .context("cannot start the WebAssembly engine")?
        .with_compile_cache(cache);
    let module = runtime.load(&args.module)?;
    // Grants come from the operator only, never from the module, so they
    // are checked before the module runs any code.
    let grants = JobSpec::resolve(
        &Default::default(),
        &file,
        &FlagConfig {
            settings: FileConfig {
                source: Some("-".into()),
                ..flags.settings.clone()
            },
            ..flags.clone()
        },
    )
    .map_err(|e| anyhow!(e))?
    .sandbox
    .grants;
    module
        .check_grants(&grants)
        .map_err(|e| anyhow!("`{}` cannot run: {e}", args.module.display()))?;
    let mut params: Vec<(String, String)> = file
        .params
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    params.extend(flags.params.iter().cloned());
    let description = module
        .describe(&params)
        .map_err(|f| anyhow!("module `{}`: {f}", args.module.display()))?;
    let spec = JobSpec::resolve(&description, &file, &flags).map_err(|e| anyhow!(e))?;
    let prepared = sluice_host::job::prepare(&module, &spec)?;

    let cancel = CancelToken::new();
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while cancelling exits at once.
        signal_hook::flag::register_conditional_shutdown(signal, 130, cancel.flag())
            .context("cannot install the signal handler")?;
        signal_hook::flag::register(signal, cancel.flag())
            .context("cannot install the signal handler")?;
    }
    let handle = JobHandle::start(module, spec, prepared, cancel)
        .context("cannot start the job's thread")?;
    Ok(match handle.wait() {
        JobOutcome::Finished | JobOutcome::Canceled => ExitCode::SUCCESS,
        JobOutcome::Failed(_) => ExitCode::from(1),
    })
}
