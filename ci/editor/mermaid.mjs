// Parses Mermaid diagrams with Mermaid's own parser (the one GitHub and GitLab render
// with): node mermaid.mjs <mermaid package dir> <file.mmd>... Exits non-zero, naming
// each file that does not parse and why.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const [packageDir, ...files] = process.argv.slice(2);
const { default: mermaid } = await import(pathToFileURL(path.join(packageDir, 'dist', 'mermaid.core.mjs')).href);
let bad = 0;
for (const file of files) {
  try {
    await mermaid.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    bad += 1;
    console.error(`${file}: ${String(e.message ?? e).split('\n').slice(0, 4).join(' | ')}`);
  }
}
if (bad) process.exit(1);
console.log(`mermaid: ${files.length} diagrams parse`);
