/* Write Sluice stream functions in C.
 *
 * A guest is two plain functions — a flat-map that turns one input line into
 * any number of rows, and a key-selector that picks the key of a row — plus
 * an optional job description, exported with one line:
 *
 *     #include "sluice.h"
 *
 *     static int flat_map(sluice_str line, sluice_out *out) {
 *         if (sluice_str_eq(line, "ERROR"))
 *             return sluice_fail("received the line `ERROR`");
 *         sluice_words words = sluice_split_whitespace(line);
 *         sluice_str word;
 *         while (sluice_next_word(&words, &word))
 *             sluice_emit(out, sluice_text(word), sluice_int(1));
 *         return 0;
 *     }
 *
 *     static sluice_value key(const sluice_row *row) { return sluice_field(row, 0); }
 *
 *     SLUICE_EXPORT(flat_map, key)
 *
 * The helper (sluice.c, compiled with the C bindings that wit-bindgen
 * generates for the world `stream-job` of wit/sluice-stream@0.1.0/stream.wit) owns the batching,
 * the flat encoding of records, the keyed output, turning a failed record
 * into a `record-error` and the job description. It allocates nothing per
 * record: rows are encoded straight into one growing output buffer.
 *
 * Strings are UTF-8 slices (`sluice_str`), not NUL-terminated; print one with
 * printf("%.*s", (int)s.len, s.ptr). Slices handed to your functions (the
 * line, a row's fields, parameters) live until your function returns.
 *
 * Guests must be deterministic: the host replays records after a failure and
 * finds a record that traps (abort(), a bad pointer) by running it again in a
 * fresh instance. Return sluice_fail(...) to fail one record without a trap.
 *
 * This header is the 0.1.0 guest (world `stream-job`) and the part every
 * guest shares: strings, values and rows, failing, parameters and the job's
 * defaults. A sluice:stream@0.2.0 guest (world `pipeline-job`: stages, keyed
 * state, timers, windows) includes sluice_pipeline.h instead, which includes
 * this one without its 0.1.0-only part (marked below).
 */
#ifndef SLUICE_H
#define SLUICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Strings ------------------------------------------------------------ */

/* A UTF-8 string slice: `len` bytes at `ptr`, not NUL-terminated. */
typedef struct sluice_str {
    const char *ptr;
    size_t len;
} sluice_str;

/* A slice of a NUL-terminated string (not copied). */
sluice_str sluice_str_from(const char *cstr);

/* Whether `s` holds exactly the NUL-terminated string `cstr`. */
bool sluice_str_eq(sluice_str s, const char *cstr);

/* Whether two slices hold the same bytes. */
bool sluice_str_equal(sluice_str a, sluice_str b);

/* The words of a string, split like Rust's str::split_whitespace: on runs of
 * Unicode White_Space (U+0009..U+000D, U+0020, U+0085, U+00A0, U+1680,
 * U+2000..U+200A, U+2028, U+2029, U+202F, U+205F, U+3000), never yielding an
 * empty word. */
typedef struct sluice_words {
    const char *at;
    const char *end;
} sluice_words;

/* Starts splitting `s` into words. */
sluice_words sluice_split_whitespace(sluice_str s);

/* Stores the next word in `*word` and returns true, or returns false at the
 * end. The word is a slice of the split string. */
bool sluice_next_word(sluice_words *words, sluice_str *word);

/* `s` without its leading and trailing White_Space (as Rust's str::trim). */
sluice_str sluice_str_trim(sluice_str s);

/* The parts of a string between the bytes `sep`, like Rust's
 * str::split(char): "a,,b" gives "a", "" and "b"; "" gives one empty part. */
typedef struct sluice_parts {
    const char *at;
    const char *end;
    char sep;
    bool done;
} sluice_parts;

/* Starts splitting `s` on the byte `sep` (ASCII, so never inside a UTF-8
 * sequence). */
sluice_parts sluice_split(sluice_str s, char sep);

/* Stores the next part in `*part` and returns true, or returns false at the
 * end. The part is a slice of the split string. */
bool sluice_next_part(sluice_parts *parts, sluice_str *part);

/* Numbers parsed exactly as Rust's str::parse does, so that guests in every
 * language accept the same input: nothing but the number (no whitespace, no
 * hex, no `_`); true and `*out`, or false. */
/* i64: an optional `+` or `-`, then ASCII digits, within i64's range. */
bool sluice_parse_int(sluice_str s, int64_t *out);
/* u64: an optional `+`, then ASCII digits, within u64's range. */
bool sluice_parse_uint(sluice_str s, uint64_t *out);
/* f64, correctly rounded: an optional sign, then `inf`, `infinity`, `nan`
 * (any case) or digits with at most one `.` (a digit on one side at least)
 * and an optional exponent (`e` or `E`, an optional sign, digits); too large
 * is an infinity. Uses strtod, whose code it pulls into the module. */
bool sluice_parse_float(sluice_str s, double *out);

/* ---- Values and rows ---------------------------------------------------- */

/* The kind of a value, numbered as in the WIT `value` variant. */
typedef enum sluice_kind {
    SLUICE_NULL = 0,
    SLUICE_BOOL = 1,
    SLUICE_INT = 2,
    SLUICE_FLOAT = 3,
    SLUICE_TEXT = 4,
    SLUICE_BYTES = 5,
} sluice_kind;

/* Raw bytes: `len` bytes at `ptr`. */
typedef struct sluice_data {
    const uint8_t *ptr;
    size_t len;
} sluice_data;

/* One scalar value, as in a Flink Row or Tuple field. Text and bytes are
 * borrowed, not copied, until the value is emitted or returned. */
typedef struct sluice_value {
    sluice_kind kind;
    union {
        bool boolean;
        int64_t int64;
        double float64;
        sluice_str text; /* valid UTF-8 */
        sluice_data bytes;
    } as;
} sluice_value;

static inline sluice_value sluice_null(void) {
    sluice_value v = {SLUICE_NULL, {0}};
    return v;
}
static inline sluice_value sluice_bool(bool b) {
    sluice_value v = {SLUICE_BOOL, {0}};
    v.as.boolean = b;
    return v;
}
static inline sluice_value sluice_int(int64_t i) {
    sluice_value v = {SLUICE_INT, {0}};
    v.as.int64 = i;
    return v;
}
static inline sluice_value sluice_float(double f) {
    sluice_value v = {SLUICE_FLOAT, {0}};
    v.as.float64 = f;
    return v;
}
static inline sluice_value sluice_text(sluice_str s) {
    sluice_value v = {SLUICE_TEXT, {0}};
    v.as.text = s;
    return v;
}
/* A text value from a NUL-terminated string. */
static inline sluice_value sluice_cstr(const char *cstr) {
    return sluice_text(sluice_str_from(cstr));
}
static inline sluice_value sluice_bytes(const void *ptr, size_t len) {
    sluice_value v = {SLUICE_BYTES, {0}};
    v.as.bytes.ptr = (const uint8_t *)ptr;
    v.as.bytes.len = len;
    return v;
}

/* A row, read in place from its encoding; use the functions below. */
typedef struct sluice_row {
    const uint8_t *values; /* the encoded values, after the count */
    uint32_t count;        /* the number of fields */
} sluice_row;

/* Field `index` (0-based), or null past the end. */
sluice_value sluice_field(const sluice_row *row, size_t index);

/* ---- The flat-map's output ---------------------------------------------- */

/* Where a flat-map (or, in 0.2.0, any stage function) sends its rows. */
typedef struct sluice_out sluice_out;

/* Emits one row of `count` values (in 0.2.0: to the main output, with the
 * input's timestamp). */
void sluice_emit_row(sluice_out *out, size_t count, const sluice_value *values);

/* Emits one row of the values given: sluice_emit(out, sluice_text(w), sluice_int(1)). */
#define sluice_emit(out, ...)                                              \
    sluice_emit_row((out), sizeof((sluice_value[]){__VA_ARGS__}) / sizeof(sluice_value), \
                    (sluice_value[]){__VA_ARGS__})

/* ---- Failing a record --------------------------------------------------- */

/* Records `message` (copied) as the reason of the current record's failure,
 * or of `open`'s, and returns -1: `return sluice_fail("bad line");`. */
int sluice_fail(const char *message);

/* sluice_fail with a slice. */
int sluice_fail_str(sluice_str message);

/* sluice_fail with a printf format (pulls printf's code into the module). */
int sluice_failf(const char *format, ...) __attribute__((format(printf, 1, 2)));

/* ---- Parameters --------------------------------------------------------- */

/* The job's parameters (`--param KEY=VALUE`), in the order given. */
typedef struct sluice_params sluice_params;

/* The number of parameters. */
size_t sluice_params_len(const sluice_params *params);

/* Parameter `index`: stores its key and value and returns true, or returns
 * false past the end. */
bool sluice_param_at(const sluice_params *params, size_t index, sluice_str *key, sluice_str *value);

/* The value of `key` (the last one given wins): true if it was given. */
bool sluice_param(const sluice_params *params, const char *key, sluice_str *value);

/* ---- The job description ------------------------------------------------ */

/* The job's defaults, which command-line flags and a TOML file override.
 * Everything not set stays unset (the host's default). Strings are copied. */
typedef struct sluice_job sluice_job;

#ifndef SLUICE_PIPELINE_H /* 0.1.0 only: 0.2.0 aggregates in its stages */
typedef enum sluice_aggregate {
    SLUICE_SUM = 0,   /* running sum of a numeric field */
    SLUICE_COUNT = 1, /* running count, written into the field */
    SLUICE_MIN = 2,   /* running minimum of the field */
    SLUICE_MAX = 3,   /* running maximum of the field */
} sluice_aggregate;

/* The keyed aggregation the host runs on the rows, on field `field`. */
void sluice_job_aggregate(sluice_job *job, sluice_aggregate kind, uint32_t field);
/* Shorthand for sluice_job_aggregate(job, SLUICE_SUM, field). */
void sluice_job_sum(sluice_job *job, uint32_t field);
#endif

/* The job's name, shown in logs. */
void sluice_job_name(sluice_job *job, const char *name);
/* The default source: `socket://HOST:PORT`, `file://PATH` or `-`. */
void sluice_job_source(sluice_job *job, const char *uri);
/* The default sink (of the main output): `print`, `file://PATH` or `discard`. */
void sluice_job_sink(sluice_job *job, const char *uri);
/* Checkpoint every `interval_ms` milliseconds; 0 turns checkpoints off. */
void sluice_job_checkpoint_ms(sluice_job *job, uint64_t interval_ms);
/* Restarts: none (fail on the first task failure). */
void sluice_job_restart_none(sluice_job *job);
/* Restarts: at most `attempts` over the job's life, `delay_ms` apart. */
void sluice_job_restart_fixed_delay(sluice_job *job, uint32_t attempts, uint64_t delay_ms);
/* Restarts: fail when more than `max_failures` happen within `interval_ms`. */
void sluice_job_restart_failure_rate(sluice_job *job, uint32_t max_failures, uint64_t interval_ms,
                                     uint64_t delay_ms);
/* Restarts: a delay growing from `initial_ms` to `max_ms` by `multiplier`. */
void sluice_job_restart_exponential_delay(sluice_job *job, uint64_t initial_ms, uint64_t max_ms,
                                          double multiplier, uint64_t reset_after_ms,
                                          double jitter);
/* The default number of parallel subtasks. */
void sluice_job_parallelism(sluice_job *job, uint32_t parallelism);
/* Per-instance limits (each one optional). */
void sluice_job_memory_limit(sluice_job *job, uint64_t bytes);
void sluice_job_call_timeout_ms(sluice_job *job, uint64_t ms);
void sluice_job_max_rows_per_record(sluice_job *job, uint32_t rows);
void sluice_job_max_bytes_per_record(sluice_job *job, uint64_t bytes);

/* ---- Exporting ---------------------------------------------------------- */

/* The key-selector: the key of a row (usually one of its fields, whose
 * text or bytes it may borrow). */
typedef sluice_value (*sluice_key_fn)(const sluice_row *row);

#ifndef SLUICE_PIPELINE_H /* 0.1.0 only: 0.2.0 exports with SLUICE_PIPELINE */
/* The flat-map: emit rows into `out`; return 0, or sluice_fail(...) to fail
 * the record (the host reports it as a record error). */
typedef int (*sluice_flat_map_fn)(sluice_str line, sluice_out *out);
/* Optional: the job's defaults, like a Flink main(). */
typedef void (*sluice_describe_fn)(const sluice_params *params, sluice_job *job);
/* Optional: called once on every fresh instance, before any record; return
 * 0, or sluice_fail(...) to fail the task. */
typedef int (*sluice_open_fn)(const sluice_params *params);

typedef struct sluice_guest {
    sluice_flat_map_fn flat_map;
    sluice_key_fn key;           /* NULL with key_field */
    sluice_describe_fn describe; /* may be NULL */
    sluice_open_fn open;         /* may be NULL */
    /* Instead of `key`: SLUICE_KEY_FIELD(n), the key is field n of the row
     * (null past its end), taken from the emitted values without a call. */
    uint32_t key_field;
} sluice_guest;

/* The key is field `n` of the row: `.key_field = SLUICE_KEY_FIELD(0)`. */
#define SLUICE_KEY_FIELD(n) ((uint32_t)(n) + 1u)

/* Defined by SLUICE_EXPORT; the helper calls through it. */
extern const sluice_guest sluice_guest_functions;

/* Exports the guest's functions, once per module (no semicolon after it):
 *     SLUICE_EXPORT(flat_map, key)
 *     SLUICE_EXPORT(flat_map, key, describe)
 *     SLUICE_EXPORT(flat_map, key, describe, open)
 *     SLUICE_EXPORT(.flat_map = flat_map, .key = key, .open = open)
 *     SLUICE_EXPORT(.flat_map = flat_map, .key_field = SLUICE_KEY_FIELD(0))
 */
#define SLUICE_EXPORT(...)                                                     \
    _Pragma("GCC diagnostic push")                                           \
    _Pragma("GCC diagnostic ignored \"-Wmissing-field-initializers\"")       \
    const sluice_guest sluice_guest_functions = {__VA_ARGS__};                 \
    _Pragma("GCC diagnostic pop")
#endif /* 0.1.0 only */

#ifdef __cplusplus
}
#endif

#endif /* SLUICE_H */
