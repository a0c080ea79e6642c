//! Checkpoints on local disk, in the job's directory, through a
//! `cap_std::fs::Dir` so that nothing is written outside it. A checkpoint
//! is written into `.chk-N.inprogress/`, each file fsynced, the manifest
//! last, then the directory is renamed to `chk-N` and the job directory
//! fsynced.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use cap_std::fs::Dir;

use crate::checkpoint::storage::{CheckpointStorage, StorageError};

/// A job directory on local disk.
pub struct LocalStorage {
    path: PathBuf,
    dir: Dir,
}

impl LocalStorage {
    /// Opens (creating it if needed) the job directory `path`.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        std::fs::create_dir_all(path)
            .map_err(|e| StorageError::io("create the checkpoint directory", shown(path), &e))?;
        let dir = Dir::open_ambient_dir(path, cap_std::ambient_authority())
            .map_err(|e| StorageError::io("open the checkpoint directory", shown(path), &e))?;
        Ok(LocalStorage {
            path: path.to_owned(),
            dir,
        })
    }

    /// Opens the directory `path`, which must be there.
    pub fn open_existing(path: &Path) -> Result<Self, StorageError> {
        let dir = Dir::open_ambient_dir(path, cap_std::ambient_authority())
            .map_err(|e| StorageError::io("open the checkpoint directory", shown(path), &e))?;
        Ok(LocalStorage {
            path: path.to_owned(),
            dir,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory as a capability, for the job's other files.
    pub fn dir(&self) -> &Dir {
        &self.dir
    }

    fn err(&self, what: &'static str, name: &str, e: &std::io::Error) -> StorageError {
        StorageError::io(what, shown(&self.path.join(name)), e)
    }
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

/// Writes a file and fsyncs it.
pub(crate) fn write_synced(dir: &Dir, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = dir.create(name)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Fsyncs a directory, so a rename in it is durable.
pub(crate) fn sync_dir(dir: &Dir) -> std::io::Result<()> {
    dir.open(".")?.sync_all()
}

fn modified(dir: &Dir, name: &str) -> Option<u64> {
    let meta = dir.metadata(name).ok()?;
    let t = meta.modified().ok()?.into_std();
    t.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as u64)
}

impl CheckpointStorage for LocalStorage {
    fn location(&self) -> String {
        shown(&self.path)
    }

    fn ids(&self) -> Result<Vec<u64>, StorageError> {
        let entries = self.dir.entries().map_err(|e| self.err("list", "", &e))?;
        let mut ids: Vec<u64> = entries
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_prefix("chk-"))
                    .and_then(|n| n.parse().ok())
            })
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    fn write(
        &self,
        id: u64,
        files: &[(String, Vec<u8>)],
        manifest: &[u8],
    ) -> Result<(), StorageError> {
        let tmp = format!(".chk-{id}.inprogress");
        let _ = self.dir.remove_dir_all(&tmp);
        self.dir
            .create_dir(&tmp)
            .map_err(|e| self.err("create", &tmp, &e))?;
        let sub = self
            .dir
            .open_dir(&tmp)
            .map_err(|e| self.err("open", &tmp, &e))?;
        for (name, bytes) in files {
            write_synced(&sub, name, bytes)
                .map_err(|e| self.err("write", &format!("{tmp}/{name}"), &e))?;
        }
        write_synced(&sub, "manifest.json", manifest)
            .map_err(|e| self.err("write", &format!("{tmp}/manifest.json"), &e))?;
        sync_dir(&sub).map_err(|e| self.err("sync", &tmp, &e))?;
        let name = format!("chk-{id}");
        self.dir
            .rename(&tmp, &self.dir, &name)
            .map_err(|e| self.err("rename into", &name, &e))?;
        sync_dir(&self.dir).map_err(|e| self.err("sync", "", &e))
    }

    fn read(&self, id: u64, name: &str) -> Result<Vec<u8>, StorageError> {
        let path = format!("chk-{id}/{name}");
        let mut bytes = Vec::new();
        self.dir
            .open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| self.err("read", &path, &e))?;
        Ok(bytes)
    }

    fn modified(&self, id: u64) -> Option<u64> {
        modified(&self.dir, &format!("chk-{id}/manifest.json"))
    }

    fn remove(&self, id: u64) -> Result<(), StorageError> {
        let name = format!("chk-{id}");
        self.dir
            .remove_dir_all(&name)
            .map_err(|e| self.err("remove", &name, &e))
    }

    fn clean_in_progress(&self) {
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

    fn put_job(&self, bytes: &[u8]) -> Result<(), StorageError> {
        let tmp = "job.json.tmp";
        write_synced(&self.dir, tmp, bytes)
            .and_then(|()| self.dir.rename(tmp, &self.dir, "job.json"))
            .and_then(|()| sync_dir(&self.dir))
            .map_err(|e| self.err("write", "job.json", &e))
    }

    fn get_job(&self) -> Result<Option<Vec<u8>>, StorageError> {
        match self.dir.read("job.json") {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err("read", "job.json", &e)),
        }
    }

    fn job_modified(&self) -> Option<u64> {
        modified(&self.dir, "job.json")
    }

    fn remove_job(&self) {
        let _ = self.dir.remove_file("job.json");
    }

    fn children(&self) -> Result<Vec<String>, StorageError> {
        let entries = self.dir.entries().map_err(|e| self.err("list", "", &e))?;
        let mut names: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }

    fn child(&self, name: &str) -> Result<Box<dyn CheckpointStorage>, StorageError> {
        Ok(Box::new(LocalStorage::open_existing(
            &self.path.join(name),
        )?))
    }

    fn is_job(&self) -> bool {
        self.dir.exists("job.json")
            || self.dir.is_dir("journal")
            || self.ids().is_ok_and(|ids| !ids.is_empty())
    }
}
