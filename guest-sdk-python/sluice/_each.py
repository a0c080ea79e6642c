"""Emitting many rows in one call (`out.emit_each(words, 1)`) and keys
given as a field index (`key=0`): the per-row work of a flat-map that
emits one row per item, done without running Python per row.

A row `(item, *rest)` (and its key, when the stage after is keyed) is
encoded once per distinct text item and kept: a batch's rows are then one
dictionary lookup each, made by `map` and joined by `bytes.join`, both in
C. Only text items are kept (an int or a float may equal a value of
another type as a dictionary key: 1 == 1.0 == True), rows of up to
`MAX_ROW` bytes, about `MAX_BYTES` in all and `MAX_SHAPES` shapes; past
that the cache starts over.
"""

from ._codec import COUNTS, put_value, u32

MAX_BYTES = 8 << 20  # the rows kept, with their items and about 96 bytes each for the rest
MAX_SHAPES = 64  # shapes (row length, rest, key) kept
MAX_ROW = 512  # the longest encoded row kept, in bytes
_ENTRY = 96  # what a kept row costs beside its bytes and its item's: objects, dictionary slot


class KeyField:
    """The key selector of a key given as a field index: `row[index]`."""

    __slots__ = ("index",)

    def __init__(self, index):
        self.index = index

    def __call__(self, row):
        i = self.index
        if i >= len(row):
            raise IndexError(f"the key is field {i}, but the row has {len(row)} values")
        return row[i]


def key_selector(key, what="a key selector"):
    """`key` as a (selector, field) pair: a function is `(key, None)`, a
    field index `i` is `(KeyField(i), i)`."""
    if type(key) is int:
        if key < 0:
            raise ValueError(f"{what} field index must be 0 or more, not {key}")
        return KeyField(key), key
    if isinstance(key, bool) or not callable(key):
        raise TypeError(
            f"{what} must be a function or a field index (int), not {type(key).__name__}"
        )
    return key, None


class RowCache:
    """The encodings of rows `(item, *rest)` with their key, by item, for
    one way of keying (`keyed`, `field`)."""

    __slots__ = ("_shapes", "_keyed", "_field", "_bytes")

    def __init__(self, keyed=False, field=None):
        self._shapes = {}
        self._keyed = keyed
        self._field = field
        self._bytes = 0  # what the rows kept cost, about

    def shape(self, rest):
        """The shape of rows `(item, *rest)`: `(cache, pre, post, twice)`,
        where `cache` maps the text items seen to their rows' encoding,
        `pre` and `post` are the bytes before and after the item, and
        `twice` says the item is the key too."""
        key = _shape_key(rest)
        try:
            shape = None if key is None else self._shapes.get(key)
        except TypeError:  # a value that is not hashable
            shape = key = None
        if shape is None:
            shape = self._shape(rest, key)
        return shape

    def join(self, items, rest, sep=b""):
        """The encoded rows `(item, *rest)` of `items` (a list or a tuple),
        `sep` between each two: their kept encodings when every item has
        one (`map` and `bytes.join`, in C), else `encode`'s."""
        shape = self.shape(rest)
        try:
            return sep.join(map(shape[0].__getitem__, items))
        except (KeyError, TypeError):
            return sep.join(self.encode(shape, items))

    def encode(self, shape, items):
        """The encoded rows of `items` in `shape`, keeping those of text
        items in its cache."""
        cache, pre, post, twice = shape
        out = []
        for item in items:
            row = cache.get(item) if type(item) is str else None
            if row is None:
                b = bytearray(pre)
                put_value(b, item)
                e = b[len(pre):]
                b += post
                if twice:
                    b += e
                row = bytes(b)
                if type(item) is str and len(row) <= MAX_ROW:
                    cost = len(row) + len(item) + _ENTRY
                    if self._bytes + cost > MAX_BYTES:
                        self.clear()
                    self._bytes += cost
                    cache[item] = row
            out.append(row)
        return out

    def clear(self):
        """Forgets every row kept (their shapes' caches stay in use)."""
        for shape in self._shapes.values():
            shape[0].clear()
        self._bytes = 0

    def _shape(self, rest, key):
        """The encoding around the item of rows `(item, *rest)`, kept by
        `key` unless it is None."""
        n = len(rest) + 1
        pre = COUNTS[n] if n < 16 else u32(n)
        post = bytearray()
        for v in rest:
            put_value(post, v)
        twice = False
        if self._keyed:
            field = self._field
            if field >= n:
                raise IndexError(f"the key is field {field}, but the row has {n} values")
            if field == 0:
                twice = True
            else:
                put_value(post, rest[field - 1])
        shape = ({}, pre, bytes(post), twice)
        shapes = self._shapes
        if len(shapes) >= MAX_SHAPES:
            self.clear()
            shapes.clear()
        if key is not None:
            shapes[key] = shape
        return shape


def _shape_key(rest):
    """What shapes are kept by: `rest` with its values' types, since equal
    values of other types (1, True and 1.0) are encoded apart; None when
    `rest` holds a float (-0.0 == 0.0)."""
    if len(rest) == 1:
        v = rest[0]
        return None if isinstance(v, float) else (v, type(v))
    if any(isinstance(v, float) for v in rest):
        return None
    return rest, tuple(map(type, rest))
