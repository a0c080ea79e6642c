"""Write Sluice stream functions in Python.

A guest is two plain functions -- a flat-map that turns one input line into
any number of rows, and a key-selector that picks the key of a row -- plus
one line that exports them. The SDK owns the batching and the encoding of
records across the WebAssembly boundary; componentize-py builds the module
into a component.

    import sluice

    def flat_map(line, out):
        if line == "ERROR":
            raise sluice.RecordError("received the line `ERROR`")
        for word in sluice.split_whitespace(line):
            out.emit(word, 1)

    def key(row):
        return row[0]

    def describe(params):
        return (sluice.JobDescription("wordcount")
                .source("socket://localhost:9100")
                .sum(1)
                .checkpoint_every_ms(1000)
                .restart(sluice.Restart.fixed_delay(3, delay_ms=10_000)))

    Operator, Job = sluice.export(flat_map, key, describe=describe)

- `flat_map(line: str, out: Collector)`; `out.emit(*values)` emits a row.
  Values are None, bool, int (64-bit), float, str or bytes.
- `key(row: tuple)` returns the row's key, one such value.
- Any exception a function raises fails that record: the host gets a
  record-error with the message (`str(e)` for `RecordError`, else
  `"TypeName: str(e)"`) and applies the job's restart strategy; nothing traps.
- `describe(params: dict) -> JobDescription` (optional) gives the job's
  defaults; `open(params: dict)` (optional) runs on every fresh instance.

The component has no stdout: `print` writes nowhere. Guests must be
deterministic: the host replays records after a failure.

`sluice.pipeline` is the API of sluice:stream@0.2.0: pipelines of stages
with keyed state, timers, event time and windows.

`split_whitespace`, `trim`, `parse_int` and `parse_float` split, trim and
parse text exactly like their Rust counterparts, so that a Python guest
accepts the same input as a Rust one.
"""

from ._describe import JobDescription, Restart
from ._parse import parse_float, parse_int
from ._rt import Collector, RecordError, export, export_each
from ._words import split_whitespace, trim

__all__ = [
    "Collector",
    "JobDescription",
    "RecordError",
    "Restart",
    "export",
    "export_each",
    "parse_float",
    "parse_int",
    "split_whitespace",
    "trim",
]
