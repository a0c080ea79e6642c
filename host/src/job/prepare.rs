//! Preparing a job: its id and directory, its source (journaled if it
//! cannot replay), and, for `--restore`, the checkpoint it resumes from —
//! or its start, when no checkpoint completed — with every check a user
//! can get wrong before any record flows.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use crate::checkpoint::restore::resolve_restore;
use crate::checkpoint::{self, CheckpointError, JobRecord, Snapshot, SourcePosition, Store};
use crate::config::JobSpec;
use crate::connector::journaled::Journaled;
use crate::connector::{self, Resume, Source};
use crate::error::Error;
use crate::wasm::Module;

/// A job ready to run: its id, its checkpoint directory and, when it is
/// resumed, the checkpoint it starts from.
pub struct Prepared {
    pub(crate) id: String,
    pub(crate) store: Store,
    pub(crate) source: Arc<dyn Source>,
    /// The journal's directory, for a source that cannot replay.
    pub(crate) journal: Option<PathBuf>,
    pub(crate) restored: Option<Snapshot>,
    /// Where a restored job's output continues.
    pub(crate) resume: Option<Resume>,
    /// Where a restored job's side outputs continue, by tag - 1.
    pub(crate) side_resume: Vec<Resume>,
    pub(crate) notes: Vec<String>,
    /// The checkpoint's own source, when the job is restored onto another.
    pub(crate) source_changed: Option<String>,
    pub(crate) skipped: BTreeSet<u64>,
    pub(crate) live_start: SourcePosition,
    pub(crate) replay: Option<(SourcePosition, u64)>,
    pub(crate) next_checkpoint: u64,
}

impl Prepared {
    /// The job's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The job's checkpoint directory.
    pub fn dir(&self) -> &std::path::Path {
        self.store.path()
    }
}

/// `path`, absolute (the working directory's), when it names a file.
fn absolute(path: &std::path::Path) -> Option<PathBuf> {
    if path.as_os_str().is_empty() {
        return None;
    }
    std::path::absolute(path).ok()
}

/// The job's source, wrapped in the journal when it cannot replay, and the
/// journal's directory then. It is checked (a file that is there) before
/// anything of the job is created.
fn open_source(spec: &JobSpec, store: &Store) -> Result<(Arc<dyn Source>, Option<PathBuf>), Error> {
    let source = connector::source(&spec.source, &spec.env)?;
    source.check()?;
    if source.replayable() {
        return Ok((source, None));
    }
    let dir = store.path().join("journal");
    Ok((Arc::new(Journaled::new(source, dir.clone())), Some(dir)))
}

/// Sets up the job's checkpoint directory, or finds and checks the
/// checkpoint to resume from (`--restore`). Errors are the user's to fix.
pub fn prepare(module: &Module, spec: &JobSpec) -> Result<Prepared, Error> {
    let Some(restore) = &spec.restore else {
        return prepare_new(module, spec);
    };
    let (dir, id) = resolve_restore(restore, &spec.checkpoint_dir)?;
    let store = Store::open(&dir)?;
    store.clean_in_progress();
    let (point, notes) = restore_point(&store, &dir, id)?;
    check_restore(&point, module, spec)?;
    let (source, journal) = open_source(spec, &store)?;
    let side = side_resume(spec, &point)?;
    let snapshot = point.snapshot;
    let mut skipped: BTreeSet<u64> = snapshot.skipped.iter().copied().collect();
    skipped.extend(store.skipped());
    let source_changed = (point.source != spec.source).then(|| point.source.clone());
    let resumption = if source_changed.is_none() {
        source.resume(snapshot.source)?
    } else {
        // `--allow-source-change` (check_restore refuses it otherwise): the
        // new source from its beginning, record numbers going on.
        let live = SourcePosition {
            seq: snapshot.source.seq,
            offset: 0,
        };
        connector::Resumption { live, replay: None }
    };
    let next_checkpoint = store
        .ids()
        .last()
        .copied()
        .unwrap_or(0)
        .max(point.checkpoint_id)
        + 1;
    let resume = Resume {
        previous: point.sink,
        position: snapshot.sink,
    };
    connector::check_resume(&spec.sink, &spec.env, &resume)?;
    Ok(Prepared {
        id: point.job_id,
        store,
        source,
        journal,
        side_resume: side,
        resume: Some(resume),
        restored: Some(snapshot),
        notes,
        source_changed,
        skipped,
        live_start: resumption.live,
        replay: resumption.replay,
        next_checkpoint,
    })
}

fn prepare_new(module: &Module, spec: &JobSpec) -> Result<Prepared, Error> {
    connector::source(&spec.source, &spec.env)?.check()?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let store = Store::open(&spec.checkpoint_dir.join(&id))?;
    store.write_job(&JobRecord {
        format: checkpoint::FORMAT.into(),
        format_version: checkpoint::FORMAT_VERSION,
        job_id: id.clone(),
        job_name: spec.name.clone(),
        created_at_ms: super::now_ms(),
        module_digest: module.digest().to_string(),
        max_parallelism: spec.max_parallelism,
        source: spec.source.clone(),
        sink: spec.sink.clone(),
        module: absolute(&spec.module_path),
        settings: match std::env::current_dir() {
            Ok(cwd) if spec.env.root.is_none() => spec.settings.clone().rebased(&cwd),
            _ => spec.settings.clone(),
        },
    })?;
    let (source, journal) = open_source(spec, &store)?;
    Ok(Prepared {
        id,
        store,
        source,
        journal,
        restored: None,
        resume: None,
        side_resume: Vec::new(),
        notes: Vec::new(),
        source_changed: None,
        skipped: BTreeSet::new(),
        live_start: SourcePosition::default(),
        replay: None,
        next_checkpoint: 1,
    })
}

/// What a restore starts from: a checkpoint, or the job's start when none
/// completed.
struct RestorePoint {
    job_id: String,
    checkpoint_id: u64,
    module_digest: String,
    max_parallelism: u32,
    aggregation: Option<String>,
    source: String,
    sink: String,
    /// The side outputs' sinks, by tag - 1 (a checkpoint's).
    side_sinks: Vec<String>,
    snapshot: Snapshot,
}

/// The checkpoint `id` of the job in `dir`, or its newest intact one, or,
/// when the job never completed a checkpoint, its start.
fn restore_point(
    store: &Store,
    dir: &std::path::Path,
    id: Option<u64>,
) -> Result<(RestorePoint, Vec<String>), CheckpointError> {
    let (found, notes) = match id {
        Some(id) => (
            Some(store.load(id).map_err(|e| {
                CheckpointError::Restore(format!(
                    "checkpoint `{}` is damaged ({e}); restore another one",
                    dir.join(format!("chk-{id}")).display()
                ))
            })?),
            Vec::new(),
        ),
        None => store.latest(),
    };
    if let Some((m, snapshot)) = found {
        let point = RestorePoint {
            job_id: m.job_id,
            checkpoint_id: m.checkpoint_id,
            module_digest: m.module_digest,
            max_parallelism: m.max_parallelism,
            aggregation: Some(m.aggregation),
            source: m.source.uri,
            sink: m.sink.uri,
            side_sinks: m.side_sinks.into_iter().map(|s| s.uri).collect(),
            snapshot,
        };
        return Ok((point, notes));
    }
    let record = match store.job()? {
        Some(record) if notes.is_empty() => record,
        _ => {
            let mut message = format!("no intact checkpoint to restore in `{}`", dir.display());
            for n in &notes {
                message.push_str(&format!("; {n}"));
            }
            if notes.is_empty() {
                message.push_str(": it is not a job directory (it has no `job.json`); pass a job's directory, `chk-N` or `latest`");
            }
            return Err(CheckpointError::Restore(message));
        }
    };
    let point = RestorePoint {
        job_id: record.job_id,
        checkpoint_id: 0,
        module_digest: record.module_digest,
        max_parallelism: record.max_parallelism,
        aggregation: None,
        source: record.source,
        sink: record.sink,
        side_sinks: Vec::new(),
        snapshot: Snapshot::default(),
    };
    Ok((point, notes))
}

/// Where each side output of a restored job continues: after its
/// checkpoint's position, in its sink then (a job restored from its start:
/// from nothing, in this job's sinks).
fn side_resume(spec: &JobSpec, point: &RestorePoint) -> Result<Vec<Resume>, Error> {
    let mut resumes = Vec::new();
    for (tag, (_, uri)) in spec.side_sinks.iter().enumerate() {
        let resume = Resume {
            previous: point
                .side_sinks
                .get(tag)
                .cloned()
                .unwrap_or_else(|| uri.clone()),
            position: point
                .snapshot
                .side_sinks
                .get(tag)
                .copied()
                .unwrap_or_default(),
        };
        connector::check_resume(uri, &spec.env, &resume)?;
        resumes.push(resume);
    }
    Ok(resumes)
}

/// Refuses a restore that cannot work with this module and these settings.
fn check_restore(
    point: &RestorePoint,
    module: &Module,
    spec: &JobSpec,
) -> Result<(), CheckpointError> {
    let what = match point.checkpoint_id {
        0 => "the job".to_string(),
        id => format!("checkpoint `chk-{id}`"),
    };
    let refuse = |m: String| Err(CheckpointError::Restore(m));
    if point.module_digest != module.digest() && !spec.allow_module_change {
        return refuse(format!(
            "{what} was taken with another module (xxh3:{}, this one is xxh3:{}); \
             pass --allow-module-change to restore it anyway",
            point.module_digest,
            module.digest()
        ));
    }
    if point.max_parallelism != spec.max_parallelism {
        return refuse(format!(
            "{what} has {} key groups; pass --max-parallelism {}",
            point.max_parallelism, point.max_parallelism
        ));
    }
    if point.source != spec.source && !spec.allow_source_change {
        return refuse(format!(
            "{what} is of source `{}`, not `{}`: restore it with `--source {}`, \
             or pass --allow-source-change to read `{}` from its beginning with the checkpoint's state",
            point.source, spec.source, point.source, spec.source
        ));
    }
    let aggregation = spec
        .aggregation
        .map_or_else(|| "none".to_string(), |a| a.to_string());
    if let Some(kept) = &point.aggregation
        && *kept != aggregation
        && !spec.allow_module_change
    {
        return refuse(format!(
            "{what} holds the state of aggregation `{kept}`, not `{aggregation}`; \
             restore it with `--aggregate {kept}`"
        ));
    }
    if spec.parallelism > point.max_parallelism {
        return refuse(format!(
            "parallelism {} is more than the {} key groups of {what}",
            spec.parallelism, point.max_parallelism
        ));
    }
    Ok(())
}
