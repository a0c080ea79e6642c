//! The pipeline a 0.2.0 guest describes: its stages (stateless chains,
//! keyed process functions with their states, keyed windows), its side
//! outputs and its watermark strategy, in the host's own types; and the
//! checks that it can run. A description is guest output, untrusted: every
//! count and size is bounded here before anything is built from it.

use std::time::Duration;

/// Which clock a timer or a window follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeDomain {
    /// The rows' timestamps, as the watermark advances.
    Event,
    /// The processing time the host gives each batch.
    Processing,
}

impl TimeDomain {
    /// The byte the WIT encodes it as.
    pub fn code(self) -> u8 {
        match self {
            TimeDomain::Event => 0,
            TimeDomain::Processing => 1,
        }
    }

    /// From the byte the WIT encodes it as.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(TimeDomain::Event),
            1 => Some(TimeDomain::Processing),
            _ => None,
        }
    }
}

/// The kinds of keyed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateKind {
    /// One row per key.
    Value,
    /// A list of rows per key.
    List,
    /// A map from values to rows per key.
    Map,
}

/// A keyed state a process stage declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDecl {
    /// Its name.
    pub name: String,
    /// What it holds.
    pub kind: StateKind,
    /// Time to live, in processing time.
    pub ttl: Option<Duration>,
}

/// How rows are assigned to windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowAssigner {
    /// Fixed windows of this many milliseconds.
    Tumbling(u64),
    /// Windows of `size` milliseconds, one every `slide`.
    Sliding {
        /// The length of a window.
        size: u64,
        /// How far apart windows start.
        slide: u64,
    },
    /// Windows of activity per key, closed by a gap of this many milliseconds.
    Session(u64),
}

/// What the guest computes over a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowFunction {
    /// An aggregate kept by the host: add, merge, result.
    Aggregate,
    /// A function over the window's contents.
    Process,
}

/// A keyed window stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowSpec {
    /// The windows.
    pub assigner: WindowAssigner,
    /// By event time or processing time.
    pub domain: TimeDomain,
    /// How long after its end a window still takes late rows.
    pub allowed_lateness_ms: u64,
    /// The side output rows later than that go to.
    pub late_output: Option<String>,
    /// What the guest computes.
    pub function: WindowFunction,
}

/// What a stage is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageKind {
    /// A stateless chain in the guest.
    Map,
    /// A keyed process function with its declared states.
    Process(Vec<StateDecl>),
    /// Keyed windows.
    Window(WindowSpec),
}

/// One stage of the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// Its name.
    pub name: String,
    /// What it is.
    pub kind: StageKind,
    /// Whether its input is routed by key.
    pub keyed: bool,
}

/// A side output and its default sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SideOutput {
    /// Its name.
    pub name: String,
    /// Its default sink URI.
    pub sink: Option<String>,
}

/// How the watermark follows the first stage's timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatermarkStrategy {
    /// The watermark trails the largest timestamp by this much.
    pub out_of_orderness_ms: u64,
    /// After this much processing time without records, the watermark
    /// advances with processing time.
    pub idle_timeout_ms: Option<u64>,
}

/// A 0.2.0 job's pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pipeline {
    /// The stages, in order.
    pub stages: Vec<Stage>,
    /// The side outputs, by tag (tag n is `side_outputs[n - 1]`).
    pub side_outputs: Vec<SideOutput>,
    /// The watermark strategy; `None`: no event time.
    pub watermarks: Option<WatermarkStrategy>,
}

/// The most stages a pipeline may have.
pub const MAX_STAGES: usize = 32;
/// The most states a process stage may declare.
pub const MAX_STATES: usize = 64;
/// The most side outputs.
pub const MAX_SIDE_OUTPUTS: usize = 32;
/// The most windows one row may fall into (sliding size / slide).
pub const MAX_WINDOWS_PER_ROW: u64 = 1000;
/// The longest name of a stage, state or side output.
pub const MAX_NAME: usize = 100;

impl std::fmt::Display for StateDecl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            StateKind::Value => "value",
            StateKind::List => "list",
            StateKind::Map => "map",
        };
        write!(f, "{} ({kind}", self.name)?;
        if let Some(ttl) = self.ttl {
            write!(f, ", ttl {} ms", ttl.as_millis())?;
        }
        f.write_str(")")
    }
}

impl std::fmt::Display for WindowSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.assigner {
            WindowAssigner::Tumbling(size) => write!(f, "tumbling {size} ms")?,
            WindowAssigner::Sliding { size, slide } => {
                write!(f, "sliding {size} ms every {slide} ms")?
            }
            WindowAssigner::Session(gap) => write!(f, "session, gap {gap} ms")?,
        }
        match self.domain {
            TimeDomain::Event => {
                write!(f, ", event time, lateness {} ms", self.allowed_lateness_ms)?
            }
            TimeDomain::Processing => f.write_str(", processing time")?,
        }
        match &self.late_output {
            Some(o) => write!(f, ", late rows to `{o}`")?,
            None => f.write_str(", late rows dropped")?,
        }
        f.write_str(match self.function {
            WindowFunction::Aggregate => "; aggregate (add, merge, fire)",
            WindowFunction::Process => "; function over the contents",
        })
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keyed = if self.keyed { ", keyed" } else { "" };
        match &self.kind {
            StageKind::Map => write!(f, "`{}`: map{keyed}", self.name),
            StageKind::Process(states) => {
                write!(f, "`{}`: process{keyed}; states: ", self.name)?;
                if states.is_empty() {
                    return f.write_str("none");
                }
                let shown: Vec<String> = states.iter().map(ToString::to_string).collect();
                f.write_str(&shown.join(", "))
            }
            StageKind::Window(w) => write!(f, "`{}`: window{keyed}: {w}", self.name),
        }
    }
}

/// A name that is safe as a file name: letters, digits, `-`, `_`, `.`,
/// starting with a letter or digit, at most [`MAX_NAME`] bytes.
pub fn plain_name(name: &str) -> bool {
    name.len() <= MAX_NAME
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl Pipeline {
    /// Refuses a pipeline that cannot run, naming what is wrong.
    pub fn check(&self) -> Result<(), String> {
        let bad = |m: String| Err(format!("the module's pipeline cannot run: {m}"));
        if self.stages.is_empty() || self.stages.len() > MAX_STAGES {
            return bad(format!(
                "it has {} stages; a pipeline has 1 to {MAX_STAGES}",
                self.stages.len()
            ));
        }
        if self.side_outputs.len() > MAX_SIDE_OUTPUTS {
            return bad(format!("it has more than {MAX_SIDE_OUTPUTS} side outputs"));
        }
        for (i, o) in self.side_outputs.iter().enumerate() {
            if !plain_name(&o.name) {
                return bad(format!(
                    "side output {} is named `{}`; a side output's name is 1 to {MAX_NAME} letters, digits, `-`, `_` or `.`, starting with a letter or digit",
                    i + 1,
                    o.name.chars().take(MAX_NAME).collect::<String>()
                ));
            }
            if self.side_outputs[..i].iter().any(|p| p.name == o.name) {
                return bad(format!("two side outputs are named `{}`", o.name));
            }
        }
        let first = &self.stages[0];
        if first.kind != StageKind::Map || first.keyed {
            return bad(
                "its first stage must be an unkeyed map (it takes the source's records)".into(),
            );
        }
        for (i, s) in self.stages.iter().enumerate() {
            self.check_stage(i, s).or_else(&bad)?;
        }
        Ok(())
    }

    fn check_stage(&self, i: usize, s: &Stage) -> Result<(), String> {
        let at = format!(
            "stage {i} (`{}`)",
            s.name.chars().take(MAX_NAME).collect::<String>()
        );
        if s.name.len() > MAX_NAME {
            return Err(format!("{at} has a name over {MAX_NAME} bytes"));
        }
        match &s.kind {
            StageKind::Map => Ok(()),
            StageKind::Process(states) => {
                if !s.keyed {
                    return Err(format!(
                        "{at} is a process function, so its input must be keyed"
                    ));
                }
                if states.len() > MAX_STATES {
                    return Err(format!("{at} declares more than {MAX_STATES} states"));
                }
                if let Some(d) = states.iter().find(|d| d.name.len() > MAX_NAME) {
                    return Err(format!(
                        "{at} has a state whose name is over {MAX_NAME} bytes: `{}`",
                        &d.name[..MAX_NAME]
                    ));
                }
                Ok(())
            }
            StageKind::Window(w) => self.check_window(&at, s.keyed, w),
        }
    }

    fn check_window(&self, at: &str, keyed: bool, w: &WindowSpec) -> Result<(), String> {
        if !keyed {
            return Err(format!(
                "{at} is a window stage, so its input must be keyed"
            ));
        }
        match w.assigner {
            WindowAssigner::Tumbling(0) | WindowAssigner::Session(0) => {
                return Err(format!("{at} has windows of length 0"));
            }
            WindowAssigner::Sliding { size, slide } => {
                if size == 0 || slide == 0 || slide > size {
                    return Err(format!(
                        "{at} has sliding windows of {size} ms every {slide} ms; both must be more than 0, the slide at most the size"
                    ));
                }
                if size / slide > MAX_WINDOWS_PER_ROW {
                    return Err(format!(
                        "{at} puts each row into {} windows, more than {MAX_WINDOWS_PER_ROW}",
                        size / slide
                    ));
                }
            }
            _ => {}
        }
        if let Some(late) = &w.late_output
            && !self.side_outputs.iter().any(|o| &o.name == late)
        {
            return Err(format!(
                "{at} sends late rows to `{late}`, which is not a side output"
            ));
        }
        Ok(())
    }

    /// The tag of the side output a window stage sends late rows to.
    pub fn side_tag_of(&self, w: &WindowSpec) -> Option<u8> {
        w.late_output
            .as_deref()
            .and_then(|name| self.side_tag(name))
    }

    /// The tag (1-based) of the side output named `name`.
    pub fn side_tag(&self, name: &str) -> Option<u8> {
        self.side_outputs
            .iter()
            .position(|o| o.name == name)
            .map(|i| (i + 1) as u8)
    }
}
