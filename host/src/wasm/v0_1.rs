//! `sluice:stream@0.1.0`, released and frozen: the bindings generated from
//! `wit/sluice-stream@0.1.0/stream.wit`, and the conversion of what its guests return into the
//! host's own types. One file per served WIT version; `world.rs` picks.

use wasmtime::Store;
use wasmtime::component::InstancePre;

use crate::config::description::{AggregateKind, Aggregation, DescribedLimits, Description};
use crate::restart::RestartStrategy;
use crate::wasm::sandbox::GuestState;
use crate::wasm::types::BatchOutput;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/sluice-stream@0.1.0",
        world: "stream-job",
    });
}

use bindings::sluice::stream::types as wit;

/// The package this module serves.
pub const PACKAGE: &str = "sluice:stream@0.1.0";
/// The interfaces a 0.1.0 guest exports.
pub const EXPORTS: [&str; 2] = ["sluice:stream/operator@0.1.0", "sluice:stream/job@0.1.0"];

pub(crate) type Pre = bindings::StreamJobPre<GuestState>;
pub(crate) type Bindings = bindings::StreamJob;

/// Checks the component's exports against the world.
pub(crate) fn pre(pre: InstancePre<GuestState>) -> wasmtime::Result<Pre> {
    Pre::new(pre)
}

pub(crate) fn open(
    b: &Bindings,
    store: &mut Store<GuestState>,
    params: &[(String, String)],
) -> wasmtime::Result<Result<(), String>> {
    b.sluice_stream_operator().call_open(store, params)
}

pub(crate) fn flat_map(
    b: &Bindings,
    store: &mut Store<GuestState>,
    records: &[u8],
    keyed: bool,
) -> wasmtime::Result<BatchOutput> {
    let operator = b.sluice_stream_operator();
    let r = if keyed {
        operator.call_flat_map_keyed(store, records)?
    } else {
        operator.call_flat_map(store, records)?
    };
    Ok(BatchOutput {
        output: r.output,
        failed: r.failed.map(|e| (e.index, e.message)),
        changes: Vec::new(),
    })
}

pub(crate) fn describe(
    b: &Bindings,
    store: &mut Store<GuestState>,
    params: &[(String, String)],
) -> wasmtime::Result<Description> {
    let d = b.sluice_stream_job().call_describe(store, params)?;
    Ok(Description {
        name: d.name,
        source: d.source,
        sink: d.sink,
        aggregation: d.aggregation.map(|a| Aggregation {
            kind: match a.kind {
                wit::AggregateKind::Sum => AggregateKind::Sum,
                wit::AggregateKind::Count => AggregateKind::Count,
                wit::AggregateKind::Min => AggregateKind::Min,
                wit::AggregateKind::Max => AggregateKind::Max,
            },
            field: a.field,
        }),
        checkpoint_interval_ms: d.checkpoint_interval_ms,
        restart: d.restart.map(restart),
        parallelism: d.parallelism,
        limits: d.limits.map(|l| DescribedLimits {
            memory_bytes: l.memory_bytes,
            call_timeout_ms: l.call_timeout_ms,
            max_rows_per_record: l.max_rows_per_record,
            max_bytes_per_record: l.max_bytes_per_record,
        }),
        pipeline: None,
    })
}

fn restart(r: wit::RestartStrategy) -> RestartStrategy {
    match r {
        wit::RestartStrategy::None => RestartStrategy::None,
        wit::RestartStrategy::FixedDelay(f) => RestartStrategy::FixedDelay {
            attempts: f.attempts,
            delay_ms: f.delay_ms,
        },
        wit::RestartStrategy::FailureRate(f) => RestartStrategy::FailureRate {
            max_failures: f.max_failures,
            interval_ms: f.interval_ms,
            delay_ms: f.delay_ms,
        },
        wit::RestartStrategy::ExponentialDelay(e) => RestartStrategy::Exponential {
            initial_ms: e.initial_ms,
            max_ms: e.max_ms,
            multiplier: e.multiplier,
            reset_after_ms: e.reset_after_ms,
            jitter: e.jitter,
        },
    }
}
