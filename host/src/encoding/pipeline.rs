//! The host's side of the 0.2.0 encodings (`wit/sluice-stream@0.2.0`):
//! reading and checking what a stage emits (rows with their output tag,
//! timestamp and next key), and writing and reading the buffers of the
//! stateful calls (entries, keys with their states, changes, window slots).
//! Everything a guest returns is checked: a length, tag or index that does
//! not fit is a malformed output, never a panic.

use super::{Malformed, OutputLimits, skip_row, skip_value};

/// One row a stage emitted, as offsets into the guest's output buffer.
#[derive(Debug, Clone, Copy)]
pub struct Emitted {
    /// The input entry (within the call) that emitted it.
    pub entry: u32,
    /// Its position among that entry's rows.
    pub ordinal: u32,
    /// 0: the main stream; n: side output n.
    pub tag: u8,
    /// Its timestamp.
    pub timestamp: i64,
    /// The row's bytes.
    pub row: (u32, u32),
    /// The next stage's key's bytes (empty when there is none).
    pub key: (u32, u32),
    /// Hash of the key bytes.
    pub hash: u64,
}

/// What an output must look like.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// How many input entries (or fired windows) it covers.
    pub entries: usize,
    /// Whether main-stream rows carry the next stage's key.
    pub keyed: bool,
    /// Side outputs there are (tags 1..=sides).
    pub sides: u8,
    /// Per-entry limits.
    pub limits: OutputLimits,
}

fn u32_at(buf: &[u8], pos: usize) -> Result<u32, Malformed> {
    buf.get(pos..pos + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| Malformed(format!("output ends inside a length at byte {pos}"), None))
}

fn i64_at(buf: &[u8], pos: usize) -> Result<i64, Malformed> {
    buf.get(pos..pos + 8)
        .and_then(|b| b.try_into().ok())
        .map(i64::from_le_bytes)
        .ok_or_else(|| {
            Malformed(
                format!("output ends inside a timestamp at byte {pos}"),
                None,
            )
        })
}

/// Walks a 0.2.0 `output` and calls `f` for every emitted row.
pub fn read_emitted(buf: &[u8], shape: Shape, mut f: impl FnMut(Emitted)) -> Result<(), Malformed> {
    let mut pos = 0usize;
    for entry in 0..shape.entries {
        let start = pos;
        let at = |e: Malformed| Malformed(e.0, Some(entry as u32));
        let rows = u32_at(buf, pos).map_err(at)?;
        pos += 4;
        if rows > shape.limits.rows {
            return Err(Malformed(
                format!(
                    "the record emitted {rows} rows, over the limit of {} (raise it with --max-rows-per-record)",
                    shape.limits.rows
                ),
                Some(entry as u32),
            ));
        }
        for ordinal in 0..rows {
            let tag = *buf.get(pos).ok_or_else(|| {
                Malformed(
                    format!("output ends where a row should start at byte {pos}"),
                    Some(entry as u32),
                )
            })?;
            if tag > shape.sides {
                return Err(Malformed(
                    format!(
                        "a row at byte {pos} goes to output {tag}, but the job has {} side output(s)",
                        shape.sides
                    ),
                    Some(entry as u32),
                ));
            }
            let timestamp = i64_at(buf, pos + 1).map_err(at)?;
            let row_start = pos + 9;
            pos = skip_row(buf, row_start).map_err(at)?;
            let row = (row_start as u32, pos as u32);
            let (key, hash) = if tag == 0 && shape.keyed {
                let key_start = pos;
                pos = skip_value(buf, pos).map_err(at)?;
                (
                    (key_start as u32, pos as u32),
                    xxhash_rust::xxh3::xxh3_64(&buf[key_start..pos]),
                )
            } else {
                ((pos as u32, pos as u32), 0)
            };
            f(Emitted {
                entry: entry as u32,
                ordinal,
                tag,
                timestamp,
                row,
                key,
                hash,
            });
        }
        let bytes = (pos - start) as u64;
        if bytes > shape.limits.bytes {
            return Err(Malformed(
                format!(
                    "the record emitted {bytes} bytes of output, over the limit of {} (raise it with --max-bytes-per-record)",
                    shape.limits.bytes
                ),
                Some(entry as u32),
            ));
        }
    }
    if pos != buf.len() {
        return Err(Malformed(
            format!("output has {} bytes after the last entry", buf.len() - pos),
            None,
        ));
    }
    Ok(())
}

/// A state change a process call returned: `key` indexes the call's keys,
/// `state` the stage's declared states.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<'a> {
    /// Set state `state` of key `key` to these bytes.
    Set {
        key: u32,
        state: u32,
        bytes: &'a [u8],
    },
    /// Clear state `state` of key `key`.
    Clear { key: u32, state: u32 },
    /// Set a timer.
    TimerSet { key: u32, domain: u8, at: i64 },
    /// Delete a timer.
    TimerDelete { key: u32, domain: u8, at: i64 },
}

/// Reads a process call's `changes`; `keys` and `states` bound the indexes.
pub fn read_changes(buf: &[u8], keys: u32, states: u32) -> Result<Vec<Change<'_>>, Malformed> {
    let bad = |m: String| {
        Malformed(
            format!("the guest's state changes are malformed: {m}"),
            None,
        )
    };
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let op = buf[pos];
        let key = u32_at(buf, pos + 1).map_err(|e| bad(e.0))?;
        if key >= keys {
            return Err(bad(format!(
                "a change at byte {pos} names key {key} of {keys}"
            )));
        }
        pos += 5;
        let change = match op {
            0 | 1 => {
                let state = u32_at(buf, pos).map_err(|e| bad(e.0))?;
                if state >= states {
                    return Err(bad(format!("a change names state {state} of {states}")));
                }
                pos += 4;
                if op == 1 {
                    Change::Clear { key, state }
                } else {
                    let len = u32_at(buf, pos).map_err(|e| bad(e.0))? as usize;
                    let bytes = buf.get(pos + 4..pos + 4 + len).ok_or_else(|| {
                        bad(format!("a state at byte {pos} runs past the changes"))
                    })?;
                    pos += 4 + len;
                    Change::Set { key, state, bytes }
                }
            }
            2 | 3 => {
                let domain = *buf
                    .get(pos)
                    .ok_or_else(|| bad("ends inside a timer".into()))?;
                if domain > 1 {
                    return Err(bad(format!(
                        "a timer at byte {pos} has time domain {domain}"
                    )));
                }
                let at = i64_at(buf, pos + 1).map_err(|e| bad(e.0))?;
                pos += 9;
                if op == 2 {
                    Change::TimerSet { key, domain, at }
                } else {
                    Change::TimerDelete { key, domain, at }
                }
            }
            other => return Err(bad(format!("unknown change {other} at byte {}", pos - 5))),
        };
        out.push(change);
    }
    Ok(out)
}

/// Reads window-add's or window-merge's `changes`: `(u32 slot, u32 len,
/// bytes)*`, each slot below `slots`.
pub fn read_slot_changes(buf: &[u8], slots: u32) -> Result<Vec<(u32, &[u8])>, Malformed> {
    let bad = |m: String| Malformed(format!("the guest's aggregates are malformed: {m}"), None);
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let slot = u32_at(buf, pos).map_err(|e| bad(e.0))?;
        if slot >= slots {
            return Err(bad(format!(
                "a change at byte {pos} names slot {slot} of {slots}"
            )));
        }
        let len = u32_at(buf, pos + 4).map_err(|e| bad(e.0))? as usize;
        let bytes = buf
            .get(pos + 8..pos + 8 + len)
            .ok_or_else(|| bad(format!("an aggregate at byte {pos} runs past the changes")))?;
        out.push((slot, bytes));
        pos += 8 + len;
    }
    Ok(out)
}

/// Checks that `bytes` is a state of `kind` (a row; a list of rows; a map
/// of values to rows), so that the host keeps nothing it cannot ship back.
pub fn check_state(
    bytes: &[u8],
    kind: crate::config::pipeline::StateKind,
) -> Result<(), Malformed> {
    use crate::config::pipeline::StateKind;
    let bad = |m: &str| Malformed(format!("a state the guest set is malformed: {m}"), None);
    let end = match kind {
        StateKind::Value => skip_row(bytes, 0).map_err(|_| bad("not a row"))?,
        StateKind::List | StateKind::Map => {
            let n = u32_at(bytes, 0).map_err(|_| bad("no count"))?;
            let mut pos = 4;
            for _ in 0..n {
                if kind == StateKind::Map {
                    pos = skip_value(bytes, pos).map_err(|_| bad("a map key"))?;
                }
                pos = skip_row(bytes, pos).map_err(|_| bad("a row"))?;
            }
            pos
        }
    };
    if end != bytes.len() {
        return Err(bad("bytes after its end"));
    }
    Ok(())
}

/// Writes a state into a call's buffer: none, or its bytes.
pub fn put_state(out: &mut Vec<u8>, state: Option<&[u8]>) {
    match state {
        None => out.push(0),
        Some(bytes) => {
            out.push(1);
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_out_of_range_are_malformed_not_a_panic() {
        let mut buf = vec![0u8];
        buf.extend(7u32.to_le_bytes());
        buf.extend(0u32.to_le_bytes());
        buf.extend(1u32.to_le_bytes());
        buf.push(9);
        assert!(read_changes(&buf, 2, 1).is_err(), "key 7 of 2");
        assert!(read_changes(&buf, 8, 1).is_ok());
        assert!(
            read_changes(&buf[..buf.len() - 1], 8, 1).is_err(),
            "truncated"
        );
        assert!(read_changes(&[4, 0, 0, 0, 0], 1, 1).is_err(), "unknown op");
        assert!(
            read_slot_changes(&[1, 0, 0, 0, 9, 0, 0, 0], 5).is_err(),
            "runs past"
        );
    }
}
