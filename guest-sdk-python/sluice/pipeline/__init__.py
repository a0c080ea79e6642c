"""Pipelines with keyed state, timers, event time and windows
(`sluice:stream@0.2.0`, world `pipeline-job`).

A job is a pipeline of stages, described once with `Job`: map stages
(stateless: map, filter and flat-map in one function), keyed process
functions with the keyed states they declare and timers, and keyed
windows. The host owns everything that must survive a failure -- the state
of every key, the timers, the watermark, the windows, the checkpoints --
and ships a key's state in with the batch that needs it; the functions
here see plain values.

    import sluice
    from sluice import pipeline
    from sluice.pipeline import State, Time, Timer

    def parse(r, out):
        # `account,amount,timestamp` lines into (account, amount) rows.
        try:
            account, amount, ts = r.text.split(",")
            amount, ts = sluice.parse_float(amount), sluice.parse_int(ts)
        except ValueError:
            return out.side("malformed", r.text)
        out.emit_at(ts, account, amount)

    def detect(cx, event, out):
        # A small amount followed within a minute by a large one is an alert.
        if isinstance(event, Timer):
            return cx.clear("small")
        amount = event.row[1]
        if amount > 500.0 and cx.value("small") is not None:
            out.emit(cx.key, amount)
            cx.clear("small")
        elif amount < 1.0:
            cx.set("small", amount)
            cx.set_timer(Time.EVENT, event.timestamp + 60_000)

    def job(params):
        return (pipeline.Job("fraud-detector")
                .watermarks(5_000)
                .side_output("malformed")
                .map("parse", parse)
                .key_by(lambda row: row[0])
                .process("detect", [State.value("small")], detect))

    Operator, Job = pipeline.export(job)

Build it with `guest-sdk-python/componentize` (it picks the 0.2.0 world
for a module that imports `sluice.pipeline`). Durations are milliseconds
(an int) or a `datetime.timedelta`; values are None, bool, int (64-bit),
float, str and bytes, and rows are tuples of them.

Any exception a stage function (or a key selector) raises fails its input
entry: the host runs it again alone in a fresh instance, dead-letters it if
it fails there too, and goes on with every key's state as it was before
the entry. Everything must be deterministic: the same input and state give
the same output.
"""

from ._ctx import Ctx
from ._job import Job, State, Windows
from ._out import Out, Record, Time, Timer, WindowInfo

__all__ = [
    "Ctx",
    "Job",
    "Out",
    "Record",
    "State",
    "Time",
    "Timer",
    "WindowInfo",
    "Windows",
    "export",
]


def export(job):
    """Builds the `Operator` and `Job` classes componentize-py exports from
    `job(params) -> Job`; the module must bind both names:

        Operator, Job = pipeline.export(job)

    `params` is a dict of the `--param KEY=VALUE`s (the last value of a
    repeated key wins). `job` runs once in `describe` and once on every
    fresh instance (in `open`).
    """
    if not callable(job):
        raise TypeError(f"pipeline.export takes the job function, not {type(job).__name__}")
    if getattr(job, "__globals__", {}).get("Job") is Job:
        # `Operator, Job = pipeline.export(job)` is about to rebind `Job`,
        # and the job function would build the export class instead.
        raise ImportError(
            "the module binds `Job` to sluice.pipeline.Job, which `Operator, Job = "
            "pipeline.export(job)` rebinds: build the job with `pipeline.Job(...)`"
        )
    import wit_world

    from ._rt import exports

    return exports(job, wit_world)
