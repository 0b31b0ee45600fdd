// __test__/browser.test.js: @switchyard/client (the WebAssembly build) in real headless
// Chromium, driven by playwright-core, against real servers started here. Without
// Chromium the tests say loudly that they were skipped; under CI=true that is a failure.
const { describe, it, before, beforeEach, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const { RelaySessionManager } = require('..');
const express = require('../examples/express/server.js');
const { eventually } = require('./helpers');

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const clientDir = path.join(__dirname, '..', 'npm', 'client');
const types = { '.js': 'text/javascript', '.wasm': 'application/wasm', '.json': 'application/json' };

if (!fs.existsSync(CHROMIUM)) {
  const message = `Chromium not found at ${CHROMIUM}: the browser tests were SKIPPED (install it with apt-get install chromium)`;
  if (process.env.CI === 'true') {
    it('has Chromium to run the browser tests (CI=true)', () => assert.fail(message));
  } else {
    console.warn(`\n${'!'.repeat(80)}\n${message}\n${'!'.repeat(80)}\n`);
    it('browser tests', { skip: message }, () => {});
  }
} else {
  defineBrowserTests();
}

/**
 * A Node server for the pages: an empty page at /, the client package at /client/, and
 * one manager with native sessions at /session/:sessionId and awareness at /awareness.
 */
async function appServer({ port = 0, prepare = () => {}, config = {} } = {}) {
  const manager = new RelaySessionManager({ pingIntervalMs: 1000, heartbeatTimeoutMs: 5000, ...config });
  prepare(manager);
  manager.start();
  const server = http.createServer((req, res) => {
    const { pathname } = new URL(req.url, 'http://localhost');
    if (pathname.startsWith('/client/')) {
      const file = path.join(clientDir, path.basename(pathname));
      if (!fs.existsSync(file)) return res.writeHead(404).end();
      res.writeHead(200, { 'content-type': types[path.extname(file)] ?? 'application/octet-stream' });
      return fs.createReadStream(file).pipe(res);
    }
    res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>switchyard test</title>');
  });
  manager.attach(server);
  manager.attach(server, { path: '/awareness' });
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
  return {
    manager,
    port: server.address().port,
    url: `http://127.0.0.1:${server.address().port}`,
    async close() {
      manager.stop();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

function defineBrowserTests() {
  const { chromium } = require('playwright-core');
  let browser;
  const consoleErrors = [];
  const cleanups = [];

  // Each test answers for the console errors of its own pages only.
  beforeEach(() => {
    consoleErrors.length = 0;
  });

  before(async () => {
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run'],
    });
  });
  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
    await browser?.close();
  });

  /** A page that records console errors and uncaught exceptions. */
  async function page(url) {
    const context = await browser.newContext();
    const opened = await context.newPage();
    opened.on('console', (message) => message.type() === 'error' && consoleErrors.push(`${url}: ${message.text()}`));
    opened.on('pageerror', (error) => consoleErrors.push(`${url}: ${error.message}`));
    await opened.goto(url);
    cleanups.push(() => context.close());
    return opened;
  }

  /** Loads the client in the page and starts a focus protocol whose events land in window.events. */
  async function focusPage(server, userId, caseId) {
    const opened = await page(`${server.url}/`);
    const registered = await opened.evaluate(
      async ({ port, userId, caseId }) => {
        const { FocusDeclarationProtocol } = await import('/client/index.js');
        window.events = [];
        window.fdp = new FocusDeclarationProtocol({
          sessionServiceUrl: `ws://127.0.0.1:${port}/awareness`,
          userId,
          heartbeatIntervalMs: 500,
          reconnect: { initialDelayMs: 1000, maxDelayMs: 2000, maxAttempts: 20 },
        });
        window.fdp.onWarning((warning) => window.events.push({ kind: 'warning', ...warning }));
        window.fdp.onWarningCleared((cleared) => window.events.push({ kind: 'cleared', ...cleared }));
        return window.fdp.open(caseId);
      },
      { port: server.port, userId, caseId },
    );
    assert.equal(registered.caseId, caseId);
    return opened;
  }

  const waitForEvent = (opened, kind, type) =>
    opened.waitForFunction(({ kind, type }) => window.events.some((e) => e.kind === kind && (!type || e.type === type)), { kind, type }, { timeout: 5000 });

  describe('@switchyard/client in Chromium', () => {
    it('warns two pages of one user with different cases, and clears the warning when one closes', async () => {
      const server = await appServer();
      cleanups.push(() => server.close());
      const first = await focusPage(server, 'pathologist-1', 'CASE-001');
      const second = await focusPage(server, 'pathologist-1', 'CASE-002');
      await waitForEvent(first, 'warning', 'multi-case');
      await waitForEvent(second, 'warning', 'multi-case');
      const warning = await first.evaluate(() => window.events.find((e) => e.type === 'multi-case'));
      assert.deepEqual(warning.cases.map((c) => c.caseId).sort(), ['CASE-001', 'CASE-002']);
      const windowIds = await Promise.all([first, second].map((p) => p.evaluate(() => window.fdp.windowId)));
      assert.notEqual(windowIds[0], windowIds[1], 'each window has its own id');
      assert.equal(server.manager.getStats().registrations, 2);

      await second.close();
      await waitForEvent(first, 'cleared');
      const cleared = await first.evaluate(() => window.events.find((e) => e.kind === 'cleared'));
      assert.deepEqual(cleared.cases, [{ caseId: 'CASE-001', windowId: windowIds[0] }]);
      assert.deepEqual(consoleErrors, []);
    });

    it('reconnects after the server restarts, registers again, and delivers what was sent meanwhile', async () => {
      let server = await appServer({ prepare: (m) => m.createSession({ sessionId: 'room-1' }) });
      const port = server.port;
      const opened = await focusPage(server, 'pathologist-2', 'CASE-007');
      await opened.evaluate(async (port) => {
        const { RelayClient } = await import('/client/index.js');
        window.statuses = [];
        window.relay = new RelayClient(`ws://127.0.0.1:${port}/session/room-1`, {
          reconnect: { initialDelayMs: 1000, maxDelayMs: 2000, maxAttempts: 20 },
        });
        window.relay.onStatusChange((status) => window.statuses.push(status));
        await new Promise((resolve) => window.relay.onStatusChange((s) => s === 'open' && resolve()));
      }, port);

      await server.close();
      await opened.waitForFunction(() => window.relay.status === 'reconnecting' && window.fdp.status === 'reconnecting');
      await opened.evaluate(() => window.relay.send({ type: 'OUTAGE', sent: 'while the server was down' }));

      const arrived = [];
      server = await appServer({
        port,
        prepare: (manager) => {
          manager.createSession({ sessionId: 'room-1' });
          manager.on('message', { types: ['OUTAGE'] }, (event) => arrived.push(event.message));
        },
      });
      cleanups.push(() => server.close());
      await opened.waitForFunction(() => window.relay.status === 'open' && window.fdp.status === 'open', null, { timeout: 8000 });
      await eventually(() => {
        assert.deepEqual(arrived, [{ type: 'OUTAGE', sent: 'while the server was down' }]);
        assert.equal(server.manager.getStats().registrations, 1, 'the open case was registered again');
      }, 5000);
      assert.deepEqual(await opened.evaluate(() => window.statuses), ['open', 'reconnecting', 'open']);
      assert.deepEqual(consoleErrors, []);
    });

    for (const ack of ['requested', 'always']) {
      it(`settles joinChannel on CHANNEL_JOINED and on a refusal (ack: '${ack}'), and hands binary frames over as bytes`, async () => {
        const server = await appServer({
          config: { ack, channels: { allow: ['chat:*'] } },
          prepare: (manager) => manager.createSession({ sessionId: 'room-3' }),
        });
        cleanups.push(() => server.close());
        const opened = await page(`${server.url}/`);
        await opened.evaluate(async (port) => {
          const { RelayClient } = await import('/client/index.js');
          window.relay = new RelayClient(`ws://127.0.0.1:${port}/session/room-3`);
          window.bytes = [];
          window.relay.on('binary', (data) => window.bytes.push(data instanceof Uint8Array ? [...data] : String(data)));
          window.joined = await window.relay.joinChannel('chat:lobby').then(() => 'joined', (err) => err.message);
          window.refused = await window.relay.joinChannel('secret').then(() => 'joined', (err) => err.message);
        }, server.port);
        const { joined, refused } = await opened.evaluate(() => ({ joined: window.joined, refused: window.refused }));
        assert.equal(joined, 'joined');
        assert.equal(refused, 'CHANNEL_FORBIDDEN: This channel may not be joined');
        assert.deepEqual(server.manager.getStats().channels, { total: 1, breakdown: { 'chat:lobby': 1 } });
        assert.equal(server.manager.broadcast('room-3', Buffer.from([7, 8, 9])), 1);
        await opened.waitForFunction(() => window.bytes.length === 1, null, { timeout: 5000 });
        assert.deepEqual(await opened.evaluate(() => window.bytes), [[7, 8, 9]]);
        assert.deepEqual(consoleErrors, []);
      });
    }

    it('round-trips a RelayClient request through the server\'s onRequest handler', async () => {
      const server = await appServer({
        prepare: (manager) => {
          manager.createSession({ sessionId: 'room-2' });
          manager.onRequest(async (payload, context) => {
            if (payload.fail) throw new Error('asked to fail');
            return { doubled: payload.n * 2, connection: context.connectionId };
          });
        },
      });
      cleanups.push(() => server.close());
      const opened = await page(`${server.url}/`);
      const results = await opened.evaluate(async (port) => {
        const { RelayClient } = await import('/client/index.js');
        const relay = new RelayClient(`ws://127.0.0.1:${port}/session/room-2`);
        const [answer, other] = await Promise.all([relay.request({ n: 21 }), relay.request({ n: 1 }, { timeoutMs: 2000 })]);
        const failure = await relay.request({ fail: true }).catch((err) => err.message);
        let full;
        try {
          relay.close();
          relay.send({ type: 'late' });
        } catch (err) {
          full = err.message;
        }
        return { answer, other, failure, full };
      }, server.port);
      assert.equal(results.answer.doubled, 42);
      assert.match(results.answer.connection, /^c_/);
      assert.equal(results.other.doubled, 2);
      assert.equal(results.failure, 'REQUEST_FAILED: asked to fail');
      assert.equal(results.full, 'the client is closed');
      assert.deepEqual(consoleErrors, []);
    });

    it('runs the npm start demo: two windows relay messages and see the case warning', async () => {
      const demo = await express.start({ port: 0, host: '127.0.0.1' });
      cleanups.push(() => demo.close());
      const first = await page(`http://127.0.0.1:${new URL(demo.url).port}/`);
      await first.waitForFunction(() => window.switchyardDemo && location.search.includes('session='));
      const second = await page(first.url());
      for (const p of [first, second]) await p.waitForFunction(() => window.switchyardDemo.relay.status === 'open');
      await first.fill('#text', 'hello from the first window');
      await first.click('#send-form button');
      await second.waitForFunction(() => document.querySelector('#log').textContent.includes('hello from the first window'));
      await first.click('[data-case="CASE-001"]');
      await first.waitForFunction(() => document.querySelector('#focus-status').textContent === 'CASE-001 open');
      await second.click('[data-case="CASE-002"]');
      for (const p of [first, second]) {
        await p.waitForFunction(() => document.querySelector('#warning').className === 'on');
        assert.match(await p.textContent("#warning"), /(Multiple cases are open in this session|Another case was opened in a different window): CASE-001, CASE-002/);
      }
      assert.deepEqual(consoleErrors, []);
    });
  });
}
