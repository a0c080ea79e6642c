/* Flink's WordCount as a Sluice guest, in C.
 *
 * Splits each line on whitespace into (word, 1), keys by the word and lets
 * the host sum field 1. The line `ERROR` fails the record: the seed
 * scenario's failure signal, which the host answers with its restart
 * strategy. */
#include "sluice.h"

/* Split a line into (word, 1) rows; the line `ERROR` fails. */
static int flat_map(sluice_str line, sluice_out *out) {
    if (sluice_str_eq(line, "ERROR"))
        return sluice_fail("received the line `ERROR`");
    sluice_words words = sluice_split_whitespace(line);
    sluice_str word;
    while (sluice_next_word(&words, &word))
        sluice_emit(out, sluice_text(word), sluice_int(1));
    return 0;
}

/* The job as the seed describes it. */
static void describe(const sluice_params *params, sluice_job *job) {
    sluice_job_name(job, "wordcount-c");
    sluice_job_source(job, "socket://localhost:9100");
    sluice_job_sum(job, 1);
    sluice_job_checkpoint_ms(job, 1000);
    sluice_job_restart_fixed_delay(job, 3, 10000);
}

/* Keyed by the word, field 0: taken from the emitted row without a call. */
SLUICE_EXPORT(.flat_map = flat_map, .key_field = SLUICE_KEY_FIELD(0), .describe = describe)
