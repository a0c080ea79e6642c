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
    match spec.checkpoint_interval {
        Some(every) => info!(
            "{job}: checkpoints every {} ms go to `{dir}`",
            every.as_millis()
        ),
        None => info!("{job}: checkpointing is off; the journal and dead letters go to `{dir}`"),
    }
    for note in &prepared.notes {
        warn!("{job}: {note}; falling back to an older checkpoint");
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
        let dir = self.store.path().display().to_string();
        match outcome {
            JobOutcome::Finished => {
                self.store.remove_checkpoints();
                // Nothing left worth keeping (no dead letters): no directory.
                let _ = std::fs::remove_dir(self.store.path());
                info!("{job} switched from RUNNING to FINISHED");
                self.status.set_state(JobState::Finished);
            }
            JobOutcome::Canceled if !self.spec.retain_on_cancel => {
                self.store.remove_checkpoints();
                let _ = std::fs::remove_dir(self.store.path());
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
                        "no checkpoint completed; the journal and dead letters are in `{dir}`"
                    ),
                };
                error!("{job}: {kept}; resume with `{}`", self.resume_hint());
                self.status.set_error(cause);
                self.status.set_state(JobState::Failed);
            }
        }
    }

    /// How to resume this job: from its own directory, which is where its
    /// checkpoints went (after a `--restore`, the restored job's), and which
    /// `--restore latest` might not pick when other jobs share the parent.
    fn resume_hint(&self) -> String {
        format!(
            "host run --module {} --restore {}",
            self.spec.module_path.display(),
            self.store.path().display()
        )
    }
}
