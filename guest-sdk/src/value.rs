//! Values and rows as a guest sees them.

use crate::encoding::{self, Reader};
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
#[repr(transparent)]
pub struct Row([u8]);

impl Row {
    pub(crate) fn from_encoded(bytes: &[u8]) -> &Row {
        // SAFETY: `Row` is `repr(transparent)` over `[u8]`, so the two
        // pointer types have the same layout and metadata.
        unsafe { &*(bytes as *const [u8] as *const Row) }
    }

    /// The number of fields.
    pub fn len(&self) -> usize {
        Reader::new(&self.0).u32().unwrap_or(0) as usize
    }

    /// Whether the row has no fields.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Field `index`, or `None` past the end.
    pub fn get(&self, index: usize) -> Option<Value<'_>> {
        self.iter().nth(index)
    }

    /// Field `index`, or `Value::Null` past the end.
    pub fn field(&self, index: usize) -> Value<'_> {
        self.get(index).unwrap_or(Value::Null)
    }

    /// The fields in order.
    pub fn iter(&self) -> RowIter<'_> {
        let mut reader = Reader::new(&self.0);
        let remaining = reader.u32().unwrap_or(0);
        RowIter { reader, remaining }
    }
}

impl fmt::Debug for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Iterator over the fields of a [`Row`].
pub struct RowIter<'a> {
    reader: Reader<'a>,
    remaining: u32,
}

impl<'a> Iterator for RowIter<'a> {
    type Item = Value<'a>;

    fn next(&mut self) -> Option<Value<'a>> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        self.reader.decode_value().ok()
    }
}
