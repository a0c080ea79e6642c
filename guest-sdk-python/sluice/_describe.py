"""The job description a guest may give of itself (a Flink `main()`'s settings).

Every setting is optional; the host's command-line flags and TOML file
override them. Durations are in milliseconds, as in the WIT.
"""


class Restart:
    """What the job does when a task fails, with Flink's semantics.

    Build one with `Restart.none()`, `Restart.fixed_delay(...)`,
    `Restart.failure_rate(...)` or `Restart.exponential_delay(...)`.
    """

    __slots__ = ("kind", "args")

    def __init__(self, kind, **args):
        self.kind = kind
        self.args = args

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.args.items())
        return f"Restart.{self.kind}({args})"

    def __eq__(self, other):
        return isinstance(other, Restart) and (self.kind, self.args) == (other.kind, other.args)

    @staticmethod
    def none():
        """Fail the job on the first task failure."""
        return Restart("none")

    @staticmethod
    def fixed_delay(attempts, delay_ms):
        """At most `attempts` restarts over the job's life, `delay_ms` apart."""
        return Restart("fixed_delay", attempts=attempts, delay_ms=delay_ms)

    @staticmethod
    def failure_rate(max_failures, interval_ms, delay_ms):
        """Fail for good when more than `max_failures` happen within `interval_ms`."""
        return Restart(
            "failure_rate", max_failures=max_failures, interval_ms=interval_ms, delay_ms=delay_ms
        )

    @staticmethod
    def exponential_delay(initial_ms, max_ms, multiplier=2.0, reset_after_ms=3_600_000, jitter=0.1):
        """A delay growing from `initial_ms` to `max_ms` by `multiplier`, reset
        after `reset_after_ms` without failure, with `jitter` (0.0 to 1.0)."""
        return Restart(
            "exponential_delay",
            initial_ms=initial_ms,
            max_ms=max_ms,
            multiplier=float(multiplier),
            reset_after_ms=reset_after_ms,
            jitter=float(jitter),
        )


class JobDescription:
    """The job's defaults, built by chaining:

        JobDescription("wordcount").source("socket://localhost:9100").sum(1)
    """

    def __init__(self, name=None):
        self._name = name
        self._source = None
        self._sink = None
        self._aggregation = None  # (kind, field), kind in "sum", "count", "min", "max"
        self._checkpoint_interval_ms = None
        self._restart = None
        self._parallelism = None
        self._limits = None

    def __repr__(self):
        fields = ", ".join(f"{k[1:]}={v!r}" for k, v in vars(self).items() if v is not None)
        return f"JobDescription({fields})"

    def source(self, uri):
        """The default source: `socket://HOST:PORT`, `file://PATH` or `-`."""
        self._source = uri
        return self

    def sink(self, uri):
        """The default sink: `print`, `file://PATH` or `discard`."""
        self._sink = uri
        return self

    def aggregate(self, kind, field):
        """The keyed aggregation: `kind` is "sum", "count", "min" or "max"."""
        if kind not in ("sum", "count", "min", "max"):
            raise ValueError(f"unknown aggregation {kind!r}: use sum, count, min or max")
        self._aggregation = (kind, field)
        return self

    def sum(self, field):
        """Running sum of field `field` per key."""
        return self.aggregate("sum", field)

    def count(self, field):
        """Running count of rows per key, written into field `field`."""
        return self.aggregate("count", field)

    def min(self, field):
        """Running minimum of field `field` per key."""
        return self.aggregate("min", field)

    def max(self, field):
        """Running maximum of field `field` per key."""
        return self.aggregate("max", field)

    def checkpoint_every_ms(self, interval_ms):
        """Checkpoint every `interval_ms` milliseconds."""
        self._checkpoint_interval_ms = interval_ms
        return self

    def no_checkpoints(self):
        """Turn checkpointing off by default."""
        self._checkpoint_interval_ms = 0
        return self

    def restart(self, strategy):
        """The restart strategy, a `Restart`."""
        if not isinstance(strategy, Restart):
            raise TypeError("restart() takes a sluice.Restart, e.g. Restart.fixed_delay(3, 10_000)")
        self._restart = strategy
        return self

    def parallelism(self, n):
        """The default number of parallel subtasks."""
        self._parallelism = n
        return self

    def limits(self, memory_bytes=None, call_timeout_ms=None, max_rows_per_record=None,
               max_bytes_per_record=None):
        """Per-instance limits; None keeps the host's default."""
        self._limits = (memory_bytes, call_timeout_ms, max_rows_per_record, max_bytes_per_record)
        return self


def to_wit(d, t):
    """Converts a `JobDescription` to the generated type of module `t`
    (`wit_world.imports.types`)."""
    if d is None:
        d = JobDescription()
    if not isinstance(d, JobDescription):
        raise TypeError(f"describe must return a sluice.JobDescription, not {type(d).__name__}")
    aggregation = None
    if d._aggregation is not None:
        kind, field = d._aggregation
        aggregation = t.Aggregation(t.AggregateKind[kind.upper()], field)
    return t.JobDescription(
        name=d._name,
        source=d._source,
        sink=d._sink,
        aggregation=aggregation,
        checkpoint_interval_ms=d._checkpoint_interval_ms,
        restart=restart_to_wit(d._restart, t),
        parallelism=d._parallelism,
        limits=limits_to_wit(d._limits, t),
    )


def restart_to_wit(r, t):
    """A `Restart` (or None) as the generated type of module `t`; the same
    in every WIT version."""
    if r is None:
        return None
    a = r.args
    if r.kind == "none":
        return t.RestartStrategy_None_()
    if r.kind == "fixed_delay":
        return t.RestartStrategy_FixedDelay(t.FixedDelay(a["attempts"], a["delay_ms"]))
    if r.kind == "failure_rate":
        return t.RestartStrategy_FailureRate(
            t.FailureRate(a["max_failures"], a["interval_ms"], a["delay_ms"])
        )
    return t.RestartStrategy_ExponentialDelay(
        t.ExponentialDelay(
            a["initial_ms"], a["max_ms"], a["multiplier"], a["reset_after_ms"], a["jitter"]
        )
    )


def limits_to_wit(limits, t):
    """The `limits(...)` settings (or None) as the generated type of module `t`."""
    return t.Limits(*limits) if limits is not None else None
