"""The flat little-endian encoding of rows and values (see wit/sluice-stream@0.1.0/stream.wit).

    row   := u32 value-count, value{value-count}
    value := 0x00 | 0x01 u8 | 0x02 s64 | 0x03 f64 | 0x04 u32 len, utf-8 | 0x05 u32 len, bytes

Python values map to WIT values as: None -> null, bool -> boolean,
int -> int (64-bit), float -> float, str -> text, bytes / bytearray /
memoryview -> bytes.
"""

import struct

NULL, BOOL, INT, FLOAT, TEXT, BYTES = range(6)

u32 = struct.Struct("<I").pack
u32_into = struct.Struct("<I").pack_into
_u32_at = struct.Struct("<I").unpack_from
_int = struct.Struct("<Bq").pack
_float = struct.Struct("<Bd").pack
text_head = struct.Struct("<BI").pack  # the tag and the length of a text or bytes value
_tag_len_at = struct.Struct("<BI").unpack_from
_i64_at = struct.Struct("<q").unpack_from
_f64_at = struct.Struct("<d").unpack_from

_TRUE = bytes((BOOL, 1))
_FALSE = bytes((BOOL, 0))
_NULL = bytes((NULL,))
# Encoded small ints, the common case of a count or a flag.
SMALL_INTS = {i: _int(INT, i) for i in range(-16, 1024)}
# Encoded value counts of short rows.
COUNTS = tuple(u32(i) for i in range(16))

_MIN_I64 = -(1 << 63)
_MAX_I64 = (1 << 63) - 1


def put_value(buf, v):
    """Appends the encoding of the Python value `v` to the bytearray `buf`."""
    t = type(v)
    if t is str:
        b = v.encode()
        buf += text_head(TEXT, len(b))
        buf += b
    elif t is int:
        put_int(buf, v)
    elif t is float:
        buf += _float(FLOAT, v)
    elif t is bool:
        buf += _TRUE if v else _FALSE
    elif v is None:
        buf += _NULL
    elif t is bytes or t is bytearray or t is memoryview:
        b = bytes(v)
        buf += text_head(BYTES, len(b))
        buf += b
    # Subclasses (bool before int: a bool is an int).
    elif isinstance(v, bool):
        buf += _TRUE if v else _FALSE
    elif isinstance(v, str):
        put_value(buf, str(v))
    elif isinstance(v, int):
        put_int(buf, int(v))
    elif isinstance(v, float):
        buf += _float(FLOAT, float(v))
    elif isinstance(v, (bytes, bytearray, memoryview)):
        put_value(buf, bytes(v))
    else:
        raise TypeError(
            f"a row value must be None, bool, int, float, str or bytes, not {t.__name__}"
        )


def put_int(buf, v):
    """Appends an int value; ints outside 64 bits are an error."""
    b = SMALL_INTS.get(v)
    if b is None:
        if not _MIN_I64 <= v <= _MAX_I64:
            raise OverflowError(f"the int {v} does not fit in 64 bits")
        b = _int(INT, v)
    buf += b


def read_value(buf, pos):
    """Decodes the value at `pos` of `buf`; returns it and the next position."""
    tag = buf[pos]
    if tag == TEXT or tag == BYTES:
        _, n = _tag_len_at(buf, pos)
        start = pos + 5
        end = start + n
        if end > len(buf):
            raise ValueError(f"truncated value at byte {pos}")
        raw = buf[start:end]
        return (str(raw, "utf-8") if tag == TEXT else bytes(raw)), end
    if tag == INT:
        return _i64_at(buf, pos + 1)[0], pos + 9
    if tag == FLOAT:
        return _f64_at(buf, pos + 1)[0], pos + 9
    if tag == BOOL:
        return buf[pos + 1] != 0, pos + 2
    if tag == NULL:
        return None, pos + 1
    raise ValueError(f"unknown value tag {tag} at byte {pos}")


def read_row(buf, pos):
    """Decodes the row at `pos` of `buf` as a tuple; returns it and the next position."""
    (count,) = _u32_at(buf, pos)
    pos += 4
    values = []
    for _ in range(count):
        v, pos = read_value(buf, pos)
        values.append(v)
    return tuple(values), pos


def put_row(buf, values):
    """Appends the row of the Python values `values` (a tuple or list) to `buf`."""
    n = len(values)
    buf += COUNTS[n] if n < 16 else u32(n)
    for v in values:
        t = type(v)
        if t is str:
            e = v.encode()
            buf += text_head(TEXT, len(e))
            buf += e
        elif t is int and -16 <= v < 1024:
            buf += SMALL_INTS[v]
        else:
            put_value(buf, v)
