//! Checkpoints: writing a job's snapshot (crash-safely, through a
//! [`storage::CheckpointStorage`]), retention, and finding the newest intact
//! checkpoint to restore from. The format is documented in [`format`].
//!
//! A job's directory also holds what belongs to the job on this machine
//! rather than to a checkpoint: the journal, the dead letters, the records
//! skipped since the last checkpoint, and the print sink's position.

pub mod coordinator;
pub mod format;
pub mod restore;
pub mod storage;

use std::io::Write;
use std::path::Path;

use crate::fault::Fault;
pub use format::{
    FORMAT, FORMAT_VERSION, GroupState, JobInfo, JobRecord, Manifest, SinkEntry, SinkPosition,
    Snapshot, SourceEntry, SourcePosition,
};
use storage::local::LocalStorage;
use storage::{CheckpointStorage, StorageError};

/// A checkpoint could not be written, read or restored.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The storage failed: a disk, a server.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A checkpoint or job record that does not check out.
    #[error("{0}")]
    Damaged(String),
    /// A restore that cannot work as asked, worded for the user.
    #[error("{0}")]
    Restore(String),
}

impl CheckpointError {
    /// Whose fault it is.
    pub fn fault(&self) -> Fault {
        match self {
            CheckpointError::Storage(_) => Fault::Environment,
            CheckpointError::Damaged(_) | CheckpointError::Restore(_) => Fault::Input,
        }
    }
}

/// A job's directory and its checkpoints.
pub struct Store {
    local: LocalStorage,
    checkpoints: Box<dyn CheckpointStorage>,
}

impl Store {
    /// Opens (creating it if needed) the job directory `path`, with the
    /// checkpoints in it.
    pub fn open(path: &Path) -> Result<Self, CheckpointError> {
        let local = LocalStorage::open(path).map_err(|mut e| {
            e.message.push_str("; pass a writable --checkpoint-dir");
            e
        })?;
        let checkpoints = Box::new(LocalStorage::open(path)?);
        Ok(Store { local, checkpoints })
    }

    /// The job directory.
    pub fn path(&self) -> &Path {
        self.local.path()
    }

    /// Ids of the completed checkpoints present, oldest first.
    pub fn ids(&self) -> Vec<u64> {
        self.checkpoints.ids().unwrap_or_default()
    }

    /// Writes a checkpoint crash-safely and returns its manifest.
    pub fn write(&self, info: &JobInfo, snapshot: &Snapshot) -> Result<Manifest, CheckpointError> {
        let mut files = Vec::new();
        let mut entries = Vec::new();
        for (i, groups) in snapshot.subtasks.iter().enumerate() {
            let stage = snapshot.stages.get(i).copied().flatten();
            // One file a subtask of a stage: `state-S.bin` for a job with one
            // stateful stage, `state-STAGE-S.bin` in a pipeline.
            let name = match stage {
                None => format!("state-{i}.bin"),
                Some(stage) => {
                    let first = snapshot
                        .stages
                        .iter()
                        .position(|s| *s == Some(stage))
                        .unwrap_or(0);
                    format!("state-{stage}-{}.bin", i - first)
                }
            };
            let (bytes, mut entry) = format::encode_state(name, groups);
            entry.stage = stage;
            files.push((entry.name.clone(), bytes));
            entries.push(entry);
        }
        let manifest = Manifest::new(info, snapshot, entries);
        let json = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| CheckpointError::Damaged(format!("cannot encode the manifest: {e}")))?;
        self.checkpoints.write(snapshot.id, &files, &json)?;
        Ok(manifest)
    }

    /// Writes `job.json`.
    pub fn write_job(&self, record: &JobRecord) -> Result<(), CheckpointError> {
        let json = serde_json::to_vec_pretty(record)
            .map_err(|e| CheckpointError::Damaged(format!("cannot encode job.json: {e}")))?;
        Ok(self.checkpoints.put_job(&json)?)
    }

    /// Reads `job.json`; `Ok(None)` when the directory has none.
    pub fn job(&self) -> Result<Option<JobRecord>, CheckpointError> {
        let Some(bytes) = self.checkpoints.get_job()? else {
            return Ok(None);
        };
        let shown = format!("{}/job.json", self.checkpoints.location());
        let record: JobRecord = serde_json::from_slice(&bytes)
            .map_err(|e| CheckpointError::Damaged(format!("`{shown}` is not valid: {e}")))?;
        format::check_format(&record.format, record.format_version)
            .map_err(|e| CheckpointError::Damaged(format!("`{shown}` has {e}")))?;
        Ok(Some(record))
    }

    /// When the job last did something a restore would start from: its
    /// newest checkpoint, or its start (Unix ms).
    pub fn last_active(&self) -> Option<u64> {
        let newest = self
            .ids()
            .into_iter()
            .filter_map(|id| self.checkpoints.modified(id))
            .max();
        newest.or_else(|| self.checkpoints.job_modified())
    }

    /// Removes completed checkpoints beyond the newest `retain`; returns
    /// the oldest kept id.
    pub fn retain(&self, retain: usize) -> Option<u64> {
        let ids = self.ids();
        let cut = ids.len().saturating_sub(retain.max(1));
        for id in &ids[..cut] {
            let _ = self.checkpoints.remove(*id);
        }
        ids.get(cut).copied()
    }

    /// Removes in-progress leftovers of a crash.
    pub fn clean_in_progress(&self) {
        self.checkpoints.clean_in_progress();
    }

    /// Removes every checkpoint and the journal (a finished or cancelled job
    /// that does not retain them); the dead-letter file stays.
    pub fn remove_checkpoints(&self) {
        for id in self.ids() {
            let _ = self.checkpoints.remove(id);
        }
        self.clean_in_progress();
        self.checkpoints.remove_job();
        let dir = self.local.dir();
        let _ = dir.remove_dir_all("journal");
        let _ = dir.remove_file("skipped");
        let _ = dir.remove_file("printed");
        let _ = dir.remove_file("timeline");
        // What each side output's sink kept (`side-NAME/`).
        if let Ok(entries) = dir.entries() {
            for e in entries.flatten() {
                if let Ok(name) = e.file_name().into_string()
                    && name.starts_with("side-")
                {
                    let _ = dir.remove_dir_all(&name);
                }
            }
        }
    }

    /// Reads and verifies checkpoint `id`.
    pub fn load(&self, id: u64) -> Result<(Manifest, Snapshot), CheckpointError> {
        let damaged = |e: String| CheckpointError::Damaged(e);
        let text = self
            .checkpoints
            .read(id, "manifest.json")
            .map_err(|e| damaged(format!("manifest.json: {}", e.message)))?;
        let manifest: Manifest = serde_json::from_slice(&text)
            .map_err(|e| damaged(format!("manifest.json is not valid: {e}")))?;
        format::check_format(&manifest.format, manifest.format_version)?;
        let mut subtasks = Vec::new();
        for f in &manifest.files {
            let bytes = self
                .checkpoints
                .read(id, &f.name)
                .map_err(|e| damaged(format!("{}: {}", f.name, e.message)))?;
            subtasks.push(format::decode_state(f, &bytes)?);
        }
        let snapshot = manifest.snapshot(subtasks);
        Ok((manifest, snapshot))
    }

    /// The newest intact checkpoint, with a note for every damaged newer one.
    pub fn latest(&self) -> (Option<(Manifest, Snapshot)>, Vec<String>) {
        let mut damaged = Vec::new();
        for id in self.ids().into_iter().rev() {
            match self.load(id) {
                Ok(found) => return (Some(found), damaged),
                Err(e) => damaged.push(format!("checkpoint `chk-{id}` is damaged ({e})")),
            }
        }
        (None, damaged)
    }

    /// Opens `printed`, where the job keeps how many output lines stdout
    /// has received, so a restored job does not print them again.
    pub fn printed_file(&self) -> Result<std::fs::File, CheckpointError> {
        let mut options = cap_std::fs::OpenOptions::new();
        options.create(true).read(true).write(true);
        self.local
            .dir()
            .open_with("printed", &options)
            .map(|f| f.into_std())
            .map_err(|e| self.local_err("open", "printed", &e))
    }

    /// Lines stdout has received, as `printed` records it.
    pub fn printed(&self) -> u64 {
        self.local
            .dir()
            .read("printed")
            .ok()
            .and_then(|b| b.get(..8).and_then(|b| b.try_into().ok()))
            .map(u64::from_le_bytes)
            .unwrap_or(0)
    }

    /// Appends a skipped record number to `skipped` and syncs it.
    pub fn add_skipped(&self, seq: u64) -> Result<(), CheckpointError> {
        let mut options = cap_std::fs::OpenOptions::new();
        options.create(true).append(true);
        let mut f = self
            .local
            .dir()
            .open_with("skipped", &options)
            .map_err(|e| self.local_err("open", "skipped", &e))?;
        writeln!(f, "{seq}")
            .and_then(|()| f.sync_data())
            .map_err(|e| self.local_err("write", "skipped", &e))
    }

    /// Record numbers in `skipped`.
    pub fn skipped(&self) -> Vec<u64> {
        self.local
            .dir()
            .read_to_string("skipped")
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    fn local_err(&self, what: &'static str, name: &str, e: &std::io::Error) -> CheckpointError {
        StorageError::io(what, self.path().join(name).display().to_string(), e).into()
    }
}
