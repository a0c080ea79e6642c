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

const { decodeUtf8, encodeUtf8, messageOf } = __internal;

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

// The buffer being written, in module variables (the cheapest access an
// interpreter has): the call's output, or for a moment a state's bytes or
// the call's changes (`writeApart`). Reused across calls: one instance runs
// one call at a time.
let buf = new Uint8Array(1 << 16);
let view = new DataView(buf.buffer);
let pos = 0;

// The first stage's current line, while its function runs: a text value
// that is a substring of an ASCII line is copied from the input's bytes
// instead of being encoded char by char (what costs most in QuickJS).
let line = "";
let lineBytes = EMPTY;
let lineAt = 0;
let lineAscii = false;
let cursor = 0;

function reserve(n) {
  if (pos + n <= buf.length) return;
  let cap = buf.length * 2;
  while (cap < pos + n) cap *= 2;
  const next = new Uint8Array(cap);
  next.set(buf.subarray(0, pos));
  buf = next;
  view = new DataView(buf.buffer);
}

function putU8(v) {
  if (pos + 1 > buf.length) reserve(1);
  buf[pos++] = v;
}

function putU32(v) {
  if (pos + 4 > buf.length) reserve(4);
  view.setUint32(pos, v, true);
  pos += 4;
}

/** An `s64`: a safe integer, or anything else `timestamp` takes. */
function putI64(v) {
  if (pos + 8 > buf.length) reserve(8);
  if (typeof v === "number" && (v | 0) === v) {
    view.setInt32(pos, v, true);
    view.setInt32(pos + 4, v >> 31, true);
  } else if (Number.isSafeInteger(v)) {
    const hi = Math.floor(v / TWO_32);
    view.setUint32(pos, v - hi * TWO_32, true);
    view.setInt32(pos + 4, hi, true);
  } else {
    view.setBigInt64(pos, BigInt(timestamp(v)), true);
  }
  pos += 8;
}

function putRaw(bytes) {
  if (pos + bytes.length > buf.length) reserve(bytes.length);
  buf.set(bytes, pos);
  pos += bytes.length;
}

/** `u32 len, bytes`. */
function putSized(bytes) {
  putU32(bytes.length);
  putRaw(bytes);
}

function putText(s) {
  const n = s.length;
  if (pos + 5 + 3 * n > buf.length) reserve(5 + 3 * n);
  const at = pos;
  buf[at] = TEXT;
  if (lineAscii) {
    // From where the last one ended, then (a key, often the row's first field) from the start.
    let i = line.indexOf(s, cursor);
    if (i < 0 && cursor > 0) i = line.indexOf(s);
    if (i >= 0) {
      buf.set(lineBytes.subarray(lineAt + i, lineAt + i + n), at + 5);
      cursor = i + n;
      view.setUint32(at + 1, n, true);
      pos = at + 5 + n;
      return;
    }
    lineAscii = false; // not a substring: stop looking in this line
  }
  const len = n === 0 ? 0 : encodeUtf8(s, buf, at + 5);
  view.setUint32(at + 1, len, true);
  pos = at + 5 + len;
}

function putFloat(v) {
  if (pos + 9 > buf.length) reserve(9);
  buf[pos] = FLOAT;
  view.setFloat64(pos + 1, v, true);
  pos += 9;
}

/** One value, mapped as `sluice.js` maps it. */
function putValue(v) {
  switch (typeof v) {
    case "string":
      putText(v);
      return;
    case "number":
      if (Number.isSafeInteger(v)) {
        putU8(INT);
        putI64(v);
      } else {
        putFloat(v);
      }
      return;
    case "boolean":
      putU8(BOOL);
      putU8(v ? 1 : 0);
      return;
    case "bigint":
      if (v < I64_MIN || v > I64_MAX) throw new RangeError(`the int ${v} does not fit in 64 bits`);
      putU8(INT);
      putI64(v);
      return;
    case "undefined":
      putU8(NULL);
      return;
    case "object":
      if (v === null) {
        putU8(NULL);
        return;
      }
      if (v instanceof Float) {
        putFloat(v.value);
        return;
      }
      if (v instanceof Uint8Array) {
        putU8(BYTES);
        putSized(v);
        return;
      }
      if (ArrayBuffer.isView(v)) {
        putU8(BYTES);
        putSized(new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
        return;
      }
      if (v instanceof ArrayBuffer) {
        putU8(BYTES);
        putSized(new Uint8Array(v));
        return;
      }
  }
  throw new TypeError(`cannot send ${show(v)} as a Sluice value`);
}

/** A row: `u32 count, value{count}`. */
function putRow(row) {
  const n = row.length;
  putU32(n);
  for (let i = 0; i < n; i++) putValue(row[i]);
}

/** A buffer besides the output: a state's bytes, a call's changes. */
class Apart {
  constructor(size) {
    this.buf = new Uint8Array(size);
    this.view = new DataView(this.buf.buffer);
  }
}

const changesApart = new Apart(1 << 12);
const scratchApart = new Apart(1 << 12);

/**
 * Runs `write` with `apart` as the buffer being written, from its start;
 * returns what it wrote as a view (valid until `apart` is written again).
 */
function writeApart(apart, write) {
  const b = buf;
  const v = view;
  const p = pos;
  buf = apart.buf;
  view = apart.view;
  pos = 0;
  try {
    write();
    return buf.subarray(0, pos);
  } finally {
    apart.buf = buf;
    apart.view = view;
    buf = b;
    view = v;
    pos = p;
  }
}

/** `row`, which `what` names in the error when it is not an array. */
function isRow(row, what) {
  if (!Array.isArray(row)) throw new TypeError(`${what} is not a row (an array of values) but ${show(row)}`);
  return row;
}

/** `row` encoded on its own, as a copy (`writeApart` without a closure: states are set often). */
function encodeRow(row, what) {
  isRow(row, what);
  const b = buf;
  const v = view;
  const p = pos;
  buf = scratchApart.buf;
  view = scratchApart.view;
  pos = 0;
  try {
    putRow(row);
    return buf.slice(0, pos);
  } finally {
    scratchApart.buf = buf;
    scratchApart.view = view;
    buf = b;
    view = v;
    pos = p;
  }
}

/** `v` encoded on its own, as a copy. */
function encodeValue(v) {
  return writeApart(scratchApart, () => putValue(v)).slice();
}

// ---------------------------------------------------------------- reading

/**
 * Reads the host's buffers, every bound checked; values decode as in
 * sluice.js (int: a number, a BigInt past 2^53; float: a number, a `Float`
 * when whole; text: a string; bytes: a Uint8Array copy). The checks are
 * written out in each method: calls are what costs in an interpreter.
 */
class Input {
  constructor(bytes, start = 0, end = bytes.length) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = start;
    this.end = end;
  }

  get atEnd() {
    return this.pos >= this.end;
  }

  truncated(at) {
    return hostError(`truncated batch at byte ${at}`);
  }

  u8() {
    const p = this.pos;
    if (p + 1 > this.end) throw this.truncated(p);
    this.pos = p + 1;
    return this.bytes[p];
  }

  u32() {
    const p = this.pos;
    if (p + 4 > this.end) throw this.truncated(p);
    this.pos = p + 4;
    return this.view.getUint32(p, true);
  }

  /** An `s64` as a number (rounded past 2^53). */
  i64() {
    const p = this.pos;
    if (p + 8 > this.end) throw this.truncated(p);
    this.pos = p + 8;
    return this.view.getInt32(p + 4, true) * TWO_32 + this.view.getUint32(p, true);
  }

  /** One row as an array of values. */
  row() {
    const n = this.u32();
    const row = [];
    for (let i = 0; i < n; i++) row.push(this.value());
    return row;
  }

  value() {
    const at = this.pos;
    const end = this.end;
    if (at + 1 > end) throw this.truncated(at);
    const tag = this.bytes[at];
    const p = at + 1;
    switch (tag) {
      case NULL:
        this.pos = p;
        return null;
      case BOOL:
        if (p + 1 > end) throw this.truncated(p);
        this.pos = p + 1;
        return this.bytes[p] !== 0;
      case INT: {
        if (p + 8 > end) throw this.truncated(p);
        this.pos = p + 8;
        const v = this.view.getInt32(p + 4, true) * TWO_32 + this.view.getUint32(p, true);
        return Number.isSafeInteger(v) ? v : this.view.getBigInt64(p, true);
      }
      case FLOAT: {
        if (p + 8 > end) throw this.truncated(p);
        this.pos = p + 8;
        const v = this.view.getFloat64(p, true);
        return Number.isSafeInteger(v) ? new Float(v) : v;
      }
      case TEXT:
      case BYTES: {
        if (p + 4 > end) throw this.truncated(p);
        const len = this.view.getUint32(p, true);
        const start = p + 4;
        if (start + len > end) throw this.truncated(start);
        this.pos = start + len;
        if (tag === BYTES) return this.bytes.slice(start, start + len);
        try {
          return decodeUtf8(this.bytes, start, start + len);
        } catch {
          throw hostError(`text value that is not valid UTF-8 at byte ${at}`);
        }
      }
      default:
        throw hostError(`unknown value tag ${tag} at byte ${at}`);
    }
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
    const p = this.pos;
    if (p + len > this.end) throw this.truncated(p);
    this.pos = p + len;
    return this.bytes.subarray(p, p + len);
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

  /** The time it was set for, as `ctx.timestamp` and a row's `timestamp`. */
  get timestamp() {
    return this.at;
  }
}

// Where the current entry's rows go (one entry runs at a time).
let emitTimestamp = 0;
let emitKey = null;
let emitSides = [];
let emitRows = 0;

/** Starts an entry's list of emitted rows; returns where its count is. */
function beginList(ts, key, sides) {
  const at = pos;
  putU32(0);
  emitTimestamp = ts;
  emitKey = key;
  emitSides = sides;
  emitRows = 0;
  return at;
}

function endList(at) {
  view.setUint32(at, emitRows, true);
}

function putEmitted(ts, row) {
  putU8(0);
  putI64(ts);
  putRow(row);
  if (emitKey !== null) putValue(emitKey(row));
  emitRows++;
}

/** Where a stage's rows go: `out.emit(...values)` to the next stage (or the sink), `out.side(name, ...values)` to a side output. */
export class Out {
  /** Emits a row with the input's timestamp (a fired window's: its last millisecond; a timer's: the time it was set for). */
  emit(...values) {
    putEmitted(emitTimestamp, values);
  }

  /** Emits a row with timestamp `ts`: in the first stage, the event time the watermark follows. */
  emitAt(ts, ...values) {
    putEmitted(typeof ts === "number" && (ts | 0) === ts ? ts : timestamp(ts), values);
  }

  /** Emits a row given as an array of values, with the input's timestamp. */
  emitRow(row) {
    putEmitted(emitTimestamp, isRow(row, "the row given to emitRow"));
  }

  /** Sends a row to the side output `name` (declared with `Job.sideOutput`), with the input's timestamp. */
  side(name, ...values) {
    const i = emitSides.indexOf(name);
    if (i < 0) throw new Error(`there is no side output named ${show(name)}; declare it with Job.sideOutput`);
    putU8(i + 1);
    putI64(emitTimestamp);
    putRow(values);
    emitRows++;
  }
}

const ENTER = Symbol("enter");
const UNDO = Symbol("undo");

/**
 * One key of a process call as shipped: the key, each declared
 * state's bytes (null: none) and which of them the call changed.
 */
class KeyStates {
  constructor(index, key, slots) {
    this.index = index;
    this.key = key;
    this.slots = slots;
    this.changed = new Uint8Array(slots.length);
    // Whether a shipped state was checked: each is, the first time it is read.
    this.checked = new Uint8Array(slots.length);
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
    for (let i = undo.length - 4; i >= 0; i -= 4) {
      const ks = undo[i];
      const s = undo[i + 1];
      ks.slots[s] = undo[i + 2];
      ks.changed[s] = undo[i + 3];
    }
    undo.length = 0;
  }

  /** The key. */
  get key() {
    return this.#current.key;
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

  /** State `s`'s bytes (null: none); a shipped state is checked against its kind first. */
  #read(s) {
    const ks = this.#current;
    const bytes = ks.slots[s];
    if (bytes !== null && !ks.changed[s] && !ks.checked[s]) {
      const decl = this.#decls[s];
      checkState(bytes, decl.kind, `state \`${decl.name}\` of key ${ks.index}`);
      ks.checked[s] = 1;
    }
    return bytes;
  }

  #write(s, bytes) {
    const ks = this.#current;
    this.#undo.push(ks, s, ks.slots[s], ks.changed[s]);
    ks.slots[s] = bytes;
    ks.changed[s] = 1;
  }

  /** A value state's row (an array of values), or undefined when it is not set. */
  value(state) {
    const bytes = this.#read(this.#state(state, VALUE));
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
    const bytes = this.#read(this.#state(state, LIST));
    return bytes === null ? [] : decodeList(bytes);
  }

  /** Appends `row` to a list state. */
  push(state, row) {
    const s = this.#state(state, LIST);
    isRow(row, "the row given to Ctx.push");
    const before = this.#read(s);
    const bytes = writeApart(scratchApart, () => {
      if (before === null) {
        putU32(1);
      } else {
        putU32(new DataView(before.buffer, before.byteOffset, 4).getUint32(0, true) + 1);
        putRaw(before.subarray(4));
      }
      putRow(row);
    });
    this.#write(s, bytes.slice());
  }

  /** Replaces a list state's rows with `rows` (cleared when there are none). */
  setList(state, rows) {
    const s = this.#state(state, LIST);
    const all = [...rows];
    if (all.length === 0) return this.#write(s, null);
    for (const row of all) isRow(row, "a row given to Ctx.setList");
    const bytes = writeApart(scratchApart, () => {
      putU32(all.length);
      for (const row of all) putRow(row);
    });
    this.#write(s, bytes.slice());
  }

  /** A map state's entries as `[key, row]`, in the order they were put. */
  entries(state) {
    const bytes = this.#read(this.#state(state, MAP));
    if (bytes === null) return [];
    const r = new Input(bytes);
    const n = r.u32();
    const out = [];
    for (let i = 0; i < n; i++) out.push([r.value(), r.row()]);
    return out;
  }

  /** The row of `key` in a map state, or undefined. */
  get(state, key) {
    const bytes = this.#read(this.#state(state, MAP));
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
    const before = this.#read(s);
    const items = before === null ? [] : mapItems(before).filter(([k]) => !sameValue(k, key));
    if (row !== null) items.push([key, row]);
    if (items.length === 0) return this.#write(s, null);
    const bytes = writeApart(scratchApart, () => {
      putU32(items.length);
      for (const [k, r] of items) {
        putRaw(k);
        putRaw(r);
      }
    });
    this.#write(s, bytes.slice());
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

/** The first stage's record at `input[start, end)`: its text can be copied from there when it is ASCII. */
function startLine(row, input, start, end) {
  const text = row[0];
  lineAscii = row.length === 1 && typeof text === "string" && end - start - 9 === text.length;
  if (!lineAscii) return;
  line = text;
  lineBytes = input;
  lineAt = start + 9;
  cursor = 0;
}

function endLine() {
  line = "";
  lineBytes = EMPTY;
  lineAscii = false;
}

/** `map`. */
function runMap(rt, stage, header, input) {
  const [s, next] = stageOf(rt, stage, ["map"], "a map stage");
  const f = s.f;
  const r = new Input(input);
  const first = stage === 0;
  pos = 0;
  let index = 0;
  try {
    while (!r.atEnd) {
      const at = pos;
      try {
        const ts = first ? header.processingTime : r.i64();
        const start = r.pos;
        const record = new Record(r.row(), ts);
        if (first) startLine(record.row, input, start, r.pos);
        const list = beginList(ts, next, rt.sides);
        f(record, out);
        endList(list);
      } catch (e) {
        return failed(index, e, buf.subarray(0, at));
      }
      index++;
    }
  } finally {
    endLine();
  }
  return done(buf.subarray(0, pos), EMPTY);
}

/** `keys := u32 key-count, (value key, state{declared states}){key-count}`, checked. */
function readKeys(bytes, decls) {
  const r = new Input(bytes);
  const n = r.u32();
  const keys = [];
  for (let k = 0; k < n; k++) {
    const key = r.value();
    const slots = [];
    // Each state is checked against its kind when it is first read.
    for (let s = 0; s < decls.length; s++) slots.push(r.state());
    keys.push(new KeyStates(k, key, slots));
  }
  r.done("key");
  return keys;
}

/** A process call's changes: each changed state, then the timers in the order they were set and deleted. */
function processChanges(keys, timers) {
  return writeApart(changesApart, () => {
    for (let k = 0; k < keys.length; k++) {
      const ks = keys[k];
      for (let s = 0; s < ks.slots.length; s++) {
        if (!ks.changed[s]) continue;
        const bytes = ks.slots[s];
        putU8(bytes === null ? 1 : 0);
        putU32(k);
        putU32(s);
        if (bytes !== null) putSized(bytes);
      }
    }
    for (const [k, op, domain, at] of timers) {
      putU8(op);
      putU32(k);
      putU8(domain);
      putI64(at);
    }
  });
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
  pos = 0;
  let index = 0;
  while (!r.atEnd) {
    const at = pos;
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
      const list = beginList(ts, next, rt.sides);
      f(ctx, event, out);
      endList(list);
    } catch (e) {
      ctx[UNDO]();
      timers.length = timersBefore;
      return failed(index, e, buf.subarray(0, at), processChanges(keys, timers));
    }
    index++;
  }
  return done(buf.subarray(0, pos), processChanges(keys, timers));
}

/** An aggregate the host shipped, checked: null (none) or its bytes. */
function aggregateOf(r, what) {
  const bytes = r.state();
  if (bytes !== null) checkState(bytes, VALUE, what);
  return bytes;
}

/** `(u32 slot, u32 len, u8{len})*` of the slots that changed. */
function slotChanges(aggs, changed) {
  return writeApart(changesApart, () => {
    for (let i = 0; i < aggs.length; i++) {
      if (!changed[i]) continue;
      putU32(i);
      putSized(aggs[i]);
    }
  });
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

/** `(u32 pair, u32 len, u8{len})*` of the merged pairs. */
function mergeChanges(merged) {
  return writeApart(changesApart, () => {
    for (const [i, bytes] of merged) {
      putU32(i);
      putSized(bytes);
    }
  });
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
  const merged = [];
  for (let i = 0; i < pairs.length; i++) {
    const [a, b] = pairs[i];
    if (a !== null && b !== null) {
      try {
        merged.push([i, encodeRow(merge(decodeRow(a), decodeRow(b)), "what the window's merge returned")]);
      } catch (e) {
        return failed(i, e, EMPTY, mergeChanges(merged));
      }
    } else if (a !== null || b !== null) {
      merged.push([i, a ?? b]);
    }
  }
  return done(EMPTY, mergeChanges(merged));
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
  pos = 0;
  for (let i = 0; i < windows.length; i++) {
    const [info, contents] = windows[i];
    const at = pos;
    try {
      const list = beginList(timestamp(info.end - 1), next, rt.sides);
      if (aggregate) fire(info, contents === undefined ? undefined : decodeRow(contents), out);
      else fire(info, contents, out);
      endList(list);
    } catch (e) {
      return failed(i, e, buf.subarray(0, at));
    }
  }
  return done(buf.subarray(0, pos), EMPTY);
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
