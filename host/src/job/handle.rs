//! A job as its caller sees it: a handle that reports the job's state and
//! counters and takes cancel and "checkpoint now", while the job runs on a
//! thread of its own. A CLI waits on it; a server keeps many side by side.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::checkpoint::Snapshot;
use crate::config::JobSpec;
use crate::dataflow::worker::Counters;
use crate::fault::TaskFailure;
use crate::job::prepare::Prepared;
use crate::job::{CancelToken, JobOutcome};
use crate::wasm::Module;

/// A job's state, with Flink's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum JobState {
    /// Set up, not yet running.
    Created,
    /// Processing records.
    Running,
    /// A task failed; the restart strategy decides.
    Failing,
    /// Waiting out the restart delay.
    Restarting,
    /// A bounded source ended and every record was processed.
    Finished,
    /// Failed for good.
    Failed,
    /// Cancelled.
    Canceled,
}

impl JobState {
    /// The name the logs use.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Created => "CREATED",
            JobState::Running => "RUNNING",
            JobState::Failing => "FAILING",
            JobState::Restarting => "RESTARTING",
            JobState::Finished => "FINISHED",
            JobState::Failed => "FAILED",
            JobState::Canceled => "CANCELED",
        }
    }

    /// Whether the job has ended.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Finished | JobState::Failed | JobState::Canceled
        )
    }
}

/// The last completed checkpoint, as the handle reports it.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointInfo {
    /// Its id.
    pub id: u64,
    /// When it was taken (Unix ms).
    pub created_at_ms: u64,
    /// Keys it holds.
    pub keys: u64,
    /// Bytes of state it holds.
    pub bytes: u64,
    /// How long writing it took, in milliseconds.
    pub duration_ms: u64,
    /// Records read up to it.
    pub records: u64,
}

/// One operator instance's counters.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SubtaskMetrics {
    /// The stage (0: the guest).
    pub stage: usize,
    /// The subtask.
    pub subtask: usize,
    /// Records or rows taken in.
    pub records_in: u64,
    /// Rows or lines emitted.
    pub records_out: u64,
    /// Bytes emitted.
    pub bytes_out: u64,
    /// Time spent processing, in milliseconds.
    pub busy_ms: u64,
    /// Batches processed (for the guest's stage: guest calls).
    pub batches: u64,
}

/// What a job has done so far.
#[derive(Debug, Clone, Serialize)]
pub struct JobMetrics {
    /// The job's state.
    pub state: JobState,
    /// Time since the job started, in milliseconds.
    pub uptime_ms: u64,
    /// Records read from the source and passed to the guests.
    pub records_in: u64,
    /// Lines written to the sink.
    pub lines_out: u64,
    /// Restarts so far.
    pub restarts: u64,
    /// Task failures so far (records dead-lettered and faults that did not
    /// reproduce).
    pub failures: u64,
    /// The last failure, worded for the user.
    pub last_error: Option<String>,
    /// The last completed checkpoint.
    pub last_checkpoint: Option<CheckpointInfo>,
    /// Per stage and subtask.
    pub subtasks: Vec<SubtaskMetrics>,
}

/// The state and counters a running job shares with its handle.
pub struct Status {
    started: Instant,
    state: Mutex<JobState>,
    records_in: AtomicU64,
    lines_out: AtomicU64,
    restarts: AtomicU64,
    failures: AtomicU64,
    checkpoint_request: AtomicBool,
    last_error: Mutex<Option<String>>,
    last_checkpoint: Mutex<Option<CheckpointInfo>>,
    counters: Mutex<Vec<Vec<Arc<Counters>>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Default for Status {
    fn default() -> Self {
        Status {
            started: Instant::now(),
            state: Mutex::new(JobState::Created),
            records_in: AtomicU64::new(0),
            lines_out: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            checkpoint_request: AtomicBool::new(false),
            last_error: Mutex::new(None),
            last_checkpoint: Mutex::new(None),
            counters: Mutex::new(Vec::new()),
        }
    }
}

impl Status {
    pub(crate) fn set_state(&self, state: JobState) {
        *lock(&self.state) = state;
    }

    pub(crate) fn state(&self) -> JobState {
        *lock(&self.state)
    }

    pub(crate) fn add_records(&self, n: u64) {
        self.records_in.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn add_output(&self, n: u64) {
        self.lines_out.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn failed(&self, failure: &TaskFailure) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        *lock(&self.last_error) = Some(failure.to_string());
        self.set_state(JobState::Failing);
    }

    pub(crate) fn restarted(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
        self.set_state(JobState::Restarting);
    }

    pub(crate) fn set_error(&self, message: &str) {
        *lock(&self.last_error) = Some(message.to_string());
    }

    pub(crate) fn checkpointed(&self, snapshot: &Snapshot, took: Duration) {
        let bytes = snapshot
            .subtasks
            .iter()
            .flatten()
            .map(|g| g.bytes.len() as u64)
            .sum();
        *lock(&self.last_checkpoint) = Some(CheckpointInfo {
            id: snapshot.id,
            created_at_ms: snapshot.created_at_ms,
            keys: snapshot.keys(),
            bytes,
            duration_ms: took.as_millis() as u64,
            records: snapshot.source.seq,
        });
    }

    pub(crate) fn set_counters(&self, counters: Vec<Vec<Arc<Counters>>>) {
        *lock(&self.counters) = counters;
    }

    /// Takes a pending "checkpoint now".
    pub(crate) fn take_checkpoint_request(&self) -> bool {
        self.checkpoint_request.swap(false, Ordering::Relaxed)
    }

    /// What the job has done so far.
    pub fn metrics(&self) -> JobMetrics {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let subtasks = lock(&self.counters)
            .iter()
            .enumerate()
            .flat_map(|(stage, subtasks)| {
                subtasks
                    .iter()
                    .enumerate()
                    .map(move |(subtask, c)| SubtaskMetrics {
                        stage,
                        subtask,
                        records_in: get(&c.taken),
                        records_out: get(&c.emitted),
                        bytes_out: get(&c.bytes),
                        busy_ms: get(&c.busy_ns) / 1_000_000,
                        batches: get(&c.batches),
                    })
            })
            .collect();
        JobMetrics {
            state: self.state(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            records_in: get(&self.records_in),
            lines_out: get(&self.lines_out),
            restarts: get(&self.restarts),
            failures: get(&self.failures),
            last_error: lock(&self.last_error).clone(),
            last_checkpoint: lock(&self.last_checkpoint).clone(),
            subtasks,
        }
    }
}

/// A job running on a thread of its own.
pub struct JobHandle {
    id: String,
    name: String,
    dir: std::path::PathBuf,
    status: Arc<Status>,
    cancel: CancelToken,
    thread: Option<JoinHandle<JobOutcome>>,
}

impl JobHandle {
    /// Starts a prepared job (see [`crate::job::prepare`]).
    pub fn start(
        module: Module,
        spec: JobSpec,
        prepared: Prepared,
        cancel: CancelToken,
    ) -> std::io::Result<JobHandle> {
        let status = Arc::new(Status::default());
        let id = prepared.id().to_string();
        let dir = prepared.dir().to_path_buf();
        let name = spec.name.clone();
        let shared = status.clone();
        let token = cancel.clone();
        let thread = std::thread::Builder::new()
            .name(format!("sluice-job-{name}"))
            .spawn(move || {
                // A metered job's host-side work (its source, restarts,
                // sink, and every thread it starts) runs at its owner's
                // niceness, like its guests.
                if let Some(meter) = &spec.sandbox.meter {
                    crate::wasm::renice(meter.niceness());
                }
                super::run_with(&module, &spec, prepared, &token, &shared)
            })?;
        Ok(JobHandle {
            id,
            name,
            dir,
            status,
            cancel,
            thread: Some(thread),
        })
    }

    /// The job's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The job's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The job's directory (checkpoints, journal, dead letters).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The job's state.
    pub fn state(&self) -> JobState {
        self.status.state()
    }

    /// What the job has done so far.
    pub fn metrics(&self) -> JobMetrics {
        self.status.metrics()
    }

    /// Asks the job to stop; [`JobHandle::wait`] then returns `Canceled`.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Asks for a checkpoint as soon as the job can take one.
    pub fn checkpoint_now(&self) {
        self.status
            .checkpoint_request
            .store(true, Ordering::Relaxed);
    }

    /// Whether the job has ended.
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Waits for the job to end.
    pub fn wait(mut self) -> JobOutcome {
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(outcome)) => outcome,
            Some(Err(_)) => JobOutcome::Failed("internal error: the job's thread panicked".into()),
            None => JobOutcome::Failed("the job was already waited for".into()),
        }
    }
}
