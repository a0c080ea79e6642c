//! Where checkpoints are kept: a trait over the few operations a checkpoint
//! needs, so that local disk (`local.rs`, through cap-std) and object
//! storage over the S3 API (`s3.rs`) sit behind the same format and code,
//! and the [`Location`] a `--checkpoint-dir` names. A checkpoint is written
//! whole or not at all: its manifest goes last, atomically, and nothing
//! without a manifest counts as a checkpoint.

pub mod local;
pub mod s3;

use std::path::{Path, PathBuf};

/// Where checkpoints are kept, as `--checkpoint-dir` or `--restore` names
/// it: a local directory, or `s3://BUCKET/PREFIX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A directory on local disk.
    Local(PathBuf),
    /// A prefix (without leading or trailing `/`, maybe empty) in a bucket.
    S3 {
        /// The bucket.
        bucket: String,
        /// The prefix.
        prefix: String,
    },
}

impl Location {
    /// Parses a `--checkpoint-dir` or `--restore` value. A URI of another
    /// scheme (`gs://...`) is refused rather than taken for a directory.
    pub fn parse(value: &str) -> Result<Location, StorageError> {
        let refuse = |message: String| StorageError {
            what: "use",
            location: value.to_string(),
            message,
            not_found: false,
        };
        if let Some(rest) = value.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(refuse(
                    "it names no bucket; use `s3://BUCKET/PREFIX`".into(),
                ));
            }
            return Ok(Location::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        if let Some((scheme, _)) = value.split_once("://") {
            return Err(refuse(format!(
                "`{scheme}://` is not a checkpoint storage this host knows; use a directory or `s3://BUCKET/PREFIX`"
            )));
        }
        Ok(Location::Local(PathBuf::from(value)))
    }

    /// The location of a path setting (a `--checkpoint-dir` as `Settings`
    /// keep it).
    pub fn of_path(path: &Path) -> Result<Location, StorageError> {
        match path.to_str() {
            Some(s) => Location::parse(s),
            None => Ok(Location::Local(path.to_path_buf())),
        }
    }

    /// `name` inside this location.
    pub fn join(&self, name: &str) -> Location {
        match self {
            Location::Local(p) => Location::Local(p.join(name)),
            Location::S3 { bucket, prefix } if prefix.is_empty() => Location::S3 {
                bucket: bucket.clone(),
                prefix: name.to_string(),
            },
            Location::S3 { bucket, prefix } => Location::S3 {
                bucket: bucket.clone(),
                prefix: format!("{prefix}/{name}"),
            },
        }
    }

    /// The last part of the location (a job id, `chk-N`).
    pub fn name(&self) -> Option<&str> {
        match self {
            Location::Local(p) => p.file_name().and_then(|n| n.to_str()),
            Location::S3 { prefix, .. } => prefix.rsplit('/').next().filter(|n| !n.is_empty()),
        }
    }

    /// The location this one is in.
    pub fn parent(&self) -> Option<Location> {
        match self {
            Location::Local(p) => p.parent().map(|p| Location::Local(p.to_path_buf())),
            Location::S3 { prefix, .. } if prefix.is_empty() => None,
            Location::S3 { bucket, prefix } => Some(Location::S3 {
                bucket: bucket.clone(),
                prefix: prefix.rsplit_once('/').map_or("", |(p, _)| p).to_string(),
            }),
        }
    }

    /// The local directory, when it is one.
    pub fn local(&self) -> Option<&Path> {
        match self {
            Location::Local(p) => Some(p),
            Location::S3 { .. } => None,
        }
    }

    /// The location made absolute, when it is a relative directory.
    pub fn absolute(&self) -> Location {
        match self {
            Location::Local(p) => {
                Location::Local(std::path::absolute(p).unwrap_or_else(|_| p.clone()))
            }
            s3 => s3.clone(),
        }
    }

    /// Opens the storage here. `create`: make a local directory that is
    /// not there yet, and check that an S3 bucket is there and the
    /// credentials work.
    pub fn open(&self, create: bool) -> Result<Box<dyn CheckpointStorage>, StorageError> {
        match self {
            Location::Local(p) if create => Ok(Box::new(local::LocalStorage::open(p)?)),
            Location::Local(p) => Ok(Box::new(local::LocalStorage::open_existing(p)?)),
            Location::S3 { bucket, prefix } => {
                let storage = s3::S3Storage::open(bucket, prefix)?;
                if create {
                    storage.probe()?;
                }
                Ok(Box::new(storage))
            }
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Location::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

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

    /// Names of the locations right inside this one (job directories, in
    /// a checkpoint directory).
    fn children(&self) -> Result<Vec<String>, StorageError>;

    /// The storage at `name` inside this one.
    fn child(&self, name: &str) -> Result<Box<dyn CheckpointStorage>, StorageError>;

    /// Whether this is a job's location: it has a `job.json` or a
    /// complete checkpoint.
    fn is_job(&self) -> bool {
        self.job_modified().is_some() || self.ids().is_ok_and(|ids| !ids.is_empty())
    }
}
