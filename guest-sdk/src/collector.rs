//! The collector a flat-map emits rows into; rows are encoded straight into
//! the batch's output buffer, and keyed there when the host asked for keys.

use crate::encoding;
use crate::value::{IntoValue, Row, Value, value_end};

/// How the collector keys the rows it encodes.
#[derive(Clone, Copy)]
pub(crate) enum Key {
    /// The host asked for no keys (`flat-map`).
    None,
    /// The key selector's value.
    Fn(fn(&Row) -> Value<'_>),
    /// Field `n` of the row (`Value::Null` past its end), copied from the
    /// row's own encoding without a call.
    Field(usize),
}

/// Where a flat-map sends its output rows: `out.emit((word, 1))`.
pub struct Collector {
    pub(crate) buf: Vec<u8>,
    pub(crate) rows: u32,
    pub(crate) key: Key,
    scratch: Vec<u8>,
}

impl Collector {
    pub(crate) fn new(capacity: usize, key: Key) -> Self {
        Collector {
            buf: Vec::with_capacity(capacity),
            rows: 0,
            key,
            scratch: Vec::new(),
        }
    }

    /// Emits one row: a tuple of up to 8 values (`(word, 1)`), a single
    /// value, or a `Vec<Value>`.
    #[inline]
    pub fn emit<R: IntoRow>(&mut self, row: R) {
        let start = self.buf.len();
        row.encode_row(&mut self.buf);
        self.rows += 1;
        match self.key {
            Key::None => {}
            Key::Field(n) => self.key_field(start, n),
            Key::Fn(key) => self.key_fn(start, key),
        }
    }

    /// Appends field `n` of the row at `start` as its key.
    #[inline]
    fn key_field(&mut self, start: usize, n: usize) {
        match field_span(&self.buf, start, n) {
            Some(span) => self.buf.extend_from_within(span),
            None => self.buf.push(encoding::NULL),
        }
    }

    /// Appends the key selector's value for the row at `start`.
    fn key_fn(&mut self, start: usize, key: fn(&Row) -> Value<'_>) {
        let key = key(Row::from_encoded(&self.buf[start..]));
        // A key that is a text or bytes field of the row (the usual case)
        // is copied from the row's own encoding.
        if let Some(span) = encoded_span(&self.buf, start, &key) {
            self.buf.extend_from_within(span);
        } else {
            self.scratch.clear();
            key.encode(&mut self.scratch);
            self.buf.extend_from_slice(&self.scratch);
        }
    }
}

/// Where field `n` of the row at `start` of `buf` is encoded; `None` past
/// the row's end.
#[inline]
fn field_span(buf: &[u8], start: usize, n: usize) -> Option<std::ops::Range<usize>> {
    let count = buf.get(start..start + 4)?;
    if n >= u32::from_le_bytes([count[0], count[1], count[2], count[3]]) as usize {
        return None;
    }
    let mut at = start + 4;
    for _ in 0..n {
        at = value_end(buf, at)?;
    }
    Some(at..value_end(buf, at)?)
}

/// Where `value`'s encoding (tag, length, bytes) sits in `buf[start..]`,
/// when it is a text or bytes value borrowed from there.
#[inline]
fn encoded_span(buf: &[u8], start: usize, value: &Value<'_>) -> Option<std::ops::Range<usize>> {
    let payload: &[u8] = match value {
        Value::Text(std::borrow::Cow::Borrowed(s)) => s.as_bytes(),
        Value::Bytes(std::borrow::Cow::Borrowed(b)) => b,
        _ => return None,
    };
    let offset = (payload.as_ptr() as usize).checked_sub(buf.as_ptr() as usize)?;
    let from = offset.checked_sub(5)?;
    let to = offset + payload.len();
    if from < start || to > buf.len() {
        return None;
    }
    // Tag and length must be right there: a slice of a longer value is not
    // an encoded value.
    let tag = match value {
        Value::Text(_) => encoding::TEXT,
        _ => encoding::BYTES,
    };
    let len = u32::try_from(payload.len()).ok()?.to_le_bytes();
    (buf[from] == tag && buf[from + 1..offset] == len).then_some(from..to)
}

/// Something that can be emitted as one row.
pub trait IntoRow {
    /// Appends the encoded row (count, then values) to `buf`.
    #[doc(hidden)]
    fn encode_row(self, buf: &mut Vec<u8>);
}

macro_rules! tuple_into_row {
    ($n:expr; $($t:ident $i:tt),+) => {
        impl<$($t: IntoValue),+> IntoRow for ($($t,)+) {
            #[inline]
            fn encode_row(self, buf: &mut Vec<u8>) {
                encoding::put_u32(buf, $n);
                $(self.$i.encode_into(buf);)+
            }
        }
    };
}
tuple_into_row!(1; A 0);
tuple_into_row!(2; A 0, B 1);
tuple_into_row!(3; A 0, B 1, C 2);
tuple_into_row!(4; A 0, B 1, C 2, D 3);
tuple_into_row!(5; A 0, B 1, C 2, D 3, E 4);
tuple_into_row!(6; A 0, B 1, C 2, D 3, E 4, F 5);
tuple_into_row!(7; A 0, B 1, C 2, D 3, E 4, F 5, G 6);
tuple_into_row!(8; A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);

impl IntoRow for Vec<Value<'_>> {
    fn encode_row(self, buf: &mut Vec<u8>) {
        encoding::put_len(buf, self.len());
        for v in &self {
            v.encode(buf);
        }
    }
}

impl IntoRow for &Row {
    fn encode_row(self, buf: &mut Vec<u8>) {
        encoding::put_len(buf, self.len());
        for v in self.iter() {
            v.encode(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emitted(key: fn(&Row) -> Value<'_>) -> (Vec<u8>, Vec<u8>) {
        emitted_by(Key::Fn(key))
    }

    fn emitted_by(key: Key) -> (Vec<u8>, Vec<u8>) {
        let mut keyed = Collector::new(64, key);
        keyed.emit(("a\u{4}\u{3}\0\0\0abc", 7));
        let mut plain = Collector::new(64, Key::None);
        plain.emit(("a\u{4}\u{3}\0\0\0abc", 7));
        let row_len = plain.buf.len();
        (keyed.buf[..row_len].to_vec(), keyed.buf[row_len..].to_vec())
    }

    #[test]
    fn a_key_field_is_what_the_key_selector_of_that_field_gives() {
        let selectors: [fn(&Row) -> Value<'_>; 3] =
            [|row| row.field(0), |row| row.field(1), |row| row.field(2)];
        for (n, selector) in selectors.into_iter().enumerate() {
            assert_eq!(emitted_by(Key::Field(n)), emitted(selector), "field {n}");
        }
        let mut out = Collector::new(64, Key::Field(3));
        out.emit((1.5, true, Value::Null, "x"));
        out.emit((Value::Null, Value::Bytes(vec![1, 2].into()), 3, 4));
        let mut want = Collector::new(64, Key::Fn(|row| row.field(3)));
        want.emit((1.5, true, Value::Null, "x"));
        want.emit((Value::Null, Value::Bytes(vec![1, 2].into()), 3, 4));
        assert_eq!(out.buf, want.buf);
    }

    fn encoded(v: Value<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        v.encode(&mut out);
        out
    }

    #[test]
    fn a_field_key_is_copied_from_the_row() {
        let (_, key) = emitted(|row| row.field(0));
        assert_eq!(key, encoded(Value::Text("a\u{4}\u{3}\0\0\0abc".into())));
    }

    #[test]
    fn a_slice_of_a_field_is_encoded_not_copied() {
        // The five bytes before "abc" look like a text header of length 3.
        let (_, key) = emitted(|row| match row.field(0) {
            Value::Text(std::borrow::Cow::Borrowed(s)) => Value::Text(s[6..].into()),
            other => other,
        });
        assert_eq!(key, encoded(Value::Text("abc".into())));
        let (_, key) = emitted(|row| match row.field(0) {
            Value::Text(std::borrow::Cow::Borrowed(s)) => Value::Text(s[..2].into()),
            other => other,
        });
        assert_eq!(key, encoded(Value::Text("a\u{4}".into())));
    }

    #[test]
    fn other_keys_are_encoded() {
        let (_, key) = emitted(|row| row.field(1));
        assert_eq!(key, encoded(Value::Int(7)));
        let (_, key) = emitted(|_| Value::Text("static".into()));
        assert_eq!(key, encoded(Value::Text("static".into())));
        let (_, key) = emitted(|row| row.field(5));
        assert_eq!(key, encoded(Value::Null));
    }

    #[test]
    fn rows_read_back_what_was_emitted() {
        let (row, _) = emitted(|row| row.field(0));
        let row = Row::from_encoded(&row);
        assert_eq!(row.len(), 2);
        let fields: Vec<Value<'_>> = row.iter().collect();
        assert_eq!(
            fields,
            [Value::Text("a\u{4}\u{3}\0\0\0abc".into()), Value::Int(7)]
        );
        assert_eq!(row.get(1), Some(Value::Int(7)));
        assert_eq!(row.get(2), None);
    }
}
