"""Sessions per user as a Sluice pipeline, in Python; it behaves exactly
like the Rust `examples/sessions`.

Input lines are `user,timestamp,action` (timestamp in milliseconds since
the Unix epoch; any action, `buy` counted apart). Once the watermark passes
a session's end, it is emitted as `(user, start, end, clicks, buys)`; `end`
is one gap after the session's last click. A click that arrives late and
joins or bridges sessions within the allowed lateness merges them and the
session is emitted again; clicks later than that go to the side output
`late`, lines that do not parse to `malformed`.

Parameters: `gap=MS` (default 1800000, half an hour), `lateness=MS`
(default 0), `out-of-orderness=MS` (default 0).
"""

import sluice
from sluice import pipeline
from sluice.pipeline import Windows


def parse(r, out):
    """`user,timestamp,action` into `(user, is_buy)` at the timestamp."""
    line = r.text
    fields = [f.strip() for f in line.split(",")]
    if len(fields) != 3 or not fields[0]:
        return out.side("malformed", line)
    user, ts, action = fields
    try:
        ts = sluice.parse_int(ts)
    except ValueError:
        return out.side("malformed", line)
    out.emit_at(ts, user, action == "buy")


def counts(acc):
    """`(clicks, buys)` of an aggregate (none: a session's first click)."""
    if acc is None:
        return 0, 0
    return tuple(v if type(v) is int else 0 for v in acc[:2])


def add(acc, click):
    clicks, buys = counts(acc)
    return (clicks + 1, buys + (1 if click[1] is True else 0))


def merge(a, b):
    """Two sessions that a click brought together."""
    (ca, ba), (cb, bb) = counts(a), counts(b)
    return (ca + cb, ba + bb)


def session(w, acc, out):
    clicks, buys = counts(acc)
    out.emit(w.key, w.start, w.end, clicks, buys)


def ms(params, key, default):
    try:
        return sluice.parse_int(params.get(key, ""), unsigned=True)
    except ValueError:
        return default


def job(params):
    sessions = (
        Windows.session(ms(params, "gap", 1_800_000))
        .allowed_lateness(ms(params, "lateness", 0))
        .late_output("late")
    )
    return (
        pipeline.Job("sessions")
        .source("socket://localhost:9100")
        .checkpoint_every(1_000)
        .watermarks(ms(params, "out-of-orderness", 0))
        .side_output("late")
        .side_output("malformed")
        .map("parse", parse)
        .key_by(lambda row: row[0])
        .aggregate("sessions", sessions, add, merge, session)
    )


Operator, Job = pipeline.export(job)
