//! The checkpoint format, documented in this one place: the layout, the
//! manifest, `job.json`, and the encoding of state files.
//!
//! # Layout (format version 1)
//!
//! ```text
//! CHECKPOINT_DIR/                 --checkpoint-dir (default sluice-checkpoints/JOB_NAME)
//!   JOB_ID/                       one directory per job; a restored job continues in it
//!     chk-N/                      a completed checkpoint (N counts up from 1)
//!       manifest.json             written last: what the checkpoint holds
//!       state-S.bin               keyed state of the key groups subtask S owned
//!     .chk-N.inprogress/          a checkpoint being written (ignored, removed on restore)
//!     job.json                    the job as it started: id, name, module digest, source, sink
//!     journal/seg-OFFSET.log      socket and stdin input since the oldest retained checkpoint
//!     skipped                     record numbers that failed and are never replayed, one per line
//!     dead-letter.jsonl           the failed records (default --dead-letter)
//! ```
//!
//! `manifest.json` holds the format version, the job's id and name, the
//! checkpoint id and time, the module's digest, the WIT version, the
//! parallelism and max parallelism, the aggregation, the source position
//! (`seq`: records read; `offset`: bytes of the file or journal consumed),
//! the sink position (`lines` and `bytes` written), the records skipped so
//! far, and for every state file its name, key-group range, key count, size
//! and xxh3 checksum.
//!
//! A state file is a sequence of key-group blocks; a block is
//! `u32 key-group, u64 keys, u64 length, entry{keys}` and an entry is
//! `u32 key-length, key, u32 row-length, row`, where key and row are in the
//! batch encoding of `wit/sluice-stream@0.1.0/stream.wit`. All integers are little-endian.
//! Because state is stored by key group, a checkpoint restores at any
//! parallelism up to the max parallelism.
//!
//! Writing is crash-safe: files go into `.chk-N.inprogress/`, each is
//! fsynced, the manifest goes last, the directory is renamed to `chk-N`
//! and the job directory fsynced. A checkpoint whose manifest or files do
//! not check out is reported and skipped in favour of the next older one.
//! All checkpoint I/O goes through a `cap_std::fs::Dir` for the job
//! directory, so nothing is written outside it.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::checkpoint::CheckpointError;
pub use crate::connector::position::{SinkPosition, SourcePosition};

/// The manifest's `format` field.
pub const FORMAT: &str = "sluice-checkpoint";
/// The current format version.
pub const FORMAT_VERSION: u32 = 1;

/// The state of one key group, encoded.
#[derive(Debug, Clone)]
pub struct GroupState {
    /// The key group.
    pub group: u32,
    /// Keys in it.
    pub keys: u64,
    /// `entry*` as the module docs describe: the live key group's own
    /// storage, shared until the group next changes (copy on write).
    pub bytes: Arc<Vec<u8>>,
}

/// Everything a checkpoint holds, in memory.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Checkpoint id.
    pub id: u64,
    /// When it was taken (Unix ms).
    pub created_at_ms: u64,
    /// Where the source was.
    pub source: SourcePosition,
    /// Where the sink was.
    pub sink: SinkPosition,
    /// Records skipped so far.
    pub skipped: Vec<u64>,
    /// Key-group state, by subtask (each subtask's groups in order), with
    /// the stage each file is of (`None`: the job's only stateful stage).
    pub subtasks: Vec<Vec<GroupState>>,
    /// The stage of each of `subtasks` (0.2.0 pipelines; empty otherwise).
    pub stages: Vec<Option<u32>>,
    /// The event-time watermark (0.2.0 pipelines).
    pub watermark: Option<i64>,
    /// The largest timestamp seen (0.2.0 pipelines).
    pub max_timestamp: Option<i64>,
    /// Where each side output's sink was (0.2.0 pipelines), by tag - 1.
    pub side_sinks: Vec<SinkPosition>,
}

impl Snapshot {
    /// Keys held.
    pub fn keys(&self) -> u64 {
        self.subtasks.iter().flatten().map(|g| g.keys).sum()
    }

    /// The key groups of stage `stage` (and, when `only` — the stage is the
    /// job's only stateful one — those of files that name no stage).
    pub fn groups_of(&self, stage: u32, only: bool) -> Vec<GroupState> {
        self.subtasks
            .iter()
            .enumerate()
            .filter(|(i, _)| match self.stages.get(*i).copied().flatten() {
                Some(s) => s == stage,
                None => only,
            })
            .flat_map(|(_, groups)| groups.iter().cloned())
            .collect()
    }
}

/// One state file in the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileEntry {
    /// File name inside the checkpoint directory.
    pub name: String,
    /// Key groups `[start, end)`.
    pub key_groups: [u32; 2],
    /// Keys in the file.
    pub keys: u64,
    /// File size in bytes.
    pub bytes: u64,
    /// xxh3-64 of the file, hex.
    pub xxh3: String,
    /// The stage whose state it holds (0.2.0 pipelines; absent: the job's
    /// only stateful stage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<u32>,
}

/// Source details in the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceEntry {
    /// The source URI.
    pub uri: String,
    /// Position.
    #[serde(flatten)]
    pub position: SourcePosition,
}

/// Sink details in the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SinkEntry {
    /// The sink URI.
    pub uri: String,
    /// Position.
    #[serde(flatten)]
    pub position: SinkPosition,
}

/// `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The job's id.
    pub job_id: String,
    /// The job's name.
    pub job_name: String,
    /// Checkpoint id.
    pub checkpoint_id: u64,
    /// When it was taken (Unix ms).
    pub created_at_ms: u64,
    /// xxh3 of the module's bytes.
    pub module_digest: String,
    /// The WIT package the module was run against.
    pub wit_version: String,
    /// Subtasks when it was taken.
    pub parallelism: u32,
    /// Key groups.
    pub max_parallelism: u32,
    /// `sum:1`, ... or `none`.
    pub aggregation: String,
    /// Source position.
    pub source: SourceEntry,
    /// Sink position.
    pub sink: SinkEntry,
    /// Record numbers never to replay (0-based).
    pub skipped_records: Vec<u64>,
    /// Keys in all files.
    pub keys: u64,
    /// State files.
    pub files: Vec<FileEntry>,
    /// The event-time watermark (0.2.0 pipelines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<i64>,
    /// The largest timestamp seen (0.2.0 pipelines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_timestamp: Option<i64>,
    /// The side outputs' sinks (0.2.0 pipelines), by tag - 1.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub side_sinks: Vec<SinkEntry>,
}

/// What the manifest says about the job, besides the snapshot itself.
#[derive(Debug, Clone)]
pub struct JobInfo {
    /// Job id.
    pub job_id: String,
    /// Job name.
    pub job_name: String,
    /// Module digest.
    pub module_digest: String,
    /// The WIT package the module implements.
    pub wit_version: String,
    /// Parallelism.
    pub parallelism: u32,
    /// Key groups.
    pub max_parallelism: u32,
    /// Aggregation as text.
    pub aggregation: String,
    /// Source URI.
    pub source_uri: String,
    /// Sink URI.
    pub sink_uri: String,
    /// The side outputs' sink URIs, by tag - 1.
    pub side_sink_uris: Vec<String>,
}

/// `job.json`: the job as it started, written before any record flows, so
/// that a job whose first checkpoint never completed can be resumed from
/// its start (and its journal).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The job's id.
    pub job_id: String,
    /// The job's name.
    pub job_name: String,
    /// When it started (Unix ms).
    pub created_at_ms: u64,
    /// xxh3 of the module's bytes.
    pub module_digest: String,
    /// Key groups.
    pub max_parallelism: u32,
    /// The source URI.
    pub source: String,
    /// The sink URI.
    pub sink: String,
    /// The module the job ran, so `--restore JOB_DIR` needs no `--module`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<std::path::PathBuf>,
    /// The settings it was given (flags and file; relative paths made
    /// absolute), so `--restore JOB_DIR` alone resumes it as it was.
    #[serde(default)]
    pub settings: crate::config::settings::Settings,
}

/// Encodes one subtask's key groups as a state file (see the module docs),
/// with its manifest entry.
pub fn encode_state(name: String, groups: &[GroupState]) -> (Vec<u8>, FileEntry) {
    let mut bytes = Vec::new();
    let mut keys = 0;
    for g in groups {
        bytes.extend_from_slice(&g.group.to_le_bytes());
        bytes.extend_from_slice(&g.keys.to_le_bytes());
        bytes.extend_from_slice(&(g.bytes.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&g.bytes);
        keys += g.keys;
    }
    let range = match (groups.first(), groups.last()) {
        (Some(first), Some(last)) => [first.group, last.group + 1],
        _ => [0, 0],
    };
    let entry = FileEntry {
        name,
        key_groups: range,
        keys,
        bytes: bytes.len() as u64,
        xxh3: checksum(&bytes),
        stage: None,
    };
    (bytes, entry)
}

/// The checksum the manifest records for a file.
pub fn checksum(bytes: &[u8]) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(bytes))
}

/// Checks a state file against its manifest entry and decodes its groups.
pub fn decode_state(entry: &FileEntry, bytes: &[u8]) -> Result<Vec<GroupState>, CheckpointError> {
    decode(entry, bytes).map_err(CheckpointError::Damaged)
}

fn decode(entry: &FileEntry, bytes: &[u8]) -> Result<Vec<GroupState>, String> {
    if bytes.len() as u64 != entry.bytes {
        return Err(format!(
            "{} is {} bytes, the manifest says {}",
            entry.name,
            bytes.len(),
            entry.bytes
        ));
    }
    if checksum(bytes) != entry.xxh3 {
        return Err(format!("{} fails its checksum", entry.name));
    }
    parse_groups(bytes).map_err(|e| format!("{}: {e}", entry.name))
}

/// Refuses a manifest or job record of a format this host does not read.
pub fn check_format(format: &str, version: u32) -> Result<(), CheckpointError> {
    if format != FORMAT || version != FORMAT_VERSION {
        return Err(CheckpointError::Damaged(format!(
            "format `{format}` version {version} is not one this host reads ({FORMAT} {FORMAT_VERSION})"
        )));
    }
    Ok(())
}

fn parse_groups(bytes: &[u8]) -> Result<Vec<GroupState>, String> {
    let mut groups = Vec::new();
    let mut at = 0usize;
    let take = |at: &mut usize, n: usize| -> Result<&[u8], String> {
        let s = bytes
            .get(*at..*at + n)
            .ok_or_else(|| format!("truncated at byte {at}"))?;
        *at += n;
        Ok(s)
    };
    while at < bytes.len() {
        let group = u32::from_le_bytes(take(&mut at, 4)?.try_into().map_err(|_| "bad group")?);
        let keys = u64::from_le_bytes(take(&mut at, 8)?.try_into().map_err(|_| "bad count")?);
        let len = u64::from_le_bytes(take(&mut at, 8)?.try_into().map_err(|_| "bad length")?);
        let body = take(&mut at, len as usize)?;
        groups.push(GroupState {
            group,
            keys,
            bytes: Arc::new(body.to_vec()),
        });
    }
    Ok(groups)
}

impl Manifest {
    /// The manifest of `snapshot`, with its state files.
    pub fn new(info: &JobInfo, snapshot: &Snapshot, files: Vec<FileEntry>) -> Self {
        Manifest {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            job_id: info.job_id.clone(),
            job_name: info.job_name.clone(),
            checkpoint_id: snapshot.id,
            created_at_ms: snapshot.created_at_ms,
            module_digest: info.module_digest.clone(),
            wit_version: info.wit_version.clone(),
            parallelism: info.parallelism,
            max_parallelism: info.max_parallelism,
            aggregation: info.aggregation.clone(),
            source: SourceEntry {
                uri: info.source_uri.clone(),
                position: snapshot.source,
            },
            sink: SinkEntry {
                uri: info.sink_uri.clone(),
                position: snapshot.sink,
            },
            skipped_records: snapshot.skipped.clone(),
            keys: snapshot.keys(),
            files,
            watermark: snapshot.watermark,
            max_timestamp: snapshot.max_timestamp,
            side_sinks: info
                .side_sink_uris
                .iter()
                .zip(&snapshot.side_sinks)
                .map(|(uri, position)| SinkEntry {
                    uri: uri.clone(),
                    position: *position,
                })
                .collect(),
        }
    }

    /// The snapshot this manifest describes, with its decoded state.
    pub fn snapshot(&self, subtasks: Vec<Vec<GroupState>>) -> Snapshot {
        let stages = self.files.iter().map(|f| f.stage).collect();
        Snapshot {
            id: self.checkpoint_id,
            created_at_ms: self.created_at_ms,
            source: self.source.position,
            sink: self.sink.position,
            skipped: self.skipped_records.clone(),
            subtasks,
            stages,
            watermark: self.watermark,
            max_timestamp: self.max_timestamp,
            side_sinks: self.side_sinks.iter().map(|s| s.position).collect(),
        }
    }
}
