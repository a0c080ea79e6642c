//! `host checkpoints list DIR` and `host checkpoints show PATH`: what the
//! retained checkpoints hold, without running anything.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::anyhow;
use clap::Subcommand;
use sluice_host::checkpoint::{Manifest, Store};

#[derive(Subcommand)]
pub enum CheckpointsCommand {
    /// List the checkpoints under a checkpoint directory (or one job's directory).
    List {
        /// `--checkpoint-dir` of the job, or one job directory in it.
        dir: PathBuf,
    },
    /// Show one checkpoint (`.../chk-N`) in full, or a job directory's checkpoints.
    Show {
        /// The checkpoint's directory, or a job's directory.
        path: PathBuf,
    },
}

pub fn run(cmd: CheckpointsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CheckpointsCommand::List { dir } => list(&dir),
        CheckpointsCommand::Show { path } => show(&path),
    }
}

/// Whether `dir` is a job's directory: it holds a `job.json`, a
/// checkpoint or a journal.
fn is_job_dir(dir: &Path) -> bool {
    dir.join("job.json").exists()
        || dir.join("journal").is_dir()
        || std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with("chk-"))
            })
}

/// The job directories in `dir`: itself, or any found up to two levels
/// down (`sluice-checkpoints/NAME/JOB_ID`).
fn job_dirs(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Err(anyhow!(
            "`{}` is not a directory; pass a job's checkpoint directory (its --checkpoint-dir) or a job's directory",
            dir.display()
        ));
    }
    if is_job_dir(dir) {
        return Ok(vec![dir.to_owned()]);
    }
    let mut found = Vec::new();
    let mut level = vec![dir.to_owned()];
    for _ in 0..2 {
        let mut next = Vec::new();
        for d in &level {
            for entry in std::fs::read_dir(d).into_iter().flatten().flatten() {
                let path = entry.path();
                if !path.is_dir() {
                    continue;
                }
                if is_job_dir(&path) {
                    found.push(path);
                } else {
                    next.push(path);
                }
            }
        }
        level = next;
    }
    found.sort();
    Ok(found)
}

fn list(dir: &Path) -> anyhow::Result<ExitCode> {
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
    for job_dir in job_dirs(dir)? {
        let store = Store::open(&job_dir).map_err(|e| anyhow!(e))?;
        let job = job_dir
            .strip_prefix(dir)
            .ok()
            .filter(|p| !p.as_os_str().is_empty())
            .or_else(|| job_dir.file_name().map(Path::new))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
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
        out!("(no checkpoints in `{}`)", dir.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn show(path: &Path) -> anyhow::Result<ExitCode> {
    if !path.exists() {
        return Err(anyhow!(
            "there is no checkpoint at `{}`; `host checkpoints list DIR` lists them",
            path.display()
        ));
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let Some(id) = name
        .strip_prefix("chk-")
        .and_then(|n| n.parse::<u64>().ok())
    else {
        if path.is_dir() && is_job_dir(path) {
            // A job's directory: its checkpoints.
            return list(path);
        }
        return Err(anyhow!(
            "`{}` is neither a `chk-N` checkpoint nor a job's directory",
            path.display()
        ));
    };
    let parent = path
        .parent()
        .ok_or_else(|| anyhow!("`{}` has no job directory", path.display()))?;
    let store = Store::open(parent).map_err(|e| anyhow!(e))?;
    let (m, _): (Manifest, _) = store
        .load(id)
        .map_err(|e| anyhow!("checkpoint `{}` is damaged: {e}", path.display()))?;
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
                .filter(|s| *s >= m.source.position.seq),
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
    let shown: Vec<String> = skipped.iter().map(|s| (s + 1).to_string()).collect();
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
