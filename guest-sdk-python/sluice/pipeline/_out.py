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


class Record:
    """One input of a stage: a row and its timestamp. The first stage's rows
    are the source's lines (one text field), timestamped with the batch's
    processing time."""

    __slots__ = ("row", "timestamp")

    def __init__(self, row, timestamp):
        self.row = row
        """The row, a tuple of values."""
        self.timestamp = timestamp
        """Its timestamp, in milliseconds since the Unix epoch."""

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

    __slots__ = ("_buf", "_rows", "_ts", "_key", "_sides")

    def __init__(self, buf, sides, key):
        self._buf = buf
        self._rows = 0
        self._ts = 0
        self._key = key  # the next stage's key selector, or None
        self._sides = sides  # side output name -> tag

    def emit(self, *values):
        """Emits a row with the input's timestamp (a fired window's: its last
        millisecond; a timer's: the time it was set for)."""
        self._put(_head(0, self._ts), values)

    def emit_at(self, timestamp, *values):
        """Emits a row with `timestamp` (milliseconds): in the first stage,
        the event time the watermark follows."""
        self._put(_head(0, check_timestamp(timestamp)), values)

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
