//! Kafka record batches (format v2) written straight into one buffer and
//! read straight from a fetch response's bytes.
//!
//! Writing ([`BatchBuilder`], uncompressed) is the sink's hot path, one
//! batch per partition per block, without a record struct or a copy per
//! record. Reading ([`read_batch`]) is the source's: a batch's header and
//! CRC are checked, then each record's varint lengths, and its key, value
//! and header values become slices of the fetched bytes (no copy). A gzip
//! or Snappy batch is decompressed first with `kafka-protocol`'s codecs;
//! other codecs are refused, as before. Everything read comes from the
//! network: every length is checked against what is left before anything
//! is sliced or reserved, and a bad batch is an error, never a panic.

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

    /// Appends a record without headers (the same bytes as [`Self::push`]
    /// with none, written with fewer steps).
    pub fn push_plain(&mut self, key: Option<&[u8]>, value: &[u8]) {
        let delta = i64::from(self.count);
        let key_len = key.map_or(1, |k| varint_len(k.len() as i64) + k.len());
        let value_len = varint_len(value.len() as i64) + value.len();
        // Attributes, timestamp delta 0, offset delta, key, value, 0 headers.
        let body = 2 + varint_len(delta) + key_len + value_len + 1;
        let buf = &mut self.buf;
        buf.reserve(body + 5);
        put_varint(buf, body as i64);
        buf.extend_from_slice(&[0, 0]);
        put_varint(buf, delta);
        put_bytes(buf, key);
        put_bytes(buf, Some(value));
        buf.push(0);
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

/// A record read from a batch: its key, value and header values are
/// slices of the fetched (or decompressed) bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// Its offset.
    pub offset: i64,
    /// Its timestamp (Unix ms).
    pub timestamp: i64,
    /// Its key (none: null).
    pub key: Option<Bytes>,
    /// Its value (none: null).
    pub value: Option<Bytes>,
    /// Its headers, in order: name and value (none: null).
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// What a batch's header says about all its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchInfo {
    /// The first record's offset.
    pub base_offset: i64,
    /// The offset after the batch's last (even if compacted away).
    pub next_offset: i64,
    /// Whether it belongs to a transaction.
    pub transactional: bool,
    /// Whether it holds control records (transaction markers).
    pub control: bool,
    /// The producer that wrote it.
    pub producer_id: i64,
}

fn be<const N: usize>(b: &[u8], at: usize) -> Result<[u8; N], String> {
    b.get(at..at + N)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| "the record batch is cut short".to_string())
}

/// Reads the records of one whole batch (`batch`: from its base offset to
/// its end, as [`crate::connector::kafka::client::whole_batches`] cuts
/// them) onto `out`; its header.
pub fn read_batch(batch: &Bytes, out: &mut Vec<Record>) -> Result<BatchInfo, String> {
    let length = i32::from_be_bytes(be(batch, 8)?);
    let end = usize::try_from(length)
        .ok()
        .and_then(|l| l.checked_add(12))
        .filter(|e| *e <= batch.len() && *e >= HEADER)
        .ok_or_else(|| format!("a record batch of bad length {length}"))?;
    let magic = batch[16];
    if magic != 2 {
        return Err(match magic {
            0 | 1 => format!("message sets v{magic} are unsupported"),
            _ => format!("Unknown record batch version ({magic})"),
        });
    }
    let supplied = u32::from_be_bytes(be(batch, 17)?);
    let actual = crc32c::crc32c(&batch[CRC_FROM..end]);
    if supplied != actual {
        return Err(format!(
            "Cyclic redundancy check failed ({supplied} != {actual})"
        ));
    }
    let attributes = i16::from_be_bytes(be(batch, 21)?);
    let base_offset = i64::from_be_bytes(be(batch, 0)?);
    let last_delta = i32::from_be_bytes(be(batch, 23)?);
    let base_timestamp = i64::from_be_bytes(be(batch, 27)?);
    let count = i32::from_be_bytes(be(batch, 57)?);
    let count = usize::try_from(count)
        .map_err(|_| format!("Unexpected negative record count ({count})"))?;
    let info = BatchInfo {
        base_offset,
        next_offset: base_offset
            .wrapping_add(i64::from(last_delta))
            .wrapping_add(1),
        transactional: attributes & (1 << 4) != 0,
        control: attributes & (1 << 5) != 0,
        producer_id: i64::from_be_bytes(be(batch, 43)?),
    };
    let body = batch.slice(HEADER..end);
    let body = match attributes & 7 {
        0 => body,
        1 => gunzip(&body)?,
        2 => unsnappy(&body)?,
        c @ (3 | 4) => {
            let name = if c == 3 { "Lz4" } else { "Zstd" };
            return Err(format!(
                "Support for {name} is not enabled as a cargo feature"
            ));
        }
        other => return Err(format!("Unknown compression algorithm used: {other}")),
    };
    let mut reader = Reader {
        buf: &body,
        at: 0,
        base_offset,
        base_timestamp,
    };
    // Each record takes at least 7 bytes: never reserve more than fit.
    out.reserve(count.min(body.len() / 7));
    for _ in 0..count {
        out.push(reader.record()?);
    }
    Ok(info)
}

/// The most bytes a compressed batch may decompress to: far past what a
/// broker accepts in one batch (Kafka's default is 1 MiB), so that a
/// hostile or broken broker cannot make the host allocate without bound.
const MAX_DECOMPRESSED: usize = 64 * 1024 * 1024;

fn too_big() -> String {
    format!(
        "a compressed record batch decompresses past {} MiB; the broker sent more than any producer writes in one batch",
        MAX_DECOMPRESSED >> 20
    )
}

/// A gzip batch body, decompressed (at most [`MAX_DECOMPRESSED`] bytes).
fn gunzip(body: &[u8]) -> Result<Bytes, String> {
    use std::io::Read;
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(MAX_DECOMPRESSED));
    flate2::read::GzDecoder::new(body)
        .take(MAX_DECOMPRESSED as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("Failed to decompress gzip: {e}"))?;
    if out.len() > MAX_DECOMPRESSED {
        return Err(too_big());
    }
    Ok(out.into())
}

/// A Snappy batch body, decompressed: raw Snappy, or the xerial framing
/// Kafka's Java clients write (a magic header, then `u32` sized blocks).
fn unsnappy(body: &[u8]) -> Result<Bytes, String> {
    const MAGIC: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
    let mut out = Vec::new();
    let block = |compressed: &[u8], out: &mut Vec<u8>| -> Result<(), String> {
        let n = snap::raw::decompress_len(compressed)
            .map_err(|e| format!("failed to read snappy header: {e}"))?;
        if out.len().saturating_add(n) > MAX_DECOMPRESSED {
            return Err(too_big());
        }
        let at = out.len();
        out.resize(at + n, 0);
        snap::raw::Decoder::new()
            .decompress(compressed, &mut out[at..])
            .map_err(|e| format!("failed to decompress snappy bytes: {e}"))?;
        Ok(())
    };
    match body.strip_prefix(&MAGIC[..]) {
        None => block(body, &mut out)?,
        Some(mut rest) => {
            while !rest.is_empty() {
                let size = rest
                    .get(..4)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
                    .ok_or("not enough bytes to read compressed block length")?;
                let chunk = rest
                    .get(4..4usize.saturating_add(size))
                    .ok_or("not enough bytes for block")?;
                block(chunk, &mut out)?;
                rest = &rest[4 + size..];
            }
        }
    }
    Ok(out.into())
}

/// A cursor over a batch's records.
struct Reader<'a> {
    buf: &'a Bytes,
    at: usize,
    base_offset: i64,
    base_timestamp: i64,
}

impl Reader<'_> {
    fn short() -> String {
        "a record is cut short".to_string()
    }

    fn varlong(&mut self) -> Result<i64, String> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = *self.buf.get(self.at).ok_or_else(Self::short)?;
            self.at += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(((v >> 1) as i64) ^ -((v & 1) as i64));
            }
        }
        Err("a varint of more than 10 bytes".to_string())
    }

    fn varint(&mut self) -> Result<i32, String> {
        let v = self.varlong()?;
        i32::try_from(v).map_err(|_| format!("a varint out of range ({v})"))
    }

    /// `len` bytes, none when `len` is -1.
    fn bytes(&mut self, len: i32, end: usize, what: &str) -> Result<Option<Bytes>, String> {
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len)
            .map_err(|_| format!("Unexpected negative record {what} length ({len} bytes)"))?;
        let to = self
            .at
            .checked_add(len)
            .filter(|t| *t <= end)
            .ok_or_else(Self::short)?;
        let b = self.buf.slice(self.at..to);
        self.at = to;
        Ok(Some(b))
    }

    fn record(&mut self) -> Result<Record, String> {
        let size = self.varint()?;
        let size = usize::try_from(size)
            .map_err(|_| format!("Unexpected negative record size: {size}"))?;
        let end = self
            .at
            .checked_add(size)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(Self::short)?;
        let r = self.fields(end);
        self.at = end;
        r
    }

    fn fields(&mut self, end: usize) -> Result<Record, String> {
        if self.at >= end {
            return Err(Self::short());
        }
        self.at += 1; // attributes
        let timestamp = self.base_timestamp.wrapping_add(self.varlong()?);
        let offset = self.base_offset.wrapping_add(i64::from(self.varint()?));
        let n = self.varint()?;
        let key = self.bytes(n, end, "key")?;
        let n = self.varint()?;
        let value = self.bytes(n, end, "value")?;
        let n = self.varint()?;
        let n = usize::try_from(n)
            .map_err(|_| format!("Unexpected negative record header count: {n}"))?;
        // Each header takes at least 2 bytes.
        if n > end.saturating_sub(self.at) / 2 {
            return Err(Self::short());
        }
        let mut headers = Vec::with_capacity(n);
        for _ in 0..n {
            let len = self.varint()?;
            if len < 0 {
                return Err(format!(
                    "Unexpected negative record header key length ({len} bytes)"
                ));
            }
            let name = self.bytes(len, end, "header key")?.unwrap_or_default();
            let name = String::from_utf8(name.to_vec())
                .map_err(|_| "a record header's name is not UTF-8".to_string())?;
            let len = self.varint()?;
            headers.push((name, self.bytes(len, end, "header value")?));
        }
        if self.at > end {
            return Err(Self::short());
        }
        Ok(Record {
            offset,
            timestamp,
            key,
            value,
            headers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_that_decompresses_past_the_bound_is_an_error_not_an_allocation() {
        use std::io::Write;
        let zeros = vec![0u8; MAX_DECOMPRESSED + 1];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&zeros).expect("compresses");
        let bomb = gz.finish().expect("compresses");
        assert!(bomb.len() < 1024 * 1024);
        assert!(gunzip(&bomb).expect_err("too big").contains("64 MiB"));
        let fine = &zeros[..1000];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(fine).expect("compresses");
        assert_eq!(
            &gunzip(&gz.finish().expect("compresses")).expect("fits")[..],
            fine
        );
        // A raw Snappy header that claims 4 GiB: refused before allocating.
        let claim = [0xff, 0xff, 0xff, 0xff, 0x0f];
        assert!(unsnappy(&claim).expect_err("too big").contains("64 MiB"));
        let raw = snap::raw::Encoder::new()
            .compress_vec(fine)
            .expect("compresses");
        assert_eq!(&unsnappy(&raw).expect("fits")[..], fine);
        let mut framed = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
        for _ in 0..2 {
            framed.extend_from_slice(&(raw.len() as u32).to_be_bytes());
            framed.extend_from_slice(&raw);
        }
        assert_eq!(unsnappy(&framed).expect("fits").len(), 2000);
        framed.truncate(framed.len() - 1);
        assert!(unsnappy(&framed).is_err());
    }
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{
        Compression, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    use proptest::prelude::*;

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

    #[test]
    fn plain_pushes_write_what_push_writes() {
        let mut a = BatchBuilder::new(5, 0);
        let mut b = BatchBuilder::new(5, 0);
        for i in 0..300usize {
            let key = vec![b'k'; i % 140];
            let key = (i % 3 != 0).then_some(&key[..]);
            let value = vec![b'v'; (i * 7) % 200];
            a.push(key, &value, &[]);
            b.push_plain(key, &value);
        }
        assert_eq!(a.finish(), b.finish());
    }

    #[test]
    fn our_batches_read_back() {
        let mut b = BatchBuilder::new(1_700_000_000_000, 0);
        b.push(
            Some(b"k"),
            b"(a,1)",
            &[("sluice", b"\x01mark"), ("h2", b"")],
        );
        b.push(None, b"", &[]);
        b.push(Some(&[0xff; 300]), &[7u8; 200], &[]);
        let bytes = b.finish();
        let mut out = Vec::new();
        let info = read_batch(&bytes, &mut out).expect("a valid batch");
        assert_eq!((info.base_offset, info.next_offset), (0, 3));
        assert!(!info.control && !info.transactional);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(out[0].value.as_deref(), Some(&b"(a,1)"[..]));
        assert_eq!(out[0].timestamp, 1_700_000_000_000);
        assert_eq!(
            out[0].headers,
            vec![
                ("sluice".to_string(), Some(Bytes::from_static(b"\x01mark"))),
                ("h2".to_string(), Some(Bytes::new())),
            ]
        );
        assert_eq!(out[1].key, None);
        assert_eq!(out[1].value.as_deref(), Some(&b""[..]));
        assert_eq!(out[2].offset, 2);
        assert_eq!(out[2].key.as_ref().map(|k| k.len()), Some(300));
        assert_eq!(out[2].value.as_deref(), Some(&[7u8; 200][..]));
    }

    type Rec = (
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Vec<(String, Option<Vec<u8>>)>,
    );

    /// Records as kafka-protocol encodes them, from (key, value, headers).
    fn theirs(records: &[Rec], base: i64, compression: Compression) -> Bytes {
        let records: Vec<kafka_protocol::records::Record> = records
            .iter()
            .enumerate()
            .map(|(i, (k, v, h))| kafka_protocol::records::Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: base + i as i64,
                sequence: (i as i32).wrapping_sub(1),
                timestamp: 1_000 + 7 * i as i64,
                key: k.clone().map(Bytes::from),
                value: v.clone().map(Bytes::from),
                headers: h
                    .iter()
                    .map(|(k, v)| (StrBytes::from_string(k.clone()), v.clone().map(Bytes::from)))
                    .collect(),
            })
            .collect();
        let mut buf = bytes::BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            records.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .expect("encode");
        buf.freeze()
    }

    fn records() -> impl Strategy<Value = Vec<Rec>> {
        let bytes = || proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40));
        // Distinct header names: kafka-protocol keeps headers in a map.
        let headers = proptest::collection::btree_map("[a-z]{0,6}", bytes(), 0..3)
            .prop_map(|m| m.into_iter().collect::<Vec<_>>());
        proptest::collection::vec((bytes(), bytes(), headers), 1..20)
    }

    fn same(ours: &[Record], theirs: &[Rec], base: i64) {
        assert_eq!(ours.len(), theirs.len());
        for (i, (r, (k, v, h))) in ours.iter().zip(theirs).enumerate() {
            assert_eq!(r.offset, base + i as i64);
            assert_eq!(r.timestamp, 1_000 + 7 * i as i64);
            assert_eq!(r.key.as_deref(), k.as_deref());
            assert_eq!(r.value.as_deref(), v.as_deref());
            let hs: Vec<(String, Option<Vec<u8>>)> = r
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.as_ref().map(|v| v.to_vec())))
                .collect();
            assert_eq!(&hs, h);
        }
    }

    proptest! {
        #[test]
        fn reads_what_kafka_protocol_writes(recs in records(), base in 0i64..1 << 40, c in 0..3u8) {
            let compression = [Compression::None, Compression::Gzip, Compression::Snappy][c as usize];
            let bytes = theirs(&recs, base, compression);
            let mut out = Vec::new();
            let info = read_batch(&bytes, &mut out).expect("a valid batch");
            prop_assert_eq!(info.base_offset, base);
            prop_assert_eq!(info.next_offset, base + recs.len() as i64);
            same(&out, &recs, base);
        }

        #[test]
        fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = read_batch(&Bytes::from(b), &mut Vec::new());
        }

        #[test]
        fn mutated_batches_never_panic(
            recs in records(),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
            cut in any::<usize>(),
            c in 0..3u8,
        ) {
            let compression = [Compression::None, Compression::Gzip, Compression::Snappy][c as usize];
            let mut b = theirs(&recs, 5, compression).to_vec();
            for (at, x) in flips {
                let at = at % b.len();
                b[at] ^= x;
            }
            let _ = read_batch(&Bytes::from(b.clone()), &mut Vec::new());
            // The same with a correct CRC, so the records are read.
            if b.len() >= HEADER {
                let crc = crc32c::crc32c(&b[CRC_FROM..]);
                b[17..21].copy_from_slice(&crc.to_be_bytes());
                let _ = read_batch(&Bytes::from(b.clone()), &mut Vec::new());
            }
            b.truncate(cut % (b.len() + 1));
            let _ = read_batch(&Bytes::from(b), &mut Vec::new());
        }
    }

    #[test]
    fn bad_batches_are_errors() {
        let mut b = BatchBuilder::new(0, 0);
        b.push(None, b"x", &[]);
        let good = b.finish().to_vec();
        let mut bad = good.clone();
        bad[HEADER + 2] ^= 1;
        let e = read_batch(&Bytes::from(bad), &mut Vec::new()).expect_err("crc");
        assert!(e.contains("Cyclic redundancy"), "{e}");
        let mut v1 = good.clone();
        v1[16] = 1;
        assert!(read_batch(&Bytes::from(v1), &mut Vec::new()).is_err());
        // A record count far over what the bytes hold.
        let mut many = good;
        many[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        let crc = crc32c::crc32c(&many[CRC_FROM..]);
        many[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(read_batch(&Bytes::from(many), &mut Vec::new()).is_err());
    }
}
