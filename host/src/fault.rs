//! Whose fault a failure is ([`Fault`]), a task's failure tied to its
//! record ([`TaskFailure`]), and the cap on guest messages. A leaf: every
//! area's errors use it, and it uses none of them (but the leaf that shows
//! record numbers).

/// Whose fault a failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fault {
    /// The user's input: a flag, a setting, a module, a record, a request.
    Input,
    /// The guest trapped, returned an error or broke the encoding.
    Guest,
    /// The job's logic does not fit its data (an aggregation over text, say).
    Job,
    /// The environment: a disk, a network, a server that went away.
    Environment,
    /// The host itself: a bug, never the user's or the guest's doing.
    Host,
}

impl Fault {
    /// The word the logs and dead letters use.
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Input => "input",
            Fault::Guest => "guest",
            Fault::Job => "job",
            Fault::Environment => "environment",
            Fault::Host => "host",
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed task, with the record it failed on when there is one.
#[derive(Debug, Clone)]
pub struct TaskFailure {
    /// The subtask (0-based).
    pub subtask: u32,
    /// The failing record's number, when known.
    pub seq: Option<u64>,
    /// The failing record's text (lossy, shortened), when known.
    pub input: Option<String>,
    /// What went wrong.
    pub cause: String,
    /// Whose fault it is.
    pub fault: Fault,
}

impl TaskFailure {
    /// A failure of subtask `subtask` not tied to a record.
    pub fn of_subtask(subtask: u32, cause: impl Into<String>, fault: Fault) -> Self {
        TaskFailure {
            subtask,
            seq: None,
            input: None,
            cause: cause.into(),
            fault,
        }
    }
}

impl std::fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} fault in subtask {}", self.fault, self.subtask)?;
        if let Some(seq) = self.seq {
            write!(f, " on {}", crate::record::shown(seq))?;
        }
        if let Some(input) = &self.input {
            write!(f, " {input:?}")?;
        }
        write!(f, ": {}", self.cause)
    }
}

impl std::error::Error for TaskFailure {}

/// The longest guest message the host keeps, in bytes: log lines and dead
/// letters stay readable whatever a guest returns.
pub const MAX_MESSAGE: usize = 1024;

/// `s` cut to at most `max` bytes, on a character boundary, marked when cut.
pub fn shorten(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &s[..end], s.len())
}
