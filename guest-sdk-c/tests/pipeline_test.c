/* Native tests of the 0.2.0 C helper (sluice_pipeline.c), run under
 * AddressSanitizer, UndefinedBehaviorSanitizer and LeakSanitizer by
 * tests/run: they call the generated canonical-ABI exports the way the host
 * does (arguments allocated with cabi_realloc and owned by the export,
 * results freed by the post-return function), check every encoding of
 * wit/sluice-stream@0.2.0 (emitted lists with tag, timestamp and next key;
 * process entries, keys and changes; window slots, pairs and fires; the job
 * description), check that malformed buffers fail with a message, and feed
 * every call mutated buffers, so that an out-of-bounds read, a leak or a
 * double free fails the run. Outputs are decoded into short strings, so a
 * failure shows what was emitted. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline_job.h"
#include "sluice_pipeline.h"

/* ---- A test guest: every kind of stage --------------------------------- */

enum { V, L, M }; /* the process stage's states */

/* Stage 0, `parse`: `KEY CMD [TS]` lines into (KEY, CMD) rows. */
static int parse(const sluice_record *r, sluice_out *out) {
    sluice_str line = sluice_record_text(r);
    if (sluice_str_eq(line, "ERR"))
        return sluice_fail("bad line");
    if (sluice_str_eq(line, "SILENT"))
        return -1;
    if (sluice_str_eq(line, "NOSIDE")) {
        sluice_emit(out, sluice_cstr("x"), sluice_cstr("y"));
        sluice_side(out, "nope", sluice_int(1));
        return 0;
    }
    if (sluice_str_eq(line, "SIDE")) {
        sluice_side(out, "bad", sluice_text(line));
        return 0;
    }
    sluice_words words = sluice_split_whitespace(line);
    sluice_str key, cmd, ts;
    if (!sluice_next_word(&words, &key))
        return 0; /* an empty line: no rows */
    if (!sluice_next_word(&words, &cmd))
        cmd = sluice_str_from("none");
    int64_t at;
    if (sluice_next_word(&words, &ts) && sluice_parse_int(ts, &at))
        sluice_emit_at(out, at, sluice_text(key), sluice_text(cmd));
    else
        sluice_emit(out, sluice_text(key), sluice_text(cmd));
    return 0;
}

static sluice_value field0(const sluice_row *row) {
    return sluice_field(row, 0);
}

/* Stage 1, `proc`: field 1 says what to do with the key's states. */
static int proc(sluice_ctx *cx, const sluice_event *e, sluice_out *out) {
    if (e->kind == SLUICE_TIMER_EVENT) {
        sluice_emit(out, sluice_key(cx), sluice_cstr("timer"), sluice_int(e->at),
                    sluice_int(e->time));
        return 0;
    }
    sluice_str cmd = {"", 0};
    sluice_as_text(sluice_field(&e->record.row, 1), &cmd);
    int64_t ts = e->record.timestamp;
    sluice_row row;
    if (sluice_str_eq(cmd, "count")) { /* a counter in the value state */
        int64_t n = 0;
        if (sluice_get_value(cx, V, &row))
            sluice_as_int(sluice_field(&row, 0), &n);
        sluice_set(cx, V, sluice_int(n + 1));
        sluice_emit(out, sluice_key(cx), sluice_int(n + 1));
    } else if (sluice_str_eq(cmd, "push")) {
        sluice_push(cx, L, sluice_int(ts));
        sluice_push(cx, L, sluice_int(ts + 1));
        sluice_emit(out, sluice_key(cx), sluice_int(sluice_list(cx, L).count));
    } else if (sluice_str_eq(cmd, "again")) {
        /* Pushes the list's first row, read from the list itself, while the
         * list grows (its text borrows from the bytes being appended to). */
        for (int i = 0; i < 8; i++) {
            sluice_rows rows = sluice_list(cx, L);
            if (sluice_next_row(&rows, &row)) {
                sluice_value first[2];
                size_t n = sluice_row_values(&row, first, 2);
                sluice_push_row(cx, L, n, first);
            }
        }
        sluice_emit(out, sluice_key(cx), sluice_int(sluice_list(cx, L).count));
    } else if (sluice_str_eq(cmd, "odd")) { /* keeps the odd rows of the list */
        sluice_row keep[16];
        size_t n = 0;
        sluice_rows rows = sluice_list(cx, L);
        int64_t v;
        while (n < 16 && sluice_next_row(&rows, &row))
            if (sluice_as_int(sluice_field(&row, 0), &v) && v % 2 != 0)
                keep[n++] = row;
        sluice_set_list(cx, L, n, keep);
    } else if (sluice_str_eq(cmd, "put")) {
        sluice_put(cx, M, sluice_int(ts % 3), sluice_int(ts));
        sluice_row got;
        if (sluice_get(cx, M, sluice_int(ts % 3), &got))
            sluice_emit(out, sluice_key(cx), sluice_field(&got, 0));
    } else if (sluice_str_eq(cmd, "remove")) {
        sluice_remove(cx, M, sluice_int(ts % 3));
    } else if (sluice_str_eq(cmd, "entries")) {
        sluice_entries it = sluice_map_entries(cx, M);
        sluice_value k;
        while (sluice_next_entry(&it, &k, &row))
            sluice_emit(out, k, sluice_field(&row, 0));
    } else if (sluice_str_eq(cmd, "clear")) {
        sluice_clear(cx, V);
        sluice_clear(cx, L);
        sluice_clear(cx, M);
    } else if (sluice_str_eq(cmd, "timers")) {
        sluice_set_timer(cx, SLUICE_EVENT_TIME, ts + 10);
        sluice_set_timer(cx, SLUICE_PROCESSING_TIME, ts + 20);
        sluice_delete_timer(cx, SLUICE_EVENT_TIME, ts + 30);
    } else if (sluice_str_eq(cmd, "clock")) {
        sluice_emit(out, sluice_int(sluice_timestamp(cx)), sluice_int(sluice_watermark(cx)),
                    sluice_int(sluice_processing_time(cx)));
    } else if (sluice_str_eq(cmd, "fail")) { /* changes, then a failure: all undone */
        sluice_set(cx, V, sluice_int(999));
        sluice_push(cx, L, sluice_int(999));
        sluice_put(cx, M, sluice_int(9), sluice_int(999));
        sluice_clear(cx, M);
        sluice_set_timer(cx, SLUICE_EVENT_TIME, 999);
        sluice_emit(out, sluice_key(cx), sluice_cstr("lost"));
        return sluice_fail("failed after changes");
    } else if (sluice_str_eq(cmd, "wrongkind")) {
        sluice_push(cx, V, sluice_int(1));
    } else if (sluice_str_eq(cmd, "nostate")) {
        sluice_get_value(cx, 7, &row);
    } else if (sluice_str_eq(cmd, "side")) {
        sluice_side(out, "late", sluice_key(cx));
    }
    return 0;
}

/* Stage 2, `agg`: session windows counting rows; field 1 `failadd` fails,
 * `keep` sets nothing. */
static int64_t int_field(const sluice_row *row, size_t i) {
    int64_t v = 0;
    if (row)
        sluice_as_int(sluice_field(row, i), &v);
    return v;
}

static int add(const sluice_row *acc, const sluice_row *row, sluice_acc *next) {
    sluice_str cmd = {"", 0};
    sluice_as_text(sluice_field(row, 1), &cmd);
    if (sluice_str_eq(cmd, "failadd"))
        return sluice_fail("add refused");
    if (sluice_str_eq(cmd, "keep"))
        return 0;
    sluice_acc_set(next, sluice_int(int_field(acc, 0) + 1));
    return 0;
}

static int merge(const sluice_row *a, const sluice_row *b, sluice_acc *merged) {
    if (int_field(a, 0) == 99)
        return 0; /* keeps a */
    if (int_field(a, 0) == 66)
        return sluice_fail("merge refused");
    sluice_acc_set(merged, sluice_int(int_field(a, 0) + int_field(b, 0)));
    return 0;
}

static int fire(const sluice_window *w, const sluice_row *acc, sluice_out *out) {
    sluice_emit(out, w->key, sluice_int(w->start), sluice_int(w->end),
                sluice_int(acc ? int_field(acc, 0) : -1));
    return 0;
}

/* Stage 3, `rows`: a window function over the contents. */
static int fire_rows(const sluice_window *w, const sluice_record *rows, size_t count,
                     sluice_out *out) {
    sluice_str key;
    if (sluice_as_text(w->key, &key) && sluice_str_eq(key, "FAIL"))
        return sluice_fail("fire refused");
    if (count == 0)
        return 0;
    sluice_emit(out, w->key, sluice_int((int64_t)count), sluice_int(rows[0].timestamp),
                sluice_int(rows[count - 1].timestamp), sluice_field(&rows[count - 1].row, 0));
    return 0;
}

/* Stage 4, `tail`: forwards its rows as they are. */
static int tail(const sluice_record *r, sluice_out *out) {
    sluice_value values[8];
    size_t n = sluice_row_values(&r->row, values, 8);
    sluice_emit_row(out, n, values);
    return 0;
}

static int jobs_built;

static void job(const sluice_params *params, sluice_job *job) {
    jobs_built++;
    sluice_str ttl_text;
    uint64_t ttl = 5000;
    if (sluice_param(params, "ttl", &ttl_text))
        sluice_parse_uint(ttl_text, &ttl);
    sluice_state states[] = {sluice_state_ttl(sluice_value_state("v"), ttl),
                             sluice_list_state("l"), sluice_map_state("m")};
    sluice_job_name(job, "first");
    sluice_job_name(job, "pipeline-test"); /* replaces the first */
    sluice_job_source(job, "socket://localhost:9100");
    sluice_job_checkpoint_ms(job, 1000);
    sluice_job_restart_fixed_delay(job, 3, 1000);
    sluice_job_max_rows_per_record(job, 50);
    sluice_job_idle_timeout(job, 5000);
    sluice_job_watermarks(job, 100); /* keeps the idle timeout */
    sluice_job_side_output(job, "bad");
    sluice_job_side_output_to(job, "late", "discard");
    sluice_job_map(job, "parse", parse);
    sluice_job_key_by(job, field0);
    sluice_job_process(job, "proc", states, 3, proc);
    sluice_job_key_by(job, field0);
    sluice_job_window_aggregate(
        job, "agg", sluice_windows_late_output(sluice_windows_allowed_lateness(sluice_session(1000), 500), "late"),
        add, merge, fire);
    sluice_job_key_by(job, field0);
    sluice_job_window_process(job, "rows", sluice_windows_processing_time(sluice_sliding(1000, 500)),
                              fire_rows);
    sluice_job_map(job, "tail", tail);
    sluice_job_key_by(job, field0); /* no stage after it: ignored */
}

SLUICE_PIPELINE(job)

/* ---- The canonical ABI, as the host drives it ---------------------------- */

void *cabi_realloc(void *ptr, size_t old_size, size_t align, size_t new_size);
uint8_t *__wasm_export_exports_sluice_stream_operator_open(uint8_t *, size_t);
void __wasm_export_exports_sluice_stream_operator_open_post_return(uint8_t *);
uint8_t *__wasm_export_exports_sluice_stream_operator_map(int32_t, int64_t, int64_t, uint8_t *,
                                                         size_t);
void __wasm_export_exports_sluice_stream_operator_map_post_return(uint8_t *);
uint8_t *__wasm_export_exports_sluice_stream_operator_process(int32_t, int64_t, int64_t,
                                                             uint8_t *, size_t, uint8_t *, size_t);
void __wasm_export_exports_sluice_stream_operator_process_post_return(uint8_t *);
uint8_t *__wasm_export_exports_sluice_stream_operator_window_add(int32_t, int64_t, int64_t,
                                                                uint8_t *, size_t, uint8_t *,
                                                                size_t);
void __wasm_export_exports_sluice_stream_operator_window_add_post_return(uint8_t *);
uint8_t *__wasm_export_exports_sluice_stream_operator_window_merge(int32_t, uint8_t *, size_t);
void __wasm_export_exports_sluice_stream_operator_window_merge_post_return(uint8_t *);
uint8_t *__wasm_export_exports_sluice_stream_operator_window_fire(int32_t, int64_t, int64_t,
                                                                 uint8_t *, size_t);
void __wasm_export_exports_sluice_stream_operator_window_fire_post_return(uint8_t *);
uint8_t *__wasm_export_exports_sluice_stream_job_describe(uint8_t *, size_t);
void __wasm_export_exports_sluice_stream_job_describe_post_return(uint8_t *);

/* Natively there is no component-type custom section to link. */
void __component_type_object_force_link_pipeline_job(void) {}

#define P sizeof(void *)

static int passed, failed;

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (cond) {                                                                   \
            passed++;                                                                 \
        } else {                                                                      \
            failed++;                                                                 \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                             \
    } while (0)

/* Compares a decoded result with what is wanted, showing both on a miss. */
#define SAME(got, want)                                                                  \
    do {                                                                                 \
        if (strcmp((got), (want)) == 0) {                                                \
            passed++;                                                                    \
        } else {                                                                         \
            failed++;                                                                    \
            fprintf(stderr, "%s:%d: got\n    %s\nwanted\n    %s\n", __FILE__, __LINE__, \
                    (got), (want));                                                      \
        }                                                                                \
    } while (0)

/* ---- Building buffers ------------------------------------------------------ */

typedef struct buf {
    uint8_t b[1 << 16];
    size_t n;
} buf;

static void u8(buf *b, uint8_t v) {
    b->b[b->n++] = v;
}
static void u32(buf *b, uint32_t v) {
    for (int i = 0; i < 4; i++)
        u8(b, (uint8_t)(v >> (8 * i)));
}
static void i64(buf *b, int64_t v) {
    for (int i = 0; i < 8; i++)
        u8(b, (uint8_t)((uint64_t)v >> (8 * i)));
}
static void raw(buf *b, const void *p, size_t n) {
    memcpy(b->b + b->n, p, n);
    b->n += n;
}
static void text(buf *b, const char *s) {
    u8(b, 4);
    u32(b, (uint32_t)strlen(s));
    raw(b, s, strlen(s));
}
static void integer(buf *b, int64_t v) {
    u8(b, 2);
    i64(b, v);
}

/* A row from a spec: `t` text, `i` int, `n` null, `f` float. */
static void row(buf *b, const char *spec, ...) {
    va_list args;
    va_start(args, spec);
    u32(b, (uint32_t)strlen(spec));
    for (const char *c = spec; *c; c++) {
        if (*c == 't') {
            text(b, va_arg(args, const char *));
        } else if (*c == 'i') {
            integer(b, va_arg(args, int64_t));
        } else if (*c == 'f') {
            double f = va_arg(args, double);
            uint64_t bits;
            memcpy(&bits, &f, 8);
            u8(b, 3);
            i64(b, (int64_t)bits);
        } else {
            u8(b, 0);
        }
    }
    va_end(args);
}

/* `state := 0x01 u32 len, bytes` of what `body` holds, or 0x00. */
static void state(buf *b, const buf *body) {
    if (!body) {
        u8(b, 0);
        return;
    }
    u8(b, 1);
    u32(b, (uint32_t)body->n);
    raw(b, body->b, body->n);
}

/* Copies a buffer into memory the export owns, as the host's lowering does. */
static uint8_t *lower(const buf *b) {
    if (b->n == 0)
        return (uint8_t *)1; /* cabi_realloc's answer for an empty list */
    uint8_t *p = cabi_realloc(NULL, 0, 1, b->n);
    memcpy(p, b->b, b->n);
    return p;
}

/* A list<tuple<string, string>> lowered like the host does. */
static uint8_t *params(const char *const *kv, size_t n) {
    if (n == 0)
        return (uint8_t *)P;
    uint8_t *list = cabi_realloc(NULL, 0, P, n * 4 * P);
    for (size_t i = 0; i < 2 * n; i++) {
        size_t len = strlen(kv[i]);
        uint8_t *s = len ? cabi_realloc(NULL, 0, 1, len) : (uint8_t *)1;
        memcpy(s, kv[i], len);
        *(uint8_t **)(list + i * 2 * P) = s;
        *(size_t *)(list + i * 2 * P + P) = len;
    }
    return list;
}

/* ---- Decoding what the helper returns ---------------------------------- */

typedef struct text_out {
    char s[8192];
    size_t n;
} text_out;

static void say(text_out *t, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    int n = vsnprintf(t->s + t->n, sizeof t->s - t->n, fmt, args);
    va_end(args);
    if (n > 0)
        t->n += (size_t)n < sizeof t->s - t->n ? (size_t)n : sizeof t->s - t->n - 1;
}

/* The helper's own output is trusted here (the host checks it); the reads
 * still stay within `end`, so a wrong length shows as `?`. */
static const uint8_t *say_value(text_out *t, const uint8_t *p, const uint8_t *end) {
    if (p >= end) {
        say(t, "?");
        return end;
    }
    uint8_t tag = *p++;
    uint64_t v = 0;
    uint32_t len = 0;
    switch (tag) {
    case 0:
        say(t, "null");
        return p;
    case 1:
        say(t, *p ? "true" : "false");
        return p + 1;
    case 2:
    case 3:
        for (int i = 7; i >= 0; i--)
            v = v << 8 | p[i];
        if (tag == 2) {
            say(t, "%lld", (long long)(int64_t)v);
        } else {
            double f;
            memcpy(&f, &v, 8);
            say(t, "%gf", f);
        }
        return p + 8;
    default:
        for (int i = 3; i >= 0; i--)
            len = len << 8 | p[i];
        p += 4;
        if (len > (size_t)(end - p)) {
            say(t, "?");
            return end;
        }
        say(t, tag == 4 ? "'%.*s'" : "0x%.*s", (int)len, (const char *)p);
        return p + len;
    }
}

static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static int64_t le64(const uint8_t *p) {
    return (int64_t)((uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32);
}

static const uint8_t *say_row(text_out *t, const uint8_t *p, const uint8_t *end) {
    if (end - p < 4) {
        say(t, "?");
        return end;
    }
    uint32_t n = le32(p);
    p += 4;
    say(t, "(");
    for (uint32_t i = 0; i < n && p < end; i++) {
        if (i)
            say(t, ",");
        p = say_value(t, p, end);
    }
    say(t, ")");
    return p;
}

/* `output`: entries separated by `|`, each row as `tag@ts(row)` and `=key`
 * when `keyed` (main rows only); `-` for an entry with no rows. */
static void say_output(text_out *t, const uint8_t *p, size_t len, bool keyed) {
    const uint8_t *end = p + len;
    bool first = true;
    while (p < end) {
        say(t, first ? "" : " | ");
        first = false;
        uint32_t n = le32(p);
        p += 4;
        if (n == 0)
            say(t, "-");
        for (uint32_t i = 0; i < n && p < end; i++) {
            uint8_t tag = *p;
            say(t, "%s%u@%lld", i ? " " : "", tag, (long long)le64(p + 1));
            p = say_row(t, p + 9, end);
            if (tag == 0 && keyed) {
                say(t, "=");
                p = say_value(t, p, end);
            }
        }
    }
}

/* A state's bytes by its kind: a row; `[rows]`; `{key:row,...}`. */
static void say_state(text_out *t, const uint8_t *p, size_t len, int kind) {
    const uint8_t *end = p + len;
    if (kind == 0) {
        say_row(t, p, end);
        return;
    }
    uint32_t n = le32(p);
    p += 4;
    say(t, kind == 1 ? "[" : "{");
    for (uint32_t i = 0; i < n && p < end; i++) {
        if (i)
            say(t, ",");
        if (kind == 2) {
            p = say_value(t, p, end);
            say(t, ":");
        }
        p = say_row(t, p, end);
    }
    say(t, kind == 1 ? "]" : "}");
}

static const int proc_kinds[] = {0, 1, 2};

/* Process `changes`: `set K.S bytes`, `clear K.S`, `timer K e|p AT`,
 * `untimer K e|p AT`, separated by `; `. */
static void say_changes(text_out *t, const uint8_t *p, size_t len) {
    const uint8_t *end = p + len;
    bool first = true;
    while (p < end) {
        say(t, first ? "" : "; ");
        first = false;
        uint8_t op = p[0];
        uint32_t key = le32(p + 1);
        if (op <= 1) {
            uint32_t s = le32(p + 5);
            say(t, "%s %u.%u", op == 0 ? "set" : "clear", key, s);
            p += 9;
            if (op == 0) {
                uint32_t n = le32(p);
                say(t, " ");
                say_state(t, p + 4, n, s < 3 ? proc_kinds[s] : 0);
                p += 4 + n;
            }
        } else {
            say(t, "%s %u %s %lld", op == 2 ? "timer" : "untimer", key, p[5] ? "p" : "e",
                (long long)le64(p + 6));
            p += 14;
        }
    }
}

/* Window `changes`: `SLOT=row` separated by spaces. */
static void say_slot_changes(text_out *t, const uint8_t *p, size_t len) {
    const uint8_t *end = p + len;
    bool first = true;
    while (p < end) {
        say(t, first ? "" : " ");
        first = false;
        uint32_t slot = le32(p), n = le32(p + 4);
        say(t, "%u=", slot);
        say_row(t, p + 8, p + 8 + n);
        p += 8 + n;
    }
}

/* One call's result, decoded. */
typedef struct result {
    text_out output;
    text_out changes;
    int failed;
    uint32_t index;
    char message[512];
} result;

typedef enum { OUT_MAIN, OUT_KEYED } keyed_t;

/* Reads the return area of a batch-result call and frees it the host's way. */
static void take(uint8_t *ret, void (*post_return)(uint8_t *), bool keyed, int changes_kind,
                 result *r) {
    memset(r, 0, sizeof *r);
    size_t olen = *(size_t *)(ret + P), clen = *(size_t *)(ret + 3 * P);
    say_output(&r->output, *(uint8_t **)ret, olen, keyed);
    if (changes_kind == 1)
        say_changes(&r->changes, *(uint8_t **)(ret + 2 * P), clen);
    else if (changes_kind == 2)
        say_slot_changes(&r->changes, *(uint8_t **)(ret + 2 * P), clen);
    else if (clen)
        say(&r->changes, "unexpected changes");
    r->failed = *(uint8_t *)(ret + 4 * P);
    if (r->failed) {
        r->index = *(uint32_t *)(ret + 5 * P);
        size_t mlen = *(size_t *)(ret + 7 * P);
        snprintf(r->message, sizeof r->message, "%.*s", (int)mlen, *(char **)(ret + 6 * P));
    }
    post_return(ret);
}

static result got;

static void call_map(uint32_t stage, int64_t now, int64_t wm, const buf *in, bool keyed) {
    uint8_t *ret = __wasm_export_exports_sluice_stream_operator_map((int32_t)stage, now, wm,
                                                                   lower(in), in->n);
    take(ret, __wasm_export_exports_sluice_stream_operator_map_post_return, keyed, 0, &got);
}

static void call_process(uint32_t stage, int64_t now, int64_t wm, const buf *in,
                         const buf *keys) {
    uint8_t *ret = __wasm_export_exports_sluice_stream_operator_process(
        (int32_t)stage, now, wm, lower(in), in->n, lower(keys), keys->n);
    take(ret, __wasm_export_exports_sluice_stream_operator_process_post_return, true, 1, &got);
}

static void call_add(uint32_t stage, const buf *in, const buf *slots) {
    uint8_t *ret = __wasm_export_exports_sluice_stream_operator_window_add(
        (int32_t)stage, 0, 0, lower(in), in->n, lower(slots), slots->n);
    take(ret, __wasm_export_exports_sluice_stream_operator_window_add_post_return, false, 2, &got);
}

static void call_merge(uint32_t stage, const buf *in) {
    uint8_t *ret =
        __wasm_export_exports_sluice_stream_operator_window_merge((int32_t)stage, lower(in), in->n);
    take(ret, __wasm_export_exports_sluice_stream_operator_window_merge_post_return, false, 2,
         &got);
}

static void call_fire(uint32_t stage, const buf *in, bool keyed) {
    uint8_t *ret = __wasm_export_exports_sluice_stream_operator_window_fire((int32_t)stage, 0, 0,
                                                                           lower(in), in->n);
    take(ret, __wasm_export_exports_sluice_stream_operator_window_fire_post_return, keyed, 0,
         &got);
}

static buf in, keys, body, body2;

static void reset(void) {
    in.n = keys.n = body.n = body2.n = 0;
}

/* ---- Tests ------------------------------------------------------------------ */

static void test_open_describe(void) {
    const char *kv[] = {"ttl", "250", "other", ""};
    uint8_t *ret = __wasm_export_exports_sluice_stream_operator_open(params(kv, 2), 2);
    CHECK(ret[0] == 0);
    __wasm_export_exports_sluice_stream_operator_open_post_return(ret);

    /* The description as the generated types hold it. */
    pipeline_job_list_tuple2_string_string_t none = {NULL, 0};
    exports_sluice_stream_job_job_description_t d;
    exports_sluice_stream_job_describe(&none, &d);
    CHECK(d.name.is_some && d.name.val.len == 13 && memcmp(d.name.val.ptr, "pipeline-test", 13) == 0);
    CHECK(d.source.is_some && !d.sink.is_some);
    CHECK(d.checkpoint_interval_ms.is_some && d.checkpoint_interval_ms.val == 1000);
    CHECK(d.restart.is_some && d.restart.val.tag == SLUICE_STREAM_TYPES_RESTART_STRATEGY_FIXED_DELAY &&
          d.restart.val.val.fixed_delay.attempts == 3 &&
          d.restart.val.val.fixed_delay.delay_ms == 1000);
    CHECK(d.limits.is_some && d.limits.val.max_rows_per_record.is_some &&
          d.limits.val.max_rows_per_record.val == 50 && !d.limits.val.memory_bytes.is_some);
    CHECK(d.stages.len == 5);
    const sluice_stream_types_stage_t *s = d.stages.ptr;
    CHECK(s[0].kind.tag == SLUICE_STREAM_TYPES_STAGE_KIND_MAP && !s[0].keyed);
    CHECK(s[0].name.len == 5 && memcmp(s[0].name.ptr, "parse", 5) == 0);
    CHECK(s[1].kind.tag == SLUICE_STREAM_TYPES_STAGE_KIND_PROCESS && s[1].keyed);
    const sluice_stream_types_list_state_decl_t *st = &s[1].kind.val.process;
    CHECK(st->len == 3 && st->ptr[0].kind == SLUICE_STREAM_TYPES_STATE_KIND_VALUE &&
          st->ptr[0].ttl_ms.is_some && st->ptr[0].ttl_ms.val == 5000 &&
          st->ptr[1].kind == SLUICE_STREAM_TYPES_STATE_KIND_LIST && !st->ptr[1].ttl_ms.is_some &&
          st->ptr[2].kind == SLUICE_STREAM_TYPES_STATE_KIND_MAP);
    CHECK(st->ptr[2].name.len == 1 && st->ptr[2].name.ptr[0] == 'm');
    const sluice_stream_types_window_spec_t *w = &s[2].kind.val.window;
    CHECK(s[2].kind.tag == SLUICE_STREAM_TYPES_STAGE_KIND_WINDOW && s[2].keyed);
    CHECK(w->assigner.tag == SLUICE_STREAM_TYPES_WINDOW_ASSIGNER_SESSION &&
          w->assigner.val.session == 1000 && w->allowed_lateness_ms == 500 &&
          w->domain == SLUICE_STREAM_TYPES_TIME_DOMAIN_EVENT_TIME &&
          w->late_output.is_some && w->late_output.val.len == 4 &&
          w->function == SLUICE_STREAM_TYPES_WINDOW_FUNCTION_AGGREGATE);
    w = &s[3].kind.val.window;
    CHECK(w->assigner.tag == SLUICE_STREAM_TYPES_WINDOW_ASSIGNER_SLIDING &&
          w->assigner.val.sliding.size_ms == 1000 && w->assigner.val.sliding.slide_ms == 500 &&
          w->domain == SLUICE_STREAM_TYPES_TIME_DOMAIN_PROCESSING_TIME && !w->late_output.is_some &&
          w->function == SLUICE_STREAM_TYPES_WINDOW_FUNCTION_PROCESS);
    CHECK(s[4].kind.tag == SLUICE_STREAM_TYPES_STAGE_KIND_MAP && !s[4].keyed);
    CHECK(d.side_outputs.len == 2 && !d.side_outputs.ptr[0].sink.is_some &&
          d.side_outputs.ptr[1].sink.is_some && d.side_outputs.ptr[1].sink.val.len == 7);
    CHECK(d.watermarks.is_some && d.watermarks.val.out_of_orderness_ms == 100 &&
          d.watermarks.val.idle_timeout_ms.is_some &&
          d.watermarks.val.idle_timeout_ms.val == 5000);
    exports_sluice_stream_job_job_description_free(&d);

    /* The parameters reach the job function; the post-return frees all. */
    const char *ttl[] = {"ttl", "7"};
    ret = __wasm_export_exports_sluice_stream_job_describe(params(ttl, 1), 1);
    CHECK(ret[0] == 1 && *(size_t *)(ret + 2 * P) == 13);
    __wasm_export_exports_sluice_stream_job_describe_post_return(ret);
}

static void test_map(void) {
    reset(); /* the first stage: rows only, stamped with the processing time */
    row(&in, "t", "a go");
    row(&in, "t", "b go 42");
    row(&in, "t", "");
    row(&in, "t", "SIDE");
    call_map(0, 1000, 0, &in, true);
    CHECK(!got.failed);
    SAME(got.output.s, "0@1000('a','go')='a' | 0@42('b','go')='b' | - | 1@1000('SIDE')");

    reset(); /* a failing record: the output of those before it */
    row(&in, "t", "a go");
    row(&in, "t", "ERR");
    row(&in, "t", "b go");
    call_map(0, 5, 0, &in, true);
    CHECK(got.failed && got.index == 1 && strcmp(got.message, "bad line") == 0);
    SAME(got.output.s, "0@5('a','go')='a'");

    reset(); /* no message; a misuse fails its record even if it returns 0 */
    row(&in, "t", "SILENT");
    call_map(0, 5, 0, &in, true);
    CHECK(got.failed && got.index == 0 && got.output.n == 0);
    SAME(got.message, "the map function failed the record");
    reset();
    row(&in, "t", "a go");
    row(&in, "t", "NOSIDE");
    call_map(0, 5, 0, &in, true);
    CHECK(got.failed && got.index == 1);
    SAME(got.message, "there is no side output named `nope`; declare it with sluice_job_side_output");
    SAME(got.output.s, "0@5('a','go')='a'");

    reset(); /* a later stage: (timestamp, row) entries; the last stage: no key */
    i64(&in, -3), row(&in, "tin", "x", (int64_t)1, NULL);
    i64(&in, 9), row(&in, "");
    call_map(4, 0, 0, &in, false);
    CHECK(!got.failed);
    SAME(got.output.s, "0@-3('x',1,null) | 0@9()");

    reset(); /* the record's text is empty when field 0 is not text */
    row(&in, "i", (int64_t)3);
    call_map(0, 1, 0, &in, true);
    CHECK(!got.failed && strcmp(got.output.s, "-") == 0);

    reset(); /* the wrong stage */
    row(&in, "t", "a");
    call_map(1, 0, 0, &in, true);
    CHECK(got.failed && got.index == 0);
    SAME(got.message, "stage 1 is not a map stage");
    call_map(9, 0, 0, &in, true);
    SAME(got.message, "the job has no stage 9");

    reset(); /* an empty batch */
    call_map(0, 0, 0, &in, true);
    CHECK(!got.failed && got.output.n == 0);
}

static void test_map_malformed(void) {
    reset();
    row(&in, "t", "a go");
    row(&in, "t", "abc");
    in.n -= 1;
    call_map(0, 0, 0, &in, true);
    CHECK(got.failed && got.index == 1);
    SAME(got.message, "malformed batch from the host: truncated batch at byte 22");
    SAME(got.output.s, "0@0('a','go')='a'");

    reset();
    u32(&in, 1), u8(&in, 9);
    call_map(0, 0, 0, &in, true);
    SAME(got.message, "malformed batch from the host: unknown value tag at byte 4");

    reset();
    u32(&in, 1), u8(&in, 4), u32(&in, 2), u8(&in, 0xc0), u8(&in, 0xaf);
    call_map(0, 0, 0, &in, true);
    SAME(got.message, "malformed batch from the host: text value is not valid UTF-8 at byte 4");

    reset(); /* a length past the end */
    u32(&in, 1), u8(&in, 4), u32(&in, 0xffffffffu);
    call_map(0, 0, 0, &in, true);
    CHECK(got.failed && strncmp(got.message, "malformed batch from the host: truncated", 40) == 0);

    reset(); /* a later stage's timestamp cut short */
    i64(&in, 1), row(&in, ""), u8(&in, 1);
    call_map(4, 0, 0, &in, false);
    CHECK(got.failed && got.index == 1);
    SAME(got.message, "malformed batch from the host: truncated batch at byte 12");
}

/* keys := u32 n, (value key, state{3}){n} with the given states. */
static void key_entry(buf *b, const char *key, const buf *v, const buf *l, const buf *m) {
    text(b, key);
    state(b, v);
    state(b, l);
    state(b, m);
}

static void entry_row(buf *b, uint32_t key, int64_t ts, const char *k, const char *cmd) {
    u8(b, 0), u32(b, key), i64(b, ts);
    row(b, "tt", k, cmd);
}

static void entry_timer(buf *b, uint32_t key, int64_t at, uint8_t domain) {
    u8(b, 1), u32(b, key), i64(b, at), u8(b, domain);
}

static void test_process(void) {
    reset(); /* a counter in a value state, shipped set for key 1 */
    row(&body, "i", (int64_t)41);
    u32(&keys, 2);
    key_entry(&keys, "a", NULL, NULL, NULL);
    key_entry(&keys, "b", &body, NULL, NULL);
    entry_row(&in, 0, 10, "a", "count");
    entry_row(&in, 1, 11, "b", "count");
    entry_row(&in, 0, 12, "a", "count");
    entry_timer(&in, 1, 30, 1);
    call_process(1, 100, 50, &in, &keys);
    CHECK(!got.failed);
    SAME(got.output.s, "0@10('a',1)='a' | 0@11('b',42)='b' | 0@12('a',2)='a' | "
                       "0@30('b','timer',30,1)='b'");
    SAME(got.changes.s, "set 0.0 (2); set 1.0 (42)");

    reset(); /* lists: appended in place, across entries, from themselves, filtered */
    u32(&body, 1), row(&body, "t", "seven");
    u32(&keys, 1);
    key_entry(&keys, "k", NULL, &body, NULL);
    entry_row(&in, 0, 20, "k", "push");
    entry_row(&in, 0, 30, "k", "push");
    entry_row(&in, 0, 0, "k", "again");
    call_process(1, 0, 0, &in, &keys);
    CHECK(!got.failed);
    SAME(got.output.s, "0@20('k',3)='k' | 0@30('k',5)='k' | 0@0('k',13)='k'");
    SAME(got.changes.s, "set 0.1 [('seven'),(20),(21),(30),(31),('seven'),('seven'),('seven'),"
                        "('seven'),('seven'),('seven'),('seven'),('seven')]");
    reset();
    u32(&body, 4);
    for (int64_t v = 1; v <= 4; v++)
        row(&body, "i", v);
    u32(&keys, 1);
    key_entry(&keys, "k", NULL, &body, NULL);
    entry_row(&in, 0, 0, "k", "odd");
    call_process(1, 0, 0, &in, &keys);
    SAME(got.changes.s, "set 0.1 [(1),(3)]");
    reset(); /* a filter that keeps nothing clears the list */
    u32(&body, 1), row(&body, "i", (int64_t)2);
    u32(&keys, 1);
    key_entry(&keys, "k", NULL, &body, NULL);
    entry_row(&in, 0, 0, "k", "odd");
    call_process(1, 0, 0, &in, &keys);
    SAME(got.changes.s, "clear 0.1");

    reset(); /* maps: put replaces and moves to the end, get, remove, entries */
    u32(&body, 2);
    integer(&body, 1), row(&body, "t", "one");
    integer(&body, 2), row(&body, "t", "two");
    u32(&keys, 1);
    key_entry(&keys, "k", NULL, NULL, &body);
    entry_row(&in, 0, 4, "k", "put");    /* 4 % 3 = 1: replaced */
    entry_row(&in, 0, 6, "k", "put");    /* 6 % 3 = 0: added */
    entry_row(&in, 0, 5, "k", "remove"); /* 5 % 3 = 2 */
    entry_row(&in, 0, 0, "k", "entries");
    call_process(1, 0, 0, &in, &keys);
    CHECK(!got.failed);
    SAME(got.output.s, "0@4('k',4)='k' | 0@6('k',6)='k' | - | 0@0(1,4)=1 0@0(0,6)=0");
    SAME(got.changes.s, "set 0.2 {1:(4),0:(6)}");
    reset(); /* removing the last key clears the map */
    u32(&body, 1), integer(&body, 2), row(&body, "t", "two");
    u32(&keys, 1);
    key_entry(&keys, "k", NULL, NULL, &body);
    entry_row(&in, 0, 2, "k", "remove");
    call_process(1, 0, 0, &in, &keys);
    SAME(got.changes.s, "clear 0.2");

    reset(); /* clear, timers in order, the clocks */
    row(&body, "i", (int64_t)1);
    u32(&keys, 2);
    key_entry(&keys, "a", &body, NULL, NULL);
    key_entry(&keys, "b", NULL, NULL, NULL);
    entry_row(&in, 1, 100, "b", "timers");
    entry_row(&in, 0, 200, "a", "clear");
    entry_row(&in, 0, 300, "a", "clock");
    call_process(1, 7000, -5, &in, &keys);
    SAME(got.output.s, "- | - | 0@300(300,-5,7000)=300");
    SAME(got.changes.s, "clear 0.0; clear 0.1; clear 0.2; timer 1 e 110; timer 1 p 120; "
                        "untimer 1 e 130");
}

static void test_process_failures(void) {
    reset(); /* a failing entry's changes and timers are undone, the others kept */
    row(&body, "i", (int64_t)5);
    u32(&body2, 1), row(&body2, "i", (int64_t)1);
    u32(&keys, 2);
    key_entry(&keys, "a", &body, &body2, NULL);
    key_entry(&keys, "b", NULL, NULL, NULL);
    entry_row(&in, 0, 1, "a", "count");
    entry_row(&in, 1, 2, "b", "timers");
    entry_row(&in, 0, 3, "a", "push");
    entry_row(&in, 0, 4, "a", "fail");
    entry_row(&in, 1, 5, "b", "count");
    call_process(1, 0, 0, &in, &keys);
    CHECK(got.failed && got.index == 3);
    SAME(got.message, "failed after changes");
    SAME(got.output.s, "0@1('a',6)='a' | - | 0@3('a',3)='a'");
    SAME(got.changes.s, "set 0.0 (6); set 0.1 [(1),(3),(4)]; timer 1 e 12; timer 1 p 22; "
                        "untimer 1 e 32");

    reset(); /* the first entry fails: nothing */
    u32(&keys, 1);
    key_entry(&keys, "a", NULL, NULL, NULL);
    entry_row(&in, 0, 4, "a", "fail");
    call_process(1, 0, 0, &in, &keys);
    CHECK(got.failed && got.index == 0 && got.output.n == 0 && got.changes.n == 0);

    reset(); /* misuses */
    u32(&keys, 1);
    key_entry(&keys, "a", NULL, NULL, NULL);
    entry_row(&in, 0, 1, "a", "wrongkind");
    call_process(1, 0, 0, &in, &keys);
    CHECK(got.failed && got.index == 0);
    SAME(got.message, "state 0 is not a list state");
    reset();
    u32(&keys, 1);
    key_entry(&keys, "a", NULL, NULL, NULL);
    entry_row(&in, 0, 1, "a", "count");
    entry_row(&in, 0, 1, "a", "nostate");
    call_process(1, 0, 0, &in, &keys);
    CHECK(got.failed && got.index == 1);
    SAME(got.message, "the stage declares no state 7; declare it in sluice_job_process");
    SAME(got.changes.s, "set 0.0 (1)");

    reset(); /* the wrong stage */
    u32(&keys, 0);
    call_process(2, 0, 0, &in, &keys);
    SAME(got.message, "stage 2 is not a process stage");
}

static void test_process_malformed(void) {
    struct {
        const char *what;
        const char *message;
    } cases[] = {
        {"key index", "malformed batch from the host: key index 1 of 1"},
        {"entry tag", "malformed batch from the host: unknown entry tag at byte 0"},
        {"domain", "malformed batch from the host: unknown time domain of a timer at byte 0"},
        {"kind", "malformed batch from the host: state 1 of key 0 is not a list state"},
        {"state tag", "malformed batch from the host: unknown state tag at byte 11"},
        {"key count", "malformed batch from the host: key count 100000 at byte 0 runs past the buffer"},
        {"trailing", "malformed batch from the host: bytes after the last key"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        reset();
        const char *what = cases[i].what;
        u32(&keys, strcmp(what, "key count") == 0 ? 100000 : 1);
        text(&keys, "a");
        u8(&keys, 0);
        if (strcmp(what, "kind") == 0) {
            row(&body, "i", (int64_t)1); /* a row, where a list is declared */
            state(&keys, &body);
        } else {
            u8(&keys, strcmp(what, "state tag") == 0 ? 7 : 0);
        }
        u8(&keys, 0);
        if (strcmp(what, "trailing") == 0)
            u8(&keys, 0);
        if (strcmp(what, "entry tag") == 0)
            u8(&in, 5), u32(&in, 0), i64(&in, 0);
        else if (strcmp(what, "domain") == 0)
            entry_timer(&in, 0, 1, 2);
        else
            entry_row(&in, strcmp(what, "key index") == 0 ? 1 : 0, 1, "a", "count");
        call_process(1, 0, 0, &in, &keys);
        CHECK(got.failed && got.index == 0);
        SAME(got.message, cases[i].message);
        CHECK(got.output.n == 0 && got.changes.n == 0);
    }
}

/* slots := u32 n, (value key, start, end, state){n} */
static void slot(buf *b, const char *key, int64_t start, int64_t end, const buf *agg) {
    text(b, key);
    i64(b, start);
    i64(b, end);
    state(b, agg);
}

static void test_window_add(void) {
    reset();
    row(&body, "i", (int64_t)10);
    u32(&keys, 3);
    slot(&keys, "a", 0, 1000, NULL);
    slot(&keys, "b", 0, 1000, &body);
    slot(&keys, "c", 0, 1000, &body);
    u32(&in, 0), row(&in, "tt", "a", "x");
    u32(&in, 1), row(&in, "tt", "b", "x");
    u32(&in, 0), row(&in, "tt", "a", "x");
    u32(&in, 2), row(&in, "tt", "c", "keep"); /* unchanged: no change */
    call_add(2, &in, &keys);
    CHECK(!got.failed && got.output.n == 0);
    SAME(got.changes.s, "0=(2) 1=(11)");

    reset(); /* a new window whose add sets nothing: the empty row */
    u32(&keys, 1);
    slot(&keys, "a", 0, 1000, NULL);
    u32(&in, 0), row(&in, "tt", "a", "keep");
    call_add(2, &in, &keys);
    SAME(got.changes.s, "0=()");

    reset(); /* a failing row: the aggregates of those before it */
    u32(&keys, 2);
    slot(&keys, "a", 0, 1000, NULL);
    slot(&keys, "b", 0, 1000, NULL);
    u32(&in, 0), row(&in, "tt", "a", "x");
    u32(&in, 1), row(&in, "tt", "b", "failadd");
    call_add(2, &in, &keys);
    CHECK(got.failed && got.index == 1);
    SAME(got.message, "add refused");
    SAME(got.changes.s, "0=(1)");

    reset(); /* malformed */
    u32(&keys, 1);
    slot(&keys, "a", 0, 1000, NULL);
    u32(&in, 0), row(&in, "tt", "a", "x");
    u32(&in, 1), row(&in, "tt", "a", "x");
    call_add(2, &in, &keys);
    CHECK(got.failed && got.index == 1);
    SAME(got.message, "malformed batch from the host: slot 1 of 1");
    SAME(got.changes.s, "0=(1)");
    reset();
    u32(&body, 5); /* an aggregate that is not a row */
    u32(&keys, 1);
    slot(&keys, "a", 0, 1000, &body);
    call_add(2, &in, &keys);
    SAME(got.message, "malformed batch from the host: an aggregate is not a row");
    reset();
    u32(&keys, 0xfffffff0u);
    call_add(2, &in, &keys);
    SAME(got.message, "malformed batch from the host: slot count 4294967280 at byte 0 runs past the buffer");
    reset();
    u32(&keys, 0);
    call_add(1, &in, &keys);
    SAME(got.message, "stage 1 is not an aggregate window stage");
}

static void test_window_merge(void) {
    reset();
    buf a = {{0}, 0}, b = {{0}, 0}, keep = {{0}, 0}, refuse = {{0}, 0};
    row(&a, "i", (int64_t)2);
    row(&b, "i", (int64_t)3);
    row(&keep, "i", (int64_t)99);
    row(&refuse, "i", (int64_t)66);
    u32(&in, 5);
    state(&in, &a), state(&in, &b);
    state(&in, &a), state(&in, NULL);
    state(&in, NULL), state(&in, NULL);
    state(&in, NULL), state(&in, &b);
    state(&in, &keep), state(&in, &b);
    call_merge(2, &in);
    CHECK(!got.failed && got.output.n == 0);
    SAME(got.changes.s, "0=(5) 1=(2) 3=(3) 4=(99)");

    reset();
    u32(&in, 2);
    state(&in, &a), state(&in, &b);
    state(&in, &refuse), state(&in, &b);
    call_merge(2, &in);
    CHECK(got.failed && got.index == 1);
    SAME(got.message, "merge refused");
    SAME(got.changes.s, "0=(5)");

    reset(); /* malformed: a pair cut short, a count past the buffer */
    u32(&in, 2);
    state(&in, &a), state(&in, &b);
    state(&in, &a);
    call_merge(2, &in);
    CHECK(got.failed && got.index == 1);
    SAME(got.changes.s, "0=(5)");
    reset();
    u32(&in, 1000);
    call_merge(2, &in);
    CHECK(got.failed && got.index == 0 && got.changes.n == 0);
}

static void test_window_fire(void) {
    reset(); /* aggregates: the key of the next stage, timestamp end - 1 */
    row(&body, "i", (int64_t)4);
    u32(&in, 2);
    text(&in, "a"), i64(&in, 0), i64(&in, 1000), u8(&in, 0), state(&in, &body);
    text(&in, "b"), i64(&in, 500), i64(&in, 1500), u8(&in, 0), state(&in, NULL);
    call_fire(2, &in, true);
    CHECK(!got.failed);
    SAME(got.output.s, "0@999('a',0,1000,4)='a' | 0@1499('b',500,1500,-1)='b'");

    reset(); /* contents, by timestamp; the last stage after it is not keyed */
    u32(&in, 3);
    text(&in, "k"), i64(&in, 0), i64(&in, 1000), u8(&in, 1);
    u32(&in, 2);
    i64(&in, 10), row(&in, "t", "first");
    i64(&in, 20), row(&in, "t", "second");
    integer(&in, 7), i64(&in, INT64_MIN), i64(&in, INT64_MIN), u8(&in, 1), u32(&in, 0);
    text(&in, "FAIL"), i64(&in, 0), i64(&in, 1), u8(&in, 1), u32(&in, 0);
    call_fire(3, &in, false);
    CHECK(got.failed && got.index == 2);
    SAME(got.message, "fire refused");
    SAME(got.output.s, "0@999('k',2,10,20,'second') | -");

    reset(); /* a window of the other kind; malformed contents */
    u32(&in, 1);
    text(&in, "a"), i64(&in, 0), i64(&in, 1000), u8(&in, 1), u32(&in, 0);
    call_fire(2, &in, true);
    SAME(got.message, "stage 2 does not fire windows of this kind");
    reset();
    u32(&in, 1);
    text(&in, "a"), i64(&in, 0), i64(&in, 1000), u8(&in, 1), u32(&in, 0x10000000u);
    call_fire(3, &in, false);
    SAME(got.message, "malformed batch from the host: row count 268435456 at byte 27 runs past the buffer");
    reset();
    u32(&in, 1);
    text(&in, "a"), i64(&in, 0), i64(&in, 1000), u8(&in, 2);
    call_fire(3, &in, false);
    SAME(got.message, "malformed batch from the host: unknown window contents tag at byte 26");
    reset();
    u32(&in, 0);
    call_fire(0, &in, true);
    SAME(got.message, "stage 0 is not a window stage");
}

static void test_text_helpers(void) {
    sluice_str t = sluice_str_trim(sluice_str_from("\xe3\x80\x80 \t a b\xc2\xa0\xe2\x80\xa9 "));
    CHECK(sluice_str_eq(t, "a b"));
    CHECK(sluice_str_trim(sluice_str_from(" \n ")).len == 0);
    CHECK(sluice_str_eq(sluice_str_trim(sluice_str_from("x\xe2\x80\x8b")), "x\xe2\x80\x8b"));

    const char *want[] = {"a", "", "b", ""};
    sluice_parts parts = sluice_split(sluice_str_from("a,,b,"), ',');
    sluice_str part;
    size_t n = 0;
    while (sluice_next_part(&parts, &part))
        CHECK(n < 4 && sluice_str_eq(part, want[n++]));
    CHECK(n == 4);
    parts = sluice_split(sluice_str_from(""), ',');
    CHECK(sluice_next_part(&parts, &part) && part.len == 0 && !sluice_next_part(&parts, &part));

    int64_t i;
    uint64_t u;
    CHECK(sluice_parse_int(sluice_str_from("-9223372036854775808"), &i) && i == INT64_MIN);
    CHECK(sluice_parse_int(sluice_str_from("+42"), &i) && i == 42);
    CHECK(!sluice_parse_int(sluice_str_from("9223372036854775808"), &i));
    CHECK(!sluice_parse_int(sluice_str_from("-"), &i) && !sluice_parse_int(sluice_str_from(""), &i));
    CHECK(!sluice_parse_int(sluice_str_from(" 1"), &i) && !sluice_parse_int(sluice_str_from("0x1"), &i));
    CHECK(sluice_parse_uint(sluice_str_from("18446744073709551615"), &u) && u == UINT64_MAX);
    CHECK(!sluice_parse_uint(sluice_str_from("18446744073709551616"), &u));
    CHECK(!sluice_parse_uint(sluice_str_from("-0"), &u) && sluice_parse_uint(sluice_str_from("+0"), &u));

    double f;
    CHECK(sluice_parse_float(sluice_str_from("0.50"), &f) && f == 0.5);
    CHECK(sluice_parse_float(sluice_str_from("1."), &f) && f == 1.0);
    CHECK(sluice_parse_float(sluice_str_from("-.5e+1"), &f) && f == -5.0);
    CHECK(sluice_parse_float(sluice_str_from("1E400"), &f) && isinf(f));
    CHECK(sluice_parse_float(sluice_str_from("-Infinity"), &f) && isinf(f) && f < 0);
    CHECK(sluice_parse_float(sluice_str_from("NaN"), &f) && isnan(f));
    CHECK(sluice_parse_float(sluice_str_from("0.1"), &f) && f == 0.1);
    const char *bad[] = {"", ".", "e5", "1e", "1e+", " 1", "1 ", "0x10", "1_0", "inf1", "--1",
                         "1.2.3", "nan(1)", "+"};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++)
        CHECK(!sluice_parse_float(sluice_str_from(bad[k]), &f));

    sluice_value a = sluice_float(NAN);
    CHECK(!sluice_value_equal(a, a));
    CHECK(sluice_value_equal(sluice_float(0.0), sluice_float(-0.0)));
    CHECK(!sluice_value_equal(sluice_int(1), sluice_float(1.0)));
    CHECK(sluice_value_equal(sluice_cstr("x"), sluice_cstr("x")) &&
          sluice_value_equal(sluice_null(), sluice_null()));
}

/* ---- Mutated buffers: never a read out of bounds ---------------------- */

static uint64_t rng = 88172645463325252ull;
static uint32_t next_rand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)rng;
}

/* Flips, cuts or grows a copy of `from` into `to`. */
static void mutate(const buf *from, buf *to) {
    *to = *from;
    switch (next_rand() % 4) {
    case 0:
        if (to->n)
            to->b[next_rand() % to->n] ^= (uint8_t)(1u << (next_rand() % 8));
        break;
    case 1:
        if (to->n)
            to->n = next_rand() % to->n;
        break;
    case 2:
        if (to->n)
            to->b[next_rand() % to->n] = (uint8_t)next_rand();
        break;
    default:
        for (int i = next_rand() % 8; i >= 0 && to->n < sizeof to->b; i--)
            to->b[to->n++] = (uint8_t)next_rand();
        break;
    }
}

static buf fuzz_in, fuzz_keys;

static void test_fuzz(void) {
    /* Valid inputs of every call, then thousands of mutations of each. */
    buf map_in = {{0}, 0}, proc_in = {{0}, 0}, proc_keys = {{0}, 0}, add_in = {{0}, 0},
        add_slots = {{0}, 0}, merge_in = {{0}, 0}, fire_in = {{0}, 0}, rows_in = {{0}, 0};
    row(&map_in, "t", "a go 3");
    row(&map_in, "t", "SIDE");
    buf v = {{0}, 0}, l = {{0}, 0}, m = {{0}, 0};
    row(&v, "i", (int64_t)1);
    u32(&l, 1), row(&l, "i", (int64_t)2);
    u32(&m, 1), integer(&m, 1), row(&m, "t", "x");
    u32(&proc_keys, 2);
    key_entry(&proc_keys, "a", &v, &l, &m);
    key_entry(&proc_keys, "b", NULL, NULL, NULL);
    const char *cmds[] = {"count", "push", "again", "odd", "put", "remove", "entries", "clear",
                          "timers", "fail"};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        entry_row(&proc_in, (uint32_t)(i % 2), (int64_t)i, i % 2 ? "b" : "a", cmds[i]);
    entry_timer(&proc_in, 1, 5, 0);
    u32(&add_slots, 2);
    slot(&add_slots, "a", 0, 10, &v);
    slot(&add_slots, "b", 0, 10, NULL);
    u32(&add_in, 0), row(&add_in, "tt", "a", "x");
    u32(&add_in, 1), row(&add_in, "tt", "b", "x");
    u32(&merge_in, 2);
    state(&merge_in, &v), state(&merge_in, &v);
    state(&merge_in, NULL), state(&merge_in, &v);
    u32(&fire_in, 1);
    text(&fire_in, "a"), i64(&fire_in, 0), i64(&fire_in, 10), u8(&fire_in, 0), state(&fire_in, &v);
    u32(&rows_in, 1);
    text(&rows_in, "a"), i64(&rows_in, 0), i64(&rows_in, 10), u8(&rows_in, 1), u32(&rows_in, 1);
    i64(&rows_in, 3), row(&rows_in, "t", "x");
    for (int round = 0; round < 3000; round++) {
        mutate(&map_in, &fuzz_in);
        call_map(0, 0, 0, &fuzz_in, true);
        mutate(&proc_in, &fuzz_in);
        mutate(&proc_keys, &fuzz_keys);
        if (round % 2)
            fuzz_keys = proc_keys;
        call_process(1, 0, 0, &fuzz_in, &fuzz_keys);
        mutate(&add_in, &fuzz_in);
        mutate(&add_slots, &fuzz_keys);
        if (round % 2)
            fuzz_keys = add_slots;
        call_add(2, &fuzz_in, &fuzz_keys);
        mutate(&merge_in, &fuzz_in);
        call_merge(2, &fuzz_in);
        mutate(&fire_in, &fuzz_in);
        call_fire(2, &fuzz_in, true);
        mutate(&rows_in, &fuzz_in);
        call_fire(3, &fuzz_in, false);
    }
    CHECK(1); /* reaching here under ASan is the test */
}

int main(void) {
    test_open_describe();
    CHECK(jobs_built == 3); /* open once, describe twice */
    test_text_helpers();
    test_map();
    test_map_malformed();
    test_process();
    test_process_failures();
    test_process_malformed();
    test_window_add();
    test_window_merge();
    test_window_fire();
    test_fuzz();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
