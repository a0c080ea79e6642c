//! The dead-letter file: each record that failed alone in a fresh instance,
//! as one JSON line, appended and synced, so it survives the job.

use std::io::Write;
use std::path::Path;

use crate::checkpoint::JobInfo;
use crate::fault::TaskFailure;

/// Appends a failed record to the dead-letter file as one JSON line.
pub fn append(path: &Path, info: &JobInfo, failure: &TaskFailure) -> std::io::Result<()> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    let line = serde_json::json!({
        "time_ms": super::now_ms(),
        "job_id": info.job_id,
        "job": info.job_name,
        "record": failure.seq.map(|s| match crate::record::partition_of(s) {
            Some(_) => serde_json::Value::Null,
            None => (s + 1).into(),
        }),
        "position": failure.seq.map(crate::record::position_json),
        "input": failure.input,
        "subtask": failure.subtask,
        "fault": failure.fault.as_str(),
        "error": failure.cause,
    });
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    writeln!(f, "{line}")?;
    f.sync_data()
}
