// Read a JUnit file the way dorny/test-reporter's java-junit parser does: xml2js (its XML parser, parseStringPromise
// with default options), then the fields it keeps: the run's time from the root (undefined when the root has none),
// each suite's name and time, each case's name (trimmed), classname (grouped under the suite unless it equals the
// suite's name), time in ms (parseFloat, so a missing time is NaN), result ('failed' for a failure or an error,
// 'skipped', 'success') and, for failed cases, the message and details of the first failure, else of the first error.
//
//   node tests/node/junit-dorny.mjs FILE
//
// Prints one JSON document: {timeMs, suites: [{name, timeMs, cases: [{group, name, timeMs, result, message,
// details}]}]}; NaN is printed as null.
import { readFile } from 'node:fs/promises';
import { parseStringPromise } from 'xml2js';

const report = await parseStringPromise(await readFile(process.argv[2], 'utf8'));
const root = report.testsuites ?? { $: { time: report.testsuite?.$?.time }, testsuite: [report.testsuite] };
const seconds = parseFloat(root.$?.time);
const suites = (root.testsuite ?? []).map((suite) => ({
  name: suite.$.name.trim(),
  timeMs: parseFloat(suite.$.time) * 1000,
  cases: (suite.testcase ?? []).map((test) => {
    const failures = test.failure ?? test.error;
    const first = failures ? failures[0] : undefined;
    return {
      group: test.$.classname === suite.$.name ? '' : test.$.classname,
      name: test.$.name.trim(),
      timeMs: parseFloat(test.$.time) * 1000,
      result: test.failure || test.error ? 'failed' : test.skipped ? 'skipped' : 'success',
      message: typeof first === 'object' ? first.$?.message : undefined,
      details: typeof first === 'object' ? first._ : first,
    };
  }),
}));
process.stdout.write(JSON.stringify({ timeMs: isNaN(seconds) ? undefined : seconds * 1000, suites }));
