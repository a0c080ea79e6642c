"""Splitting text into words the way Rust's `str::split_whitespace` does."""

import re

# Unicode White_Space, the set Rust splits on.
_WORD = re.compile(
    "[^\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+"
)


def split_whitespace(text):
    """The words of `text` as a list, split on Unicode White_Space exactly
    like Rust's `str::split_whitespace` (no empty words).

    Python's `str.split()` also splits on U+001C..U+001F, which are not
    White_Space; otherwise the two sets are the same, so `str.split()` is used
    whenever those four characters are absent.
    """
    if "\x1c" in text or "\x1d" in text or "\x1e" in text or "\x1f" in text:
        return _WORD.findall(text)
    return text.split()
