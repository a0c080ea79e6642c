//! The WIT worlds this host serves, one module each (`v0_1`), behind one
//! enum, the way wasmtime's `serve` dispatches between its p2 and p3
//! worlds: a module's exports pick its version, and everything the host
//! calls goes through [`Pre`] and [`Exports`].

use wasmtime::Store;
use wasmtime::component::InstancePre;

use crate::config::description::Description;
use crate::wasm::sandbox::GuestState;
use crate::wasm::types::Header;
use crate::wasm::types::{BatchOutput, ModuleError};
use crate::wasm::v0_2::Call;
use crate::wasm::{v0_1, v0_2};

/// The WIT packages this host serves, for messages.
pub const SERVED: &str = "sluice:stream@0.1.0 or sluice:stream@0.2.0";

/// A served WIT version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `sluice:stream@0.1.0`: flat-map and key-selector, host aggregations.
    V0_1,
    /// `sluice:stream@0.2.0`: pipelines with keyed state, timers, windows.
    V0_2,
}

impl Version {
    /// Every served version, oldest first.
    pub const ALL: [Version; 2] = [Version::V0_1, Version::V0_2];

    /// The WIT package, with its version.
    pub fn package(self) -> &'static str {
        match self {
            Version::V0_1 => v0_1::PACKAGE,
            Version::V0_2 => v0_2::PACKAGE,
        }
    }

    /// The world a guest of this version targets.
    pub fn world(self) -> &'static str {
        match self {
            Version::V0_1 => "stream-job",
            Version::V0_2 => "pipeline-job",
        }
    }

    /// The interfaces a component of this version exports.
    fn exports(self) -> &'static [&'static str] {
        match self {
            Version::V0_1 => &v0_1::EXPORTS,
            Version::V0_2 => &v0_2::EXPORTS,
        }
    }
}

/// The served version whose exports `exports` has, or why there is none.
pub(crate) fn detect(shown: &str, exports: &[String]) -> Result<Version, ModuleError> {
    if let Some(v) = Version::ALL
        .into_iter()
        .find(|v| v.exports().iter().all(|n| exports.iter().any(|e| e == n)))
    {
        return Ok(v);
    }
    // The version the module comes closest to: one of whose interfaces it
    // exports, else the oldest.
    let closest = Version::ALL
        .into_iter()
        .find(|v| v.exports().iter().any(|n| exports.iter().any(|e| e == n)))
        .unwrap_or(Version::ALL[0]);
    let Some(needed) = closest
        .exports()
        .iter()
        .find(|n| !exports.iter().any(|e| e == *n))
    else {
        return Ok(closest);
    };
    let unversioned = needed.split('@').next().unwrap_or(needed);
    if let Some(other) = exports
        .iter()
        .find(|e| e.split('@').next() == Some(unversioned))
    {
        return Err(ModuleError::Invalid(format!(
            "`{shown}` was built against `{other}`, but this host serves {SERVED}; \
             rebuild it with the matching SDK or run it on a host that serves that version"
        )));
    }
    let listed = if exports.is_empty() {
        "nothing".to_string()
    } else {
        exports
            .iter()
            .map(|e| format!("`{e}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(ModuleError::Invalid(format!(
        "`{shown}` does not export `{needed}` (it exports {listed}); \
         build it against {SERVED}, e.g. with `sluice_guest::export!`"
    )))
}

/// A pre-instantiated component of one served version.
#[derive(Clone)]
pub(crate) enum Pre {
    V0_1(v0_1::Pre),
    V0_2(v0_2::Pre),
}

impl Pre {
    pub(crate) fn new(version: Version, pre: InstancePre<GuestState>) -> wasmtime::Result<Self> {
        match version {
            Version::V0_1 => Ok(Pre::V0_1(v0_1::pre(pre)?)),
            Version::V0_2 => Ok(Pre::V0_2(v0_2::pre(pre)?)),
        }
    }

    pub(crate) fn version(&self) -> Version {
        match self {
            Pre::V0_1(_) => Version::V0_1,
            Pre::V0_2(_) => Version::V0_2,
        }
    }

    pub(crate) fn instantiate(&self, store: &mut Store<GuestState>) -> wasmtime::Result<Exports> {
        match self {
            Pre::V0_1(pre) => Ok(Exports::V0_1(pre.instantiate(store)?)),
            Pre::V0_2(pre) => Ok(Exports::V0_2(pre.instantiate(store)?)),
        }
    }
}

/// A live instance's exports, of one served version.
pub(crate) enum Exports {
    V0_1(v0_1::Bindings),
    V0_2(v0_2::Bindings),
}

impl Exports {
    /// `open(params)`: the guest's own start-up.
    pub(crate) fn open(
        &self,
        store: &mut Store<GuestState>,
        params: &[(String, String)],
    ) -> wasmtime::Result<Result<(), String>> {
        match self {
            Exports::V0_1(b) => v0_1::open(b, store, params),
            Exports::V0_2(b) => v0_2::open(b, store, params),
        }
    }

    /// Runs a batch: flat-map, chained with the key-selector when `keyed`.
    pub(crate) fn flat_map(
        &self,
        store: &mut Store<GuestState>,
        records: &[u8],
        keyed: bool,
    ) -> wasmtime::Result<BatchOutput> {
        match self {
            Exports::V0_1(b) => v0_1::flat_map(b, store, records, keyed),
            Exports::V0_2(_) => Err(wasmtime::Error::msg(
                "internal error: a 0.2.0 guest has no flat-map; its stages are called by index",
            )),
        }
    }

    /// A call of a 0.2.0 guest's stage.
    pub(crate) fn call(
        &self,
        store: &mut Store<GuestState>,
        stage: u32,
        header: Header,
        call: Call<'_>,
    ) -> wasmtime::Result<BatchOutput> {
        match self {
            Exports::V0_2(b) => v0_2::call(b, store, stage, header, call),
            Exports::V0_1(_) => Err(wasmtime::Error::msg(
                "internal error: a 0.1.0 guest has no stages",
            )),
        }
    }

    /// The guest's description of its job.
    pub(crate) fn describe(
        &self,
        store: &mut Store<GuestState>,
        params: &[(String, String)],
    ) -> wasmtime::Result<Description> {
        match self {
            Exports::V0_1(b) => v0_1::describe(b, store, params),
            Exports::V0_2(b) => v0_2::describe(b, store, params),
        }
    }
}
