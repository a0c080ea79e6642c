//! CPU metering while guests run, for a job whose sandbox names a
//! [`CpuMeter`] (a server's tenant): instead of trapping at a fixed epoch
//! deadline, the store calls back at every epoch tick; the callback charges
//! the CPU time the guest's thread used since the last tick to the meter,
//! which may make it wait (a tenant over its share), and traps only when
//! the call ran past its deadline — counted without the time it was made
//! to wait — or when the meter says the call must stop (its job was
//! cancelled). The guest's thread also runs at the meter's niceness, so
//! that under contention the kernel favours the owners of larger shares.
//! Without a meter, instances keep the plain epoch deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Store, UpdateDeadline};

use crate::config::sandbox::CpuMeter;

/// A store's data that can hold a call meter.
pub(crate) trait Metered: 'static {
    /// The meter of the call in progress, when the store is metered.
    fn cpu(&mut self) -> &mut Option<CallMeter>;
}

/// A metered instance's state for the call in progress.
pub(crate) struct CallMeter {
    meter: Arc<dyn CpuMeter>,
    deadline: Duration,
    started: Instant,
    waited: Duration,
    last_cpu: Duration,
}

impl CallMeter {
    /// Charges the CPU time used since the last charge; the charge's own
    /// wait is not part of the call's time.
    fn charge(&mut self) {
        let now = thread_cpu();
        let used = now.saturating_sub(self.last_cpu);
        let before = Instant::now();
        self.meter.charge(used);
        self.waited += before.elapsed();
        self.last_cpu = thread_cpu();
    }
}

/// Meters `store`'s guest calls with `meter` and a deadline of `deadline`.
pub(crate) fn install<T: Metered>(
    store: &mut Store<T>,
    meter: Arc<dyn CpuMeter>,
    deadline: Duration,
) {
    *store.data_mut().cpu() = Some(CallMeter {
        meter,
        deadline,
        started: Instant::now(),
        waited: Duration::ZERO,
        last_cpu: thread_cpu(),
    });
    store.epoch_deadline_callback(|mut cx| {
        let Some(m) = cx.data_mut().cpu().as_mut() else {
            return Ok(UpdateDeadline::Continue(1));
        };
        m.charge();
        if m.meter.interrupted() || m.started.elapsed().saturating_sub(m.waited) > m.deadline {
            return Err(wasmtime::Trap::Interrupt.into());
        }
        Ok(UpdateDeadline::Continue(1))
    });
    store.set_epoch_deadline(1);
}

/// Starts metering a call; `false` when the store is not metered.
pub(crate) fn arm<T: Metered>(store: &mut Store<T>) -> bool {
    let Some(m) = store.data_mut().cpu().as_mut() else {
        return false;
    };
    renice(m.meter.niceness());
    m.started = Instant::now();
    m.waited = Duration::ZERO;
    m.last_cpu = thread_cpu();
    store.set_epoch_deadline(1);
    true
}

/// Charges the rest of a call that returned.
pub(crate) fn settle<T: Metered>(store: &mut Store<T>) {
    if let Some(m) = store.data_mut().cpu().as_mut() {
        m.charge();
    }
}

thread_local! {
    static NICENESS: std::cell::Cell<i32> = const { std::cell::Cell::new(0) };
}

/// Sets this thread's niceness to `nice` unless it already is (a thread
/// may raise its niceness, not lower it again without privilege); the
/// threads it starts afterwards inherit it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn renice(nice: i32) {
    let nice = nice.clamp(0, 19);
    if NICENESS.get() == nice {
        return;
    }
    NICENESS.set(nice);
    // SAFETY: setpriority takes plain integers; on Linux, `who` 0 with
    // PRIO_PROCESS names the calling thread only.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, nice);
    }
}

/// Elsewhere threads keep their priority.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn renice(nice: i32) {
    NICENESS.set(nice);
}

/// CPU time this thread has used.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to write.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0;
    if !ok {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Wall time stands in for CPU time where the thread's clock is not read.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn thread_cpu() -> Duration {
    use std::sync::OnceLock;
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}
