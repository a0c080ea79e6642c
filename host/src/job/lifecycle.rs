//! A job's states and their log lines, Flink style: CREATED → RUNNING →
//! FINISHED / FAILED / CANCELED (with FAILING and RESTARTING on the way
//! after a failure), each line with the job's name and id and, on failure,
//! the cause; and what an ended job leaves on disk.

use tracing::{error, info, warn};

use crate::config::JobSpec;
use crate::job::JobOutcome;
use crate::job::handle::JobState;
use crate::job::prepare::Prepared;
use crate::job::runner::Runner;

/// Logs what the job is about to do: its source, sink, checkpoints, and
/// what it is restored from.
pub(super) fn log_created(job: &str, spec: &JobSpec, prepared: &Prepared) {
    info!(
        "{job} CREATED: source {}, sink {}, parallelism {}, restart {}",
        spec.source, spec.sink, spec.parallelism, spec.restart
    );
    let dir = prepared.store.path().display();
    let checkpoints = prepared.store.location();
    match spec.checkpoint_interval {
        Some(every) if checkpoints.local() == Some(prepared.store.path()) => info!(
            "{job}: checkpoints every {} ms go to `{dir}`",
            every.as_millis()
        ),
        Some(every) => info!(
            "{job}: checkpoints every {} ms go to `{checkpoints}`; the journal and dead letters to `{dir}`",
            every.as_millis()
        ),
        None => info!("{job}: checkpointing is off; the journal and dead letters go to `{dir}`"),
    }
    for note in &prepared.notes {
        warn!("{job}: {note}; falling back to an older checkpoint");
    }
    if let Some(old) = &prepared.source_changed {
        warn!(
            "{job}: the checkpoint was of source `{old}`; reading `{}` from its beginning with the checkpoint's state (--allow-source-change)",
            spec.source
        );
    }
    match &prepared.restored {
        Some(s) if s.id == 0 => info!(
            "{job}: no checkpoint of it completed: restoring from the job's start{} ({} skipped record(s))",
            if prepared.journal.is_some() {
                " and replaying its journal"
            } else {
                ", reading the source again"
            },
            prepared.skipped.len()
        ),
        Some(s) => info!(
            "{job}: restoring checkpoint `chk-{}` ({} keys, source at record {}, {} skipped record(s))",
            s.id,
            s.keys(),
            s.source.seq,
            prepared.skipped.len()
        ),
        None => {}
    }
    if prepared.recorded > 0 {
        info!(
            "{job}: the sink holds output past the checkpoint; replaying its {} run(s) of records in the order it recorded, without writing that output again",
            prepared.recorded
        );
    }
}

impl Runner<'_> {
    /// Stops the source, flushes the sink, and keeps or removes checkpoints.
    pub(super) fn finish(&mut self, outcome: &JobOutcome) {
        self.source_cancel
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.checkpoints.finish();
        if let Err(e) = self.sink.flush() {
            error!("{}: sink `{}` failed: {e}", self.job, self.spec.sink);
        }
        let job = self.job.clone();
        let dir = self.store.location().absolute().to_string();
        match outcome {
            JobOutcome::Finished => {
                self.store.remove_checkpoints();
                self.remove_empty_dirs();
                info!("{job} switched from RUNNING to FINISHED");
                self.status.set_state(JobState::Finished);
            }
            JobOutcome::Canceled if !self.spec.retain_on_cancel => {
                self.store.remove_checkpoints();
                self.remove_empty_dirs();
                info!(
                    "{job} switched from RUNNING to CANCELED; checkpoints deleted (--on-cancel delete)"
                );
                self.status.set_state(JobState::Canceled);
            }
            JobOutcome::Canceled => {
                info!(
                    "{job} switched from RUNNING to CANCELED; checkpoints kept in `{dir}`; resume with `{}`",
                    self.resume_hint()
                );
                self.status.set_state(JobState::Canceled);
            }
            JobOutcome::Failed(cause) => {
                error!("{job} switched to FAILED: {cause}");
                let kept = match self.store.ids().last() {
                    Some(id) => {
                        format!("checkpoint `chk-{id}` and the journal are kept in `{dir}`")
                    }
                    None => format!(
                        "no checkpoint completed; the journal and dead letters are in `{}`",
                        absolute_dir(self.store.path())
                    ),
                };
                error!("{job}: {kept}; resume with `{}`", self.resume_hint());
                self.status.set_error(cause);
                self.status.set_state(JobState::Failed);
            }
        }
    }

    /// Removes the job's directory when nothing worth keeping is left in it
    /// (no dead letters), and the default `sluice-checkpoints/NAME` above it
    /// when that is empty then too; a directory the user named stays.
    fn remove_empty_dirs(&self) {
        let dir = self.store.path();
        let settings = &self.spec.settings;
        let named = settings.state_dir.is_some()
            || (settings.checkpoint_dir.is_some() && self.spec.checkpoint_dir.local().is_some());
        if std::fs::remove_dir(dir).is_err() || named {
            return;
        }
        let mut parent = dir.parent();
        for _ in 0..2 {
            match parent {
                Some(p) if !p.as_os_str().is_empty() && std::fs::remove_dir(p).is_ok() => {
                    parent = p.parent();
                }
                _ => return,
            }
        }
    }

    /// How to resume this job: from its own directory, which is where its
    /// checkpoints went (after a `--restore`, the restored job's), and which
    /// `--restore latest` might not pick when other jobs share the parent.
    fn resume_hint(&self) -> String {
        let absolute =
            |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        format!(
            "host run --module {} --restore {}",
            absolute(&self.spec.module_path).display(),
            self.store.location().absolute()
        )
    }
}

fn absolute_dir(p: &std::path::Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}
