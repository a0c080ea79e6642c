//! A live guest instance: a store of its own in the job's sandbox, its
//! exports, and the calls the host makes — `open` on every fresh
//! instance, a batch at a time, and the job description. One per subtask;
//! dropped after any trap (a trapped store cannot be entered again).

use wasmtime::Store;

use crate::config::description::Description;
use crate::config::sandbox::{Limits, Sandbox};
use crate::wasm::log::GuestLog;
use crate::wasm::meter;
use crate::wasm::module::Module;
use crate::wasm::sandbox::{GuestState, deadline_ticks};
use crate::wasm::trap::{GuestFailure, TrapContext};
use crate::wasm::types::{BatchOutput, Header};
use crate::wasm::v0_2::Call;
use crate::wasm::world::Exports;

/// A live guest instance.
pub struct Instance {
    store: Store<GuestState>,
    exports: Exports,
    log: GuestLog,
    limits: Limits,
    ticks: u64,
    fuel: bool,
    max_stack: usize,
}

impl Module {
    /// Creates a fresh instance with the default sandbox and calls its
    /// `open` with `params`.
    pub fn instantiate(&self, params: &[(String, String)]) -> Result<Instance, GuestFailure> {
        self.instantiate_with(params, &Sandbox::default())
    }

    /// Creates a fresh instance in `sandbox` and calls its `open` with `params`.
    pub fn instantiate_with(
        &self,
        params: &[(String, String)],
        sandbox: &Sandbox,
    ) -> Result<Instance, GuestFailure> {
        let log = GuestLog::new(sandbox.limits.log_bytes);
        let mut store = Store::new(&self.runtime.engine, GuestState::new(sandbox, &log)?);
        store.limiter(|s| &mut s.limiter);
        match &sandbox.meter {
            Some(m) => meter::install(&mut store, m.clone(), sandbox.limits.call_timeout),
            None => {
                store.epoch_deadline_trap();
                store.set_epoch_deadline(deadline_ticks(sandbox));
            }
        }
        let fuel = self.runtime.options.fuel;
        if fuel {
            let _ = store.set_fuel(sandbox.limits.fuel.unwrap_or(u64::MAX));
        }
        let exports = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| GuestFailure::from_error("instantiating the guest", &e, &log))?;
        let mut instance = Instance {
            store,
            exports,
            log,
            limits: sandbox.limits.clone(),
            ticks: deadline_ticks(sandbox),
            fuel,
            max_stack: self.runtime.options.max_stack,
        };
        match instance.exports.open(&mut instance.store, params) {
            Ok(Ok(())) => Ok(instance),
            Ok(Err(message)) => Err(GuestFailure {
                message: format!("the guest's `open` failed: {message}"),
                record: None,
            }),
            Err(e) => {
                Err(instance.failure("starting the guest (its initialisation, then `open`)", &e))
            }
        }
    }

    /// Calls the guest's `describe` in a throwaway instance.
    pub fn describe(&self, params: &[(String, String)]) -> Result<Description, GuestFailure> {
        let mut instance = self.instantiate(params)?;
        instance.arm();
        let result = instance.exports.describe(&mut instance.store, params);
        result.map_err(|e| instance.failure("the guest's job description", &e))
    }
}

impl Instance {
    /// Resets the call deadline and the fuel budget before a call.
    fn arm(&mut self) {
        if !meter::arm(&mut self.store) {
            self.store.set_epoch_deadline(self.ticks);
        }
        if self.fuel {
            let _ = self.store.set_fuel(self.limits.fuel.unwrap_or(u64::MAX));
        }
    }

    /// Runs flat-map on an encoded batch; with `keyed`, chained with the
    /// key-selector (`flat-map-keyed`).
    pub fn flat_map(&mut self, records: &[u8], keyed: bool) -> Result<BatchOutput, GuestFailure> {
        self.arm();
        let result = self.exports.flat_map(&mut self.store, records, keyed);
        meter::settle(&mut self.store);
        result.map_err(|e| self.failure("flat-map", &e))
    }

    /// Runs a call of a 0.2.0 guest's stage `stage`.
    pub fn call(
        &mut self,
        stage: u32,
        header: Header,
        call: Call<'_>,
    ) -> Result<BatchOutput, GuestFailure> {
        self.arm();
        let result = self.exports.call(&mut self.store, stage, header, call);
        meter::settle(&mut self.store);
        result.map_err(|e| self.failure(call.name(), &e))
    }

    /// What the guest wrote to stdout and stderr since the last call, for the log.
    pub fn take_log(&self) -> String {
        self.log.take()
    }

    fn failure(&self, during: &str, e: &wasmtime::Error) -> GuestFailure {
        let cx = TrapContext {
            limits: &self.limits,
            max_stack: self.max_stack,
            log: &self.log,
        };
        GuestFailure::classify(during, e, &cx)
    }
}
