//! A job: prepared (its directory, its source, the checkpoint it resumes
//! from), then run on a thread of its own behind a [`JobHandle`] that
//! reports its state and counters and takes cancel and "checkpoint now".
//!
//! The runner (`runner.rs`) moves each batch from the source through the
//! stages to the sink, with the checkpoints' barriers among the batches;
//! failures and restarts are `recovery.rs`'s, checkpoints
//! `checkpointing.rs`'s, states and their log lines `lifecycle.rs`'s.
//!
//! A job holds no process-global state: many can run side by side in one
//! process, each with its own cancel token.

mod checkpointing;
pub mod dead_letter;
pub mod handle;
mod lifecycle;
pub mod prepare;
mod recovery;
mod runner;
pub mod time;
mod timeline;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::{error, info};

use crate::config::JobSpec;
use crate::wasm::Module;
pub use handle::{JobHandle, JobMetrics, JobState, Status};
pub use prepare::{Prepared, prepare};
use runner::Runner;

/// Cancels a job from another thread (a signal handler, a server).
#[derive(Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the job to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether the job was asked to stop.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// The flag itself, for signal handlers.
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.0.clone()
    }
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// A bounded source ended and every record was processed.
    Finished,
    /// The job was cancelled.
    Canceled,
    /// The job failed for good; the cause, worded for the user.
    Failed(String),
}

/// Runs a job to its end on this thread. Logs every state change; never
/// exits the process.
pub fn run(
    module: &Module,
    spec: &JobSpec,
    prepared: Prepared,
    cancel: &CancelToken,
) -> JobOutcome {
    run_with(module, spec, prepared, cancel, &Status::default())
}

fn run_with(
    module: &Module,
    spec: &JobSpec,
    prepared: Prepared,
    cancel: &CancelToken,
    status: &Status,
) -> JobOutcome {
    let job: Arc<str> = format!("job `{}` ({})", spec.name, prepared.id).into();
    lifecycle::log_created(&job, spec, &prepared);
    let mut runner = match Runner::new(module, spec, prepared, cancel, status, job.clone()) {
        Ok(r) => r,
        Err(cause) => {
            error!("{job} switched from CREATED to FAILED: {cause}");
            status.set_error(&cause);
            status.set_state(JobState::Failed);
            return JobOutcome::Failed(cause);
        }
    };
    status.set_counters(runner.workers.counters());
    info!("{job} switched from CREATED to RUNNING");
    status.set_state(JobState::Running);
    let outcome = runner.run();
    runner.finish(&outcome);
    outcome
}

/// Now, in Unix milliseconds.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
