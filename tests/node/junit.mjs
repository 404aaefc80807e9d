// Read a JUnit file the way mikepenz/action-junit-report does: xml-js in compact mode (its testParser.ts), then
// the fields that reporter shows: testsuite > testcase with name, classname, time, file, line, and a failure,
// error or skipped child with its message attribute and its text.
//
//   node tests/node/junit.mjs FILE
//
// Prints one JSON document: {root: {...attributes}, cases: [{suite, classname, name, time, file, line, result,
// message, body}]}; result is "failure", "error", "skipped" or "passed".
import { readFile } from 'node:fs/promises';
import convert from 'xml-js';

const asList = (value) => (value === undefined ? [] : Array.isArray(value) ? value : [value]);
const text = (node) => (node ? [node._text, node._cdata].flat().filter((t) => t !== undefined).join('') : '');

const document = convert.xml2js(await readFile(process.argv[2], 'utf8'), { compact: true });
const root = document.testsuites ?? { testsuite: document.testsuite };
const cases = [];
for (const suite of asList(root.testsuite)) {
  for (const testcase of asList(suite.testcase)) {
    const attributes = testcase._attributes ?? {};
    const kind = ['failure', 'error', 'skipped'].find((name) => testcase[name] !== undefined);
    const outcome = kind ? asList(testcase[kind])[0] : undefined;
    cases.push({
      suite: suite._attributes?.name,
      classname: attributes.classname,
      name: attributes.name,
      time: attributes.time,
      file: attributes.file,
      line: attributes.line,
      result: kind ?? 'passed',
      message: outcome?._attributes?.message,
      body: text(outcome),
      systemOut: text(testcase['system-out']),
    });
  }
}
process.stdout.write(JSON.stringify({ root: root._attributes ?? {}, cases }));
