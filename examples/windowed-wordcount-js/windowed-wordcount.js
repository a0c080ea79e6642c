// WordCount over event-time windows as a Sluice pipeline in JavaScript: the
// same job as `examples/windowed-wordcount` in Rust.
//
// Input lines are `timestamp words...` (timestamp in milliseconds since the
// Unix epoch). Each word is counted per window; a window's counts are
// emitted as `(word, start, end, count)` once the watermark passes its end,
// and again when a late word within the allowed lateness updates it. Words
// later than that go to the side output `late`.
//
// Parameters: `windows=tumbling|sliding|session` (default tumbling),
// `size=MS` (window length, or the session gap; default 10000), `slide=MS`
// (sliding windows; default size / 2), `lateness=MS` (default 0),
// `out-of-orderness=MS` (default 0), and `function=process` to count in a
// window function over the window's words instead of an aggregate.

import { exportPipeline, Job, Windows, asInt, splitWhitespace, parseInt64, parseUint64 } from "../../guest-sdk-js/pipeline.js";

/** `timestamp words...` into `(word, 1)` rows at that timestamp. */
function split(record, out) {
  const line = record.text;
  const [first, ...words] = splitWhitespace(line);
  const ts = parseInt64(first ?? "");
  if (ts === undefined) return out.side("malformed", line);
  for (const word of words) out.emitAt(ts, word, 1);
}

const word = (row) => row[0];

/** The count so far plus one. */
const add = (acc, _row) => [(asInt(acc?.[0]) ?? 0) + 1];

/** Two sessions' counts together. */
const merge = (a, b) => [(asInt(a[0]) ?? 0) + (asInt(b[0]) ?? 0)];

function fire(w, acc, out) {
  out.emit(w.key, w.start, w.end, asInt(acc?.[0]) ?? 0);
}

function fireContents(w, records, out) {
  out.emit(w.key, w.start, w.end, records.length);
}

function ms(params, key, fallback) {
  return parseUint64(params.get(key) ?? "") ?? fallback;
}

function windowedWordcount(params) {
  const size = ms(params, "size", 10_000);
  const slide = ms(params, "slide", Math.max(1, Math.floor(Number(size) / 2)));
  const kind = params.get("windows");
  const windows = (
    kind === "sliding" ? Windows.sliding(size, slide) : kind === "session" ? Windows.session(size) : Windows.tumbling(size)
  )
    .allowedLatenessMs(ms(params, "lateness", 0))
    .lateOutput("late");
  const job = new Job("windowed-wordcount")
    .source("socket://localhost:9100")
    .checkpointEveryMs(1000)
    .watermarks(ms(params, "out-of-orderness", 0))
    .sideOutput("late")
    .sideOutput("malformed")
    .map("split", split)
    .keyBy(word);
  return params.get("function") === "process"
    ? job.window("count", windows, fireContents)
    : job.aggregate("count", windows, add, merge, fire);
}

export const { operator, job } = exportPipeline(windowedWordcount);
