"""Splitting and trimming text the way Rust's `str::split_whitespace` and
`str::trim` do."""

import re

# Unicode White_Space, the set Rust splits on and trims.
_WHITE_SPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_WORD = re.compile(
    "[^\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+"
)


def split_whitespace(text):
    """The words of `text` as a list, split on Unicode White_Space exactly
    like Rust's `str::split_whitespace` (no empty words).

    Python's `str.split()` also splits on U+001C..U+001F, which are not
    White_Space; otherwise the two sets are the same, so `str.split()` is used
    whenever those four characters are absent (always, in a printable
    text: they are control characters).
    """
    if text.isprintable():
        return text.split()
    if "\x1c" in text or "\x1d" in text or "\x1e" in text or "\x1f" in text:
        return _WORD.findall(text)
    return text.split()


def trim(text):
    """`text` without leading and trailing Unicode White_Space, exactly like
    Rust's `str::trim` (`str.strip()` also strips U+001C..U+001F)."""
    return text.strip(_WHITE_SPACE)
