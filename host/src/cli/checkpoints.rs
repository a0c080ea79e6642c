//! `host checkpoints list DIR` and `host checkpoints show PATH`: what the
//! retained checkpoints hold, without running anything.

use std::process::ExitCode;

use anyhow::anyhow;
use clap::Subcommand;
use sluice_host::checkpoint::{Location, Manifest, Store};

#[derive(Subcommand)]
pub enum CheckpointsCommand {
    /// List the checkpoints under a checkpoint directory (or one job's directory); `s3://BUCKET/PREFIX` too.
    List {
        /// `--checkpoint-dir` of the job, or one job directory in it.
        dir: String,
    },
    /// Show one checkpoint (`.../chk-N`) in full, or a job directory's checkpoints; `s3://...` too.
    Show {
        /// The checkpoint's directory, or a job's directory.
        path: String,
    },
}

pub fn run(cmd: CheckpointsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CheckpointsCommand::List { dir } => list(&Location::parse(&dir)?),
        CheckpointsCommand::Show { path } => show(&Location::parse(&path)?),
    }
}

/// The jobs in `dir`: itself, or any found up to two levels down
/// (`sluice-checkpoints/NAME/JOB_ID`).
fn job_dirs(dir: &Location) -> anyhow::Result<Vec<Location>> {
    if let Location::Local(p) = dir
        && !p.is_dir()
    {
        return Err(anyhow!(
            "`{}` is not a directory; pass a job's checkpoint directory (its --checkpoint-dir) or a job's directory",
            p.display()
        ));
    }
    let storage = dir.open(false)?;
    if storage.is_job() {
        return Ok(vec![dir.clone()]);
    }
    let mut found = Vec::new();
    let mut level = vec![(dir.clone(), storage)];
    for _ in 0..2 {
        let mut next = Vec::new();
        for (location, storage) in &level {
            for name in storage.children().unwrap_or_default() {
                let Ok(child) = storage.child(&name) else {
                    continue;
                };
                let location = location.join(&name);
                if child.is_job() {
                    found.push(location);
                } else {
                    next.push((location, child));
                }
            }
        }
        level = next;
    }
    found.sort_by_key(ToString::to_string);
    Ok(found)
}

/// How a job is named in the list: its location relative to `dir`.
fn relative(dir: &Location, job: &Location) -> String {
    let (dir, job) = (dir.to_string(), job.to_string());
    match job.strip_prefix(&dir).map(|r| r.trim_start_matches('/')) {
        Some(r) if !r.is_empty() => r.to_string(),
        _ => job.rsplit('/').next().unwrap_or(&job).to_string(),
    }
}

fn list(dir: &Location) -> anyhow::Result<ExitCode> {
    let jobs = job_dirs(dir)?;
    out!(
        "{:<34} {:>6}  {:<24} {:>10} {:>10} {:>8} {:>10}  state",
        "job",
        "id",
        "time (UTC)",
        "records",
        "offset",
        "keys",
        "bytes"
    );
    let mut any = false;
    for job_dir in jobs {
        let store = Store::inspect(&job_dir).map_err(|e| anyhow!(e))?;
        let job = relative(dir, &job_dir);
        for id in store.ids() {
            any = true;
            match store.load(id) {
                Ok((m, _)) => out!(
                    "{job:<34} {:>6}  {:<24} {:>10} {:>10} {:>8} {:>10}  ok",
                    format!("chk-{id}"),
                    utc(m.created_at_ms),
                    m.source.position.seq,
                    m.source.position.offset,
                    m.keys,
                    m.files.iter().map(|f| f.bytes).sum::<u64>()
                ),
                Err(e) => out!("{job:<34} {:>6}  damaged: {e}", format!("chk-{id}")),
            }
        }
    }
    if !any {
        out!("(no checkpoints in `{dir}`)");
    }
    Ok(ExitCode::SUCCESS)
}

fn show(path: &Location) -> anyhow::Result<ExitCode> {
    let missing =
        || anyhow!("there is no checkpoint at `{path}`; `host checkpoints list DIR` lists them");
    if let Location::Local(p) = path
        && !p.exists()
    {
        return Err(missing());
    }
    let id = path
        .name()
        .and_then(|n| n.strip_prefix("chk-"))
        .and_then(|n| n.parse::<u64>().ok());
    let Some(id) = id else {
        if path.open(false)?.is_job() {
            // A job's directory: its checkpoints.
            return list(path);
        }
        if let Location::S3 { .. } = path {
            return Err(missing());
        }
        return Err(anyhow!(
            "`{path}` is neither a `chk-N` checkpoint nor a job's directory"
        ));
    };
    let parent = path
        .parent()
        .ok_or_else(|| anyhow!("`{path}` has no job directory"))?;
    let store = Store::inspect(&parent).map_err(|e| anyhow!(e))?;
    if !store.ids().contains(&id) {
        return Err(missing());
    }
    let (m, _): (Manifest, _) = store
        .load(id)
        .map_err(|e| anyhow!("checkpoint `{path}` is damaged: {e}"))?;
    // What a restore from it skips: the checkpoint's records and those the
    // job dead-lettered since.
    let mut skipped: Vec<u64> = m
        .skipped_records
        .iter()
        .copied()
        .chain(
            store
                .skipped()
                .into_iter()
                .filter(|s| m.source.position.may_replay(*s)),
        )
        .collect();
    skipped.sort_unstable();
    skipped.dedup();
    print_manifest(&m, &skipped);
    Ok(ExitCode::SUCCESS)
}

fn print_manifest(m: &Manifest, skipped: &[u64]) {
    out!(
        "checkpoint:      chk-{} (format {} v{})",
        m.checkpoint_id,
        m.format,
        m.format_version
    );
    out!("state:           complete, checksums ok");
    out!("job:             {} ({})", m.job_name, m.job_id);
    out!("time:            {}", utc(m.created_at_ms));
    out!(
        "module:          xxh3:{} against {}",
        m.module_digest,
        m.wit_version
    );
    out!(
        "parallelism:     {} (max {})",
        m.parallelism,
        m.max_parallelism
    );
    out!("aggregation:     {}", m.aggregation);
    out!(
        "source:          {} at record {} (byte {})",
        m.source.uri,
        m.source.position.seq,
        m.source.position.offset
    );
    out!(
        "sink:            {} at line {} (byte {})",
        m.sink.uri,
        m.sink.position.lines,
        m.sink.position.bytes
    );
    out!("keys:            {}", m.keys);
    let shown: Vec<String> = skipped
        .iter()
        .map(|s| match sluice_host::record::partition_of(*s) {
            Some((p, o)) => format!("{p}@{o}"),
            None => (s + 1).to_string(),
        })
        .collect();
    out!(
        "skipped records: {}",
        if shown.is_empty() {
            "none".into()
        } else {
            shown.join(", ")
        }
    );
    out!("files:");
    for f in &m.files {
        out!(
            "  {:<14} key groups {}..{}  {} keys  {} bytes  xxh3:{}",
            f.name,
            f.key_groups[0],
            f.key_groups[1],
            f.keys,
            f.bytes,
            f.xxh3
        );
    }
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS.mmm`.
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}
