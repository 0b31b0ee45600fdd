// __test__/quickstart.test.js: the README's quick start, step by step, as a newcomer runs
// it: `npm start` (the command itself, through npm), the page it serves, the README's curl
// command, two WebSocket clients of the printed wsUrl relaying the README's JSON message,
// the error a plain-text message gets, the admin view, and `npx switchyard --help`.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFile, spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { TestClient, freePort, INVALID_MESSAGE } = require('./helpers');

const root = path.resolve(__dirname, '..');
const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
const quickStart = readme.slice(readme.indexOf('## Quick start'), readme.indexOf('\n## ', readme.indexOf('## Quick start')));
const STARTED_WITHIN_MS = 180_000;

const run = (command, args, options = {}) =>
  new Promise((resolve) =>
    execFile(command, args, { cwd: root, timeout: 60_000, ...options }, (err, stdout, stderr) => resolve({ code: err ? err.code : 0, stdout, stderr })),
  );

describe('the quick start', () => {
  let port;
  let started;
  let output = '';
  let url;

  before(async () => {
    port = await freePort();
    // Its own process group, so stopping it stops npm, the shell and node alike.
    started = spawn('npm', ['start'], { cwd: root, env: { ...process.env, PORT: String(port) }, detached: true });
    started.stdout.on('data', (chunk) => (output += chunk));
    started.stderr.on('data', (chunk) => (output += chunk));
    url = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`npm start did not say it was listening within ${STARTED_WITHIN_MS} ms:\n${output}`)), STARTED_WITHIN_MS);
      const check = () => {
        // The last of the lines it prints, so all of them are in.
        const match = /listening on (http:\/\/localhost:\d+)[^]*Prometheus metrics at/.exec(output);
        if (match) {
          clearTimeout(timer);
          resolve(match[1]);
        }
      };
      started.stdout.on('data', check);
      started.once('exit', (code) => reject(new Error(`npm start exited with ${code}:\n${output}`)));
    });
  });

  after(async () => {
    if (started.exitCode === null && started.signalCode === null) {
      const exited = new Promise((resolve) => started.once('exit', resolve));
      process.kill(-started.pid, 'SIGINT');
      await exited;
    }
  });

  it('starts the Express example on the port asked for, and says where to go next', () => {
    assert.equal(url, `http://localhost:${port}`);
    assert.match(output, /the page gives you a link for a second window of its session/);
    assert.match(output, new RegExp(`curl -X POST ${url}/api/sessions`));
    assert.doesNotMatch(output, /changed files in the work tree/, 'setting up left the clone as it was');
  });

  it('serves the demo page and the admin view', async () => {
    const page = await fetch(`${url}/`);
    assert.equal(page.status, 200);
    assert.match(await page.text(), /<title>Switchyard demo<\/title>/);
    assert.match(quickStart, /<http:\/\/localhost:3000\/admin\/>/);
    const admin = await fetch(`${url}/admin/`);
    assert.equal(admin.status, 200);
    assert.match(await admin.text(), /<title>Switchyard admin<\/title>/);
  });

  it("relays the README's JSON message between two clients of the wsUrl its curl command prints", async () => {
    const curl = /^curl -X POST http:\/\/localhost:3000\/api\/sessions$/m.exec(quickStart);
    assert.ok(curl, 'the quick start has the curl command');
    const created = await run('curl', ['-sS', '-X', 'POST', `${url}/api/sessions`]);
    assert.equal(created.code, 0, created.stderr);
    const { sessionId, wsUrl, expiresAt } = JSON.parse(created.stdout);
    assert.equal(wsUrl, `ws://localhost:${port}/session/${sessionId}`);
    assert.ok(Date.parse(expiresAt) > Date.now());

    const first = new TestClient(wsUrl);
    const second = new TestClient(wsUrl);
    try {
      assert.equal((await first.nextOfType('client_connected')).json.sessionId, sessionId);
      await second.nextOfType('client_connected');
      const message = /```json\n(.+)\n```/.exec(quickStart)[1];
      assert.equal(JSON.parse(message).type, 'chat');
      first.send(message);
      assert.equal((await second.next((m) => m.json?.type === 'chat')).text, message, 'exactly those bytes');

      second.send('hello');
      const error = (await second.nextOfType('error')).json;
      assert.deepEqual(error.data, { code: 'INVALID_MESSAGE', message: INVALID_MESSAGE });
      assert.match(quickStart, /`INVALID_MESSAGE` error naming the expected shape/);
      second.send(message);
      assert.equal((await first.next((m) => m.json?.type === 'chat')).text, message, 'and the connection stays open');
    } finally {
      await Promise.all([first.close(), second.close()]);
    }
  });

  it('stops on Ctrl-C', async () => {
    const exited = new Promise((resolve) => started.once('exit', (code, signal) => resolve({ code, signal })));
    process.kill(-started.pid, 'SIGINT');
    const { code, signal } = await exited;
    assert.ok(code === 0 || signal === 'SIGINT', `exit ${code} ${signal}`);
    await assert.rejects(fetch(`${url}/`), 'nothing listens any more');
  });
});

describe("the book's standalone server page", () => {
  it('builds with npm run build:server, then npx switchyard --help answers', async () => {
    const section = fs.readFileSync(path.join(root, 'docs', 'operations', 'standalone-server.md'), 'utf8');
    assert.match(section, /npm run build:server {5}# in a checkout only\nnpx switchyard --help\n/);
    // `npm test` has built the binary; run it as the page does.
    const help = await run('npx', ['switchyard', '--help']);
    assert.equal(help.code, 0, help.stderr);
    assert.match(help.stdout, /--port/);
    assert.match(help.stdout, /--admin-token/);
  });
});
