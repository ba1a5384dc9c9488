// Drives yaml-language-server (the server behind VS Code's and Neovim's YAML support)
// over stdio, as an editor would, and checks what it offers in scenario files:
//   node completion.mjs <server.js> <scenarios/schema.json> <step names, one per line>
// 1. at `- ` under `steps:` it must offer the step keywords, each once, and nothing else;
// 2. hover on a step keyword must show that step's description, not a bare reference;
// 3. hover on a field's key (`event:` of `wait_event`) must show the field's description,
//    not that of the first value its type allows;
// 4. at `- ` in a rule's `then:` it must offer every action, `delay_ms` among them, once.
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

const schema = JSON.parse(readFileSync(schemaPath, 'utf8'));
const header = '# yaml-language-server: $schema=' + schemaUri + '\n';
const steps = 'file:///steps.yaml';
const actions = 'file:///actions.yaml';
await request('initialize', { processId: process.pid, rootUri: null, capabilities: { textDocument: { completion: { completionItem: { snippetSupport: true } }, hover: { contentFormat: ['markdown', 'plaintext'] } } } });
notify('initialized', {});
notify('workspace/didChangeConfiguration', { settings: { yaml: { schemas: { [schemaUri]: '*.yaml' }, completion: true, hover: true, validate: true } } });
notify('textDocument/didOpen', { textDocument: { uri: steps, languageId: 'yaml', version: 1, text: header + 'version: 1\nname: editor\ndaemons:\n  - id: d1\nsteps:\n  - start: { daemon: d1 }\n  - wait_event: { daemon: d1, event: failed_over }\n  - \n' } });
notify('textDocument/didOpen', { textDocument: { uri: actions, languageId: 'yaml', version: 1, text: header + 'version: 1\nname: editor\ndaemons:\n  - id: d1\n    script:\n      rules:\n        - when: { method: GET }\n          then:\n            - \nsteps: []\n' } });

async function labels(uri, line, character) {
  const completion = await request('textDocument/completion', { textDocument: { uri }, position: { line, character } });
  return (completion.result?.items ?? completion.result ?? []).map((item) => item.label);
}
async function hover(uri, line, character) {
  const answer = await request('textDocument/hover', { textDocument: { uri }, position: { line, character } });
  return JSON.stringify(answer.result?.contents ?? '');
}
// The same names, each once, and nothing else.
function exactly(what, offered, wanted) {
  const twice = offered.filter((label, i) => offered.indexOf(label) !== i);
  const missing = wanted.filter((name) => !offered.includes(name));
  const extra = offered.filter((label) => !wanted.includes(label));
  if (twice.length || missing.length || extra.length) {
    fail(`${what} offers ${offered.length} items for ${wanted.length}: twice: [${twice.join(', ')}], missing: [${missing.join(', ')}], not wanted: [${extra.join(', ')}]`);
  }
}

exactly('completion at `- ` under steps', await labels(steps, 8, 4), expected);

const onStart = await hover(steps, 6, 5);
if (!onStart.includes('Spawn the daemon')) fail(`hover on \`start\` shows ${onStart}`);

const field = schema.definitions.WaitEventStep.properties.event.description;
const onEvent = await hover(steps, 7, 32);
if (!onEvent.includes(field)) fail(`hover on \`event:\` of wait_event shows ${onEvent}, not the field's description ${JSON.stringify(field)}`);

// Every action: the plain words and the one key of each object form.
const actionNames = schema.definitions.Action.oneOf.flatMap((branch) => branch.enum ?? Object.keys(branch.properties ?? {}));
if (!actionNames.includes('delay_ms')) fail(`the schema's actions have no delay_ms: ${actionNames.join(', ')}`);
exactly('completion at `- ` in a rule\'s `then:`', await labels(actions, 9, 14), actionNames);

clearTimeout(deadline);
console.log(`editor: yaml-language-server offers the ${expected.length} steps once each at \`- \`, the ${actionNames.length} actions in \`then:\`, and describes steps and fields on hover`);
child.kill();
process.exit(0);
