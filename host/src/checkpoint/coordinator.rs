//! The checkpoint coordinator of one job: when the next barrier goes into
//! the stream (the interval, the least pause after the last checkpoint, or
//! a request), the checkpoint being written in the background, its
//! timeout, and retention once it completes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, bounded};

use crate::checkpoint::{CheckpointError, JobInfo, Snapshot, Store};

/// The settings the coordinator follows.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointSettings {
    /// Interval; `None` is off (checkpoints only on request).
    pub interval: Option<Duration>,
    /// Least time from the end of one checkpoint to the start of the next.
    pub min_pause: Duration,
    /// A checkpoint taking longer is abandoned.
    pub timeout: Duration,
    /// Completed checkpoints kept.
    pub retain: usize,
}

/// A checkpoint being written in the background.
struct Writing {
    id: u64,
    started: Instant,
    /// The snapshot and how long writing it took, or why it failed.
    done: Receiver<Result<(Snapshot, Duration), CheckpointError>>,
}

/// What became of the checkpoint being written.
pub enum Written {
    /// It completed: the snapshot (now the restore point) and how long the
    /// files took.
    Completed(Snapshot, Duration),
    /// It failed; the job goes on.
    Failed(u64, CheckpointError),
    /// It took longer than the timeout and was abandoned.
    Abandoned(u64, Duration),
}

/// A job's checkpoint coordinator.
pub struct Coordinator {
    settings: CheckpointSettings,
    store: Arc<Store>,
    next_id: u64,
    /// The barrier in the stream, not yet at the sink.
    barrier: Option<u64>,
    writing: Option<Writing>,
    last_start: Instant,
    last_end: Instant,
    /// A checkpoint was asked for ("checkpoint now").
    requested: bool,
}

impl Coordinator {
    /// A coordinator whose first checkpoint is `next_id`.
    pub fn new(settings: CheckpointSettings, store: Arc<Store>, next_id: u64) -> Self {
        Coordinator {
            settings,
            store,
            next_id,
            barrier: None,
            writing: None,
            last_start: Instant::now(),
            last_end: Instant::now(),
            requested: false,
        }
    }

    /// Asks for a checkpoint as soon as the job can take one.
    pub fn request(&mut self) {
        self.requested = true;
    }

    /// Whether a barrier should go into the stream now: none is in flight,
    /// and the interval and the pause passed (or one was asked for), and
    /// the job `moved` since the last checkpoint.
    pub fn due(&self, moved: bool) -> bool {
        if self.barrier.is_some() || self.writing.is_some() || !moved {
            return false;
        }
        if self.requested {
            return true;
        }
        let Some(every) = self.settings.interval else {
            return false;
        };
        self.last_start.elapsed() >= every && self.last_end.elapsed() >= self.settings.min_pause
    }

    /// The id of a new barrier going into the stream.
    pub fn start(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.barrier = Some(id);
        self.requested = false;
        self.last_start = Instant::now();
        id
    }

    /// The barrier in flight was lost (the job restarted): no checkpoint.
    pub fn abort(&mut self) {
        if let Some(id) = self.barrier.take() {
            tracing::debug!("checkpoint {id} dropped: the job restarted before it was taken");
            self.last_end = Instant::now();
        }
    }

    /// The barrier reached the sink: writes the snapshot in the background.
    pub fn write(&mut self, info: &JobInfo, snapshot: Snapshot) -> Result<(), CheckpointError> {
        self.barrier = None;
        let id = snapshot.id;
        let (tx, rx) = bounded(1);
        let store = self.store.clone();
        let info = info.clone();
        std::thread::Builder::new()
            .name("sluice-checkpoint".into())
            .spawn(move || {
                let started = Instant::now();
                let result = store
                    .write(&info, &snapshot)
                    .map(|_| (snapshot, started.elapsed()));
                let _ = tx.send(result);
            })
            .map_err(|e| {
                CheckpointError::Damaged(format!("cannot start the checkpoint writer: {e}"))
            })?;
        self.writing = Some(Writing {
            id,
            started: Instant::now(),
            done: rx,
        });
        Ok(())
    }

    /// The barrier could not be written (a sink that cannot sync).
    pub fn skip(&mut self) {
        self.barrier = None;
        self.last_end = Instant::now();
    }

    /// What became of the checkpoint being written, once something did.
    pub fn poll(&mut self) -> Option<Written> {
        let writing = self.writing.as_ref()?;
        let outcome = match writing.done.try_recv() {
            Ok(Ok((snapshot, took))) => Written::Completed(snapshot, took),
            Ok(Err(e)) => Written::Failed(writing.id, e),
            Err(_) if writing.started.elapsed() > self.settings.timeout => {
                Written::Abandoned(writing.id, writing.started.elapsed())
            }
            Err(_) => return None,
        };
        self.writing = None;
        self.last_end = Instant::now();
        Some(outcome)
    }

    /// Removes completed checkpoints beyond the retained ones; the oldest
    /// kept, for trimming the journal.
    pub fn retain(&self) -> Option<u64> {
        self.store.retain(self.settings.retain)
    }

    /// Waits (up to the timeout) for the checkpoint being written.
    pub fn finish(&mut self) {
        if let Some(writing) = self.writing.take() {
            let _ = writing.done.recv_timeout(self.settings.timeout);
        }
    }

    /// The next checkpoint's id.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }
}
