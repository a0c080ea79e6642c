"""What a stage function gets (a `Record`, a `Timer`, a `WindowInfo`) and
where it sends rows (`Out`), with the encoding of what it emits:

    emitted-list := u32 count, emitted{count}
    emitted      := u8 output-tag, timestamp, row [, value key]

Tag 0 is the main stream (with the next stage's key when that stage is
keyed), tag n the side output n-1.
"""

import enum
import struct

from .._codec import put_row, put_value
from .._each import KeyField, RowCache

_head = struct.Struct("<Bq").pack  # output tag, timestamp

MIN_I64 = -(1 << 63)
MAX_I64 = (1 << 63) - 1


class Time(enum.Enum):
    """Which clock a timer or a window follows."""

    EVENT = 0
    """The rows' timestamps, as the watermark advances."""
    PROCESSING = 1
    """The processing time of the batches (recorded by the host, so a replay
    sees the same)."""


class KafkaRecord:
    """The Kafka record a first-stage input is (`Record.kafka`): its `key`
    (bytes or None), `partition`, `offset`, `timestamp` (milliseconds
    since the Unix epoch, -1 when it has none) and `headers`, a list of
    `(name, value)` pairs (value: bytes or None)."""

    __slots__ = ("key", "partition", "offset", "timestamp", "headers")

    def __init__(self, row):
        self.key = row[1]
        self.partition = row[2]
        self.offset = row[3]
        self.timestamp = row[4]
        self.headers = list(zip(row[5::2], row[6::2]))

    @staticmethod
    def of(row):
        """The record a first-stage row is, when it is a Kafka record (more
        than one value: the value's text, key, partition, offset,
        timestamp, then the headers' names and values); else None."""
        if len(row) >= 5 and type(row[2]) is int and type(row[4]) is int:
            return KafkaRecord(row)
        return None

    def header(self, name):
        """The value of the first header named `name`, or None."""
        for n, v in self.headers:
            if n == name:
                return v
        return None

    def __repr__(self):
        return (f"KafkaRecord(key={self.key!r}, partition={self.partition}, "
                f"offset={self.offset}, timestamp={self.timestamp}, headers={self.headers!r})")


class Record:
    """One input of a stage: a row and its timestamp. The first stage's rows
    are the source's records: a line is one text field, timestamped with the
    batch's processing time; a Kafka record is its value's text, then its
    key, partition, offset, timestamp and headers (`kafka`), timestamped
    with its Kafka timestamp, so that rows a first stage emits with
    `out.emit` are in the records' event time."""

    __slots__ = ("row", "timestamp", "kafka")

    def __init__(self, row, timestamp, kafka=None):
        self.row = row
        """The row, a tuple of values."""
        self.timestamp = timestamp
        """Its timestamp, in milliseconds since the Unix epoch."""
        self.kafka = kafka
        """The Kafka record a first-stage input is (a `KafkaRecord`); None
        for a line, and in later stages."""

    @property
    def text(self):
        """The first field when it is text (the line, in the first stage),
        else `""`."""
        row = self.row
        return row[0] if row and type(row[0]) is str else ""

    def __repr__(self):
        return f"Record({self.row!r}, timestamp={self.timestamp})"


class Timer:
    """A timer of the key that fired: the time `at` it was set for, on the
    clock `time` (a `Time`)."""

    __slots__ = ("at", "time")
    __match_args__ = ("at", "time")

    def __init__(self, at, time):
        self.at = at
        self.time = time

    def __repr__(self):
        return f"Timer(at={self.at}, time={self.time})"


class WindowInfo:
    """A window that fires: its `key` and its span `[start, end)`."""

    __slots__ = ("key", "start", "end")
    __match_args__ = ("key", "start", "end")

    def __init__(self, key, start, end):
        self.key = key
        self.start = start
        self.end = end

    def __repr__(self):
        return f"WindowInfo(key={self.key!r}, start={self.start}, end={self.end})"


def row_cache(key):
    """The rows `Out.emit_each` keeps for a next stage keyed by `key` (a
    `KeyField`, a function or None): None when the key is a function."""
    if key is None:
        return RowCache()
    if isinstance(key, KeyField):
        return RowCache(True, key.index)
    return None


def check_timestamp(ts, what="a timestamp"):
    """`ts` if it is an int within 64 bits; else a TypeError or OverflowError."""
    if type(ts) is not int:
        if isinstance(ts, bool) or not isinstance(ts, int):
            raise TypeError(f"{what} must be an int (milliseconds), not {type(ts).__name__}")
        ts = int(ts)
    if not MIN_I64 <= ts <= MAX_I64:
        raise OverflowError(f"{what} {ts} does not fit in 64 bits")
    return ts


class Out:
    """Where a stage's rows go: `out.emit(*values)` to the next stage (or
    the sink), `out.side(name, *values)` to a side output. Values are None,
    bool, int (64-bit), float, str or bytes."""

    __slots__ = ("_buf", "_rows", "_ts", "_key", "_sides", "_cache")

    def __init__(self, buf, sides, key, cache=None):
        self._buf = buf
        self._rows = 0
        self._ts = 0
        self._key = key  # the next stage's key selector, or None
        self._sides = sides  # side output name -> tag
        # The rows emit_each keeps, when the next stage's key (if any) is a
        # field index; None when it is a function.
        self._cache = cache

    def emit(self, *values):
        """Emits a row with the input's timestamp (a fired window's: its last
        millisecond; a timer's: the time it was set for)."""
        self._put(_head(0, self._ts), values)

    def emit_at(self, timestamp, *values):
        """Emits a row with `timestamp` (milliseconds): in the first stage,
        the event time the watermark follows."""
        self._put(_head(0, check_timestamp(timestamp)), values)

    def emit_each(self, items, *rest):
        """Emits one row `(item, *rest)` per item of `items` (a list, a
        tuple or any iterable), with the input's timestamp: what `for i in
        items: out.emit(i, *rest)` emits, in one call. With the next
        stage keyed by a field index (`key_by(0)`), or not keyed, the rows
        of text items are encoded once and kept, so that no Python runs
        per row. All the rows are emitted, or none when one fails."""
        self._each(_head(0, self._ts), items, rest)

    def emit_each_at(self, timestamp, items, *rest):
        """`emit_each` with the rows at `timestamp` (milliseconds)."""
        self._each(_head(0, check_timestamp(timestamp)), items, rest)

    def _each(self, head, items, rest):
        if type(items) is not list and type(items) is not tuple:
            items = list(items)
        cache = self._cache
        if cache is None:
            # A key function runs once per row.
            buf = self._buf
            at, rows = len(buf), self._rows
            try:
                for item in items:
                    self._put(head, (item, *rest))
            except BaseException:
                del buf[at:]
                self._rows = rows
                raise
            return
        if not items:
            return
        rows = cache.join(items, rest, head)
        buf = self._buf
        buf += head
        buf += rows
        self._rows += len(items)

    def side(self, name, *values):
        """Sends a row to the side output `name` (declared with
        `Job.side_output`), with the input's timestamp."""
        tag = self._sides.get(name)
        if tag is None:
            raise ValueError(
                f"there is no side output named `{name}`; declare it with Job.side_output"
            )
        buf = self._buf
        at = len(buf)
        try:
            buf += _head(tag, self._ts)
            put_row(buf, values)
        except BaseException:
            del buf[at:]
            raise
        self._rows += 1

    def _put(self, head, values):
        buf = self._buf
        at = len(buf)
        try:
            buf += head
            put_row(buf, values)
            key = self._key
            if key is not None:
                put_value(buf, key(values))
        except BaseException:
            # A row is emitted whole or not at all, even when the caller
            # catches the error.
            del buf[at:]
            raise
        self._rows += 1
