// Parse GitHub workflow files with GitHub's own workflow parser (@actions/workflow-parser, the parser of GitHub's
// Actions language service): what it reports is what GitHub refuses ("workflow is not valid").
//
//   node --import ./tests/node/json-import-hook.mjs tests/node/workflow-parser.mjs FILE...
//
// Prints one JSON array of {file, message}: empty when GitHub would accept every file.
import { readFile } from 'node:fs/promises';
import { NoOperationTraceWriter, parseWorkflow } from '@actions/workflow-parser';

const problems = [];
for (const file of process.argv.slice(2)) {
  const content = await readFile(file, 'utf8');
  const result = parseWorkflow({ name: file, content }, new NoOperationTraceWriter());
  for (const error of result.context.errors.getErrors()) problems.push({ file, message: error.message });
  if (!result.value) problems.push({ file, message: 'no workflow template produced' });
}
process.stdout.write(JSON.stringify(problems));
