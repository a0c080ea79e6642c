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
            self.scratch.clear();
            key(Row::from_encoded(&self.buf[start..])).encode(&mut self.scratch);
            self.buf.extend_from_slice(&self.scratch);
        }
    }
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
