// __test__/readme.test.js: the README says what the code does. Its integration snippets
// are the example files the other tests run, and its TypeScript compiles, strictly,
// against the generated index.d.ts.
const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { typecheck } = require('./helpers');

const root = path.resolve(__dirname, '..');
const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');

describe('README', () => {
  it('shows each example file verbatim', () => {
    const marked = [...readme.matchAll(/<!-- example: (\S+) -->\n```js\n([\s\S]*?)```/g)];
    const examples = fs
      .readdirSync(path.join(root, 'examples'), { recursive: true })
      .filter((file) => file.endsWith('.js') && !file.includes('.next'))
      .map((file) => path.posix.join('examples', file.split(path.sep).join('/')));
    assert.deepEqual(marked.map(([, file]) => file).sort(), examples.sort(), 'every example file is in the README');
    for (const [, file, snippet] of marked) {
      assert.equal(snippet, fs.readFileSync(path.join(root, file), 'utf8'), `README's copy of ${file} is out of date`);
    }
  });

  it('has TypeScript snippets that compile with tsc --strict', async () => {
    const snippets = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map(([, source]) => source);
    assert.ok(snippets.length > 0, 'the README has TypeScript snippets');
    const files = Object.fromEntries(snippets.map((source, i) => [`readme-${i + 1}.mts`, `export {};\n${source}`]));
    const { ok, output } = await typecheck(files);
    assert.ok(ok, `tsc failed:\n${output}`);
  });

  it('typings refuse misspelt options, unknown events and wrong payload use', async () => {
    const { ok, output } = await typecheck({
      'mistakes.mts': [
        "import { RelaySessionManager } from 'switchyard';",
        'const manager = new RelaySessionManager({ sesionTimeoutMs: 5 });',
        "manager.on('conection', () => {});",
        "manager.on('disconnect', (event) => event.sessionCount);",
        "manager.createSession({ expiresIn: '5s' });",
        "const when: string = manager.createSession().expiresAt;",
        'manager.listen({ prot: 8765 });',
        "const port: string = manager.listen().port;",
        '',
      ].join('\n'),
    });
    assert.equal(ok, false);
    for (const [line, what] of [[2, 'sesionTimeoutMs'], [3, 'conection'], [4, 'sessionCount'], [5, 'string'], [6, 'Date'], [7, 'prot'], [8, 'number']]) {
      assert.match(output, new RegExp(`mistakes\\.mts\\(${line},[^]*?${what}`), `line ${line} (${what}) is an error:\n${output}`);
    }
  });
});
