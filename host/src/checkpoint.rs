//! Checkpoints: the on-disk format, crash-safe writing, retention, and
//! finding the newest intact checkpoint to restore from.
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
//! batch encoding of `wit/stream.wit`. All integers are little-endian.
//! Because state is stored by key group, a checkpoint restores at any
//! parallelism up to the max parallelism.
//!
//! Writing is crash-safe: files go into `.chk-N.inprogress/`, each is
//! fsynced, the manifest goes last, the directory is renamed to `chk-N`
//! and the job directory fsynced. A checkpoint whose manifest or files do
//! not check out is reported and skipped in favour of the next older one.
//! All checkpoint I/O goes through a `cap_std::fs::Dir` for the job
//! directory, so nothing is written outside it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use serde::{Deserialize, Serialize};

/// The manifest's `format` field.
pub const FORMAT: &str = "sluice-checkpoint";
/// The current format version.
pub const FORMAT_VERSION: u32 = 1;

/// A position in the input: records read and bytes consumed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePosition {
    /// Records read (the next record's number, 0-based).
    pub seq: u64,
    /// Bytes consumed, of the file or of the journal.
    pub offset: u64,
}

/// A position in the output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkPosition {
    /// Lines written.
    pub lines: u64,
    /// Bytes written.
    pub bytes: u64,
}

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
    /// Key-group state, by subtask (each subtask's groups in order).
    pub subtasks: Vec<Vec<GroupState>>,
}

impl Snapshot {
    /// Keys held.
    pub fn keys(&self) -> u64 {
        self.subtasks.iter().flatten().map(|g| g.keys).sum()
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
}

/// A job's checkpoint directory.
pub struct Store {
    path: PathBuf,
    dir: Dir,
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> String {
    format!("cannot {what} `{}`: {e}", path.display())
}

impl Store {
    /// Opens (creating it if needed) the job directory `path`.
    pub fn open(path: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(path).map_err(|e| {
            format!(
                "cannot create the checkpoint directory `{}`: {e}; pass a writable --checkpoint-dir",
                path.display()
            )
        })?;
        let dir = Dir::open_ambient_dir(path, ambient_authority())
            .map_err(|e| io_err(path, "open the checkpoint directory", e))?;
        Ok(Store {
            path: path.to_owned(),
            dir,
        })
    }

    /// The job directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Ids of the completed checkpoints present, oldest first.
    pub fn ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .dir
            .entries()
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_prefix("chk-"))
                    .and_then(|n| n.parse().ok())
            })
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Writes a checkpoint crash-safely and returns its manifest.
    pub fn write(&self, info: &JobInfo, snapshot: &Snapshot) -> Result<Manifest, String> {
        let tmp = format!(".chk-{}.inprogress", snapshot.id);
        let shown = self.path.join(&tmp);
        let _ = self.dir.remove_dir_all(&tmp);
        self.dir
            .create_dir(&tmp)
            .map_err(|e| io_err(&shown, "create", e))?;
        let sub = self
            .dir
            .open_dir(&tmp)
            .map_err(|e| io_err(&shown, "open", e))?;
        let mut files = Vec::new();
        for (subtask, groups) in snapshot.subtasks.iter().enumerate() {
            let name = format!("state-{subtask}.bin");
            let mut bytes = Vec::new();
            let mut keys = 0;
            for g in groups {
                bytes.extend_from_slice(&g.group.to_le_bytes());
                bytes.extend_from_slice(&g.keys.to_le_bytes());
                bytes.extend_from_slice(&(g.bytes.len() as u64).to_le_bytes());
                bytes.extend_from_slice(&g.bytes);
                keys += g.keys;
            }
            write_synced(&sub, &name, &bytes)
                .map_err(|e| io_err(&shown.join(&name), "write", e))?;
            let range = match (groups.first(), groups.last()) {
                (Some(first), Some(last)) => [first.group, last.group + 1],
                _ => [0, 0],
            };
            files.push(FileEntry {
                name,
                key_groups: range,
                keys,
                bytes: bytes.len() as u64,
                xxh3: format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes)),
            });
        }
        let manifest = Manifest {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            job_id: info.job_id.clone(),
            job_name: info.job_name.clone(),
            checkpoint_id: snapshot.id,
            created_at_ms: snapshot.created_at_ms,
            module_digest: info.module_digest.clone(),
            wit_version: crate::guest::WIT_PACKAGE.into(),
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
        };
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())?;
        write_synced(&sub, "manifest.json", &json)
            .map_err(|e| io_err(&shown.join("manifest.json"), "write", e))?;
        sync_dir(&sub).map_err(|e| io_err(&shown, "sync", e))?;
        let name = format!("chk-{}", snapshot.id);
        self.dir
            .rename(&tmp, &self.dir, &name)
            .map_err(|e| io_err(&self.path.join(&name), "rename into", e))?;
        sync_dir(&self.dir).map_err(|e| io_err(&self.path, "sync", e))?;
        Ok(manifest)
    }

    /// Writes `job.json` (crash-safely).
    pub fn write_job(&self, record: &JobRecord) -> Result<(), String> {
        let json = serde_json::to_vec_pretty(record).map_err(|e| e.to_string())?;
        let tmp = "job.json.tmp";
        write_synced(&self.dir, tmp, &json)
            .and_then(|()| self.dir.rename(tmp, &self.dir, "job.json"))
            .and_then(|()| sync_dir(&self.dir))
            .map_err(|e| io_err(&self.path.join("job.json"), "write", e))
    }

    /// Reads `job.json`; `Ok(None)` when the directory has none.
    pub fn job(&self) -> Result<Option<JobRecord>, String> {
        let bytes = match self.dir.read("job.json") {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&self.path.join("job.json"), "read", e)),
        };
        let record: JobRecord = serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "`{}` is not valid: {e}",
                self.path.join("job.json").display()
            )
        })?;
        if record.format != FORMAT || record.format_version != FORMAT_VERSION {
            return Err(format!(
                "`{}` has format `{}` version {}, not one this host reads ({FORMAT} {FORMAT_VERSION})",
                self.path.join("job.json").display(),
                record.format,
                record.format_version
            ));
        }
        Ok(Some(record))
    }

    /// Removes completed checkpoints beyond the newest `retain`; returns
    /// the oldest kept id.
    pub fn retain(&self, retain: usize) -> Option<u64> {
        let ids = self.ids();
        let cut = ids.len().saturating_sub(retain.max(1));
        for id in &ids[..cut] {
            let _ = self.dir.remove_dir_all(format!("chk-{id}"));
        }
        ids.get(cut).copied()
    }

    /// Removes in-progress leftovers of a crash.
    pub fn clean_in_progress(&self) {
        for entry in self.dir.entries().into_iter().flatten().flatten() {
            let name = entry.file_name();
            if let Some(n) = name.to_str()
                && n.starts_with(".chk-")
                && n.ends_with(".inprogress")
            {
                let _ = self.dir.remove_dir_all(n);
            }
        }
    }

    /// Removes every checkpoint and the journal (a finished or cancelled job
    /// that does not retain them); the dead-letter file stays.
    pub fn remove_checkpoints(&self) {
        for id in self.ids() {
            let _ = self.dir.remove_dir_all(format!("chk-{id}"));
        }
        self.clean_in_progress();
        let _ = self.dir.remove_dir_all("journal");
        let _ = self.dir.remove_file("skipped");
        let _ = self.dir.remove_file("printed");
        let _ = self.dir.remove_file("job.json");
    }

    /// Reads and verifies checkpoint `id`.
    pub fn load(&self, id: u64) -> Result<(Manifest, Snapshot), String> {
        load_dir(
            &self.dir,
            &self.path.join(format!("chk-{id}")),
            &format!("chk-{id}"),
        )
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
    pub fn printed_file(&self) -> Result<std::fs::File, String> {
        let mut options = cap_std::fs::OpenOptions::new();
        options.create(true).read(true).write(true);
        self.dir
            .open_with("printed", &options)
            .map(|f| f.into_std())
            .map_err(|e| io_err(&self.path.join("printed"), "open", e))
    }

    /// Lines stdout has received, as `printed` records it.
    pub fn printed(&self) -> u64 {
        self.dir
            .read("printed")
            .ok()
            .and_then(|b| {
                b.get(..8)
                    .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
            })
            .unwrap_or(0)
    }

    /// Appends a skipped record number to `skipped` and syncs it.
    pub fn add_skipped(&self, seq: u64) -> Result<(), String> {
        let mut options = cap_std::fs::OpenOptions::new();
        options.create(true).append(true);
        let mut f = self
            .dir
            .open_with("skipped", &options)
            .map_err(|e| io_err(&self.path.join("skipped"), "open", e))?;
        writeln!(f, "{seq}")
            .and_then(|()| f.sync_data())
            .map_err(|e| io_err(&self.path.join("skipped"), "write", e))
    }

    /// Record numbers in `skipped`.
    pub fn skipped(&self) -> Vec<u64> {
        self.dir
            .read_to_string("skipped")
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }
}

fn write_synced(dir: &Dir, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = dir.create(name)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn sync_dir(dir: &Dir) -> std::io::Result<()> {
    dir.open(".")?.sync_all()
}

fn load_dir(parent: &Dir, shown: &Path, name: &str) -> Result<(Manifest, Snapshot), String> {
    let dir = parent
        .open_dir(name)
        .map_err(|e| io_err(shown, "open", e))?;
    let text = dir
        .read("manifest.json")
        .map_err(|e| format!("manifest.json: {e}"))?;
    let manifest: Manifest =
        serde_json::from_slice(&text).map_err(|e| format!("manifest.json is not valid: {e}"))?;
    if manifest.format != FORMAT || manifest.format_version != FORMAT_VERSION {
        return Err(format!(
            "format `{}` version {} is not one this host reads ({FORMAT} {FORMAT_VERSION})",
            manifest.format, manifest.format_version
        ));
    }
    let mut subtasks = Vec::new();
    for f in &manifest.files {
        let mut bytes = Vec::new();
        dir.open(&f.name)
            .and_then(|mut file| file.read_to_end(&mut bytes))
            .map_err(|e| format!("{}: {e}", f.name))?;
        if bytes.len() as u64 != f.bytes {
            return Err(format!(
                "{} is {} bytes, the manifest says {}",
                f.name,
                bytes.len(),
                f.bytes
            ));
        }
        let sum = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes));
        if sum != f.xxh3 {
            return Err(format!("{} fails its checksum", f.name));
        }
        subtasks.push(parse_groups(&bytes).map_err(|e| format!("{}: {e}", f.name))?);
    }
    let snapshot = Snapshot {
        id: manifest.checkpoint_id,
        created_at_ms: manifest.created_at_ms,
        source: manifest.source.position,
        sink: manifest.sink.position,
        skipped: manifest.skipped_records.clone(),
        subtasks,
    };
    Ok((manifest, snapshot))
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

/// The job directory in `checkpoint_dir` that was active last: by the time
/// of its newest completed checkpoint, or, for a job that never completed
/// one, of its `job.json` (it then resumes from its start).
fn latest_job(checkpoint_dir: &Path) -> Result<PathBuf, String> {
    let modified = |path: &Path| {
        std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64)
    };
    let entries = std::fs::read_dir(checkpoint_dir).map_err(|e| {
        format!(
            "no checkpoints to restore in `{}`: {e}; pass --checkpoint-dir where the job kept them",
            checkpoint_dir.display()
        )
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
        let times = store
            .ids()
            .into_iter()
            .filter_map(|id| modified(&path.join(format!("chk-{id}")).join("manifest.json")))
            .chain(modified(&path.join("job.json")));
        if let Some(t) = times.max()
            && best.as_ref().is_none_or(|(b, _)| t > *b)
        {
            best = Some((t, path));
        }
    }
    best.map(|(_, p)| p).ok_or_else(|| {
        format!(
            "no job to restore in `{}`: it holds no checkpoint and no job started there; \
             pass --checkpoint-dir where the job kept them",
            checkpoint_dir.display()
        )
    })
}

/// Resolves `--restore latest|PATH` to a job directory and, for a
/// `chk-N` path, the checkpoint id.
pub fn resolve_restore(arg: &str, checkpoint_dir: &Path) -> Result<(PathBuf, Option<u64>), String> {
    if arg == "latest" {
        return latest_job(checkpoint_dir).map(|p| (p, None));
    }
    let path = PathBuf::from(arg);
    if path.join("manifest.json").exists() {
        let id = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("chk-"))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("`{arg}` is not a `chk-N` checkpoint directory"))?;
        let parent = path
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| format!("`{arg}` has no job directory"))?;
        return Ok((parent, Some(id)));
    }
    if path.is_dir() {
        return Ok((path, None));
    }
    Err(format!(
        "`{arg}` is not a checkpoint; pass `latest` or a `chk-N` or job directory"
    ))
}
