// Tests of the helper under node (`node --test guest-sdk-js/`): the batch
// encoding against an independent encoder, record errors, the key-selector,
// the job description and the whitespace split. Every test runs twice: with
// node's TextEncoder/TextDecoder (as under StarlingMonkey) and without them
// (as under QuickJS, the engine the build uses).

import { test } from "node:test";
import assert from "node:assert/strict";

const real = await import("../sluice.js");
const { TextEncoder: TE, TextDecoder: TD } = globalThis;
delete globalThis.TextEncoder;
delete globalThis.TextDecoder;
const codec = await import("../sluice.js?without-text-codecs");
globalThis.TextEncoder = TE;
globalThis.TextDecoder = TD;

// ---- an independent encoder of `wit/sluice-stream@0.1.0/stream.wit`'s batch format

const enc = new TE();
const u32 = (n) => [n & 255, (n >> 8) & 255, (n >> 16) & 255, (n >>> 24) & 255];
const i64 = (v) => {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigInt64(0, BigInt(v), true);
  return [...b];
};
const f64 = (v) => {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setFloat64(0, v, true);
  return [...b];
};
const V = {
  null: () => [0],
  bool: (b) => [1, b ? 1 : 0],
  int: (v) => [2, ...i64(v)],
  float: (v) => [3, ...f64(v)],
  text: (s) => {
    const b = enc.encode(s);
    return [4, ...u32(b.length), ...b];
  },
  bytes: (b) => [5, ...u32(b.length), ...b],
};
const row = (...values) => [...u32(values.length), ...values.flat()];
const batch = (...lines) => new Uint8Array(lines.flatMap((l) => row(V.text(l))));
const bytes = (a) => new Uint8Array(a);

/** The expected flat-map(-keyed) output: per record, its rows (and keys). */
const records = (...recs) => bytes(recs.flatMap((rows) => [...u32(rows.length), ...rows.flat()]));

for (const [name, sdk] of [
  ["with TextEncoder", real],
  ["without TextEncoder", codec],
]) {
  const { exportJob, splitWhitespace, JobDescription, Restart, float } = sdk;

  const wordcount = exportJob({
    flatMap(line, out) {
      if (line === "ERROR") throw new Error("received the line `ERROR`");
      for (const word of splitWhitespace(line)) out.emit(word, 1);
    },
    key: (row) => row[0],
    describe: () =>
      new JobDescription("wordcount-js")
        .source("socket://localhost:9100")
        .sum(1)
        .checkpointEveryMs(1000)
        .restart(Restart.fixedDelay(3, 10_000)),
  });

  const wc = (...words) => words.map((w) => row(V.text(w), V.int(1)));
  const wck = (...words) => words.map((w) => [...row(V.text(w), V.int(1)), ...V.text(w)]);

  test(`${name}: flat-map and flat-map-keyed encode every row`, () => {
    const input = batch("to be or", "", "  not\u00a0to\u3000be\u001cx  ", "café 😀 é", "\ufeffbom\ufeff x");
    const { output, failed } = wordcount.operator.flatMap(input);
    assert.equal(failed, undefined);
    assert.deepEqual(
      bytes(output),
      records(wc("to", "be", "or"), [], wc("not", "to", "be\u001cx"), wc("café", "😀", "é"), wc("\ufeffbom\ufeff", "x")),
    );
    const keyed = wordcount.operator.flatMapKeyed(input);
    assert.deepEqual(
      bytes(keyed.output),
      records(wck("to", "be", "or"), [], wck("not", "to", "be\u001cx"), wck("café", "😀", "é"), wck("\ufeffbom\ufeff", "x")),
    );
  });

  test(`${name}: a thrown error fails its record and stops the batch`, () => {
    const { output, failed } = wordcount.operator.flatMapKeyed(batch("a b", "ERROR", "c"));
    assert.deepEqual(failed, { index: 1, message: "received the line `ERROR`" });
    assert.deepEqual(bytes(output), records(wck("a", "b")));
    const first = wordcount.operator.flatMap(batch("ERROR"));
    assert.deepEqual(first.failed, { index: 0, message: "received the line `ERROR`" });
    assert.equal(first.output.length, 0);
  });

  test(`${name}: records that are not one text value fail`, () => {
    const input = bytes([...batch("x"), ...row(V.int(3))]);
    const { failed } = wordcount.operator.flatMap(input);
    assert.deepEqual(failed, { index: 1, message: "the record is not a single text value" });
    const truncated = wordcount.operator.flatMap(batch("hello").subarray(0, 7));
    assert.equal(truncated.failed.index, 0);
    assert.match(truncated.failed.message, /malformed batch from the host: truncated/);
    const invalid = bytes([...u32(1), 4, ...u32(1), 0xff]);
    assert.deepEqual(wordcount.operator.flatMap(invalid).failed, {
      index: 0,
      message: "the record's text is not valid UTF-8",
    });
  });

  test(`${name}: values of every kind, and keys that are not a field`, () => {
    const guest = exportJob({
      flatMap(line, out) {
        out.emit(line.toUpperCase(), -5, 2 ** 40, -(2 ** 40), 1.5, float(2), 7n, true, null, undefined, bytes([1, 2]));
        out.emitRow([`${line}!`]);
      },
      key: (row) => (row.length === 1 ? float(row[0].length) : row[1] * 2),
    });
    const { output, failed } = guest.operator.flatMapKeyed(batch("ab", "é"));
    assert.equal(failed, undefined);
    const rows = (l, u) => [
      [
        ...row(V.text(u), V.int(-5), V.int(2 ** 40), V.int(-(2 ** 40)), V.float(1.5), V.float(2), V.int(7),
          V.bool(true), V.null(), V.null(), V.bytes([1, 2])),
        ...V.int(-10),
      ],
      [...row(V.text(`${l}!`)), ...V.float(`${l}!`.length)],
    ];
    assert.deepEqual(bytes(output), records(rows("ab", "AB"), rows("é", "É")));
  });

  test(`${name}: the key-selector decodes rows and encodes keys`, () => {
    const seen = [];
    const guest = exportJob({
      flatMap() {},
      key: (row) => {
        seen.push(row);
        return row[row.length - 1];
      },
    });
    const input = bytes([
      ...row(V.text("a"), V.int(1)),
      ...row(V.int(2n ** 60n)),
      ...row(V.float(2)),
      ...row(V.float(2.5)),
      ...row(V.text("ünï")),
      ...row(V.bytes([9, 8])),
      ...row(V.bool(false), V.null()),
    ]);
    const keys = guest.operator.keySelector(input);
    assert.deepEqual(
      bytes(keys),
      bytes([
        ...V.int(1),
        ...V.int(2n ** 60n),
        ...V.float(2),
        ...V.float(2.5),
        ...V.text("ünï"),
        ...V.bytes([9, 8]),
        ...V.null(),
      ]),
    );
    assert.deepEqual(seen[0], ["a", 1]);
    assert.equal(seen[1][0], 2n ** 60n);
    assert.ok(seen[2][0] instanceof sdk.Float);
    assert.equal(seen[3][0], 2.5);
    assert.deepEqual(seen[5][0], bytes([9, 8]));
    assert.deepEqual(seen[6], [false, null]);

    const failing = exportJob({
      flatMap() {},
      key: (row) => {
        if (row[0] === "bad") throw new TypeError("no key");
        return row[0];
      },
    });
    assert.throws(
      () => failing.operator.keySelector(bytes([...row(V.text("ok")), ...row(V.text("bad"))])),
      (e) => e.index === 1 && e.message === "TypeError: no key",
    );
    assert.throws(
      () => failing.operator.keySelector(bytes([...row(V.text("ok")), 1, 0, 0, 0, 9])),
      (e) => e.index === 1 && /unknown value tag 9/.test(e.message),
    );
  });

  test(`${name}: emitEach and a key field emit the same bytes as emit with a key function`, () => {
    const lines = ["to be or not to be", "", "  not\u00a0to\u3000be\u001cx  ", "café 😀 é", "be be be"];
    const input = batch(...lines);
    const each = (key) =>
      exportJob({
        flatMap(line, out) {
          if (line === "ERROR") throw new Error("received the line `ERROR`");
          out.emitEach(splitWhitespace(line), 1);
        },
        key,
      });
    const emitWithField = exportJob({
      flatMap(line, out) {
        for (const word of splitWhitespace(line)) out.emit(word, 1);
      },
      key: 0,
    });
    const want = wordcount.operator.flatMap(input);
    const wantKeyed = wordcount.operator.flatMapKeyed(input);
    for (const guest of [each(0), each((row) => row[0]), emitWithField]) {
      // Twice: the second batch finds every row kept.
      for (let i = 0; i < 2; i++) {
        assert.deepEqual(bytes(guest.operator.flatMap(input).output), bytes(want.output));
        assert.deepEqual(bytes(guest.operator.flatMapKeyed(input).output), bytes(wantKeyed.output));
      }
    }
    // A failing record is pinned; the records before it keep their rows.
    const failed = each(0).operator.flatMapKeyed(batch("a b", "ERROR", "c"));
    assert.deepEqual(failed.failed, { index: 1, message: "received the line `ERROR`" });
    assert.deepEqual(bytes(failed.output), records(wck("a", "b")));
  });

  test(`${name}: emitEach keeps values of every kind apart, and fails whole`, () => {
    const rests = [[1], [true], [float(1)], [-0], [0], ["1"], [null], [undefined], [1n], [bytes([1])], ["k", 7]];
    const ref = (key) =>
      exportJob({
        flatMap(line, out) {
          for (const rest of rests) for (const item of ["w", 2, "w"]) out.emit(item, ...rest);
        },
        key,
      });
    const each = (key) =>
      exportJob({
        flatMap(line, out) {
          for (const rest of rests) out.emitEach(["w", 2, "w"], ...rest);
        },
        key,
      });
    for (const key of [0, 1]) {
      const got = each(key);
      const want = ref(key);
      for (let i = 0; i < 2; i++) {
        assert.deepEqual(bytes(got.operator.flatMap(batch("x")).output), bytes(want.operator.flatMap(batch("x")).output));
        assert.deepEqual(bytes(got.operator.flatMapKeyed(batch("x")).output), bytes(want.operator.flatMapKeyed(batch("x")).output));
      }
    }
    const keyAt2 = exportJob({ flatMap: (line, out) => out.emitEach(line.split(" "), "k", 7), key: 2 });
    assert.deepEqual(
      bytes(keyAt2.operator.flatMapKeyed(batch("a b")).output),
      records([
        [...row(V.text("a"), V.text("k"), V.int(7)), ...V.int(7)],
        [...row(V.text("b"), V.text("k"), V.int(7)), ...V.int(7)],
      ]),
    );
    const tooFar = exportJob({ flatMap: (line, out) => out.emitEach([line], 1), key: 2 });
    assert.deepEqual(tooFar.operator.flatMapKeyed(batch("x")).failed, {
      index: 0,
      message: "RangeError: the key is field 2, but the row has 2 values",
    });
    const bad = exportJob({
      flatMap(line, out) {
        out.emit("before", 1);
        try {
          out.emitEach(["ok", {}], 1);
        } catch {
          // none of its rows were emitted
        }
      },
      key: 0,
    });
    assert.deepEqual(bytes(bad.operator.flatMapKeyed(batch("x")).output), records(wck("before")));
    assert.throws(() => exportJob({ flatMap() {}, key: "word" }), /a function of the row, or the index of its field/);
    assert.throws(() => exportJob({ flatMap() {}, key: -1 }), /a function of the row, or the index of its field/);
  });

  test(`${name}: the rows emitEach keeps stay bounded`, () => {
    const guest = exportJob({ flatMap: (line, out) => out.emitEach(line.split(" "), 1), key: 0 });
    for (let n = 0; n < 3; n++) {
      const lines = Array.from({ length: 500 }, (_, i) =>
        Array.from({ length: 100 }, (_, j) => `w${n}-${i}-${j}-${"x".repeat(40)}`).join(" "),
      );
      const { output, failed } = guest.operator.flatMapKeyed(batch(...lines));
      assert.equal(failed, undefined);
      assert.deepEqual(bytes(output), records(...lines.map((l) => wck(...l.split(" ")))));
    }
    const { RowCache, MAX_BYTES, MAX_SHAPES } = sdk.__internal;
    const cache = new RowCache(0);
    const shape = cache.shape([1]);
    for (let i = 0; i < 200_000; i++) shape.encode(`word-${i}-${"x".repeat(40)}`);
    assert.ok(cache.bytes <= MAX_BYTES, `${cache.bytes} bytes kept`);
    assert.ok(shape.cache.size < 200_000 && shape.cache.size <= MAX_BYTES / 100, `${shape.cache.size} rows kept`);
    for (let i = 0; i < 2 * MAX_SHAPES; i++) cache.shape([`rest-${i}`]);
    assert.ok(cache.shapes.size <= MAX_SHAPES);
    const long = "x".repeat(10_000);
    cache.shape([1]).encode(long);
    assert.equal(cache.shape([1]).cache.has(long), false);
  });

  test(`${name}: the output buffer grows for long lines and many rows`, () => {
    const long = "x".repeat(100_000);
    const many = Array.from({ length: 20_000 }, (_, i) => `w${i % 100}`).join(" ");
    const { output, failed } = wordcount.operator.flatMapKeyed(batch(long, many, "zürich".repeat(5000)));
    assert.equal(failed, undefined);
    assert.deepEqual(
      bytes(output),
      records(wck(long), wck(...many.split(" ")), wck("zürich".repeat(5000))),
    );
  });

  test(`${name}: open and describe`, () => {
    assert.deepEqual(wordcount.job.describe([]), {
      name: "wordcount-js",
      source: "socket://localhost:9100",
      aggregation: { kind: "sum", field: 1 },
      checkpointIntervalMs: 1000,
      restart: { tag: "fixed-delay", val: { attempts: 3, delayMs: 10000 } },
    });
    wordcount.operator.open([["a", "b"]]);
    const guest = exportJob({
      flatMap() {},
      key: () => null,
      open: (params) => {
        if (params.get("fail") !== undefined) throw new Error(`asked to fail: ${params.get("fail")}`);
      },
      describe: (params) => new JobDescription(params.get("name")).sink("print").noCheckpoints().restart(Restart.none()),
    });
    guest.operator.open([["x", "1"]]);
    assert.throws(() => guest.operator.open([["fail", "1"], ["fail", "2"]]), (e) => e === "asked to fail: 2");
    assert.deepEqual(guest.job.describe([["name", "n"]]), {
      name: "n",
      sink: "print",
      checkpointIntervalMs: 0,
      restart: { tag: "none" },
    });
    assert.deepEqual(exportJob({ flatMap() {}, key: () => null }).job.describe([]), {});
  });

  test(`${name}: splitWhitespace matches Rust's split_whitespace`, () => {
    // Unicode White_Space, as Rust's char::is_whitespace.
    const white = new Set([
      0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x20, 0x85, 0xa0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005,
      0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000,
    ]);
    for (let cp = 0; cp < 0x10000; cp++) {
      if (cp >= 0xd800 && cp < 0xe000) continue;
      const c = String.fromCharCode(cp);
      assert.deepEqual(splitWhitespace(`a${c}b`), white.has(cp) ? ["a", "b"] : [`a${c}b`], `U+${cp.toString(16)}`);
    }
    assert.deepEqual(splitWhitespace(""), []);
    assert.deepEqual(splitWhitespace(" \t\n "), []);
    assert.deepEqual(splitWhitespace("  a  b😀c  "), ["a", "b😀c"]);
  });
}

test("the clock is refused with an error, not a trap", () => {
  assert.throws(() => Date.now(), /no clock/);
  assert.throws(() => new Date(), /no clock/);
  assert.equal(new Date(0).getTime(), 0);
  assert.throws(() => performance.now(), /no clock/);
});
