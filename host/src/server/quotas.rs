//! A tenant's quotas and their admission checks, and its CPU share.
//!
//! Admission control refuses, before anything starts, what would take a
//! tenant over a quota: running jobs, guest instances (total parallelism),
//! memory per instance and in total (instances × their memory limit),
//! stored bytes (checkpoints, savepoints, modules and files), module size
//! and count. Keyed state, which the host holds for the tenant beyond any
//! guest's memory limit, is measured at each checkpoint and a job that
//! takes the tenant over its quota is stopped.
//!
//! CPU is enforced while guests run: [`CpuShare`] is the tenant's
//! [`CpuMeter`], charged the CPU time of every guest call at each epoch
//! tick; a tenant that used more than its share of cores waits on the
//! guest's own thread, so it slows only itself.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::sandbox::CpuMeter;
use crate::server::error::AppError;

/// A tenant's limits. Sizes are bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct Quota {
    /// Jobs running at once.
    pub running_jobs: u64,
    /// Guest instances at once: the sum of the running jobs' parallelism.
    pub parallelism: u64,
    /// The most a job's `max-memory` (per guest instance) may be.
    pub memory_per_instance: u64,
    /// Guest memory in total: the running jobs' parallelism × max-memory.
    pub memory: u64,
    /// Host memory for keyed state, summed over running jobs (measured at
    /// each checkpoint).
    pub state_memory: u64,
    /// Bytes stored: checkpoints, savepoints, modules and files.
    pub storage: u64,
    /// The largest module.
    pub module_size: u64,
    /// Modules kept.
    pub modules: u64,
    /// CPU, in cores (0.5 is half a core), shared by the tenant's guests.
    pub cpu: f64,
}

impl Default for Quota {
    fn default() -> Self {
        Quota {
            running_jobs: 10,
            parallelism: 16,
            memory_per_instance: 256 << 20,
            memory: 2 << 30,
            state_memory: 512 << 20,
            storage: 4 << 30,
            module_size: 64 << 20,
            modules: 50,
            cpu: 1.0,
        }
    }
}

/// What a tenant uses of each quota.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct Usage {
    /// Jobs running.
    pub running_jobs: u64,
    /// Guest instances of running jobs.
    pub parallelism: u64,
    /// Guest memory of running jobs (instances × max-memory).
    pub memory: u64,
    /// Keyed state at the running jobs' last checkpoints.
    pub state_memory: u64,
    /// Bytes stored.
    pub storage: u64,
    /// Modules kept.
    pub modules: u64,
    /// CPU time used by guests, in seconds.
    pub cpu_seconds: f64,
    /// Time guests waited for being over the CPU share, in seconds.
    pub cpu_throttled_seconds: f64,
}

/// Refuses `requested` more of `resource` when `used + requested > limit`.
pub fn admit(
    resource: &'static str,
    limit: u64,
    used: u64,
    requested: u64,
) -> Result<(), AppError> {
    if used.saturating_add(requested) > limit {
        return Err(AppError::Quota {
            resource,
            limit,
            used,
            requested,
        });
    }
    Ok(())
}

/// What a job asks for when it starts.
#[derive(Debug, Clone, Copy)]
pub struct Demand {
    /// Guest instances.
    pub parallelism: u64,
    /// Memory limit per instance.
    pub memory_per_instance: u64,
}

/// Checks a job's start against the tenant's quota and use.
pub fn admit_job(quota: &Quota, usage: &Usage, demand: Demand) -> Result<(), AppError> {
    admit("running-jobs", quota.running_jobs, usage.running_jobs, 1)?;
    admit(
        "parallelism",
        quota.parallelism,
        usage.parallelism,
        demand.parallelism,
    )?;
    admit(
        "memory-per-instance",
        quota.memory_per_instance,
        0,
        demand.memory_per_instance,
    )?;
    admit(
        "memory",
        quota.memory,
        usage.memory,
        demand
            .parallelism
            .saturating_mul(demand.memory_per_instance),
    )?;
    admit("storage", quota.storage, usage.storage, 0)?;
    admit("state-memory", quota.state_memory, usage.state_memory, 0)
}

/// The longest a guest is made to wait at once; it waits again at the
/// next tick if still over.
const MAX_WAIT: Duration = Duration::from_millis(100);
/// How much unused share a tenant may save up, in seconds of its share.
const BURST: f64 = 0.1;

/// A tenant's CPU share: a budget that fills at `cores` CPU-seconds per
/// second (up to a small burst) and that every guest call is charged.
#[derive(Debug)]
pub struct CpuShare {
    cores_bits: AtomicU64,
    bucket: Mutex<Bucket>,
    used_ns: AtomicU64,
    throttled_ns: AtomicU64,
}

#[derive(Debug)]
struct Bucket {
    /// CPU nanoseconds the tenant may still use; below zero it waits.
    balance: f64,
    last: Instant,
}

impl CpuShare {
    /// A share of `cores`.
    pub fn new(cores: f64) -> Self {
        CpuShare {
            cores_bits: AtomicU64::new(cores.to_bits()),
            bucket: Mutex::new(Bucket {
                balance: 0.0,
                last: Instant::now(),
            }),
            used_ns: AtomicU64::new(0),
            throttled_ns: AtomicU64::new(0),
        }
    }

    /// Changes the share.
    pub fn set_cores(&self, cores: f64) {
        self.cores_bits.store(cores.to_bits(), Ordering::Relaxed);
    }

    fn cores(&self) -> f64 {
        f64::from_bits(self.cores_bits.load(Ordering::Relaxed))
    }

    /// CPU time charged so far.
    pub fn used(&self) -> Duration {
        Duration::from_nanos(self.used_ns.load(Ordering::Relaxed))
    }

    /// Time guests were made to wait so far.
    pub fn throttled(&self) -> Duration {
        Duration::from_nanos(self.throttled_ns.load(Ordering::Relaxed))
    }

    /// Charges `used` and returns how long the caller should wait.
    fn debit(&self, used: Duration) -> Duration {
        let cores = self.cores().max(0.01);
        let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(b.last).as_nanos() as f64 * cores;
        b.last = now;
        b.balance = (b.balance + refill).min(BURST * 1e9 * cores);
        b.balance -= used.as_nanos() as f64;
        if b.balance >= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_nanos((-b.balance / cores) as u64).min(MAX_WAIT)
    }
}

impl CpuMeter for CpuShare {
    /// A share below one core yields to larger ones under contention:
    /// niceness 19 (the kernel's lowest weight, 15 against 1,024) at half
    /// a core or less, falling to 0 at one core. Proportional weights
    /// (niceness 3 at half a core) were measured not to be enough: a
    /// pipeline's threads hand batches to each other, and each slice a
    /// neighbour takes stalls the whole pipeline.
    fn niceness(&self) -> i32 {
        let cores = self.cores();
        if cores >= 1.0 || cores.is_nan() {
            return 0;
        }
        (19.0 * (1.0 / cores.max(0.01)).log2())
            .round()
            .clamp(0.0, 19.0) as i32
    }

    fn charge(&self, used: Duration) {
        self.used_ns
            .fetch_add(used.as_nanos() as u64, Ordering::Relaxed);
        let wait = self.debit(used);
        if !wait.is_zero() {
            std::thread::sleep(wait);
            self.throttled_ns
                .fetch_add(wait.as_nanos() as u64, Ordering::Relaxed);
        }
    }
}

/// A job's meter: charges its tenant's share, and stops its guest calls
/// once the job is cancelled, so a cancel does not wait for a spinning
/// guest's deadline.
#[derive(Debug)]
pub struct JobMeter {
    share: std::sync::Arc<CpuShare>,
    cancelled: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl JobMeter {
    /// The meter of a job of the tenant with `share`, cancelled by
    /// `cancelled`.
    pub fn new(
        share: std::sync::Arc<CpuShare>,
        cancelled: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> Self {
        JobMeter { share, cancelled }
    }
}

impl CpuMeter for JobMeter {
    fn charge(&self, used: Duration) {
        self.share.charge(used);
    }

    fn interrupted(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    fn niceness(&self) -> i32 {
        self.share.niceness()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quota_refusal_names_the_resource_its_limit_and_its_use() {
        let quota = Quota {
            running_jobs: 1,
            ..Quota::default()
        };
        let usage = Usage {
            running_jobs: 1,
            ..Usage::default()
        };
        let demand = Demand {
            parallelism: 1,
            memory_per_instance: 1 << 20,
        };
        let err = admit_job(&quota, &usage, demand).expect_err("over");
        let p = err.problem();
        assert_eq!(
            (p.resource.as_deref(), p.limit, p.used),
            (Some("running-jobs"), Some(1), Some(1))
        );
    }

    #[test]
    fn a_smaller_share_runs_nicer() {
        let nice = |cores| CpuShare::new(cores).niceness();
        assert_eq!(
            (
                nice(2.0),
                nice(1.0),
                nice(0.9),
                nice(0.75),
                nice(0.5),
                nice(0.1)
            ),
            (0, 0, 3, 8, 19, 19)
        );
    }

    #[test]
    fn a_tenant_over_its_share_waits_in_proportion() {
        let share = CpuShare::new(0.5);
        // 20 ms of CPU at half a core costs 40 ms of wall time.
        let wait = share.debit(Duration::from_millis(20));
        assert!(
            wait >= Duration::from_millis(35) && wait <= Duration::from_millis(41),
            "{wait:?}"
        );
    }
}
