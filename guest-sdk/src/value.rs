//! Values and rows as a guest sees them.

use crate::encoding;
use std::borrow::Cow;
use std::fmt;

/// One scalar value of a row. Text and bytes borrow from the row they were
/// read from where they can.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// No value.
    Null,
    /// A boolean.
    Bool(bool),
    /// A 64-bit signed integer.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// UTF-8 text.
    Text(Cow<'a, str>),
    /// Raw bytes.
    Bytes(Cow<'a, [u8]>),
}

impl Value<'_> {
    /// The text, if this is a text value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(t) => Some(t),
            _ => None,
        }
    }

    /// The integer, if this is an int value.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The number, if this is a float or an int value.
    pub fn as_float(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// A copy that owns its text and bytes.
    pub fn into_owned(self) -> Value<'static> {
        match self {
            Value::Null => Value::Null,
            Value::Bool(b) => Value::Bool(b),
            Value::Int(i) => Value::Int(i),
            Value::Float(f) => Value::Float(f),
            Value::Text(t) => Value::Text(Cow::Owned(t.into_owned())),
            Value::Bytes(b) => Value::Bytes(Cow::Owned(b.into_owned())),
        }
    }

    pub(crate) fn encode(&self, buf: &mut Vec<u8>) {
        match self {
            Value::Null => buf.push(encoding::NULL),
            Value::Bool(b) => encoding::put_bool(buf, *b),
            Value::Int(i) => encoding::put_int(buf, *i),
            Value::Float(f) => encoding::put_float(buf, *f),
            Value::Text(t) => encoding::put_text(buf, t),
            Value::Bytes(b) => encoding::put_bytes(buf, b),
        }
    }
}

/// Prints the value the way the host prints it in a tuple: text as is,
/// floats with a decimal point, bytes as `0x` hex.
impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x:?}"),
            Value::Text(t) => f.write_str(t),
            Value::Bytes(b) => {
                f.write_str("0x")?;
                b.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
            }
        }
    }
}

/// Decodes one encoded value, checked (text must be UTF-8).
pub(crate) fn decode(bytes: &[u8]) -> Option<Value<'_>> {
    let mut r = encoding::Reader::new(bytes);
    let v = r.value_bytes().ok()?;
    value_at(v, 0)
}

/// Converts a Rust value into a row field; implemented for the usual
/// scalars, `&str`, `String`, byte slices, `Value` and `Option<T>` (None is
/// null).
pub trait IntoValue {
    /// Appends the encoded value to `buf`.
    #[doc(hidden)]
    fn encode_into(self, buf: &mut Vec<u8>);
}

impl IntoValue for &str {
    #[inline]
    fn encode_into(self, buf: &mut Vec<u8>) {
        encoding::put_text(buf, self);
    }
}
impl IntoValue for String {
    #[inline]
    fn encode_into(self, buf: &mut Vec<u8>) {
        encoding::put_text(buf, &self);
    }
}
impl IntoValue for &String {
    #[inline]
    fn encode_into(self, buf: &mut Vec<u8>) {
        encoding::put_text(buf, self);
    }
}
impl IntoValue for &[u8] {
    #[inline]
    fn encode_into(self, buf: &mut Vec<u8>) {
        encoding::put_bytes(buf, self);
    }
}
impl IntoValue for Vec<u8> {
    #[inline]
    fn encode_into(self, buf: &mut Vec<u8>) {
        encoding::put_bytes(buf, &self);
    }
}
impl IntoValue for bool {
    #[inline]
    fn encode_into(self, buf: &mut Vec<u8>) {
        encoding::put_bool(buf, self);
    }
}
macro_rules! int_into_value {
    ($($t:ty),*) => {$(
        impl IntoValue for $t {
            #[inline]
            fn encode_into(self, buf: &mut Vec<u8>) {
                encoding::put_int(buf, i64::from(self));
            }
        }
    )*};
}
int_into_value!(i8, i16, i32, i64, u8, u16, u32);
impl IntoValue for usize {
    #[inline]
    fn encode_into(self, buf: &mut Vec<u8>) {
        let v = i64::try_from(self).expect("a usize above i64::MAX cannot be an int value");
        encoding::put_int(buf, v);
    }
}
impl IntoValue for f64 {
    #[inline]
    fn encode_into(self, buf: &mut Vec<u8>) {
        encoding::put_float(buf, self);
    }
}
impl IntoValue for f32 {
    #[inline]
    fn encode_into(self, buf: &mut Vec<u8>) {
        encoding::put_float(buf, f64::from(self));
    }
}
impl IntoValue for Value<'_> {
    #[inline]
    fn encode_into(self, buf: &mut Vec<u8>) {
        self.encode(buf);
    }
}
impl IntoValue for &Value<'_> {
    #[inline]
    fn encode_into(self, buf: &mut Vec<u8>) {
        self.encode(buf);
    }
}
impl<T: IntoValue> IntoValue for Option<T> {
    #[inline]
    fn encode_into(self, buf: &mut Vec<u8>) {
        match self {
            Some(v) => v.encode_into(buf),
            None => buf.push(encoding::NULL),
        }
    }
}

/// A row the flat-map emitted, as the key-selector sees it: fields are read
/// by position without copying.
///
/// Invariant: a `Row`'s bytes are a well-formed encoded row whose text
/// values are valid UTF-8 — rows are made only from what this crate's
/// encoder wrote (the collector) or from a batch whose rows were checked
/// (`Reader::row_bytes`, in `key-selector`).
#[repr(transparent)]
pub struct Row([u8]);

/// Where the value at `pos` of a row ends (no checks: see [`Row`]).
#[inline]
pub(crate) fn value_end(bytes: &[u8], pos: usize) -> Option<usize> {
    let len_at = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    Some(match *bytes.get(pos)? {
        encoding::NULL => pos + 1,
        encoding::BOOL => pos + 2,
        encoding::INT | encoding::FLOAT => pos + 9,
        _ => pos + 5 + len_at(pos + 1)?,
    })
}

/// Decodes the value at `pos` of a row (see [`Row`] for why text is not
/// checked again).
#[inline]
fn value_at(bytes: &[u8], pos: usize) -> Option<Value<'_>> {
    let end = value_end(bytes, pos)?;
    let payload = bytes.get(pos + 1..end)?;
    Some(match bytes[pos] {
        encoding::NULL => Value::Null,
        encoding::BOOL => Value::Bool(payload.first().is_some_and(|b| *b != 0)),
        encoding::INT => Value::Int(i64::from_le_bytes(payload.try_into().ok()?)),
        encoding::FLOAT => Value::Float(f64::from_le_bytes(payload.try_into().ok()?)),
        encoding::TEXT => {
            let text = &payload[4..];
            debug_assert!(std::str::from_utf8(text).is_ok());
            // SAFETY: a row's text values are valid UTF-8 (the invariant of
            // `Row`): written from a `&str` by this crate, or checked by
            // `Reader::row_bytes` before the row was made.
            Value::Text(Cow::Borrowed(unsafe {
                std::str::from_utf8_unchecked(text)
            }))
        }
        encoding::BYTES => Value::Bytes(Cow::Borrowed(&payload[4..])),
        _ => return None,
    })
}

impl Row {
    pub(crate) fn from_encoded(bytes: &[u8]) -> &Row {
        // SAFETY: `Row` is `repr(transparent)` over `[u8]`, so the two
        // pointer types have the same layout and metadata.
        unsafe { &*(bytes as *const [u8] as *const Row) }
    }

    /// The number of fields.
    pub fn len(&self) -> usize {
        match self.0.get(..4) {
            Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize,
            None => 0,
        }
    }

    /// Whether the row has no fields.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Field `index`, or `None` past the end.
    pub fn get(&self, index: usize) -> Option<Value<'_>> {
        if index >= self.len() {
            return None;
        }
        let mut pos = 4;
        for _ in 0..index {
            pos = value_end(&self.0, pos)?;
        }
        value_at(&self.0, pos)
    }

    /// Field `index`, or `Value::Null` past the end.
    pub fn field(&self, index: usize) -> Value<'_> {
        self.get(index).unwrap_or(Value::Null)
    }

    /// The fields in order.
    pub fn iter(&self) -> RowIter<'_> {
        RowIter {
            bytes: &self.0,
            pos: 4,
            remaining: self.len() as u32,
        }
    }
}

impl fmt::Debug for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Iterator over the fields of a [`Row`].
pub struct RowIter<'a> {
    bytes: &'a [u8],
    pos: usize,
    remaining: u32,
}

impl<'a> Iterator for RowIter<'a> {
    type Item = Value<'a>;

    fn next(&mut self) -> Option<Value<'a>> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let value = value_at(self.bytes, self.pos)?;
        self.pos = value_end(self.bytes, self.pos)?;
        Some(value)
    }
}
