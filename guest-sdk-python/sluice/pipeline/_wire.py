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
        buf, pos = self.buf, self.pos
        if pos >= self.end:
            raise self._short("a value")
        tag = buf[pos]
        if tag == TEXT or tag == BYTES:
            if pos + 5 > self.end:
                raise self._short("the length of a value")
            n = _text_head_at(buf, pos)[1]
            start = pos + 5
            stop = start + n
            if stop > self.end:
                raise Malformed(f"a value at byte {pos} runs past the buffer's end")
            self.pos = stop
            if tag == BYTES:
                return bytes(buf[start:stop])
            try:
                return str(buf[start:stop], "utf-8")
            except UnicodeDecodeError:
                raise Malformed(f"the text value at byte {pos} is not valid UTF-8") from None
        if tag == INT or tag == FLOAT:
            if pos + 9 > self.end:
                raise self._short("a value")
            self.pos = pos + 9
            return (_i64_at if tag == INT else _f64_at)(buf, pos + 1)[0]
        if tag == NULL:
            self.pos = pos + 1
            return None
        if tag == BOOL:
            if pos + 2 > self.end:
                raise self._short("a value")
            b = buf[pos + 1]
            if b > 1:
                raise Malformed(f"the boolean at byte {pos} is {b}, not 0 or 1")
            self.pos = pos + 2
            return b == 1
        raise Malformed(f"unknown value tag {tag} at byte {pos}")

    def value_and_bytes(self):
        """One value, decoded, and its encoded bytes."""
        start = self.pos
        v = self.value()
        return v, bytes(self.buf[start:self.pos])

    def row(self):
        """One row as a tuple."""
        n = self.u32("the value count of a row")
        if n > self.end - self.pos:  # every value takes a byte at least
            raise Malformed(f"a row at byte {self.pos - 4} claims {n} values, past the buffer's end")
        value = self.value
        return tuple([value() for _ in range(n)])

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
