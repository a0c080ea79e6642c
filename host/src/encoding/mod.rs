//! The host's side of the batch encoding documented in `wit/sluice-stream@0.1.0/stream.wit`:
//! writing input batches, reading and checking guest output, and printing
//! rows in Flink's tuple form `(a,1)`.
//!
//! Guest output is untrusted: every length and tag is checked, and text must
//! be valid UTF-8. Rows and keys stay encoded; the host hashes and stores
//! the encoded bytes, so a word is never decoded into a `String`.

use std::io::Write;

pub mod pipeline;

pub(crate) const NULL: u8 = 0;
pub(crate) const BOOL: u8 = 1;
pub(crate) const INT: u8 = 2;
pub(crate) const FLOAT: u8 = 3;
pub(crate) const TEXT: u8 = 4;
pub(crate) const BYTES: u8 = 5;

/// An input batch being built: one-text rows, one per line.
#[derive(Debug, Default, Clone)]
pub struct BatchWriter {
    /// The encoded batch.
    pub buf: Vec<u8>,
    /// Byte offset of each record in `buf`.
    pub starts: Vec<u32>,
}

impl BatchWriter {
    /// Appends one text record.
    pub fn push_text(&mut self, line: &[u8]) {
        self.starts.push(self.buf.len() as u32);
        self.buf.extend_from_slice(&1u32.to_le_bytes());
        self.buf.push(TEXT);
        self.buf
            .extend_from_slice(&(line.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(line);
    }

    /// Appends `count` records already encoded back to back in `bytes`
    /// (a slice of another batch).
    pub fn push_raw(&mut self, bytes: &[u8], count: usize) {
        let base = self.buf.len();
        let mut at = 0;
        for _ in 0..count {
            self.starts.push((base + at) as u32);
            at = skip_checked_row(bytes, at).unwrap_or(bytes.len());
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Appends one record of `count` values (`fields` yields that many).
    pub fn push_row<'a>(&mut self, count: usize, fields: impl IntoIterator<Item = Field<'a>>) {
        self.starts.push(self.buf.len() as u32);
        self.buf.extend_from_slice(&(count as u32).to_le_bytes());
        for field in fields {
            match field {
                Field::Null => self.buf.push(NULL),
                Field::Int(i) => {
                    self.buf.push(INT);
                    self.buf.extend_from_slice(&i.to_le_bytes());
                }
                Field::Text(b) | Field::Bytes(b) => {
                    self.buf.push(if matches!(field, Field::Text(_)) {
                        TEXT
                    } else {
                        BYTES
                    });
                    self.buf.extend_from_slice(&(b.len() as u32).to_le_bytes());
                    self.buf.extend_from_slice(b);
                }
            }
        }
    }

    /// Appends one entry made of `parts` put together.
    pub fn push_parts(&mut self, parts: &[&[u8]]) {
        self.starts.push(self.buf.len() as u32);
        for p in parts {
            self.buf.extend_from_slice(p);
        }
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// Whether the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// The encoded bytes of records `range`.
    pub fn slice(&self, range: std::ops::Range<usize>) -> &[u8] {
        if range.is_empty() {
            return &[];
        }
        let start = self.starts[range.start] as usize;
        let end = self
            .starts
            .get(range.end)
            .map_or(self.buf.len(), |e| *e as usize);
        &self.buf[start..end]
    }

    /// The text of record `index`.
    pub fn text(&self, index: usize) -> &[u8] {
        let rec = self.slice(index..index + 1);
        rec.get(9..).unwrap_or(&[])
    }
}

/// A value of a record the host writes for a guest.
#[derive(Debug, Clone, Copy)]
pub enum Field<'a> {
    /// Null.
    Null,
    /// An int.
    Int(i64),
    /// Text the caller checked is UTF-8.
    Text(&'a [u8]),
    /// Bytes.
    Bytes(&'a [u8]),
}

/// A malformed guest output, or one over a limit: the guest's fault.
/// `.1` is the batch record it belongs to, when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String, pub Option<u32>);

/// Output limits per input record.
#[derive(Debug, Clone, Copy)]
pub struct OutputLimits {
    /// Rows one record may emit.
    pub rows: u32,
    /// Encoded bytes one record may emit.
    pub bytes: u64,
}

impl OutputLimits {
    /// No limit.
    pub const NONE: OutputLimits = OutputLimits {
        rows: u32::MAX,
        bytes: u64::MAX,
    };
}

#[inline]
fn u32_at(buf: &[u8], pos: usize) -> Result<u32, Malformed> {
    buf.get(pos..pos + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| Malformed(format!("output ends inside a length at byte {pos}"), None))
}

/// Returns the end of the value that starts at `pos`.
#[inline(always)]
pub(crate) fn skip_value(buf: &[u8], pos: usize) -> Result<usize, Malformed> {
    // The usual values, checked here in a few steps: a number, or a text
    // of ASCII. Anything else (and every error) takes the full check.
    match buf.get(pos) {
        Some(&(INT | FLOAT)) if pos + 9 <= buf.len() => return Ok(pos + 9),
        Some(&TEXT) => {
            if let Some(len) = buf.get(pos + 1..pos + 5) {
                let end = pos + 5 + u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
                if buf.get(pos + 5..end).is_some_and(<[u8]>::is_ascii) {
                    return Ok(end);
                }
            }
        }
        _ => {}
    }
    check_value(buf, pos)
}

/// The end of the value that starts at `pos`, every case checked.
#[cold]
#[inline(never)]
fn check_value(buf: &[u8], pos: usize) -> Result<usize, Malformed> {
    let tag = *buf.get(pos).ok_or_else(|| {
        Malformed(
            format!("output ends where a value should start at byte {pos}"),
            None,
        )
    })?;
    let end = match tag {
        NULL => pos + 1,
        BOOL => pos + 2,
        INT | FLOAT => pos + 9,
        TEXT | BYTES => {
            let len = u32_at(buf, pos + 1)? as usize;
            let end = pos + 5 + len;
            if end > buf.len() {
                return Err(Malformed(
                    format!("a value at byte {pos} runs past the output"),
                    None,
                ));
            }
            let text = &buf[pos + 5..end];
            if tag == TEXT && !text.is_ascii() && std::str::from_utf8(text).is_err() {
                return Err(Malformed(
                    format!("a text value at byte {pos} is not valid UTF-8"),
                    None,
                ));
            }
            end
        }
        other => {
            return Err(Malformed(
                format!("unknown value tag {other} at byte {pos}"),
                None,
            ));
        }
    };
    if end > buf.len() {
        return Err(Malformed(
            format!("a value at byte {pos} runs past the output"),
            None,
        ));
    }
    Ok(end)
}

/// Returns the end of the row that starts at `pos`.
#[inline(always)]
pub(crate) fn skip_row(buf: &[u8], pos: usize) -> Result<usize, Malformed> {
    let count = u32_at(buf, pos)?;
    let mut at = pos + 4;
    for _ in 0..count {
        at = skip_value(buf, at)?;
    }
    Ok(at)
}

/// One emitted row as offsets into a guest's output buffer.
#[derive(Debug, Clone, Copy)]
pub struct RowRef {
    /// Index of the input record (within the batch) that emitted it.
    pub record: u32,
    /// Its position among that record's rows.
    pub ordinal: u32,
    /// The row's bytes.
    pub row: (u32, u32),
    /// The key's bytes (empty when unkeyed).
    pub key: (u32, u32),
    /// Hash of the key bytes.
    pub hash: u64,
}

/// Walks a guest's `record-output*` and calls `f` for every row.
/// `records` is how many records the output must cover; `keyed` says
/// whether each row is followed by its key.
pub fn read_output(
    buf: &[u8],
    records: usize,
    keyed: bool,
    limits: OutputLimits,
    mut f: impl FnMut(RowRef),
) -> Result<(), Malformed> {
    let mut pos = 0usize;
    for record in 0..records {
        let record_start = pos;
        let rows = u32_at(buf, pos).map_err(|e| Malformed(e.0, Some(record as u32)))?;
        pos += 4;
        if rows > limits.rows {
            return Err(Malformed(
                format!(
                    "the record emitted {rows} rows, over the limit of {} (raise it with --max-rows-per-record)",
                    limits.rows
                ),
                Some(record as u32),
            ));
        }
        for ordinal in 0..rows {
            let row_start = pos;
            pos = skip_row(buf, pos)?;
            let row = (row_start as u32, pos as u32);
            let (key, hash) = if keyed {
                let key_start = pos;
                pos = skip_value(buf, pos)?;
                (
                    (key_start as u32, pos as u32),
                    xxhash_rust::xxh3::xxh3_64(&buf[key_start..pos]),
                )
            } else {
                ((pos as u32, pos as u32), 0)
            };
            f(RowRef {
                record: record as u32,
                ordinal,
                row,
                key,
                hash,
            });
        }
        let bytes = (pos - record_start) as u64;
        if bytes > limits.bytes {
            return Err(Malformed(
                format!(
                    "the record emitted {bytes} bytes of output, over the limit of {} (raise it with --max-bytes-per-record)",
                    limits.bytes
                ),
                Some(record as u32),
            ));
        }
    }
    if pos != buf.len() {
        return Err(Malformed(
            format!("output has {} bytes after the last record", buf.len() - pos),
            None,
        ));
    }
    Ok(())
}

/// Byte span of field `index` within an encoded row.
/// The end of a value in a row the host already checked: no UTF-8 check,
/// but still bounds-safe (`None` past the end).
#[inline]
pub(crate) fn skip_checked(buf: &[u8], pos: usize) -> Option<usize> {
    let end = match *buf.get(pos)? {
        NULL => pos + 1,
        BOOL => pos + 2,
        INT | FLOAT => pos + 9,
        _ => pos + 5 + u32_at(buf, pos + 1).ok()? as usize,
    };
    (end <= buf.len()).then_some(end)
}

/// The end of a checked row that starts at `pos`.
fn skip_checked_row(buf: &[u8], pos: usize) -> Option<usize> {
    let count = u32_at(buf, pos).ok()?;
    let mut at = pos + 4;
    for _ in 0..count {
        at = skip_checked(buf, at)?;
    }
    Some(at)
}

/// Byte span of field `index` within a checked row.
#[inline]
pub(crate) fn field_span(row: &[u8], index: u32) -> Option<(usize, usize)> {
    let count = u32_at(row, 0).ok()?;
    if index >= count {
        return None;
    }
    let mut at = 4;
    for _ in 0..index {
        at = skip_checked(row, at)?;
    }
    let end = skip_checked(row, at)?;
    Some((at, end))
}

/// A decoded scalar for aggregation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Num {
    Int(i64),
    Float(f64),
}

pub(crate) fn read_num(value: &[u8]) -> Option<Num> {
    let payload = |v: &[u8]| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&v[1..9]);
        a
    };
    match *value.first()? {
        INT if value.len() == 9 => Some(Num::Int(i64::from_le_bytes(payload(value)))),
        FLOAT if value.len() == 9 => Some(Num::Float(f64::from_le_bytes(payload(value)))),
        _ => None,
    }
}

pub(crate) fn write_num(n: Num, out: &mut [u8]) {
    match n {
        Num::Int(i) => {
            out[0] = INT;
            out[1..9].copy_from_slice(&i.to_le_bytes());
        }
        Num::Float(f) => {
            out[0] = FLOAT;
            out[1..9].copy_from_slice(&f.to_le_bytes());
        }
    }
}

pub(crate) fn type_name(value: &[u8]) -> &'static str {
    match value.first() {
        Some(&NULL) => "null",
        Some(&BOOL) => "boolean",
        Some(&INT) => "int",
        Some(&FLOAT) => "float",
        Some(&TEXT) => "text",
        Some(&BYTES) => "bytes",
        _ => "malformed",
    }
}

/// Writes one checked value the way Flink prints a tuple field.
/// Writes a checked key value as a sink's record key: bytes raw, anything
/// else as the print sink formats it.
pub(crate) fn key_text(value: &[u8], out: &mut Vec<u8>) {
    match value.first() {
        Some(&BYTES) => out.extend_from_slice(value.get(5..).unwrap_or_default()),
        _ => format_value(value, out),
    }
}

pub(crate) fn format_value(value: &[u8], out: &mut Vec<u8>) {
    match value.first() {
        Some(&NULL) => out.extend_from_slice(b"null"),
        Some(&BOOL) => out.extend_from_slice(if value.get(1) == Some(&0) {
            b"false"
        } else {
            b"true"
        }),
        Some(&INT) | Some(&FLOAT) => match read_num(value) {
            Some(Num::Int(i)) => {
                out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
            }
            Some(Num::Float(f)) => {
                let _ = write!(out, "{f:?}");
            }
            None => {}
        },
        Some(&TEXT) => out.extend_from_slice(&value[5..]),
        Some(&BYTES) => {
            out.extend_from_slice(b"0x");
            for b in &value[5..] {
                let _ = write!(out, "{b:02x}");
            }
        }
        _ => {}
    }
}

/// Writes a checked row as `(v0,v1,...)` and a newline.
pub fn format_row(row: &[u8], out: &mut Vec<u8>) {
    let count = u32_at(row, 0).unwrap_or(0);
    out.push(b'(');
    let mut at = 4;
    for i in 0..count {
        if i > 0 {
            out.push(b',');
        }
        let Some(end) = skip_checked(row, at) else {
            break;
        };
        format_value(&row[at..end], out);
        at = end;
    }
    out.extend_from_slice(b")\n");
}

/// Writes a checked value as JSON-ish text for messages: text quoted.
pub fn display_value(value: &[u8]) -> String {
    let mut out = Vec::new();
    format_value(value, &mut out);
    let s = String::from_utf8_lossy(&out).into_owned();
    if value.first() == Some(&TEXT) {
        format!("{s:?}")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Vec<u8> {
        let mut v = vec![TEXT];
        v.extend_from_slice(&(s.len() as u32).to_le_bytes());
        v.extend_from_slice(s.as_bytes());
        v
    }

    fn int(i: i64) -> Vec<u8> {
        let mut v = vec![INT];
        v.extend_from_slice(&i.to_le_bytes());
        v
    }

    fn row(values: &[Vec<u8>]) -> Vec<u8> {
        let mut v = (values.len() as u32).to_le_bytes().to_vec();
        for value in values {
            v.extend_from_slice(value);
        }
        v
    }

    #[test]
    fn formats_rows_like_flink_tuples() {
        let mut out = Vec::new();
        format_row(&row(&[text("a"), int(3)]), &mut out);
        let mut f = vec![FLOAT];
        f.extend_from_slice(&2.0f64.to_le_bytes());
        format_row(&row(&[f, vec![NULL], vec![BOOL, 1]]), &mut out);
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "(a,3)\n(2.0,null,true)\n"
        );
    }

    #[test]
    fn reads_keyed_output_and_rejects_garbage() {
        let mut out = 2u32.to_le_bytes().to_vec();
        out.extend(row(&[text("a"), int(1)]));
        out.extend(text("a"));
        out.extend(row(&[text("b"), int(1)]));
        out.extend(text("b"));
        out.extend(0u32.to_le_bytes());
        let mut seen = Vec::new();
        read_output(&out, 2, true, OutputLimits::NONE, |r| {
            seen.push((r.record, r.ordinal))
        })
        .expect("well formed");
        assert_eq!(seen, vec![(0, 0), (0, 1)]);
        // Too few records, a truncated buffer, trailing bytes, bad UTF-8.
        assert!(read_output(&out, 3, true, OutputLimits::NONE, |_| {}).is_err());
        assert!(read_output(&out[..out.len() - 6], 2, true, OutputLimits::NONE, |_| {}).is_err());
        let mut trailing = out.clone();
        trailing.push(0);
        assert!(read_output(&trailing, 2, true, OutputLimits::NONE, |_| {}).is_err());
        let mut bad = 1u32.to_le_bytes().to_vec();
        bad.extend(row(&[vec![TEXT, 1, 0, 0, 0, 0xff]]));
        bad.extend(int(1));
        assert!(read_output(&bad, 1, true, OutputLimits::NONE, |_| {}).is_err());
    }

    #[test]
    fn batch_writer_slices_records() {
        let mut b = BatchWriter::default();
        b.push_text(b"a b");
        b.push_text(b"");
        b.push_text(b"c");
        assert_eq!(b.len(), 3);
        assert_eq!(b.text(0), b"a b");
        assert_eq!(b.text(1), b"");
        assert_eq!(b.text(2), b"c");
        assert_eq!(b.slice(1..3).len(), 9 + 10);
    }

    /// The encoding as `wit/sluice-stream@0.1.0/stream.wit` documents it, decoded the plain
    /// way: the reference the host's fast decoder must agree with.
    mod reference {
        pub fn value(buf: &[u8], at: &mut usize) -> Option<()> {
            let tag = *buf.get(*at)?;
            *at += 1;
            let fixed = match tag {
                0 => 0,
                1 => 1,
                2 | 3 => 8,
                4 | 5 => {
                    let len = u32::from_le_bytes(buf.get(*at..*at + 4)?.try_into().ok()?) as usize;
                    *at += 4;
                    let body = buf.get(*at..at.checked_add(len)?)?;
                    if tag == 4 {
                        std::str::from_utf8(body).ok()?;
                    }
                    len
                }
                _ => return None,
            };
            buf.get(*at..at.checked_add(fixed)?)?;
            *at += fixed;
            Some(())
        }

        pub fn output(buf: &[u8], records: usize, keyed: bool) -> Option<Vec<(u32, u32)>> {
            let mut at = 0;
            let mut rows = Vec::new();
            for record in 0..records {
                let count = u32::from_le_bytes(buf.get(at..at + 4)?.try_into().ok()?);
                at += 4;
                for ordinal in 0..count {
                    let values = u32::from_le_bytes(buf.get(at..at + 4)?.try_into().ok()?);
                    at += 4;
                    for _ in 0..values {
                        value(buf, &mut at)?;
                    }
                    if keyed {
                        value(buf, &mut at)?;
                    }
                    rows.push((record as u32, ordinal));
                }
            }
            (at == buf.len()).then_some(rows)
        }
    }

    use proptest::prelude::*;

    fn any_value() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(vec![NULL]),
            any::<bool>().prop_map(|b| vec![BOOL, u8::from(b)]),
            any::<i64>().prop_map(int),
            any::<f64>().prop_map(|f| {
                let mut v = vec![FLOAT];
                v.extend_from_slice(&f.to_le_bytes());
                v
            }),
            ".{0,12}".prop_map(|s| text(&s)),
            proptest::collection::vec(any::<u8>(), 0..12).prop_map(|b| {
                let mut v = vec![BYTES];
                v.extend_from_slice(&(b.len() as u32).to_le_bytes());
                v.extend_from_slice(&b);
                v
            }),
        ]
    }

    /// A well-formed output: per record, its rows (each with a key).
    fn any_output() -> impl Strategy<Value = (Vec<u8>, usize, bool)> {
        let entry = (proptest::collection::vec(any_value(), 0..4), any_value());
        let record = proptest::collection::vec(entry, 0..4);
        (proptest::collection::vec(record, 0..5), any::<bool>()).prop_map(|(records, keyed)| {
            let mut out = Vec::new();
            for rows in &records {
                out.extend_from_slice(&(rows.len() as u32).to_le_bytes());
                for (values, key) in rows {
                    out.extend(row(values));
                    if keyed {
                        out.extend_from_slice(key);
                    }
                }
            }
            (out, records.len(), keyed)
        })
    }

    /// What the host's decoder says of `buf`: the rows it walked, or `None`.
    fn decoded(buf: &[u8], records: usize, keyed: bool) -> Option<Vec<(u32, u32)>> {
        let mut rows = Vec::new();
        read_output(buf, records, keyed, OutputLimits::NONE, |r| {
            rows.push((r.record, r.ordinal))
        })
        .ok()
        .map(|()| rows)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn every_valid_output_is_accepted((out, records, keyed) in any_output()) {
            let expected = reference::output(&out, records, keyed);
            prop_assert!(expected.is_some());
            prop_assert_eq!(decoded(&out, records, keyed), expected);
        }

        #[test]
        fn a_mutated_output_is_accepted_only_if_it_is_valid(
            (out, records, keyed) in any_output(),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..4), 1..4),
            claimed in 0usize..8,
        ) {
            let mut buf = out;
            for (at, byte, how) in edits {
                let at = if buf.is_empty() { 0 } else { at % buf.len() };
                match how {
                    0 if !buf.is_empty() => buf[at] = byte,
                    1 => buf.truncate(at),
                    2 => buf.insert(at.min(buf.len()), byte),
                    _ if !buf.is_empty() => buf[at] ^= 0x80,
                    _ => {}
                }
            }
            for records in [records, claimed] {
                prop_assert_eq!(
                    decoded(&buf, records, keyed),
                    reference::output(&buf, records, keyed)
                );
            }
        }

        #[test]
        fn random_bytes_never_panic_the_decoder(
            buf in proptest::collection::vec(any::<u8>(), 0..64),
            records in 0usize..6,
            keyed in any::<bool>(),
        ) {
            prop_assert_eq!(
                decoded(&buf, records, keyed),
                reference::output(&buf, records, keyed)
            );
        }
    }
}
