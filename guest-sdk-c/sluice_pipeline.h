/* Write Sluice pipelines in C: sluice:stream@0.2.0, world `pipeline-job`
 * (wit/sluice-stream@0.2.0/stream.wit) — keyed state, timers, event time
 * and windows. The C counterpart of the Rust SDK's `sluice_guest::pipeline`.
 *
 * A job is a pipeline of stages, described by one function that the helper
 * calls with the job's parameters: map stages (stateless: map, filter and
 * flat-map in one function), keyed process functions with the keyed states
 * they declare and timers, and keyed windows. The host owns everything that
 * must survive a failure — every key's state, the timers, the watermark,
 * the windows, the checkpoints — and ships a key's state in with the batch
 * that needs it; the functions here see plain rows and values.
 *
 *     #include "sluice_pipeline.h"
 *
 *     enum { SMALL }; // the states, by their place in the declaration
 *
 *     // `account,amount,timestamp` lines into (account, amount) rows.
 *     static int parse(const sluice_record *r, sluice_out *out) {
 *         ... on a bad line: sluice_side(out, "malformed", sluice_text(line));
 *         sluice_emit_at(out, ts, sluice_text(account), sluice_float(amount));
 *         return 0;
 *     }
 *
 *     // A small amount followed within a minute by a large one is an alert.
 *     static int detect(sluice_ctx *cx, const sluice_event *e, sluice_out *out) {
 *         if (e->kind == SLUICE_TIMER_EVENT) {
 *             sluice_clear(cx, SMALL);
 *             return 0;
 *         }
 *         double amount = 0;
 *         sluice_as_float(sluice_field(&e->record.row, 1), &amount);
 *         sluice_row small;
 *         if (amount > 500 && sluice_get_value(cx, SMALL, &small)) {
 *             sluice_emit(out, sluice_key(cx), sluice_float(amount));
 *             sluice_clear(cx, SMALL);
 *         } else if (amount < 1) {
 *             sluice_set(cx, SMALL, sluice_float(amount));
 *             sluice_set_timer(cx, SLUICE_EVENT_TIME, e->record.timestamp + 60000);
 *         }
 *         return 0;
 *     }
 *
 *     static sluice_value account(const sluice_row *row) { return sluice_field(row, 0); }
 *
 *     static void job(const sluice_params *params, sluice_job *job) {
 *         sluice_job_name(job, "fraud-detector");
 *         sluice_job_watermarks(job, 5000);
 *         sluice_job_side_output(job, "malformed");
 *         sluice_job_map(job, "parse", parse);
 *         sluice_job_key_by(job, account);
 *         sluice_state states[] = {sluice_value_state("small")};
 *         sluice_job_process(job, "detect", states, 1, detect);
 *     }
 *
 *     SLUICE_PIPELINE(job)
 *
 * The helper (sluice_pipeline.c, compiled with the C bindings that
 * wit-bindgen generates for the world `pipeline-job`; guest-sdk-c/build
 * does it) owns the calls' encodings: it decodes and bounds-checks every
 * buffer the host sends (a malformed one fails the entry with a record
 * error that says what is wrong, never an out-of-bounds read), runs your
 * functions, and encodes their rows, each row's key for the next stage,
 * the state changes, the timers and the aggregates.
 *
 * Failing: a stage function returns 0, or sluice_fail(...) (any non-zero)
 * to fail the entry it was called for; the host reports it as a record
 * error and, like for a trap (abort()), runs the entry again alone in a
 * fresh instance, dead-letters it if it fails there too, and goes on with
 * every key's state as it was before the entry. A misuse of this API (a
 * side output or state that the job does not declare, a state of another
 * kind) fails the entry too, with a message naming it, once the function
 * returns. Everything must be deterministic: the same input and state give
 * the same output, changes or failure.
 *
 * Lifetimes: what the helper hands a function (the record, its row and
 * text, a key, a state's rows, a window's contents) lives until the
 * function returns; rows read from a state live until that state is next
 * written. Values given to the helper (to emit, to set) are copied before
 * the call returns. The parameters the job function gets live as long as
 * the instance. The job function runs at `open` (once per instance) and to
 * describe the job, always with the job's parameters, so it may also set
 * static configuration that the stage functions read.
 *
 * Everything in sluice.h is here too — strings, values, rows, failing,
 * parameters and the job's defaults (name, source, sink, checkpoints,
 * restarts, parallelism, limits) — except its 0.1.0-only part.
 */
#ifndef SLUICE_PIPELINE_H
#define SLUICE_PIPELINE_H

#include "sluice.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Values ------------------------------------------------------------- */

/* The integer of an int value: true and `*out`, or false. */
static inline bool sluice_as_int(sluice_value v, int64_t *out) {
    if (v.kind != SLUICE_INT)
        return false;
    *out = v.as.int64;
    return true;
}

/* The number of a float or an int value: true and `*out`, or false. */
static inline bool sluice_as_float(sluice_value v, double *out) {
    if (v.kind == SLUICE_FLOAT)
        *out = v.as.float64;
    else if (v.kind == SLUICE_INT)
        *out = (double)v.as.int64;
    else
        return false;
    return true;
}

/* The text of a text value: true and `*out`, or false. */
static inline bool sluice_as_text(sluice_value v, sluice_str *out) {
    if (v.kind != SLUICE_TEXT)
        return false;
    *out = v.as.text;
    return true;
}

/* Whether two values are equal: the same kind and the same value (floats
 * by ==, so NaN equals nothing; text and bytes by their bytes). Map states
 * find their keys with it. */
bool sluice_value_equal(sluice_value a, sluice_value b);

/* Stores up to `max` of a row's fields in `values` (in one pass, unlike
 * sluice_field) and returns how many it stored. */
size_t sluice_row_values(const sluice_row *row, sluice_value *values, size_t max);

/* ---- Records and output ------------------------------------------------- */

/* Which clock a timer or a window follows. */
typedef enum sluice_time {
    SLUICE_EVENT_TIME = 0,      /* the rows' timestamps, as the watermark advances */
    SLUICE_PROCESSING_TIME = 1, /* the batches' processing time (recorded by the host,
                                   so a replay sees the same) */
} sluice_time;

/* One input of a stage: a row and its timestamp (milliseconds since the
 * Unix epoch). The first stage's rows are the source's lines (one text
 * field), timestamped with the batch's processing time. */
typedef struct sluice_record {
    sluice_row row;
    int64_t timestamp;
} sluice_record;

/* The text of the first field (the line, in the first stage); empty when it
 * is not text. */
sluice_str sluice_record_text(const sluice_record *record);

/* Where a stage's rows go (sluice.h declares sluice_out, sluice_emit and
 * sluice_emit_row):
 *
 *   sluice_emit(out, values...)            to the next stage (or the sink),
 *                                          with the input's timestamp: a
 *                                          record's, a timer's (the time it
 *                                          was set for), a fired window's
 *                                          (its last millisecond, end - 1)
 *   sluice_emit_at(out, ts, values...)     the same with timestamp `ts`: in
 *                                          the first stage, the event time
 *                                          the watermark follows
 *   sluice_side(out, "name", values...)    to the side output `name` (see
 *                                          sluice_job_side_output), with the
 *                                          input's timestamp
 *
 * When the next stage is keyed, the helper runs its key-selector on every
 * row emitted to it. */
void sluice_emit_at_row(sluice_out *out, int64_t timestamp, size_t count,
                        const sluice_value *values);
void sluice_side_row(sluice_out *out, const char *name, size_t count, const sluice_value *values);

#define sluice_emit_at(out, ts, ...)                                                      \
    sluice_emit_at_row((out), (ts), sizeof((sluice_value[]){__VA_ARGS__}) / sizeof(sluice_value), \
                       (sluice_value[]){__VA_ARGS__})
#define sluice_side(out, name, ...)                                                       \
    sluice_side_row((out), (name), sizeof((sluice_value[]){__VA_ARGS__}) / sizeof(sluice_value), \
                    (sluice_value[]){__VA_ARGS__})

/* ---- Map stages --------------------------------------------------------- */

/* A stateless stage: emits any number of rows for each input (map, filter
 * and flat-map in one). Returns 0, or sluice_fail(...) to fail the record. */
typedef int (*sluice_map_fn)(const sluice_record *record, sluice_out *out);

/* ---- Process stages: keyed state and timers ------------------------------ */

/* The kinds of keyed state. */
typedef enum sluice_state_kind {
    SLUICE_VALUE_STATE = 0, /* one row per key */
    SLUICE_LIST_STATE = 1,  /* a list of rows per key */
    SLUICE_MAP_STATE = 2,   /* a map from values to rows per key */
} sluice_state_kind;

/* A keyed state a process stage declares; the function reaches it by its
 * place in the declaration (0, 1, ...). The name is copied. */
typedef struct sluice_state {
    const char *name;
    sluice_state_kind kind;
    bool has_ttl;    /* gone when not written for ttl_ms of processing time */
    uint64_t ttl_ms;
} sluice_state;

static inline sluice_state sluice_value_state(const char *name) {
    sluice_state s = {name, SLUICE_VALUE_STATE, false, 0};
    return s;
}
static inline sluice_state sluice_list_state(const char *name) {
    sluice_state s = {name, SLUICE_LIST_STATE, false, 0};
    return s;
}
static inline sluice_state sluice_map_state(const char *name) {
    sluice_state s = {name, SLUICE_MAP_STATE, false, 0};
    return s;
}
/* The state with a time to live: gone when not written for `ttl_ms` of
 * processing time (the host ships it as unset, and removes it). */
static inline sluice_state sluice_state_ttl(sluice_state s, uint64_t ttl_ms) {
    s.has_ttl = true;
    s.ttl_ms = ttl_ms;
    return s;
}

/* What a process function is called for. */
typedef enum sluice_event_kind {
    SLUICE_ROW_EVENT = 0,   /* a row of the key: `record` */
    SLUICE_TIMER_EVENT = 1, /* a timer of the key that fired: `at` and `time` */
} sluice_event_kind;

typedef struct sluice_event {
    sluice_event_kind kind;
    sluice_record record; /* a row: it and its timestamp */
    int64_t at;           /* a timer: the time it was set for */
    sluice_time time;     /* a timer: its clock */
} sluice_event;

/* The key a process function runs for, its states and timers. */
typedef struct sluice_ctx sluice_ctx;

/* A process function: called for each row of a key, and for each of the
 * key's timers that fires, in order. Returns 0, or sluice_fail(...) to fail
 * the entry (its state changes and timers are then dropped). */
typedef int (*sluice_process_fn)(sluice_ctx *cx, const sluice_event *event, sluice_out *out);

/* The key. */
sluice_value sluice_key(const sluice_ctx *cx);
/* The timestamp of the row or timer being processed. */
int64_t sluice_timestamp(const sluice_ctx *cx);
/* The event-time watermark (INT64_MIN before the first). */
int64_t sluice_watermark(const sluice_ctx *cx);
/* The batch's processing time. */
int64_t sluice_processing_time(const sluice_ctx *cx);

/* Value states. */

/* The row of value state `state`: true and `*row` if it is set. */
bool sluice_get_value(const sluice_ctx *cx, size_t state, sluice_row *row);
/* Sets value state `state` to a row of `count` values. */
void sluice_set_row(sluice_ctx *cx, size_t state, size_t count, const sluice_value *values);
/* sluice_set(cx, state, values...): sets a value state to a row of these values. */
#define sluice_set(cx, state, ...)                                                        \
    sluice_set_row((cx), (state), sizeof((sluice_value[]){__VA_ARGS__}) / sizeof(sluice_value), \
                   (sluice_value[]){__VA_ARGS__})
/* Clears a state of any kind. */
void sluice_clear(sluice_ctx *cx, size_t state);

/* List states. */

/* The rows of a list state, in order: `count` in all, sluice_next_row for
 * each. */
typedef struct sluice_rows {
    uint32_t count;
    uint32_t left;
    const uint8_t *at;
} sluice_rows;

/* The rows of list state `state` (none when it is not set). */
sluice_rows sluice_list(const sluice_ctx *cx, size_t state);
/* Stores the next row in `*row` and returns true, or returns false at the end. */
bool sluice_next_row(sluice_rows *rows, sluice_row *row);
/* Appends a row of `count` values to list state `state`. */
void sluice_push_row(sluice_ctx *cx, size_t state, size_t count, const sluice_value *values);
/* sluice_push(cx, state, values...): appends a row of these values. */
#define sluice_push(cx, state, ...)                                                       \
    sluice_push_row((cx), (state), sizeof((sluice_value[]){__VA_ARGS__}) / sizeof(sluice_value), \
                    (sluice_value[]){__VA_ARGS__})
/* Replaces list state `state` with `count` rows (for one, rows read from
 * it: a filter); cleared when `count` is 0. */
void sluice_set_list(sluice_ctx *cx, size_t state, size_t count, const sluice_row *rows);

/* Map states. */

/* The entries of a map state, in insertion order: `count` in all,
 * sluice_next_entry for each. */
typedef struct sluice_entries {
    uint32_t count;
    uint32_t left;
    const uint8_t *at;
} sluice_entries;

/* The entries of map state `state` (none when it is not set). */
sluice_entries sluice_map_entries(const sluice_ctx *cx, size_t state);
/* Stores the next entry's key and row and returns true, or returns false at
 * the end. */
bool sluice_next_entry(sluice_entries *entries, sluice_value *key, sluice_row *row);
/* The row of `key` in map state `state`: true and `*row` if it has one. */
bool sluice_get(const sluice_ctx *cx, size_t state, sluice_value key, sluice_row *row);
/* Puts `key`'s row of `count` values into map state `state`, replacing the
 * row it had (the key then moves to the end of the insertion order). */
void sluice_put_row(sluice_ctx *cx, size_t state, sluice_value key, size_t count,
                    const sluice_value *values);
/* sluice_put(cx, state, key, values...). */
#define sluice_put(cx, state, key, ...)                                                   \
    sluice_put_row((cx), (state), (key),                                                  \
                   sizeof((sluice_value[]){__VA_ARGS__}) / sizeof(sluice_value),          \
                   (sluice_value[]){__VA_ARGS__})
/* Removes `key` from map state `state` (the state is cleared when it was
 * the last). */
void sluice_remove(sluice_ctx *cx, size_t state, sluice_value key);

/* Timers. */

/* Sets a timer of this key: it fires once the watermark (event time) or the
 * processing time reaches `at`, in a call of its own after the batch's
 * rows. Setting it twice keeps one. */
void sluice_set_timer(sluice_ctx *cx, sluice_time time, int64_t at);
/* Deletes a timer of this key. */
void sluice_delete_timer(sluice_ctx *cx, sluice_time time, int64_t at);

/* ---- Window stages -------------------------------------------------------- */

typedef enum sluice_assigner {
    SLUICE_TUMBLING = 0, /* fixed windows of size_ms, back to back */
    SLUICE_SLIDING = 1,  /* windows of size_ms, a new one every slide_ms */
    SLUICE_SESSION = 2,  /* per-key windows of activity, closed by a gap of size_ms */
} sluice_assigner;

/* How rows are put into windows: sluice_tumbling(ms), sluice_sliding(size,
 * slide) or sluice_session(gap), by event time unless `time` is processing
 * time; a row up to allowed_lateness_ms behind the watermark still updates
 * its window, which fires again; rows later than that go to the side output
 * `late_output` (copied), or are dropped and counted in the host's log when
 * it is NULL. Set the fields, or chain the sluice_windows_* functions:
 *     sluice_windows_late_output(sluice_windows_allowed_lateness(
 *         sluice_tumbling(10000), 2000), "late")
 */
typedef struct sluice_windows {
    sluice_assigner assigner;
    uint64_t size_ms; /* the length, or the session gap */
    uint64_t slide_ms;
    sluice_time time;
    uint64_t allowed_lateness_ms;
    const char *late_output;
} sluice_windows;

static inline sluice_windows sluice_tumbling(uint64_t size_ms) {
    sluice_windows w = {SLUICE_TUMBLING, size_ms, 0, SLUICE_EVENT_TIME, 0, NULL};
    return w;
}
static inline sluice_windows sluice_sliding(uint64_t size_ms, uint64_t slide_ms) {
    sluice_windows w = {SLUICE_SLIDING, size_ms, slide_ms, SLUICE_EVENT_TIME, 0, NULL};
    return w;
}
static inline sluice_windows sluice_session(uint64_t gap_ms) {
    sluice_windows w = {SLUICE_SESSION, gap_ms, 0, SLUICE_EVENT_TIME, 0, NULL};
    return w;
}
/* By processing time instead of the rows' timestamps. */
static inline sluice_windows sluice_windows_processing_time(sluice_windows w) {
    w.time = SLUICE_PROCESSING_TIME;
    return w;
}
static inline sluice_windows sluice_windows_allowed_lateness(sluice_windows w,
                                                             uint64_t lateness_ms) {
    w.allowed_lateness_ms = lateness_ms;
    return w;
}
static inline sluice_windows sluice_windows_late_output(sluice_windows w, const char *name) {
    w.late_output = name;
    return w;
}

/* A window that fires: its key and its span [start, end). */
typedef struct sluice_window {
    sluice_value key;
    int64_t start;
    int64_t end;
} sluice_window;

/* Where an add or merge function writes the aggregate (a row). */
typedef struct sluice_acc sluice_acc;
/* Sets the new aggregate to a row of `count` values. */
void sluice_acc_set_row(sluice_acc *acc, size_t count, const sluice_value *values);
/* sluice_acc_set(acc, values...). */
#define sluice_acc_set(acc, ...)                                                          \
    sluice_acc_set_row((acc), sizeof((sluice_value[]){__VA_ARGS__}) / sizeof(sluice_value), \
                       (sluice_value[]){__VA_ARGS__})

/* Folds `row` into a window's aggregate `acc` (NULL: the window's first
 * row) by setting the new one in `next`; an add that sets nothing leaves
 * the aggregate as it was (a new window's: the empty row). */
typedef int (*sluice_add_fn)(const sluice_row *acc, const sluice_row *row, sluice_acc *next);
/* Merges two session windows' aggregates into `merged`; setting nothing
 * keeps `a`. */
typedef int (*sluice_merge_fn)(const sluice_row *a, const sluice_row *b, sluice_acc *merged);
/* Turns a fired window's aggregate (NULL: none) into rows. */
typedef int (*sluice_fire_fn)(const sluice_window *window, const sluice_row *acc, sluice_out *out);
/* Turns a fired window's contents, `count` rows by timestamp, into rows. */
typedef int (*sluice_fire_rows_fn)(const sluice_window *window, const sluice_record *rows,
                                   size_t count, sluice_out *out);

/* ---- The job ------------------------------------------------------------ */

/* The job function: describes the pipeline and the job's defaults (flags
 * and a TOML file override them) with the sluice_job_* calls, in order. */
typedef void (*sluice_pipeline_fn)(const sluice_params *params, sluice_job *job);

/* A map stage (the first stage must be one: it takes the source's lines). */
void sluice_job_map(sluice_job *job, const char *name, sluice_map_fn map);
/* Keys the next stage's input by `key` (the host routes rows by it). Process
 * and window stages need it; before a map stage it re-partitions. */
void sluice_job_key_by(sluice_job *job, sluice_key_fn key);
/* A keyed process function with the `count` states it declares (copied). */
void sluice_job_process(sluice_job *job, const char *name, const sluice_state *states,
                        size_t count, sluice_process_fn process);
/* Keyed windows with an aggregate per key and window, kept by the host:
 * `add` folds a row in, `merge` merges two (session windows only; NULL
 * otherwise is fine), `fire` turns it into rows (Rust: Job::aggregate). */
void sluice_job_window_aggregate(sluice_job *job, const char *name, sluice_windows windows,
                                 sluice_add_fn add, sluice_merge_fn merge, sluice_fire_fn fire);
/* Keyed windows whose rows the host keeps; `fire` gets them all, by
 * timestamp, when the window fires (Rust: Job::window). */
void sluice_job_window_process(sluice_job *job, const char *name, sluice_windows windows,
                               sluice_fire_rows_fn fire);
/* Declares a side output (`--side-output NAME=URI` picks its sink; `print`
 * by default). Its name is 1 to 100 letters, digits, `-`, `_` or `.`. */
void sluice_job_side_output(sluice_job *job, const char *name);
/* Declares a side output with its default sink. */
void sluice_job_side_output_to(sluice_job *job, const char *name, const char *sink);
/* Event time: the watermark trails the largest timestamp the first stage
 * emitted by `out_of_orderness_ms`. Without it, event-time timers and
 * windows never fire. */
void sluice_job_watermarks(sluice_job *job, uint64_t out_of_orderness_ms);
/* After `timeout_ms` of processing time without records, the watermark
 * advances with processing time, so that an idle source's windows and
 * timers still fire (turns event time on if sluice_job_watermarks did not). */
void sluice_job_idle_timeout(sluice_job *job, uint64_t timeout_ms);

/* Defined by SLUICE_PIPELINE; the helper calls it. */
extern const sluice_pipeline_fn sluice_pipeline_job;

/* Exports the job function, once per module (no semicolon after it):
 *     SLUICE_PIPELINE(job)
 */
#define SLUICE_PIPELINE(job_fn) const sluice_pipeline_fn sluice_pipeline_job = (job_fn);

#ifdef __cplusplus
}
#endif

#endif /* SLUICE_PIPELINE_H */
