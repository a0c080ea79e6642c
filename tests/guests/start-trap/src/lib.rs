//! A guest whose module traps while it is being instantiated: a static
//! constructor (run by the module's initialisation, before any export is
//! called) hits `unreachable`. The host must refuse it before the job
//! starts.

use sluice_guest::{Collector, Row, Value};

#[cfg(target_arch = "wasm32")]
extern "C" fn trap_on_start() {
    core::arch::wasm32::unreachable();
}

#[cfg(target_arch = "wasm32")]
#[used]
#[unsafe(link_section = ".init_array")]
static TRAP_ON_START: extern "C" fn() = trap_on_start;

fn flat_map(line: &str, out: &mut Collector) {
    for word in line.split_whitespace() {
        out.emit((word, 1));
    }
}

fn key(row: &Row) -> Value<'_> {
    row.field(0)
}

sluice_guest::export!(flat_map, key);
