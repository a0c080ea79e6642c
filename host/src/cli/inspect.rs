//! `host inspect`: what a module is, what it needs, and what job it
//! describes — or exactly why it is not a Sluice guest.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::anyhow;
use clap::Args;
use sluice_host::Runtime;
use sluice_host::config::pipeline::Pipeline;
use sluice_host::config::sandbox::Grants;
use sluice_host::config::{FileConfig, FlagConfig, JobSpec};

#[derive(Args)]
pub struct InspectArgs {
    /// The component to inspect.
    #[arg(long, value_name = "PATH")]
    module: PathBuf,
    /// A parameter for the guest's description (repeatable).
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = super::parse_param)]
    params: Vec<(String, String)>,
}

pub fn inspect(args: InspectArgs, cache: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let runtime = Runtime::new()?.with_compile_cache(cache);
    let module = runtime.load(&args.module)?;
    let info = module.info();
    out!("module:   {}", args.module.display());
    out!("size:     {} bytes", module.size());
    out!("digest:   xxh3:{}", module.digest());
    out!("world:    {} {}", module.wit_package(), module.wit_world());
    out!("exports:");
    for f in &info.functions {
        out!("  {f}");
    }
    out!("imports:");
    if info.imports.is_empty() {
        out!("  (none)");
    }
    for i in &info.imports {
        out!("  {i}");
    }
    let needed = Grants::needed(&info.imports);
    out!(
        "needs:    {}",
        if needed.is_empty() {
            "no grants (pure computation)".to_string()
        } else {
            needed.join(", ")
        }
    );
    let d = module
        .describe(&args.params)
        .map_err(|f| anyhow!("module `{}`: {f}", args.module.display()))?;
    out!("job description:");
    let show = |v: Option<String>| v.unwrap_or_else(|| "(not set)".into());
    out!("  name:        {}", show(d.name.clone()));
    out!("  source:      {}", show(d.source.clone()));
    out!("  sink:        {}", show(d.sink.clone()));
    match &d.pipeline {
        None => out!(
            "  aggregation: {}",
            show(d.aggregation.map(|a| a.to_string()))
        ),
        Some(p) => show_pipeline(p),
    }
    out!(
        "  checkpoint:  {}",
        show(d.checkpoint_interval_ms.map(|ms| if ms == 0 {
            "off".to_string()
        } else {
            format!("every {ms} ms")
        }))
    );
    out!("  restart:     {}", show(d.restart.map(|r| r.to_string())));
    out!(
        "  parallelism: {}",
        show(d.parallelism.map(|p| p.to_string()))
    );
    if d.source.is_some()
        && let Err(e) = JobSpec::resolve(&d, &FileConfig::default(), &FlagConfig::default())
    {
        return Err(anyhow!("the module's job description is not valid: {e}"));
    }
    Ok(ExitCode::SUCCESS)
}

/// A 0.2.0 module's pipeline, for `host inspect`.
fn show_pipeline(p: &Pipeline) {
    out!("  stages:");
    for (i, stage) in p.stages.iter().enumerate() {
        out!("    {i} {stage}");
    }
    let sides: Vec<String> = p
        .side_outputs
        .iter()
        .map(|o| format!("{} ({})", o.name, o.sink.as_deref().unwrap_or("print")))
        .collect();
    out!(
        "  side outputs: {}",
        if sides.is_empty() {
            "none".into()
        } else {
            sides.join(", ")
        }
    );
    out!(
        "  watermarks:  {}",
        match p.watermarks {
            None => "none (no event time)".to_string(),
            Some(w) => format!(
                "{} ms out of order{}",
                w.out_of_orderness_ms,
                w.idle_timeout_ms
                    .map_or(String::new(), |t| format!(", idle after {t} ms"))
            ),
        }
    );
}
