//! The sandbox a guest instance runs in: its store's data (WASI state that
//! grants only what the job grants), the memory limiter that sums all of an
//! instance's memories, the frozen clock of a guest without
//! `--allow-clocks`, and the call deadline in epoch ticks.

use std::time::Duration;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::config::sandbox::Sandbox;
use crate::wasm::log::GuestLog;
use crate::wasm::trap::GuestFailure;

/// How often the epoch ticks: the granularity of call deadlines.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The store's data.
pub(crate) struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    /// The CPU meter of the call in progress, when the job is metered.
    pub(crate) cpu: Option<crate::wasm::meter::CallMeter>,
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl crate::wasm::meter::Metered for GuestState {
    fn cpu(&mut self) -> &mut Option<crate::wasm::meter::CallMeter> {
        &mut self.cpu
    }
}

impl GuestState {
    /// The store data of a fresh instance in `sandbox`, writing its stdout
    /// and stderr to `log`.
    pub(crate) fn new(sandbox: &Sandbox, log: &GuestLog) -> Result<Self, GuestFailure> {
        let mut builder = WasiCtx::builder();
        builder.stdout(log.clone()).stderr(log.clone());
        for name in &sandbox.grants.env {
            if let Ok(value) = std::env::var(name) {
                builder.env(name, value);
            }
        }
        for dir in &sandbox.grants.dirs {
            let perms = if dir.read_only {
                wasmtime_wasi::FsPerms::ReadOnly
            } else {
                wasmtime_wasi::FsPerms::ReadWrite
            };
            builder
                .preopened_dir(&dir.host, &dir.guest, perms)
                .map_err(|e| GuestFailure {
                    message: format!(
                        "cannot grant directory `{}`: {e}; check that it exists",
                        dir.host.display()
                    ),
                    record: None,
                })?;
        }
        if !sandbox.grants.clocks {
            builder.wall_clock(FrozenClock).monotonic_clock(FrozenClock);
        }
        Ok(GuestState {
            wasi: builder.build(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                limit: sandbox.limits.memory_bytes,
                used: 0,
            },
            cpu: None,
        })
    }
}

/// The call deadline of `sandbox` in epoch ticks.
pub(crate) fn deadline_ticks(sandbox: &Sandbox) -> u64 {
    (sandbox.limits.call_timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64 + 1
}

/// Caps the linear memory of all of an instance's memories together.
pub(crate) struct MemoryLimiter {
    limit: u64,
    used: u64,
}

const MAX_TABLE_ELEMENTS: usize = 1 << 20;

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.used + desired.saturating_sub(current) as u64;
        if total > self.limit {
            return Err(wasmtime::Error::msg(format!(
                "guest tried to grow its memory to {} bytes, over the limit of {} (--max-memory)",
                total, self.limit
            )));
        }
        self.used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            return Err(wasmtime::Error::msg(format!(
                "guest tried to grow a table to {desired} elements, over the limit of {MAX_TABLE_ELEMENTS}"
            )));
        }
        Ok(true)
    }
}

/// The clock a guest without `--allow-clocks` sees: always zero.
struct FrozenClock;

impl wasmtime_wasi::HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl wasmtime_wasi::HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}
