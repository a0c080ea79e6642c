//! A subtask's guest instance, shared by every operator that calls the
//! guest: the instance (created when needed, dropped after any fault), the
//! guest's log forwarded to the host's (rate-limited, with the job's name),
//! and one call, its result checked: a failure the guest reports counts
//! only for an entry of the call; any other report is malformed output.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::config::sandbox::Sandbox;
use crate::encoding::OutputLimits;
use crate::fault::{Fault, MAX_MESSAGE, TaskFailure, shorten};
use crate::wasm::{BatchOutput, Call, GuestFailure, Header, Instance, Module};

/// Guest log lines passed to the host's log per second per subtask.
const GUEST_LOG_LINES: u32 = 20;

/// A subtask's guest.
pub struct Guest {
    job: Arc<str>,
    subtask: u32,
    module: Module,
    params: Vec<(String, String)>,
    pub(crate) sandbox: Sandbox,
    instance: Option<Instance>,
    log_window: Instant,
    log_lines: u32,
}

/// One call's output and changes, checked.
pub struct Called {
    /// The output buffer.
    pub output: Vec<u8>,
    /// The changes buffer.
    pub changes: Vec<u8>,
}

impl Guest {
    /// The guest of subtask `subtask` of `job`, with no instance yet.
    pub fn new(
        job: Arc<str>,
        subtask: u32,
        module: &Module,
        params: &[(String, String)],
        sandbox: &Sandbox,
    ) -> Self {
        Guest {
            job,
            subtask,
            module: module.clone(),
            params: params.to_vec(),
            sandbox: sandbox.clone(),
            instance: None,
            log_window: Instant::now(),
            log_lines: 0,
        }
    }

    /// The instance, created if there is none.
    pub fn instance(&mut self) -> Result<&mut Instance, GuestFailure> {
        if self.instance.is_none() {
            self.instance = Some(self.module.instantiate_with(&self.params, &self.sandbox)?);
        }
        match self.instance.as_mut() {
            Some(instance) => Ok(instance),
            None => Err(GuestFailure {
                message: "no guest instance".into(),
                record: None,
            }),
        }
    }

    /// Starts the first instance: a guest that cannot start fails the task.
    pub fn start(&mut self) -> Result<(), TaskFailure> {
        match self.instance() {
            Ok(_) => Ok(()),
            Err(f) => Err(TaskFailure::of_subtask(
                self.subtask,
                f.message,
                Fault::Guest,
            )),
        }
    }

    /// The limits on what one input entry may emit.
    pub fn limits(&self) -> OutputLimits {
        OutputLimits {
            rows: self.sandbox.limits.rows_per_record,
            bytes: self.sandbox.limits.bytes_per_record,
        }
    }

    /// Whether there is no live instance (the next call gets a fresh one).
    pub fn is_fresh(&self) -> bool {
        self.instance.is_none()
    }

    /// Drops the instance: the next call gets a fresh one.
    pub fn reset(&mut self) {
        self.instance = None;
    }

    /// A 0.1.0 batch: flat-map, chained with the key-selector when `keyed`;
    /// the output, or the fault worded for the user. `entries` is how many
    /// records the call holds.
    pub fn flat_map(
        &mut self,
        records: &[u8],
        keyed: bool,
        entries: usize,
    ) -> Result<Vec<u8>, String> {
        let result = self.instance().and_then(|i| i.flat_map(records, keyed));
        self.checked(result, entries).map(|c| c.output)
    }

    /// A 0.2.0 stage's call on `entries` input entries.
    pub fn call(
        &mut self,
        stage: u32,
        header: Header,
        call: Call<'_>,
        entries: usize,
    ) -> Result<Called, String> {
        let result = self.instance().and_then(|i| i.call(stage, header, call));
        self.checked(result, entries)
    }

    fn checked(
        &mut self,
        result: Result<BatchOutput, GuestFailure>,
        entries: usize,
    ) -> Result<Called, String> {
        if result.is_ok() {
            self.forward_log();
        }
        match result {
            Ok(out) => match out.failed {
                None => Ok(Called {
                    output: out.output,
                    changes: out.changes,
                }),
                Some((index, message)) if (index as usize) < entries => Err(format!(
                    "the guest failed the record: {}",
                    shorten(&message, MAX_MESSAGE)
                )),
                Some((index, _)) => Err(format!(
                    "the guest's output is malformed: it reports record index {index} failed, \
                     but the batch held {entries} record(s)"
                )),
            },
            Err(failure) => {
                self.instance = None;
                Err(shorten(&failure.message, MAX_MESSAGE))
            }
        }
    }

    /// Passes what the guest printed to the host's log, at most
    /// [`GUEST_LOG_LINES`] lines per second per subtask; says how many it dropped.
    fn forward_log(&mut self) {
        let Some(instance) = &self.instance else {
            return;
        };
        let text = instance.take_log();
        if text.is_empty() {
            return;
        }
        let now = Instant::now();
        if now.duration_since(self.log_window) >= Duration::from_secs(1) {
            self.log_window = now;
            self.log_lines = 0;
        }
        let (job, subtask) = (&self.job, self.subtask);
        let mut dropped = 0u64;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if self.log_lines >= GUEST_LOG_LINES {
                dropped += 1;
                continue;
            }
            self.log_lines += 1;
            let shown: String = line.chars().take(500).collect();
            info!("{job} subtask {subtask} guest: {shown}");
        }
        if dropped > 0 {
            warn!(
                "{job} subtask {subtask}: {dropped} more guest log line(s) dropped (at most {GUEST_LOG_LINES} a second, {} bytes a call; --max-guest-log)",
                self.sandbox.limits.log_bytes
            );
        }
    }
}

/// How running a faulted call's entries one at a time ended badly.
pub enum Isolation {
    /// Entry `index` failed alone in a fresh instance: the poison one.
    Poison(usize, String),
    /// A fresh instance could not be created (not any entry's fault).
    Start(String),
}

/// What running a faulted call's entries one at a time found: each entry's
/// result, and the entries whose fault did not reproduce alone in a fresh
/// instance (with the fault).
pub struct Isolated<T> {
    /// Each entry's result, in order.
    pub results: Vec<T>,
    /// Faults that did not reproduce.
    pub unreproduced: Vec<(usize, String)>,
}

impl Guest {
    /// Runs `entries` one at a time (`run(guest, i)`) to pin a fault to its
    /// entry: an entry that fails on an instance that ran others before it
    /// runs again alone in a fresh instance, and only if it fails there too
    /// is it the poison one.
    pub fn isolate<T>(
        &mut self,
        entries: std::ops::Range<usize>,
        mut run: impl FnMut(&mut Guest, usize) -> Result<T, String>,
    ) -> Result<Isolated<T>, Isolation> {
        self.reset();
        let mut found = Isolated {
            results: Vec::new(),
            unreproduced: Vec::new(),
        };
        for i in entries {
            let fresh = self.is_fresh();
            self.instance().map_err(|f| Isolation::Start(f.message))?;
            let cause = match run(self, i) {
                Ok(one) => {
                    found.results.push(one);
                    continue;
                }
                Err(cause) => cause,
            };
            self.reset();
            if fresh {
                return Err(Isolation::Poison(i, cause));
            }
            self.instance().map_err(|f| Isolation::Start(f.message))?;
            match run(self, i) {
                Ok(one) => {
                    found.results.push(one);
                    found.unreproduced.push((i, cause));
                }
                Err(again) => {
                    self.reset();
                    return Err(Isolation::Poison(i, again));
                }
            }
        }
        Ok(found)
    }
}
