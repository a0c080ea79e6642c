//! `sluice:stream@0.2.0`: the bindings generated from
//! `wit/sluice-stream@0.2.0/stream.wit`, the calls a 0.2.0 pipeline makes
//! (map, process, window-add, window-merge, window-fire), and the
//! conversion of its job description into the host's own types.

use std::time::Duration;

use wasmtime::Store;
use wasmtime::component::InstancePre;

use crate::config::description::{DescribedLimits, Description};
use crate::config::pipeline::{
    Pipeline, SideOutput, Stage, StageKind, StateDecl, StateKind, TimeDomain, WatermarkStrategy,
    WindowAssigner, WindowFunction, WindowSpec,
};
use crate::restart::RestartStrategy;
use crate::wasm::sandbox::GuestState;
use crate::wasm::types::{BatchOutput, Header};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/sluice-stream@0.2.0",
        world: "pipeline-job",
    });
}

use bindings::sluice::stream::types as wit;

/// The package this module serves.
pub const PACKAGE: &str = "sluice:stream@0.2.0";
/// The interfaces a 0.2.0 guest exports.
pub const EXPORTS: [&str; 2] = ["sluice:stream/operator@0.2.0", "sluice:stream/job@0.2.0"];

pub(crate) type Pre = bindings::PipelineJobPre<GuestState>;
pub(crate) type Bindings = bindings::PipelineJob;

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

fn header(h: Header) -> wit::BatchHeader {
    wit::BatchHeader {
        processing_time: h.processing_time,
        watermark: h.watermark,
    }
}

fn output(r: wit::BatchResult) -> BatchOutput {
    BatchOutput {
        output: r.output,
        changes: r.changes,
        failed: r.failed.map(|e| (e.index, e.message)),
    }
}

/// The calls of a 0.2.0 stage.
#[derive(Debug, Clone, Copy)]
pub enum Call<'a> {
    /// A map stage's chain.
    Map(&'a [u8]),
    /// A process stage: the entries and the keys' states.
    Process(&'a [u8], &'a [u8]),
    /// A window stage's add: the rows and the slots.
    WindowAdd(&'a [u8], &'a [u8]),
    /// A session window stage's merge.
    WindowMerge(&'a [u8]),
    /// Fired windows.
    WindowFire(&'a [u8]),
}

impl Call<'_> {
    /// The call's name in the WIT, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Call::Map(_) => "map",
            Call::Process(..) => "process",
            Call::WindowAdd(..) => "window-add",
            Call::WindowMerge(_) => "window-merge",
            Call::WindowFire(_) => "window-fire",
        }
    }
}

pub(crate) fn call(
    b: &Bindings,
    store: &mut Store<GuestState>,
    stage: u32,
    h: Header,
    call: Call<'_>,
) -> wasmtime::Result<BatchOutput> {
    let op = b.sluice_stream_operator();
    let r = match call {
        Call::Map(input) => op.call_map(store, stage, header(h), input)?,
        Call::Process(input, keys) => op.call_process(store, stage, header(h), input, keys)?,
        Call::WindowAdd(input, slots) => {
            op.call_window_add(store, stage, header(h), input, slots)?
        }
        Call::WindowMerge(input) => op.call_window_merge(store, stage, input)?,
        Call::WindowFire(input) => op.call_window_fire(store, stage, header(h), input)?,
    };
    Ok(output(r))
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
        aggregation: None,
        checkpoint_interval_ms: d.checkpoint_interval_ms,
        restart: d.restart.map(restart),
        parallelism: d.parallelism,
        limits: d.limits.map(|l| DescribedLimits {
            memory_bytes: l.memory_bytes,
            call_timeout_ms: l.call_timeout_ms,
            max_rows_per_record: l.max_rows_per_record,
            max_bytes_per_record: l.max_bytes_per_record,
        }),
        pipeline: Some(Pipeline {
            stages: d.stages.into_iter().map(stage).collect(),
            side_outputs: d
                .side_outputs
                .into_iter()
                .map(|o| SideOutput {
                    name: o.name,
                    sink: o.sink,
                })
                .collect(),
            watermarks: d.watermarks.map(|w| WatermarkStrategy {
                out_of_orderness_ms: w.out_of_orderness_ms,
                idle_timeout_ms: w.idle_timeout_ms,
            }),
        }),
    })
}

fn domain(d: wit::TimeDomain) -> TimeDomain {
    match d {
        wit::TimeDomain::EventTime => TimeDomain::Event,
        wit::TimeDomain::ProcessingTime => TimeDomain::Processing,
    }
}

fn stage(s: wit::Stage) -> Stage {
    let kind = match s.kind {
        wit::StageKind::Map => StageKind::Map,
        wit::StageKind::Process(states) => StageKind::Process(
            states
                .into_iter()
                .map(|d| StateDecl {
                    name: d.name,
                    kind: match d.kind {
                        wit::StateKind::Value => StateKind::Value,
                        wit::StateKind::List => StateKind::List,
                        wit::StateKind::Map => StateKind::Map,
                    },
                    ttl: d.ttl_ms.map(Duration::from_millis),
                })
                .collect(),
        ),
        wit::StageKind::Window(w) => StageKind::Window(WindowSpec {
            assigner: match w.assigner {
                wit::WindowAssigner::Tumbling(size) => WindowAssigner::Tumbling(size),
                wit::WindowAssigner::Sliding(s) => WindowAssigner::Sliding {
                    size: s.size_ms,
                    slide: s.slide_ms,
                },
                wit::WindowAssigner::Session(gap) => WindowAssigner::Session(gap),
            },
            domain: domain(w.domain),
            allowed_lateness_ms: w.allowed_lateness_ms,
            late_output: w.late_output,
            function: match w.function {
                wit::WindowFunction::Aggregate => WindowFunction::Aggregate,
                wit::WindowFunction::Process => WindowFunction::Process,
            },
        }),
    };
    Stage {
        name: s.name,
        kind,
        keyed: s.keyed,
    }
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
