"""Flink's fraud detector (its DataStream tutorial) as a Sluice pipeline, in
Python; it behaves exactly like the Rust `examples/fraud`.

Input lines are `account,amount,timestamp` (timestamp in milliseconds since
the Unix epoch). Per account, a transaction under 1.00 followed within one
minute (event time) by one over 500.00 raises the alert `(account, amount)`.
The host keeps each account's state and timer: they survive restarts,
checkpoints and restores at another parallelism. Lines that do not parse go
to the side output `malformed`; the account `POISON` raises, to show a
poison record being dead-lettered while every other account's state carries
on.

Parameter: `ttl=MS` forgets an account's small transaction after MS of
processing time without a write (a state TTL), whatever the timestamps.
"""

import sluice
from sluice import pipeline
from sluice.pipeline import State, Time, Timer

# The small transaction seen last (its amount), if any.
SMALL = "small"
# When the small transaction's minute ends.
DEADLINE = "deadline"

SMALL_AMOUNT = 1.00
LARGE_AMOUNT = 500.00
WINDOW_MS = 60_000


def parse(r, out):
    """`account,amount,timestamp` into `(account, amount)` at its timestamp."""
    line = r.text
    fields = [sluice.trim(f) for f in line.split(",")]
    if len(fields) != 3:
        return out.side("malformed", line)
    account, amount, ts = fields
    try:
        amount, ts = sluice.parse_float(amount), sluice.parse_int(ts)
    except ValueError:
        return out.side("malformed", line)
    if not account:
        return out.side("malformed", line)
    out.emit_at(ts, account, amount)


def detect(cx, event, out):
    """Per account: remember a small transaction for a minute; a large one
    within it is an alert."""
    if isinstance(event, Timer):
        # The minute after the small transaction is over.
        cx.clear(SMALL)
        cx.clear(DEADLINE)
        return
    if cx.key == "POISON":
        raise RuntimeError("the account POISON cannot be processed")
    amount = event.row[1]
    deadline = cx.value(DEADLINE)
    if deadline is not None:
        deadline = deadline[0]
        # The timer may not have fired yet when the batch holds rows past
        # it: the deadline decides, not the timer.
        if amount > LARGE_AMOUNT and event.timestamp <= deadline:
            out.emit(cx.key, amount)
        cx.delete_timer(Time.EVENT, deadline)
        cx.clear(SMALL)
        cx.clear(DEADLINE)
    if amount < SMALL_AMOUNT:
        deadline = wrapping_add(event.timestamp, WINDOW_MS)
        cx.set(SMALL, amount)
        cx.set(DEADLINE, deadline)
        cx.set_timer(Time.EVENT, deadline)


def wrapping_add(a, b):
    """`a + b` wrapped to 64 bits, as the Rust example's `i64` addition."""
    return (a + b + (1 << 63)) % (1 << 64) - (1 << 63)


def account(row):
    """The account: field 0."""
    return row[0]


def job(params):
    try:
        ttl = sluice.parse_int(params.get("ttl", ""), unsigned=True)
    except ValueError:
        ttl = None

    def state(name):
        return State.value(name) if ttl is None else State.value(name).ttl(ttl)

    return (
        pipeline.Job("fraud-detector")
        .source("socket://localhost:9100")
        .checkpoint_every(1_000)
        .restart(sluice.Restart.fixed_delay(3, delay_ms=1_000))
        .watermarks(0)
        .side_output("malformed")
        .map("parse", parse)
        .key_by(account)
        .process("detect", [state(SMALL), state(DEADLINE)], detect)
    )


Operator, Job = pipeline.export(job)
