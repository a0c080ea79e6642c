/* Flink's fraud detector (its DataStream tutorial) as a Sluice pipeline, in
 * C: the same job as the Rust example (examples/fraud), on the same
 * contract (sluice:stream@0.2.0), with the same output.
 *
 * Input lines are `account,amount,timestamp` (timestamp in milliseconds
 * since the Unix epoch). Per account, a transaction under 1.00 followed
 * within one minute (event time) by one over 500.00 raises the alert
 * `(account, amount)`. The host keeps each account's state and timer: they
 * survive restarts, checkpoints and restores at another parallelism. Lines
 * that do not parse go to the side output `malformed`; the account `POISON`
 * fails its record, to show a poison record being dead-lettered while every
 * other account's state carries on.
 *
 * Parameter: `ttl=MS` forgets an account's small transaction after MS of
 * processing time without a write (a state TTL), whatever the timestamps.
 */
#include "sluice_pipeline.h"

/* The states, by their place in the declaration. */
enum {
    SMALL,    /* the small transaction seen last (its amount), if any */
    DEADLINE, /* when the small transaction's minute ends */
};

#define SMALL_AMOUNT 1.00
#define LARGE_AMOUNT 500.00
#define WINDOW_MS 60000

/* `account,amount,timestamp` into (account, amount) at its timestamp. */
static int parse(const sluice_record *r, sluice_out *out) {
    sluice_str line = sluice_record_text(r);
    sluice_parts parts = sluice_split(line, ',');
    sluice_str field[4];
    int n = 0;
    while (n < 4 && sluice_next_part(&parts, &field[n]))
        field[n] = sluice_str_trim(field[n]), n++;
    double amount;
    int64_t ts;
    if (n == 3 && field[0].len > 0 && sluice_parse_float(field[1], &amount) &&
        sluice_parse_int(field[2], &ts))
        sluice_emit_at(out, ts, sluice_text(field[0]), sluice_float(amount));
    else
        sluice_side(out, "malformed", sluice_text(line));
    return 0;
}

/* Per account: remember a small transaction for a minute; a large one
 * within it is an alert. */
static int detect(sluice_ctx *cx, const sluice_event *e, sluice_out *out) {
    if (e->kind == SLUICE_TIMER_EVENT) {
        /* The minute after the small transaction is over. */
        sluice_clear(cx, SMALL);
        sluice_clear(cx, DEADLINE);
        return 0;
    }
    sluice_str account;
    if (sluice_as_text(sluice_key(cx), &account) && sluice_str_eq(account, "POISON"))
        return sluice_fail("the account POISON cannot be processed");
    double amount = 0.0;
    sluice_as_float(sluice_field(&e->record.row, 1), &amount);
    int64_t ts = e->record.timestamp;
    sluice_row d;
    int64_t deadline;
    if (sluice_get_value(cx, DEADLINE, &d) && sluice_as_int(sluice_field(&d, 0), &deadline)) {
        /* The timer may not have fired yet when the batch holds rows past
         * it: the deadline decides, not the timer. */
        if (amount > LARGE_AMOUNT && ts <= deadline)
            sluice_emit(out, sluice_key(cx), sluice_float(amount));
        sluice_delete_timer(cx, SLUICE_EVENT_TIME, deadline);
        sluice_clear(cx, SMALL);
        sluice_clear(cx, DEADLINE);
    }
    if (amount < SMALL_AMOUNT) {
        deadline = (int64_t)((uint64_t)ts + WINDOW_MS); /* wraps, as Rust's release build */
        sluice_set(cx, SMALL, sluice_float(amount));
        sluice_set(cx, DEADLINE, sluice_int(deadline));
        sluice_set_timer(cx, SLUICE_EVENT_TIME, deadline);
    }
    return 0;
}

/* The account: field 0. */
static sluice_value account(const sluice_row *row) {
    return sluice_field(row, 0);
}

static void job(const sluice_params *params, sluice_job *job) {
    sluice_str text;
    uint64_t ttl_ms;
    bool ttl = sluice_param(params, "ttl", &text) && sluice_parse_uint(text, &ttl_ms);
    sluice_state states[] = {sluice_value_state("small"), sluice_value_state("deadline")};
    for (size_t i = 0; ttl && i < 2; i++)
        states[i] = sluice_state_ttl(states[i], ttl_ms);

    sluice_job_name(job, "fraud-detector");
    sluice_job_source(job, "socket://localhost:9100");
    sluice_job_checkpoint_ms(job, 1000);
    sluice_job_restart_fixed_delay(job, 3, 1000);
    sluice_job_watermarks(job, 0);
    sluice_job_side_output(job, "malformed");
    sluice_job_map(job, "parse", parse);
    sluice_job_key_by(job, account);
    sluice_job_process(job, "detect", states, 2, detect);
}

SLUICE_PIPELINE(job)
