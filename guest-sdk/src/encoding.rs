//! The flat batch encoding of `sluice:stream@0.1.0` (see `wit/sluice-stream@0.1.0/stream.wit`):
//! little-endian, `row := u32 count, value*`, `value := tag payload`.

pub(crate) const NULL: u8 = 0;
pub(crate) const BOOL: u8 = 1;
pub(crate) const INT: u8 = 2;
pub(crate) const FLOAT: u8 = 3;
pub(crate) const TEXT: u8 = 4;
pub(crate) const BYTES: u8 = 5;

/// Reads values and rows from an encoded buffer, checking every bound.
pub(crate) struct Reader<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.buf.len())
            .ok_or_else(|| format!("truncated batch at byte {}", self.pos))?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    #[inline]
    pub(crate) fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    #[inline]
    pub(crate) fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    #[inline]
    pub(crate) fn i64(&mut self) -> Result<i64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_le_bytes(a))
    }

    /// `u32 len, bytes`.
    pub(crate) fn sized(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    /// Skips one value and returns its encoded bytes.
    pub(crate) fn value_bytes(&mut self) -> Result<&'a [u8], String> {
        let start = self.pos;
        let tag = self.take(1)?[0];
        match tag {
            NULL => {}
            BOOL => {
                self.take(1)?;
            }
            INT | FLOAT => {
                self.take(8)?;
            }
            TEXT | BYTES => {
                let len = self.u32()? as usize;
                let bytes = self.take(len)?;
                if tag == TEXT && std::str::from_utf8(bytes).is_err() {
                    return Err(format!("text value at byte {start} is not valid UTF-8"));
                }
            }
            other => return Err(format!("unknown value tag {other} at byte {start}")),
        }
        Ok(&self.buf[start..self.pos])
    }

    /// Skips one row and returns its encoded bytes (count included).
    pub(crate) fn row_bytes(&mut self) -> Result<&'a [u8], String> {
        let start = self.pos;
        let count = self.u32()?;
        for _ in 0..count {
            self.value_bytes()?;
        }
        Ok(&self.buf[start..self.pos])
    }

    /// Reads one input record and returns its text, if it is a one-text row.
    pub(crate) fn text_record(&mut self) -> Result<Result<&'a str, &'static str>, String> {
        let start = self.pos;
        let count = self.u32()?;
        if count == 1 && self.buf.get(self.pos) == Some(&TEXT) {
            self.pos += 1;
            let len = self.u32()? as usize;
            let bytes = self.take(len)?;
            return match std::str::from_utf8(bytes) {
                Ok(text) => Ok(Ok(text)),
                Err(_) => Ok(Err("the record's text is not valid UTF-8")),
            };
        }
        self.pos = start;
        self.row_bytes()?;
        Ok(Err("the record is not a single text value"))
    }
}

#[inline]
pub(crate) fn put_u32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_le_bytes());
}

#[inline]
pub(crate) fn put_len(buf: &mut Vec<u8>, len: usize) {
    let len = u32::try_from(len).expect("a value longer than 4 GiB cannot cross the boundary");
    put_u32(buf, len);
}

#[inline]
pub(crate) fn put_text(buf: &mut Vec<u8>, s: &str) {
    buf.push(TEXT);
    put_len(buf, s.len());
    buf.extend_from_slice(s.as_bytes());
}

#[inline]
pub(crate) fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    buf.push(BYTES);
    put_len(buf, b.len());
    buf.extend_from_slice(b);
}

#[inline]
pub(crate) fn put_int(buf: &mut Vec<u8>, v: i64) {
    buf.push(INT);
    buf.extend_from_slice(&v.to_le_bytes());
}

#[inline]
pub(crate) fn put_float(buf: &mut Vec<u8>, v: f64) {
    buf.push(FLOAT);
    buf.extend_from_slice(&v.to_bits().to_le_bytes());
}

#[inline]
pub(crate) fn put_bool(buf: &mut Vec<u8>, v: bool) {
    buf.push(BOOL);
    buf.push(v as u8);
}
