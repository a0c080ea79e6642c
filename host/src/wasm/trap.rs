//! Trap classification: a failed guest call becomes one line for the user
//! that says what happened — the limit it ran into (with its value and the
//! flag that raises it), or the guest's own message (a Rust panic's, say)
//! with the trap.

use std::fmt;

use crate::config::sandbox::Limits;
use crate::wasm::log::GuestLog;
use crate::wasm::types::first_line;

/// A guest call that failed: a trap or an error the guest returned.
#[derive(Debug, Clone)]
pub struct GuestFailure {
    /// What happened, in one line, with the guest's own message when it
    /// printed one (a Rust panic message, for example).
    pub message: String,
    /// The failing record's index in the batch, when the guest said which.
    pub record: Option<u32>,
}

/// What a trap is measured against.
pub(crate) struct TrapContext<'a> {
    pub(crate) limits: &'a Limits,
    pub(crate) max_stack: usize,
    pub(crate) log: &'a GuestLog,
}

impl GuestFailure {
    /// Words a failed call `during` something for the user.
    pub(crate) fn classify(during: &str, e: &wasmtime::Error, cx: &TrapContext<'_>) -> Self {
        let mut f = GuestFailure::from_error(during, e, cx.log);
        let limit = match e.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => format!(
                "the guest ran past its call deadline of {} ms (raise it with --call-timeout)",
                cx.limits.call_timeout.as_millis()
            ),
            Some(wasmtime::Trap::OutOfFuel) => format!(
                "the guest used up its fuel budget of {} per call (raise it with --fuel)",
                cx.limits.fuel.unwrap_or(0)
            ),
            Some(wasmtime::Trap::StackOverflow) => format!(
                "the guest overflowed its wasm stack of {} bytes (raise it with --max-stack)",
                cx.max_stack
            ),
            _ => return f,
        };
        f.message = format!("{during} failed: {limit}");
        f
    }

    pub(crate) fn from_error(during: &str, e: &wasmtime::Error, log: &GuestLog) -> Self {
        let printed = log.take();
        if e.downcast_ref::<wasmtime::Trap>().is_none() {
            // A limit the host enforces: its own message says it all.
            let message = format!("{during} failed: {}", first_line(&format!("{e:#}")));
            if message.contains("(--max-memory)") || message.contains("over the limit of") {
                return GuestFailure {
                    message,
                    record: None,
                };
            }
        }
        let said = printed
            .lines()
            .rev()
            .find(|l| l.contains("panicked"))
            .or_else(|| printed.lines().rev().find(|l| !l.trim().is_empty()))
            .map(str::trim);
        let trap = match e.downcast_ref::<wasmtime::Trap>() {
            Some(trap) => trap.to_string(),
            None => first_line(&format!("{e:#}")).to_string(),
        };
        let message = match said {
            Some(said) => format!("{during} failed: guest {said} ({trap})"),
            None => format!("{during} failed: {trap}"),
        };
        GuestFailure {
            message,
            record: None,
        }
    }
}

impl fmt::Display for GuestFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for GuestFailure {}
