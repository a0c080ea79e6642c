// Write Sluice pipelines in JavaScript (`sluice:stream@0.2.0`, world
// `pipeline-job`): keyed state, timers, event time and windows.
//
// A job is a pipeline of stages, described once with `Job`: map stages
// (stateless: map, filter and flat-map in one function), keyed process
// functions with the keyed states they declare and timers, and keyed
// windows. The host owns everything that must survive a failure — the state
// of every key, the timers, the watermark, the windows, the checkpoints —
// and ships a key's state in with the batch that needs it. This module owns
// the encodings of `wit/sluice-stream@0.2.0/stream.wit`, so the functions
// see plain values:
//
//     import { exportPipeline, Job, State, Time, Restart, float, asFloat, trimWhitespace, parseFloat64, parseInt64 }
//       from "../../guest-sdk-js/pipeline.js";
//
//     function parse(record, out) {
//       const [account, amount, ts] = record.text.split(",").map(trimWhitespace);
//       const a = parseFloat64(amount ?? ""), t = parseInt64(ts ?? "");
//       if (a === undefined || t === undefined) return out.side("malformed", record.text);
//       out.emitAt(t, account, float(a));
//     }
//
//     function detect(ctx, event, out) {
//       if (event.type === "timer") return ctx.clear("small");
//       const amount = asFloat(event.row[1]);
//       if (amount > 500 && ctx.value("small") !== undefined) {
//         out.emit(ctx.key, float(amount));
//         ctx.clear("small");
//       } else if (amount < 1) {
//         ctx.set("small", [float(amount)]);
//         ctx.setTimer(Time.Event, event.timestamp + 60_000);
//       }
//     }
//
//     const fraud = (params) =>
//       new Job("fraud-detector")
//         .watermarks(5_000)
//         .sideOutput("malformed")
//         .map("parse", parse)
//         .keyBy((row) => row[0])
//         .process("detect", [State.value("small")], detect);
//
//     export const { operator, job } = exportPipeline(fraud);
//
// Values are those of `sluice.js`: a row is an array; a safe-integer number
// is an int, any other number a float, `float(x)` forces a float; rows come
// back decoded the same way (a whole float as a `Float`, an int past 2^53 as
// a BigInt; `asInt` and `asFloat` read them). Timestamps are numbers of
// milliseconds since the Unix epoch (exact within ±2^53, as the component
// bindings give the header's); `emitAt` and timers also take a BigInt.
// Durations are milliseconds.
//
// A stage function fails its record by throwing: the call returns the
// entry's `record-error` with the error's message (the output and state
// changes of the entries before it stand, the failing entry's are undone),
// and the host runs the entry again alone in a fresh instance, dead-letters
// it if it fails there too, and goes on with every key's state as it was.
// A buffer from the host that does not parse fails the entry it is in the
// same way, with a message that starts `malformed batch from the host`.
// Everything must be deterministic: the same input and state give the same
// output (see `sluice.js` for the clock and stdio the guest does not have).

import {
  Float,
  float,
  asInt,
  asFloat,
  Params,
  Restart,
  JobDescription,
  splitWhitespace,
  trimWhitespace,
  parseInt64,
  parseUint64,
  parseFloat64,
  __internal,
} from "./sluice.js";

export { Float, float, asInt, asFloat, Params, Restart, splitWhitespace, trimWhitespace, parseInt64, parseUint64, parseFloat64 };

const { Reader, encodeUtf8, messageOf, u32 } = __internal;

const NULL = 0;
const BOOL = 1;
const INT = 2;
const FLOAT = 3;
const TEXT = 4;
const BYTES = 5;

const TWO_32 = 4294967296;
const TWO_63 = 9223372036854775808;
const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;
const U64_MAX = 2n ** 64n - 1n;
const EMPTY = new Uint8Array(0);

/** Which clock a timer or a window follows. */
export const Time = Object.freeze({
  /** The rows' timestamps, as the watermark advances. */
  Event: "event",
  /** The processing time of the batches (recorded by the host, so a replay sees the same). */
  Processing: "processing",
});

function domainCode(time) {
  if (time === Time.Event) return 0;
  if (time === Time.Processing) return 1;
  throw new TypeError(`a timer's clock is Time.Event or Time.Processing, not ${show(time)}`);
}

function show(v) {
  if (typeof v === "string") return `\`${v}\``;
  if (typeof v === "object" && v !== null) return `an object (${v.constructor?.name ?? "Object"})`;
  if (typeof v === "bigint") return `${v}n`;
  return String(v);
}

function hostError(what) {
  return new Error(`malformed batch from the host: ${what}`);
}

const HOST_PREFIX = "malformed batch from the host: ";

/** The message a record fails with, from whatever was thrown. */
function reason(e) {
  try {
    return messageOf(e);
  } catch {
    return "the stage threw a value that cannot be shown";
  }
}

// ---------------------------------------------------------------- checks

/** A duration in milliseconds: a non-negative integer (past 2^53, forever). */
function millis(v, name) {
  if (typeof v === "bigint" && v >= 0n && v <= U64_MAX) {
    return v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v);
  }
  if (Number.isSafeInteger(v) && v >= 0) return v;
  throw new RangeError(`${name} must be a non-negative integer number of milliseconds, not ${show(v)}`);
}

/** A timestamp as an `s64`: an integer number, or a BigInt in range. */
function timestamp(v) {
  if (typeof v === "number") {
    if (Number.isSafeInteger(v)) return v;
    // i64's extremes arrive from the host as ±2^63 (the nearest numbers).
    if (v === TWO_63) return I64_MAX;
    if (Number.isInteger(v) && v >= -TWO_63 && v < TWO_63) return BigInt(v);
  } else if (typeof v === "bigint" && v >= I64_MIN && v <= I64_MAX) {
    return v;
  }
  throw new RangeError(`a timestamp is an integer number of milliseconds that fits in 64 bits, not ${show(v)}`);
}

function fn(f, what) {
  if (typeof f !== "function") throw new TypeError(`${what} must be a function, not ${show(f)}`);
  return f;
}

function stageName(name) {
  if (typeof name !== "string") throw new TypeError(`a stage's name must be a string, not ${show(name)}`);
  return name;
}

// ---------------------------------------------------------------- writing

/** A growing little-endian buffer. */
class Writer {
  constructor(size = 1 << 14) {
    this.buf = new Uint8Array(size);
    this.view = new DataView(this.buf.buffer);
    this.pos = 0;
  }

  reserve(n) {
    if (this.pos + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.pos + n) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }

  u8(v) {
    if (this.pos + 1 > this.buf.length) this.reserve(1);
    this.buf[this.pos++] = v;
  }

  u32(v) {
    if (this.pos + 4 > this.buf.length) this.reserve(4);
    this.view.setUint32(this.pos, v, true);
    this.pos += 4;
  }

  /** An `s64`, from a safe integer, or anything else `timestamp` takes. */
  i64(v) {
    if (this.pos + 8 > this.buf.length) this.reserve(8);
    if (typeof v === "number" && !Number.isSafeInteger(v)) v = timestamp(v);
    if (typeof v === "number") {
      const hi = Math.floor(v / TWO_32);
      this.view.setUint32(this.pos, v - hi * TWO_32, true);
      this.view.setInt32(this.pos + 4, hi, true);
    } else {
      this.view.setBigInt64(this.pos, v, true);
    }
    this.pos += 8;
  }

  raw(bytes) {
    this.reserve(bytes.length);
    this.buf.set(bytes, this.pos);
    this.pos += bytes.length;
  }

  /** `u32 len, bytes`. */
  sized(bytes) {
    this.u32(bytes.length);
    this.raw(bytes);
  }

  /** One value, mapped as `sluice.js` maps it. */
  value(v) {
    switch (typeof v) {
      case "string": {
        const n = v.length;
        this.reserve(5 + 3 * n);
        const at = this.pos;
        this.buf[at] = TEXT;
        const len = n === 0 ? 0 : encodeUtf8(v, this.buf, at + 5);
        this.view.setUint32(at + 1, len, true);
        this.pos = at + 5 + len;
        return;
      }
      case "number":
        if (Number.isSafeInteger(v)) {
          this.u8(INT);
          this.i64(v);
        } else {
          this.float(v);
        }
        return;
      case "boolean":
        this.u8(BOOL);
        this.u8(v ? 1 : 0);
        return;
      case "bigint":
        if (v < I64_MIN || v > I64_MAX) throw new RangeError(`the int ${v} does not fit in 64 bits`);
        this.u8(INT);
        this.i64(v);
        return;
      case "undefined":
        this.u8(NULL);
        return;
      case "object":
        if (v === null) {
          this.u8(NULL);
          return;
        }
        if (v instanceof Float) {
          this.float(v.value);
          return;
        }
        if (v instanceof Uint8Array) {
          this.u8(BYTES);
          this.sized(v);
          return;
        }
        if (ArrayBuffer.isView(v)) {
          this.u8(BYTES);
          this.sized(new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
          return;
        }
        if (v instanceof ArrayBuffer) {
          this.u8(BYTES);
          this.sized(new Uint8Array(v));
          return;
        }
    }
    throw new TypeError(`cannot send ${show(v)} as a Sluice value`);
  }

  float(v) {
    this.reserve(9);
    this.buf[this.pos] = FLOAT;
    this.view.setFloat64(this.pos + 1, v, true);
    this.pos += 9;
  }

  /** A row: `u32 count, value{count}`. */
  row(row) {
    const n = row.length;
    this.u32(n);
    for (let i = 0; i < n; i++) this.value(row[i]);
  }

  /** What was written, as a copy. */
  copy() {
    return this.buf.slice(0, this.pos);
  }

  /** What was written, as a view (valid until the next write). */
  written() {
    return this.buf.subarray(0, this.pos);
  }
}

// One instance runs one call at a time: the buffers are reused.
const output = new Writer(1 << 16);
const changes = new Writer(1 << 12);
const scratch = new Writer(1 << 12);

/** `row`, which `what` names in the error when it is not an array. */
function isRow(row, what) {
  if (!Array.isArray(row)) throw new TypeError(`${what} is not a row (an array of values) but ${show(row)}`);
  return row;
}

/** `row` encoded on its own. */
function encodeRow(row, what) {
  isRow(row, what);
  scratch.pos = 0;
  scratch.row(row);
  return scratch.copy();
}

/** `v` encoded on its own. */
function encodeValue(v) {
  scratch.pos = 0;
  scratch.value(v);
  return scratch.copy();
}

// ---------------------------------------------------------------- reading

/** Reads the host's buffers, every bound checked (see `Reader` in sluice.js). */
class Input extends Reader {
  get atEnd() {
    return this.pos >= this.end;
  }

  u8() {
    this.need(1);
    return this.bytes[this.pos++];
  }

  /** An `s64` as a number (rounded past 2^53). */
  i64() {
    this.need(8);
    const lo = this.view.getUint32(this.pos, true);
    const hi = this.view.getInt32(this.pos + 4, true);
    this.pos += 8;
    return hi * TWO_32 + lo;
  }

  /** One value, checked, as its encoded bytes. */
  valueBytes() {
    const at = this.pos;
    this.value();
    return this.bytes.subarray(at, this.pos);
  }

  /** `state := 0x00 | 0x01 u32 len, u8{len}`: null or the bytes. */
  state() {
    const at = this.pos;
    const tag = this.u8();
    if (tag === 0) return null;
    if (tag !== 1) throw hostError(`unknown state tag ${tag} at byte ${at}`);
    const len = this.u32();
    this.need(len);
    const bytes = this.bytes.subarray(this.pos, this.pos + len);
    this.pos += len;
    return bytes;
  }

  /** Nothing may follow the last `what`. */
  done(what) {
    if (this.pos !== this.end) throw hostError(`${this.end - this.pos} bytes after the last ${what}`);
  }
}

const VALUE = "value";
const LIST = "list";
const MAP = "map";

/** Checks that `bytes` is a state of `kind`; `what` names it in the error. */
function checkState(bytes, kind, what) {
  try {
    const r = new Input(bytes);
    if (kind === VALUE) {
      r.row();
    } else {
      const n = r.u32();
      for (let i = 0; i < n; i++) {
        if (kind === MAP) r.value();
        r.row();
      }
    }
    r.done(kind === VALUE ? "value" : "row");
  } catch (e) {
    const detail = e instanceof Error ? e.message.replace(HOST_PREFIX, "") : String(e);
    throw hostError(`${what} is not a ${kind} state (${detail})`);
  }
}

/** A checked row's values. */
function decodeRow(bytes) {
  return new Input(bytes).row();
}

/** A checked list state's rows. */
function decodeList(bytes) {
  const r = new Input(bytes);
  const n = r.u32();
  const rows = [];
  for (let i = 0; i < n; i++) rows.push(r.row());
  return rows;
}

/** A checked map state's entries as `[key bytes, row bytes]`. */
function mapItems(bytes) {
  const r = new Input(bytes);
  const n = r.u32();
  const items = [];
  for (let i = 0; i < n; i++) {
    const key = r.valueBytes();
    const at = r.pos;
    r.row();
    items.push([key, bytes.subarray(at, r.pos)]);
  }
  return items;
}

/** Whether two encoded values are equal as values (Rust's `Value` ==). */
function sameValue(a, b) {
  if (a[0] === FLOAT && b[0] === FLOAT) {
    const da = new DataView(a.buffer, a.byteOffset, a.byteLength);
    const db = new DataView(b.buffer, b.byteOffset, b.byteLength);
    return da.getFloat64(1, true) === db.getFloat64(1, true);
  }
  if (a[0] === BOOL && b[0] === BOOL) return (a[1] !== 0) === (b[1] !== 0);
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

// ---------------------------------------------------------------- what the functions see

/** One input of a stage: a row and its timestamp (`event.type` is `"row"`). */
export class Record {
  /** @internal */
  constructor(row, timestamp) {
    /** The row: an array of values. */
    this.row = row;
    /** Its timestamp (milliseconds since the Unix epoch). */
    this.timestamp = timestamp;
  }

  /** `"row"`, to tell it from a `Timer` in a process function. */
  get type() {
    return "row";
  }

  /** The first field when it is text (the line, in the first stage); else `""`. */
  get text() {
    const v = this.row[0];
    return typeof v === "string" ? v : "";
  }
}

/** A timer of the key that fired (`event.type` is `"timer"`). */
export class Timer {
  /** @internal */
  constructor(at, time) {
    /** The time it was set for. */
    this.at = at;
    /** Its clock: `Time.Event` or `Time.Processing`. */
    this.time = time;
  }

  /** `"timer"`. */
  get type() {
    return "timer";
  }
}

const BEGIN = Symbol("begin");
const ROWS = Symbol("rows");

/** Where a stage's rows go: `out.emit(...values)` to the next stage (or the sink), `out.side(name, ...values)` to a side output. */
export class Out {
  #timestamp = 0;
  #key = null;
  #sides = [];
  #rows = 0;

  /** @internal */
  [BEGIN](timestamp, key, sides) {
    this.#timestamp = timestamp;
    this.#key = key;
    this.#sides = sides;
    this.#rows = 0;
  }

  /** @internal */
  get [ROWS]() {
    return this.#rows;
  }

  /** Emits a row with the input's timestamp (a fired window's: its last millisecond; a timer's: the time it was set for). */
  emit(...values) {
    this.#put(this.#timestamp, values);
  }

  /** Emits a row with timestamp `ts`: in the first stage, the event time the watermark follows. */
  emitAt(ts, ...values) {
    this.#put(timestamp(ts), values);
  }

  /** Emits a row given as an array of values, with the input's timestamp. */
  emitRow(row) {
    this.#put(this.#timestamp, isRow(row, "the row given to emitRow"));
  }

  /** Sends a row to the side output `name` (declared with `Job.sideOutput`), with the input's timestamp. */
  side(name, ...values) {
    const i = this.#sides.indexOf(name);
    if (i < 0) throw new Error(`there is no side output named ${show(name)}; declare it with Job.sideOutput`);
    output.u8(i + 1);
    output.i64(this.#timestamp);
    output.row(values);
    this.#rows++;
  }

  #put(ts, row) {
    output.u8(0);
    output.i64(ts);
    output.row(row);
    if (this.#key !== null) output.value(this.#key(row));
    this.#rows++;
  }
}

const ENTER = Symbol("enter");
const UNDO = Symbol("undo");

/**
 * One key of a process call as shipped: its encoded key, each declared
 * state's bytes (null: none) and which of them the call changed.
 */
class KeyStates {
  constructor(bytes, slots) {
    this.bytes = bytes;
    this.key = undefined;
    this.decoded = false;
    this.slots = slots;
    this.changed = new Uint8Array(slots.length);
  }
}

/**
 * A process function's view of its key: the key, its declared states as
 * they stand (with this call's changes), its timers, and the clocks. A
 * state is named by its place in the declaration (0, 1, ...) or its name.
 */
export class Ctx {
  #decls;
  #names;
  #keys;
  #timers;
  #undo = [];
  #k = 0;
  #current = null;
  #timestamp = 0;
  #watermark;
  #processingTime;

  /** @internal */
  constructor(decls, names, keys, timers, header) {
    this.#decls = decls;
    this.#names = names;
    this.#keys = keys;
    this.#timers = timers;
    this.#watermark = header.watermark;
    this.#processingTime = header.processingTime;
  }

  /** @internal */
  [ENTER](k, ts) {
    this.#k = k;
    this.#current = this.#keys[k];
    this.#timestamp = ts;
    this.#undo.length = 0;
  }

  /** @internal: undoes the entry's state writes. */
  [UNDO]() {
    const undo = this.#undo;
    for (let i = undo.length - 1; i >= 0; i--) {
      const [ks, s, bytes, changed] = undo[i];
      ks.slots[s] = bytes;
      ks.changed[s] = changed;
    }
    undo.length = 0;
  }

  /** The key. */
  get key() {
    const ks = this.#current;
    if (!ks.decoded) {
      ks.key = new Input(ks.bytes).value();
      ks.decoded = true;
    }
    return ks.key;
  }

  /** The timestamp of the row or timer being processed. */
  get timestamp() {
    return this.#timestamp;
  }

  /** The event-time watermark (-2^63 before the first). */
  get watermark() {
    return this.#watermark;
  }

  /** The batch's processing time. */
  get processingTime() {
    return this.#processingTime;
  }

  #state(state, kind) {
    const i = typeof state === "string" ? this.#names.get(state) : state;
    const decl = Number.isInteger(i) ? this.#decls[i] : undefined;
    if (decl === undefined) {
      throw new RangeError(
        typeof state === "string" ? `the stage declares no state named \`${state}\`` : `the stage declares no state ${show(state)}`,
      );
    }
    if (kind !== undefined && decl.kind !== kind) {
      throw new TypeError(`state ${show(state)} is a ${decl.kind} state, not a ${kind} state`);
    }
    return i;
  }

  #write(s, bytes) {
    const ks = this.#current;
    this.#undo.push([ks, s, ks.slots[s], ks.changed[s]]);
    ks.slots[s] = bytes;
    ks.changed[s] = 1;
  }

  /** A value state's row (an array of values), or undefined when it is not set. */
  value(state) {
    const bytes = this.#current.slots[this.#state(state, VALUE)];
    return bytes === null ? undefined : decodeRow(bytes);
  }

  /** Sets a value state to `row` (an array of values). */
  set(state, row) {
    const s = this.#state(state, VALUE);
    this.#write(s, encodeRow(row, "the row given to Ctx.set"));
  }

  /** Clears a state of any kind. */
  clear(state) {
    this.#write(this.#state(state), null);
  }

  /** A list state's rows (empty when it is not set). */
  list(state) {
    const bytes = this.#current.slots[this.#state(state, LIST)];
    return bytes === null ? [] : decodeList(bytes);
  }

  /** Appends `row` to a list state. */
  push(state, row) {
    const s = this.#state(state, LIST);
    isRow(row, "the row given to Ctx.push");
    const before = this.#current.slots[s];
    scratch.pos = 0;
    if (before === null) {
      scratch.u32(1);
    } else {
      scratch.u32(new DataView(before.buffer, before.byteOffset, 4).getUint32(0, true) + 1);
      scratch.raw(before.subarray(4));
    }
    scratch.row(row);
    this.#write(s, scratch.copy());
  }

  /** Replaces a list state's rows with `rows` (cleared when there are none). */
  setList(state, rows) {
    const s = this.#state(state, LIST);
    const all = [...rows];
    if (all.length === 0) return this.#write(s, null);
    scratch.pos = 0;
    scratch.u32(all.length);
    for (const row of all) scratch.row(isRow(row, "a row given to Ctx.setList"));
    this.#write(s, scratch.copy());
  }

  /** A map state's entries as `[key, row]`, in the order they were put. */
  entries(state) {
    const bytes = this.#current.slots[this.#state(state, MAP)];
    if (bytes === null) return [];
    const r = new Input(bytes);
    const n = r.u32();
    const out = [];
    for (let i = 0; i < n; i++) out.push([r.value(), r.row()]);
    return out;
  }

  /** The row of `key` in a map state, or undefined. */
  get(state, key) {
    const bytes = this.#current.slots[this.#state(state, MAP)];
    if (bytes === null) return undefined;
    const want = encodeValue(key);
    for (const [k, row] of mapItems(bytes)) if (sameValue(k, want)) return decodeRow(row);
    return undefined;
  }

  /** Puts `key`'s row into a map state (replacing the one it had). */
  put(state, key, row) {
    const s = this.#state(state, MAP);
    const k = encodeValue(key);
    this.#mapWrite(s, k, encodeRow(row, "the row given to Ctx.put"));
  }

  /** Removes `key` from a map state (cleared when it was the last). */
  remove(state, key) {
    this.#mapWrite(this.#state(state, MAP), encodeValue(key), null);
  }

  #mapWrite(s, key, row) {
    const before = this.#current.slots[s];
    const items = before === null ? [] : mapItems(before).filter(([k]) => !sameValue(k, key));
    if (row !== null) items.push([key, row]);
    if (items.length === 0) return this.#write(s, null);
    scratch.pos = 0;
    scratch.u32(items.length);
    for (const [k, r] of items) {
      scratch.raw(k);
      scratch.raw(r);
    }
    this.#write(s, scratch.copy());
  }

  /** Sets a timer of this key: it fires once the watermark (`Time.Event`) or the processing time (`Time.Processing`) reaches `at`. Setting it twice keeps one. */
  setTimer(time, at) {
    this.#timers.push([this.#k, 2, domainCode(time), timestamp(at)]);
  }

  /** Deletes a timer of this key. */
  deleteTimer(time, at) {
    this.#timers.push([this.#k, 3, domainCode(time), timestamp(at)]);
  }
}

// ---------------------------------------------------------------- the job

const TO_WIT = Symbol("toWit");
const RUNTIME = Symbol("runtime");

/** A keyed state a process stage declares: `State.value("small").ttlMs(60_000)`. */
export class State {
  #name;
  #kind;
  #ttl;

  /** @internal */
  constructor(name, kind) {
    if (typeof name !== "string") throw new TypeError(`a state's name must be a string, not ${show(name)}`);
    this.#name = name;
    this.#kind = kind;
  }

  /** One row per key: `ctx.value`, `ctx.set`. */
  static value(name) {
    return new State(name, VALUE);
  }

  /** A list of rows per key: `ctx.list`, `ctx.push`, `ctx.setList`. */
  static list(name) {
    return new State(name, LIST);
  }

  /** A map from values to rows per key: `ctx.entries`, `ctx.get`, `ctx.put`, `ctx.remove`. */
  static map(name) {
    return new State(name, MAP);
  }

  /** Gone when not written for `ms` of processing time. */
  ttlMs(ms) {
    this.#ttl = millis(ms, "ttlMs");
    return this;
  }

  /** Its name. */
  get name() {
    return this.#name;
  }

  /** `"value"`, `"list"` or `"map"`. */
  get kind() {
    return this.#kind;
  }

  /** @internal */
  [TO_WIT]() {
    return { name: this.#name, kind: this.#kind, ttlMs: this.#ttl };
  }
}

/** How rows are put into windows: `Windows.tumbling(10_000).allowedLatenessMs(1_000).lateOutput("late")`. */
export class Windows {
  #assigner;
  #domain = "event-time";
  #lateness = 0;
  #lateOutput;

  /** @internal */
  constructor(assigner) {
    this.#assigner = assigner;
  }

  /** Fixed windows of `sizeMs`, back to back, by event time. */
  static tumbling(sizeMs) {
    return new Windows({ tag: "tumbling", val: millis(sizeMs, "the window size") });
  }

  /** Windows of `sizeMs`, a new one every `slideMs`, by event time. */
  static sliding(sizeMs, slideMs) {
    return new Windows({
      tag: "sliding",
      val: { sizeMs: millis(sizeMs, "the window size"), slideMs: millis(slideMs, "the window slide") },
    });
  }

  /** Per-key windows of activity, closed by a gap of `gapMs` without rows. */
  static session(gapMs) {
    return new Windows({ tag: "session", val: millis(gapMs, "the session gap") });
  }

  /** By processing time instead of the rows' timestamps. */
  processingTime() {
    this.#domain = "processing-time";
    return this;
  }

  /** A row up to `ms` behind the watermark still updates its window, which fires again. */
  allowedLatenessMs(ms) {
    this.#lateness = millis(ms, "allowedLatenessMs");
    return this;
  }

  /** Rows later than that go to this side output (else they are dropped and counted in the host's log). */
  lateOutput(name) {
    if (typeof name !== "string") throw new TypeError(`a side output's name must be a string, not ${show(name)}`);
    this.#lateOutput = name;
    return this;
  }

  /** @internal */
  [TO_WIT](fn) {
    return {
      assigner: this.#assigner,
      domain: this.#domain,
      allowedLatenessMs: this.#lateness,
      lateOutput: this.#lateOutput,
      function: fn,
    };
  }
}

/**
 * A job: its pipeline of stages and its defaults (command-line flags and a
 * TOML file override them), like a Flink `main()`.
 */
export class Job {
  #desc;
  #stages = [];
  #sides = [];
  #watermarks;
  #nextKey = null;

  /** @param {string} name the job's name, shown in logs */
  constructor(name) {
    this.#desc = new JobDescription(name);
  }

  #stage(name, stage) {
    stage.name = stageName(name);
    stage.key = this.#nextKey;
    this.#nextKey = null;
    this.#stages.push(stage);
    return this;
  }

  /** A stateless stage: `f(record, out)` emits any number of rows for each input (map, filter and flat-map in one). */
  map(name, f) {
    return this.#stage(name, { kind: "map", f: fn(f, "a map stage's function") });
  }

  /** Keys the next stage's input by `key(row)` (the host routes rows by it). */
  keyBy(key) {
    this.#nextKey = fn(key, "keyBy's key selector");
    return this;
  }

  /** A keyed process function `f(ctx, event, out)` with the states it declares and timers. */
  process(name, states, f) {
    const decls = [...states];
    const names = new Map();
    decls.forEach((s, i) => {
      if (!(s instanceof State)) throw new TypeError(`a process stage's states are State values, not ${show(s)}`);
      if (names.has(s.name)) throw new TypeError(`two states are named \`${s.name}\``);
      names.set(s.name, i);
    });
    return this.#stage(name, { kind: "process", states: decls, names, f: fn(f, "a process stage's function") });
  }

  /**
   * Keyed windows with an aggregate per key and window, kept by the host:
   * `add(acc, row)` folds a row into it (acc undefined: the window's first
   * row) and returns the new aggregate row, `merge(a, b)` merges two
   * (session windows), `fire(window, acc, out)` turns it into rows.
   */
  aggregate(name, windows, add, merge, fire) {
    if (!(windows instanceof Windows)) throw new TypeError(`an aggregate stage needs Windows, not ${show(windows)}`);
    return this.#stage(name, {
      kind: "aggregate",
      windows,
      add: fn(add, "an aggregate stage's add"),
      merge: fn(merge, "an aggregate stage's merge"),
      fire: fn(fire, "an aggregate stage's fire"),
    });
  }

  /** Keyed windows whose rows the host keeps; `fire(window, records, out)` gets them all, by timestamp, when the window fires. */
  window(name, windows, fire) {
    if (!(windows instanceof Windows)) throw new TypeError(`a window stage needs Windows, not ${show(windows)}`);
    return this.#stage(name, { kind: "window", windows, fire: fn(fire, "a window stage's fire") });
  }

  /** Declares a side output (`--side-output NAME=URI` picks its sink; `sink`, else `print`, by default). */
  sideOutput(name, sink) {
    if (typeof name !== "string") throw new TypeError(`a side output's name must be a string, not ${show(name)}`);
    this.#sides.push({ name, sink: sink === undefined ? undefined : String(sink) });
    return this;
  }

  /** Event time: the watermark trails the largest timestamp the first stage emitted by `outOfOrdernessMs`. */
  watermarks(outOfOrdernessMs) {
    this.#watermarks = {
      outOfOrdernessMs: millis(outOfOrdernessMs, "the out-of-orderness"),
      idleTimeoutMs: this.#watermarks?.idleTimeoutMs,
    };
    return this;
  }

  /** After `ms` of processing time without records, the watermark advances with processing time, so that an idle source's windows and timers still fire. */
  idleTimeoutMs(ms) {
    this.#watermarks = {
      outOfOrdernessMs: this.#watermarks?.outOfOrdernessMs ?? 0,
      idleTimeoutMs: millis(ms, "idleTimeoutMs"),
    };
    return this;
  }

  /** The default source: `socket://HOST:PORT`, `file://PATH` or `-`. */
  source(uri) {
    this.#desc.source(uri);
    return this;
  }

  /** The default sink of the main output: `print`, `file://PATH` or `discard`. */
  sink(uri) {
    this.#desc.sink(uri);
    return this;
  }

  /** Checkpoint every `ms` milliseconds. */
  checkpointEveryMs(ms) {
    this.#desc.checkpointEveryMs(ms);
    return this;
  }

  /** Turn checkpointing off by default. */
  noCheckpoints() {
    this.#desc.noCheckpoints();
    return this;
  }

  /** The restart strategy, from `Restart`. */
  restart(strategy) {
    this.#desc.restart(strategy);
    return this;
  }

  /** The default number of parallel subtasks. */
  parallelism(n) {
    this.#desc.parallelism(n);
    return this;
  }

  /** Limits for each guest instance (see `JobDescription.limits` in sluice.js). */
  limits(limits) {
    this.#desc.limits(limits);
    return this;
  }

  /** The `job-description` record as the component bindings take it. */
  toWit() {
    return {
      ...this.#desc.toWit(),
      stages: this.#stages.map((s) => ({ name: s.name, kind: stageKind(s), keyed: s.key !== null })),
      sideOutputs: this.#sides.map((s) => ({ name: s.name, sink: s.sink })),
      watermarks: this.#watermarks,
    };
  }

  /** @internal: what the calls run. */
  [RUNTIME]() {
    return { stages: this.#stages.slice(), sides: this.#sides.map((s) => s.name) };
  }
}

function stageKind(s) {
  switch (s.kind) {
    case "map":
      return { tag: "map" };
    case "process":
      return { tag: "process", val: s.states.map((st) => st[TO_WIT]()) };
    case "aggregate":
      return { tag: "window", val: s.windows[TO_WIT]("aggregate") };
    default:
      return { tag: "window", val: s.windows[TO_WIT]("process") };
  }
}

// ---------------------------------------------------------------- the calls

const out = new Out();

function done(outputBytes, changeBytes) {
  return { output: outputBytes, changes: changeBytes, failed: undefined };
}

function failed(index, e, outputBytes = EMPTY, changeBytes = EMPTY) {
  return { output: outputBytes, changes: changeBytes, failed: { index, message: reason(e) } };
}

/** The stage `stage` of `kinds`, and the key selector of the stage after it. */
function stageOf(rt, stage, kinds, what) {
  const s = rt.stages[stage];
  if (s === undefined) throw new RangeError(`the job has no stage ${stage}`);
  if (!kinds.includes(s.kind)) throw new TypeError(`stage ${stage} is not ${what}`);
  return [s, rt.stages[stage + 1]?.key ?? null];
}

/** `map`. */
function runMap(rt, stage, header, input) {
  const [s, next] = stageOf(rt, stage, ["map"], "a map stage");
  const f = s.f;
  const r = new Input(input);
  output.pos = 0;
  let index = 0;
  while (!r.atEnd) {
    const at = output.pos;
    try {
      const ts = stage === 0 ? header.processingTime : r.i64();
      const record = new Record(r.row(), ts);
      output.u32(0);
      out[BEGIN](ts, next, rt.sides);
      f(record, out);
      output.view.setUint32(at, out[ROWS], true);
    } catch (e) {
      return failed(index, e, output.buf.subarray(0, at));
    }
    index++;
  }
  return done(output.written(), EMPTY);
}

/** `keys := u32 key-count, (value key, state{declared states}){key-count}`, checked. */
function readKeys(bytes, decls) {
  const r = new Input(bytes);
  const n = r.u32();
  const keys = [];
  for (let k = 0; k < n; k++) {
    const key = r.valueBytes();
    const slots = [];
    for (const decl of decls) {
      const state = r.state();
      if (state !== null) checkState(state, decl.kind, `state \`${decl.name}\` of key ${k}`);
      slots.push(state);
    }
    keys.push(new KeyStates(key, slots));
  }
  r.done("key");
  return keys;
}

/** A process call's changes: each changed state, then the timers in the order they were set and deleted. */
function processChanges(keys, timers) {
  changes.pos = 0;
  for (let k = 0; k < keys.length; k++) {
    const ks = keys[k];
    for (let s = 0; s < ks.slots.length; s++) {
      if (!ks.changed[s]) continue;
      const bytes = ks.slots[s];
      changes.u8(bytes === null ? 1 : 0);
      changes.u32(k);
      changes.u32(s);
      if (bytes !== null) changes.sized(bytes);
    }
  }
  for (const [k, op, domain, at] of timers) {
    changes.u8(op);
    changes.u32(k);
    changes.u8(domain);
    changes.i64(at);
  }
  return changes.written();
}

/** `process`. */
function runProcess(rt, stage, header, input, keysBytes) {
  const [s, next] = stageOf(rt, stage, ["process"], "a process stage");
  let keys;
  try {
    keys = readKeys(keysBytes, s.states);
  } catch (e) {
    return failed(0, e);
  }
  const timers = [];
  const ctx = new Ctx(s.states, s.names, keys, timers, header);
  const f = s.f;
  const r = new Input(input);
  output.pos = 0;
  let index = 0;
  while (!r.atEnd) {
    const at = output.pos;
    const timersBefore = timers.length;
    try {
      const entryAt = r.pos;
      const tag = r.u8();
      const k = r.u32();
      const ts = r.i64();
      let event;
      if (tag === 0) {
        event = new Record(r.row(), ts);
      } else if (tag === 1) {
        const domain = r.u8();
        if (domain > 1) throw hostError(`the timer at byte ${entryAt} has time domain ${domain}`);
        event = new Timer(ts, domain === 0 ? Time.Event : Time.Processing);
      } else {
        throw hostError(`unknown entry tag ${tag} at byte ${entryAt}`);
      }
      if (k >= keys.length) throw hostError(`the entry at byte ${entryAt} names key ${k} of ${keys.length}`);
      ctx[ENTER](k, ts);
      output.u32(0);
      out[BEGIN](ts, next, rt.sides);
      f(ctx, event, out);
      output.view.setUint32(at, out[ROWS], true);
    } catch (e) {
      ctx[UNDO]();
      timers.length = timersBefore;
      return failed(index, e, output.buf.subarray(0, at), processChanges(keys, timers));
    }
    index++;
  }
  return done(output.written(), processChanges(keys, timers));
}

/** An aggregate the host shipped, checked: null (none) or its bytes. */
function aggregateOf(r, what) {
  const bytes = r.state();
  if (bytes !== null) checkState(bytes, VALUE, what);
  return bytes;
}

/** `(u32 slot, u32 len, u8{len})*` of the slots that changed. */
function slotChanges(aggs, changed) {
  changes.pos = 0;
  for (let i = 0; i < aggs.length; i++) {
    if (!changed[i]) continue;
    changes.u32(i);
    changes.sized(aggs[i]);
  }
  return changes.written();
}

/** `window-add`. */
function runWindowAdd(rt, stage, input, slotsBytes) {
  const [s] = stageOf(rt, stage, ["aggregate"], "an aggregate window stage");
  const aggs = [];
  try {
    const r = new Input(slotsBytes);
    const n = r.u32();
    for (let i = 0; i < n; i++) {
      r.value();
      r.i64();
      r.i64();
      aggs.push(aggregateOf(r, `the aggregate of slot ${i}`));
    }
    r.done("slot");
  } catch (e) {
    return failed(0, e);
  }
  const changed = new Uint8Array(aggs.length);
  const add = s.add;
  const r = new Input(input);
  let index = 0;
  while (!r.atEnd) {
    try {
      const at = r.pos;
      const slot = r.u32();
      if (slot >= aggs.length) throw hostError(`the entry at byte ${at} names slot ${slot} of ${aggs.length}`);
      const row = r.row();
      const acc = aggs[slot] === null ? undefined : decodeRow(aggs[slot]);
      aggs[slot] = encodeRow(add(acc, row), "what the window's add returned");
      changed[slot] = 1;
    } catch (e) {
      return failed(index, e, EMPTY, slotChanges(aggs, changed));
    }
    index++;
  }
  return done(EMPTY, slotChanges(aggs, changed));
}

/** `window-merge`. */
function runWindowMerge(rt, stage, input) {
  const [s] = stageOf(rt, stage, ["aggregate"], "an aggregate window stage");
  const pairs = [];
  const r = new Input(input);
  try {
    const n = r.u32();
    for (let i = 0; i < n; i++) {
      try {
        pairs.push([aggregateOf(r, `aggregate a of pair ${i}`), aggregateOf(r, `aggregate b of pair ${i}`)]);
      } catch (e) {
        return failed(i, e);
      }
    }
    r.done("pair");
  } catch (e) {
    return failed(0, e);
  }
  const merge = s.merge;
  changes.pos = 0;
  for (let i = 0; i < pairs.length; i++) {
    const [a, b] = pairs[i];
    let merged;
    if (a !== null && b !== null) {
      try {
        merged = encodeRow(merge(decodeRow(a), decodeRow(b)), "what the window's merge returned");
      } catch (e) {
        return failed(i, e, EMPTY, changes.copy());
      }
    } else if (a !== null || b !== null) {
      merged = a ?? b;
    } else {
      continue;
    }
    changes.u32(i);
    changes.sized(merged);
  }
  return done(EMPTY, changes.written());
}

/** `window-fire`: every window read first, then each fired. */
function runWindowFire(rt, stage, input) {
  const [s, next] = stageOf(rt, stage, ["aggregate", "window"], "a window stage");
  const aggregate = s.kind === "aggregate";
  const windows = [];
  const r = new Input(input);
  try {
    const n = r.u32();
    for (let i = 0; i < n; i++) {
      try {
        const key = r.value();
        const start = r.i64();
        const end = r.i64();
        const at = r.pos;
        const tag = r.u8();
        let contents;
        if (tag === 0) {
          const bytes = aggregateOf(r, `the aggregate of window ${i}`);
          contents = bytes === null ? undefined : bytes;
        } else if (tag === 1) {
          const m = r.u32();
          contents = [];
          for (let j = 0; j < m; j++) {
            const ts = r.i64();
            contents.push(new Record(r.row(), ts));
          }
        } else {
          throw hostError(`unknown window contents ${tag} at byte ${at}`);
        }
        if ((tag === 0) !== aggregate) {
          throw new TypeError(`stage ${stage} does not fire windows of this kind`);
        }
        windows.push([{ key, start, end }, contents]);
      } catch (e) {
        return failed(i, e);
      }
    }
    r.done("window");
  } catch (e) {
    return failed(0, e);
  }
  const fire = s.fire;
  output.pos = 0;
  for (let i = 0; i < windows.length; i++) {
    const [info, contents] = windows[i];
    const at = output.pos;
    try {
      const ts = timestamp(info.end - 1);
      output.u32(0);
      out[BEGIN](ts, next, rt.sides);
      if (aggregate) fire(info, contents === undefined ? undefined : decodeRow(contents), out);
      else fire(info, contents, out);
      output.view.setUint32(at, out[ROWS], true);
    } catch (e) {
      return failed(i, e, output.buf.subarray(0, at));
    }
  }
  return done(output.written(), EMPTY);
}

// ---------------------------------------------------------------- export

/**
 * Exports a pipeline as a Sluice 0.2.0 guest:
 * `export const { operator, job } = exportPipeline(pipeline)`, where
 * `pipeline(params)` returns a `Job` (`params` is a `Params`:
 * `params.get("name")`). Each instance builds the job once, with the
 * parameters `open` gets; `describe` builds it to describe it.
 */
export function exportPipeline(pipeline) {
  fn(pipeline, "exportPipeline's argument (params => Job)");
  const build = (params) => {
    const j = pipeline(new Params(params));
    if (!(j instanceof Job)) throw new TypeError(`the pipeline function must return a Job, not ${show(j)}`);
    return j;
  };
  let rt = null;
  const runtime = () => (rt ??= build([])[RUNTIME]());
  /** Runs a call; a failure before any entry fails entry 0. */
  const call = (run) => {
    try {
      return run(runtime());
    } catch (e) {
      return failed(0, e);
    }
  };

  const operator = {
    open(params) {
      try {
        rt = build(params)[RUNTIME]();
      } catch (e) {
        throw reason(e);
      }
    },
    map: (stage, header, input) => call((j) => runMap(j, stage, header, input)),
    process: (stage, header, input, keys) => call((j) => runProcess(j, stage, header, input, keys)),
    windowAdd: (stage, _header, input, slots) => call((j) => runWindowAdd(j, stage, input, slots)),
    windowMerge: (stage, input) => call((j) => runWindowMerge(j, stage, input)),
    windowFire: (stage, _header, input) => call((j) => runWindowFire(j, stage, input)),
  };

  const job = {
    describe: (params) => build(params).toWit(),
  };

  return { operator, job };
}
