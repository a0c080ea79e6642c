/* WordCount over event-time windows as a Sluice pipeline, in C: the same
 * job as the Rust example (examples/windowed-wordcount), on the same
 * contract (sluice:stream@0.2.0), with the same output.
 *
 * Input lines are `timestamp words...` (timestamp in milliseconds since the
 * Unix epoch). Each word is counted per window; a window's counts are
 * emitted as `(word, start, end, count)` once the watermark passes its end,
 * and again when a late word within the allowed lateness updates it. Words
 * later than that go to the side output `late`; lines without a timestamp
 * to `malformed`.
 *
 * Parameters: `windows=tumbling|sliding|session` (default tumbling),
 * `size=MS` (window length, or the session gap; default 10000), `slide=MS`
 * (sliding windows; default size / 2), `lateness=MS` (default 0),
 * `out-of-orderness=MS` (default 0), and `function=process` to count in a
 * window function over the window's words instead of an aggregate.
 */
#include "sluice_pipeline.h"

/* `timestamp words...` into (word, 1) rows at that timestamp. */
static int split(const sluice_record *r, sluice_out *out) {
    sluice_str line = sluice_record_text(r);
    sluice_words words = sluice_split_whitespace(line);
    sluice_str word;
    int64_t ts;
    if (!sluice_next_word(&words, &word) || !sluice_parse_int(word, &ts)) {
        sluice_side(out, "malformed", sluice_text(line));
        return 0;
    }
    while (sluice_next_word(&words, &word))
        sluice_emit_at(out, ts, sluice_text(word), sluice_int(1));
    return 0;
}

static sluice_value word(const sluice_row *row) {
    return sluice_field(row, 0);
}

/* Field 0 of an aggregate as an int, or 0. */
static int64_t count_of(const sluice_row *agg) {
    int64_t n = 0;
    if (agg)
        sluice_as_int(sluice_field(agg, 0), &n);
    return n;
}

/* The count so far plus one. */
static int add(const sluice_row *acc, const sluice_row *row, sluice_acc *next) {
    sluice_acc_set(next, sluice_int((int64_t)((uint64_t)count_of(acc) + 1)));
    return 0;
}

/* Two sessions' counts together. */
static int merge(const sluice_row *a, const sluice_row *b, sluice_acc *merged) {
    sluice_acc_set(merged, sluice_int((int64_t)((uint64_t)count_of(a) + (uint64_t)count_of(b))));
    return 0;
}

static int fire(const sluice_window *w, const sluice_row *acc, sluice_out *out) {
    sluice_emit(out, w->key, sluice_int(w->start), sluice_int(w->end), sluice_int(count_of(acc)));
    return 0;
}

static int fire_contents(const sluice_window *w, const sluice_record *rows, size_t count,
                         sluice_out *out) {
    sluice_emit(out, w->key, sluice_int(w->start), sluice_int(w->end), sluice_int((int64_t)count));
    return 0;
}

/* A millisecond parameter, or `fallback`. */
static uint64_t ms(const sluice_params *params, const char *key, uint64_t fallback) {
    sluice_str text;
    uint64_t v;
    return sluice_param(params, key, &text) && sluice_parse_uint(text, &v) ? v : fallback;
}

static void job(const sluice_params *params, sluice_job *job) {
    uint64_t size = ms(params, "size", 10000);
    uint64_t slide = ms(params, "slide", size / 2 > 0 ? size / 2 : 1);
    sluice_str kind = {"", 0}, function = {"", 0};
    sluice_param(params, "windows", &kind);
    sluice_param(params, "function", &function);
    sluice_windows windows = sluice_str_eq(kind, "sliding")   ? sluice_sliding(size, slide)
                             : sluice_str_eq(kind, "session") ? sluice_session(size)
                                                              : sluice_tumbling(size);
    windows.allowed_lateness_ms = ms(params, "lateness", 0);
    windows.late_output = "late";

    sluice_job_name(job, "windowed-wordcount");
    sluice_job_source(job, "socket://localhost:9100");
    sluice_job_checkpoint_ms(job, 1000);
    sluice_job_watermarks(job, ms(params, "out-of-orderness", 0));
    sluice_job_side_output(job, "late");
    sluice_job_side_output(job, "malformed");
    sluice_job_map(job, "split", split);
    sluice_job_key_by(job, word);
    if (sluice_str_eq(function, "process"))
        sluice_job_window_process(job, "count", windows, fire_contents);
    else
        sluice_job_window_aggregate(job, "count", windows, add, merge, fire);
}

SLUICE_PIPELINE(job)
