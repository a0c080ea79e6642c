"""WordCount over event-time windows as a Sluice pipeline, in Python; it
behaves exactly like the Rust `examples/windowed-wordcount`.

Input lines are `timestamp words...` (timestamp in milliseconds since the
Unix epoch). Each word is counted per window; a window's counts are emitted
as `(word, start, end, count)` once the watermark passes its end, and again
when a late word within the allowed lateness updates it. Words later than
that go to the side output `late`.

Parameters: `windows=tumbling|sliding|session` (default tumbling),
`size=MS` (window length, or the session gap; default 10000), `slide=MS`
(sliding windows; default size / 2), `lateness=MS` (default 0),
`out-of-orderness=MS` (default 0), and `function=process` to count in a
window function over the window's words instead of an aggregate.
"""

import sluice
from sluice import pipeline
from sluice.pipeline import Windows


def split(r, out):
    """`timestamp words...` into `(word, 1)` rows at that timestamp."""
    line = r.text
    words = sluice.split_whitespace(line)
    try:
        ts = sluice.parse_int(words[0]) if words else None
    except ValueError:
        ts = None
    if ts is None:
        return out.side("malformed", line)
    out.emit_each_at(ts, words[1:], 1)


def count_of(row):
    """Field 0 when it is an int, else 0."""
    return row[0] if row and type(row[0]) is int else 0


def add(acc, row):
    """The count so far plus one."""
    return ((count_of(acc) if acc is not None else 0) + 1,)


def merge(a, b):
    """Two sessions' counts together."""
    return (count_of(a) + count_of(b),)


def fire(w, acc, out):
    out.emit(w.key, w.start, w.end, count_of(acc) if acc is not None else 0)


def fire_contents(w, rows, out):
    out.emit(w.key, w.start, w.end, len(rows))


def ms(params, key, default):
    try:
        return sluice.parse_int(params.get(key, ""), unsigned=True)
    except ValueError:
        return default


def job(params):
    size = ms(params, "size", 10_000)
    slide = ms(params, "slide", max(size // 2, 1))
    kind = params.get("windows")
    if kind == "sliding":
        windows = Windows.sliding(size, slide)
    elif kind == "session":
        windows = Windows.session(size)
    else:
        windows = Windows.tumbling(size)
    windows = windows.allowed_lateness(ms(params, "lateness", 0)).late_output("late")
    j = (
        pipeline.Job("windowed-wordcount")
        .source("socket://localhost:9100")
        .checkpoint_every(1_000)
        .watermarks(ms(params, "out-of-orderness", 0))
        .side_output("late")
        .side_output("malformed")
        .map("split", split)
        .key_by(0)  # the word
    )
    if params.get("function") == "process":
        return j.window("count", windows, fire_contents)
    return j.aggregate("count", windows, add, merge, fire)


Operator, Job = pipeline.export(job)
