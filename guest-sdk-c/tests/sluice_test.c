/* Native tests of the C helper, run under AddressSanitizer and
 * LeakSanitizer by tests/run: they call the generated canonical-ABI exports
 * the way the host does (arguments allocated with cabi_realloc and owned by
 * the export, results freed by the post-return function), so a leak, a
 * double free or a stale pointer fails the run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice.h"

/* ---- A test guest --------------------------------------------------------- */

static char big[1 << 16];

static int flat_map(sluice_str line, sluice_out *out) {
    if (sluice_str_eq(line, "ERROR"))
        return sluice_fail("received the line `ERROR`");
    if (sluice_str_eq(line, "FAILF"))
        return sluice_failf("bad %s number %d: %.*s", "line", 7, (int)line.len, line.ptr);
    if (sluice_str_eq(line, "SILENT"))
        return -1;
    if (sluice_str_eq(line, "FAILOK")) { /* a message, then success */
        sluice_fail("ignored");
        sluice_emit(out, sluice_cstr("ok"));
        return 0;
    }
    if (sluice_str_eq(line, "BIG")) { /* the keyed copy outgrows the buffer */
        memset(big, 'x', sizeof big);
        sluice_emit(out, sluice_text((sluice_str){big, sizeof big}), sluice_int(1));
        return 0;
    }
    if (sluice_str_eq(line, "ALL")) {
        static const uint8_t raw[] = {1, 2};
        sluice_emit(out, sluice_null(), sluice_bool(true), sluice_int(-5), sluice_float(1.5),
                    sluice_cstr("t"), sluice_bytes(raw, 2));
        return 0;
    }
    sluice_words words = sluice_split_whitespace(line);
    sluice_str word;
    while (sluice_next_word(&words, &word))
        sluice_emit(out, sluice_text(word), sluice_int(1));
    return 0;
}

static sluice_value key(const sluice_row *row) {
    return sluice_field(row, 0);
}

static void describe(const sluice_params *params, sluice_job *job) {
    sluice_str name;
    sluice_job_name(job, "first");
    if (sluice_param(params, "name", &name)) {
        char buf[64];
        snprintf(buf, sizeof buf, "%.*s", (int)name.len, name.ptr);
        sluice_job_name(job, buf); /* replaces the first one */
    }
    sluice_job_source(job, "socket://localhost:9100");
    sluice_job_sum(job, 1);
    sluice_job_checkpoint_ms(job, 1000);
    sluice_job_restart_fixed_delay(job, 3, 10000);
    sluice_job_max_rows_per_record(job, 9);
}

static int open_count;
static int open_(const sluice_params *params) {
    open_count++;
    sluice_str v;
    if (sluice_param(params, "fail", &v))
        return sluice_failf("open refused: fail=%.*s", (int)v.len, v.ptr);
    return 0;
}

#ifdef SLUICE_TEST_KEY_FIELD
/* The same tests with the key given as a field: every output must be the same. */
SLUICE_EXPORT(.flat_map = flat_map, .key_field = SLUICE_KEY_FIELD(0), .describe = describe,
              .open = open_)
#else
SLUICE_EXPORT(flat_map, key, describe, open_)
#endif

/* ---- The canonical ABI, as the host drives it ---------------------------- */

void *cabi_realloc(void *ptr, size_t old_size, size_t align, size_t new_size);
uint8_t *__wasm_export_exports_sluice_stream_operator_open(uint8_t *, size_t);
void __wasm_export_exports_sluice_stream_operator_open_post_return(uint8_t *);
uint8_t *__wasm_export_exports_sluice_stream_operator_flat_map(uint8_t *, size_t);
void __wasm_export_exports_sluice_stream_operator_flat_map_post_return(uint8_t *);
uint8_t *__wasm_export_exports_sluice_stream_operator_flat_map_keyed(uint8_t *, size_t);
void __wasm_export_exports_sluice_stream_operator_flat_map_keyed_post_return(uint8_t *);
uint8_t *__wasm_export_exports_sluice_stream_operator_key_selector(uint8_t *, size_t);
void __wasm_export_exports_sluice_stream_operator_key_selector_post_return(uint8_t *);
uint8_t *__wasm_export_exports_sluice_stream_job_describe(uint8_t *, size_t);
void __wasm_export_exports_sluice_stream_job_describe_post_return(uint8_t *);

/* Natively there is no component-type custom section to link. */
void __component_type_object_force_link_stream_job(void) {}

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

/* A growing byte buffer for building batches and expected outputs. */
typedef struct buf {
    uint8_t b[1 << 18];
    size_t n;
} buf;

static void u32(buf *b, uint32_t v) {
    for (int i = 0; i < 4; i++)
        b->b[b->n++] = (uint8_t)(v >> (8 * i));
}
static void u64(buf *b, uint64_t v) {
    for (int i = 0; i < 8; i++)
        b->b[b->n++] = (uint8_t)(v >> (8 * i));
}
static void text(buf *b, const char *s) {
    b->b[b->n++] = 4;
    u32(b, (uint32_t)strlen(s));
    memcpy(b->b + b->n, s, strlen(s));
    b->n += strlen(s);
}
static void one(buf *b, int64_t v) {
    b->b[b->n++] = 2;
    u64(b, (uint64_t)v);
}
static void record(buf *b, const char *line) {
    u32(b, 1);
    text(b, line);
}

/* Copies a batch into memory the export owns, as the host's lowering does. */
static uint8_t *lower(const buf *b) {
    if (b->n == 0)
        return (uint8_t *)1; /* cabi_realloc's answer for an empty list */
    uint8_t *p = cabi_realloc(NULL, 0, 1, b->n);
    memcpy(p, b->b, b->n);
    return p;
}

typedef struct batch_out {
    buf output;
    int failed;
    uint32_t index;
    char message[512];
} batch_out;

static void run_batch(const buf *in, int keyed, batch_out *r) {
    uint8_t *ret = keyed ? __wasm_export_exports_sluice_stream_operator_flat_map_keyed(lower(in), in->n)
                         : __wasm_export_exports_sluice_stream_operator_flat_map(lower(in), in->n);
    uint8_t *ptr = *(uint8_t **)(ret + 0);
    size_t len = *(size_t *)(ret + P);
    if (len)
        memcpy(r->output.b, ptr, len);
    r->output.n = len;
    r->failed = *(uint8_t *)(ret + 2 * P);
    r->message[0] = 0;
    if (r->failed) {
        r->index = *(uint32_t *)(ret + 3 * P);
        size_t mlen = *(size_t *)(ret + 5 * P);
        memcpy(r->message, *(uint8_t **)(ret + 4 * P), mlen);
        r->message[mlen] = 0;
    }
    if (keyed)
        __wasm_export_exports_sluice_stream_operator_flat_map_keyed_post_return(ret);
    else
        __wasm_export_exports_sluice_stream_operator_flat_map_post_return(ret);
}

static int same(const buf *a, const buf *b) {
    return a->n == b->n && memcmp(a->b, b->b, a->n) == 0;
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

static buf in, want;
static batch_out got;

static void reset(void) {
    in.n = 0;
    want.n = 0;
}

static void test_wordcount(void) {
    reset();
    record(&in, "to be  or");
    record(&in, "");
    /* U+00A0, U+3000, U+1680, U+2000..U+200A, U+2028/9, U+202F, U+205F, U+0085, \t..\r */
    record(&in, "a\xc2\xa0" "b\xe3\x80\x80" "c\xe1\x9a\x80" "d\xe2\x80\x80" "e\xe2\x80\x8a"
                "f\xe2\x80\xa8" "g\xe2\x80\xa9" "h\xe2\x80\xaf" "i\xe2\x81\x9f" "j\xc2\x85"
                "k\t\n\x0b\x0c\rl ");
    /* not White_Space: U+001C, U+200B, U+180E, U+FEFF, U+00A1, U+2030 */
    record(&in, "m\x1cn\xe2\x80\x8bo\xe1\xa0\x8ep\xef\xbb\xbfq\xc2\xa1r\xe2\x80\xb0s");
    const char *words0[] = {"to", "be", "or"};
    u32(&want, 3);
    for (int i = 0; i < 3; i++) {
        u32(&want, 2);
        text(&want, words0[i]);
        one(&want, 1);
    }
    u32(&want, 0);
    u32(&want, 12);
    for (char c = 'a'; c <= 'l'; c++) {
        char w[2] = {c, 0};
        u32(&want, 2);
        text(&want, w);
        one(&want, 1);
    }
    u32(&want, 1);
    u32(&want, 2);
    text(&want, "m\x1cn\xe2\x80\x8bo\xe1\xa0\x8ep\xef\xbb\xbfq\xc2\xa1r\xe2\x80\xb0s");
    one(&want, 1);
    run_batch(&in, 0, &got);
    CHECK(!got.failed);
    CHECK(same(&got.output, &want));
}

static void test_keyed(void) {
    reset();
    record(&in, "x y");
    record(&in, "ALL");
    u32(&want, 2);
    u32(&want, 2), text(&want, "x"), one(&want, 1), text(&want, "x");
    u32(&want, 2), text(&want, "y"), one(&want, 1), text(&want, "y");
    u32(&want, 1);
    u32(&want, 6);
    want.b[want.n++] = 0;
    want.b[want.n++] = 1, want.b[want.n++] = 1;
    one(&want, -5);
    want.b[want.n++] = 3;
    double f = 1.5;
    uint64_t bits;
    memcpy(&bits, &f, 8);
    u64(&want, bits);
    text(&want, "t");
    want.b[want.n++] = 5, u32(&want, 2), want.b[want.n++] = 1, want.b[want.n++] = 2;
    want.b[want.n++] = 0; /* the key: field 0, null */
    run_batch(&in, 1, &got);
    CHECK(!got.failed);
    CHECK(same(&got.output, &want));

    /* A key copied out of a buffer that must grow to hold it. */
    reset();
    record(&in, "BIG");
    run_batch(&in, 1, &got);
    CHECK(!got.failed);
    CHECK(got.output.n == 4 + 4 + 5 + sizeof big + 9 + 5 + sizeof big);
    CHECK(got.output.b[got.output.n - sizeof big - 5] == 4);
    CHECK(got.output.b[got.output.n - 1] == 'x');
}

static void test_failures(void) {
    reset();
    record(&in, "a");
    record(&in, "ERROR");
    record(&in, "b");
    u32(&want, 1), u32(&want, 2), text(&want, "a"), one(&want, 1);
    run_batch(&in, 0, &got);
    CHECK(got.failed && got.index == 1);
    CHECK(strcmp(got.message, "received the line `ERROR`") == 0);
    CHECK(same(&got.output, &want));

    reset(); /* the first record fails: empty output */
    record(&in, "ERROR");
    run_batch(&in, 1, &got);
    CHECK(got.failed && got.index == 0 && got.output.n == 0);

    reset();
    record(&in, "FAILOK");
    record(&in, "SILENT");
    run_batch(&in, 0, &got);
    CHECK(got.failed && got.index == 1 && strcmp(got.message, "flat-map failed") == 0);

    reset();
    record(&in, "FAILF");
    run_batch(&in, 0, &got);
    CHECK(got.failed && strcmp(got.message, "bad line number 7: FAILF") == 0);

    reset(); /* invalid UTF-8: an overlong encoding and a surrogate */
    record(&in, "ok");
    record(&in, "\xc0\xaf");
    run_batch(&in, 0, &got);
    CHECK(got.failed && got.index == 1 &&
          strcmp(got.message, "the record's text is not valid UTF-8") == 0);
    reset();
    record(&in, "\xed\xa0\x80");
    run_batch(&in, 0, &got);
    CHECK(got.failed && got.index == 0);
    reset();
    record(&in, "\xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf"); /* valid 4-byte sequences */
    run_batch(&in, 0, &got);
    CHECK(!got.failed);

    reset(); /* not a single text value */
    u32(&in, 2), text(&in, "a"), one(&in, 1);
    run_batch(&in, 0, &got);
    CHECK(got.failed && strcmp(got.message, "the record is not a single text value") == 0);

    reset(); /* truncated */
    record(&in, "abc");
    in.n -= 1;
    run_batch(&in, 0, &got);
    CHECK(got.failed && strncmp(got.message, "malformed batch from the host: truncated", 40) == 0);

    reset(); /* an empty batch */
    run_batch(&in, 0, &got);
    CHECK(!got.failed && got.output.n == 0);
}

static void test_key_selector(void) {
    reset();
    u32(&in, 2), one(&in, 42), text(&in, "z");
    u32(&in, 0);
    u32(&in, 1), text(&in, "k");
    one(&want, 42);
    want.b[want.n++] = 0;
    text(&want, "k");
    uint8_t *ret = __wasm_export_exports_sluice_stream_operator_key_selector(lower(&in), in.n);
    CHECK(ret[0] == 0);
    buf keys;
    keys.n = *(size_t *)(ret + 2 * P);
    memcpy(keys.b, *(uint8_t **)(ret + P), keys.n);
    CHECK(same(&keys, &want));
    __wasm_export_exports_sluice_stream_operator_key_selector_post_return(ret);

    reset();
    u32(&in, 1), text(&in, "k");
    u32(&in, 1), in.b[in.n++] = 9;
    ret = __wasm_export_exports_sluice_stream_operator_key_selector(lower(&in), in.n);
    CHECK(ret[0] == 1 && *(uint32_t *)(ret + P) == 1);
    CHECK(strncmp(*(char **)(ret + 2 * P), "malformed batch from the host: unknown value tag", 47) ==
          0);
    __wasm_export_exports_sluice_stream_operator_key_selector_post_return(ret);
}

static void test_open_describe(void) {
    const char *ok[] = {"a", "b", "empty", ""};
    uint8_t *ret = __wasm_export_exports_sluice_stream_operator_open(params(ok, 2), 2);
    CHECK(ret[0] == 0 && open_count == 1);
    __wasm_export_exports_sluice_stream_operator_open_post_return(ret);

    const char *bad[] = {"fail", "yes"};
    ret = __wasm_export_exports_sluice_stream_operator_open(params(bad, 1), 1);
    CHECK(ret[0] == 1);
    CHECK(*(size_t *)(ret + 2 * P) == strlen("open refused: fail=yes") &&
          memcmp(*(char **)(ret + P), "open refused: fail=yes", 22) == 0);
    __wasm_export_exports_sluice_stream_operator_open_post_return(ret);

    ret = __wasm_export_exports_sluice_stream_operator_open(params(NULL, 0), 0);
    CHECK(ret[0] == 0);
    __wasm_export_exports_sluice_stream_operator_open_post_return(ret);

    const char *named[] = {"name", "one", "name", "wc"};
    ret = __wasm_export_exports_sluice_stream_job_describe(params(named, 2), 2);
    /* The return area: the job-description record as wit-bindgen lays it out. */
    CHECK(ret[0] == 1 && *(size_t *)(ret + 2 * P) == 2 && memcmp(*(char **)(ret + P), "wc", 2) == 0);
    __wasm_export_exports_sluice_stream_job_describe_post_return(ret);
}

static void test_split(void) {
    const char *cases[][4] = {
        {"", NULL},
        {" \t ", NULL},
        {"one", "one", NULL},
        {"\xe3\x80\x80" "x\xe3\x80\x80", "x", NULL},
        {"\xe3\x80", "\xe3\x80", NULL}, /* a cut sequence is not whitespace */
        {"a  b\xc2\xa0\xc2\xa0" "c", "a", "b", "c"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sluice_words w = sluice_split_whitespace(sluice_str_from(cases[i][0]));
        sluice_str word;
        size_t k = 1;
        int ok = 1;
        while (sluice_next_word(&w, &word)) {
            if (k >= 4 || !cases[i][k] || !sluice_str_eq(word, cases[i][k]))
                ok = 0;
            k++;
        }
        if (k < 4 && cases[i][k])
            ok = 0;
        CHECK(ok);
    }
}

int main(void) {
    test_split();
    test_wordcount();
    test_keyed();
    test_failures();
    test_key_selector();
    test_open_describe();
    /* Many batches: memory must not grow (LeakSanitizer checks at exit). */
    reset();
    for (int i = 0; i < 200; i++)
        record(&in, "the quick brown fox jumps over the lazy dog");
    for (int i = 0; i < 2000; i++)
        run_batch(&in, i & 1, &got);
    CHECK(!got.failed);
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
