// Write Sluice stream functions in JavaScript.
//
// A guest is two plain functions — a flat-map that turns one input line into
// any number of rows, and a key-selector that picks the key of a row — plus
// one line that exports them. This module owns the batching and the encoding
// of records across the WebAssembly boundary (see `wit/sluice-stream@0.1.0/stream.wit`), so the
// user's code never sees a byte buffer:
//
//     import { exportJob, splitWhitespace, JobDescription, Restart } from "../../guest-sdk-js/sluice.js";
//
//     function flatMap(line, out) {
//       if (line === "ERROR") throw new Error("received the line `ERROR`");
//       for (const word of splitWhitespace(line)) out.emit(word, 1);
//     }
//     const key = (row) => row[0];
//     const describe = (params) =>
//       new JobDescription("wordcount-js").source("socket://localhost:9100").sum(1)
//         .checkpointEveryMs(1000).restart(Restart.fixedDelay(3, 10_000));
//
//     export const { operator, job } = exportJob({ flatMap, key, describe });
//
// Values: a row is an array of values. A JS number that is a safe integer
// becomes an `int`, any other number a `float`; `float(x)` forces a float
// (`float(2)` is the float 2.0) and a BigInt is an int (it must fit in 64
// bits). Strings are `text`, booleans `boolean`, a Uint8Array is `bytes`,
// null and undefined are `null`. Rows the key-selector reads decode back to
// the same: int → number (a BigInt past 2^53), float → number (a `Float` when
// its value is a whole number, so it stays a float), text → string, bytes →
// Uint8Array.
//
// A record fails when the flat-map (or the key-selector, in the chained
// call) throws: the helper reports the exception's message as the record's
// `record-error` and the host sends the record to its restart strategy and
// dead-letter file. Guests must be deterministic: the host replays records.
//
// Guests get no clock and no stdio from the host (the component imports
// nothing from WASI): `Date.now()`, `new Date()` and `performance.now()`
// throw an Error (which fails the record) instead of trapping, and
// `console.log` and friends do nothing. `Math.random()` is a pseudo-random
// sequence seeded when the component is built.
//
// `trimWhitespace`, `parseInt64`, `parseUint64` and `parseFloat64` read text
// exactly as Rust's `str::trim` and `str::parse` do, and `asInt`/`asFloat`
// read decoded values like Rust's `Value::as_int`/`as_float`, so that a
// guest can behave like its Rust twin. The 0.2.0 contract (pipelines with
// keyed state, timers and windows) is `pipeline.js`, built on this module.
//
// Built with componentize-qjs (QuickJS), which has no TextEncoder or
// TextDecoder: a small UTF-8 codec below stands in for them. The module also
// works under ComponentizeJS (StarlingMonkey), which has both.

const NULL = 0;
const BOOL = 1;
const INT = 2;
const FLOAT = 3;
const TEXT = 4;
const BYTES = 5;

const TWO_32 = 4294967296;
const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;
const U64_MAX = 2n ** 64n - 1n;

// ---------------------------------------------------------------- sandbox

const noClock = () => new Error("a Sluice guest has no clock: its output must depend only on its input");

if (typeof globalThis.Date === "function") {
  const RealDate = globalThis.Date;
  const SluiceDate = class Date extends RealDate {
    constructor(...args) {
      if (args.length === 0) throw noClock();
      super(...args);
    }
    static now() {
      throw noClock();
    }
  };
  globalThis.Date = SluiceDate;
}
if (typeof globalThis.performance === "object") {
  try {
    Object.defineProperty(globalThis, "performance", {
      value: Object.freeze({
        now() {
          throw noClock();
        },
      }),
      configurable: true,
      writable: true,
    });
  } catch {
    // a runtime that keeps its own `performance`
  }
}
if (typeof globalThis.console !== "object") {
  const drop = () => {};
  globalThis.console = { log: drop, info: drop, warn: drop, error: drop, debug: drop, trace: drop };
}

// ---------------------------------------------------------------- values

/** A float value, for whole numbers that would otherwise be sent as ints. */
export class Float {
  /** @param {number} value */
  constructor(value) {
    this.value = Number(value);
  }
  valueOf() {
    return this.value;
  }
  toString() {
    return String(this.value);
  }
}

/** `float(2)` is the float 2.0 (a plain `2` would be the int 2). */
export const float = (value) => new Float(value);

/**
 * The integer of a decoded `int` value (a number, or a BigInt past 2^53),
 * like Rust's `Value::as_int`; undefined for any other value. Decoded
 * floats are never ints: a whole one is a `Float`, one past 2^53 a number
 * that is not a safe integer.
 */
export function asInt(v) {
  return typeof v === "bigint" || Number.isSafeInteger(v) ? v : undefined;
}

/**
 * The number of a decoded `float` or `int` value, like Rust's
 * `Value::as_float`; undefined for any other value.
 */
export function asFloat(v) {
  if (typeof v === "number") return v;
  if (v instanceof Float) return v.value;
  if (typeof v === "bigint") return Number(v);
  return undefined;
}

// ---------------------------------------------------------------- whitespace

// Rust's `char::is_whitespace` (Unicode White_Space), nothing else: JS's `\s`
// adds U+FEFF and lacks U+0085; Python's str.split adds U+001C..U+001F.
const WORD = /[^\t-\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]+/g;

/**
 * The words of `text`, split on Unicode white space exactly like Rust's
 * `str::split_whitespace` (no empty words).
 * @param {string} text
 * @returns {string[]}
 */
export function splitWhitespace(text) {
  // Most lines are printable ASCII words between single spaces, which
  // `split(" ")` splits the same, faster.
  if (SPACED_WORDS.test(text)) return text.split(" ");
  return text.match(WORD) ?? [];
}

const SPACED_WORDS = /^[!-~]+(?: [!-~]+)*$/;

const EDGE_SPACE = /^[\t-\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]+|[\t-\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]+$/g;

/**
 * `text` without white space at either end, exactly like Rust's `str::trim`
 * (JS's `String.prototype.trim` also strips U+FEFF and keeps U+0085).
 * @param {string} text
 */
export function trimWhitespace(text) {
  // Most text has none: an end that is printable ASCII is not white space.
  const first = text.charCodeAt(0);
  const last = text.charCodeAt(text.length - 1);
  if (first > 0x20 && first < 0x7f && last > 0x20 && last < 0x7f) return text;
  return text.replace(EDGE_SPACE, "");
}

// ---------------------------------------------------------------- numbers in text

// The grammars of Rust's `str::parse` for i64, u64 and f64: ASCII digits,
// an optional sign, no white space, no `0x` or `_`; `inf`, `infinity` and
// `nan` in any case. (JS's Number() takes "", " 1", "0x10" and "Infinity".)
const INT64 = /^[+-]?[0-9]+$/;
const UINT64 = /^\+?[0-9]+$/;
const FLOAT64 = /^[+-]?(?:[0-9]+\.?[0-9]*(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)$/i;

function integerIn(text, grammar, min, max) {
  if (typeof text !== "string" || !grammar.test(text)) return undefined;
  // 15 characters hold at most 15 digits: a safe integer (and -0 is 0).
  if (text.length <= 15) return Number(text) + 0;
  const v = BigInt(text);
  if (v < min || v > max) return undefined;
  return v >= -Number.MAX_SAFE_INTEGER && v <= Number.MAX_SAFE_INTEGER ? Number(v) : v;
}

/**
 * The 64-bit signed integer `text` spells, like Rust's `text.parse::<i64>()`:
 * a number (a BigInt past 2^53), or undefined when it is not one.
 * @param {string} text
 */
export function parseInt64(text) {
  return integerIn(text, INT64, I64_MIN, I64_MAX);
}

/**
 * The 64-bit unsigned integer `text` spells, like Rust's
 * `text.parse::<u64>()`: a number (a BigInt past 2^53), or undefined.
 * @param {string} text
 */
export function parseUint64(text) {
  return integerIn(text, UINT64, 0n, U64_MAX);
}

/**
 * The float `text` spells, like Rust's `text.parse::<f64>()` (correctly
 * rounded, as both are), or undefined when it is not one.
 * @param {string} text
 */
export function parseFloat64(text) {
  if (typeof text !== "string" || !FLOAT64.test(text)) return undefined;
  const v = Number(text);
  if (v === v) return v; // JS reads every form but `inf`, `infinity` and `nan` in any case
  const body = text.replace(/^[+-]/, "").toLowerCase();
  const sign = text[0] === "-" ? -1 : 1;
  if (body === "nan") return NaN;
  if (body === "inf" || body === "infinity") return sign * Infinity;
  return Number(text);
}

// ---------------------------------------------------------------- UTF-8

// StarlingMonkey has TextEncoder and TextDecoder; QuickJS has neither, so a
// small UTF-8 codec stands in for them there.
const encoder = typeof TextEncoder === "function" ? new TextEncoder() : null;
const decoder = typeof TextDecoder === "function" ? new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }) : null;
const NON_ASCII = /[^\0-\x7f]/;

/** Decodes `bytes[start, end)`; throws on invalid UTF-8. */
function decodeUtf8(bytes, start, end) {
  if (decoder !== null) return decoder.decode(bytes.subarray(start, end));
  // Latin-1 in native calls, which is the text when it is ASCII.
  const latin1 = fromCharCodes(bytes, start, end);
  return NON_ASCII.test(latin1) ? decodeUtf8Slow(bytes, start, end) : latin1;
}

function fromCharCodes(units, start, end) {
  if (end - start <= 4096) return String.fromCharCode.apply(null, units.subarray(start, end));
  let s = "";
  for (let i = start; i < end; i += 4096) {
    s += String.fromCharCode.apply(null, units.subarray(i, Math.min(end, i + 4096)));
  }
  return s;
}

function decodeUtf8Slow(b, i, end) {
  const units = new Uint16Array(end - i);
  let n = 0;
  const bad = () => {
    throw new TypeError("invalid UTF-8");
  };
  const cont = (j) => {
    if (j >= end || (b[j] & 0xc0) !== 0x80) bad();
    return b[j] & 0x3f;
  };
  while (i < end) {
    const c = b[i];
    let cp;
    if (c < 0x80) {
      cp = c;
      i += 1;
    } else if (c >= 0xc2 && c < 0xe0) {
      cp = ((c & 0x1f) << 6) | cont(i + 1);
      i += 2;
    } else if (c >= 0xe0 && c < 0xf0) {
      cp = ((c & 0x0f) << 12) | (cont(i + 1) << 6) | cont(i + 2);
      if (cp < 0x800 || (cp >= 0xd800 && cp < 0xe000)) bad();
      i += 3;
    } else if (c >= 0xf0 && c < 0xf5) {
      cp = ((c & 0x07) << 18) | (cont(i + 1) << 12) | (cont(i + 2) << 6) | cont(i + 3);
      if (cp < 0x10000 || cp > 0x10ffff) bad();
      i += 4;
    } else {
      bad();
    }
    if (cp >= 0x10000) {
      cp -= 0x10000;
      units[n++] = 0xd800 | (cp >> 10);
      units[n++] = 0xdc00 | (cp & 0x3ff);
    } else {
      units[n++] = cp;
    }
  }
  return fromCharCodes(units, 0, n);
}

/** Writes `s` as UTF-8 at `buf[at]` (3 bytes a UTF-16 unit are reserved); returns the length. */
function encodeUtf8(s, buf, at) {
  if (encoder !== null) return encoder.encodeInto(s, buf.subarray(at)).written;
  let p = at;
  const n = s.length;
  for (let i = 0; i < n; i++) {
    let c = s.charCodeAt(i);
    if (c < 0x80) {
      buf[p++] = c;
      continue;
    }
    if (c >= 0xd800 && c < 0xe000) {
      const d = i + 1 < n ? s.charCodeAt(i + 1) : 0;
      if (c < 0xdc00 && d >= 0xdc00 && d < 0xe000) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
        buf[p++] = 0xf0 | (c >> 18);
        buf[p++] = 0x80 | ((c >> 12) & 0x3f);
        buf[p++] = 0x80 | ((c >> 6) & 0x3f);
        buf[p++] = 0x80 | (c & 0x3f);
        continue;
      }
      c = 0xfffd; // a lone surrogate, as TextEncoder does
    }
    if (c < 0x800) {
      buf[p++] = 0xc0 | (c >> 6);
      buf[p++] = 0x80 | (c & 0x3f);
    } else {
      buf[p++] = 0xe0 | (c >> 12);
      buf[p++] = 0x80 | ((c >> 6) & 0x3f);
      buf[p++] = 0x80 | (c & 0x3f);
    }
  }
  return p - at;
}

// ---------------------------------------------------------------- the batch buffer

// One growing buffer per instance, reused across calls (only speed depends on
// it). During a flat-map it holds the batch's input, then the output from
// `base` on: a row's text that is a substring of an ASCII input line is
// copied from the input with one `copyWithin` instead of being encoded char
// by char, which is what costs most in an interpreter.
let buf = new Uint8Array(1 << 16);
let view = new DataView(buf.buffer);
let pos = 0;

// The current input line, while the flat-map runs.
let line = "";
let lineAt = 0; // where its bytes are in `buf`
let lineAscii = false; // its bytes are its chars: substrings can be copied
let cursor = 0; // where to look for the next emitted substring

function reserve(n) {
  if (pos + n <= buf.length) return;
  let cap = buf.length * 2;
  while (cap < pos + n) cap *= 2;
  const next = new Uint8Array(cap);
  next.set(buf.subarray(0, pos));
  buf = next;
  view = new DataView(buf.buffer);
}

function putText(s) {
  const n = s.length;
  if (pos + 5 + 3 * n > buf.length) reserve(5 + 3 * n);
  const at = pos;
  buf[at] = TEXT;
  if (lineAscii) {
    const i = line.indexOf(s, cursor);
    if (i >= 0) {
      buf.copyWithin(at + 5, lineAt + i, lineAt + i + n);
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

function putInt(v) {
  if (pos + 9 > buf.length) reserve(9);
  buf[pos] = INT;
  if ((v | 0) === v) {
    view.setInt32(pos + 1, v, true);
    view.setInt32(pos + 5, v >> 31, true);
  } else {
    const hi = Math.floor(v / TWO_32);
    view.setUint32(pos + 1, v - hi * TWO_32, true);
    view.setInt32(pos + 5, hi, true);
  }
  pos += 9;
}

function putFloat(v) {
  reserve(9);
  buf[pos] = FLOAT;
  view.setFloat64(pos + 1, v, true);
  pos += 9;
}

function putBytes(b) {
  reserve(5 + b.length);
  buf[pos] = BYTES;
  view.setUint32(pos + 1, b.length, true);
  buf.set(b, pos + 5);
  pos += 5 + b.length;
}

/** Appends one value (see the top of this file for the mapping). */
function putValue(v) {
  const type = typeof v;
  if (type === "string") return putText(v);
  if (type === "number" && (v | 0) === v) return putInt(v);
  switch (type) {
    case "string":
      putText(v);
      return;
    case "number":
      if (Number.isSafeInteger(v)) putInt(v);
      else putFloat(v);
      return;
    case "boolean":
      reserve(2);
      buf[pos] = BOOL;
      buf[pos + 1] = v ? 1 : 0;
      pos += 2;
      return;
    case "bigint":
      if (v < I64_MIN || v > I64_MAX) throw new RangeError(`the int ${v} does not fit in 64 bits`);
      reserve(9);
      buf[pos] = INT;
      view.setBigInt64(pos + 1, v, true);
      pos += 9;
      return;
    case "undefined":
      reserve(1);
      buf[pos++] = NULL;
      return;
    case "object":
      if (v === null) {
        reserve(1);
        buf[pos++] = NULL;
        return;
      }
      if (v instanceof Float) {
        putFloat(v.value);
        return;
      }
      if (v instanceof Uint8Array) {
        putBytes(v);
        return;
      }
      if (ArrayBuffer.isView(v)) {
        putBytes(new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
        return;
      }
      if (v instanceof ArrayBuffer) {
        putBytes(new Uint8Array(v));
        return;
      }
  }
  throw new TypeError(`cannot send ${describeType(v)} as a Sluice value`);
}

function describeType(v) {
  if (typeof v === "object") return `an object (${v.constructor?.name ?? "Object"})`;
  return `a ${typeof v}`;
}

// ---------------------------------------------------------------- input

function malformed(what, at) {
  return new Error(`malformed batch from the host: ${what} at byte ${at}`);
}

/** Reads rows and values of a batch, every bound checked. */
class Reader {
  constructor(bytes, start = 0, end = bytes.length) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = start;
    this.end = end;
  }

  need(n) {
    if (this.pos + n > this.end) throw malformed("truncated batch", this.pos);
  }

  u32() {
    this.need(4);
    const v = this.view.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }

  /** One row as an array of values. */
  row() {
    const count = this.u32();
    const row = [];
    for (let i = 0; i < count; i++) row.push(this.value());
    return row;
  }

  value() {
    this.need(1);
    const at = this.pos;
    const tag = this.bytes[this.pos++];
    switch (tag) {
      case NULL:
        return null;
      case BOOL:
        this.need(1);
        return this.bytes[this.pos++] !== 0;
      case INT: {
        this.need(8);
        const lo = this.view.getUint32(this.pos, true);
        const hi = this.view.getInt32(this.pos + 4, true);
        const v = hi * TWO_32 + lo;
        const r = Number.isSafeInteger(v) ? v : this.view.getBigInt64(this.pos, true);
        this.pos += 8;
        return r;
      }
      case FLOAT: {
        this.need(8);
        const v = this.view.getFloat64(this.pos, true);
        this.pos += 8;
        return Number.isSafeInteger(v) ? new Float(v) : v;
      }
      case TEXT:
      case BYTES: {
        const len = this.u32();
        this.need(len);
        const start = this.pos;
        this.pos += len;
        if (tag === BYTES) return this.bytes.slice(start, start + len);
        try {
          return decodeUtf8(this.bytes, start, start + len);
        } catch {
          throw malformed("text value that is not valid UTF-8", at);
        }
      }
      default:
        throw malformed(`unknown value tag ${tag}`, at);
    }
  }
}

// ---------------------------------------------------------------- collector

/** Where a flat-map sends its rows: `out.emit(word, 1)`, or
 * `out.emitEach(words, 1)` for one row per word. */
export class Collector {
  /** @internal */
  constructor() {
    this.key = null; // the key-selector, when the host asked for keys
    this.field = -1; // the key's field, when the key is a field index
    this.rows = 0;
    this.fieldAt = [];
    this.plain = new RowCache(-1); // rows of emitEach, without keys
    this.keyed = null; // and with, when the key is a field index
  }

  /** Emits one row from its values: `out.emit(word, 1)`. */
  emit(...values) {
    this.emitRow(values);
  }

  /**
   * Emits one row `[item, ...rest]` per item of `items` (an array or any
   * iterable): `out.emitEach(words, 1)` emits what
   * `for (const w of words) out.emit(w, 1)` does, in one call. With the key
   * a field index, the rows of string items are encoded once and kept, so a
   * row is a lookup and a copy. All the rows are emitted, or none when one
   * fails.
   */
  emitEach(items, ...rest) {
    if (!Array.isArray(items)) items = Array.from(items);
    const start = pos;
    const rows = this.rows;
    try {
      if (this.key !== null && this.field < 0) {
        // A key function runs once per row.
        for (let i = 0; i < items.length; i++) this.emitRow([items[i], ...rest]);
        return;
      }
      const shape = (this.key === null ? this.plain : this.keyed).shape(rest);
      const cache = shape.cache;
      const n = items.length;
      for (let i = 0; i < n; i++) {
        const item = items[i];
        let enc = typeof item === "string" ? cache.get(item) : undefined;
        if (enc === undefined) enc = shape.encode(item);
        const len = enc.length;
        if (pos + len > buf.length) reserve(len);
        buf.set(enc, pos);
        pos += len;
      }
      this.rows += n;
    } catch (e) {
      pos = start;
      this.rows = rows;
      throw e;
    }
  }

  /** Emits one row given as an array of values. */
  emitRow(row) {
    const n = row.length;
    if (pos + 4 > buf.length) reserve(4);
    view.setUint32(pos, n, true);
    pos += 4;
    this.rows++;
    const key = this.key;
    if (key === null) {
      for (let i = 0; i < n; i++) putValue(row[i]);
      return;
    }
    const at = this.fieldAt;
    for (let i = 0; i < n; i++) {
      at[i] = pos;
      putValue(row[i]);
    }
    at[n] = pos;
    const k = key(row);
    if (typeof k === "string") {
      // The key is usually one of the row's text fields: copy its bytes.
      for (let i = 0; i < n; i++) {
        if (row[i] === k) {
          const from = at[i];
          const len = at[i + 1] - from;
          if (pos + len > buf.length) reserve(len);
          buf.copyWithin(pos, from, from + len);
          pos += len;
          return;
        }
      }
    }
    putValue(k);
  }
}

// The rows kept by emitEach: about this many bytes in all, rows of up to
// MAX_ROW bytes, MAX_SHAPES shapes; past that the cache starts over.
const MAX_BYTES = 8 << 20;
const MAX_ROW = 512;
const MAX_SHAPES = 64;
const ENTRY = 64; // what a kept row costs beside its bytes: the Map's slot, the objects

/** The encodings of rows `[item, ...rest]` with their key (field `field`,
 * or none when it is -1), by item. */
class RowCache {
  constructor(field) {
    this.field = field;
    this.shapes = new Map(); // the rest's signature -> Shape
    this.bytes = 0;
    this.lastRest = null;
    this.last = null;
  }

  /** The shape of rows `[item, ...rest]`. Kept when every value of `rest`
   * is a primitive, whose `===` implies the same encoding (-0 and 0 are
   * both the int 0). */
  shape(rest) {
    const last = this.lastRest;
    if (last !== null && last.length === rest.length) {
      let same = true;
      for (let i = 0; i < rest.length; i++) {
        if (rest[i] !== last[i]) {
          same = false;
          break;
        }
      }
      if (same) return this.last;
    }
    let signature = "";
    for (let i = 0; i < rest.length; i++) {
      const v = rest[i];
      const t = typeof v;
      if (v !== null && (t === "object" || t === "function" || t === "symbol")) {
        return new Shape(this, rest, false); // not kept
      }
      signature += `${t}:${t === "string" ? v.length + ":" + v : String(v)};`;
    }
    let shape = this.shapes.get(signature);
    if (shape === undefined) {
      if (this.shapes.size >= MAX_SHAPES) this.clear(true);
      shape = new Shape(this, rest, true);
      this.shapes.set(signature, shape);
    }
    this.lastRest = rest;
    this.last = shape;
    return shape;
  }

  /** Forgets every row kept (and, with `shapes`, the shapes). */
  clear(shapes) {
    for (const shape of this.shapes.values()) shape.cache.clear();
    if (shapes) {
      this.shapes.clear();
      this.lastRest = null;
      this.last = null;
    }
    this.bytes = 0;
  }
}

class Shape {
  constructor(owner, rest, kept) {
    this.owner = owner;
    this.rest = rest;
    this.kept = kept;
    this.cache = new Map();
    const field = owner.field;
    if (field >= rest.length + 1) {
      throw new RangeError(`the key is field ${field}, but the row has ${rest.length + 1} values`);
    }
  }

  /** The encoded row of `item` (and its key), kept when it is a string. */
  encode(item) {
    const at = pos;
    const field = this.owner.field;
    const rest = this.rest;
    const n = rest.length + 1;
    if (pos + 4 > buf.length) reserve(4);
    view.setUint32(pos, n, true);
    pos += 4;
    const itemAt = pos;
    putValue(item);
    const itemEnd = pos;
    for (let i = 0; i < rest.length; i++) putValue(rest[i]);
    if (field === 0) {
      const len = itemEnd - itemAt;
      if (pos + len > buf.length) reserve(len);
      buf.copyWithin(pos, itemAt, itemEnd);
      pos += len;
    } else if (field > 0) {
      putValue(rest[field - 1]);
    }
    const enc = buf.slice(at, pos);
    pos = at;
    if (this.kept && typeof item === "string" && enc.length <= MAX_ROW) {
      const owner = this.owner;
      const cost = enc.length + 2 * item.length + ENTRY;
      if (owner.bytes + cost > MAX_BYTES) owner.clear(false);
      owner.bytes += cost;
      this.cache.set(item, enc);
    }
    return enc;
  }
}

// ---------------------------------------------------------------- job description

/** The job's parameters (`--param KEY=VALUE`), in the order given. */
export class Params {
  /** @param {[string, string][]} pairs */
  constructor(pairs) {
    this.pairs = pairs;
  }

  /** The value of `key`, if it was given (the last one wins). */
  get(key) {
    for (let i = this.pairs.length - 1; i >= 0; i--) {
      if (this.pairs[i][0] === key) return this.pairs[i][1];
    }
    return undefined;
  }

  /** All parameters in order, as `[key, value]`. */
  [Symbol.iterator]() {
    return this.pairs[Symbol.iterator]();
  }
}

/** Restart strategies, with Flink's semantics; durations in milliseconds. */
export const Restart = Object.freeze({
  /** Fail the job on the first task failure. */
  none: () => ({ tag: "none" }),
  /** At most `attempts` restarts over the job's life, `delayMs` apart. */
  fixedDelay: (attempts, delayMs) => ({
    tag: "fixed-delay",
    val: { attempts: u32(attempts, "attempts"), delayMs: u64(delayMs, "delayMs") },
  }),
  /** Fail when more than `maxFailures` failures happen within `intervalMs`. */
  failureRate: (maxFailures, intervalMs, delayMs) => ({
    tag: "failure-rate",
    val: {
      maxFailures: u32(maxFailures, "maxFailures"),
      intervalMs: u64(intervalMs, "intervalMs"),
      delayMs: u64(delayMs, "delayMs"),
    },
  }),
  /** A delay growing from `initialMs` to `maxMs` by `multiplier`. */
  exponentialDelay: (initialMs, maxMs, { multiplier = 2.0, resetAfterMs = 3_600_000, jitter = 0.1 } = {}) => ({
    tag: "exponential-delay",
    val: {
      initialMs: u64(initialMs, "initialMs"),
      maxMs: u64(maxMs, "maxMs"),
      multiplier: Number(multiplier),
      resetAfterMs: u64(resetAfterMs, "resetAfterMs"),
      jitter: Number(jitter),
    },
  }),
});

function u32(v, name) {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new RangeError(`${name} must be an integer from 0 to 2^32-1, not ${v}`);
  return v;
}

function u64(v, name) {
  if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`${name} must be a non-negative integer (milliseconds), not ${v}`);
  return v;
}

/** The job's defaults, like a Flink `main()`; command-line flags and a TOML file override them. */
export class JobDescription {
  #wit = {};

  /** @param {string} [name] the job's name, shown in logs */
  constructor(name) {
    if (name !== undefined) this.#wit.name = String(name);
  }

  /** The default source: `socket://HOST:PORT`, `file://PATH` or `-`. */
  source(uri) {
    this.#wit.source = String(uri);
    return this;
  }

  /** The default sink: `print`, `file://PATH` or `discard`. */
  sink(uri) {
    this.#wit.sink = String(uri);
    return this;
  }

  /** The keyed aggregation: `kind` is `"sum"`, `"count"`, `"min"` or `"max"`. */
  aggregate(kind, field) {
    if (!["sum", "count", "min", "max"].includes(kind)) throw new RangeError(`unknown aggregation ${kind}`);
    this.#wit.aggregation = { kind, field: u32(field, "field") };
    return this;
  }

  /** Running sum of field `field`. */
  sum(field) {
    return this.aggregate("sum", field);
  }

  /** Running count of rows, written into field `field`. */
  count(field) {
    return this.aggregate("count", field);
  }

  /** Running minimum of field `field`. */
  min(field) {
    return this.aggregate("min", field);
  }

  /** Running maximum of field `field`. */
  max(field) {
    return this.aggregate("max", field);
  }

  /** Checkpoint every `ms` milliseconds. */
  checkpointEveryMs(ms) {
    this.#wit.checkpointIntervalMs = u64(ms, "checkpoint interval");
    return this;
  }

  /** Turn checkpointing off by default. */
  noCheckpoints() {
    this.#wit.checkpointIntervalMs = 0;
    return this;
  }

  /** The restart strategy, from `Restart`. */
  restart(strategy) {
    this.#wit.restart = strategy;
    return this;
  }

  /** The default number of parallel subtasks. */
  parallelism(n) {
    this.#wit.parallelism = u32(n, "parallelism");
    return this;
  }

  /**
   * Limits for each guest instance; leave a field out for the host's default.
   * @param {{memoryBytes?: number, callTimeoutMs?: number, maxRowsPerRecord?: number, maxBytesPerRecord?: number}} limits
   */
  limits({ memoryBytes, callTimeoutMs, maxRowsPerRecord, maxBytesPerRecord }) {
    const opt = (v, check, name) => (v === undefined ? undefined : check(v, name));
    this.#wit.limits = {
      memoryBytes: opt(memoryBytes, u64, "memoryBytes"),
      callTimeoutMs: opt(callTimeoutMs, u64, "callTimeoutMs"),
      maxRowsPerRecord: opt(maxRowsPerRecord, u32, "maxRowsPerRecord"),
      maxBytesPerRecord: opt(maxBytesPerRecord, u64, "maxBytesPerRecord"),
    };
    return this;
  }

  /** The `job-description` record as the component bindings take it. */
  toWit() {
    return this.#wit;
  }
}

// ---------------------------------------------------------------- export

/**
 * Reads the input record at `buf[p]` (the batch is in `buf[0, end)`) into
 * `line`; returns the next record's offset. Throws for a record that is not
 * one text value, which fails that record.
 */
function readLine(p, end) {
  if (p + 9 <= end && view.getUint32(p, true) === 1 && buf[p + 4] === TEXT) {
    const len = view.getUint32(p + 5, true);
    const start = p + 9;
    if (start + len > end) throw malformed("truncated batch", p);
    try {
      line = decodeUtf8(buf, start, start + len);
    } catch {
      throw new Error("the record's text is not valid UTF-8");
    }
    lineAt = start;
    lineAscii = line.length === len;
    cursor = 0;
    return start + len;
  }
  new Reader(buf, p, end).row(); // a malformed batch says so
  throw new Error("the record is not a single text value");
}

/** The field index `key` is, or -1 when it is a function; else a TypeError. */
function keyField(key) {
  if (typeof key === "function") return -1;
  if (Number.isSafeInteger(key) && key >= 0) return key;
  throw new TypeError("exportJob needs a key: a function of the row, or the index of its field (0 or more)");
}

/** The key selector of the key at field `i`. */
function fieldKey(i) {
  return (row) => {
    if (i >= row.length) throw new RangeError(`the key is field ${i}, but the row has ${row.length} values`);
    return row[i];
  };
}

/** The message a record fails with, from whatever was thrown. */
function messageOf(e) {
  if (e instanceof Error) return e.name === "Error" ? e.message : `${e.name}: ${e.message}`;
  return String(e);
}

/**
 * Exports the user's functions as a Sluice guest:
 * `export const { operator, job } = exportJob({ flatMap, key, describe, open })`.
 *
 * - `flatMap(line, out)`: called per input line; `out.emit(...values)` emits a row; throwing fails the record.
 * - `key(row)`: the key of an emitted row (an array of values); or `key: 0`, the index of the key's field.
 * - `describe(params)` (optional): returns a `JobDescription`.
 * - `open(params)` (optional): called on every fresh instance before any record; throwing fails the task.
 *
 * `params` is a `Params`: `params.get("name")`.
 */
export function exportJob({ flatMap, key, describe, open }) {
  if (typeof flatMap !== "function") throw new TypeError("exportJob needs a flatMap function");
  const field = keyField(key);
  if (field >= 0) key = fieldKey(field);
  const out = new Collector();
  if (field >= 0) out.keyed = new RowCache(field);

  function runFlatMap(records, keyed) {
    out.key = keyed ? key : null;
    out.field = keyed ? field : -1;
    // The input goes to the front of the buffer, the output after it.
    const end = records.length;
    pos = 0;
    reserve(end + 2 * end + 1024);
    buf.set(records, 0);
    const base = end;
    pos = base;
    let p = 0;
    let index = 0;
    try {
      while (p < end) {
        const countAt = pos;
        if (pos + 4 > buf.length) reserve(4);
        pos += 4;
        out.rows = 0;
        try {
          p = readLine(p, end);
          flatMap(line, out);
        } catch (e) {
          return { output: buf.slice(base, countAt), failed: { index, message: messageOf(e) } };
        }
        view.setUint32(countAt, out.rows, true);
        index++;
      }
    } finally {
      line = "";
      lineAscii = false;
    }
    return { output: buf.subarray(base, pos), failed: undefined };
  }

  const operator = {
    open(params) {
      if (open) {
        try {
          open(new Params(params));
        } catch (e) {
          throw messageOf(e);
        }
      }
    },
    flatMap: (records) => runFlatMap(records, false),
    flatMapKeyed: (records) => runFlatMap(records, true),
    keySelector(rows) {
      pos = 0;
      const reader = new Reader(rows);
      let index = 0;
      while (reader.pos < reader.end) {
        try {
          putValue(key(reader.row()));
        } catch (e) {
          throw { index, message: messageOf(e) };
        }
        index++;
      }
      return buf.subarray(0, pos);
    },
  };

  const job = {
    describe(params) {
      const d = describe ? describe(new Params(params)) : undefined;
      if (d === undefined || d === null) return {};
      if (!(d instanceof JobDescription)) throw new TypeError("describe must return a JobDescription");
      return d.toWit();
    },
  };

  return { operator, job };
}

// ---------------------------------------------------------------- for pipeline.js

/**
 * The pieces `pipeline.js` (the 0.2.0 API) shares with this module: not an
 * API, and not kept stable.
 * @internal
 */
export const __internal = Object.freeze({ decodeUtf8, encodeUtf8, messageOf, RowCache, MAX_BYTES, MAX_SHAPES });
