"""Flink's WordCount as a Sluice guest, in Python.

Splits each line on whitespace into (word, 1), keys by the word (field 0) and
lets the host sum field 1. `out.emit_each` emits a line's rows in one call
and the key is a field index, so no Python runs per word. The line `ERROR` fails the record: the seed scenario's
failure signal, which the host answers with its restart strategy.
"""

import sluice


def words(line):
    """The words of a line, each emitted as (word, 1); the line `ERROR`
    fails the record."""
    if line == "ERROR":
        raise sluice.RecordError("received the line `ERROR`")
    return sluice.split_whitespace(line)


def describe(params):
    """The job as the seed describes it."""
    return (
        sluice.JobDescription("wordcount-python")
        .source("socket://localhost:9100")
        .sum(1)
        .checkpoint_every_ms(1000)
        .restart(sluice.Restart.fixed_delay(3, delay_ms=10_000))
    )


Operator, Job = sluice.export_each(words, 1, key=0, describe=describe)
