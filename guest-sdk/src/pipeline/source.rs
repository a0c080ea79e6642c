//! What a source knows of the record a first-stage input came from: for a
//! Kafka source, its key, partition, offset, timestamp and headers, which
//! the host sends after the value's text (see `map` in
//! `wit/sluice-stream@0.2.0/stream.wit`). A line is one text value and has
//! none of these.

use crate::value::{Row, Value};

/// Where the fixed fields of a Kafka record are in its row.
const KEY: usize = 1;
const PARTITION: usize = 2;
const OFFSET: usize = 3;
const TIMESTAMP: usize = 4;
/// The first header's name; its value follows, then the next header's.
const HEADERS: usize = 5;

/// The Kafka record a first-stage input came from
/// ([`Record::kafka`](super::Record::kafka)).
#[derive(Clone, Copy)]
pub struct KafkaRecord<'a> {
    row: &'a Row,
}

impl<'a> KafkaRecord<'a> {
    /// The record a first-stage row is, when it is a Kafka record (a row of
    /// more than one value, the value's text first).
    pub(crate) fn of(row: &'a Row) -> Option<Self> {
        (row.len() >= HEADERS && matches!(row.get(PARTITION), Some(Value::Int(_))))
            .then_some(KafkaRecord { row })
    }

    fn int(&self, index: usize) -> i64 {
        self.row.field(index).as_int().unwrap_or(-1)
    }

    /// The record's key; `None` when it has none.
    pub fn key(&self) -> Option<&'a [u8]> {
        bytes(self.row.get(KEY)?)
    }

    /// The partition it was read from.
    pub fn partition(&self) -> i32 {
        i32::try_from(self.int(PARTITION)).unwrap_or(-1)
    }

    /// Its offset in the partition.
    pub fn offset(&self) -> i64 {
        self.int(OFFSET)
    }

    /// Its timestamp (milliseconds since the Unix epoch, as the producer or
    /// the broker set it), -1 when it has none. A first-stage
    /// [`Record::timestamp`](super::Record::timestamp) is this one, when
    /// there is one.
    pub fn timestamp(&self) -> i64 {
        self.int(TIMESTAMP)
    }

    /// Its headers in order: name and value (`None`: a null value).
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, Option<&'a [u8]>)> + 'a {
        let mut fields = self.row.iter().skip(HEADERS);
        std::iter::from_fn(move || {
            let name = fields.next()?;
            let value = fields.next()?;
            let Value::Text(std::borrow::Cow::Borrowed(name)) = name else {
                return None;
            };
            Some((name, bytes(value)))
        })
    }

    /// The value of the first header named `name`; `None` when there is
    /// none or its value is null.
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v)
    }
}

/// The bytes of a bytes value borrowed from its row.
fn bytes(value: Value<'_>) -> Option<&[u8]> {
    match value {
        Value::Bytes(std::borrow::Cow::Borrowed(b)) => Some(b),
        _ => None,
    }
}

/// A first-stage input's timestamp: the Kafka record's, when it has one,
/// else the batch's processing time.
pub(crate) fn first_timestamp(row: &Row, processing_time: i64) -> i64 {
    match KafkaRecord::of(row).map(|r| r.timestamp()) {
        Some(ts) if ts >= 0 => ts,
        _ => processing_time,
    }
}

impl std::fmt::Debug for KafkaRecord<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaRecord")
            .field("key", &self.key())
            .field("partition", &self.partition())
            .field("offset", &self.offset())
            .field("timestamp", &self.timestamp())
            .field("headers", &self.headers().collect::<Vec<_>>())
            .finish()
    }
}
