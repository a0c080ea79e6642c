"""The job a 0.2.0 guest describes: its pipeline of stages, the states they
declare, their windows, the side outputs and the watermarks, with the
defaults flags and a TOML file override. Durations are milliseconds (an
int) or a `datetime.timedelta`. Every builder method checks its arguments
and raises at once."""

import datetime

from .._describe import JobDescription, Restart
from .._each import key_selector

MAX_U64 = (1 << 64) - 1

MAP, PROCESS, AGGREGATE, CONTENTS = range(4)


def millis(v, what):
    """A duration as whole milliseconds: an int, or a `timedelta`."""
    if isinstance(v, datetime.timedelta):
        v = v // datetime.timedelta(milliseconds=1)
    elif isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(
            f"{what} must be milliseconds (an int) or a timedelta, not {type(v).__name__}"
        )
    if not 0 <= v <= MAX_U64:
        raise ValueError(f"{what} must be 0 or more milliseconds, not {v}")
    return int(v)


def _name(name, what):
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a str, not {type(name).__name__}")
    return name


def _callable(f, what):
    if not callable(f):
        raise TypeError(f"{what} must be a function, not {type(f).__name__}")
    return f


class State:
    """A keyed state a process stage declares: `State.value(name)`,
    `State.list(name)` or `State.map(name)`, optionally with a TTL. The
    function names it by its place in the declaration (0, 1, ...) or by
    its name."""

    __slots__ = ("name", "kind", "ttl_ms")

    def __init__(self, name, kind, ttl_ms=None):
        self.name = _name(name, "a state's name")
        self.kind = kind
        self.ttl_ms = None if ttl_ms is None else millis(ttl_ms, "a state's ttl")

    def __repr__(self):
        kind = ("value", "list", "map")[self.kind]
        ttl = "" if self.ttl_ms is None else f".ttl({self.ttl_ms})"
        return f"State.{kind}({self.name!r}){ttl}"

    @staticmethod
    def value(name):
        """One row per key: `cx.value`, `cx.set`."""
        return State(name, 0)

    @staticmethod
    def list(name):
        """A list of rows per key: `cx.list`, `cx.push`, `cx.set_list`."""
        return State(name, 1)

    @staticmethod
    def map(name):
        """A map from values to rows per key: `cx.entries`, `cx.get`,
        `cx.put`, `cx.remove`."""
        return State(name, 2)

    def ttl(self, ttl):
        """Gone when not written for `ttl` of processing time (milliseconds
        or a timedelta)."""
        return State(self.name, self.kind, ttl)


class Windows:
    """How rows are put into windows: `Windows.tumbling(size)`,
    `Windows.sliding(size, slide)` or `Windows.session(gap)`, by event time
    unless `.processing_time()`."""

    __slots__ = ("assigner", "processing", "lateness_ms", "late")

    def __init__(self, assigner):
        self.assigner = assigner  # ("tumbling", size) | ("sliding", size, slide) | ("session", gap)
        self.processing = False
        self.lateness_ms = 0
        self.late = None

    def __repr__(self):
        kind, *sizes = self.assigner
        s = f"Windows.{kind}({', '.join(map(str, sizes))})"
        if self.processing:
            s += ".processing_time()"
        if self.lateness_ms:
            s += f".allowed_lateness({self.lateness_ms})"
        if self.late is not None:
            s += f".late_output({self.late!r})"
        return s

    def _with(self, **changes):
        w = Windows(self.assigner)
        w.processing, w.lateness_ms, w.late = self.processing, self.lateness_ms, self.late
        for k, v in changes.items():
            setattr(w, k, v)
        return w

    @staticmethod
    def tumbling(size):
        """Fixed windows of `size`, back to back."""
        return Windows(("tumbling", millis(size, "a window's size")))

    @staticmethod
    def sliding(size, slide):
        """Windows of `size`, a new one every `slide`."""
        size = millis(size, "a window's size")
        return Windows(("sliding", size, millis(slide, "a window's slide")))

    @staticmethod
    def session(gap):
        """Per-key windows of activity, closed by a `gap` without rows."""
        return Windows(("session", millis(gap, "a session's gap")))

    def processing_time(self):
        """By processing time instead of the rows' timestamps."""
        return self._with(processing=True)

    def allowed_lateness(self, lateness):
        """A row up to `lateness` behind the watermark still updates its
        window, which fires again."""
        return self._with(lateness_ms=millis(lateness, "the allowed lateness"))

    def late_output(self, name):
        """Rows later than that go to the side output `name` (else they are
        dropped and counted in the host's log)."""
        return self._with(late=_name(name, "the late output's name"))


class Stage:
    """One stage as the builder records it."""

    __slots__ = ("name", "key", "kind", "fn", "states", "windows", "add", "merge")

    def __init__(self, name, key, kind, fn, states=(), windows=None, add=None, merge=None):
        self.name = name
        self.key = key  # this stage's key selector (its input is keyed), or None
        self.kind = kind
        self.fn = fn
        self.states = states
        self.windows = windows
        self.add = add
        self.merge = merge


class Job:
    """A job: its pipeline of stages and its defaults (flags and a TOML file
    override them), built by chaining:

        Job("fraud-detector").watermarks(0).side_output("malformed")
            .map("parse", parse).key_by(lambda row: row[0])
            .process("detect", [State.value("small")], detect)
    """

    def __init__(self, name):
        self._desc = JobDescription(_name(name, "the job's name"))
        self._stages = []
        self._sides = []  # (name, sink or None)
        self._watermarks = None  # (out-of-orderness ms, idle timeout ms or None)
        self._next_key = None

    def __repr__(self):
        stages = ", ".join(s.name for s in self._stages)
        return f"Job({self._desc._name!r}, stages=[{stages}])"

    def _stage(self, name, kind, fn, **rest):
        stage = Stage(_name(name, "a stage's name"), self._next_key, kind, fn, **rest)
        self._next_key = None
        self._stages.append(stage)
        return self

    # Stages.

    def map(self, name, f):
        """A stateless stage: `f(record, out)` emits any number of rows for
        each input (map, filter and flat-map in one)."""
        return self._stage(name, MAP, _callable(f, "a map stage's function"))

    def key_by(self, key):
        """Keys the next stage's input by `key(row) -> value` (the host routes
        rows by it), or by field `key` of the row when it is an int
        (`key_by(0)`: no Python runs per row for it). `row` is the tuple of
        values the stage before emitted."""
        self._next_key = key_selector(key)[0]
        return self

    def process(self, name, states, f):
        """A keyed process function `f(cx, event, out)` with the states it
        declares (`State`s) and timers; `event` is a `Record` or a `Timer`."""
        states = list(states)
        for s in states:
            if not isinstance(s, State):
                raise TypeError(
                    "a process stage's states must be sluice.pipeline.State, "
                    f"not {type(s).__name__}"
                )
        names = [s.name for s in states]
        for n in names:
            if names.count(n) > 1:
                raise ValueError(f"the stage `{name}` declares the state `{n}` twice")
        return self._stage(name, PROCESS, _callable(f, "a process stage's function"), states=states)

    def aggregate(self, name, windows, add, merge, fire):
        """Keyed windows with an aggregate per key and window, kept by the
        host: `add(acc, row) -> row` folds a row in (`acc` is None for the
        window's first row), `merge(a, b) -> row` merges two (session
        windows), `fire(window, acc, out)` turns it into rows."""
        return self._stage(
            name, AGGREGATE, _callable(fire, "a window's fire function"),
            windows=_windows(windows), add=_callable(add, "a window's add function"),
            merge=_callable(merge, "a window's merge function"),
        )

    def window(self, name, windows, fire):
        """Keyed windows whose rows the host keeps: `fire(window, rows, out)`
        gets them all as `(timestamp, row)` pairs, by timestamp, when the
        window fires."""
        return self._stage(name, CONTENTS, _callable(fire, "a window's fire function"),
                           windows=_windows(windows))

    # The job around them.

    def side_output(self, name, sink=None):
        """Declares a side output (`--side-output NAME=URI` picks its sink;
        `sink`, else `print`, by default)."""
        self._sides.append((_name(name, "a side output's name"),
                            None if sink is None else _name(sink, "a side output's sink")))
        return self

    def watermarks(self, out_of_orderness):
        """Event time: the watermark trails the largest timestamp the first
        stage emitted by `out_of_orderness`."""
        idle = self._watermarks[1] if self._watermarks else None
        self._watermarks = (millis(out_of_orderness, "the out-of-orderness"), idle)
        return self

    def idle_timeout(self, timeout):
        """After `timeout` of processing time without records, the watermark
        advances with processing time, so that an idle source's windows and
        timers still fire."""
        bound = self._watermarks[0] if self._watermarks else 0
        self._watermarks = (bound, millis(timeout, "the idle timeout"))
        return self

    def source(self, uri):
        """The default source: `socket://HOST:PORT`, `file://PATH` or `-`."""
        self._desc.source(_name(uri, "the source"))
        return self

    def sink(self, uri):
        """The default sink of the main output."""
        self._desc.sink(_name(uri, "the sink"))
        return self

    def checkpoint_every(self, interval):
        """Checkpoint every `interval` (0 turns checkpoints off)."""
        self._desc.checkpoint_every_ms(millis(interval, "the checkpoint interval"))
        return self

    def checkpoint_every_ms(self, interval_ms):
        """Checkpoint every `interval_ms` milliseconds (as in the 0.1.0 API)."""
        return self.checkpoint_every(interval_ms)

    def no_checkpoints(self):
        """Turn checkpointing off by default."""
        self._desc.no_checkpoints()
        return self

    def restart(self, strategy):
        """The restart strategy, a `sluice.Restart`."""
        self._desc.restart(strategy)
        return self

    def parallelism(self, n):
        """The default number of parallel subtasks."""
        self._desc.parallelism(n)
        return self

    def limits(self, memory_bytes=None, call_timeout_ms=None, max_rows_per_record=None,
               max_bytes_per_record=None):
        """Limits for each guest instance; None keeps the host's default."""
        self._desc.limits(memory_bytes, call_timeout_ms, max_rows_per_record, max_bytes_per_record)
        return self


def _windows(w):
    if not isinstance(w, Windows):
        raise TypeError(f"a window stage needs a sluice.pipeline.Windows, not {type(w).__name__}")
    return w


def to_wit(job, t):
    """The job's description as the generated type of module `t`."""
    from .._describe import limits_to_wit, restart_to_wit

    d = job._desc
    w = job._watermarks
    return t.JobDescription(
        name=d._name,
        source=d._source,
        sink=d._sink,
        checkpoint_interval_ms=d._checkpoint_interval_ms,
        restart=restart_to_wit(d._restart, t),
        parallelism=d._parallelism,
        limits=limits_to_wit(d._limits, t),
        stages=[t.Stage(s.name, _stage_kind(s, t), s.key is not None) for s in job._stages],
        side_outputs=[t.SideOutput(name, sink) for name, sink in job._sides],
        watermarks=None if w is None else t.WatermarkStrategy(w[0], w[1]),
    )


def _stage_kind(s, t):
    if s.kind == MAP:
        return t.StageKind_Map()
    if s.kind == PROCESS:
        kinds = (t.StateKind.VALUE, t.StateKind.LIST, t.StateKind.MAP)
        return t.StageKind_Process([t.StateDecl(d.name, kinds[d.kind], d.ttl_ms) for d in s.states])
    w = s.windows
    kind, *sizes = w.assigner
    if kind == "tumbling":
        assigner = t.WindowAssigner_Tumbling(sizes[0])
    elif kind == "sliding":
        assigner = t.WindowAssigner_Sliding(t.SlidingWindow(sizes[0], sizes[1]))
    else:
        assigner = t.WindowAssigner_Session(sizes[0])
    return t.StageKind_Window(t.WindowSpec(
        assigner=assigner,
        domain=t.TimeDomain.PROCESSING_TIME if w.processing else t.TimeDomain.EVENT_TIME,
        allowed_lateness_ms=w.lateness_ms,
        late_output=w.late,
        function=t.WindowFunction.AGGREGATE if s.kind == AGGREGATE else t.WindowFunction.PROCESS,
    ))


__all__ = ["Job", "Restart", "State", "Windows"]
