/* The half of the Sluice C helper that is the same for every world:
 * strings and words, UTF-8 checks, the failure message, values and their
 * flat encoding, a growing output buffer, a bounds-checked reader of what
 * the host sends, the job's parameters and the job description's common
 * fields (name, source, sink, checkpoints, restarts, parallelism, limits).
 *
 * Not a public header: it holds definitions, and is included by exactly one
 * file per module — sluice.c (world `stream-job`, 0.1.0) or
 * sluice_pipeline.c (world `pipeline-job`, 0.2.0) — so that each helper
 * still builds as one source file next to its world's bindings. The two
 * worlds' bindings name their own types with their own prefix
 * (`stream_job_`, `pipeline_job_`), so the includer first defines
 * SLUICE_W(name) to paste that prefix, and `struct sluice_job` with the
 * generated job description as its member `d`.
 */
#ifndef SLUICE_CORE_H
#define SLUICE_CORE_H

#ifndef SLUICE_W
#error "sluice_core.h is included by sluice.c or sluice_pipeline.c only"
#endif

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Strings ------------------------------------------------------------ */

sluice_str sluice_str_from(const char *cstr) {
    sluice_str s = {cstr, strlen(cstr)};
    return s;
}

bool sluice_str_eq(sluice_str s, const char *cstr) {
    size_t n = strlen(cstr);
    return s.len == n && memcmp(s.ptr, cstr, n) == 0;
}

bool sluice_str_equal(sluice_str a, sluice_str b) {
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

/* The length in bytes of the White_Space character at `p`, or 0. */
static inline size_t whitespace_at(const unsigned char *p, const unsigned char *end) {
    unsigned char c = p[0];
    if (c < 0x80)
        return (c == ' ' || (c >= 0x09 && c <= 0x0d)) ? 1 : 0;
    size_t left = (size_t)(end - p);
    switch (c) {
    case 0xc2: /* U+0085, U+00A0 */
        return left >= 2 && (p[1] == 0x85 || p[1] == 0xa0) ? 2 : 0;
    case 0xe1: /* U+1680 */
        return left >= 3 && p[1] == 0x9a && p[2] == 0x80 ? 3 : 0;
    case 0xe2:
        if (left < 3)
            return 0;
        if (p[1] == 0x80) /* U+2000..U+200A, U+2028, U+2029, U+202F */
            return (p[2] <= 0x8a && p[2] >= 0x80) || p[2] == 0xa8 || p[2] == 0xa9 || p[2] == 0xaf
                       ? 3
                       : 0;
        return p[1] == 0x81 && p[2] == 0x9f ? 3 : 0; /* U+205F */
    case 0xe3: /* U+3000 */
        return left >= 3 && p[1] == 0x80 && p[2] == 0x80 ? 3 : 0;
    default:
        return 0;
    }
}

sluice_words sluice_split_whitespace(sluice_str s) {
    sluice_words w = {s.ptr, s.ptr + s.len};
    return w;
}

bool sluice_next_word(sluice_words *words, sluice_str *word) {
    const unsigned char *p = (const unsigned char *)words->at;
    const unsigned char *end = (const unsigned char *)words->end;
    size_t n;
    while (p < end && (n = whitespace_at(p, end)) != 0)
        p += n;
    if (p == end) {
        words->at = (const char *)p;
        return false;
    }
    const unsigned char *start = p;
    while (p < end && whitespace_at(p, end) == 0)
        p++;
    word->ptr = (const char *)start;
    word->len = (size_t)(p - start);
    words->at = (const char *)p;
    return true;
}

/* The length in bytes of the White_Space character that ends at `end`, or 0
 * (`s` is valid UTF-8, so a lead byte is never a continuation byte). */
static inline size_t whitespace_before(const unsigned char *start, const unsigned char *end) {
    size_t left = (size_t)(end - start);
    if (left >= 1 && end[-1] < 0x80)
        return whitespace_at(end - 1, end);
    if (left >= 2 && whitespace_at(end - 2, end) == 2)
        return 2;
    if (left >= 3 && whitespace_at(end - 3, end) == 3)
        return 3;
    return 0;
}

sluice_str sluice_str_trim(sluice_str s) {
    const unsigned char *p = (const unsigned char *)s.ptr;
    const unsigned char *end = p + s.len;
    size_t n;
    while (p < end && (n = whitespace_at(p, end)) != 0)
        p += n;
    while (end > p && (n = whitespace_before(p, end)) != 0)
        end -= n;
    sluice_str t = {(const char *)p, (size_t)(end - p)};
    return t;
}

sluice_parts sluice_split(sluice_str s, char sep) {
    sluice_parts parts = {s.ptr, s.ptr + s.len, sep, false};
    return parts;
}

bool sluice_next_part(sluice_parts *parts, sluice_str *part) {
    if (parts->done)
        return false;
    const char *at = parts->at;
    const char *cut = at < parts->end ? memchr(at, parts->sep, (size_t)(parts->end - at)) : NULL;
    if (!cut) {
        cut = parts->end;
        parts->done = true;
    }
    part->ptr = at;
    part->len = (size_t)(cut - at);
    parts->at = cut < parts->end ? cut + 1 : cut;
    return true;
}

/* Digits into a u64: false when there are none, a non-digit, or overflow. */
static bool parse_digits(const char *p, size_t n, uint64_t *out) {
    if (n == 0)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned d = (unsigned char)p[i] - '0';
        if (d > 9 || v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

bool sluice_parse_uint(sluice_str s, uint64_t *out) {
    size_t sign = s.len > 0 && s.ptr[0] == '+' ? 1 : 0;
    return parse_digits(s.ptr + sign, s.len - sign, out);
}

bool sluice_parse_int(sluice_str s, int64_t *out) {
    bool negative = s.len > 0 && s.ptr[0] == '-';
    size_t sign = s.len > 0 && (s.ptr[0] == '-' || s.ptr[0] == '+') ? 1 : 0;
    uint64_t v;
    if (!parse_digits(s.ptr + sign, s.len - sign, &v))
        return false;
    if (negative) {
        if (v > (uint64_t)INT64_MAX + 1)
            return false;
        *out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
    } else {
        if (v > (uint64_t)INT64_MAX)
            return false;
        *out = (int64_t)v;
    }
    return true;
}

/* Whether `s` is `word`, ignoring ASCII case. */
static bool ascii_caseless_eq(const char *s, size_t n, const char *word) {
    size_t i = 0;
    for (; i < n && word[i]; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != word[i])
            return false;
    }
    return i == n && word[i] == 0;
}

bool sluice_parse_float(sluice_str s, double *out) {
    const char *p = s.ptr;
    size_t n = s.len, i = 0;
    bool negative = false;
    if (n > 0 && (p[0] == '+' || p[0] == '-')) {
        negative = p[0] == '-';
        i = 1;
    }
    if (ascii_caseless_eq(p + i, n - i, "inf") || ascii_caseless_eq(p + i, n - i, "infinity")) {
        *out = negative ? -(double)INFINITY : (double)INFINITY;
        return true;
    }
    if (ascii_caseless_eq(p + i, n - i, "nan")) {
        *out = negative ? -(double)NAN : (double)NAN;
        return true;
    }
    /* Number ::= (Digit+ | Digit+ '.' Digit* | Digit* '.' Digit+) Exp? */
    size_t digits = 0;
    while (i < n && p[i] >= '0' && p[i] <= '9')
        i++, digits++;
    if (i < n && p[i] == '.') {
        i++;
        while (i < n && p[i] >= '0' && p[i] <= '9')
            i++, digits++;
    }
    if (digits == 0)
        return false;
    if (i < n && (p[i] == 'e' || p[i] == 'E')) {
        i++;
        if (i < n && (p[i] == '+' || p[i] == '-'))
            i++;
        size_t exp = 0;
        while (i < n && p[i] >= '0' && p[i] <= '9')
            i++, exp++;
        if (exp == 0)
            return false;
    }
    if (i != n)
        return false;
    /* The grammar is a subset of strtod's, which rounds correctly. */
    char small[64];
    char *text = n < sizeof small ? small : malloc(n + 1);
    if (!text)
        abort();
    memcpy(text, p, n);
    text[n] = 0;
    *out = strtod(text, NULL);
    if (text != small)
        free(text);
    return true;
}

/* Whether `n` bytes at `s` are valid UTF-8 (as Rust's str::from_utf8). */
static bool utf8_valid(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        while (i + 8 <= n) {
            uint64_t chunk;
            memcpy(&chunk, s + i, 8);
            if (chunk & 0x8080808080808080ull)
                break;
            i += 8;
        }
        if (i >= n)
            break;
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        unsigned char lo = 0x80, hi = 0xbf;
        if (c >= 0xc2 && c <= 0xdf) {
            need = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2;
            if (c == 0xe0)
                lo = 0xa0;
            else if (c == 0xed)
                hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3;
            if (c == 0xf0)
                lo = 0x90;
            else if (c == 0xf4)
                hi = 0x8f;
        } else {
            return false;
        }
        if (n - i <= need)
            return false;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return false;
        for (size_t k = 2; k <= need; k++)
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
        i += need + 1;
    }
    return true;
}

/* ---- Failures ----------------------------------------------------------- */

/* The message of the last sluice_fail, owned (malloc) until taken. */
static char *failure;
static size_t failure_len;

static void clear_failure(void) {
    free(failure);
    failure = NULL;
    failure_len = 0;
}

int sluice_fail_str(sluice_str message) {
    clear_failure();
    if (message.len > 0) {
        failure = malloc(message.len);
        if (!failure)
            abort();
        memcpy(failure, message.ptr, message.len);
        failure_len = message.len;
    }
    return -1;
}

int sluice_fail(const char *message) {
    return sluice_fail_str(sluice_str_from(message));
}

int sluice_failf(const char *format, ...) {
    char small[256];
    va_list args;
    va_start(args, format);
    int n = vsnprintf(small, sizeof small, format, args);
    va_end(args);
    if (n < 0)
        return sluice_fail(format);
    if ((size_t)n < sizeof small)
        return sluice_fail_str((sluice_str){small, (size_t)n});
    char *big = malloc((size_t)n + 1);
    if (!big)
        abort();
    va_start(args, format);
    vsnprintf(big, (size_t)n + 1, format, args);
    va_end(args);
    clear_failure();
    failure = big;
    failure_len = (size_t)n;
    return -1;
}

/* Moves the pending failure (or `fallback`) into `out`, which the generated
 * post-return frees. Never empty, so that it never leaks. */
static void take_failure(SLUICE_W(string_t) *out, const char *fallback) {
    if (failure_len == 0) {
        clear_failure();
        SLUICE_W(string_dup)(out, fallback);
        return;
    }
    out->ptr = (uint8_t *)failure;
    out->len = failure_len;
    failure = NULL;
    failure_len = 0;
}

/* ---- Encoding ------------------------------------------------------------ */

enum { TAG_NULL = 0, TAG_BOOL = 1, TAG_INT = 2, TAG_FLOAT = 3, TAG_TEXT = 4, TAG_BYTES = 5 };

/* A growing byte buffer (malloc), for one call's output. */
typedef struct buffer {
    uint8_t *buf;
    size_t len;
    size_t cap;
} buffer;

static void buf_grow(buffer *b, size_t extra) {
    size_t need = b->len + extra;
    if (need < extra)
        abort();
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) {
        if (cap > SIZE_MAX / 2)
            abort();
        cap *= 2;
    }
    uint8_t *buf = realloc(b->buf, cap);
    if (!buf)
        abort();
    b->buf = buf;
    b->cap = cap;
}

static inline void buf_reserve(buffer *b, size_t extra) {
    if (b->cap - b->len < extra)
        buf_grow(b, extra);
}

static inline void put_u32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static inline uint32_t get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline void put_u64(uint8_t *p, uint64_t v) {
    put_u32(p, (uint32_t)v);
    put_u32(p + 4, (uint32_t)(v >> 32));
}

static inline uint64_t get_u64(const uint8_t *p) {
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

static inline uint32_t len32(size_t len) {
    if (len > UINT32_MAX)
        abort(); /* a value longer than 4 GiB cannot cross the boundary */
    return (uint32_t)len;
}

/* The encoded size of a value. */
static inline size_t value_size(const sluice_value *v) {
    switch (v->kind) {
    case SLUICE_BOOL:
        return 2;
    case SLUICE_INT:
    case SLUICE_FLOAT:
        return 9;
    case SLUICE_TEXT:
        return 5 + v->as.text.len;
    case SLUICE_BYTES:
        return 5 + v->as.bytes.len;
    default:
        return 1;
    }
}

/* Writes a value at `p` (room reserved) and returns the end. */
static inline uint8_t *write_value(uint8_t *p, const sluice_value *v) {
    switch (v->kind) {
    case SLUICE_BOOL:
        p[0] = TAG_BOOL;
        p[1] = v->as.boolean ? 1 : 0;
        return p + 2;
    case SLUICE_INT:
        p[0] = TAG_INT;
        put_u64(p + 1, (uint64_t)v->as.int64);
        return p + 9;
    case SLUICE_FLOAT: {
        uint64_t bits;
        memcpy(&bits, &v->as.float64, 8);
        p[0] = TAG_FLOAT;
        put_u64(p + 1, bits);
        return p + 9;
    }
    case SLUICE_TEXT:
    case SLUICE_BYTES: {
        const void *src = v->kind == SLUICE_TEXT ? (const void *)v->as.text.ptr
                                                 : (const void *)v->as.bytes.ptr;
        size_t n = v->kind == SLUICE_TEXT ? v->as.text.len : v->as.bytes.len;
        p[0] = v->kind == SLUICE_TEXT ? TAG_TEXT : TAG_BYTES;
        put_u32(p + 1, len32(n));
        if (n)
            memcpy(p + 5, src, n);
        return p + 5 + n;
    }
    default:
        p[0] = TAG_NULL;
        return p + 1;
    }
}

/* The text or bytes a value borrows, if any. */
static inline const uint8_t **borrowed_ptr(sluice_value *v) {
    if (v->kind == SLUICE_TEXT)
        return (const uint8_t **)&v->as.text.ptr;
    if (v->kind == SLUICE_BYTES)
        return &v->as.bytes.ptr;
    return NULL;
}

/* Appends a value that may borrow from the buffer itself (a key taken from
 * the row just written), keeping the borrow valid across a realloc. */
static void buf_append_value(buffer *b, sluice_value v) {
    size_t size = value_size(&v);
    if (b->cap - b->len < size) {
        const uint8_t **borrowed = borrowed_ptr(&v);
        if (borrowed && *borrowed >= b->buf && *borrowed < b->buf + b->len) {
            size_t offset = (size_t)(*borrowed - b->buf);
            buf_grow(b, size);
            *borrowed = b->buf + offset;
        } else {
            buf_grow(b, size);
        }
    }
    b->len = (size_t)(write_value(b->buf + b->len, &v) - b->buf);
}

/* Reads one value starting at `*pos`, trusting the encoding (checked before). */
static sluice_value read_value(const uint8_t **pos) {
    const uint8_t *p = *pos;
    sluice_value v = sluice_null();
    switch (p[0]) {
    case TAG_BOOL:
        v = sluice_bool(p[1] != 0);
        p += 2;
        break;
    case TAG_INT:
        v = sluice_int((int64_t)get_u64(p + 1));
        p += 9;
        break;
    case TAG_FLOAT: {
        uint64_t bits = get_u64(p + 1);
        double f;
        memcpy(&f, &bits, 8);
        v = sluice_float(f);
        p += 9;
        break;
    }
    case TAG_TEXT:
    case TAG_BYTES: {
        uint32_t n = get_u32(p + 1);
        if (p[0] == TAG_TEXT)
            v = sluice_text((sluice_str){(const char *)p + 5, n});
        else
            v = sluice_bytes(p + 5, n);
        p += 5 + (size_t)n;
        break;
    }
    default:
        p += 1;
        break;
    }
    *pos = p;
    return v;
}

sluice_value sluice_field(const sluice_row *row, size_t index) {
    if (index >= row->count)
        return sluice_null();
    const uint8_t *p = row->values;
    for (size_t i = 0; i < index; i++)
        read_value(&p);
    return read_value(&p);
}

/* Hands a finished buffer to a result; an empty one is freed here (the
 * generated post-return frees only lists of non-zero length). */
static void finish_output(buffer *b, SLUICE_W(list_u8_t) *list) {
    if (b->len == 0) {
        free(b->buf);
        list->ptr = NULL;
        list->len = 0;
    } else {
        list->ptr = b->buf;
        list->len = b->len;
    }
    b->buf = NULL;
    b->len = b->cap = 0;
}

/* ---- Reading what the host sends ---------------------------------------- */

typedef struct reader {
    const uint8_t *buf;
    size_t len;
    size_t pos;
} reader;

/* A problem found in a batch, for the record error. */
typedef struct problem {
    char text[128];
    size_t len;
} problem;

/* Appends text to the problem (cut at its size). */
static void problem_add(problem *pr, const char *what) {
    size_t n = strlen(what);
    if (n > sizeof pr->text - 1 - pr->len)
        n = sizeof pr->text - 1 - pr->len;
    memcpy(pr->text + pr->len, what, n);
    pr->len += n;
    pr->text[pr->len] = 0;
}

/* Appends a number in decimal. */
static void problem_num(problem *pr, uint64_t at) {
    char digits[24];
    int n = 0;
    do {
        digits[n++] = (char)('0' + at % 10);
        at /= 10;
    } while (at);
    char text[24];
    for (int i = 0; i < n; i++)
        text[i] = digits[n - 1 - i];
    text[n] = 0;
    problem_add(pr, text);
}

static void problem_at(problem *pr, const char *what, size_t at) {
    pr->len = 0;
    problem_add(pr, what);
    problem_num(pr, at);
}

static void problem_set(problem *pr, const char *what) {
    pr->len = 0;
    problem_add(pr, what);
}

#define MALFORMED "malformed batch from the host: "

static bool truncated(reader *r, problem *pr) {
    problem_at(pr, MALFORMED "truncated batch at byte ", r->pos);
    return false;
}

/* Checks one value at r->pos and moves past it; false with `pr` if bad. */
static bool skip_value(reader *r, problem *pr) {
    size_t start = r->pos;
    if (r->pos >= r->len)
        return truncated(r, pr);
    uint8_t tag = r->buf[r->pos++];
    size_t n;
    switch (tag) {
    case TAG_NULL:
        return true;
    case TAG_BOOL:
        n = 1;
        break;
    case TAG_INT:
    case TAG_FLOAT:
        n = 8;
        break;
    case TAG_TEXT:
    case TAG_BYTES:
        if (r->len - r->pos < 4)
            return truncated(r, pr);
        n = get_u32(r->buf + r->pos);
        r->pos += 4;
        if (r->len - r->pos < n)
            return truncated(r, pr);
        if (tag == TAG_TEXT && !utf8_valid(r->buf + r->pos, n)) {
            problem_at(pr, MALFORMED "text value is not valid UTF-8 at byte ", start);
            return false;
        }
        break;
    default:
        problem_at(pr, MALFORMED "unknown value tag at byte ", start);
        return false;
    }
    if (r->len - r->pos < n)
        return truncated(r, pr);
    r->pos += n;
    return true;
}

/* Checks one row at r->pos, moves past it and stores its view in `row`. */
static bool read_row(reader *r, sluice_row *row, problem *pr) {
    if (r->len - r->pos < 4)
        return truncated(r, pr);
    row->count = get_u32(r->buf + r->pos);
    r->pos += 4;
    row->values = r->buf + r->pos;
    for (uint32_t i = 0; i < row->count; i++)
        if (!skip_value(r, pr))
            return false;
    return true;
}

/* ---- Parameters ------------------------------------------------------------ */

struct sluice_params {
    const SLUICE_W(tuple2_string_string_t) *pairs;
    size_t len;
};

size_t sluice_params_len(const sluice_params *params) {
    return params->len;
}

bool sluice_param_at(const sluice_params *params, size_t index, sluice_str *key, sluice_str *value) {
    if (index >= params->len)
        return false;
    const SLUICE_W(tuple2_string_string_t) *p = &params->pairs[index];
    if (key)
        *key = (sluice_str){(const char *)p->f0.ptr, p->f0.len};
    if (value)
        *value = (sluice_str){(const char *)p->f1.ptr, p->f1.len};
    return true;
}

bool sluice_param(const sluice_params *params, const char *key, sluice_str *value) {
    for (size_t i = params->len; i-- > 0;) {
        const SLUICE_W(tuple2_string_string_t) *p = &params->pairs[i];
        if (sluice_str_eq((sluice_str){(const char *)p->f0.ptr, p->f0.len}, key)) {
            if (value)
                *value = (sluice_str){(const char *)p->f1.ptr, p->f1.len};
            return true;
        }
    }
    return false;
}

/* ---- The job description's common fields --------------------------------- */

static void set_string(SLUICE_W(option_string_t) *field, const char *s) {
    SLUICE_W(option_string_free)(field);
    field->is_some = true;
    SLUICE_W(string_dup)(&field->val, s);
}

void sluice_job_name(sluice_job *job, const char *name) {
    set_string(&job->d.name, name);
}

void sluice_job_source(sluice_job *job, const char *uri) {
    set_string(&job->d.source, uri);
}

void sluice_job_sink(sluice_job *job, const char *uri) {
    set_string(&job->d.sink, uri);
}

void sluice_job_checkpoint_ms(sluice_job *job, uint64_t interval_ms) {
    job->d.checkpoint_interval_ms.is_some = true;
    job->d.checkpoint_interval_ms.val = interval_ms;
}

static sluice_stream_types_restart_strategy_t *restart(sluice_job *job, uint8_t tag) {
    job->d.restart.is_some = true;
    memset(&job->d.restart.val, 0, sizeof job->d.restart.val);
    job->d.restart.val.tag = tag;
    return &job->d.restart.val;
}

void sluice_job_restart_none(sluice_job *job) {
    restart(job, SLUICE_STREAM_TYPES_RESTART_STRATEGY_NONE);
}

void sluice_job_restart_fixed_delay(sluice_job *job, uint32_t attempts, uint64_t delay_ms) {
    sluice_stream_types_restart_strategy_t *r =
        restart(job, SLUICE_STREAM_TYPES_RESTART_STRATEGY_FIXED_DELAY);
    r->val.fixed_delay.attempts = attempts;
    r->val.fixed_delay.delay_ms = delay_ms;
}

void sluice_job_restart_failure_rate(sluice_job *job, uint32_t max_failures, uint64_t interval_ms,
                                     uint64_t delay_ms) {
    sluice_stream_types_restart_strategy_t *r =
        restart(job, SLUICE_STREAM_TYPES_RESTART_STRATEGY_FAILURE_RATE);
    r->val.failure_rate.max_failures = max_failures;
    r->val.failure_rate.interval_ms = interval_ms;
    r->val.failure_rate.delay_ms = delay_ms;
}

void sluice_job_restart_exponential_delay(sluice_job *job, uint64_t initial_ms, uint64_t max_ms,
                                          double multiplier, uint64_t reset_after_ms,
                                          double jitter) {
    sluice_stream_types_restart_strategy_t *r =
        restart(job, SLUICE_STREAM_TYPES_RESTART_STRATEGY_EXPONENTIAL_DELAY);
    r->val.exponential_delay.initial_ms = initial_ms;
    r->val.exponential_delay.max_ms = max_ms;
    r->val.exponential_delay.multiplier = multiplier;
    r->val.exponential_delay.reset_after_ms = reset_after_ms;
    r->val.exponential_delay.jitter = jitter;
}

void sluice_job_parallelism(sluice_job *job, uint32_t parallelism) {
    job->d.parallelism.is_some = true;
    job->d.parallelism.val = parallelism;
}

static sluice_stream_types_limits_t *limits(sluice_job *job) {
    job->d.limits.is_some = true;
    return &job->d.limits.val;
}

void sluice_job_memory_limit(sluice_job *job, uint64_t bytes) {
    limits(job)->memory_bytes = (SLUICE_W(option_u64_t)){true, bytes};
}

void sluice_job_call_timeout_ms(sluice_job *job, uint64_t ms) {
    limits(job)->call_timeout_ms = (SLUICE_W(option_u64_t)){true, ms};
}

void sluice_job_max_rows_per_record(sluice_job *job, uint32_t rows) {
    limits(job)->max_rows_per_record = (SLUICE_W(option_u32_t)){true, rows};
}

void sluice_job_max_bytes_per_record(sluice_job *job, uint64_t bytes) {
    limits(job)->max_bytes_per_record = (SLUICE_W(option_u64_t)){true, bytes};
}

#endif /* SLUICE_CORE_H */
