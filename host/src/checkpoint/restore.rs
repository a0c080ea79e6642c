//! Finding what a `--restore latest|PATH` names: a job's location (a local
//! directory or an S3 prefix) and, for a `chk-N` path, the checkpoint in
//! it. The checks that a restore can work with this module and these
//! settings are the job's (`job::prepare`).

use crate::checkpoint::{CheckpointError, Location, Store};

/// Resolves `--restore latest|PATH` to a job's location and, for a
/// `chk-N` path, the checkpoint id. `PATH` may be `s3://BUCKET/PREFIX/...`.
pub fn resolve_restore(
    arg: &str,
    checkpoint_dir: &Location,
) -> Result<(Location, Option<u64>), CheckpointError> {
    if arg == "latest" {
        return latest_job(checkpoint_dir).map(|p| (p, None));
    }
    let refuse = |m: String| CheckpointError::Restore(m);
    let location = Location::parse(arg)?;
    let id = location
        .name()
        .and_then(|n| n.strip_prefix("chk-"))
        .and_then(|n| n.parse::<u64>().ok());
    if let (Some(id), Some(parent)) = (id, location.parent()) {
        let store = Store::inspect(&parent)?;
        if store.ids().contains(&id) {
            return Ok((parent, Some(id)));
        }
        return Err(refuse(format!(
            "`{arg}` is not a complete checkpoint (it has no manifest); `host checkpoints show {parent}` lists the job's checkpoints"
        )));
    }
    let is_job = match &location {
        Location::Local(p) => p.is_dir(),
        s3 => s3.open(false)?.is_job(),
    };
    if is_job {
        return Ok((location, None));
    }
    Err(refuse(format!(
        "`{arg}` is not a checkpoint; pass `latest` or a `chk-N` or job directory"
    )))
}

/// The job in `checkpoint_dir` that was active last: by the time of its
/// newest completed checkpoint, or, for a job that never completed one, of
/// its `job.json` (it then resumes from its start).
fn latest_job(checkpoint_dir: &Location) -> Result<Location, CheckpointError> {
    let none = |e: String| {
        CheckpointError::Restore(format!(
            "no checkpoints to restore in `{checkpoint_dir}`: {e}; pass --checkpoint-dir where the job kept them"
        ))
    };
    let storage = checkpoint_dir.open(false).map_err(|e| none(e.message))?;
    let children = storage.children().map_err(|e| none(e.message))?;
    let mut best: Option<(u64, Location)> = None;
    for name in children {
        let location = checkpoint_dir.join(&name);
        let Ok(store) = Store::inspect(&location) else {
            continue;
        };
        if let Some(t) = store.last_active()
            && best.as_ref().is_none_or(|(b, _)| t > *b)
        {
            best = Some((t, location));
        }
    }
    best.map(|(_, p)| p).ok_or_else(|| {
        CheckpointError::Restore(format!(
            "no job to restore in `{checkpoint_dir}`: it holds no checkpoint and no job started there; \
             pass --checkpoint-dir where the job kept them"
        ))
    })
}
