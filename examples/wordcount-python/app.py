"""Flink's WordCount as a Sluice guest, in Python.

Splits each line on whitespace into (word, 1), keys by the word and lets the
host sum field 1. The line `ERROR` fails the record: the seed scenario's
failure signal, which the host answers with its restart strategy.
"""

import sluice


def flat_map(line, out):
    """Split a line into (word, 1) pairs; the line `ERROR` fails the record."""
    if line == "ERROR":
        raise sluice.RecordError("received the line `ERROR`")
    for word in sluice.split_whitespace(line):
        out.emit(word, 1)


def key(row):
    """Key by the word (field 0)."""
    return row[0]


def describe(params):
    """The job as the seed describes it."""
    return (
        sluice.JobDescription("wordcount-python")
        .source("socket://localhost:9100")
        .sum(1)
        .checkpoint_every_ms(1000)
        .restart(sluice.Restart.fixed_delay(3, delay_ms=10_000))
    )


Operator, Job = sluice.export(flat_map, key, describe=describe)
