// Flink's WordCount as a Sluice guest in JavaScript.
//
// Splits each line on whitespace into (word, 1), keys by the word (field 0)
// and lets the host sum field 1. `out.emitEach` emits a line's rows in one
// call, and with the key a field index each word's row is encoded once. The line `ERROR` fails the record: the seed
// scenario's failure signal, which the host answers with its restart strategy.

import { exportJob, splitWhitespace, JobDescription, Restart } from "../../guest-sdk-js/sluice.js";

/** Split a line into (word, 1) rows; the line `ERROR` fails the record. */
function flatMap(line, out) {
  if (line === "ERROR") throw new Error("received the line `ERROR`");
  out.emitEach(splitWhitespace(line), 1);
}

/** The job as the seed describes it. */
const describe = (params) =>
  new JobDescription("wordcount-js")
    .source("socket://localhost:9100")
    .sum(1)
    .checkpointEveryMs(1000)
    .restart(Restart.fixedDelay(3, 10_000));

export const { operator, job } = exportJob({ flatMap, key: 0, describe });
