//! `host run`: load the module, resolve the job, run it until it finishes,
//! fails or is cancelled (SIGINT, SIGTERM). With `--restore`, the job's own
//! settings (`job.json`) are the layer under the TOML file and the flags,
//! so `--restore JOB_DIR` alone resumes the job as it was.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use clap::Args;
use sluice_host::checkpoint::restore::resolve_restore;
use sluice_host::checkpoint::{Location, Store};
use sluice_host::config::sandbox::DEFAULT_MAX_STACK;
use sluice_host::config::{FlagConfig, JobSpec, Settings};
use sluice_host::units::parse_bytes;
use sluice_host::wasm::EngineOptions;
use sluice_host::{CancelToken, JobHandle, JobOutcome, Module, Runtime};

#[derive(Args)]
pub struct RunArgs {
    /// The guest component (.wasm), built against sluice:stream@0.1.0 or @0.2.0 [default with --restore: the module the job ran].
    #[arg(long, value_name = "PATH")]
    module: Option<PathBuf>,
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
    /// Keyed aggregation of a 0.1.0 guest: `sum:FIELD`, `count:FIELD`, `min:FIELD`, `max:FIELD` or `none` [default: the module's].
    #[arg(long, value_name = "KIND:FIELD")]
    aggregate: Option<String>,
    /// Checkpoint interval (`1s`, `500ms`; a number needs its unit) or `off` [default: the module's].
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
    /// Where checkpoints go: a directory, or `s3://BUCKET/PREFIX` (endpoint and keys from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...) [default: sluice-checkpoints/JOB_NAME].
    #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX")]
    checkpoint_dir: Option<PathBuf>,
    /// Where the job's local files (input journal, dead letters, `skipped`, `printed`) go, in a directory per job [default: the checkpoint directory when local, else sluice-checkpoints/JOB_NAME].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
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
    /// Restore a checkpoint onto another source, read from its beginning with the checkpoint's state.
    #[arg(long)]
    allow_source_change: bool,
    /// Linear memory per guest instance, all memories together (`64MiB`) [default: 64MiB].
    #[arg(long, value_name = "SIZE")]
    max_memory: Option<String>,
    /// Deadline of one guest call (a batch of records); a guest past it is stopped [default: 10s].
    #[arg(long, value_name = "DURATION")]
    call_timeout: Option<String>,
    /// Fuel per guest call (a batch; a record alone gets the same budget): a deterministic instruction budget (costs some speed) [default: off].
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
    /// The sink of a 0.2.0 pipeline's side output (repeatable) [default: the module's, else print].
    #[arg(long = "side-output", value_name = "NAME=URI", value_parser = super::parse_param)]
    side_outputs: Vec<(String, String)>,
    /// Settings in a TOML file; flags override it, it overrides the module's description.
    #[arg(long, value_name = "FILE.toml")]
    config: Option<PathBuf>,
}

impl RunArgs {
    /// The flags named like the TOML file's keys.
    fn settings(&mut self) -> Settings {
        Settings {
            name: self.name.take(),
            source: self.source.take(),
            sink: self.sink.take(),
            parallelism: self.parallelism,
            max_parallelism: self.max_parallelism,
            aggregate: self.aggregate.take(),
            max_line_bytes: self.max_line_bytes,
            connect_timeout: self.connect_timeout.take(),
            checkpoint_interval: self.checkpoint_interval.take(),
            restart: self.restart.take(),
            min_pause: self.min_pause.take(),
            checkpoint_timeout: self.checkpoint_timeout.take(),
            checkpoint_dir: self.checkpoint_dir.take(),
            state_dir: self.state_dir.take(),
            retain_checkpoints: self.retain_checkpoints,
            on_cancel: self.on_cancel.take(),
            recovery: self.recovery.take(),
            dead_letter: self.dead_letter.take(),
            max_memory: self.max_memory.take(),
            call_timeout: self.call_timeout.take(),
            max_rows_per_record: self.max_rows_per_record,
            max_bytes_per_record: self.max_bytes_per_record.take(),
            max_guest_log: self.max_guest_log.take(),
            allow_dir: std::mem::take(&mut self.allow_dir),
            allow_env: std::mem::take(&mut self.allow_env),
            allow_clocks: self.allow_clocks,
            allow_random: self.allow_random,
            fuel: self.fuel,
            max_stack: self.max_stack.take(),
            params: Default::default(),
            side_outputs: std::mem::take(&mut self.side_outputs).into_iter().collect(),
        }
    }
}

pub fn run(mut args: RunArgs, cache: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let file = match &args.config {
        Some(path) => Settings::read(path)?,
        None => Settings::default(),
    };
    let settings = args.settings();
    let (stored, stored_module) = stored(&args.restore, &settings.over(&file))?;
    let module_path = args.module.clone().or(stored_module).ok_or_else(|| {
        anyhow!("pass --module PATH: the guest component to run (a restored job remembers it only when its directory is given)")
    })?;
    let flags = FlagConfig {
        module_path: module_path.clone(),
        settings,
        stored,
        restore: args.restore.take(),
        allow_module_change: args.allow_module_change,
        allow_source_change: args.allow_source_change,
        params: std::mem::take(&mut args.params),
        env: Default::default(),
    };
    let given = flags
        .settings
        .over(&file.over(flags.stored.as_ref().unwrap_or(&Settings::default())));
    let runtime = Runtime::with_options(engine_options(&given)?)?.with_compile_cache(cache);
    let module = runtime.load(&module_path)?;
    let spec = resolve(&module, &module_path, &file, &flags)?;
    probe(&module, &module_path, &spec)?;
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

/// What a job restored from `restore` remembers: its settings and its
/// module. `latest` is found in the checkpoint directory the flags or the
/// file name; without one, it is found later, from the module's job name.
fn stored(
    restore: &Option<String>,
    given: &Settings,
) -> anyhow::Result<(Option<Settings>, Option<PathBuf>)> {
    let Some(restore) = restore else {
        return Ok((None, None));
    };
    let dir = match (restore.as_str(), &given.checkpoint_dir) {
        ("latest", None) => return Ok((None, None)),
        (_, dir) => Location::of_path(&dir.clone().unwrap_or_default())?,
    };
    let (job_dir, _) = resolve_restore(restore, &dir)?;
    let Some(record) = Store::inspect(&job_dir)?.job()? else {
        return Ok((None, None));
    };
    Ok((Some(record.settings), record.module))
}

fn engine_options(given: &Settings) -> anyhow::Result<EngineOptions> {
    let max_stack = match given.max_stack.as_deref() {
        Some(s) => usize::try_from(parse_bytes(s).map_err(|e| anyhow!("--max-stack: {e}"))?)?,
        None => DEFAULT_MAX_STACK,
    };
    Ok(EngineOptions {
        fuel: given.fuel.is_some(),
        max_stack,
        ..EngineOptions::default()
    })
}

/// Checks the grants, asks the module for its description and resolves
/// the job. Grants come from the operator only, never from the module, so
/// they are checked before the module runs any code.
fn resolve(
    module: &Module,
    path: &Path,
    file: &Settings,
    flags: &FlagConfig,
) -> anyhow::Result<JobSpec> {
    let mut grants_only = flags.clone();
    grants_only.settings.source = Some("-".into());
    grants_only.settings.sink = Some("discard".into());
    // Side outputs are the module's to check, once it described itself.
    grants_only.settings.side_outputs.clear();
    let mut file_grants = file.clone();
    file_grants.side_outputs.clear();
    let grants = JobSpec::resolve(&Default::default(), &file_grants, &grants_only)?
        .sandbox
        .grants;
    module
        .check_grants(&grants)
        .map_err(|e| anyhow!("`{}` cannot run: {e}", path.display()))?;
    let mut params: Vec<(String, String)> = file
        .params
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    params.extend(flags.params.iter().cloned());
    let description = module
        .describe(&params)
        .map_err(|f| anyhow!("module `{}`: {f}", path.display()))?;
    Ok(JobSpec::resolve(&description, file, flags)?)
}

/// Starts the guest once in the job's own sandbox, so that limits too
/// small for it to start are refused before the job is set up.
fn probe(module: &Module, path: &Path, spec: &JobSpec) -> anyhow::Result<()> {
    module
        .instantiate_with(&spec.params, &spec.sandbox)
        .map(drop)
        .map_err(|f| {
            anyhow!(
                "module `{}` cannot start in this job's sandbox: {f}",
                path.display()
            )
        })
}
