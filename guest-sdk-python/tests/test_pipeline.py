"""Unit tests of `sluice.pipeline` (sluice:stream@0.2.0) on the host's CPython,
with the bindings componentize-py generates for wit/sluice-stream@0.2.0.
The 0.1.0 tests hold the name `wit_world`, so these bindings are loaded as
the package `wit_world_pipeline`. Run them with the others:

    python3 -m unittest discover -s guest-sdk-python/tests

The host's buffers are built here with `struct`, independently of the SDK,
and the SDK's output and changes are checked byte for byte against the
encodings in the WIT.
"""

import datetime
import importlib
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest

SDK = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(SDK)
sys.path.insert(0, SDK)

import sluice  # noqa: E402
from sluice import pipeline  # noqa: E402
from sluice.pipeline import State, Time, Timer, Windows  # noqa: E402
from sluice.pipeline import _rt  # noqa: E402

_bindings = None
world = None
t = None
Err = None
MIN_I64 = -(1 << 63)


def setUpModule():
    global _bindings, world, t, Err
    tool = shutil.which("componentize-py") or os.path.join(
        ROOT, ".tools", "python", "venv", "bin", "componentize-py"
    )
    if not os.path.exists(tool):
        raise unittest.SkipTest("componentize-py not found: run examples/fraud-python/build once")
    _bindings = tempfile.mkdtemp(prefix="sluice-bindings-0.2-")
    generated = os.path.join(_bindings, "generated")
    subprocess.run(
        [tool, "-q", "-d", os.path.join(ROOT, "wit", "sluice-stream@0.2.0"), "-w", "pipeline-job",
         "bindings", generated],
        check=True,
    )
    # Its own name, beside the 0.1.0 tests' `wit_world`; the generated
    # package imports itself relatively.
    os.rename(os.path.join(generated, "wit_world"), os.path.join(_bindings, "wit_world_pipeline"))
    shutil.copy(os.path.join(generated, "componentize_py_types.py"), _bindings)
    sys.path.append(_bindings)
    world = importlib.import_module("wit_world_pipeline")
    t = importlib.import_module("wit_world_pipeline.imports.types")
    Err = importlib.import_module("componentize_py_types").Err


def tearDownModule():
    if _bindings:
        shutil.rmtree(_bindings, ignore_errors=True)


# The host's side of the encodings.

def value(v):
    if v is None:
        return b"\x00"
    if isinstance(v, bool):
        return bytes((1, int(v)))
    if isinstance(v, int):
        return struct.pack("<Bq", 2, v)
    if isinstance(v, float):
        return struct.pack("<Bd", 3, v)
    if isinstance(v, str):
        b = v.encode()
        return struct.pack("<BI", 4, len(b)) + b
    return struct.pack("<BI", 5, len(v)) + bytes(v)


def row(*values):
    return struct.pack("<I", len(values)) + b"".join(value(v) for v in values)


def u32(n):
    return struct.pack("<I", n)


def i64(n):
    return struct.pack("<q", n)


def state(raw):
    return b"\x00" if raw is None else b"\x01" + u32(len(raw)) + raw


def rows_state(*rows):
    return u32(len(rows)) + b"".join(rows)


def map_state(*pairs):
    return u32(len(pairs)) + b"".join(value(k) + r for k, r in pairs)


def header(processing_time=5_000, watermark=MIN_I64):
    return t.BatchHeader(processing_time, watermark)


def entries_of(output, n, keyed):
    """Decodes an `output` of `n` entries into [[(tag, ts, row, key)]]."""
    from sluice.pipeline._wire import Reader

    r = Reader(output)
    out = []
    for _ in range(n):
        rows = []
        for _ in range(r.u32()):
            tag = r.u8()
            ts = r.i64()
            rw = r.row()
            key = r.value() if tag == 0 and keyed else None
            rows.append((tag, ts, rw, key))
        out.append(rows)
    assert r.at_end(), "bytes after the last entry"
    return out


def calls(job):
    Operator, Job = _rt.exports(job, world)
    return Operator(), Job()


def first(row):
    return row[0]


class Exports(unittest.TestCase):
    def test_the_0_1_world_is_refused_with_what_to_do(self):
        class Old:
            __name__ = "old_world"

        with self.assertRaises(RuntimeError) as e:
            _rt.exports(lambda p: pipeline.Job("x"), Old())
        self.assertIn("--wit 0.2.0", str(e.exception))

    def test_export_refuses_a_module_that_would_rebind_job(self):
        namespace = {"Job": pipeline.Job}
        exec("def job(params):\n    return Job('x')\n", namespace)
        with self.assertRaises(ImportError) as e:
            pipeline.export(namespace["job"])
        self.assertIn("pipeline.Job(...)", str(e.exception))


class Describe(unittest.TestCase):
    def test_fraud(self):
        def job(params):
            ttl = params.get("ttl")
            states = [State.value("small"), State.value("deadline")]
            if ttl:
                states = [s.ttl(int(ttl)) for s in states]
            return (pipeline.Job("fraud-detector").source("socket://localhost:9100")
                    .checkpoint_every(1000).restart(sluice.Restart.fixed_delay(3, delay_ms=1000))
                    .watermarks(0).side_output("malformed")
                    .map("parse", lambda r, out: None).key_by(first)
                    .process("detect", states, lambda cx, e, out: None))

        _, j = calls(job)
        self.assertEqual(
            j.describe([("ttl", "1000")]),
            t.JobDescription(
                name="fraud-detector", source="socket://localhost:9100", sink=None,
                checkpoint_interval_ms=1000,
                restart=t.RestartStrategy_FixedDelay(t.FixedDelay(3, 1000)), parallelism=None,
                limits=None,
                stages=[
                    t.Stage("parse", t.StageKind_Map(), False),
                    t.Stage("detect", t.StageKind_Process([
                        t.StateDecl("small", t.StateKind.VALUE, 1000),
                        t.StateDecl("deadline", t.StateKind.VALUE, 1000),
                    ]), True),
                ],
                side_outputs=[t.SideOutput("malformed", None)],
                watermarks=t.WatermarkStrategy(0, None),
            ),
        )
        self.assertEqual(j.describe([]).stages[1].kind.value[0].ttl_ms, None)

    def test_windows_and_everything_else(self):
        def fire(w, acc, out):
            pass

        def job(params):
            return (pipeline.Job("w").sink("discard").no_checkpoints().parallelism(2)
                    .limits(memory_bytes=1 << 26).idle_timeout(datetime.timedelta(seconds=2))
                    .watermarks(500).side_output("late", "file:///tmp/late.txt")
                    .map("split", lambda r, out: None).key_by(first)
                    .aggregate("tumble", Windows.tumbling(10_000).allowed_lateness(100).late_output("late"),
                               lambda a, r: (1,), lambda a, b: (2,), fire).key_by(first)
                    .aggregate("slide", Windows.sliding(10_000, 5_000).processing_time(),
                               lambda a, r: (1,), lambda a, b: (2,), fire).key_by(first)
                    .window("session", Windows.session(3_000), lambda w, rows, out: None)
                    .map("last", lambda r, out: None)
                    .process("lists", [State.list("l"), State.map("m").ttl(7)], lambda c, e, o: None))

        d = calls(job)[1].describe([])
        self.assertEqual((d.name, d.sink, d.checkpoint_interval_ms, d.parallelism), ("w", "discard", 0, 2))
        self.assertEqual(d.limits, t.Limits(1 << 26, None, None, None))
        self.assertEqual(d.watermarks, t.WatermarkStrategy(500, 2000))
        self.assertEqual(d.side_outputs, [t.SideOutput("late", "file:///tmp/late.txt")])
        self.assertEqual([s.keyed for s in d.stages], [False, True, True, True, False, False])
        self.assertEqual(d.stages[1].kind, t.StageKind_Window(t.WindowSpec(
            t.WindowAssigner_Tumbling(10_000), t.TimeDomain.EVENT_TIME, 100, "late",
            t.WindowFunction.AGGREGATE)))
        self.assertEqual(d.stages[2].kind, t.StageKind_Window(t.WindowSpec(
            t.WindowAssigner_Sliding(t.SlidingWindow(10_000, 5_000)), t.TimeDomain.PROCESSING_TIME, 0,
            None, t.WindowFunction.AGGREGATE)))
        self.assertEqual(d.stages[3].kind, t.StageKind_Window(t.WindowSpec(
            t.WindowAssigner_Session(3_000), t.TimeDomain.EVENT_TIME, 0, None,
            t.WindowFunction.PROCESS)))
        self.assertEqual(d.stages[5].kind, t.StageKind_Process([
            t.StateDecl("l", t.StateKind.LIST, None), t.StateDecl("m", t.StateKind.MAP, 7)]))

    def test_idle_timeout_alone_means_watermarks_without_out_of_orderness(self):
        d = calls(lambda p: pipeline.Job("j").idle_timeout(50).map("m", lambda r, o: None))[1].describe([])
        self.assertEqual(d.watermarks, t.WatermarkStrategy(0, 50))
        self.assertIsNone(calls(lambda p: pipeline.Job("j").map("m", lambda r, o: None))[1]
                          .describe([]).watermarks)

    def test_builder_mistakes_raise_at_once(self):
        j = pipeline.Job("j")
        for call, kind in (
            (lambda: j.map("m", 3), TypeError),
            (lambda: j.key_by("field 0"), TypeError),
            (lambda: j.process("p", ["small"], lambda c, e, o: None), TypeError),
            (lambda: j.process("p", [State.value("a"), State.list("a")], lambda c, e, o: None), ValueError),
            (lambda: j.window("w", 10, lambda w, r, o: None), TypeError),
            (lambda: j.watermarks(-1), ValueError),
            (lambda: j.watermarks(1.5), TypeError),
            (lambda: Windows.tumbling("10s"), TypeError),
            (lambda: State.value("s").ttl(True), TypeError),
            (lambda: j.restart(3), TypeError),
        ):
            with self.assertRaises(kind):
                call()


def parse_job(params):
    def parse(r, out):
        try:
            word, ts = r.text.split(" ")
            ts = sluice.parse_int(ts)
        except ValueError:
            return out.side("bad", r.text)
        if word == "boom":
            raise sluice.RecordError("boom at " + str(ts))
        if word == "oops":
            out.emit("partial")
            return {}[word]
        out.emit_at(ts, word, 1)
        out.emit(word, 2)

    return (pipeline.Job("j").side_output("bad").map("parse", parse).key_by(first)
            .map("again", lambda r, out: out.emit(r.row[0], r.timestamp)))


class Map(unittest.TestCase):
    def setUp(self):
        self.op, _ = calls(parse_job)
        self.op.open([])

    def test_first_stage_encoding_is_exact(self):
        r = self.op.map(0, header(5_000), row("a 7") + row("x"))
        self.assertIsNone(r.failed)
        self.assertEqual(r.changes, b"")
        expected = (
            u32(2)
            + b"\x00" + i64(7) + row("a", 1) + value("a")  # emit_at, with the next stage's key
            + b"\x00" + i64(5_000) + row("a", 2) + value("a")  # emit: the batch's processing time
            + u32(1) + b"\x01" + i64(5_000) + row("x")  # a side row has no key
        )
        self.assertEqual(r.output, expected)

    def test_later_stage_takes_timestamps_and_emits_no_key_at_the_end(self):
        r = self.op.map(1, header(), i64(42) + row("a", 1) + i64(-3) + row("b", 2))
        self.assertIsNone(r.failed)
        self.assertEqual(entries_of(r.output, 2, keyed=False),
                         [[(0, 42, ("a", 42), None)], [(0, -3, ("b", -3), None)]])

    def test_an_exception_fails_its_entry_and_keeps_the_ones_before(self):
        r = self.op.map(0, header(), row("a 1") + row("boom 9") + row("c 2"))
        self.assertEqual((r.failed.index, r.failed.message), (1, "boom at 9"))
        self.assertEqual(len(entries_of(r.output, 1, keyed=True)[0]), 2)
        r = self.op.map(0, header(), row("oops 1"))
        self.assertEqual((r.failed.index, r.failed.message), (0, "KeyError: 'oops'"))
        self.assertEqual(r.output, b"")

    def test_unknown_side_output_and_bad_values_fail_the_entry(self):
        def f(r, out):
            if r.text == "side":
                out.side("nope", 1)
            elif r.text == "big":
                out.emit(2**63)
            elif r.text == "ts":
                out.emit_at(1.5, 1)
            else:
                try:
                    out.emit([1])
                except TypeError:
                    pass
                out.emit("kept")

        op, _ = calls(lambda p: pipeline.Job("j").map("m", f))
        for line, message in (
            ("side", "ValueError: there is no side output named `nope`; declare it with Job.side_output"),
            ("big", "OverflowError: the int 9223372036854775808 does not fit in 64 bits"),
            ("ts", "TypeError: a timestamp must be an int (milliseconds), not float"),
        ):
            r = op.map(0, header(), row(line))
            self.assertEqual((r.failed.index, r.failed.message), (0, message))
        # A row that fails to encode is not half-written.
        r = op.map(0, header(), row("caught"))
        self.assertIsNone(r.failed)
        self.assertEqual(entries_of(r.output, 1, keyed=False), [[(0, 5_000, ("kept",), None)]])

    def test_malformed_input(self):
        good = row("a 1")
        for data, index, message in (
            (good + row("b 2")[:-1], 1, "a value at byte 4 runs past the buffer's end"),
            (good + struct.pack("<IBI", 1, 4, 2) + b"\xff\xfe", 1, "the text value at byte 4 is not valid UTF-8"),
            (good + u32(1) + b"\x09", 1, "unknown value tag 9 at byte 4"),
            (good + u32(1) + b"\x01\x02", 1, "the boolean at byte 4 is 2, not 0 or 1"),
            (good + b"\x01\x00", 1, "the buffer ends inside the value count of a row at byte 0"),
            (u32(1000) + b"\x00", 0, "a row at byte 0 claims 1000 values, past the buffer's end"),
        ):
            r = self.op.map(0, header(), data)
            self.assertEqual(r.failed.index, index, data)
            self.assertEqual(r.failed.message, "malformed batch from the host: " + message
                             .replace("at byte 4", f"at byte {len(good) + 4}")
                             .replace("at byte 0", f"at byte {len(good) if index else 0}"))
        r = self.op.map(1, header(), i64(1)[:5])
        self.assertEqual(r.failed.message,
                         "malformed batch from the host: the buffer ends inside a timestamp at byte 0")

    def test_a_non_text_first_stage_record_has_empty_text(self):
        seen = []
        op, _ = calls(lambda p: pipeline.Job("j").map("m", lambda r, out: seen.append((r.text, r.row))))
        op.map(0, header(), row(3, "x") + row())
        self.assertEqual(seen, [("", (3, "x")), ("", ())])

    def test_a_kafka_record_is_whole_and_its_timestamp_is_the_inputs(self):
        seen = []

        def f(r, out):
            k = r.kafka
            seen.append((r.text, k.key, k.partition, k.offset, k.headers, k.header("h")) if k else None)
            out.emit(r.text)

        op, _ = calls(lambda p: pipeline.Job("j").map("m", f))
        records = (row("a b", b"k", 2, 7, 1_234, "h", b"v", "n", None)
                   + row("c", None, 0, 3, -1)
                   + row("line"))
        r = op.map(0, header(5_000), records)
        self.assertIsNone(r.failed)
        self.assertEqual(seen, [("a b", b"k", 2, 7, [("h", b"v"), ("n", None)], b"v"),
                                ("c", None, 0, 3, [], None),
                                None])
        # The record's timestamp, the batch's when it has none, and a line's.
        self.assertEqual(entries_of(r.output, 3, keyed=False),
                         [[(0, 1_234, ("a b",), None)], [(0, 5_000, ("c",), None)],
                          [(0, 5_000, ("line",), None)]])

    def test_wrong_stage(self):
        r = self.op.map(2, header(), b"")
        self.assertEqual((r.failed.index, r.failed.message), (0, "the job has no stage 2"))
        op, _ = calls(detect_job)
        r = op.map(1, header(), b"")
        self.assertEqual(r.failed.message, "stage 1 is not a map stage")
        r = op.process(0, header(), b"", u32(0))
        self.assertEqual(r.failed.message, "stage 0 is not a process stage")


# A process stage over every kind of state.

class EmitEach(unittest.TestCase):
    """`out.emit_each(_at)` and `key_by(N)` emit what `out.emit(_at)` per
    row with a key function does, byte for byte."""

    LINES = ("5 to be or not to be", "7", "9 \u00e9t\u00e9 to  x", "11 be be 1")

    @staticmethod
    def job(each, key, then=None):
        def split(r, out):
            words = r.text.split()
            ts = int(words[0])
            if each:
                out.emit_each_at(ts, words[1:], 1)
                out.emit_each(words[1:2], "k", 2.5)
                out.emit_each([])
            else:
                for w in words[1:]:
                    out.emit_at(ts, w, 1)
                for w in words[1:2]:
                    out.emit(w, "k", 2.5)

        def job(params):
            j = pipeline.Job("j").map("split", split)
            if key is not None:
                j = j.key_by(key)
            return j.map("again", lambda r, out: None) if then is None else j

        return job

    def output(self, job, lines):
        op, _ = calls(job)
        op.open([])
        data = b"".join(row(line) for line in lines)
        return [op.map(0, header(), data) for _ in range(2)]

    def test_the_same_bytes_as_emit_per_row(self):
        for key, then in ((0, None), (1, None), (None, "last")):
            want = self.output(self.job(False, first if key == 0 else (lambda r: r[1]) if key else None,
                                        then), self.LINES)
            for each_key in ((key,) if key is None else (key, first if key == 0 else lambda r: r[1])):
                got = self.output(self.job(True, each_key, then), self.LINES)
                for g, w in zip(got, want):
                    self.assertIsNone(g.failed)
                    self.assertEqual(g.output, w.output, (key, each_key))

    def test_a_failure_emits_none_of_the_rows_and_fails_the_entry(self):
        def split(r, out):
            out.emit("before")
            if r.text == "bad":
                out.emit_each(["ok", [1]], 1)

        op, _ = calls(lambda p: pipeline.Job("j").map("split", split).key_by(0)
                      .map("again", lambda r, out: None))
        r = op.map(0, header(), row("fine") + row("bad"))
        self.assertEqual(r.failed.index, 1)
        self.assertTrue(r.failed.message.startswith("TypeError: a row value must be"), r.failed.message)
        self.assertEqual(entries_of(r.output, 1, keyed=True), [[(0, 5_000, ("before",), "before")]])

    def test_a_key_field_out_of_range_fails_the_entry(self):
        op, _ = calls(lambda p: pipeline.Job("j").map("m", lambda r, out: out.emit_each(["a"], 1))
                      .key_by(2).map("again", lambda r, out: None))
        r = op.map(0, header(), row("x"))
        self.assertEqual((r.failed.index, r.failed.message),
                         (0, "IndexError: the key is field 2, but the row has 2 values"))
        with self.assertRaisesRegex(TypeError, "a function or a field index"):
            pipeline.Job("j").key_by("word")


def detect(cx, event, out):
    if isinstance(event, Timer):
        out.emit("timer", event.at, event.time.name, cx.timestamp)
        cx.clear("v")
        return
    cmd, *args = event.row
    if cmd == "set":
        cx.set("v", *args)
    elif cmd == "get":
        out.emit(repr((cx.key, cx.value(0), cx.list("l"), cx.entries("m"))))
    elif cmd == "push":
        cx.push("l", *args)
    elif cmd == "set_list":
        cx.set_list("l", [tuple(args)] * 2)
    elif cmd == "put":
        cx.put("m", args[0], *args[1:])
    elif cmd == "remove":
        cx.remove("m", args[0])
    elif cmd == "timer":
        cx.set_timer(Time.EVENT, args[0])
        cx.set_timer(Time.PROCESSING, args[0] + 1)
        cx.delete_timer(Time.EVENT, args[0] - 1)
    elif cmd == "clocks":
        out.emit(cx.timestamp, cx.watermark, cx.processing_time)
    elif cmd == "fail":
        cx.set("v", "lost")
        cx.push("l", "lost")
        cx.put("m", "lost", 1)
        cx.set_timer(Time.EVENT, 1)
        out.emit("lost")
        raise ValueError("failed after writing")
    elif cmd == "wrong":
        cx.push("v", 1)
    elif cmd == "missing":
        cx.value(7)


def detect_job(params):
    return (pipeline.Job("j").map("m", lambda r, out: None).key_by(first)
            .process("p", [State.value("v"), State.list("l"), State.map("m")], detect))


def keys(*ks):
    """`keys := u32 n, (value key, state{3}){n}`; each k is (key, v, l, m)."""
    return u32(len(ks)) + b"".join(value(k) + state(v) + state(lst) + state(m) for k, v, lst, m in ks)


def entry(k, ts, *values):
    return b"\x00" + u32(k) + i64(ts) + row(*values)


def timer(k, at, domain):
    return b"\x01" + u32(k) + i64(at) + bytes((domain,))


def set_change(k, s, raw):
    return b"\x00" + u32(k) + u32(s) + u32(len(raw)) + raw


def clear_change(k, s):
    return b"\x01" + u32(k) + u32(s)


class Process(unittest.TestCase):
    def setUp(self):
        self.op, _ = calls(detect_job)

    def run_(self, data, ks, hdr=None):
        return self.op.process(1, hdr or header(), data, ks)

    def test_states_as_shipped(self):
        ks = keys(("a", row(1.5), rows_state(row("x"), row("y", 2)), map_state((1, row("one")), (1.0, row("f")))),
                  (7, None, None, None))
        r = self.run_(entry(0, 10, "get") + entry(1, 11, "get"), ks)
        self.assertIsNone(r.failed)
        self.assertEqual(r.changes, b"")
        self.assertEqual(entries_of(r.output, 2, keyed=False), [
            [(0, 10, (repr(("a", (1.5,), [("x",), ("y", 2)], [(1, ("one",)), (1.0, ("f",))])),), None)],
            [(0, 11, (repr((7, None, [], [])),), None)],
        ])

    def test_writes_are_whole_states_by_key_then_timers(self):
        ks = keys(("a", None, rows_state(row("x")), map_state(("k", row(1)), ("j", row(2)))),
                  ("b", row(0), None, None))
        data = (entry(1, 1, "set", "v", 2) + entry(0, 2, "push", "y") + entry(0, 3, "push", "z")
                + entry(0, 4, "put", "k", 3) + entry(0, 5, "timer", 100) + entry(1, 6, "put", "n", True)
                + entry(1, 7, "remove", "n") + entry(0, 8, "get"))
        r = self.run_(data, ks)
        self.assertIsNone(r.failed)
        self.assertEqual(entries_of(r.output, 8, keyed=False)[7], [
            (0, 8, (repr(("a", None, [("x",), ("y",), ("z",)], [("j", (2,)), ("k", (3,))])),), None)])
        self.assertEqual(
            r.changes,
            set_change(0, 1, rows_state(row("x"), row("y"), row("z")))
            + set_change(0, 2, map_state(("j", row(2)), ("k", row(3))))
            + set_change(1, 0, row("v", 2))
            + clear_change(1, 2)  # put then removed: the map is empty, so cleared
            + b"\x02" + u32(0) + b"\x00" + i64(100)
            + b"\x02" + u32(0) + b"\x01" + i64(101)
            + b"\x03" + u32(0) + b"\x00" + i64(99),
        )

    def test_set_list_clear_and_timers(self):
        ks = keys(("a", row("old"), None, None))
        r = self.run_(entry(0, 1, "set_list", "p", 1) + timer(0, 50, 0) + timer(0, 60, 1), ks)
        self.assertIsNone(r.failed)
        self.assertEqual(entries_of(r.output, 3, keyed=False), [
            [], [(0, 50, ("timer", 50, "EVENT", 50), None)], [(0, 60, ("timer", 60, "PROCESSING", 60), None)]])
        self.assertEqual(r.changes, clear_change(0, 0) + set_change(0, 1, rows_state(row("p", 1), row("p", 1))))

    def test_a_keyed_next_stage_gets_its_key_and_timers_are_checked(self):
        def f(cx, event, out):
            if event.row[0] == "clock":
                cx.set_timer(0, 5)
            elif event.row[0] == "far":
                cx.set_timer(Time.EVENT, 2**63)
            else:
                out.emit(event.row[0], cx.key)
                out.side("s", "side")

        op, _ = calls(lambda p: pipeline.Job("j").side_output("s").map("m", lambda r, o: None)
                      .key_by(first).process("p", [], f).key_by(lambda row: row[1])
                      .map("n", lambda r, o: None))
        ks = u32(1) + value("k")
        r = op.process(1, header(), b"\x00" + u32(0) + i64(3) + row("x"), ks)
        self.assertEqual(entries_of(r.output, 1, keyed=True),
                         [[(0, 3, ("x", "k"), "k"), (1, 3, ("side",), None)]])
        r = op.process(1, header(), b"\x00" + u32(0) + i64(3) + row("clock"), ks)
        self.assertEqual(r.failed.message, "TypeError: a timer's clock must be Time.EVENT or Time.PROCESSING, not `0`")
        r = op.process(1, header(), b"\x00" + u32(0) + i64(3) + row("far"), ks)
        self.assertEqual(r.failed.message, "OverflowError: a timer's time 9223372036854775808 does not fit in 64 bits")
        self.assertEqual(r.changes, b"")

    def test_clocks(self):
        r = self.run_(entry(0, 3, "clocks"), keys(("a", None, None, None)), header(9, 4))
        self.assertEqual(entries_of(r.output, 1, keyed=False), [[(0, 3, (3, 4, 9), None)]])

    def test_a_failing_entry_changes_nothing(self):
        ks = keys(("a", row("kept"), rows_state(row("x")), None), ("b", None, None, None))
        r = self.run_(entry(1, 1, "push", "y") + entry(0, 2, "push", "w") + entry(0, 3, "fail"), ks)
        self.assertEqual((r.failed.index, r.failed.message), (2, "ValueError: failed after writing"))
        self.assertEqual(len(entries_of(r.output, 2, keyed=False)), 2)
        self.assertEqual(r.changes, set_change(0, 1, rows_state(row("x"), row("w")))
                         + set_change(1, 1, rows_state(row("y"))))
        # Entries that write in place after a failure in the same key start
        # from what the entries before left.
        r = self.run_(entry(0, 1, "push", "w") + entry(0, 2, "fail"), ks)
        self.assertEqual(r.changes, set_change(0, 1, rows_state(row("x"), row("w"))))

    def test_misuse_fails_the_entry(self):
        ks = keys(("a", None, None, None))
        r = self.run_(entry(0, 1, "wrong"), ks)
        self.assertEqual(r.failed.message, "TypeError: state `v` is a value state, not a list state")
        r = self.run_(entry(0, 1, "missing"), ks)
        self.assertEqual(r.failed.message, "LookupError: the stage declares no state `7`")

    def test_state_written_then_read_in_one_call_reads_as_shipped(self):
        def f(cx, event, out):
            if event.row[0] == "w":
                cx.set(0, bytearray(b"ab"), True)
                cx.put(1, bytearray(b"k"), 1)
            else:
                out.emit(type(cx.value(0)[0]).__name__, type(cx.entries(1)[0][0]).__name__)

        op, _ = calls(lambda p: pipeline.Job("j").map("m", lambda r, o: None).key_by(first)
                      .process("p", [State.value("v"), State.map("m")], f))
        r = op.process(1, header(), entry(0, 1, "w") + entry(0, 2, "r"),
                       u32(1) + value("a") + state(None) + state(None))
        self.assertEqual(entries_of(r.output, 2, keyed=False)[1], [(0, 2, ("bytes", "bytes"), None)])

    def test_malformed(self):
        good_keys = keys(("a", None, None, None))
        for data, ks, index, message in (
            (entry(0, 1, "get"), good_keys[:-1], 0,
             "the buffer ends inside the tag of state `m` of key `'a'` at byte 12"),
            (entry(0, 1, "get"), good_keys + b"\x00", 0, "the keys have 1 bytes after the last key"),
            (entry(0, 1, "get"), u32(1) + value("a") + b"\x02", 0,
             "state `v` of key `'a'` has tag 2, not 0 (none) or 1 (bytes)"),
            (entry(0, 1, "get") + entry(1, 1, "get"), good_keys, 1, "the entry at byte 25 names key index 1 of 1"),
            (entry(0, 1, "get") + b"\x07" + u32(0) + i64(0), good_keys, 1, "unknown entry tag 7 at byte 25"),
            (timer(0, 1, 2), good_keys, 0, "the timer at byte 0 has time domain 2"),
            (entry(0, 1, "get"), keys(("a", row(1) + b"\x00", None, None)), 0,
             "state `v` of key `'a'` is malformed: 1 bytes after its end"),
            (entry(0, 1, "get"), keys(("a", None, None, map_state((1, row()), (1, row())))), 0,
             "state `m` of key `'a'` is malformed: the map key `1` is there twice"),
        ):
            r = self.run_(data, ks)
            self.assertEqual((r.failed.index, r.failed.message),
                             (index, "malformed batch from the host: " + message))


# Windows.

def count_add(acc, row):
    return ((acc[0] if acc else 0) + row[1],)


def count_merge(a, b):
    return (a[0] + b[0],)


def count_fire(w, acc, out):
    if w.key == "boom":
        raise sluice.RecordError("no window for boom")
    out.emit(w.key, w.start, w.end, acc[0] if acc else 0)


def window_job(params):
    j = pipeline.Job("w").side_output("late").map("split", lambda r, out: None).key_by(first)
    if params.get("function") == "process":
        return j.window("count", Windows.tumbling(10), lambda w, rows, out: out.emit(w.key, repr(rows)))
    return j.aggregate("count", Windows.session(10), count_add, count_merge, count_fire).key_by(first) \
        .map("last", lambda r, out: None)


def slots(*ss):
    """`slots := u32 n, (value key, start, end, state){n}`."""
    return u32(len(ss)) + b"".join(value(k) + i64(a) + i64(b) + state(agg) for k, a, b, agg in ss)


class WindowCalls(unittest.TestCase):
    def setUp(self):
        self.op, _ = calls(window_job)
        self.op.open([])

    def test_add_folds_rows_into_slots(self):
        ss = slots(("a", 0, 10, None), ("b", 0, 10, row(5)), ("c", 0, 10, row(1)))
        data = u32(1) + row("b", 2) + u32(0) + row("a", 1) + u32(0) + row("a", 3)
        r = self.op.window_add(1, header(), data, ss)
        self.assertIsNone(r.failed)
        self.assertEqual(r.output, b"")
        self.assertEqual(r.changes, u32(0) + u32(len(row(4))) + row(4) + u32(1) + u32(len(row(7))) + row(7))

    def test_add_failures(self):
        ss = slots(("a", 0, 10, None), ("b", 0, 10, b"\x01"))
        r = self.op.window_add(1, header(), u32(0) + row("a", 1) + u32(0) + row("a", "x"), ss)
        self.assertEqual((r.failed.index, r.failed.message[:10]), (1, "TypeError:"))
        self.assertEqual(r.changes, u32(0) + u32(len(row(1))) + row(1))
        r = self.op.window_add(1, header(), u32(1) + row("b", 1), ss)
        self.assertEqual(r.failed.message, "malformed batch from the host: the aggregate of slot 1 is not a row: "
                         "the buffer ends inside the value count of a row at byte 0")
        r = self.op.window_add(1, header(), u32(2) + row("b", 1), ss)
        self.assertEqual(r.failed.message, "malformed batch from the host: an entry names slot 2 of 2")
        r = self.op.window_add(1, header(), b"", ss + b"\x00")
        self.assertEqual((r.failed.index, r.failed.message),
                         (0, "malformed batch from the host: the slots have 1 bytes after the last slot"))

        op, _ = calls(lambda p: pipeline.Job("w").map("m", lambda r, o: None).key_by(first)
                      .aggregate("c", Windows.tumbling(5), lambda a, r: None, count_merge, count_fire))
        r = op.window_add(1, header(), u32(0) + row("a"), slots(("a", 0, 5, None)))
        self.assertEqual(r.failed.message, "TypeError: add's result must be a row (a tuple of values), not NoneType")

    def test_merge(self):
        data = u32(3) + state(row(2)) + state(row(3)) + state(None) + state(row(4)) + state(None) + state(None)
        r = self.op.window_merge(1, data)
        self.assertIsNone(r.failed)
        self.assertEqual(r.changes, u32(0) + u32(len(row(5))) + row(5) + u32(1) + u32(len(row(4))) + row(4))
        r = self.op.window_merge(1, u32(2) + state(row(2)) + state(row(3)) + state(b"\x05"))
        self.assertEqual(r.failed.index, 1)
        self.assertTrue(r.failed.message.startswith("malformed batch from the host: aggregate a of pair 1"))
        self.assertEqual(r.changes, u32(0) + u32(len(row(5))) + row(5))

    def test_fire_aggregates(self):
        data = u32(2) + value("a") + i64(0) + i64(10) + b"\x00" + state(row(3)) \
            + value("b") + i64(MIN_I64) + i64(MIN_I64) + b"\x00" + state(None)
        r = self.op.window_fire(1, header(), data)
        self.assertIsNone(r.failed)
        self.assertEqual(entries_of(r.output, 2, keyed=True), [
            [(0, 9, ("a", 0, 10, 3), "a")], [(0, MIN_I64, ("b", MIN_I64, MIN_I64, 0), "b")]])
        bad = data[:4] + value("boom") + i64(0) + i64(10) + b"\x00" + state(None)
        r = self.op.window_fire(1, header(), u32(2) + data[4:4 + len(value("a")) + 17 + len(state(row(3)))] + bad[4:])
        self.assertEqual((r.failed.index, r.failed.message), (1, "no window for boom"))
        self.assertEqual(len(entries_of(r.output, 1, keyed=True)), 1)

    def test_fire_contents(self):
        op, _ = calls(window_job)
        op.open([("function", "process")])
        data = u32(1) + value("a") + i64(0) + i64(10) + b"\x01" + u32(2) + i64(1) + row("a", 1) + i64(4) + row("a", 2)
        r = op.window_fire(1, header(), data)
        self.assertIsNone(r.failed)
        self.assertEqual(entries_of(r.output, 1, keyed=False),
                         [[(0, 9, ("a", repr([(1, ("a", 1)), (4, ("a", 2))])), None)]])
        r = op.window_fire(1, header(), u32(1) + value("a") + i64(0) + i64(10) + b"\x00" + state(None))
        self.assertEqual(r.failed.message,
                         "malformed batch from the host: stage 1 keeps rows, but window 0 holds an aggregate")
        r = op.window_fire(1, header(), data + b"\x00")
        self.assertEqual((r.failed.index, r.failed.message),
                         (0, "malformed batch from the host: the input has 1 bytes after the last window"))
        r = op.window_add(1, header(), b"", slots())
        self.assertEqual(r.failed.message, "stage 1 is not an aggregate window stage")


class Open(unittest.TestCase):
    def test_open_builds_the_job_with_the_params_or_fails(self):
        def job(params):
            if "fail" in params:
                raise ValueError("bad params")
            return parse_job(params)

        op, _ = calls(job)
        op.open([("k", "v")])
        with self.assertRaises(Err) as e:
            calls(job)[0].open([("fail", "1")])
        self.assertEqual(e.exception.value, "ValueError: bad params")
        with self.assertRaises(Err) as e:
            calls(lambda p: "not a job")[0].open([])
        self.assertEqual(e.exception.value,
                         "TypeError: the job function must return a sluice.pipeline.Job, not str")

    def test_a_job_function_that_fails_fails_the_call(self):
        def job(params):
            raise ValueError("no job")

        r = calls(job)[0].map(0, header(), row("x"))
        self.assertEqual((r.failed.index, r.failed.message), (0, "the job function failed: ValueError: no job"))

    def test_a_call_before_open_builds_the_job_without_params(self):
        seen = []

        def job(params):
            seen.append(params)
            return parse_job(params)

        op, _ = calls(job)
        self.assertIsNone(op.map(0, header(), row("a 1")).failed)
        self.assertEqual(seen, [{}])


class Text(unittest.TestCase):
    def test_parse_int_like_rust(self):
        for s, v in (("0", 0), ("+5", 5), ("-12", -12), ("9223372036854775807", 2**63 - 1),
                     ("-9223372036854775808", -(2**63)), ("007", 7)):
            self.assertEqual(sluice.parse_int(s), v)
        for s in ("", " 1", "1 ", "1_000", "\uff11", "1.0", "+", "-", "9223372036854775808", "0x10"):
            with self.assertRaises(ValueError, msg=repr(s)):
                sluice.parse_int(s)
        self.assertEqual(sluice.parse_int("18446744073709551615", unsigned=True), 2**64 - 1)
        for s in ("-1", "-0", "18446744073709551616"):
            with self.assertRaises(ValueError, msg=repr(s)):
                sluice.parse_int(s, unsigned=True)

    def test_parse_float_like_rust(self):
        for s, v in (("1", 1.0), ("1.", 1.0), (".5", 0.5), ("+1.5e3", 1500.0), ("1E-2", 0.01),
                     ("inf", float("inf")), ("-Infinity", float("-inf")), ("501", 501.0)):
            self.assertEqual(sluice.parse_float(s), v)
        self.assertNotEqual(sluice.parse_float("NaN"), sluice.parse_float("nan"))  # NaN
        for s in ("", ".", "e5", "1e", "1_0", " 1", "\uff11", "0x1p3", "infinit", "1.5f", "nan(1)"):
            with self.assertRaises(ValueError, msg=repr(s)):
                sluice.parse_float(s)

    def test_trim_like_rust(self):
        self.assertEqual(sluice.trim("\u3000 a b\t\n"), "a b")
        self.assertEqual(sluice.trim("\x1ca\x1f"), "\x1ca\x1f")


if __name__ == "__main__":
    unittest.main()
