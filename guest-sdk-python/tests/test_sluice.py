"""Unit tests of the SDK on the host's CPython, with the bindings componentize-py
generates for the WIT. Run them with

    python3 -m unittest discover -s guest-sdk-python/tests

after one build (which installs componentize-py into .tools/python/venv).
"""

import os
import random
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
from sluice import _codec  # noqa: E402

_bindings = None


def setUpModule():
    global _bindings
    tool = shutil.which("componentize-py") or os.path.join(
        ROOT, ".tools", "python", "venv", "bin", "componentize-py"
    )
    if not os.path.exists(tool):
        raise unittest.SkipTest("componentize-py not found: run examples/wordcount-python/build once")
    _bindings = tempfile.mkdtemp(prefix="sluice-bindings-")
    subprocess.run(
        [tool, "-q", "-d", os.path.join(ROOT, "wit", "sluice-stream@0.1.0"), "-w", "stream-job", "bindings", _bindings],
        check=True,
    )
    sys.path.insert(0, _bindings)


def tearDownModule():
    if _bindings:
        shutil.rmtree(_bindings, ignore_errors=True)


RUST_WHITE_SPACE = set(
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


def reference_split(text):
    words, word = [], []
    for c in text:
        if c in RUST_WHITE_SPACE:
            if word:
                words.append("".join(word))
                word = []
        else:
            word.append(c)
    if word:
        words.append("".join(word))
    return words


def batch(*lines):
    out = bytearray()
    for line in lines:
        b = line.encode() if isinstance(line, str) else line
        out += struct.pack("<IBI", 1, 4, len(b)) + b
    return bytes(out)


def text(s):
    b = s.encode()
    return struct.pack("<BI", 4, len(b)) + b


def int_(i):
    return struct.pack("<Bq", 2, i)


def rows_of(output, keyed):
    """Decodes a batch-result output into [[row, ...] per record] (with keys)."""
    records, pos = [], 0
    while pos < len(output):
        (count,) = struct.unpack_from("<I", output, pos)
        pos += 4
        rows = []
        for _ in range(count):
            row, pos = _codec.read_row(output, pos)
            if keyed:
                k, pos = _codec.read_value(output, pos)
                row = (row, k)
            rows.append(row)
        records.append(rows)
    return records


def wordcount(line, out):
    if line == "ERROR":
        raise sluice.RecordError("received the line `ERROR`")
    for word in sluice.split_whitespace(line):
        out.emit(word, 1)


def first(row):
    return row[0]


class SplitWhitespace(unittest.TestCase):
    def test_matches_rust_on_every_kind_of_space(self):
        alphabet = list(RUST_WHITE_SPACE) + list("\x1c\x1d\x1e\x1f\u200b\u180e\ufeffab\u00e9\u65e5\U0001f600")
        rng = random.Random(7)
        for _ in range(5000):
            s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
            self.assertEqual(sluice.split_whitespace(s), reference_split(s), repr(s))

    def test_plain(self):
        self.assertEqual(sluice.split_whitespace("  to be\tor  not "), ["to", "be", "or", "not"])
        self.assertEqual(sluice.split_whitespace(""), [])
        self.assertEqual(sluice.split_whitespace("a\x1cb c"), ["a\x1cb", "c"])


class FlatMap(unittest.TestCase):
    def setUp(self):
        self.Operator, self.Job = sluice.export(wordcount, first)
        self.op = self.Operator()

    def test_encoding_is_exact(self):
        r = self.op.flat_map(batch("to be", ""))
        self.assertIsNone(r.failed)
        row = lambda w: struct.pack("<I", 2) + text(w) + int_(1)  # noqa: E731
        expected = struct.pack("<I", 2) + row("to") + row("be") + struct.pack("<I", 0)
        self.assertEqual(r.output, expected)

    def test_keyed_appends_the_key(self):
        r = self.op.flat_map_keyed(batch("to be", "\u00e9t\u00e9"))
        self.assertIsNone(r.failed)
        self.assertEqual(
            rows_of(r.output, keyed=True),
            [[(("to", 1), "to"), (("be", 1), "be")], [(("\u00e9t\u00e9", 1), "\u00e9t\u00e9")]],
        )

    def test_a_failing_record_stops_the_batch(self):
        for call, keyed in ((self.op.flat_map, False), (self.op.flat_map_keyed, True)):
            r = call(batch("a b", "c", "ERROR", "d"))
            self.assertEqual(r.failed.index, 2)
            self.assertEqual(r.failed.message, "received the line `ERROR`")
            self.assertEqual(len(rows_of(r.output, keyed)), 2)

    def test_any_exception_fails_the_record(self):
        def bad(line, out):
            out.emit("partial", 1)
            return {}[line]

        Operator, _ = sluice.export(bad, first)
        r = Operator().flat_map(batch("x"))
        self.assertEqual((r.failed.index, r.failed.message), (0, "KeyError: 'x'"))
        self.assertEqual(r.output, b"")

    def test_bad_input_records(self):
        r = self.op.flat_map(batch("ok", b"\xff\xfe"))
        self.assertEqual((r.failed.index, r.failed.message), (1, "the record's text is not valid UTF-8"))
        two = struct.pack("<I", 2) + text("a") + int_(3)
        r = self.op.flat_map(batch("ok") + two)
        self.assertEqual((r.failed.index, r.failed.message), (1, "the record is not a single text value"))
        r = self.op.flat_map(batch("ok")[:-1])
        self.assertEqual(r.failed.index, 0)
        self.assertTrue(r.failed.message.startswith("malformed batch from the host"), r.failed.message)


def words(line):
    if line == "ERROR":
        raise sluice.RecordError("received the line `ERROR`")
    return sluice.split_whitespace(line)


def each_wordcount(line, out):
    if line == "ERROR":
        raise sluice.RecordError("received the line `ERROR`")
    out.emit_each(sluice.split_whitespace(line), 1)


class EmitEach(unittest.TestCase):
    """`out.emit_each`, `export_each` and keys given as a field index emit
    exactly what `out.emit` per row with a key function does."""

    LINES = ("to be or not to be", "", "\u00e9t\u00e9 to", "a\x1cb  c", "be be be")

    def reference(self, lines):
        op = sluice.export(wordcount, first)[0]()
        return op.flat_map(batch(*lines)), op.flat_map_keyed(batch(*lines))

    def test_the_same_bytes_as_emit_per_row(self):
        plain, keyed = self.reference(self.LINES)
        for export in (
            lambda: sluice.export(each_wordcount, first),
            lambda: sluice.export(each_wordcount, 0),
            lambda: sluice.export(wordcount, 0),
            lambda: sluice.export_each(words, 1, key=0),
            lambda: sluice.export_each(words, 1, key=first),
        ):
            op = export()[0]()
            # Twice: the second batch finds every row kept.
            for _ in range(2):
                r = op.flat_map(batch(*self.LINES))
                self.assertIsNone(r.failed)
                self.assertEqual(r.output, plain.output)
                r = op.flat_map_keyed(batch(*self.LINES))
                self.assertIsNone(r.failed)
                self.assertEqual(r.output, keyed.output)

    def test_equal_values_of_other_types_are_not_confused(self):
        def fm(line, out):
            for v in (1, True, 1.0, -0.0, 0.0, 0, False, "1", b"1"):
                out.emit_each(["w", 2], v)

        def ref(line, out):
            for v in (1, True, 1.0, -0.0, 0.0, 0, False, "1", b"1"):
                out.emit("w", v)
                out.emit(2, v)

        for key in (0, 1):
            got = sluice.export(fm, key)[0]()
            want = sluice.export(ref, key)[0]()
            for _ in range(2):
                self.assertEqual(got.flat_map_keyed(batch("x")).output,
                                 want.flat_map_keyed(batch("x")).output)
                self.assertEqual(got.flat_map(batch("x")).output, want.flat_map(batch("x")).output)

    def test_the_key_field_may_be_any_field(self):
        op = sluice.export(lambda line, out: out.emit_each(line.split(), "k", 7), 2)[0]()
        r = op.flat_map_keyed(batch("a b"))
        self.assertEqual(rows_of(r.output, keyed=True), [[(("a", "k", 7), 7), (("b", "k", 7), 7)]])

    def test_a_key_field_out_of_range_fails_the_record(self):
        for fm in (lambda line, out: out.emit_each(["a"], 1), lambda line, out: out.emit("a", 1)):
            op = sluice.export(fm, 2)[0]()
            r = op.flat_map_keyed(batch("x"))
            self.assertEqual(r.failed.index, 0)
            self.assertEqual(r.failed.message, "IndexError: the key is field 2, but the row has 2 values")
        op = sluice.export_each(lambda line: [line], key=1)[0]()
        r = op.flat_map_keyed(batch("x"))
        self.assertEqual(r.failed.message, "IndexError: the key is field 1, but the row has 1 values")

    def test_a_key_must_be_a_function_or_an_index(self):
        with self.assertRaisesRegex(TypeError, "a key selector must be a function or a field index"):
            sluice.export(wordcount, "word")
        with self.assertRaisesRegex(ValueError, "field index must be 0 or more"):
            sluice.export_each(words, 1, key=-1)

    def test_a_failing_record_is_pinned_and_the_records_before_it_kept(self):
        op = sluice.export_each(words, 1, key=0)[0]()
        for call, keyed in ((op.flat_map, False), (op.flat_map_keyed, True)):
            r = call(batch("a b", "c", "ERROR", "d"))
            self.assertEqual((r.failed.index, r.failed.message), (2, "received the line `ERROR`"))
            want = self.reference(("a b", "c"))[keyed].output
            self.assertEqual(r.output, want)

    def test_a_bad_item_fails_its_record_and_emits_none_of_its_rows(self):
        def items(line):
            return ["ok", [1]] if line == "bad" else [line]

        op = sluice.export_each(items, 1, key=0)[0]()
        r = op.flat_map_keyed(batch("a", "bad", "c"))
        self.assertEqual(r.failed.index, 1)
        self.assertEqual(r.failed.message,
                         "TypeError: a row value must be None, bool, int, float, str or bytes, not list")
        self.assertEqual(rows_of(r.output, keyed=True), [[(("a", 1), "a")]])

    def test_other_iterables_long_lists_and_bad_records_take_the_slow_path(self):
        cases = {
            "a generator": (lambda line: (w for w in line.split()), batch("a b", "c")),
            "5,000 items": (lambda line: ["w"] * 5000 if line == "many" else [line], batch("x", "many")),
            "numbers": (lambda line: [1, 2.5, None, b"b"], batch("x")),
        }
        for what, (items, records) in cases.items():
            def fm(line, out, items=items):
                for item in items(line):
                    out.emit(item, 1)

            want = sluice.export(fm, 0)[0]().flat_map_keyed(records)
            got = sluice.export_each(items, 1, key=0)[0]().flat_map_keyed(records)
            self.assertIsNone(got.failed, what)
            self.assertEqual(got.output, want.output, what)
        op = sluice.export_each(words, 1, key=0)[0]()
        r = op.flat_map_keyed(batch("ok", b"\xff\xfe"))
        self.assertEqual((r.failed.index, r.failed.message), (1, "the record's text is not valid UTF-8"))
        self.assertEqual(rows_of(r.output, keyed=True), [[(("ok", 1), "ok")]])

    def test_export_each_takes_describe_and_open(self):
        from wit_world.imports import types as t

        opened = []

        def describe(params):
            return sluice.JobDescription(params["name"]).sum(1)

        Operator, Job = sluice.export_each(words, 1, key=0, describe=describe, open=opened.append)
        d = Job().describe([("name", "each")])
        self.assertEqual((d.name, d.aggregation), ("each", t.Aggregation(t.AggregateKind.SUM, 1)))
        Operator().open([("a", "1")])
        self.assertEqual(opened, [{"a": "1"}])

    def test_the_kept_rows_stay_bounded(self):
        from sluice import _each

        cache = _each.RowCache(True, 0)
        shape = cache.shape((1,))
        n = 0
        for i in range(20):
            items = [f"word-{i}-{j}-" + "x" * 40 for j in range(10_000)]
            rows = cache.encode(shape, items)
            self.assertEqual(rows[-1], _codec_row((items[-1], 1)) + _codec_value(items[-1]))
            n += len(items)
            self.assertLessEqual(cache._bytes, _each.MAX_BYTES)
            self.assertLessEqual(len(shape[0]), _each.MAX_BYTES // 100)
        self.assertGreater(n * 100, _each.MAX_BYTES)  # it did start over
        for v in range(2 * _each.MAX_SHAPES):
            cache.shape((f"rest-{v}",))
        self.assertLessEqual(len(cache._shapes), _each.MAX_SHAPES)
        # A long word is encoded every time, not kept.
        long = "x" * 10_000
        cache.encode(shape, [long])
        self.assertNotIn(long, shape[0])


def _codec_row(values):
    b = bytearray()
    _codec.put_row(b, values)
    return bytes(b)


class Values(unittest.TestCase):
    def roundtrip(self, *values):
        got = []

        def fm(line, out):
            out.emit(*values)

        def key(row):
            got.append(row)
            return row[-1]

        Operator, _ = sluice.export(fm, key)
        op = Operator()
        r = op.flat_map(batch("x"))
        self.assertIsNone(r.failed, r.failed)
        [[row]] = rows_of(r.output, keyed=False)
        r = op.flat_map_keyed(batch("x"))
        [[(keyed_row, k)]] = rows_of(r.output, keyed=True)
        self.assertEqual(keyed_row, row)
        self.assertEqual(k, row[-1])
        # key-selector on the decoded rows gives the same keys.
        rows = bytearray()
        for v in (row, row):
            rows += struct.pack("<I", len(v))
            for x in v:
                _codec.put_value(rows, x)
        keys = op.key_selector(bytes(rows))
        self.assertEqual(keys, _codec_value(row[-1]) * 2)
        return row

    def test_all_kinds(self):
        row = self.roundtrip(None, True, False, 0, -17, 1023, 1024, -(2**63), 2**63 - 1, 1.5,
                             float("inf"), "", "h\u00e9", b"\x00\xff", bytearray(b"ab"),
                             memoryview(b"cd"))
        self.assertEqual(
            row,
            (None, True, False, 0, -17, 1023, 1024, -(2**63), 2**63 - 1, 1.5, float("inf"), "",
             "h\u00e9", b"\x00\xff", b"ab", b"cd"),
        )
        self.assertIs(type(row[1]), bool)

    def test_subclasses(self):
        import enum

        class Color(enum.IntEnum):
            RED = 2

        class Name(str):
            pass

        row = self.roundtrip(Color.RED, Name("n"))
        self.assertEqual(row, (2, "n"))
        self.assertIs(type(row[0]), int)

    def test_unsupported_values_fail_the_record(self):
        for value, message in (
            (2**63, "OverflowError: the int 9223372036854775808 does not fit in 64 bits"),
            ([1], "TypeError: a row value must be None, bool, int, float, str or bytes, not list"),
            ("\ud800", "UnicodeEncodeError"),
        ):
            Operator, _ = sluice.export(lambda line, out: out.emit(value), first)
            r = Operator().flat_map(batch("x"))
            self.assertTrue(r.failed.message.startswith(message), r.failed.message)


def _codec_value(v):
    b = bytearray()
    _codec.put_value(b, v)
    return bytes(b)


class KeySelector(unittest.TestCase):
    def test_failure_is_a_record_error(self):
        from componentize_py_types import Err

        def key(row):
            if row[0] == "boom":
                raise sluice.RecordError("no key for boom")
            return row[0]

        Operator, _ = sluice.export(wordcount, key)
        rows = bytearray()
        for w in ("a", "boom"):
            rows += struct.pack("<I", 1) + text(w)
        with self.assertRaises(Err) as e:
            Operator().key_selector(bytes(rows))
        self.assertEqual((e.exception.value.index, e.exception.value.message), (1, "no key for boom"))


class Describe(unittest.TestCase):
    def test_wordcount(self):
        def describe(params):
            return (sluice.JobDescription("wordcount-python").source("socket://localhost:9100")
                    .sum(1).checkpoint_every_ms(1000).restart(sluice.Restart.fixed_delay(3, 10_000)))

        from wit_world.imports import types as t

        _, Job = sluice.export(wordcount, first, describe=describe)
        d = Job().describe([])
        self.assertEqual(
            d,
            t.JobDescription(
                name="wordcount-python", source="socket://localhost:9100", sink=None,
                aggregation=t.Aggregation(t.AggregateKind.SUM, 1), checkpoint_interval_ms=1000,
                restart=t.RestartStrategy_FixedDelay(t.FixedDelay(3, 10_000)), parallelism=None,
                limits=None,
            ),
        )

    def test_everything_and_params(self):
        from wit_world.imports import types as t

        def describe(params):
            return (sluice.JobDescription(params["name"]).sink("discard").max(2).no_checkpoints()
                    .restart(sluice.Restart.failure_rate(3, 60_000, 500)).parallelism(4)
                    .limits(memory_bytes=1 << 27, max_rows_per_record=10))

        _, Job = sluice.export(wordcount, first, describe=describe)
        d = Job().describe([("name", "a"), ("name", "b")])
        self.assertEqual(d.name, "b")
        self.assertEqual(d.aggregation, t.Aggregation(t.AggregateKind.MAX, 2))
        self.assertEqual(d.checkpoint_interval_ms, 0)
        self.assertEqual(d.restart, t.RestartStrategy_FailureRate(t.FailureRate(3, 60_000, 500)))
        self.assertEqual(d.limits, t.Limits(1 << 27, None, 10, None))
        self.assertEqual(d.parallelism, 4)

    def test_no_describe(self):
        _, Job = sluice.export(wordcount, first)
        d = Job().describe([])
        self.assertEqual(d.name, None)
        self.assertEqual(d.restart, None)


class Open(unittest.TestCase):
    def test_open_gets_params_and_may_fail(self):
        from componentize_py_types import Err

        seen = []

        def open_(params):
            seen.append(params)
            if "fail" in params:
                raise ValueError("bad params")

        Operator, _ = sluice.export(wordcount, first, open=open_)
        Operator().open([("k", "v")])
        self.assertEqual(seen, [{"k": "v"}])
        with self.assertRaises(Err) as e:
            Operator().open([("fail", "1")])
        self.assertEqual(e.exception.value, "ValueError: bad params")


if __name__ == "__main__":
    unittest.main()
