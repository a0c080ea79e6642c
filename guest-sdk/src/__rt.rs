//! The SDK's side of the generated bindings: batching and encoding around
//! the user's per-record functions. Used by [`crate::export!`]; not an API.

use crate::collector::{Collector, Key};
use crate::describe::{Aggregation, JobDescription, Params};
use crate::encoding::{self, Reader};
use crate::value::{Row, Value};
use crate::wit::sluice::stream::types as wit;

/// The user's functions, as gathered by [`crate::export!`].
pub trait UserFunctions {
    /// The flat-map, its result normalised.
    fn flat_map(line: &str, out: &mut Collector) -> Result<(), String>;
    /// The key-selector.
    fn key(row: &Row) -> Value<'_>;
    /// The key's field, when the key is a field of the row (`field = N`):
    /// the collector copies it without calling `key`.
    const KEY_FIELD: Option<usize> = None;
    /// The job description.
    fn describe(_params: &Params) -> JobDescription {
        JobDescription::default()
    }
    /// Called on every fresh instance.
    fn open(_params: &Params) -> Result<(), String> {
        Ok(())
    }
}

/// What a flat-map may return: `()` or `Result<(), E: Display>`.
pub trait FlatMapReturn {
    /// `Err` with the message when the record failed.
    fn into_result(self) -> Result<(), String>;
}

impl FlatMapReturn for () {
    #[inline]
    fn into_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: std::fmt::Display> FlatMapReturn for Result<(), E> {
    #[inline]
    fn into_result(self) -> Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}

/// `open`: keeps the parameters and installs a one-line panic message, so
/// the host's log shows `panicked at src/lib.rs:7:9: message`.
pub fn open<U: UserFunctions>(params: Vec<(String, String)>) -> Result<(), String> {
    panic_hook();
    U::open(&Params(params))
}

/// Installs a one-line panic message: `panicked at src/lib.rs:7: message`.
pub fn panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = if let Some(s) = info.payload().downcast_ref::<&str>() {
            s
        } else if let Some(s) = info.payload().downcast_ref::<String>() {
            s.as_str()
        } else {
            "panic"
        };
        match info.location() {
            Some(at) => eprintln!("panicked at {}:{}: {message}", at.file(), at.line()),
            None => eprintln!("panicked: {message}"),
        }
    }));
}

/// `flat-map` and `flat-map-keyed`.
pub fn flat_map<U: UserFunctions>(records: Vec<u8>, keyed: bool) -> wit::BatchResult {
    let key = match (keyed, U::KEY_FIELD) {
        (false, _) => Key::None,
        (true, Some(n)) => Key::Field(n),
        (true, None) => Key::Fn(U::key),
    };
    let mut out = Collector::new(records.len().saturating_mul(2), key);
    let mut reader = Reader::new(&records);
    let mut index = 0u32;
    while !reader.at_end() {
        let count_at = out.buf.len();
        encoding::put_u32(&mut out.buf, 0);
        out.rows = 0;
        let outcome = match reader.text_record() {
            Ok(Ok(line)) => U::flat_map(line, &mut out),
            Ok(Err(message)) => Err(message.to_string()),
            Err(message) => Err(format!("malformed batch from the host: {message}")),
        };
        if let Err(message) = outcome {
            out.buf.truncate(count_at);
            return wit::BatchResult {
                output: out.buf,
                failed: Some(wit::RecordError { index, message }),
            };
        }
        out.buf[count_at..count_at + 4].copy_from_slice(&out.rows.to_le_bytes());
        index += 1;
    }
    wit::BatchResult {
        output: out.buf,
        failed: None,
    }
}

/// `key-selector`.
pub fn key_selector<U: UserFunctions>(rows: Vec<u8>) -> Result<Vec<u8>, wit::RecordError> {
    let mut out = Vec::with_capacity(rows.len());
    let mut reader = Reader::new(&rows);
    let mut index = 0u32;
    while !reader.at_end() {
        let row = reader.row_bytes().map_err(|message| wit::RecordError {
            index,
            message: format!("malformed batch from the host: {message}"),
        })?;
        U::key(Row::from_encoded(row)).encode(&mut out);
        index += 1;
    }
    Ok(out)
}

/// `describe`.
pub fn describe<U: UserFunctions>(params: Vec<(String, String)>) -> wit::JobDescription {
    let d = U::describe(&Params(params));
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    wit::JobDescription {
        name: d.name,
        source: d.source,
        sink: d.sink,
        aggregation: d.aggregation.map(|a| {
            let (kind, field) = match a {
                Aggregation::Sum(f) => (wit::AggregateKind::Sum, f),
                Aggregation::Count(f) => (wit::AggregateKind::Count, f),
                Aggregation::Min(f) => (wit::AggregateKind::Min, f),
                Aggregation::Max(f) => (wit::AggregateKind::Max, f),
            };
            wit::Aggregation { kind, field }
        }),
        checkpoint_interval_ms: d.checkpoint_interval.map(ms),
        restart: d.restart.map(|r| restart!(wit, r)),
        parallelism: d.parallelism,
        limits: d.limits.map(|l| limits!(wit, l)),
    }
}

/// A [`Restart`] as the WIT type of module `$wit` (0.1.0 and 0.2.0 share it).
macro_rules! restart {
    ($wit:ident, $r:expr) => {{
        use $crate::describe::Restart;
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        match $r {
            Restart::None => $wit::RestartStrategy::None,
            Restart::FixedDelay { attempts, delay } => {
                $wit::RestartStrategy::FixedDelay($wit::FixedDelay {
                    attempts,
                    delay_ms: ms(delay),
                })
            }
            Restart::FailureRate {
                max_failures,
                interval,
                delay,
            } => $wit::RestartStrategy::FailureRate($wit::FailureRate {
                max_failures,
                interval_ms: ms(interval),
                delay_ms: ms(delay),
            }),
            Restart::ExponentialDelay {
                initial,
                max,
                multiplier,
                reset_after,
                jitter,
            } => $wit::RestartStrategy::ExponentialDelay($wit::ExponentialDelay {
                initial_ms: ms(initial),
                max_ms: ms(max),
                multiplier,
                reset_after_ms: ms(reset_after),
                jitter,
            }),
        }
    }};
}
pub(crate) use restart;

/// [`crate::Limits`] as the WIT type of module `$wit`.
macro_rules! limits {
    ($wit:ident, $l:expr) => {{
        let l = $l;
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        $wit::Limits {
            memory_bytes: l.memory_bytes,
            call_timeout_ms: l.call_timeout.map(ms),
            max_rows_per_record: l.max_rows_per_record,
            max_bytes_per_record: l.max_bytes_per_record,
        }
    }};
}
pub(crate) use limits;

/// Implements the generated export traits for the user's type and exports it.
#[doc(hidden)]
#[macro_export]
macro_rules! __sluice_glue {
    ($ty:ident) => {
        impl $crate::wit::exports::sluice::stream::operator::Guest for $ty {
            fn open(
                params: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
            ) -> ::core::result::Result<(), ::std::string::String> {
                $crate::__rt::open::<$ty>(params)
            }
            fn flat_map(
                records: ::std::vec::Vec<u8>,
            ) -> $crate::wit::sluice::stream::types::BatchResult {
                $crate::__rt::flat_map::<$ty>(records, false)
            }
            fn key_selector(
                rows: ::std::vec::Vec<u8>,
            ) -> ::core::result::Result<
                ::std::vec::Vec<u8>,
                $crate::wit::sluice::stream::types::RecordError,
            > {
                $crate::__rt::key_selector::<$ty>(rows)
            }
            fn flat_map_keyed(
                records: ::std::vec::Vec<u8>,
            ) -> $crate::wit::sluice::stream::types::BatchResult {
                $crate::__rt::flat_map::<$ty>(records, true)
            }
        }
        impl $crate::wit::exports::sluice::stream::job::Guest for $ty {
            fn describe(
                params: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
            ) -> $crate::wit::sluice::stream::types::JobDescription {
                $crate::__rt::describe::<$ty>(params)
            }
        }
        $crate::wit::__export_stream_job!($ty);
    };
}
pub use __sluice_glue as glue;
