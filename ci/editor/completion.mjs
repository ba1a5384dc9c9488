// Drives yaml-language-server (the server behind VS Code's and Neovim's YAML support)
// over stdio, as an editor would, and checks what it offers in scenario files:
//   node completion.mjs <server.js> <scenarios/schema.json> <step names, one per line>
// 1. at `- ` under `steps:` it must offer every step keyword;
// 2. hover on a step keyword must show that step's description, not a bare reference.
// Exits non-zero, naming what is missing, otherwise.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import path from 'node:path';

const [server, schemaPath, namesPath] = process.argv.slice(2);
const expected = readFileSync(namesPath, 'utf8').split('\n').filter(Boolean);
const schemaUri = pathToFileURL(path.resolve(schemaPath)).href;
const child = spawn(process.execPath, [server, '--stdio'], { stdio: ['pipe', 'pipe', 'inherit'] });
const deadline = setTimeout(() => fail('yaml-language-server did not answer within 60 s'), 60000);

function fail(message) {
  console.error(`editor check: ${message}`);
  child.kill();
  process.exit(1);
}

let buffer = Buffer.alloc(0);
const pending = new Map();
let nextId = 1;
child.stdout.on('data', (chunk) => {
  buffer = Buffer.concat([buffer, chunk]);
  for (;;) {
    const end = buffer.indexOf('\r\n\r\n');
    if (end < 0) return;
    const length = Number(/Content-Length: (\d+)/i.exec(buffer.subarray(0, end).toString())[1]);
    if (buffer.length < end + 4 + length) return;
    const message = JSON.parse(buffer.subarray(end + 4, end + 4 + length).toString());
    buffer = buffer.subarray(end + 4 + length);
    if (message.id !== undefined && pending.has(message.id)) {
      pending.get(message.id)(message);
      pending.delete(message.id);
    } else if (message.id !== undefined && message.method) {
      // A request from the server (configuration, registration): answer it.
      const result = message.method === 'workspace/configuration'
        ? message.params.items.map(() => ({ schemas: { [schemaUri]: '*.yaml' }, completion: true, hover: true, validate: true }))
        : null;
      send({ jsonrpc: '2.0', id: message.id, result });
    }
  }
});

function send(message) {
  const body = JSON.stringify(message);
  child.stdin.write(`Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
}
function request(method, params) {
  const id = nextId++;
  send({ jsonrpc: '2.0', id, method, params });
  return new Promise((resolve) => pending.set(id, resolve));
}
function notify(method, params) {
  send({ jsonrpc: '2.0', method, params });
}

const uri = 'file:///scenario.yaml';
const text = '# yaml-language-server: $schema=' + schemaUri + '\nversion: 1\nname: editor\ndaemons:\n  - id: d1\nsteps:\n  - start: { daemon: d1 }\n  - \n';
await request('initialize', { processId: process.pid, rootUri: null, capabilities: { textDocument: { completion: { completionItem: { snippetSupport: true } }, hover: { contentFormat: ['markdown', 'plaintext'] } } } });
notify('initialized', {});
notify('workspace/didChangeConfiguration', { settings: { yaml: { schemas: { [schemaUri]: '*.yaml' }, completion: true, hover: true, validate: true } } });
notify('textDocument/didOpen', { textDocument: { uri, languageId: 'yaml', version: 1, text } });

const completion = await request('textDocument/completion', { textDocument: { uri }, position: { line: 7, character: 4 } });
const items = (completion.result?.items ?? completion.result ?? []).map((item) => item.label);
const missing = expected.filter((name) => !items.includes(name));
if (missing.length) fail(`completion at \`- \` under steps offers ${items.length} items; missing steps: ${missing.join(', ')}`);

const hover = await request('textDocument/hover', { textDocument: { uri }, position: { line: 6, character: 5 } });
const shown = JSON.stringify(hover.result?.contents ?? '');
if (!shown.includes('Spawn the daemon')) fail(`hover on \`start\` shows ${shown}`);

clearTimeout(deadline);
console.log(`editor: yaml-language-server offers all ${expected.length} steps at \`- \` and describes them on hover`);
child.kill();
process.exit(0);
