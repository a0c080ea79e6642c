// Flink's WordCount as a Sluice guest in JavaScript.
//
// Splits each line on whitespace into (word, 1), keys by the word and lets
// the host sum field 1. The line `ERROR` fails the record: the seed
// scenario's failure signal, which the host answers with its restart strategy.

import { exportJob, splitWhitespace, JobDescription, Restart } from "../../guest-sdk-js/sluice.js";

/** Split a line into (word, 1) rows; the line `ERROR` fails the record. */
function flatMap(line, out) {
  if (line === "ERROR") throw new Error("received the line `ERROR`");
  for (const word of splitWhitespace(line)) out.emit(word, 1);
}

/** Key by the word (field 0). */
const key = (row) => row[0];

/** The job as the seed describes it. */
const describe = (params) =>
  new JobDescription("wordcount-js")
    .source("socket://localhost:9100")
    .sum(1)
    .checkpointEveryMs(1000)
    .restart(Restart.fixedDelay(3, 10_000));

export const { operator, job } = exportJob({ flatMap, key, describe });
