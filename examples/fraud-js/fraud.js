// Flink's fraud detector (its DataStream tutorial) as a Sluice pipeline in
// JavaScript: the same job as `examples/fraud` in Rust.
//
// Input lines are `account,amount,timestamp` (timestamp in milliseconds
// since the Unix epoch). Per account, a transaction under 1.00 followed
// within one minute (event time) by one over 500.00 raises the alert
// `(account, amount)`. The host keeps each account's state and timer: they
// survive restarts, checkpoints and restores at another parallelism. Lines
// that do not parse go to the side output `malformed`; the account `POISON`
// throws, to show a poison record being dead-lettered while every other
// account's state carries on.
//
// Parameter: `ttl=MS` forgets an account's small transaction after MS of
// processing time without a write (a state TTL), whatever the timestamps.

import {
  exportPipeline,
  Job,
  State,
  Time,
  Restart,
  float,
  asInt,
  asFloat,
  trimWhitespace,
  parseFloat64,
  parseInt64,
  parseUint64,
} from "../../guest-sdk-js/pipeline.js";

/** The small transaction seen last (its amount), if any. */
const SMALL = 0;
/** When the small transaction's minute ends. */
const DEADLINE = 1;

const SMALL_AMOUNT = 1.0;
const LARGE_AMOUNT = 500.0;
const WINDOW_MS = 60_000;

/** `account,amount,timestamp` into `(account, amount)` at its timestamp. */
function parse(record, out) {
  const line = record.text;
  const fields = line.split(",").map(trimWhitespace);
  if (fields.length !== 3) return out.side("malformed", line);
  const [account, amountText, tsText] = fields;
  const amount = parseFloat64(amountText);
  const ts = parseInt64(tsText);
  if (amount === undefined || ts === undefined || account === "") return out.side("malformed", line);
  // Amounts are floats, whole ones too: 600 is sent as 600.0.
  out.emitAt(ts, account, float(amount));
}

/** Per account: remember a small transaction for a minute; a large one within it is an alert. */
function detect(ctx, event, out) {
  if (event.type === "timer") {
    // The minute after the small transaction is over.
    ctx.clear(SMALL);
    ctx.clear(DEADLINE);
    return;
  }
  if (ctx.key === "POISON") throw new Error("the account POISON cannot be processed");
  const amount = asFloat(event.row[1]) ?? 0;
  const deadline = asInt(ctx.value(DEADLINE)?.[0]);
  if (deadline !== undefined) {
    // The timer may not have fired yet when the batch holds rows past it:
    // the deadline decides, not the timer.
    if (amount > LARGE_AMOUNT && event.timestamp <= deadline) out.emit(ctx.key, float(amount));
    ctx.deleteTimer(Time.Event, deadline);
    ctx.clear(SMALL);
    ctx.clear(DEADLINE);
  }
  if (amount < SMALL_AMOUNT) {
    const deadline = event.timestamp + WINDOW_MS;
    ctx.set(SMALL, [float(amount)]);
    ctx.set(DEADLINE, [deadline]);
    ctx.setTimer(Time.Event, deadline);
  }
}

/** The account: field 0. */
const account = (row) => row[0];

function fraudDetector(params) {
  const ttl = parseUint64(params.get("ttl") ?? "");
  const state = (name) => (ttl === undefined ? State.value(name) : State.value(name).ttlMs(ttl));
  return new Job("fraud-detector")
    .source("socket://localhost:9100")
    .checkpointEveryMs(1000)
    .restart(Restart.fixedDelay(3, 1000))
    .watermarks(0)
    .sideOutput("malformed")
    .map("parse", parse)
    .keyBy(account)
    .process("detect", [state("small"), state("deadline")], detect);
}

export const { operator, job } = exportPipeline(fraudDetector);
