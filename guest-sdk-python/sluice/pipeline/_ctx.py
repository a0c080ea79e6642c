"""A process function's view of its key: the key, its declared states as
they stand (with this call's changes), its timers, and the clocks.

A key's states come in as the bytes the host shipped and are decoded (and
checked) the first time the function reads or writes them. A write checks
and encodes its values at once, so a value the encoding cannot carry fails
the entry that wrote it. Writes replace a state's contents rather than
change them in place, and every write of an entry is logged, so a failing
entry's writes are undone and the call's changes are those of the entries
before it:

    state   := value state: row | list state: u32 n, row{n}
             | map state: u32 n, (value map-key, row){n}
    changes := (0x00 u32 key-index, u32 state, u32 len, u8{len}
              | 0x01 u32 key-index, u32 state
              | 0x02 u32 key-index, u8 domain, timestamp
              | 0x03 u32 key-index, u8 domain, timestamp)*
"""

import struct

from .._codec import put_row, put_value, u32
from ._out import Time, check_timestamp
from ._wire import Malformed, Reader

VALUE, LIST, MAP = 0, 1, 2
KIND_NAMES = ("value", "list", "map")

_UNREAD = object()
_set_head = struct.Struct("<BIII").pack  # 0x00, key index, state, len
_clear = struct.Struct("<BII").pack  # 0x01, key index, state
_timer = struct.Struct("<BIBq").pack  # 0x02 / 0x03, key index, domain, at

# The types a row decodes to: a row of only these is kept as it is.
_PLAIN = frozenset((type(None), bool, int, float, str, bytes))


def encoded_row(values, what):
    """`values` (a tuple or list) as `(row, bytes)`: the row as it decodes
    (a bytearray becomes bytes, an IntEnum an int), so that a function sees
    the same whether a state was written in this call or shipped in."""
    if not isinstance(values, (tuple, list)):
        raise TypeError(f"{what} must be a row (a tuple of values), not {type(values).__name__}")
    buf = bytearray()
    put_row(buf, values)
    raw = bytes(buf)
    for v in values:
        if type(v) not in _PLAIN:
            return Reader(raw).row(), raw
    return tuple(values), raw


def encoded_value(v):
    """The value `v` as `(value, bytes)`, the value as it decodes."""
    buf = bytearray()
    put_value(buf, v)
    raw = bytes(buf)
    if type(v) not in _PLAIN:
        v = Reader(raw).value()
    return v, raw


class KeyStates:
    """One key of a process call: the key, and each declared state as
    shipped (`raw`), as decoded or written (`cur`), and whether written."""

    __slots__ = ("key", "raw", "cur", "changed", "owner")

    def __init__(self, key, raw):
        self.key = key
        self.raw = raw
        n = len(raw)
        self.cur = [_UNREAD] * n
        self.changed = [False] * n
        # The entry whose own copy `cur[i]` is (it may change it in place).
        self.owner = [-1] * n


def decode_state(kind, raw):
    """A shipped state's bytes as the SDK holds them: a value state as
    `(row, bytes)`, a list state as `[(row, bytes)]`, a map state as
    `{key bytes: (key, row, row bytes)}`; None when it is not set."""
    if raw is None:
        return None
    r = Reader(raw)
    if kind == VALUE:
        cur = r.row_and_bytes()
    else:
        n = r.u32("the count of a state")
        if kind == LIST:
            cur = [r.row_and_bytes() for _ in range(n)]
        else:
            cur = {}
            for _ in range(n):
                k, kb = r.value_and_bytes()
                row, rb = r.row_and_bytes()
                if kb in cur:
                    raise Malformed(f"the map key `{k!r}` is there twice")
                cur[kb] = (k, row, rb)
    if not r.at_end():
        raise Malformed(f"{r.end - r.pos} bytes after its end")
    return cur


def encode_state(kind, cur):
    """The bytes of a state the SDK holds (see `decode_state`)."""
    if kind == VALUE:
        return cur[1]
    if kind == LIST:
        return u32(len(cur)) + b"".join([b for _, b in cur])
    return u32(len(cur)) + b"".join([kb + rb for kb, (_, _, rb) in cur.items()])


def encode_changes(keys, kinds, timers):
    """A process call's changes: each written state's new bytes (or its
    clearing), key by key, then the timers in the order they were set and
    deleted (`timers` holds them encoded)."""
    out = bytearray()
    for k, ks in enumerate(keys):
        for s, changed in enumerate(ks.changed):
            if not changed:
                continue
            cur = ks.cur[s]
            if cur is None:
                out += _clear(1, k, s)
            else:
                b = encode_state(kinds[s], cur)
                out += _set_head(0, k, s, len(b))
                out += b
    out += timers
    return bytes(out)


class Ctx:
    """The key a process function runs for, its states and timers, and the
    clocks. A state is named by its place in the stage's declaration (0, 1,
    ...) or by its name."""

    __slots__ = ("_ks", "_k", "_decls", "_names", "_timers", "_undo", "_entry", "_ts",
                 "_watermark", "_processing_time")

    def __init__(self, decls, names, timers, header):
        self._ks = None
        self._k = 0
        self._decls = decls  # (name, kind) per state
        self._names = names  # name -> index
        self._timers = timers
        self._undo = []
        self._entry = -1
        self._ts = 0
        self._watermark = header.watermark
        self._processing_time = header.processing_time

    def _enter(self, entry, ks, k, ts):
        """Points the context at entry `entry`, of key `ks` (index `k`)."""
        self._ks = ks
        self._k = k
        self._ts = ts
        self._entry = entry
        self._undo.clear()

    def _rollback(self):
        """Undoes the current entry's writes."""
        for ks, i, cur, changed, owner in reversed(self._undo):
            ks.cur[i] = cur
            ks.changed[i] = changed
            ks.owner[i] = owner
        self._undo.clear()

    @property
    def key(self):
        """The key."""
        return self._ks.key

    @property
    def timestamp(self):
        """The timestamp of the row or timer being processed."""
        return self._ts

    @property
    def watermark(self):
        """The event-time watermark (the least int before the first)."""
        return self._watermark

    @property
    def processing_time(self):
        """The batch's processing time."""
        return self._processing_time

    def _index(self, state):
        if type(state) is int:
            if 0 <= state < len(self._decls):
                return state
        elif isinstance(state, str):
            i = self._names.get(state)
            if i is not None:
                return i
        elif isinstance(state, int) and not isinstance(state, bool):
            return self._index(int(state))
        raise LookupError(f"the stage declares no state `{state!r}`")

    def _state(self, state, kind):
        """The index of `state`, checked to be of `kind`, and its contents."""
        i = self._names.get(state) if type(state) is str else None
        if i is None:
            i = self._index(state)
        name, have = self._decls[i]
        if have != kind:
            raise TypeError(
                f"state `{name}` is a {KIND_NAMES[have]} state, not a {KIND_NAMES[kind]} state"
            )
        ks = self._ks
        cur = ks.cur[i]
        if cur is _UNREAD:
            try:
                cur = decode_state(kind, ks.raw[i])
            except Malformed as e:
                raise Malformed(f"state `{name}` of key `{ks.key!r}` is malformed: {e}") from None
            ks.cur[i] = cur
        return i, cur

    def _write(self, i, cur):
        ks = self._ks
        self._undo.append((ks, i, ks.cur[i], ks.changed[i], ks.owner[i]))
        ks.cur[i] = cur
        ks.changed[i] = True
        ks.owner[i] = self._entry

    def _owned(self, i):
        return self._ks.owner[i] == self._entry

    # Value states.

    def value(self, state):
        """A value state's row (a tuple), or None when it is not set."""
        _, cur = self._state(state, VALUE)
        return None if cur is None else cur[0]

    def set(self, state, *values):
        """Sets a value state to the row of `values`."""
        i, _ = self._state(state, VALUE)
        self._write(i, encoded_row(values, "a value state"))

    def clear(self, state):
        """Clears a state of any kind."""
        self._write(self._index(state), None)

    # List states.

    def list(self, state):
        """A list state's rows (an empty list when it is not set)."""
        _, cur = self._state(state, LIST)
        return [] if cur is None else [row for row, _ in cur]

    def push(self, state, *values):
        """Appends the row of `values` to a list state."""
        i, cur = self._state(state, LIST)
        item = encoded_row(values, "a list state's row")
        if cur is not None and self._owned(i):
            cur.append(item)
        else:
            self._write(i, [item] if cur is None else cur + [item])

    def set_list(self, state, rows):
        """Replaces a list state's rows with `rows`, an iterable of rows
        (tuples); cleared when it is empty."""
        i, _ = self._state(state, LIST)
        items = [encoded_row(r, "a list state's row") for r in rows]
        self._write(i, items or None)

    # Map states.

    def entries(self, state):
        """A map state's entries as `(key, row)` pairs, in the order they
        were put (a key put again moves to the end)."""
        _, cur = self._state(state, MAP)
        return [] if cur is None else [(k, row) for k, row, _ in cur.values()]

    def get(self, state, key):
        """The row of `key` in a map state, or None. Keys are the same when
        their encodings are: 1, 1.0 and True are three keys."""
        _, cur = self._state(state, MAP)
        if cur is None:
            return None
        item = cur.get(encoded_value(key)[1])
        return None if item is None else item[1]

    def put(self, state, key, *values):
        """Puts `key`'s row of `values` into a map state, replacing the row
        it had."""
        i, cur = self._state(state, MAP)
        k, kb = encoded_value(key)
        row, rb = encoded_row(values, "a map state's row")
        if cur is None:
            self._write(i, {kb: (k, row, rb)})
            return
        if not self._owned(i):
            cur = dict(cur)
            self._write(i, cur)
        cur.pop(kb, None)
        cur[kb] = (k, row, rb)

    def remove(self, state, key):
        """Removes `key` from a map state (cleared when it was the last)."""
        i, cur = self._state(state, MAP)
        kb = encoded_value(key)[1]
        # Written even when `key` is not there, as the Rust SDK does: a
        # write renews the state's TTL.
        if cur is None or (len(cur) == 1 and kb in cur):
            self._write(i, None)
            return
        if not self._owned(i):
            cur = dict(cur)
            self._write(i, cur)
        cur.pop(kb, None)

    # Timers.

    def set_timer(self, time, at):
        """Sets a timer of this key: it fires once the watermark (`Time.EVENT`)
        or the processing time (`Time.PROCESSING`) reaches `at`. Setting one
        twice keeps one."""
        self._timers += _timer(2, self._k, _domain(time), check_timestamp(at, "a timer's time"))

    def delete_timer(self, time, at):
        """Deletes a timer of this key."""
        self._timers += _timer(3, self._k, _domain(time), check_timestamp(at, "a timer's time"))


def _domain(time):
    if not isinstance(time, Time):
        raise TypeError(f"a timer's clock must be Time.EVENT or Time.PROCESSING, not `{time!r}`")
    return time.value
