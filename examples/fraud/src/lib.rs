//! Flink's fraud detector (its DataStream tutorial) as a Sluice pipeline.
//!
//! Input lines are `account,amount,timestamp` (timestamp in milliseconds
//! since the Unix epoch). Per account, a transaction under 1.00 followed
//! within one minute (event time) by one over 500.00 raises the alert
//! `(account, amount)`. The host keeps each account's state and timer:
//! they survive restarts, checkpoints and restores at another parallelism.
//! Lines that do not parse go to the side output `malformed`; the account
//! `POISON` panics, to show a poison record being dead-lettered while every
//! other account's state carries on.
//!
//! Parameter: `ttl=MS` forgets an account's small transaction after MS of
//! processing time without a write (a state TTL), whatever the timestamps.

use sluice_guest::pipeline::{Ctx, Event, Job, Out, Record, State, Time};
use sluice_guest::{Params, Restart, Row, Value};
use std::time::Duration;

/// The small transaction seen last (its amount), if any.
const SMALL: usize = 0;
/// When the small transaction's minute ends.
const DEADLINE: usize = 1;

const SMALL_AMOUNT: f64 = 1.00;
const LARGE_AMOUNT: f64 = 500.00;
const WINDOW_MS: i64 = 60_000;

/// `account,amount,timestamp` into `(account, amount)` at its timestamp.
fn parse(r: &Record, out: &mut Out) {
    let line = r.text();
    let mut fields = line.split(',').map(str::trim);
    let (Some(account), Some(amount), Some(ts), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return out.side("malformed", (line,));
    };
    match (amount.parse::<f64>(), ts.parse::<i64>()) {
        (Ok(amount), Ok(ts)) if !account.is_empty() => out.emit_at(ts, (account, amount)),
        _ => out.side("malformed", (line,)),
    }
}

/// Per account: remember a small transaction for a minute; a large one
/// within it is an alert.
fn detect(cx: &mut Ctx, event: Event, out: &mut Out) {
    let Event::Row(r) = event else {
        // The minute after the small transaction is over.
        cx.clear(SMALL);
        cx.clear(DEADLINE);
        return;
    };
    if cx.key().as_str() == Some("POISON") {
        panic!("the account POISON cannot be processed");
    }
    let amount = r.row().field(1).as_float().unwrap_or(0.0);
    if let Some(deadline) = cx.value(DEADLINE).and_then(|d| d.field(0).as_int()) {
        // The timer may not have fired yet when the batch holds rows past
        // it: the deadline decides, not the timer.
        if amount > LARGE_AMOUNT && r.timestamp() <= deadline {
            out.emit((cx.key(), amount));
        }
        cx.delete_timer(Time::Event, deadline);
        cx.clear(SMALL);
        cx.clear(DEADLINE);
    }
    if amount < SMALL_AMOUNT {
        let deadline = r.timestamp() + WINDOW_MS;
        cx.set(SMALL, (amount,));
        cx.set(DEADLINE, (deadline,));
        cx.set_timer(Time::Event, deadline);
    }
}

/// The account: field 0.
fn account(row: &Row) -> Value<'_> {
    row.field(0)
}

fn job(params: &Params) -> Job {
    let ttl = params
        .get("ttl")
        .and_then(|t| t.parse().ok())
        .map(Duration::from_millis);
    let state = |name| match ttl {
        Some(ttl) => State::value(name).ttl(ttl),
        None => State::value(name),
    };
    Job::new("fraud-detector")
        .source("socket://localhost:9100")
        .checkpoint_every(Duration::from_secs(1))
        .restart(Restart::fixed_delay(3, Duration::from_secs(1)))
        .watermarks(Duration::ZERO)
        .side_output("malformed")
        .map("parse", parse)
        .key_by(account)
        .process("detect", [state("small"), state("deadline")], detect)
}

sluice_guest::pipeline!(job);
