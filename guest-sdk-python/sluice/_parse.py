"""Parsing numbers exactly the way Rust's `str::parse` does, so that a
Python guest accepts the same input as its Rust twin: Python's `int()` and
`float()` also take `1_000`, surrounding whitespace and non-ASCII digits
(`"１２"`), which Rust refuses."""

import re

_INT = re.compile(r"[+-]?[0-9]+", re.ASCII)
_UINT = re.compile(r"\+?[0-9]+", re.ASCII)
_FLOAT = re.compile(
    r"[+-]?(?:inf|infinity|nan|(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:e[+-]?[0-9]+)?)",
    re.ASCII | re.IGNORECASE,
)

_MIN_I64 = -(1 << 63)
_MAX_I64 = (1 << 63) - 1
_MAX_U64 = (1 << 64) - 1


def parse_int(text, unsigned=False):
    """`text` as an int, like Rust's `text.parse::<i64>()` (or `u64` when
    `unsigned`): ASCII digits with an optional sign, nothing around them, in
    range. Raises `ValueError` otherwise."""
    if (_UINT if unsigned else _INT).fullmatch(text) is None:
        raise ValueError(f"invalid digit in {text!r}" if text else "cannot parse an int from ''")
    v = int(text)
    lo, hi = (0, _MAX_U64) if unsigned else (_MIN_I64, _MAX_I64)
    if not lo <= v <= hi:
        raise ValueError(f"{text!r} is out of range for a {'u64' if unsigned else 'i64'}")
    return v


def parse_float(text):
    """`text` as a float, like Rust's `text.parse::<f64>()`: an optional
    sign, then digits with an optional `.` and exponent, or `inf`,
    `infinity` or `nan` in any case. Raises `ValueError` otherwise."""
    if _FLOAT.fullmatch(text) is None:
        raise ValueError(f"invalid float literal {text!r}")
    return float(text)
