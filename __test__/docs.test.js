// __test__/docs.test.js: the README and the book say what the code does. Their example
// snippets are the example files the tests run, their TypeScript compiles, strictly,
// against the generated index.d.ts, every relative link resolves, the book's contents
// page lists every page, and the README's quick start server relays as it says.
const { describe, it, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { typecheck, joinedClient, hasNativeTransport } = require('./helpers');

const root = path.resolve(__dirname, '..');
const read = (file) => fs.readFileSync(path.join(root, file), 'utf8');
const bookPages = fs
  .readdirSync(path.join(root, 'docs'), { recursive: true })
  .filter((file) => file.endsWith('.md'))
  .map((file) => path.posix.join('docs', file.split(path.sep).join('/')));
/** Every page a reader may open: the README, the maintainers' pages and the book. */
const pages = ['README.md', 'ARCHITECTURE.md', 'CONTRIBUTING.md', 'CHANGELOG.md', ...bookPages];

/** The text of a page outside its fenced code blocks. */
const prose = (text) => text.replace(/^```[^]*?^```/gm, '');

/** A heading's anchor, as GitHub and mdBook make it. */
const anchorOf = (heading) => heading.trim().toLowerCase().replace(/[^\w\- ]/g, '').replace(/ /g, '-');
const anchorsOf = (text) => new Set([...prose(text).matchAll(/^#{1,6} (.+)$/gm)].map(([, heading]) => anchorOf(heading)));

describe('the README and the book', () => {
  it('keep the README short: at most 300 lines', () => {
    const lines = read('README.md').split('\n').length;
    assert.ok(lines <= 300, `README.md has ${lines} lines`);
  });

  it('show each example file verbatim, somewhere', () => {
    const marked = pages.flatMap((page) => [...read(page).matchAll(/<!-- example: (\S+) -->\n```js\n([\s\S]*?)```/g)].map(([, file, snippet]) => ({ page, file, snippet })));
    const examples = fs
      .readdirSync(path.join(root, 'examples'), { recursive: true })
      .filter((file) => file.endsWith('.js') && !file.includes('.next'))
      .map((file) => path.posix.join('examples', file.split(path.sep).join('/')));
    assert.deepEqual([...new Set(marked.map(({ file }) => file))].sort(), examples.sort(), 'every example file is shown');
    for (const { page, file, snippet } of marked) {
      assert.equal(snippet, read(file), `${page}'s copy of ${file} is out of date`);
    }
  });

  it('have TypeScript snippets that compile with tsc --strict', async () => {
    const snippets = pages.flatMap((page) => [...read(page).matchAll(/```ts\n([\s\S]*?)```/g)].map(([, source]) => source));
    assert.ok(snippets.length > 0, 'the pages have TypeScript snippets');
    const files = Object.fromEntries(snippets.map((source, i) => [`snippet-${i + 1}.mts`, `export {};\n${source}`]));
    const { ok, output } = await typecheck(files);
    assert.ok(ok, `tsc failed:\n${output}`);
  });

  it('link only to files and headings that exist', () => {
    const broken = [];
    for (const page of pages) {
      for (const [, target] of prose(read(page)).matchAll(/\]\(([^)\s]+)\)/g)) {
        if (/^[a-z]+:/.test(target)) continue;
        const [file, anchor] = target.split('#');
        const resolved = file ? path.posix.normalize(path.posix.join(path.posix.dirname(page), file)) : page;
        if (!fs.existsSync(path.join(root, resolved))) {
          broken.push(`${page}: ${target} (no ${resolved})`);
        } else if (anchor && resolved.endsWith('.md') && !anchorsOf(read(resolved)).has(anchor)) {
          broken.push(`${page}: ${target} (no heading #${anchor} in ${resolved})`);
        }
      }
    }
    assert.deepEqual(broken, []);
  });

  it("list every page of the book on its contents page", () => {
    const summary = read('docs/SUMMARY.md');
    const listed = [...summary.matchAll(/\]\(([^)]+\.md)\)/g)].map(([, file]) => path.posix.join('docs', file));
    assert.deepEqual(listed.filter((file) => !bookPages.includes(file)), [], 'SUMMARY.md lists no missing page');
    assert.deepEqual(bookPages.filter((file) => file !== 'docs/SUMMARY.md' && !listed.includes(file)), [], 'every page is on SUMMARY.md');
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

describe("the README's server", { skip: !hasNativeTransport && 'it uses the native transport' }, () => {
  let server;
  after(() => server?.kill());

  it('creates a session over HTTP and relays between two clients of its wsUrl', async () => {
    server = spawn(process.execPath, [path.join(root, 'examples', 'quickstart', 'server.js')], { env: { ...process.env, PORT: '0' } });
    let output = '';
    const url = await new Promise((resolve, reject) => {
      server.stdout.on('data', (chunk) => {
        output += chunk;
        const match = /listening on (http:\/\/localhost:\d+)/.exec(output);
        if (match) resolve(match[1]);
      });
      server.stderr.on('data', (chunk) => (output += chunk));
      server.once('exit', (code) => reject(new Error(`the server exited with ${code}:\n${output}`)));
    });
    const created = await fetch(`${url}/api/sessions`, { method: 'POST' });
    assert.equal(created.status, 201);
    const { sessionId, wsUrl, expiresAt } = await created.json();
    assert.equal(wsUrl, `${url.replace('http', 'ws')}/session/${sessionId}`);
    assert.ok(Date.parse(expiresAt) > Date.now());
    const [a, b] = [await joinedClient(wsUrl), await joinedClient(wsUrl)];
    a.send('{"type":"chat","text":"hello"}');
    assert.equal((await b.nextOfType('chat')).text, '{"type":"chat","text":"hello"}');
    a.close();
    b.close();
  });
});
