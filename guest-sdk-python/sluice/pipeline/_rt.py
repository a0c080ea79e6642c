"""The SDK's side of the 0.2.0 calls: decoding what the host ships,
running the user's stage functions, encoding their rows and changes. Used
by `sluice.pipeline.export`; not an API.

Every call checks its input: a buffer that does not decode fails the entry
it is in (or entry 0, for the buffers beside the input) with a record-error
`malformed batch from the host: ...`. An exception a stage function raises
fails its entry the same way, with the 0.1.0 SDK's message. A failed call's
output and changes are those of the entries before the failing one.
"""

import importlib
import struct
import sys

from .._codec import u32_into
from .._rt import _NoOutput, error_message
from ._ctx import Ctx, KeyStates, encode_changes, encoded_row
from ._out import MIN_I64, KafkaRecord, Out, Record, Time, Timer, WindowInfo
from ._wire import Malformed, Reader, decode_row
from . import _plan

_ZERO = bytes(4)
_record_head = struct.Struct("<IBI").unpack_from  # value-count, first tag, text length
_slot_change = struct.Struct("<II").pack  # slot, len
_entry_head = struct.Struct("<BIq").unpack_from  # a process entry's tag, key index, timestamp
_TEXT = 4
_TIMES = (Time.EVENT, Time.PROCESSING)


def message(e):
    """The record-error message for the exception `e`."""
    if isinstance(e, Malformed):
        return f"malformed batch from the host: {e}"
    return error_message(e)


class Calls:
    """The calls of one instance, on the job built from `job_fn` and the
    parameters `open` got (with none, if a call comes first)."""

    def __init__(self, job_fn, types):
        self.job_fn = job_fn
        self.t = types
        self.plan = None

    def open(self, params):
        self.plan = _plan.build(self.job_fn, dict(params))

    def current(self):
        """The plan `open` built (or one without parameters)."""
        if self.plan is None:
            self.plan = _plan.build(self.job_fn, {})
        return self.plan

    def result(self, output, changes=b"", index=None, e=None):
        t = self.t
        failed = None if e is None else t.RecordError(index, message(e))
        return t.BatchResult(bytes(output), bytes(changes), failed)

    def failed(self, index, text):
        t = self.t
        return t.BatchResult(b"", b"", t.RecordError(index, text))

    def stage(self, stage, want, what):
        """The stage `stage` if it is of a kind in `want`, else a failed
        result saying it is not `what`."""
        try:
            plan = self.current()
        except Exception as e:
            return None, self.failed(0, f"the job function failed: {message(e)}")
        if stage >= len(plan.stages):
            return None, self.failed(0, f"the job has no stage {stage}")
        st = plan.stages[stage]
        if st.kind not in want:
            return None, self.failed(0, f"stage {stage} is not {what}")
        return st, None

    # map

    def map(self, stage, header, data):
        st, err = self.stage(stage, (_plan.MAP,), "a map stage")
        if err is not None:
            return err
        f = st.fn
        buf = bytearray()
        out = Out(buf, self.plan.sides, st.next_key, st.rows)
        r = Reader(data)
        end = r.end
        first = stage == 0
        now = header.processing_time
        index = 0
        while r.pos < end:
            count_at = len(buf)
            buf += _ZERO
            out._rows = 0
            try:
                if first:
                    ts = now
                    pos = r.pos
                    row = None
                    if pos + 9 <= end:
                        count, tag, n = _record_head(data, pos)
                        if count == 1 and tag == _TEXT and pos + 9 + n <= end:
                            try:
                                row = (str(data[pos + 9:pos + 9 + n], "utf-8"),)
                            except UnicodeDecodeError:
                                raise Malformed(
                                    f"the text value at byte {pos + 4} is not valid UTF-8"
                                ) from None
                            r.pos = pos + 9 + n
                    kafka = None
                    if row is None:
                        row = r.row()
                        # A Kafka record: its timestamp is its event time.
                        kafka = KafkaRecord.of(row)
                        if kafka is not None and kafka.timestamp >= 0:
                            ts = kafka.timestamp
                else:
                    ts = r.i64()
                    row = r.row()
                    kafka = None
                out._ts = ts
                f(Record(row, ts, kafka), out)
            except Exception as e:
                del buf[count_at:]
                return self.result(buf, b"", index, e)
            u32_into(buf, count_at, out._rows)
            index += 1
        return self.result(buf)

    # process

    def process(self, stage, header, data, keys_buf):
        st, err = self.stage(stage, (_plan.PROCESS,), "a process stage")
        if err is not None:
            return err
        try:
            keys = read_keys(keys_buf, st.decls)
        except Malformed as e:
            return self.result(b"", b"", 0, e)
        f = st.fn
        kinds = [kind for _, kind in st.decls]
        timers = bytearray()
        cx = Ctx(st.decls, st.names, timers, header)
        buf = bytearray()
        out = Out(buf, self.plan.sides, st.next_key, st.rows)
        r = Reader(data)
        index = 0
        while not r.at_end():
            count_at = len(buf)
            timers_at = len(timers)
            buf += _ZERO
            out._rows = 0
            try:
                at = r.pos
                if at + 13 <= r.end:
                    tag, k, ts = _entry_head(data, at)
                    r.pos = at + 13
                else:
                    tag = r.u8("an entry's tag")
                    k = r.u32("an entry's key index")
                    ts = r.i64()
                if tag == 0:
                    event = Record(r.row(), ts)
                elif tag == 1:
                    domain = r.u8("a timer's time domain")
                    if domain > 1:
                        raise Malformed(f"the timer at byte {at} has time domain {domain}")
                    event = Timer(ts, _TIMES[domain])
                else:
                    raise Malformed(f"unknown entry tag {tag} at byte {at}")
                if k >= len(keys):
                    raise Malformed(f"the entry at byte {at} names key index {k} of {len(keys)}")
                cx._enter(index, keys[k], k, ts)
                out._ts = ts
                f(cx, event, out)
            except Exception as e:
                del buf[count_at:]
                del timers[timers_at:]
                cx._rollback()
                return self.result(buf, encode_changes(keys, kinds, timers), index, e)
            u32_into(buf, count_at, out._rows)
            index += 1
        return self.result(buf, encode_changes(keys, kinds, timers))

    # windows

    def window_add(self, stage, header, data, slots_buf):
        st, err = self.stage(stage, (_plan.AGGREGATE,), "an aggregate window stage")
        if err is not None:
            return err
        try:
            aggs = read_slots(slots_buf)
        except Malformed as e:
            return self.result(b"", b"", 0, e)
        add = st.add
        n = len(aggs)
        changed = {}
        r = Reader(data)
        index = 0
        while not r.at_end():
            try:
                slot = r.u32("an entry's slot")
                row = r.row()
                if slot >= n:
                    raise Malformed(f"an entry names slot {slot} of {n}")
                acc = aggs[slot]
                if type(acc) is bytes:
                    acc = decode_row(acc, f"the aggregate of slot {slot}")
                new = encoded_row(add(acc, row), "add's result")
            except Exception as e:
                return self.result(b"", slot_changes(changed), index, e)
            aggs[slot] = new[0]
            changed[slot] = new[1]
            index += 1
        return self.result(b"", slot_changes(changed))

    def window_merge(self, stage, data):
        st, err = self.stage(stage, (_plan.AGGREGATE,), "an aggregate window stage")
        if err is not None:
            return err
        try:
            pairs = read_pairs(data)
        except Malformed as e:
            return self.result(b"", b"", 0, e)
        merge = st.merge
        changes = bytearray()
        for index, (a, b) in enumerate(pairs):
            if isinstance(a, Malformed):
                return self.result(b"", changes, index, a)
            if a is None and b is None:
                continue
            try:
                if a is None or b is None:
                    merged = (a or b)[1]
                else:
                    merged = encoded_row(merge(a[0], b[0]), "merge's result")[1]
            except Exception as e:
                return self.result(b"", changes, index, e)
            changes += _slot_change(index, len(merged))
            changes += merged
        return self.result(b"", changes)

    def window_fire(self, stage, header, data):
        st, err = self.stage(stage, (_plan.AGGREGATE, _plan.CONTENTS), "a window stage")
        if err is not None:
            return err
        try:
            windows = read_windows(data)
        except Malformed as e:
            return self.result(b"", b"", 0, e)
        aggregate = st.kind == _plan.AGGREGATE
        fire = st.fire
        buf = bytearray()
        out = Out(buf, self.plan.sides, st.next_key, st.rows)
        for index, w in enumerate(windows):
            count_at = len(buf)
            buf += _ZERO
            out._rows = 0
            try:
                if isinstance(w, Malformed):
                    raise w
                info, is_aggregate, contents = w
                if is_aggregate != aggregate:
                    raise Malformed(
                        f"stage {stage} keeps {'aggregates' if aggregate else 'rows'}, "
                        f"but window {index} holds {'an aggregate' if is_aggregate else 'rows'}"
                    )
                out._ts = max(info.end - 1, MIN_I64)
                fire(info, contents, out)
            except Exception as e:
                del buf[count_at:]
                return self.result(buf, b"", index, e)
            u32_into(buf, count_at, out._rows)
        return self.result(buf)

    # describe

    def describe(self, params):
        return _plan.to_wit(_plan.build(self.job_fn, dict(params)).job, self.t)


def read_keys(buf, decls):
    """A process call's `keys`: a `KeyStates` per key index."""
    r = Reader(buf)
    n = r.u32("the key count")
    keys = []
    for k in range(n):
        try:
            key = r.value()
        except Malformed as e:
            raise Malformed(f"key {k} of the keys: {e}") from None
        states = [r.state(f"state `{name}` of key `{key!r}`") for name, _ in decls]
        keys.append(KeyStates(key, states))
    if not r.at_end():
        raise Malformed(f"the keys have {r.end - r.pos} bytes after the last key")
    return keys


def read_slots(buf):
    """window-add's `slots`: each slot's aggregate (its bytes, or None)."""
    r = Reader(buf)
    n = r.u32("the slot count")
    aggs = []
    for _ in range(n):
        r.value()
        r.i64("a window's start")
        r.i64("a window's end")
        aggs.append(r.state("a slot's aggregate"))
    if not r.at_end():
        raise Malformed(f"the slots have {r.end - r.pos} bytes after the last slot")
    return aggs


def read_pairs(buf):
    """window-merge's input: each pair's two aggregates as `(row, bytes)` or
    None; a pair that does not decode is a `Malformed` in the list, and the
    list ends there."""
    r = Reader(buf)
    n = r.u32("the pair count")
    pairs = []
    for i in range(n):
        try:
            a = _aggregate(r.state(f"aggregate a of pair {i}"), f"aggregate a of pair {i}")
            b = _aggregate(r.state(f"aggregate b of pair {i}"), f"aggregate b of pair {i}")
        except Malformed as e:
            pairs.append((e, None))
            return pairs
        pairs.append((a, b))
    if not r.at_end():
        raise Malformed(f"the input has {r.end - r.pos} bytes after the last pair")
    return pairs


def _aggregate(raw, what):
    return None if raw is None else (decode_row(raw, what), raw)


def read_windows(buf):
    """window-fire's input: each window as `(WindowInfo, is an aggregate,
    the aggregate row or None | [(timestamp, row)])`; a window that does not
    decode is a `Malformed` in the list, and the list ends there."""
    r = Reader(buf)
    n = r.u32("the window count")
    windows = []
    for i in range(n):
        try:
            key = r.value()
            start = r.i64("a window's start")
            end = r.i64("a window's end")
            tag = r.u8("a window's contents tag")
            if tag == 0:
                what = f"the aggregate of window {i}"
                contents = _aggregate(r.state(what), what)
                windows.append((WindowInfo(key, start, end), True, contents and contents[0]))
            elif tag == 1:
                m = r.u32("a window's row count")
                rows = [(r.i64(), r.row()) for _ in range(m)]
                windows.append((WindowInfo(key, start, end), False, rows))
            else:
                raise Malformed(f"window {i} has contents tag {tag}, not 0 (aggregate) or 1 (rows)")
        except Malformed as e:
            windows.append(e)
            return windows
    if not r.at_end():
        raise Malformed(f"the input has {r.end - r.pos} bytes after the last window")
    return windows


def slot_changes(changed):
    """window-add's changes: `(u32 slot, u32 len, u8{len})*` by slot."""
    out = bytearray()
    for slot in sorted(changed):
        b = changed[slot]
        out += _slot_change(slot, len(b))
        out += b
    return out


def exports(job_fn, world):
    """The `Operator` and `Job` classes componentize-py exports, for the
    bindings package `world` (`wit_world` in a component)."""
    try:
        bindings = importlib.import_module(f"{world.__name__}.exports")
        types = importlib.import_module(f"{world.__name__}.imports.types")
    except ImportError:
        bindings = None
    if bindings is None or not hasattr(getattr(bindings, "Operator", None), "window_fire"):
        raise RuntimeError(
            "sluice.pipeline.export needs the sluice:stream@0.2.0 bindings (world "
            "`pipeline-job`): build with `guest-sdk-python/componentize --wit 0.2.0 ...`"
        )
    from componentize_py_types import Err

    if sys.platform == "wasi":
        # No stdout or stderr in the component (see sluice/_rt.py).
        sys.stdout = sys.stderr = _NoOutput()
    calls = Calls(job_fn, types)

    class Operator(bindings.Operator):
        def open(self, params):
            try:
                calls.open(params)
            except Exception as e:
                raise Err(error_message(e)) from None

        def map(self, stage, header, input):
            return calls.map(stage, header, input)

        def process(self, stage, header, input, keys):
            return calls.process(stage, header, input, keys)

        def window_add(self, stage, header, input, slots):
            return calls.window_add(stage, header, input, slots)

        def window_merge(self, stage, input):
            return calls.window_merge(stage, input)

        def window_fire(self, stage, header, input):
            return calls.window_fire(stage, header, input)

    class Job(bindings.Job):
        def describe(self, params):
            return calls.describe(params)

    return Operator, Job
