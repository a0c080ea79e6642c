//! Finding what a `--restore latest|PATH` names: a job directory and, for a
//! `chk-N` path, the checkpoint in it. The checks that a restore can work
//! with this module and these settings are the job's (`job::prepare`).

use std::path::{Path, PathBuf};

use crate::checkpoint::{CheckpointError, Store};

/// Resolves `--restore latest|PATH` to a job directory and, for a
/// `chk-N` path, the checkpoint id.
pub fn resolve_restore(
    arg: &str,
    checkpoint_dir: &Path,
) -> Result<(PathBuf, Option<u64>), CheckpointError> {
    if arg == "latest" {
        return latest_job(checkpoint_dir).map(|p| (p, None));
    }
    let refuse = |m: String| CheckpointError::Restore(m);
    let path = PathBuf::from(arg);
    if path.join("manifest.json").exists() {
        let id = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("chk-"))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| refuse(format!("`{arg}` is not a `chk-N` checkpoint directory")))?;
        let parent = path
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| refuse(format!("`{arg}` has no job directory")))?;
        return Ok((parent, Some(id)));
    }
    if path.is_dir() {
        return Ok((path, None));
    }
    Err(refuse(format!(
        "`{arg}` is not a checkpoint; pass `latest` or a `chk-N` or job directory"
    )))
}

/// The job directory in `checkpoint_dir` that was active last: by the time
/// of its newest completed checkpoint, or, for a job that never completed
/// one, of its `job.json` (it then resumes from its start).
fn latest_job(checkpoint_dir: &Path) -> Result<PathBuf, CheckpointError> {
    let entries = std::fs::read_dir(checkpoint_dir).map_err(|e| {
        CheckpointError::Restore(format!(
            "no checkpoints to restore in `{}`: {e}; pass --checkpoint-dir where the job kept them",
            checkpoint_dir.display()
        ))
    })?;
    let mut best: Option<(u64, PathBuf)> = None;
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let Ok(store) = Store::open(&path) else {
            continue;
        };
        if let Some(t) = store.last_active()
            && best.as_ref().is_none_or(|(b, _)| t > *b)
        {
            best = Some((t, path));
        }
    }
    best.map(|(_, p)| p).ok_or_else(|| {
        CheckpointError::Restore(format!(
            "no job to restore in `{}`: it holds no checkpoint and no job started there; \
             pass --checkpoint-dir where the job kept them",
            checkpoint_dir.display()
        ))
    })
}
