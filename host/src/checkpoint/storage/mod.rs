//! Where checkpoints are kept: a trait over the few operations a checkpoint
//! needs, so that local disk (`local.rs`, through cap-std) and object
//! storage can sit behind the same format and code. A checkpoint is written
//! whole or not at all: its manifest goes last, atomically, and nothing
//! without a manifest counts as a checkpoint.

pub mod local;

/// A failed storage operation: the environment's fault (a disk, a server).
#[derive(Debug, thiserror::Error)]
#[error("cannot {what} `{location}`: {message}")]
pub struct StorageError {
    /// What was being done (`write`, `read`, `list`, ...).
    pub what: &'static str,
    /// The object or file, as the user would find it.
    pub location: String,
    /// What went wrong.
    pub message: String,
    /// The object does not exist.
    pub not_found: bool,
}

impl StorageError {
    pub(crate) fn io(what: &'static str, location: String, e: &std::io::Error) -> Self {
        StorageError {
            what,
            location,
            message: e.to_string(),
            not_found: e.kind() == std::io::ErrorKind::NotFound,
        }
    }
}

/// The checkpoints of one job: `chk-N` (files with a manifest written last)
/// and the job's `job.json`.
pub trait CheckpointStorage: Send + Sync {
    /// Where the job's checkpoints are, for messages (a directory, a URL).
    fn location(&self) -> String;

    /// Ids of the complete checkpoints (with a manifest), oldest first.
    fn ids(&self) -> Result<Vec<u64>, StorageError>;

    /// Writes checkpoint `id`: every file of `files`, then `manifest`, so
    /// that the checkpoint exists only once it is whole.
    fn write(
        &self,
        id: u64,
        files: &[(String, Vec<u8>)],
        manifest: &[u8],
    ) -> Result<(), StorageError>;

    /// Reads file `name` of checkpoint `id` (`manifest.json` included).
    fn read(&self, id: u64, name: &str) -> Result<Vec<u8>, StorageError>;

    /// When checkpoint `id`'s manifest was written (Unix ms), if known.
    fn modified(&self, id: u64) -> Option<u64>;

    /// Removes checkpoint `id`.
    fn remove(&self, id: u64) -> Result<(), StorageError>;

    /// Removes what a crash left of checkpoints being written.
    fn clean_in_progress(&self);

    /// Writes `job.json`.
    fn put_job(&self, bytes: &[u8]) -> Result<(), StorageError>;

    /// Reads `job.json`; `Ok(None)` when there is none.
    fn get_job(&self) -> Result<Option<Vec<u8>>, StorageError>;

    /// When `job.json` was written (Unix ms), if known.
    fn job_modified(&self) -> Option<u64>;

    /// Removes `job.json`.
    fn remove_job(&self);
}
