//! The collector a flat-map emits rows into; rows are encoded straight into
//! the batch's output buffer, and keyed there when the host asked for keys.

use crate::encoding;
use crate::value::{IntoValue, Row, Value};

/// Where a flat-map sends its output rows: `out.emit((word, 1))`.
pub struct Collector {
    pub(crate) buf: Vec<u8>,
    pub(crate) rows: u32,
    pub(crate) key: Option<fn(&Row) -> Value<'_>>,
    scratch: Vec<u8>,
}

impl Collector {
    pub(crate) fn new(capacity: usize, key: Option<fn(&Row) -> Value<'_>>) -> Self {
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
        if let Some(key) = self.key {
            let row = &self.buf[start..];
            let key = key(Row::from_encoded(row));
            // A key that is a text or bytes field of the row (the usual
            // case) is copied from the row's own encoding.
            if let Some(span) = encoded_span(&self.buf, start, &key) {
                self.buf.extend_from_within(span);
            } else {
                self.scratch.clear();
                key.encode(&mut self.scratch);
                self.buf.extend_from_slice(&self.scratch);
            }
        }
    }
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
        let mut keyed = Collector::new(64, Some(key));
        keyed.emit(("a\u{4}\u{3}\0\0\0abc", 7));
        let mut plain = Collector::new(64, None);
        plain.emit(("a\u{4}\u{3}\0\0\0abc", 7));
        let row_len = plain.buf.len();
        (keyed.buf[..row_len].to_vec(), keyed.buf[row_len..].to_vec())
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
