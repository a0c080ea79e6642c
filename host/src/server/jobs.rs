//! A tenant's jobs as the server runs them: the record kept on disk
//! (`jobs/ID/server-job.json`: the module, the settings exactly as the
//! client sent them, the state the server keeps the job in), the running
//! [`JobHandle`], and what starting, savepointing, stopping, cancelling and
//! reaping a job take. A job's checkpoints, journal, dead letters and
//! printed output live in the library's job directory under `jobs/ID/`.
//!
//! Starting is where admission control sits: the job's resolved
//! parallelism and memory are checked against the tenant's quotas and the
//! server's instance pool before anything is created.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::{FlagConfig, JobSpec, Settings};
use crate::job::{CancelToken, JobHandle, JobMetrics, JobOutcome};
use crate::server::disk;
use crate::server::error::AppError;
use crate::server::events::{Feed, LogRouter};
use crate::server::modules::Modules;
use crate::server::quotas::{self, Demand, Usage};
use crate::server::savepoints::{self, SavepointRecord};
use crate::server::tenants::Tenant;
use crate::wasm::Module;

/// The state the server keeps a job in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Desired {
    /// Running; brought back after a server restart.
    Running,
    /// Stopped (with a savepoint): started again on request.
    Stopped,
    /// Cancelled.
    Canceled,
    /// Its bounded source ended.
    Finished,
    /// Failed for good.
    Failed,
}

/// A job as the server keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct JobRecord {
    /// Its id.
    pub id: String,
    /// Its tenant.
    pub tenant: String,
    /// Its name (resolved at its first start).
    pub name: String,
    /// The module it runs (sha256).
    pub module: String,
    /// Its settings, as the client gave them (`host run`'s flags).
    pub settings: Settings,
    /// The state the server keeps it in.
    pub desired: Desired,
    /// The library's job directory (its id) under the job's directory.
    pub lib_dir: Option<String>,
    /// Parallelism of its last start.
    pub parallelism: u32,
    /// When it was submitted (Unix ms).
    pub created_ms: u64,
    /// Times it was started.
    pub starts: u64,
    /// Why it last failed to start or run.
    pub last_error: Option<String>,
}

/// A running job.
struct Live {
    handle: JobHandle,
    parallelism: u32,
    memory: u64,
    lib_id: String,
}

/// Dead letters counted by fault and by cause, as far as read.
#[derive(Debug, Default, Clone)]
pub struct DeadLetters {
    read: u64,
    /// Records failed, by whose fault.
    pub by_fault: BTreeMap<String, u64>,
    /// Guest traps, by cause.
    pub by_cause: BTreeMap<String, u64>,
}

/// One job: its record, its run, its events and logs.
pub struct JobEntry {
    /// Its id.
    pub id: String,
    /// Its tenant.
    pub tenant: Arc<Tenant>,
    record: Mutex<JobRecord>,
    live: Mutex<Option<Live>>,
    last: Mutex<Option<JobMetrics>>,
    seen: Mutex<Option<&'static str>>,
    /// Serialises the operations on the job.
    pub ops: tokio::sync::Mutex<()>,
    /// State changes and operations.
    pub events: Arc<Feed>,
    /// Log lines.
    pub logs: Arc<Feed>,
    /// Its dead letters, counted.
    pub dead: Mutex<DeadLetters>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl JobEntry {
    fn new(tenant: Arc<Tenant>, record: JobRecord) -> Self {
        JobEntry {
            id: record.id.clone(),
            tenant,
            record: Mutex::new(record),
            live: Mutex::new(None),
            last: Mutex::new(None),
            seen: Mutex::new(None),
            ops: tokio::sync::Mutex::new(()),
            events: Arc::default(),
            logs: Arc::default(),
            dead: Mutex::default(),
        }
    }

    /// Its record, as it is now.
    pub fn record(&self) -> JobRecord {
        lock(&self.record).clone()
    }

    /// Its directory.
    pub fn dir(&self) -> PathBuf {
        self.tenant.sub("jobs").join(&self.id)
    }

    /// The library's job directory (checkpoints, dead letters, output).
    pub fn lib_dir(&self) -> Option<PathBuf> {
        self.record().lib_dir.map(|d| self.dir().join(d))
    }

    /// Changes its record and saves it.
    pub fn change(&self, f: impl FnOnce(&mut JobRecord)) -> std::io::Result<()> {
        self.update(f)
    }

    fn update(&self, f: impl FnOnce(&mut JobRecord)) -> std::io::Result<()> {
        let mut record = lock(&self.record);
        f(&mut record);
        disk::write_json(&self.dir().join("server-job.json"), &*record)
    }

    /// Its state: the running job's (Flink's names), else the one the
    /// server keeps it in (`STOPPED` for a job stopped to be started again).
    pub fn state(&self) -> &'static str {
        if let Some(live) = lock(&self.live).as_ref() {
            return live.handle.state().as_str();
        }
        match self.record().desired {
            Desired::Running => "CREATED",
            Desired::Stopped => "STOPPED",
            Desired::Canceled => "CANCELED",
            Desired::Finished => "FINISHED",
            Desired::Failed => "FAILED",
        }
    }

    /// Whether it is running (its thread has not ended).
    pub fn is_running(&self) -> bool {
        lock(&self.live)
            .as_ref()
            .is_some_and(|l| !l.handle.is_finished())
    }

    /// Its counters: the running job's, else those it ended with.
    pub fn metrics(&self) -> Option<JobMetrics> {
        match lock(&self.live).as_ref() {
            Some(live) => Some(live.handle.metrics()),
            None => lock(&self.last).clone(),
        }
    }

    /// Guest instances and memory of the running job.
    fn demand(&self) -> Option<(u64, u64)> {
        lock(&self.live)
            .as_ref()
            .filter(|l| !l.handle.is_finished())
            .map(|l| (u64::from(l.parallelism), l.memory))
    }

    /// Records a state change as an event, once.
    fn note_state(&self, state: &'static str, message: String) {
        let mut seen = lock(&self.seen);
        if *seen != Some(state) {
            *seen = Some(state);
            self.events.push("state", None, Some(state), message);
        }
    }
}

/// Where a start begins.
pub enum StartFrom {
    /// Afresh (a new job).
    Fresh,
    /// The job's latest checkpoint (or its start, when none completed).
    Latest,
    /// A savepoint of the job.
    Savepoint(SavepointRecord),
}

/// Every tenant's jobs.
pub struct Jobs {
    modules: Arc<Modules>,
    router: Arc<LogRouter>,
    entries: RwLock<BTreeMap<(String, String), Arc<JobEntry>>>,
    admission: Mutex<()>,
    /// Guest instances the engine's pool holds, for every tenant together.
    pool: u64,
}

/// Settings a client may not give a server's job: each names something of
/// the server's (a path, its environment) or is engine-wide.
pub fn check_settings(s: &Settings) -> Result<(), AppError> {
    let refuse = |key: &str, why: &str| {
        Err(AppError::Invalid(format!(
            "`{key}` cannot be set on a server: {why}"
        )))
    };
    if s.checkpoint_dir.is_some() {
        return refuse(
            "checkpoint-dir",
            "a job's checkpoints live in its own directory",
        );
    }
    if s.dead_letter.is_some() {
        return refuse(
            "dead-letter",
            "a job's dead letters are its exceptions (GET .../exceptions)",
        );
    }
    if !s.allow_dir.is_empty() {
        return refuse(
            "allow-dir",
            "it names a directory of the server's; guests get none",
        );
    }
    if !s.allow_env.is_empty() {
        return refuse(
            "allow-env",
            "it passes the server's environment to the guest",
        );
    }
    if s.fuel.is_some() || s.max_stack.is_some() {
        return refuse(
            "fuel` or `max-stack",
            "they are the server's engine-wide settings; CPU is metered per tenant instead",
        );
    }
    if s.source.as_deref() == Some("-") {
        return refuse(
            "source = \"-\"",
            "stdin is the server's; use a `file://` or `socket://` source",
        );
    }
    Ok(())
}

impl Jobs {
    /// Loads every tenant's jobs (not starting them).
    pub fn load(
        tenants: &[Arc<Tenant>],
        modules: Arc<Modules>,
        router: Arc<LogRouter>,
        pool: u64,
    ) -> std::io::Result<Self> {
        let mut entries = BTreeMap::new();
        for tenant in tenants {
            for e in std::fs::read_dir(tenant.sub("jobs"))?.flatten() {
                if let Some(record) =
                    disk::read_json::<JobRecord>(&e.path().join("server-job.json"))?
                {
                    let key = (tenant.name.clone(), record.id.clone());
                    entries.insert(key, Arc::new(JobEntry::new(tenant.clone(), record)));
                }
            }
        }
        Ok(Jobs {
            modules,
            router,
            entries: RwLock::new(entries),
            admission: Mutex::new(()),
            pool,
        })
    }

    /// The job `id` of `tenant`.
    pub fn get(&self, tenant: &str, id: &str) -> Option<Arc<JobEntry>> {
        self.entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(tenant.to_string(), id.to_string()))
            .cloned()
    }

    /// Every job of `tenant` (every job, for `None`), oldest first.
    pub fn list(&self, tenant: Option<&str>) -> Vec<Arc<JobEntry>> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<Arc<JobEntry>> = entries
            .iter()
            .filter(|((t, _), _)| tenant.is_none_or(|want| t == want))
            .map(|(_, e)| e.clone())
            .collect();
        list.sort_by_key(|e| (lock(&e.record).created_ms, e.id.clone()));
        list
    }

    /// What `tenant` uses of its quotas.
    pub fn usage(&self, tenant: &Tenant) -> Usage {
        let mut usage = Usage {
            storage: tenant.stored(),
            modules: self.modules.list(tenant).len() as u64,
            cpu_seconds: tenant.cpu.used().as_secs_f64(),
            cpu_throttled_seconds: tenant.cpu.throttled().as_secs_f64(),
            ..Usage::default()
        };
        for entry in self.list(Some(&tenant.name)) {
            if let Some((p, memory)) = entry.demand() {
                usage.running_jobs += 1;
                usage.parallelism += p;
                usage.memory += p.saturating_mul(memory);
                usage.state_memory += state_bytes(&entry);
            }
        }
        usage
    }

    /// Pool instances the running jobs hold: each instance and one more
    /// to isolate a poison record in.
    fn instances_in_use(&self) -> u64 {
        self.list(None)
            .iter()
            .filter_map(|e| e.demand())
            .map(|(p, _)| p * 2)
            .sum()
    }

    /// Submits a job: checks it, starts it, and keeps it only if it starts.
    pub fn submit(
        &self,
        tenant: &Arc<Tenant>,
        module: &str,
        settings: Settings,
    ) -> Result<Arc<JobEntry>, AppError> {
        check_settings(&settings)?;
        let record = JobRecord {
            id: disk::new_id(),
            tenant: tenant.name.clone(),
            name: settings.name.clone().unwrap_or_default(),
            module: module.to_string(),
            settings,
            desired: Desired::Running,
            lib_dir: None,
            parallelism: 0,
            created_ms: disk::now_ms(),
            starts: 0,
            last_error: None,
        };
        let entry = Arc::new(JobEntry::new(tenant.clone(), record));
        std::fs::create_dir_all(entry.dir())?;
        entry.update(|_| {})?;
        if let Err(e) = self.start(&entry, StartFrom::Fresh, false) {
            let _ = std::fs::remove_dir_all(entry.dir());
            return Err(e);
        }
        self.entries
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert((tenant.name.clone(), entry.id.clone()), entry.clone());
        Ok(entry)
    }

    /// Resolves the job's spec from its record, as `host run` would from
    /// its flags, in its tenant's environment.
    fn resolve(
        &self,
        entry: &JobEntry,
        module: &Module,
        restore: Option<PathBuf>,
        allow_module_change: bool,
    ) -> Result<JobSpec, AppError> {
        let record = entry.record();
        let mut settings = record.settings.clone();
        settings.checkpoint_dir = Some(entry.dir());
        let params: Vec<(String, String)> = settings.params.clone().into_iter().collect();
        let description = module
            .describe(&params)
            .map_err(|f| AppError::Invalid(format!("the module's job description failed: {f}")))?;
        let flags = FlagConfig {
            module_path: PathBuf::from(format!("sha256:{}", record.module)),
            settings,
            restore: restore.map(|p| p.display().to_string()),
            allow_module_change,
            env: entry.tenant.env(),
            ..FlagConfig::default()
        };
        let mut spec = JobSpec::resolve(&description, &Settings::default(), &flags)
            .map_err(|e| AppError::Invalid(e.to_string()))?;
        module
            .check_grants(&spec.sandbox.grants)
            .map_err(|e| AppError::Invalid(format!("the module cannot run: {e}")))?;
        spec.sandbox.meter = Some(entry.tenant.cpu.clone());
        Ok(spec)
    }

    /// The job's spec as it would start with module `digest` (for an
    /// upgrade's dry run), and that module, started once in the sandbox.
    pub fn trial(&self, entry: &JobEntry, digest: &str) -> Result<(Module, JobSpec), AppError> {
        let module = self.modules.get(&entry.tenant, digest)?;
        let spec = self.resolve(entry, &module, None, true)?;
        module
            .instantiate_with(&spec.params, &spec.sandbox)
            .map_err(|f| {
                AppError::Invalid(format!(
                    "the module cannot start in this job's sandbox: {f}"
                ))
            })?;
        Ok((module, spec))
    }

    /// Starts a job that is not running: resolves it, admits it against
    /// the quotas, starts its guest once in its sandbox, prepares it and
    /// runs it.
    pub fn start(
        &self,
        entry: &Arc<JobEntry>,
        from: StartFrom,
        allow_module_change: bool,
    ) -> Result<(), AppError> {
        self.settle(entry);
        if entry.is_running() {
            return Err(AppError::Conflict(format!("job `{}` is running", entry.id)));
        }
        self.reap(entry);
        let record = entry.record();
        let module = self.modules.get(&entry.tenant, &record.module)?;
        let restore = match (&from, entry.lib_dir()) {
            (StartFrom::Fresh, _) | (StartFrom::Latest, None) => None,
            (StartFrom::Latest, Some(dir)) => Some(dir),
            (StartFrom::Savepoint(_), None) => {
                return Err(AppError::Conflict(
                    "the job has no directory to restore into".into(),
                ));
            }
            (StartFrom::Savepoint(sp), Some(dir)) => {
                savepoints::put_back(&entry.tenant, sp, &dir)?;
                Some(dir.join(format!("chk-{}", sp.checkpoint)))
            }
        };
        let mut spec = self.resolve(entry, &module, restore, allow_module_change)?;
        let cancel = CancelToken::new();
        spec.sandbox.meter = Some(Arc::new(crate::server::quotas::JobMeter::new(
            entry.tenant.cpu.clone(),
            cancel.flag(),
        )));
        let _admission = lock(&self.admission);
        self.admit(entry, &spec)?;
        module
            .instantiate_with(&spec.params, &spec.sandbox)
            .map_err(|f| {
                AppError::Invalid(format!(
                    "the module cannot start in this job's sandbox: {f}"
                ))
            })?;
        let prepared = crate::job::prepare(&module, &spec)?;
        let lib_id = prepared.id().to_string();
        let lib_dir = prepared
            .dir()
            .file_name()
            .and_then(|n| n.to_str())
            .map(String::from);
        self.router.route(
            &lib_id,
            entry.logs.clone(),
            entry.tenant.dir.display().to_string(),
        );
        let (parallelism, memory, name) = (
            spec.parallelism,
            spec.sandbox.limits.memory_bytes,
            spec.name.clone(),
        );
        let handle = JobHandle::start(module, spec, prepared, cancel)
            .map_err(|e| AppError::Unavailable(format!("cannot start the job's thread: {e}")))?;
        *lock(&entry.live) = Some(Live {
            handle,
            parallelism,
            memory,
            lib_id,
        });
        entry.update(|r| {
            r.lib_dir = lib_dir;
            r.desired = Desired::Running;
            r.parallelism = parallelism;
            r.name = name;
            r.starts += 1;
            r.last_error = None;
        })?;
        entry.events.push(
            "state",
            None,
            Some("CREATED"),
            format!("job started (start {})", entry.record().starts),
        );
        Ok(())
    }

    fn admit(&self, entry: &JobEntry, spec: &JobSpec) -> Result<(), AppError> {
        let quota = entry.tenant.record().quota;
        let usage = self.usage(&entry.tenant);
        let demand = Demand {
            parallelism: u64::from(spec.parallelism),
            memory_per_instance: spec.sandbox.limits.memory_bytes,
        };
        quotas::admit_job(&quota, &usage, demand)?;
        // A poison record is isolated in one more, fresh, instance.
        quotas::admit(
            "server-instances",
            self.pool,
            self.instances_in_use(),
            demand.parallelism * 2,
        )
    }

    /// Takes in a job whose thread ended; `true` when it did.
    pub fn reap(&self, entry: &JobEntry) -> bool {
        let mut live = lock(&entry.live);
        let Some(l) = live.as_ref() else {
            return false;
        };
        if !l.handle.is_finished() {
            let state = l.handle.state().as_str();
            drop(live);
            entry.note_state(state, format!("job is {state}"));
            return false;
        }
        let Some(l) = live.take() else {
            return false;
        };
        drop(live);
        let metrics = l.handle.metrics();
        self.router.unroute(&l.lib_id);
        let outcome = l.handle.wait();
        *lock(&entry.last) = Some(metrics);
        let (desired, error) = match &outcome {
            JobOutcome::Finished => (Desired::Finished, None),
            JobOutcome::Failed(cause) => (Desired::Failed, Some(cause.clone())),
            JobOutcome::Canceled => (Desired::Canceled, None),
        };
        let _ = entry.update(|r| {
            if !(desired == Desired::Canceled && r.desired != Desired::Running) {
                r.desired = desired;
            }
            if error.is_some() {
                r.last_error = error.clone();
            }
        });
        let state = entry.state();
        entry.note_state(
            state,
            format!(
                "job is {state}{}",
                error.map(|e| format!(": {e}")).unwrap_or_default()
            ),
        );
        true
    }

    /// Cancels a running job and waits for it to end; the server keeps it
    /// as `desired`.
    pub fn cancel(&self, entry: &JobEntry, desired: Desired) -> Result<(), AppError> {
        entry.update(|r| r.desired = desired)?;
        match lock(&entry.live).as_ref() {
            Some(l) => l.handle.cancel(),
            None => return Ok(()),
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.reap(entry) {
            if lock(&entry.live).is_none() {
                break;
            }
            if Instant::now() > deadline {
                return Err(AppError::Unavailable(
                    "the job did not end within 60 s of being cancelled".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Takes a savepoint of a running job: a checkpoint taken now (or the
    /// last one, when the job read nothing since), kept apart.
    pub fn savepoint(&self, entry: &JobEntry) -> Result<SavepointRecord, AppError> {
        let not_running = || AppError::Conflict(format!("job `{}` is not running", entry.id));
        let lib_dir = entry.lib_dir().ok_or_else(not_running)?;
        let before = entry
            .metrics()
            .filter(|_| entry.is_running())
            .ok_or_else(not_running)?;
        let current = before
            .last_checkpoint
            .as_ref()
            .filter(|c| c.records >= before.records_in)
            .map(|c| c.id);
        let chk = match current {
            Some(id) => id,
            None if before.records_in == 0 => {
                return Err(AppError::Conflict(
                    "the job has read no record yet: there is nothing to save".into(),
                ));
            }
            None => self.fresh_checkpoint(entry, before.last_checkpoint.as_ref().map(|c| c.id))?,
        };
        let m = entry.metrics().unwrap_or(before);
        let record = SavepointRecord {
            id: disk::new_id(),
            job: entry.id.clone(),
            checkpoint: chk,
            created_ms: disk::now_ms(),
            module: entry.record().module,
            parallelism: entry.record().parallelism,
            records: m.last_checkpoint.as_ref().map_or(0, |c| c.records),
            keys: m.last_checkpoint.as_ref().map_or(0, |c| c.keys),
            bytes: 0,
        };
        let kept = savepoints::keep(&entry.tenant, &lib_dir, chk, record)?;
        entry.events.push(
            "operation",
            None,
            None,
            format!("savepoint `{}` taken (checkpoint {chk})", kept.id),
        );
        Ok(kept)
    }

    /// Asks for a checkpoint and waits for one newer than `previous`.
    fn fresh_checkpoint(&self, entry: &JobEntry, previous: Option<u64>) -> Result<u64, AppError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut asked = Instant::now() - Duration::from_secs(1);
        loop {
            {
                let live = lock(&entry.live);
                let Some(l) = live.as_ref().filter(|l| !l.handle.is_finished()) else {
                    return Err(AppError::Conflict(
                        "the job ended before its savepoint was taken".into(),
                    ));
                };
                if let Some(c) = l
                    .handle
                    .metrics()
                    .last_checkpoint
                    .filter(|c| Some(c.id) != previous)
                {
                    return Ok(c.id);
                }
                if asked.elapsed() >= Duration::from_millis(500) {
                    l.handle.checkpoint_now();
                    asked = Instant::now();
                }
            }
            if Instant::now() > deadline {
                return Err(AppError::Unavailable(
                    "no checkpoint completed within 60 s for the savepoint".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits (up to 10 s) for a job whose state already says it ended to
    /// finish its thread (removing its checkpoints, flushing its sink),
    /// and takes it in.
    fn settle(&self, entry: &JobEntry) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let ending = lock(&entry.live)
                .as_ref()
                .is_some_and(|l| !l.handle.is_finished() && l.handle.state().is_terminal());
            if !ending {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.reap(entry);
    }

    /// Removes a job that is not running, with its savepoints.
    pub fn delete(&self, entry: &JobEntry) -> Result<(), AppError> {
        self.settle(entry);
        if entry.is_running() {
            return Err(AppError::Conflict(format!(
                "job `{}` is running; cancel or stop it first",
                entry.id
            )));
        }
        self.reap(entry);
        savepoints::remove_of_job(&entry.tenant, &entry.id);
        std::fs::remove_dir_all(entry.dir())?;
        self.entries
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(entry.tenant.name.clone(), entry.id.clone()));
        Ok(())
    }

    /// Starts every job the server keeps running (after a restart), each
    /// from its latest checkpoint; one that cannot start is kept failed.
    pub fn resume_all(&self) {
        for entry in self.list(None) {
            if entry.record().desired != Desired::Running {
                continue;
            }
            if let Err(e) = self.start(&entry, StartFrom::Latest, false) {
                tracing::error!(
                    "job `{}` of tenant `{}` cannot be resumed: {e}",
                    entry.id,
                    entry.tenant.name
                );
                let _ = entry.update(|r| {
                    r.desired = Desired::Failed;
                    r.last_error = Some(format!("cannot be resumed after a server restart: {e}"));
                });
            }
        }
    }

    /// One round of the monitor: takes in ended jobs, counts dead letters
    /// and stops jobs whose keyed state takes their tenant over its quota.
    pub fn tick(&self) {
        for entry in self.list(None) {
            self.reap(&entry);
            count_dead_letters(&entry);
        }
        for tenant in self.tenants() {
            self.enforce_state_quota(&tenant);
        }
    }

    fn tenants(&self) -> Vec<Arc<Tenant>> {
        let mut seen: BTreeMap<String, Arc<Tenant>> = BTreeMap::new();
        for e in self.list(None) {
            seen.entry(e.tenant.name.clone())
                .or_insert_with(|| e.tenant.clone());
        }
        seen.into_values().collect()
    }

    fn enforce_state_quota(&self, tenant: &Tenant) {
        let limit = tenant.record().quota.state_memory;
        let running: Vec<Arc<JobEntry>> = self
            .list(Some(&tenant.name))
            .into_iter()
            .filter(|e| e.is_running())
            .collect();
        let total: u64 = running.iter().map(|e| state_bytes(e)).sum();
        if total <= limit {
            return;
        }
        let Some(biggest) = running.iter().max_by_key(|e| state_bytes(e)) else {
            return;
        };
        let message = format!(
            "keyed state of {total} bytes takes tenant `{}` over its state-memory quota of {limit}; the job was stopped",
            tenant.name
        );
        tracing::warn!("job `{}`: {message}", biggest.id);
        let _ = biggest.update(|r| r.last_error = Some(message.clone()));
        let _ = self.cancel(biggest, Desired::Failed);
        let _ = biggest.update(|r| {
            r.desired = Desired::Failed;
            r.last_error = Some(message);
        });
    }
}

/// Bytes of keyed state at the job's last checkpoint.
fn state_bytes(entry: &JobEntry) -> u64 {
    entry
        .metrics()
        .and_then(|m| m.last_checkpoint)
        .map_or(0, |c| c.bytes)
}

/// The cause of a guest fault, from its message, for the traps metric.
pub fn trap_cause(error: &str) -> &'static str {
    if error.contains("call deadline") {
        "deadline"
    } else if error.contains("--max-memory") || error.contains("memory") {
        "memory"
    } else if error.contains("wasm stack") {
        "stack"
    } else if error.contains("fuel") {
        "fuel"
    } else if error.contains("panicked") || error.contains("unreachable") {
        "panic"
    } else if error.contains("over the limit") {
        "output-limit"
    } else {
        "other"
    }
}

/// Reads the dead letters the job wrote since last time.
fn count_dead_letters(entry: &JobEntry) {
    use std::io::{Read, Seek};
    let Some(path) = entry.lib_dir().map(|d| d.join("dead-letter.jsonl")) else {
        return;
    };
    let mut dead = lock(&entry.dead);
    let Ok(mut f) = std::fs::File::open(&path) else {
        return;
    };
    let len = f.metadata().map_or(0, |m| m.len());
    if len <= dead.read || f.seek(std::io::SeekFrom::Start(dead.read)).is_err() {
        return;
    }
    let mut text = String::new();
    let _ = f
        .take((len - dead.read).min(4 << 20))
        .read_to_string(&mut text);
    let complete = text.rfind('\n').map_or(0, |i| i + 1);
    for line in text[..complete].lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let fault = v["fault"].as_str().unwrap_or("unknown").to_string();
        if fault == "guest" {
            let cause = trap_cause(v["error"].as_str().unwrap_or(""));
            *dead.by_cause.entry(cause.to_string()).or_default() += 1;
        }
        *dead.by_fault.entry(fault).or_default() += 1;
    }
    dead.read += complete as u64;
}
