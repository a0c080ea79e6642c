//! Write Sluice stream functions in Rust.
//!
//! A guest is two plain functions — a flat-map that turns one input line
//! into any number of rows, and a key-selector that picks the key of a row —
//! plus one line that exports them. The SDK owns the WIT bindings, the
//! batching and the encoding of records across the WebAssembly boundary.
//!
//! ```no_run
//! use sluice_guest::{Collector, JobDescription, Params, Restart, Row, Value};
//! use std::time::Duration;
//!
//! /// Split a line into (word, 1); the line `ERROR` fails the task.
//! fn flat_map(line: &str, out: &mut Collector) {
//!     if line == "ERROR" {
//!         panic!("received the line `ERROR`");
//!     }
//!     for word in line.split_whitespace() {
//!         out.emit((word, 1));
//!     }
//! }
//!
//! /// Key by the word.
//! fn key(row: &Row) -> Value<'_> {
//!     row.field(0)
//! }
//!
//! /// The job's defaults; flags and a TOML file override them.
//! fn describe(_params: &Params) -> JobDescription {
//!     JobDescription::new("wordcount")
//!         .source("socket://localhost:9100")
//!         .sum(1)
//!         .checkpoint_every(Duration::from_secs(1))
//!         .restart(Restart::fixed_delay(3, Duration::from_secs(10)))
//! }
//!
//! sluice_guest::export!(flat_map, key, describe = describe);
//! ```
//!
//! # A guest crate of your own
//!
//! `host new NAME` creates one, anywhere (`--dir DIR`, default the current
//! directory), and prints the commands that build and run it, with the
//! paths of your machine (`host` is `target/release/host` in the Sluice
//! checkout):
//!
//! ```text
//! host new my-guest
//! cd my-guest && cargo build --release
//! host run --module target/wasm32-wasip2/release/my_guest.wasm --source -
//! ```
//!
//! The build writes `target/wasm32-wasip2/release/NAME.wasm` with every `-`
//! of the crate's name written `_` (cargo's rule for a library's file), so
//! `my-guest` builds `my_guest.wasm`. Written by hand, the crate needs:
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! sluice-guest = { path = "/path/to/sluice/guest-sdk" }
//!
//! # The guest settings: small and fast; a panic traps, and the host
//! # replaces the instance.
//! [profile.release]
//! opt-level = 3
//! lto = true
//! codegen-units = 1
//! panic = "abort"
//! strip = true
//! debug = false
//!
//! # Its own workspace, also when it sits inside another one's directory.
//! [workspace]
//! ```
//!
//! and a `.cargo/config.toml` with `[build] target = "wasm32-wasip2"` (or
//! pass `--target wasm32-wasip2` to every build); `rustup target add
//! wasm32-wasip2` installs the target. Inside the Sluice workspace the examples
//! build with its `guest` profile instead: `cargo build --profile guest
//! --target wasm32-wasip2 -p wordcount` writes
//! `target/wasm32-wasip2/guest/wordcount.wasm`.
//!
//! Guests must be deterministic: the host replays records after a failure
//! and finds a failing record by running it again in a fresh instance.
//! Panicking is the way to fail a record; returning `Err` from the flat-map
//! does the same without a trap.
#![warn(missing_docs)]

mod collector;
mod describe;
mod encoding;
pub mod pipeline;
mod value;

pub use collector::{Collector, IntoRow};
pub use describe::{Aggregation, JobDescription, Limits, Params, Restart};
pub use value::{IntoValue, Row, RowIter, Value};

#[doc(hidden)]
pub mod wit {
    //! Generated bindings; not part of the SDK's API.
    wit_bindgen::generate!({
        path: "../wit/sluice-stream@0.1.0",
        world: "stream-job",
        pub_export_macro: true,
        export_macro_name: "__export_stream_job",
        default_bindings_module: "::sluice_guest::wit",
    });
}

#[doc(hidden)]
pub mod wit2 {
    //! Generated bindings of `sluice:stream@0.2.0`; not part of the SDK's API.
    wit_bindgen::generate!({
        path: "../wit/sluice-stream@0.2.0",
        world: "pipeline-job",
        pub_export_macro: true,
        export_macro_name: "__export_pipeline_job",
        default_bindings_module: "::sluice_guest::wit2",
    });
}

#[doc(hidden)]
pub mod __rt;

/// Exports a flat-map and a key-selector as a Sluice guest.
///
/// ```text
/// sluice_guest::export!(FLAT_MAP, KEY);
/// sluice_guest::export!(FLAT_MAP, field = N);
/// sluice_guest::export!(FLAT_MAP, KEY, describe = DESCRIBE);
/// sluice_guest::export!(FLAT_MAP, KEY, describe = DESCRIBE, open = OPEN);
/// ```
///
/// - `FLAT_MAP: fn(&str, &mut Collector)`, or returning `Result<(), E>`
///   with `E: Display` to fail a record without panicking;
/// - `KEY: fn(&Row) -> Value`; or `field = N`, the key is field `N` of the
///   row (`Value::Null` past its end), as `|row| row.field(N)` is, but
///   copied from the row's encoding as it is emitted, without a call;
/// - `DESCRIBE: fn(&Params) -> JobDescription` (optional);
/// - `OPEN: fn(&Params) -> Result<(), String>` (optional), called once on
///   every fresh instance before any record.
#[macro_export]
macro_rules! export {
    ($flat_map:path, field = $field:expr $(, describe = $describe:path)? $(, open = $open:path)? $(,)?) => {
        $crate::__export_guest!($flat_map, |row| row.field($field), ::core::option::Option::Some($field) $(, describe = $describe)? $(, open = $open)?);
    };
    ($flat_map:path, $key:path $(, describe = $describe:path)? $(, open = $open:path)? $(,)?) => {
        $crate::__export_guest!($flat_map, $key, ::core::option::Option::None $(, describe = $describe)? $(, open = $open)?);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __export_guest {
    ($flat_map:path, $key:expr, $field:expr $(, describe = $describe:path)? $(, open = $open:path)?) => {
        #[doc(hidden)]
        struct __SluiceGuest;

        impl $crate::__rt::UserFunctions for __SluiceGuest {
            const KEY_FIELD: ::core::option::Option<usize> = $field;
            fn flat_map(
                line: &str,
                out: &mut $crate::Collector,
            ) -> ::core::result::Result<(), ::std::string::String> {
                $crate::__rt::FlatMapReturn::into_result($flat_map(line, out))
            }
            fn key(row: &$crate::Row) -> $crate::Value<'_> {
                let key: fn(&$crate::Row) -> $crate::Value<'_> = $key;
                key(row)
            }
            $(
            fn describe(params: &$crate::Params) -> $crate::JobDescription {
                $describe(params)
            }
            )?
            $(
            fn open(params: &$crate::Params) -> ::core::result::Result<(), ::std::string::String> {
                $open(params)
            }
            )?
        }

        $crate::__rt::glue!(__SluiceGuest);
    };
}

/// Exports a pipeline (`sluice:stream@0.2.0`): `JOB: fn(&Params) -> Job`
/// builds the job (see [`pipeline`]).
///
/// ```text
/// sluice_guest::pipeline!(JOB);
/// ```
#[macro_export]
macro_rules! pipeline {
    ($job:path) => {
        #[doc(hidden)]
        struct __SluicePipeline;

        impl $crate::pipeline::rt::UserJob for __SluicePipeline {
            fn job(params: &$crate::Params) -> $crate::pipeline::Job {
                $job(params)
            }
        }

        const _: () = {
            use ::std::string::String;
            use ::std::vec::Vec;
            use $crate::wit2::sluice::stream::types::{BatchHeader, BatchResult, JobDescription};

            impl $crate::wit2::exports::sluice::stream::operator::Guest for __SluicePipeline {
                fn open(params: Vec<(String, String)>) -> ::core::result::Result<(), String> {
                    $crate::pipeline::rt::open::<__SluicePipeline>(params)
                }
                fn map(stage: u32, header: BatchHeader, input: Vec<u8>) -> BatchResult {
                    $crate::pipeline::rt::map::<__SluicePipeline>(stage, header, input)
                }
                fn process(
                    stage: u32,
                    header: BatchHeader,
                    input: Vec<u8>,
                    keys: Vec<u8>,
                ) -> BatchResult {
                    $crate::pipeline::rt::process::<__SluicePipeline>(stage, header, input, keys)
                }
                fn window_add(
                    stage: u32,
                    _header: BatchHeader,
                    input: Vec<u8>,
                    slots: Vec<u8>,
                ) -> BatchResult {
                    $crate::pipeline::rt::window_add::<__SluicePipeline>(stage, input, slots)
                }
                fn window_merge(stage: u32, input: Vec<u8>) -> BatchResult {
                    $crate::pipeline::rt::window_merge::<__SluicePipeline>(stage, input)
                }
                fn window_fire(stage: u32, _header: BatchHeader, input: Vec<u8>) -> BatchResult {
                    $crate::pipeline::rt::window_fire::<__SluicePipeline>(stage, input)
                }
            }

            impl $crate::wit2::exports::sluice::stream::job::Guest for __SluicePipeline {
                fn describe(params: Vec<(String, String)>) -> JobDescription {
                    $crate::pipeline::rt::describe::<__SluicePipeline>(params)
                }
            }
        };

        $crate::wit2::__export_pipeline_job!(__SluicePipeline);
    };
}
