// Tests of the 0.2.0 API (`pipeline.js`) under node: every call's input and
// output encoding (`wit/sluice-stream@0.2.0/stream.wit`) against an
// independent encoder, state changes and timers, entries that fail and what
// they undo, malformed buffers from the host, the job description, the text
// helpers and the fraud example. `pipeline-without-text-codecs.test.js`
// runs the same tests without TextEncoder/TextDecoder (as under QuickJS,
// the engine the build uses).

import { test } from "node:test";
import assert from "node:assert/strict";

const sdk = await import("../pipeline.js");
const fraud = await import("../../examples/fraud-js/fraud.js");
const name = typeof TextEncoder === "function" ? "with TextEncoder" : "without TextEncoder";
const { exportPipeline, Job, State, Windows, Time, Restart, float, asInt, asFloat } = sdk;

// ---- an independent encoder of stream.wit's formats

const utf8 = (s) => [...Buffer.from(s, "utf8")];
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
    const b = utf8(s);
    return [4, ...u32(b.length), ...b];
  },
  bytes: (b) => [5, ...u32(b.length), ...b],
};
const row = (...values) => [...u32(values.length), ...values.flat()];
const bytes = (...parts) => new Uint8Array(parts.flatMap((p) => (p instanceof Uint8Array ? [...p] : p)).flat(Infinity));
/** `state := 0x00 | 0x01 u32 len, bytes`. */
const state = (b) => (b === null ? [0] : [1, ...u32(b.length), ...b]);
const listState = (...rows) => [...u32(rows.length), ...rows.flat()];
const mapState = (...entries) => [...u32(entries.length), ...entries.flat(2)];
/** One emitted row: `u8 tag, timestamp, row [, key]`. */
const emitted = (tag, ts, r, key = []) => [tag, ...i64(ts), ...r, ...key];
/** An output: one list of emitted rows per entry. */
const lists = (...entries) => bytes(entries.flatMap((rows) => [...u32(rows.length), ...rows.flat()]));
const header = (processingTime = 5000, watermark = -(2 ** 63)) => ({ processingTime, watermark });
const ok = (r) => {
  assert.equal(r.failed, undefined, r.failed && r.failed.message);
  return r;
};
const same = (actual, expected) => assert.deepEqual(new Uint8Array(actual), new Uint8Array(expected));

// ---- map

test(`${name}: map stages encode rows with their output tag, timestamp and next key`, () => {
  const guest = exportPipeline(() =>
    new Job("j")
      .sideOutput("bad")
      .map("split", (r, out) => {
        if (r.text === "") return out.side("bad", "empty", r.timestamp);
        for (const w of r.text.split(" ")) out.emit(w, 1);
      })
      .keyBy((row) => row[0])
      .map("again", (r, out) => {
        out.emitAt(r.timestamp + 1, r.row[0], float(r.row[1]));
        out.emitAt(2n ** 62n, r.timestamp);
        out.emitRow([r.text.length]);
      })
      .map("last", () => {}),
  );
  guest.operator.open([]);
  const first = ok(guest.operator.map(0, header(7000), bytes(row(V.text("to be")), row(V.text("")), row(V.text("é")))));
  same(
    first.output,
    lists(
      [emitted(0, 7000, row(V.text("to"), V.int(1)), V.text("to")), emitted(0, 7000, row(V.text("be"), V.int(1)), V.text("be"))],
      [emitted(1, 7000, row(V.text("empty"), V.int(7000)))],
      [emitted(0, 7000, row(V.text("é"), V.int(1)), V.text("é"))],
    ),
  );
  same(first.changes, []);
  // A later stage's input carries timestamps; the stage after it is not keyed.
  const second = ok(guest.operator.map(1, header(), bytes(i64(-3), row(V.text("ab"), V.int(2)))));
  same(
    second.output,
    lists([
      emitted(0, -2, row(V.text("ab"), V.float(2))),
      emitted(0, 2n ** 62n, row(V.int(-3))),
      emitted(0, -3, row(V.int(2))),
    ]),
  );
  same(ok(guest.operator.map(1, header(), bytes())).output, []);
});

test(`${name}: a map function that throws fails its entry; the entries before it keep their output`, () => {
  const guest = exportPipeline(() =>
    new Job("j").map("m", (r, out) => {
      out.emit(r.text);
      if (r.text === "boom") throw new TypeError("went boom");
      if (r.text === "late") out.emitAt(1.5, "x");
      if (r.text === "side") out.side("nope", 1);
      if (r.text === "obj") out.emit({});
    }),
  );
  const r = guest.operator.map(0, header(1), bytes(row(V.text("a")), row(V.text("boom")), row(V.text("c"))));
  assert.deepEqual(r.failed, { index: 1, message: "TypeError: went boom" });
  same(r.output, lists([emitted(0, 1, row(V.text("a")))]));
  assert.match(guest.operator.map(0, header(), bytes(row(V.text("late")))).failed.message, /RangeError: a timestamp is an integer/);
  assert.equal(
    guest.operator.map(0, header(), bytes(row(V.text("side")))).failed.message,
    "there is no side output named `nope`; declare it with Job.sideOutput",
  );
  assert.equal(guest.operator.map(0, header(), bytes(row(V.text("obj")))).failed.message, "TypeError: cannot send an object (Object) as a Sluice value");
  // A throw that is not an Error.
  const strings = exportPipeline(() =>
    new Job("j").map("m", () => {
      throw "plain";
    }),
  );
  assert.deepEqual(strings.operator.map(0, header(), bytes(row(V.text("x")))).failed, { index: 0, message: "plain" });
});

test(`${name}: malformed map input fails the entry it is in`, () => {
  const guest = exportPipeline(() => new Job("j").map("m", (r, out) => out.emit(r.text)).map("n", (r, out) => out.emit(r.timestamp)));
  const truncated = guest.operator.map(0, header(), bytes(row(V.text("ok")), row(V.text("hello")).slice(0, 7)));
  assert.equal(truncated.failed.index, 1);
  assert.match(truncated.failed.message, /^malformed batch from the host: truncated batch at byte \d+$/);
  same(truncated.output, lists([emitted(0, 5000, row(V.text("ok")))]));
  const invalid = guest.operator.map(0, header(), bytes(u32(1), 4, u32(1), 0xff));
  assert.match(invalid.failed.message, /malformed batch from the host: text value that is not valid UTF-8 at byte 4/);
  assert.match(guest.operator.map(0, header(), bytes(u32(1), 9)).failed.message, /unknown value tag 9/);
  assert.match(guest.operator.map(1, header(), bytes(i64(1).slice(0, 5))).failed.message, /truncated/);
  // A first stage's record need not be text: `text` is then "".
  same(ok(guest.operator.map(0, header(), bytes(row(V.int(4))))).output, lists([emitted(0, 5000, row(V.text("")))]));
  assert.deepEqual(guest.operator.map(2, header(), bytes()).failed, { index: 0, message: "RangeError: the job has no stage 2" });
  const processes = exportPipeline(() => new Job("j").map("m", () => {}).keyBy(() => 1).process("p", [], () => {}));
  assert.deepEqual(processes.operator.map(1, header(), bytes()).failed, { index: 0, message: "TypeError: stage 1 is not a map stage" });
});

// ---- process

/** A process stage over states `v` (value), `l` (list) and `m` (map); `f` runs per event. */
const processGuest = (f, next = false) =>
  exportPipeline(() => {
    const j = new Job("p")
      .map("m", () => {})
      .keyBy((row) => row[0])
      .process("p", [State.value("v"), State.list("l"), State.map("m").ttlMs(10)], f);
    return next ? j.keyBy((row) => row.length).map("after", () => {}) : j;
  }).operator;

const rowEntry = (k, ts, r) => [0, ...u32(k), ...i64(ts), ...r];
const timerEntry = (k, ts, domain) => [1, ...u32(k), ...i64(ts), domain];
const keys = (...ks) => bytes(u32(ks.length), ks.flat());
const setChange = (k, s, b) => [0, ...u32(k), ...u32(s), ...u32(b.length), ...b];
const clearChange = (k, s) => [1, ...u32(k), ...u32(s)];
const timerChange = (op, k, domain, at) => [op, ...u32(k), domain, ...i64(at)];

test(`${name}: process ships each key's states in and returns what changed`, () => {
  const seen = [];
  const op = processGuest((ctx, event, out) => {
    seen.push([ctx.key, event.type, ctx.timestamp, ctx.watermark, ctx.processingTime]);
    if (event.type === "timer") {
      out.emit(ctx.key, event.time, event.at);
      ctx.clear("l");
      return;
    }
    const [, amount] = event.row;
    out.emit(ctx.key, ctx.value(0)?.[0] ?? null, ctx.list("l").length, ctx.entries(2).length);
    ctx.set("v", [amount]);
    ctx.push(1, [amount, event.timestamp]);
    ctx.put("m", ctx.key, [amount]);
    ctx.setTimer(Time.Event, event.timestamp + 10);
    ctx.deleteTimer(Time.Processing, 99);
  });
  const input = bytes(rowEntry(1, 100, row(V.text("b"), V.int(7))), rowEntry(0, 200, row(V.text("a"), V.int(8))), timerEntry(1, 300, 1));
  const ks = keys(
    [...V.text("a"), ...state(row(V.int(1))), ...state(listState(row(V.int(2)), row(V.int(3)))), ...state(mapState([V.text("x"), row()]))],
    [...V.text("b"), ...state(null), ...state(null), ...state(null)],
  );
  const r = ok(op.process(1, header(50, 40), input, ks));
  same(
    r.output,
    lists(
      [emitted(0, 100, row(V.text("b"), V.null(), V.int(0), V.int(0)))],
      [emitted(0, 200, row(V.text("a"), V.int(1), V.int(2), V.int(1)))],
      [emitted(0, 300, row(V.text("b"), V.text("processing"), V.int(300)))],
    ),
  );
  same(
    r.changes,
    bytes(
      setChange(0, 0, row(V.int(8))),
      setChange(0, 1, listState(row(V.int(2)), row(V.int(3)), row(V.int(8), V.int(200)))),
      setChange(0, 2, mapState([V.text("x"), row()], [V.text("a"), row(V.int(8))])),
      setChange(1, 0, row(V.int(7))),
      clearChange(1, 1),
      setChange(1, 2, mapState([V.text("b"), row(V.int(7))])),
      timerChange(2, 1, 0, 110),
      timerChange(3, 1, 1, 99),
      timerChange(2, 0, 0, 210),
      timerChange(3, 0, 1, 99),
    ),
  );
  assert.deepEqual(seen, [
    ["b", "row", 100, 40, 50],
    ["a", "row", 200, 40, 50],
    ["b", "timer", 300, 40, 50],
  ]);
  // The next stage is keyed: every main row carries its key.
  const keyed = processGuest((ctx, event, out) => out.emit(1, 2), true);
  same(
    ok(keyed.process(1, header(), bytes(timerEntry(0, 5, 0)), keys([...V.null(), 0, 0, 0]))).output,
    lists([emitted(0, 5, row(V.int(1), V.int(2)), V.int(2))]),
  );
  // No entries, no keys.
  same(ok(op.process(1, header(), bytes(), keys())).output, []);
});

test(`${name}: a process function that throws fails its entry and undoes that entry's writes`, () => {
  const op = processGuest((ctx, event, out) => {
    out.emit(event.row[1]);
    ctx.push("l", [event.row[1]]);
    ctx.set("v", [event.row[1]]);
    ctx.setTimer(Time.Processing, 1);
    if (event.row[1] === "bad") {
      ctx.clear("m");
      throw new Error("bad row");
    }
  });
  const ks = keys([...V.int(5), ...state(row(V.text("old"))), ...state(null), ...state(mapState([V.int(1), row()]))]);
  const input = bytes(rowEntry(0, 1, row(V.int(5), V.text("good"))), rowEntry(0, 2, row(V.int(5), V.text("bad"))), rowEntry(0, 3, row(V.int(5), V.text("never"))));
  const r = op.process(1, header(), input, ks);
  assert.deepEqual(r.failed, { index: 1, message: "bad row" });
  same(r.output, lists([emitted(0, 1, row(V.text("good")))]));
  same(
    r.changes,
    bytes(setChange(0, 0, row(V.text("good"))), setChange(0, 1, listState(row(V.text("good")))), timerChange(2, 0, 1, 1)),
  );
  // Failing the first entry leaves nothing changed.
  const first = op.process(1, header(), bytes(rowEntry(0, 2, row(V.int(5), V.text("bad")))), ks);
  assert.equal(first.failed.index, 0);
  same(first.changes, []);
  same(first.output, []);
});

test(`${name}: list and map states, by index or by name`, () => {
  const calls = [];
  const op = processGuest((ctx, event, out) => {
    const [, what, arg] = event.row;
    calls.push(what);
    switch (what) {
      case "list":
        out.emitRow(ctx.list("l").map((r) => r[0]));
        break;
      case "setList":
        ctx.setList("l", arg === "" ? [] : arg.split("").map((c) => [c]));
        break;
      case "put":
        ctx.put("m", arg, [what]);
        break;
      case "remove":
        ctx.remove(2, arg);
        break;
      case "get":
        out.emit(ctx.get("m", arg)?.[0] ?? null);
        break;
      case "entries":
        out.emitRow(ctx.entries("m").map(([k]) => k));
        break;
      case "value":
        out.emit(ctx.value("v") === undefined);
        break;
    }
  });
  const run = (ks, ...events) =>
    ok(op.process(1, header(), bytes(events.map(([what, arg]) => rowEntry(0, 0, row(V.int(0), V.text(what), arg)))), ks));
  const empty = keys([...V.int(0), 0, 0, 0]);
  // setList replaces; empty clears.
  let r = run(empty, ["setList", V.text("ab")], ["list", V.null()], ["setList", V.text("")], ["list", V.null()], ["value", V.null()]);
  same(r.output, lists([], [emitted(0, 0, row(V.text("a"), V.text("b")))], [], [emitted(0, 0, row())], [emitted(0, 0, row(V.bool(true)))]));
  same(r.changes, bytes(clearChange(0, 1)));
  // put replaces a key's entry (it moves to the end), remove drops it, the last removed clears.
  const withMap = keys([...V.int(0), 0, 0, ...state(mapState([V.int(1), row(V.text("one"))], [V.float(0), row(V.text("zero"))]))]);
  r = run(
    withMap,
    ["get", V.int(1)],
    ["get", V.float(1)],
    ["get", V.float(-0)],
    ["put", V.int(1)],
    ["entries", V.null()],
  );
  same(
    r.output,
    lists(
      [emitted(0, 0, row(V.text("one")))],
      [emitted(0, 0, row(V.null()))],
      [emitted(0, 0, row(V.text("zero")))],
      [],
      [emitted(0, 0, row(V.float(0), V.int(1)))],
    ),
  );
  same(r.changes, bytes(setChange(0, 2, mapState([V.float(0), row(V.text("zero"))], [V.int(1), row(V.text("put"))]))));
  r = run(withMap, ["remove", V.int(1)], ["remove", V.float(-0)], ["remove", V.text("absent")]);
  same(r.changes, bytes(clearChange(0, 2)));
  // Wrong kinds and unknown states fail the entry.
  const bad = processGuest((ctx, event) => {
    const which = event.row[1];
    if (which === 0) ctx.list("v");
    if (which === 1) ctx.value("nope");
    if (which === 2) ctx.set(7, [1]);
    if (which === 3) ctx.set("v", 1);
    if (which === 4) ctx.setTimer("wall", 1);
  });
  const fail = (which) => bad.process(1, header(), bytes(rowEntry(0, 0, row(V.int(0), V.int(which)))), empty).failed.message;
  assert.equal(fail(0), "TypeError: state `v` is a value state, not a list state");
  assert.equal(fail(1), "RangeError: the stage declares no state named `nope`");
  assert.equal(fail(2), "RangeError: the stage declares no state 7");
  assert.equal(fail(3), "TypeError: the row given to Ctx.set is not a row (an array of values) but 1");
  assert.equal(fail(4), "TypeError: a timer's clock is Time.Event or Time.Processing, not `wall`");
});

test(`${name}: malformed process input fails with the host's fault named`, () => {
  const op = processGuest((ctx, event, out) => out.emit(ctx.key));
  const one = keys([...V.int(0), 0, 0, 0]);
  const fail = (input, ks = one) => op.process(1, header(), bytes(input), ks).failed;
  assert.deepEqual(fail(rowEntry(3, 0, row())), {
    index: 0,
    message: "malformed batch from the host: the entry at byte 0 names key 3 of 1",
  });
  assert.deepEqual(fail([...rowEntry(0, 0, row()), 7, ...u32(0), ...i64(0)]), {
    index: 1,
    message: "malformed batch from the host: unknown entry tag 7 at byte 17",
  });
  assert.match(fail(timerEntry(0, 0, 2)).message, /the timer at byte 0 has time domain 2/);
  assert.match(fail(timerEntry(0, 0, 0).slice(0, 13)).message, /truncated batch/);
  // The keys buffer: its layout checked before any entry runs, each state
  // against its declared kind when it is first read.
  assert.deepEqual(fail([], keys([...V.int(0), 0, 0, 2])), { index: 0, message: "malformed batch from the host: unknown state tag 2 at byte 15" });
  assert.match(fail([], bytes(keys([...V.int(0), 0, 0, 0]), [1])).message, /1 bytes after the last key/);
  assert.match(fail([], bytes(u32(1))).message, /truncated batch/);
  assert.match(fail([], bytes(u32(1), V.int(0), state([1, 2]))).message, /truncated batch/);
  const reader = processGuest((ctx, event) => {
    ctx.value("v");
    ctx.list("l");
    ctx.entries("m");
  });
  const read = (...states) =>
    reader.process(1, header(), bytes(rowEntry(0, 0, row()), rowEntry(0, 0, row())), keys([...V.int(0), ...states.flat()])).failed;
  assert.deepEqual(read(state([9]), [0], [0]), {
    index: 0,
    message: "malformed batch from the host: state `v` of key 0 is not a value state (truncated batch at byte 0)",
  });
  assert.match(read(state([...row(), 1]), [0], [0]).message, /state `v` of key 0 is not a value state \(1 bytes after the last value/);
  assert.match(read([0], state(u32(1)), [0]).message, /state `l` of key 0 is not a list state/);
  assert.match(read([0], [0], state([...u32(1), ...row()])).message, /state `m` of key 0 is not a map state/);
  assert.equal(read(state(row()), state(listState(row())), state(mapState([V.null(), row()]))), undefined);
  // A state no entry reads is shipped back as it came: not looked at.
  assert.equal(fail(rowEntry(0, 0, row()), keys([...V.int(0), ...state([9]), 0, 0])), undefined);
});

// ---- windows

const windowGuest = (assigner, extra = {}) =>
  exportPipeline(() =>
    new Job("w")
      .map("m", () => {})
      .keyBy((row) => row[0])
      .aggregate(
        "count",
        assigner,
        (acc, r) => {
          if (r[0] === "throw") throw new Error("cannot add");
          if (r[0] === "scalar") return 1;
          return [(asInt(acc?.[0]) ?? 0) + 1, ...r.slice(1)];
        },
        (a, b) => {
          if (a[0] === -1) throw new Error("cannot merge");
          return [asInt(a[0]) + asInt(b[0])];
        },
        (w, acc, out) => out.emit(w.key, w.start, w.end, acc === undefined ? null : acc[0]),
      )
      .keyBy(extra.keyed ? (row) => row[3] : () => null)
      .window("contents", Windows.tumbling(10), (w, records, out) => {
        if (w.key === "throw") throw new Error("cannot fire");
        out.emit(w.key, records.map((r) => `${r.timestamp}:${r.row[0]}`).join(" "));
      }),
  ).operator;

const slot = (key, start, end, agg) => [...key, ...i64(start), ...i64(end), ...state(agg)];

test(`${name}: window-add folds rows into their slots' aggregates`, () => {
  const op = windowGuest(Windows.tumbling(10));
  const slots = bytes(u32(3), slot(V.text("a"), 0, 10, null), slot(V.text("b"), 0, 10, row(V.int(5))), slot(V.text("c"), 10, 20, null));
  const input = bytes(u32(1), row(V.text("b")), u32(0), row(V.text("a"), V.bool(true)), u32(1), row(V.text("b")));
  const r = ok(op.windowAdd(1, header(), input, slots));
  same(r.output, []);
  same(r.changes, bytes(u32(0), u32(row(V.int(1), V.bool(true)).length), row(V.int(1), V.bool(true)), u32(1), u32(9 + 4), row(V.int(7))));
  // A throwing add fails its entry; the slots changed before it stand.
  const failing = op.windowAdd(1, header(), bytes(u32(0), row(V.text("a")), u32(1), row(V.text("throw"))), slots);
  assert.deepEqual(failing.failed, { index: 1, message: "cannot add" });
  same(failing.changes, bytes(u32(0), u32(13), row(V.int(1))));
  assert.equal(
    op.windowAdd(1, header(), bytes(u32(0), row(V.text("scalar"))), slots).failed.message,
    "TypeError: what the window's add returned is not a row (an array of values) but 1",
  );
  assert.match(op.windowAdd(1, header(), bytes(u32(3), row()), slots).failed.message, /names slot 3 of 3/);
  assert.match(op.windowAdd(1, header(), bytes(), bytes(u32(1), slot(V.text("a"), 0, 10, [7]))).failed.message, /the aggregate of slot 0 is not a value state/);
  assert.match(op.windowAdd(1, header(), bytes(), bytes(u32(2), slot(V.text("a"), 0, 10, null))).failed.message, /truncated/);
  assert.equal(op.windowAdd(2, header(), bytes(), bytes(u32(0))).failed.message, "TypeError: stage 2 is not an aggregate window stage");
});

test(`${name}: window-merge merges session aggregates pairwise`, () => {
  const op = windowGuest(Windows.session(10));
  const input = bytes(u32(4), state(row(V.int(2))), state(row(V.int(3))), state(null), state(row(V.int(4))), state(null), state(null), state(row(V.int(1))), state(row(V.int(1))));
  const r = ok(op.windowMerge(1, input));
  same(r.changes, bytes(u32(0), u32(13), row(V.int(5)), u32(1), u32(13), row(V.int(4)), u32(3), u32(13), row(V.int(2))));
  same(r.output, []);
  const failing = op.windowMerge(1, bytes(u32(2), state(row(V.int(1))), state(row(V.int(1))), state(row(V.int(-1))), state(row(V.int(1)))));
  assert.deepEqual(failing.failed, { index: 1, message: "cannot merge" });
  same(failing.changes, bytes(u32(0), u32(13), row(V.int(2))));
  assert.match(op.windowMerge(1, bytes(u32(1), state(row()))).failed.message, /truncated/);
  assert.equal(op.windowMerge(1, bytes(u32(1), state(row()), state(row()), 0)).failed.index, 0);
  assert.match(op.windowMerge(1, bytes(u32(1), state([1]), state(row()))).failed.message, /aggregate a of pair 0 is not a value state/);
});

test(`${name}: window-fire turns aggregates and contents into one list per window`, () => {
  const op = windowGuest(Windows.tumbling(10), { keyed: true });
  const aggregates = bytes(u32(2), V.text("a"), i64(0), i64(10), 0, state(row(V.int(3))), V.text("b"), i64(10), i64(20), 0, state(null));
  same(
    ok(op.windowFire(1, header(), aggregates)).output,
    lists(
      [emitted(0, 9, row(V.text("a"), V.int(0), V.int(10), V.int(3)), V.int(3))],
      [emitted(0, 19, row(V.text("b"), V.int(10), V.int(20), V.null()), V.null())],
    ),
  );
  const contents = bytes(u32(2), V.int(1), i64(-10), i64(0), 1, u32(2), i64(-7), row(V.text("x")), i64(-2), row(V.text("y")), V.int(2), i64(0), i64(10), 1, u32(0));
  same(
    ok(op.windowFire(2, header(), contents)).output,
    lists([emitted(0, -1, row(V.int(1), V.text("-7:x -2:y")))], [emitted(0, 9, row(V.int(2), V.text("")))]),
  );
  const failing = op.windowFire(2, header(), bytes(u32(2), V.int(1), i64(0), i64(10), 1, u32(0), V.text("throw"), i64(0), i64(10), 1, u32(0)));
  assert.deepEqual(failing.failed, { index: 1, message: "cannot fire" });
  same(failing.output, lists([emitted(0, 9, row(V.int(1), V.text("")))]));
  assert.deepEqual(op.windowFire(2, header(), aggregates).failed, { index: 0, message: "TypeError: stage 2 does not fire windows of this kind" });
  assert.deepEqual(op.windowFire(1, header(), contents).failed, { index: 0, message: "TypeError: stage 1 does not fire windows of this kind" });
  assert.match(op.windowFire(1, header(), bytes(u32(1), V.int(1), i64(0), i64(10), 2)).failed.message, /unknown window contents 2 at byte 29/);
  assert.match(op.windowFire(1, header(), bytes(u32(1), V.int(1), i64(0))).failed.message, /truncated/);
  assert.match(op.windowFire(1, header(), bytes(u32(0), 0)).failed.message, /1 bytes after the last window/);
  assert.equal(op.windowFire(0, header(), bytes(u32(0))).failed.message, "TypeError: stage 0 is not a window stage");
});

// ---- the job

test(`${name}: the job description`, () => {
  const f = () => {};
  const job = new Job("all")
    .source("file:///in")
    .sink("print")
    .checkpointEveryMs(500)
    .restart(Restart.fixedDelay(2, 10))
    .parallelism(4)
    .idleTimeoutMs(3000)
    .watermarks(250)
    .sideOutput("late")
    .sideOutput("audit", "file:///audit")
    .map("parse", f)
    .keyBy(f)
    .process("p", [State.value("a"), State.list("b").ttlMs(60_000), State.map("c")], f)
    .keyBy(f)
    .aggregate("agg", Windows.sliding(10, 5).allowedLatenessMs(7).lateOutput("late"), f, f, f)
    .keyBy(f)
    .window("win", Windows.session(30).processingTime(), f)
    .map("plain", f);
  assert.deepEqual(job.toWit(), {
    name: "all",
    source: "file:///in",
    sink: "print",
    checkpointIntervalMs: 500,
    restart: { tag: "fixed-delay", val: { attempts: 2, delayMs: 10 } },
    parallelism: 4,
    stages: [
      { name: "parse", kind: { tag: "map" }, keyed: false },
      {
        name: "p",
        kind: {
          tag: "process",
          val: [
            { name: "a", kind: "value", ttlMs: undefined },
            { name: "b", kind: "list", ttlMs: 60000 },
            { name: "c", kind: "map", ttlMs: undefined },
          ],
        },
        keyed: true,
      },
      {
        name: "agg",
        kind: {
          tag: "window",
          val: {
            assigner: { tag: "sliding", val: { sizeMs: 10, slideMs: 5 } },
            domain: "event-time",
            allowedLatenessMs: 7,
            lateOutput: "late",
            function: "aggregate",
          },
        },
        keyed: true,
      },
      {
        name: "win",
        kind: {
          tag: "window",
          val: { assigner: { tag: "session", val: 30 }, domain: "processing-time", allowedLatenessMs: 0, lateOutput: undefined, function: "process" },
        },
        keyed: true,
      },
      { name: "plain", kind: { tag: "map" }, keyed: false },
    ],
    sideOutputs: [
      { name: "late", sink: undefined },
      { name: "audit", sink: "file:///audit" },
    ],
    watermarks: { outOfOrdernessMs: 250, idleTimeoutMs: 3000 },
  });
  assert.deepEqual(new Job("t").map("m", f).toWit(), { name: "t", stages: [{ name: "m", kind: { tag: "map" }, keyed: false }], sideOutputs: [], watermarks: undefined });
  assert.deepEqual(Windows.tumbling(2n ** 60n)[Object.getOwnPropertySymbols(Windows.prototype)[0]]("aggregate").assigner, {
    tag: "tumbling",
    val: Number.MAX_SAFE_INTEGER,
  });
  assert.throws(() => new Job("x").map("m", 1), /a map stage's function must be a function, not 1/);
  assert.throws(() => new Job("x").process("p", [State.value("a"), State.list("a")], f), /two states are named `a`/);
  assert.throws(() => new Job("x").aggregate("a", {}, f, f, f), /needs Windows/);
  assert.throws(() => State.value("a").ttlMs(-1), /ttlMs must be a non-negative integer number of milliseconds, not -1/);
  assert.throws(() => Windows.tumbling(1.5), /the window size must be a non-negative integer/);
});

test(`${name}: open builds the job with the parameters; describe describes it`, () => {
  const built = [];
  const guest = exportPipeline((params) => {
    built.push(params.get("p"));
    if (params.get("fail") !== undefined) throw new Error(`asked to fail: ${params.get("fail")}`);
    if (params.get("wrong") !== undefined) return {};
    return new Job(params.get("name") ?? "unnamed").map("m", (r, out) => out.emit(params.get("p") ?? null));
  });
  guest.operator.open([["p", "1"]]);
  same(ok(guest.operator.map(0, header(1), bytes(row(V.text("x"))))).output, lists([emitted(0, 1, row(V.text("1")))]));
  assert.throws(() => guest.operator.open([["fail", "1"], ["fail", "2"]]), (e) => e === "asked to fail: 2");
  assert.throws(() => guest.operator.open([["wrong", ""]]), (e) => e === "TypeError: the pipeline function must return a Job, not an object (Object)");
  assert.equal(guest.job.describe([["name", "n"]]).name, "n");
  // Without open, the job is built with no parameters.
  const lazy = exportPipeline(() => new Job("l").map("m", (r, out) => out.emit(2)));
  same(ok(lazy.operator.map(0, header(1), bytes(row(V.text("x"))))).output, lists([emitted(0, 1, row(V.int(2)))]));
  assert.throws(() => exportPipeline(new Job("x")), /exportPipeline's argument/);
});

// ---- helpers

test(`${name}: the text and value helpers behave like Rust's`, () => {
  const { trimWhitespace, parseInt64, parseUint64, parseFloat64 } = sdk;
  assert.equal(trimWhitespace("\ufeff a \u0085\u3000"), "\ufeff a");
  // Rust's `str::parse::<f64>()` (checked with rustc).
  for (const [text, value] of [
    ["1.", 1], ["1.e5", 1e5], [".5", 0.5], ["+.5", 0.5], ["-0", -0], ["1e400", Infinity], ["inf", Infinity],
    ["-Infinity", -Infinity], ["INF", Infinity], ["nan", NaN], ["1E5", 1e5], ["0.50", 0.5], ["501", 501],
    ["0x10", undefined], [" 1", undefined], ["1_0", undefined], [".", undefined], ["e5", undefined], ["1e", undefined],
    ["+", undefined], ["infin", undefined], ["..5", undefined], ["1e5.5", undefined], ["٣", undefined], ["", undefined],
  ]) {
    assert.deepEqual(parseFloat64(text), value, JSON.stringify(text));
  }
  for (const [text, signed, unsigned] of [
    ["+5", 5, 5], ["-0", 0, undefined], ["007", 7, 7], ["-", undefined, undefined], ["1.0", undefined, undefined],
    ["9223372036854775807", 2n ** 63n - 1n, 2n ** 63n - 1n], ["9223372036854775808", undefined, 2n ** 63n],
    ["-9223372036854775808", -(2n ** 63n), undefined], ["18446744073709551616", undefined, undefined],
    ["9007199254740991", 9007199254740991, 9007199254740991], ["9007199254740992", 2n ** 53n, 2n ** 53n],
  ]) {
    assert.deepEqual(parseInt64(text), signed, text);
    assert.deepEqual(parseUint64(text), unsigned, text);
  }
  assert.equal(asInt(3), 3);
  assert.equal(asInt(2n ** 60n), 2n ** 60n);
  assert.equal(asInt(float(3)), undefined);
  assert.equal(asInt(2 ** 60), undefined); // a float past 2^53 decodes to a plain number
  assert.equal(asInt("3"), undefined);
  assert.equal(asFloat(float(3)), 3);
  assert.equal(asFloat(2.5), 2.5);
  assert.equal(asFloat(4n), 4);
  assert.equal(asFloat(null), undefined);
  assert.equal(Time.Event, "event");
});

// ---- the fraud example

test(`${name}: the fraud example parses, detects and describes itself like the Rust one`, () => {
  const { operator, job } = fraud;
  operator.open([]);
  const lines = ["alice,0.50,1000", " bob , 600 , 2000 ", "not a line", "erin,x,1", ",1,1", "a,1,2,3"];
  const parsed = ok(operator.map(0, header(), bytes(lines.map((l) => row(V.text(l))))));
  same(
    parsed.output,
    lists(
      [emitted(0, 1000, row(V.text("alice"), V.float(0.5)), V.text("alice"))],
      [emitted(0, 2000, row(V.text("bob"), V.float(600)), V.text("bob"))],
      [emitted(1, 5000, row(V.text("not a line")))],
      [emitted(1, 5000, row(V.text("erin,x,1")))],
      [emitted(1, 5000, row(V.text(",1,1")))],
      [emitted(1, 5000, row(V.text("a,1,2,3")))],
    ),
  );
  // A small transaction, then a large one within its minute: an alert with a float amount.
  const noState = keys([...V.text("alice"), 0, 0]);
  const small = ok(operator.process(1, header(), bytes(rowEntry(0, 1000, row(V.text("alice"), V.float(0.5)))), noState));
  same(small.output, lists([]));
  same(small.changes, bytes(setChange(0, 0, row(V.float(0.5))), setChange(0, 1, row(V.int(61000))), timerChange(2, 0, 0, 61000)));
  const armed = keys([...V.text("alice"), ...state(row(V.float(0.5))), ...state(row(V.int(61000)))]);
  const large = ok(operator.process(1, header(), bytes(rowEntry(0, 30000, row(V.text("alice"), V.float(600)))), armed));
  same(large.output, lists([emitted(0, 30000, row(V.text("alice"), V.float(600)))]));
  same(large.changes, bytes(clearChange(0, 0), clearChange(0, 1), timerChange(3, 0, 0, 61000)));
  const timer = ok(operator.process(1, header(), bytes(timerEntry(0, 61000, 0)), armed));
  same(timer.changes, bytes(clearChange(0, 0), clearChange(0, 1)));
  const poison = operator.process(1, header(), bytes(rowEntry(0, 1, row(V.text("POISON"), V.float(1)))), keys([...V.text("POISON"), 0, 0]));
  assert.deepEqual(poison.failed, { index: 0, message: "the account POISON cannot be processed" });

  const described = job.describe([["ttl", "1000"]]);
  assert.deepEqual(
    { ...described, stages: described.stages.map((s) => s.name) },
    {
      name: "fraud-detector",
      source: "socket://localhost:9100",
      checkpointIntervalMs: 1000,
      restart: { tag: "fixed-delay", val: { attempts: 3, delayMs: 1000 } },
      stages: ["parse", "detect"],
      sideOutputs: [{ name: "malformed", sink: undefined }],
      watermarks: { outOfOrdernessMs: 0, idleTimeoutMs: undefined },
    },
  );
  assert.deepEqual(described.stages[1].kind.val, [
    { name: "small", kind: "value", ttlMs: 1000 },
    { name: "deadline", kind: "value", ttlMs: 1000 },
  ]);
  assert.equal(job.describe([["ttl", "x"]]).stages[1].kind.val[0].ttlMs, undefined);
});
