"""Reading the buffers the host ships in a 0.2.0 call, every bound and tag
checked (see wit/sluice-stream@0.2.0/stream.wit): a buffer that does not
decode raises `Malformed`, which the calls turn into a record-error, never
a trap. Writing rows is `sluice._codec`'s.

    value     := 0x00 | 0x01 u8 | 0x02 s64 | 0x03 f64
               | 0x04 u32 len, utf-8 | 0x05 u32 len, bytes
    row       := u32 value-count, value{value-count}
    timestamp := s64
    state     := 0x00 | 0x01 u32 len, u8{len}
"""

import struct

from .._codec import BOOL, BYTES, FLOAT, INT, NULL, TEXT

_u32_at = struct.Struct("<I").unpack_from
_i64_at = struct.Struct("<q").unpack_from
_f64_at = struct.Struct("<d").unpack_from
_text_head_at = struct.Struct("<BI").unpack_from  # tag, length


class Malformed(Exception):
    """A buffer from the host that does not decode; the message says where."""


class Reader:
    """Reads one buffer front to back; every read checks its bounds."""

    __slots__ = ("buf", "pos", "end")

    def __init__(self, buf, pos=0, end=None):
        self.buf = buf
        self.pos = pos
        self.end = len(buf) if end is None else end

    def at_end(self):
        return self.pos >= self.end

    def _short(self, what):
        return Malformed(f"the buffer ends inside {what} at byte {self.pos}")

    def u8(self, what="a tag"):
        pos = self.pos
        if pos >= self.end:
            raise self._short(what)
        self.pos = pos + 1
        return self.buf[pos]

    def u32(self, what="a length"):
        pos = self.pos
        if pos + 4 > self.end:
            raise self._short(what)
        self.pos = pos + 4
        return _u32_at(self.buf, pos)[0]

    def i64(self, what="a timestamp"):
        pos = self.pos
        if pos + 8 > self.end:
            raise self._short(what)
        self.pos = pos + 8
        return _i64_at(self.buf, pos)[0]

    def take(self, n, what):
        pos = self.pos
        if pos + n > self.end:
            raise self._short(what)
        self.pos = pos + n
        return self.buf[pos:pos + n]

    def sized(self, what):
        """`u32 len, u8{len}`: the bytes."""
        n = self.u32(f"the length of {what}")
        return self.take(n, what)

    def value(self):
        """One value, decoded."""
        v, self.pos = value_at(self.buf, self.pos, self.end)
        return v

    def value_and_bytes(self):
        """One value, decoded, and its encoded bytes."""
        start = self.pos
        v = self.value()
        return v, bytes(self.buf[start:self.pos])

    def row(self):
        """One row as a tuple."""
        buf, pos, end = self.buf, self.pos, self.end
        if pos + 4 > end:
            raise self._short("the value count of a row")
        n = _u32_at(buf, pos)[0]
        if n > end - pos - 4:  # every value takes a byte at least
            raise Malformed(f"a row at byte {pos} claims {n} values, past the buffer's end")
        pos += 4
        values = []
        for _ in range(n):
            v, pos = value_at(buf, pos, end)
            values.append(v)
        self.pos = pos
        return tuple(values)

    def row_and_bytes(self):
        """One row as a tuple, and its encoded bytes."""
        start = self.pos
        row = self.row()
        return row, bytes(self.buf[start:self.pos])

    def state(self, what):
        """`state`: None, or the state's bytes."""
        tag = self.u8(f"the tag of {what}")
        if tag == 0:
            return None
        if tag != 1:
            raise Malformed(f"{what} has tag {tag}, not 0 (none) or 1 (bytes)")
        return self.sized(what)


def value_at(buf, pos, end):
    """The value at `pos` of `buf` (which ends at `end`), decoded, and the
    position after it."""
    if pos >= end:
        raise Malformed(f"the buffer ends inside a value at byte {pos}")
    tag = buf[pos]
    if tag == TEXT or tag == BYTES:
        if pos + 5 > end:
            raise Malformed(f"the buffer ends inside the length of a value at byte {pos}")
        stop = pos + 5 + _text_head_at(buf, pos)[1]
        if stop > end:
            raise Malformed(f"a value at byte {pos} runs past the buffer's end")
        if tag == BYTES:
            return bytes(buf[pos + 5:stop]), stop
        try:
            return str(buf[pos + 5:stop], "utf-8"), stop
        except UnicodeDecodeError:
            raise Malformed(f"the text value at byte {pos} is not valid UTF-8") from None
    if tag == INT or tag == FLOAT:
        if pos + 9 > end:
            raise Malformed(f"the buffer ends inside a value at byte {pos}")
        return (_i64_at if tag == INT else _f64_at)(buf, pos + 1)[0], pos + 9
    if tag == NULL:
        return None, pos + 1
    if tag == BOOL:
        if pos + 2 > end:
            raise Malformed(f"the buffer ends inside a value at byte {pos}")
        b = buf[pos + 1]
        if b > 1:
            raise Malformed(f"the boolean at byte {pos} is {b}, not 0 or 1")
        return b == 1, pos + 2
    raise Malformed(f"unknown value tag {tag} at byte {pos}")


def decode_row(raw, what):
    """The row that `raw` holds exactly (an aggregate or a value state)."""
    r = Reader(raw)
    try:
        row = r.row()
    except Malformed as e:
        raise Malformed(f"{what} is not a row: {e}") from None
    if not r.at_end():
        raise Malformed(f"{what} has {r.end - r.pos} bytes after its row")
    return row
