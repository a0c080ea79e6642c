//! Savepoints: a job's checkpoint kept apart from the checkpoints its
//! retention removes (`savepoints/ID/chk-N`, hard links to the
//! checkpoint's files, which are written once and never changed), with a
//! record of what it holds; and putting one back into its job's directory
//! to start the job from it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::server::disk;
use crate::server::tenants::Tenant;

/// A savepoint as the server keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct SavepointRecord {
    /// Its id.
    pub id: String,
    /// The job it is of.
    pub job: String,
    /// The checkpoint it is (`chk-N`).
    pub checkpoint: u64,
    /// When it was taken (Unix ms).
    pub created_ms: u64,
    /// The module the job ran (sha256).
    pub module: String,
    /// The job's parallelism then.
    pub parallelism: u32,
    /// Records read up to it.
    pub records: u64,
    /// Keys of state it holds.
    pub keys: u64,
    /// Bytes of its files.
    pub bytes: u64,
}

fn dir_of(tenant: &Tenant, id: &str) -> PathBuf {
    tenant.sub("savepoints").join(id)
}

/// Links (or copies) every file of `from` into a new directory `to`.
fn link_dir(from: &Path, to: &Path) -> std::io::Result<u64> {
    let temp = to.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&temp);
    std::fs::create_dir_all(&temp)?;
    let mut bytes = 0;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            continue;
        }
        let target = temp.join(entry.file_name());
        if std::fs::hard_link(entry.path(), &target).is_err() {
            std::fs::copy(entry.path(), &target)?;
        }
        bytes += entry.metadata()?.len();
    }
    std::fs::rename(&temp, to)?;
    Ok(bytes)
}

/// Keeps checkpoint `chk` of the job directory `job_dir` as a savepoint.
pub fn keep(
    tenant: &Tenant,
    job_dir: &Path,
    chk: u64,
    mut record: SavepointRecord,
) -> std::io::Result<SavepointRecord> {
    let dir = dir_of(tenant, &record.id);
    std::fs::create_dir_all(&dir)?;
    record.bytes = link_dir(
        &job_dir.join(format!("chk-{chk}")),
        &dir.join(format!("chk-{chk}")),
    )?;
    disk::write_json(&dir.join("savepoint.json"), &record)?;
    Ok(record)
}

/// The savepoint `id` of `tenant`.
pub fn get(tenant: &Tenant, id: &str) -> Option<SavepointRecord> {
    if !disk::valid_id(id) {
        return None;
    }
    disk::read_json(&dir_of(tenant, id).join("savepoint.json"))
        .ok()
        .flatten()
}

/// Every savepoint of `tenant` (of job `job`, when given), oldest first.
pub fn list(tenant: &Tenant, job: Option<&str>) -> Vec<SavepointRecord> {
    let mut all: Vec<SavepointRecord> = std::fs::read_dir(tenant.sub("savepoints"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            disk::read_json(&e.path().join("savepoint.json"))
                .ok()
                .flatten()
        })
        .filter(|s: &SavepointRecord| job.is_none_or(|j| s.job == j))
        .collect();
    all.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
    all
}

/// Puts savepoint `record` back into the job directory `job_dir` as its
/// checkpoint, and removes the job's checkpoints after it (they belong to
/// the run the job is being taken back from), so that a crash after the
/// start resumes from the savepoint's line, not the abandoned one.
pub fn put_back(tenant: &Tenant, record: &SavepointRecord, job_dir: &Path) -> std::io::Result<()> {
    let name = format!("chk-{}", record.checkpoint);
    for entry in std::fs::read_dir(job_dir)?.flatten() {
        let later = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix("chk-"))
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n > record.checkpoint);
        if later {
            std::fs::remove_dir_all(entry.path())?;
        }
    }
    let target = job_dir.join(&name);
    if !target.join("manifest.json").exists() {
        let _ = std::fs::remove_dir_all(&target);
        link_dir(&dir_of(tenant, &record.id).join(&name), &target)?;
    }
    Ok(())
}

/// Removes the savepoints of job `job`.
pub fn remove_of_job(tenant: &Tenant, job: &str) {
    for s in list(tenant, Some(job)) {
        let _ = std::fs::remove_dir_all(dir_of(tenant, &s.id));
    }
}
