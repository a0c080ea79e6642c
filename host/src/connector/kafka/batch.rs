//! Kafka record batches (format v2, uncompressed) written straight into
//! one buffer: the sink's hot path, one batch per partition per block,
//! without a record struct or a copy per record. Reading is
//! `kafka-protocol`'s (`cluster.rs`), which also decompresses.

use bytes::Bytes;

/// Bytes before the first record: base offset 8, length 4, leader epoch 4,
/// magic 1, CRC 4, attributes 2, last offset delta 4, base and max
/// timestamps 8 + 8, producer id 8, epoch 2, base sequence 4, count 4.
const HEADER: usize = 61;
/// Where the CRC'd part starts (the attributes).
const CRC_FROM: usize = 21;

/// One record batch being written.
pub struct BatchBuilder {
    buf: Vec<u8>,
    count: i32,
    timestamp: i64,
}

fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

fn varint_len(n: i64) -> usize {
    let mut v = zigzag(n);
    let mut len = 1;
    while v >= 0x80 {
        v >>= 7;
        len += 1;
    }
    len
}

fn put_varint(buf: &mut Vec<u8>, n: i64) {
    let mut v = zigzag(n);
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn bytes_len(b: Option<&[u8]>) -> usize {
    match b {
        Some(b) => varint_len(b.len() as i64) + b.len(),
        None => varint_len(-1),
    }
}

fn put_bytes(buf: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            put_varint(buf, b.len() as i64);
            buf.extend_from_slice(b);
        }
        None => put_varint(buf, -1),
    }
}

impl BatchBuilder {
    /// An empty batch whose records all have `timestamp` (Unix ms).
    pub fn new(timestamp: i64, capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(HEADER + capacity);
        buf.resize(HEADER, 0);
        BatchBuilder {
            buf,
            count: 0,
            timestamp,
        }
    }

    /// Records in it.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether it has no record.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Appends a record.
    pub fn push(&mut self, key: Option<&[u8]>, value: &[u8], headers: &[(&str, &[u8])]) {
        let delta = i64::from(self.count);
        let mut body = 1 + varint_len(0) + varint_len(delta);
        body += bytes_len(key) + bytes_len(Some(value));
        body += varint_len(headers.len() as i64);
        for (k, v) in headers {
            body += bytes_len(Some(k.as_bytes())) + bytes_len(Some(v));
        }
        let buf = &mut self.buf;
        put_varint(buf, body as i64);
        buf.push(0); // attributes
        put_varint(buf, 0); // timestamp delta
        put_varint(buf, delta); // offset delta
        put_bytes(buf, key);
        put_bytes(buf, Some(value));
        put_varint(buf, headers.len() as i64);
        for (k, v) in headers {
            put_bytes(buf, Some(k.as_bytes()));
            put_bytes(buf, Some(v));
        }
        self.count += 1;
    }

    /// The batch, its header filled in and its CRC computed.
    pub fn finish(mut self) -> Bytes {
        let len = (self.buf.len() - 12) as i32;
        let b = &mut self.buf;
        b[0..8].copy_from_slice(&0i64.to_be_bytes());
        b[8..12].copy_from_slice(&len.to_be_bytes());
        b[12..16].copy_from_slice(&(-1i32).to_be_bytes()); // leader epoch
        b[16] = 2; // magic
        b[21..23].copy_from_slice(&0i16.to_be_bytes()); // attributes
        b[23..27].copy_from_slice(&(self.count - 1).max(0).to_be_bytes());
        b[27..35].copy_from_slice(&self.timestamp.to_be_bytes());
        b[35..43].copy_from_slice(&self.timestamp.to_be_bytes());
        b[43..51].copy_from_slice(&(-1i64).to_be_bytes()); // producer id
        b[51..53].copy_from_slice(&(-1i16).to_be_bytes()); // producer epoch
        b[53..57].copy_from_slice(&(-1i32).to_be_bytes()); // base sequence
        b[57..61].copy_from_slice(&self.count.to_be_bytes());
        let crc = crc32c::crc32c(&b[CRC_FROM..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::RecordBatchDecoder;

    #[test]
    fn batches_read_back_with_kafka_protocol() {
        let mut b = BatchBuilder::new(1_700_000_000_000, 0);
        b.push(Some(b"k"), b"(a,1)", &[("sluice", b"\x01mark")]);
        b.push(None, b"", &[]);
        b.push(Some(&[0xff; 300]), &[7u8; 200], &[]);
        let mut bytes = b.finish();
        let set = RecordBatchDecoder::decode(&mut bytes).expect("a valid batch");
        let r = &set.records;
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(r[0].value.as_deref(), Some(&b"(a,1)"[..]));
        assert_eq!(r[0].timestamp, 1_700_000_000_000);
        assert_eq!(r[0].headers.len(), 1);
        assert_eq!(r[1].key, None);
        assert_eq!(r[1].value.as_deref(), Some(&b""[..]));
        assert_eq!(
            (r[2].offset, r[2].value.as_ref().map(|v| v.len())),
            (2, Some(200))
        );
        assert_eq!(r[2].key.as_ref().map(|k| k.len()), Some(300));
    }
}
