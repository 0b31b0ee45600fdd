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
const { eventually, oneByOne } = require('./helpers');
const { sign, now } = require('./jwt');

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

/** Answers a request for a file of the client package (`/client/<name>`). */
function serveClient(pathname, res) {
  const file = path.join(clientDir, path.basename(pathname));
  if (!fs.existsSync(file)) return res.writeHead(404).end();
  res.writeHead(200, { 'content-type': types[path.extname(file)] ?? 'application/octet-stream' });
  fs.createReadStream(file).pipe(res);
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
    if (pathname.startsWith('/client/')) return serveClient(pathname, res);
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

/**
 * A TCP proxy to `port` whose network can be dropped: `down()` kills the client side of
 * every connection (the browser sees it die) while the server side stays open and
 * silent, as after a network loss, and holds new connections until `up()`.
 */
async function networkProxy(port) {
  const net = require('node:net');
  const pairs = new Set();
  let up = true;
  // Connections made while the network is down wait for it, as over a partition that
  // heals: resetting them would have Chromium log each attempt as an error.
  const waiting = new Set();
  const forward = (client) => {
    const upstream = net.connect(port, '127.0.0.1');
    const pair = { client, upstream, dropped: false };
    pairs.add(pair);
    client.pipe(upstream);
    upstream.pipe(client);
    upstream.on('error', () => {});
    client.on('close', () => pair.dropped || upstream.destroy());
    upstream.on('close', () => {
      client.destroy();
      pairs.delete(pair);
    });
  };
  const proxy = net.createServer((client) => {
    client.on('error', () => {});
    if (up) return forward(client);
    waiting.add(client);
    client.on('close', () => waiting.delete(client));
  });
  await new Promise((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  return {
    port: proxy.address().port,
    down() {
      up = false;
      for (const pair of pairs) {
        pair.dropped = true;
        pair.client.unpipe(pair.upstream);
        pair.upstream.unpipe(pair.client);
        pair.upstream.pause();
        pair.client.destroy();
      }
    },
    up() {
      up = true;
      for (const client of waiting) if (!client.destroyed) forward(client);
      waiting.clear();
    },
    async close() {
      for (const client of waiting) client.destroy();
      for (const { client, upstream } of pairs) {
        client.destroy();
        upstream.destroy();
      }
      await new Promise((resolve) => proxy.close(resolve));
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

  /**
   * A page whose RelayClient follows its stream (`recover: true`, quick reconnects): the
   * `n` of each `type` message lands in window.got, `recovered`/`resync` in
   * window.events (with the channel or offset they name).
   */
  async function recoveringPage(server, url, type) {
    const opened = await page(`${server.url}/`);
    await opened.evaluate(async ([url, type]) => {
      const { RelayClient } = await import('/client/index.js');
      window.got = [];
      window.events = [];
      window.relay = new RelayClient(url, { recover: true, reconnect: { initialDelayMs: 200, maxDelayMs: 1000, maxAttempts: Infinity } });
      window.relay.on(type, (message) => window.got.push(message.n));
      window.relay.on('recovered', (answer) => window.events.push(answer.channel ? `recovered ${answer.channel}` : 'recovered'));
      window.relay.on('resync', (answer) => window.events.push(`resync at ${answer.offset}`));
      await new Promise((resolve) => window.relay.onStatusChange((s) => s === 'open' && resolve()));
    }, [url, type]);
    return opened;
  }

  /**
   * A page whose RelayClient (`recover: true`, quick reconnects) gets its tokens from
   * `issue`, the test's function, called by getToken (it gives a token, or `{ fail }` for
   * getToken to throw that). window.statuses holds each status; window.events the token
   * events (`token_expiring`, `refreshed <expiresAt>`, `error <code>`, `token_error:
   * <message>`) and `recovered`/`resync`; window.got the `n` of each `tick`.
   */
  async function tokenPage(server, url, issue) {
    const opened = await page(`${server.url}/`);
    await opened.exposeFunction('issueToken', issue);
    await opened.evaluate(async (url) => {
      const { RelayClient } = await import('/client/index.js');
      window.statuses = [];
      window.events = [];
      window.got = [];
      const getToken = async () => {
        const given = await window.issueToken();
        if (given.fail) throw new Error(given.fail);
        return given;
      };
      window.relay = new RelayClient(url, { recover: true, getToken, reconnect: { initialDelayMs: 200, maxDelayMs: 1000, maxAttempts: Infinity } });
      window.relay.onStatusChange((status) => window.statuses.push(status));
      window.relay.on('token_expiring', () => window.events.push('token_expiring'));
      window.relay.on('refreshed', (answer) => window.events.push(`refreshed ${answer.data.expiresAt}`));
      window.relay.on('error', (error) => window.events.push(`error ${error.payload.code}`));
      window.relay.on('token_error', (error) => window.events.push(`token_error: ${error.message}`));
      window.relay.on('recovered', () => window.events.push('recovered'));
      window.relay.on('resync', () => window.events.push('resync'));
      window.relay.on('tick', (message) => window.got.push(message.n));
      await new Promise((resolve) => window.relay.onStatusChange((s) => s === 'open' && resolve()));
    }, url);
    return opened;
  }

  /** A server whose connections need a JWT signed with `secret`, recording how each ended. */
  async function tokenServer(secret, sessionId) {
    const disconnects = [];
    const server = await appServer({
      config: { auth: { jwt: { secret } }, history: { size: 100, ttlMs: 600_000 }, maxClientsPerSession: 8 },
      prepare: (manager) => {
        manager.createSession({ sessionId });
        manager.on('disconnect', ({ code, reason }) => disconnects.push({ code, reason }));
      },
    });
    cleanups.push(() => server.close());
    return { server, disconnects, url: `ws://127.0.0.1:${server.port}/session/${sessionId}` };
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
    it('negotiates permessage-deflate with the native transport, both ways, and the bytes on the wire shrink', async () => {
      const server = await appServer({ config: { nativeCompression: true }, prepare: (m) => m.createSession({ sessionId: 'deflated' }) });
      cleanups.push(() => server.close());
      const url = `ws://127.0.0.1:${server.port}/session/deflated`;
      const document = (n) => JSON.stringify({ type: 'doc', n, body: 'the same words again and again '.repeat(200) });
      const pages = [await page(`${server.url}/`), await page(`${server.url}/`)];
      const extensions = await Promise.all(
        pages.map((opened) =>
          opened.evaluate(async (url) => {
            window.got = [];
            window.socket = new WebSocket(url);
            window.socket.onmessage = (event) => window.got.push(event.data);
            await new Promise((resolve) => (window.socket.onopen = resolve));
            return window.socket.extensions;
          }, url),
        ),
      );
      assert.deepEqual(extensions, Array(2).fill('permessage-deflate; server_no_context_takeover; client_no_context_takeover'));
      await pages[0].evaluate((texts) => texts.forEach((text) => window.socket.send(text)), [0, 1, 2].map(document));
      await pages[1].waitForFunction((count) => window.got.filter((text) => text.includes('"doc"')).length === count, 3, { timeout: 5000 });
      const got = await pages[1].evaluate(() => window.got.filter((text) => text.includes('"doc"')));
      assert.deepEqual(got, [0, 1, 2].map(document), 'what Chromium compressed, the server inflated, and what it compressed, Chromium inflated');
      const { compression } = server.manager.getStats();
      assert.equal(compression.connections, 2);
      assert.ok(compression.ratio < 0.2, JSON.stringify(compression));
      assert.deepEqual(consoleErrors, []);
    });

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

    it('recovers what was published while its network was down, once and in order (recover: true, behind a proxy that drops it)', async () => {
      const server = await appServer({
        config: { history: { size: 1000, ttlMs: 600_000 } },
        prepare: (manager) => manager.createSession({ sessionId: 'room-r' }),
      });
      cleanups.push(() => server.close());
      const proxy = await networkProxy(server.port);
      cleanups.push(() => proxy.close());
      const opened = await recoveringPage(server, `ws://127.0.0.1:${proxy.port}/session/room-r`, 'tick');
      const { TestClient } = require('./helpers');
      const sender = new TestClient(`ws://127.0.0.1:${server.port}/session/room-r`);
      cleanups.push(() => sender.close());
      await sender.nextOfType('client_connected');
      const send = (from, to) => {
        for (let n = from; n <= to; n++) sender.send(JSON.stringify({ type: 'tick', n }));
      };
      const patient = { timeout: 20_000 };
      send(1, 50);
      await opened.waitForFunction(() => window.got.length === 50, null, patient);

      // The network goes: the browser's socket dies, the server's stays open and silent.
      proxy.down();
      await opened.waitForFunction(() => window.relay.status === 'reconnecting', null, patient);
      send(51, 150);
      await eventually(() => assert.equal(server.manager.history('room-r').offset, 150));
      proxy.up();

      await opened.waitForFunction(() => window.got.length >= 150, null, patient);
      send(151, 160);
      await opened.waitForFunction(() => window.got.length >= 160, null, patient);
      const { got, events } = await opened.evaluate(() => ({ got: window.got, events: window.events }));
      assert.deepEqual(got, Array.from({ length: 160 }, (_, i) => i + 1), 'every message once, in order, live ones after the replay');
      assert.deepEqual(events, ['recovered']);
      assert.equal(server.manager.getSession('room-r').clientCount, 2, 'the half-dead connection was replaced');
      assert.deepEqual(consoleErrors, []);
    });

    it('recovers its channels too, rejoining each from where it left off', async () => {
      const server = await appServer({ config: { channels: { history: { size: 1000, ttlMs: 600_000 } } } });
      cleanups.push(() => server.close());
      const proxy = await networkProxy(server.port);
      cleanups.push(() => proxy.close());
      const opened = await recoveringPage(server, `ws://127.0.0.1:${proxy.port}/awareness`, 'note');
      await opened.evaluate(() => window.relay.joinChannel('desk'));
      const patient = { timeout: 20_000 };
      const publish = (from, to) => {
        for (let n = from; n <= to; n++) server.manager.broadcastToChannel('desk', { type: 'note', n });
      };
      publish(1, 20);
      await opened.waitForFunction(() => window.got.length === 20, null, patient);
      proxy.down();
      await opened.waitForFunction(() => window.relay.status === 'reconnecting', null, patient);
      publish(21, 60);
      proxy.up();
      await opened.waitForFunction(() => window.got.length >= 60, null, patient);
      publish(61, 65);
      await opened.waitForFunction(() => window.got.length >= 65, null, patient);
      const { got, events } = await opened.evaluate(() => ({ got: window.got, events: window.events }));
      assert.deepEqual(got, Array.from({ length: 65 }, (_, i) => i + 1));
      assert.deepEqual(events, ['recovered desk']);
      assert.deepEqual(consoleErrors, []);
    });

    it('says resync, and replays nothing, when the server no longer holds what was missed', async () => {
      const server = await appServer({
        config: { history: { size: 5, ttlMs: 600_000 } },
        prepare: (manager) => manager.createSession({ sessionId: 'room-s' }),
      });
      cleanups.push(() => server.close());
      const proxy = await networkProxy(server.port);
      cleanups.push(() => proxy.close());
      const opened = await recoveringPage(server, `ws://127.0.0.1:${proxy.port}/session/room-s`, 'tick');
      const patient = { timeout: 20_000 };
      server.manager.publish('room-s', { type: 'tick', n: 1 });
      await opened.waitForFunction(() => window.got.length === 1, null, patient);
      proxy.down();
      await opened.waitForFunction(() => window.relay.status === 'reconnecting', null, patient);
      for (let n = 2; n <= 20; n++) server.manager.publish('room-s', { type: 'tick', n });
      proxy.up();
      await opened.waitForFunction(() => window.events.length === 1, null, patient);
      server.manager.publish('room-s', { type: 'tick', n: 21 });
      await opened.waitForFunction(() => window.got.length === 2, null, patient);
      assert.deepEqual(await opened.evaluate(() => ({ got: window.got, events: window.events })), { got: [1, 21], events: ['resync at 20'] });
      assert.deepEqual(consoleErrors, []);
    });

    it('answers token_expiring with a fresh token from getToken and outlives the first, where a connection that does not refresh is closed 1008 "Token expired"', async () => {
      const secret = 'a secret of at least thirty-two bytes';
      const { server, disconnects, url } = await tokenServer(secret, 'room-t');
      const { TestClient } = require('./helpers');
      const patient = { timeout: 20_000 };
      // The first token lives a few seconds (exp is in seconds), well within the refresh
      // window (30 s): the server warns at once. The next lives ten minutes.
      const issued = [];
      const opened = await tokenPage(server, url, () => {
        const exp = now() + (issued.length === 0 ? 6 : 600);
        issued.push({ exp, token: sign({ sub: 'alice', exp }, { key: secret }) });
        return issued.at(-1).token;
      });
      // Another connection on the very same token, which never refreshes: the server tick
      // that closes it is the one that would have closed the page's, unrefreshed.
      const unrefreshed = await new TestClient(`${url}?token=${issued[0].token}`).joined();
      const watcher = await new TestClient(`${url}?token=${sign({ sub: 'bob', exp: now() + 600 }, { key: secret })}`).joined();
      cleanups.push(() => watcher.close());

      await opened.waitForFunction(() => window.events.some((e) => e.startsWith('refreshed')), null, patient);
      assert.deepEqual(await unrefreshed.closedWithin(20_000), { code: 1008, reason: 'Token expired' });
      await opened.evaluate(() => window.relay.send({ type: 'after-expiry', from: 'the page' }));
      assert.equal((await watcher.nextOfType('after-expiry', 10_000)).json.from, 'the page', 'the page still relays past its first token');

      const { statuses, events } = await opened.evaluate(() => ({ statuses: window.statuses, events: window.events }));
      assert.deepEqual(events, ['token_expiring', `refreshed ${issued[1].exp * 1000}`], 'the refresh carried the second token');
      assert.deepEqual(statuses, ['open'], 'the page never lost its connection');
      assert.equal(issued.length, 2, 'getToken: once to connect, once for the warning');
      assert.deepEqual(disconnects, [{ code: 1008, reason: 'Token expired' }], 'only the connection that did not refresh ended');

      // getToken may give the token itself rather than a Promise; wrong options are refused.
      const refused = await opened.evaluate(
        async ({ url, token }) => {
          const { RelayClient } = await import('/client/index.js');
          const plain = new RelayClient(url, { getToken: () => token });
          await new Promise((resolve) => plain.onStatusChange((s) => s === 'open' && resolve()));
          plain.close();
          const backwards = { initialDelayMs: 5000, maxDelayMs: 1000 };
          return [{ getToken: 'a token' }, { getToken: () => token, reconnect: backwards }].map((options) => {
            try {
              return new RelayClient(url, options) && 'accepted';
            } catch (err) {
              return `${err.name}: ${err.message}`;
            }
          });
        },
        { url, token: sign({ sub: 'carol', exp: now() + 600 }, { key: secret }) },
      );
      assert.equal(refused[0], 'TypeError: RelayClient options: getToken must be a function that gives a token (a string, or a Promise of one)');
      assert.equal(refused[1], 'TypeError: reconnect.maxDelayMs must be at least reconnect.initialDelayMs', 'the other options are read beside getToken');
      assert.deepEqual(consoleErrors, []);
    });

    it('after a refused refresh and "Token expired", reconnects with a fresh token (a failed getToken counting as an attempt), recovering what was missed and sending what waited', async () => {
      const secret = 'a secret of at least thirty-two bytes';
      const { server, disconnects, url } = await tokenServer(secret, 'room-u');
      const { TestClient } = require('./helpers');
      const patient = { timeout: 20_000 };
      const token = (sub, seconds) => sign({ sub, exp: now() + seconds }, { key: secret });
      let release;
      const released = new Promise((resolve) => (release = resolve));
      let calls = 0;
      // 1: a token of a few seconds; 2 (the warning): another user's, which the server
      // refuses; 3 (the reconnect): the token service is down; 4: held until the test
      // has published and queued, then a token of ten minutes.
      const opened = await tokenPage(server, url, async () => {
        calls += 1;
        if (calls === 1) return token('alice', 6);
        if (calls === 2) return token('mallory', 600);
        if (calls === 3) return { fail: 'the token service is down' };
        await released;
        return token('alice', 600);
      });
      const watcher = await new TestClient(`${url}?token=${token('bob', 600)}`).joined();
      cleanups.push(() => watcher.close());
      server.manager.publish('room-u', { type: 'tick', n: 1 });
      await opened.waitForFunction(() => window.got.length === 1, null, patient);

      await opened.waitForFunction(() => window.relay.status === 'reconnecting', null, patient);
      await eventually(() => assert.equal(calls, 4, 'the failed attempt was retried'), 20_000);
      for (let n = 2; n <= 4; n++) server.manager.publish('room-u', { type: 'tick', n });
      await opened.evaluate(() => window.relay.send({ type: 'queued', while: 'reconnecting' }));
      release();

      await opened.waitForFunction(() => window.relay.status === 'open' && window.got.length >= 4, null, patient);
      assert.equal((await watcher.nextOfType('queued', 10_000)).json.while, 'reconnecting', 'what waited went out');
      const { statuses, events, got } = await opened.evaluate(() => ({ statuses: window.statuses, events: window.events, got: window.got }));
      assert.deepEqual(got, [1, 2, 3, 4], 'what was published while it was away, once and in order');
      assert.deepEqual(events, ['token_expiring', 'error INVALID_TOKEN', 'token_error: getToken failed: the token service is down', 'recovered']);
      assert.deepEqual(statuses, ['open', 'reconnecting', 'open']);
      assert.equal(calls, 4, 'no second refresh after the refusal');
      assert.deepEqual(disconnects, [{ code: 1008, reason: 'Token expired' }]);
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
      // Generous: the suite must pass on a loaded 2-core machine.
      const patient = { timeout: 20000 };
      const demo = await express.start({ port: 0, host: '127.0.0.1' });
      cleanups.push(() => demo.close());
      const home = `http://127.0.0.1:${new URL(demo.url).port}/`;
      const relayOpen = (p) => p.waitForFunction(() => window.switchyardDemo?.relay.status === 'open', null, patient);
      /** Waits for a log line of this kind, from this window, with this text. */
      const logLine = (p, line) =>
        p.waitForFunction(
          ({ kind, who, text }) =>
            [...document.querySelectorAll('#log [data-kind]')].some(
              (l) => l.dataset.kind === kind && l.dataset.who === who && (!text || l.textContent.endsWith(text)),
            ),
          line,
          patient,
        );
      const caseOpen = (p, caseId) => p.waitForFunction((caseId) => document.querySelector('#case-status').textContent === `This window shows ${caseId}.`, caseId, patient);
      const warning = (p) => p.evaluate(() => ({
        state: document.querySelector('#warning').dataset.state,
        text: document.querySelector('#warning-text').textContent,
        detail: document.querySelector('#warning-detail').textContent,
      }));

      // A newcomer opens / : the page creates a session and offers its link.
      const first = await page(home);
      const share = first.locator('#share-link');
      await share.waitFor({ state: 'visible', ...patient });
      await relayOpen(first);
      const { sessionId, name: firstName } = await first.evaluate(() => ({ sessionId: window.switchyardDemo.sessionId, name: window.switchyardDemo.name }));
      assert.equal(await share.getAttribute('target'), '_blank');
      const href = await share.getAttribute('href');
      assert.equal(href, `${home}?session=${sessionId}`);
      assert.equal(await first.inputValue('#share-url'), href);
      await first.click('#copy');
      await first.waitForFunction(() => /Copied|Ctrl\+C/.test(document.querySelector('#copied').textContent), null, patient);

      // The second window comes from that link: one session, one name per window.
      const second = await page(href);
      await relayOpen(second);
      const secondName = await second.evaluate(() => window.switchyardDemo.name);
      assert.match(firstName, /^Window-\w{4}$/);
      assert.match(secondName, /^Window-\w{4}$/);
      assert.notEqual(firstName, secondName);
      assert.equal(await first.textContent('#me'), firstName);
      assert.equal(await second.textContent('#me'), secondName);
      await logLine(first, { kind: 'join', who: secondName });
      await logLine(second, { kind: 'join', who: firstName });
      await first.waitForFunction((n) => document.querySelector('#peer-status').textContent === `${n} is in this session with you.`, secondName, patient);

      // Messages carry the name the join line showed, both ways.
      await first.fill('#text', 'hello from the first window');
      await first.press('#text', 'Enter');
      await logLine(second, { kind: 'chat', who: firstName, text: ': hello from the first window' });
      await second.fill('#text', 'hello back');
      await second.click('#send-form button');
      await logLine(first, { kind: 'chat', who: secondName, text: ': hello back' });
      for (const p of [first, second]) assert.doesNotMatch(await p.textContent('#log'), /\bc_\w+/, 'no connectionId stands in for a name');

      // Case awareness: one person per demo session, the same explanation in both windows.
      const userId = `demo-user-${sessionId.slice(0, 6)}`;
      for (const p of [first, second]) assert.equal(await p.textContent('#user'), userId);
      await first.click('[data-case="CASE-001"]');
      await caseOpen(first, 'CASE-001');
      await second.click('[data-case="CASE-002"]');
      await caseOpen(second, 'CASE-002');
      const explained = `Warning: ${userId} has 2 cases open at once: CASE-001 in ${firstName}, CASE-002 in ${secondName}. Close one, or open the same case in every window.`;
      for (const p of [first, second]) {
        await p.waitForFunction((text) => document.querySelector('#warning-text').textContent === text, explained, patient);
      }
      // The window that the switch contradicts also says which window switched.
      await first.waitForFunction(
        (text) => document.querySelector('#warning-detail').textContent === text,
        `Another window, ${secondName}, switched to CASE-002 while this one shows CASE-001.`,
        patient,
      );
      assert.deepEqual(await warning(second), { state: 'warning', text: explained, detail: '' });

      // A window of another demo session is another person: no warning for it, nor from it.
      const other = await page(home);
      await relayOpen(other);
      const otherUser = await other.textContent('#user');
      assert.notEqual(otherUser, userId);
      await other.click('[data-case="CASE-003"]');
      await caseOpen(other, 'CASE-003');
      // A second registration answered means any warning the first caused has arrived.
      await other.click('[data-case="CASE-001"]');
      await caseOpen(other, 'CASE-001');
      assert.equal((await warning(other)).state, 'none');
      for (const p of [first, second]) assert.equal((await warning(p)).text, explained);

      // Screenshots of both windows (and the other session's), clearly more than a blank page.
      const dir = path.join(__dirname, '..', 'target', 'screenshots');
      fs.mkdirSync(dir, { recursive: true });
      const blank = await (await page('about:blank')).screenshot();
      for (const [file, p] of [['demo-first-window.png', first], ['demo-second-window.png', second], ['demo-other-session.png', other]]) {
        const shot = await p.screenshot({ path: path.join(dir, file), fullPage: true });
        assert.ok(shot.length > 10 * blank.length, `${file}: ${shot.length} bytes, a blank page takes ${blank.length}`);
      }

      // Back to one case: both windows say so alike; then the second window leaves, by its name.
      await second.click('[data-case="CASE-001"]');
      for (const p of [first, second]) {
        await p.waitForFunction(() => document.querySelector('#warning').dataset.state === 'cleared', null, patient);
        assert.deepEqual(await warning(p), { state: 'cleared', text: 'One case open (CASE-001): no warning.', detail: '' });
      }
      await second.close();
      await logLine(first, { kind: 'leave', who: secondName });
      assert.deepEqual(consoleErrors, []);
    });

    describe('HTTP fallback (SSE)', () => {
      // What Chromium logs, as errors, for the upgrades the proxy refuses and the streams
      // it cuts: expected here, and nothing else.
      const expectedNoise = [
        /WebSocket connection to '.*' failed: Error during WebSocket handshake: Unexpected response code: 400/,
        /Failed to load resource: net::ERR_(INCOMPLETE_CHUNKED_ENCODING|CONNECTION_RESET|EMPTY_RESPONSE|CONNECTION_CLOSED)/,
      ];
      const unexpectedErrors = () => consoleErrors.filter((line) => !expectedNoise.some((noise) => noise.test(line)));
      const patient = { timeout: 20_000 };

      /**
       * An HTTP proxy in front of the binary at `port`, as a corporate proxy would be: it
       * answers 400 to every WebSocket upgrade until `letUpgradesThrough()`, and pipes
       * every other request both ways as it streams. It serves the pages and the client
       * package itself (at / and /client/), so that a page and its event stream share an
       * origin (and its icon). `cutStreamAfter(n)` cuts the next event stream once n more events (with
       * data) went through: the browser's side of it is destroyed, the binary's is left
       * open and silent, as after a network loss. `hold()` keeps new requests and
       * upgrades waiting until `release()`. `log` lists each upgrade and event stream
       * asked for, in order; `cutAt` is when a stream was cut.
       */
      async function fallbackProxy(port) {
        const net = require('node:net');
        const { StringDecoder } = require('node:string_decoder');
        const proxy = { log: [], cutAt: null, upgrades: false, held: null, budget: null };
        const sockets = new Set();
        const track = (socket) => {
          sockets.add(socket);
          socket.on('close', () => sockets.delete(socket));
          socket.on('error', () => {});
        };
        const later = (go) => (proxy.held ? proxy.held.push(go) : go());

        function forward(req, res) {
          const upstream = http.request({ host: '127.0.0.1', port, method: req.method, path: req.url, headers: req.headers, agent: false });
          let cut = false;
          upstream.on('response', (answer) => {
            track(answer.socket);
            res.writeHead(answer.statusCode, answer.headers);
            res.flushHeaders();
            if (!/^text\/event-stream/.test(answer.headers['content-type'] ?? '')) return answer.pipe(res);
            // An event stream goes on an event at a time, so that it can be cut between two.
            const decoder = new StringDecoder('utf8');
            let text = '';
            answer.on('data', (chunk) => {
              text += decoder.write(chunk);
              for (let end = /\r?\n\r?\n/.exec(text); end && !cut; end = /\r?\n\r?\n/.exec(text)) {
                const event = text.slice(0, end.index + end[0].length);
                text = text.slice(event.length);
                res.write(event);
                if (proxy.budget !== null && /^data:/m.test(event) && --proxy.budget === 0) {
                  proxy.budget = null;
                  proxy.cutAt = Date.now();
                  cut = true;
                  answer.pause();
                  res.socket.destroy();
                }
              }
            });
            answer.on('end', () => cut || res.end());
          });
          upstream.on('error', () => res.destroy());
          res.on('close', () => cut || upstream.destroy());
          req.pipe(upstream);
        }

        const server = http.createServer((req, res) => {
          const { pathname } = new URL(req.url, 'http://localhost');
          if (pathname.startsWith('/client/')) return serveClient(pathname, res);
          if (pathname === '/') return res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>switchyard test</title>');
          // The page's icon, asked for by Chromium: not the relay's to answer.
          if (pathname === '/favicon.ico') return res.writeHead(204).end();
          if (pathname.endsWith('/events')) proxy.log.push('events');
          later(() => forward(req, res));
        });
        server.on('connection', track);
        server.on('upgrade', (req, socket, head) => {
          proxy.log.push('upgrade');
          later(() => {
            if (socket.destroyed) return;
            if (!proxy.upgrades) {
              const body = 'This proxy refuses WebSocket upgrades';
              return socket.end(`HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`);
            }
            const upstream = net.connect(port, '127.0.0.1', () => {
              const lines = [`${req.method} ${req.url} HTTP/${req.httpVersion}`];
              for (let i = 0; i < req.rawHeaders.length; i += 2) lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
              upstream.write(`${lines.join('\r\n')}\r\n\r\n`);
              upstream.write(head);
              socket.pipe(upstream);
              upstream.pipe(socket);
            });
            track(upstream);
            upstream.on('close', () => socket.destroy());
            socket.on('close', () => upstream.destroy());
          });
        });
        await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
        Object.assign(proxy, {
          url: `http://127.0.0.1:${server.address().port}`,
          ws: `ws://127.0.0.1:${server.address().port}`,
          letUpgradesThrough: () => (proxy.upgrades = true),
          cutStreamAfter: (events) => (proxy.budget = events),
          hold: () => (proxy.held ??= []),
          release() {
            const held = proxy.held ?? [];
            proxy.held = null;
            for (const go of held) go();
          },
          async close() {
            proxy.held = null;
            for (const socket of sockets) socket.destroy();
            server.closeAllConnections();
            await new Promise((resolve) => server.close(resolve));
          },
        });
        cleanups.push(() => proxy.close());
        return proxy;
      }

      /** A backend for the binary's `--proxy-request-url`: doubles `n`, and says which connection asked. */
      async function requestBackend() {
        const backend = http.createServer((req, res) => {
          let body = '';
          req.on('data', (chunk) => (body += chunk));
          req.on('end', () => {
            const call = JSON.parse(body);
            res.writeHead(200, { 'content-type': 'application/json' });
            res.end(JSON.stringify({ result: { payload: { doubled: call.payload.n * 2, connectionId: call.connectionId } } }));
          });
        });
        await new Promise((resolve) => backend.listen(0, '127.0.0.1', resolve));
        cleanups.push(() => new Promise((resolve) => backend.close(resolve)));
        return `http://127.0.0.1:${backend.address().port}/request`;
      }

      /** The binary, with a session of 8 members that keeps its last 1000 publications. */
      async function binaryWithSession(args = []) {
        const { startBinary, stopBinaries, postJson } = require('./helpers');
        const server = await startBinary({ args });
        cleanups.push(() => stopBinaries());
        const created = await postJson(`${server.base}/v1/sessions`, { maxClients: 8, history: { size: 1000, ttlMs: 600_000 } });
        assert.equal(created.status, 201, JSON.stringify(created.body));
        return { server, sessionId: created.body.sessionId };
      }

      /**
       * A page whose RelayClient connects to `url` with `options` (`recover`, quick
       * reconnects...): window.statuses holds `<status> <transport>` at each change,
       * window.got the `n` of each `tick`, window.events `recovered`/`resync`, window.me
       * its connection id. Resolves once it is open, with how long that took (ms).
       */
      async function clientPage(origin, url, options, before = []) {
        const opened = await page(`${origin}/`);
        const took = await opened.evaluate(
          async ({ url, options, before }) => {
            const { RelayClient } = await import('/client/index.js');
            Object.assign(window, { statuses: [], got: [], events: [], me: null });
            const started = performance.now();
            window.relay = new RelayClient(url, options);
            window.relay.onStatusChange((status, transport) => window.statuses.push(`${status} ${transport}`));
            window.relay.on('client_connected', (welcome) => welcome.clientId === 'relay-server' && (window.me = welcome.connectionId));
            window.relay.on('tick', (message) => window.got.push(message.n));
            window.relay.on('recovered', () => window.events.push('recovered'));
            window.relay.on('resync', () => window.events.push('resync'));
            // Sent before it is open: they wait in the queue, whichever transport opens.
            for (const message of before) window.relay.send(message);
            await new Promise((resolve, reject) => {
              const fail = () => reject(new Error(`the client did not open: ${window.statuses.join(', ') || 'connecting'}`));
              const timer = setTimeout(fail, 20_000);
              window.relay.onStatusChange((status) => {
                if (status === 'open') resolve(clearTimeout(timer));
                if (status === 'closed') fail(clearTimeout(timer));
              });
            });
            return performance.now() - started;
          },
          { url, options, before },
        );
        return { opened, took };
      }

      const ticks = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => ({ type: 'tick', n: from + i }));

      it('falls back to the event stream when a proxy refuses the upgrade: relays both ways beside a WebSocket member, answers requests, and sends what was queued', async () => {
        const { server, sessionId } = await binaryWithSession(['--proxy-request-url', await requestBackend()]);
        const proxy = await fallbackProxy(server.port);
        // A WebSocket member first, straight to the binary, so it hears what the other sends.
        const { opened: direct } = await clientPage(proxy.url, `${server.ws}/session/${sessionId}`, { transports: ['websocket'] });
        const fallbackAfterMs = 3000;
        const { opened: sse, took } = await clientPage(proxy.url, `${proxy.ws}/session/${sessionId}`, { fallbackAfterMs }, [
          { type: 'tick', n: 'queued 1' },
          { type: 'tick', n: 'queued 2' },
        ]);
        console.log(`[sse-fallback] a refused upgrade to an open event stream: ${Math.round(took)} ms`);
        assert.ok(took < fallbackAfterMs, `fell back in ${took} ms, within fallbackAfterMs`);
        assert.deepEqual(await sse.evaluate(() => ({ transport: window.relay.transport, statuses: window.statuses })), { transport: 'sse', statuses: ['open sse'] });
        assert.deepEqual(proxy.log, ['upgrade', 'events'], 'a WebSocket first, then the event stream');
        assert.equal(await direct.evaluate(() => window.relay.transport), 'websocket');

        // What waited in the queue arrives first, then both ways, in order.
        await direct.waitForFunction(() => window.got.length === 2, null, patient);
        await direct.evaluate((messages) => messages.forEach((m) => window.relay.send(m)), ticks(1, 50));
        await sse.evaluate((messages) => messages.forEach((m) => window.relay.send(m)), ticks(101, 150));
        await sse.waitForFunction(() => window.got.length === 50, null, patient);
        await direct.waitForFunction(() => window.got.length === 52, null, patient);
        assert.deepEqual(await sse.evaluate(() => window.got), ticks(1, 50).map((t) => t.n));
        assert.deepEqual(await direct.evaluate(() => window.got), ['queued 1', 'queued 2', ...ticks(101, 150).map((t) => t.n)]);

        // A request goes out in a POST; its response comes down the stream.
        const { answer, me } = await sse.evaluate(async () => ({ answer: await window.relay.request({ n: 21 }, { timeoutMs: 10_000 }), me: window.me }));
        assert.match(me, /^c_/);
        assert.deepEqual(answer, { doubled: 42, connectionId: me }, 'answered to the event stream member');

        await sse.evaluate(() => window.relay.close());
        assert.deepEqual(await sse.evaluate(() => ({ status: window.relay.status, transport: window.relay.transport })), { status: 'closed', transport: null });
        assert.deepEqual(unexpectedErrors(), []);
      });

      it('recovers what was published while its event stream was cut, once and in order (recover: true), and reconnects over WebSocket once the proxy lets it', async () => {
        const { server, sessionId } = await binaryWithSession();
        const proxy = await fallbackProxy(server.port);
        const { TestClient, fetchJson, eventually } = require('./helpers');
        const sender = new TestClient(`${server.ws}/session/${sessionId}`);
        cleanups.push(() => sender.close());
        await sender.nextOfType('client_connected');
        const send = (from, to) => ticks(from, to).forEach((tick) => sender.send(JSON.stringify(tick)));
        const offset = async () => (await fetchJson(`${server.base}/v1/sessions/${sessionId}/history?limit=1`)).body.offset;

        // A long fallbackAfterMs: the reconnect's WebSocket, held below, is not given up.
        const options = { recover: true, fallbackAfterMs: 15_000, reconnect: { initialDelayMs: 200, maxDelayMs: 1000, maxAttempts: Infinity } };
        const { opened } = await clientPage(proxy.url, `${proxy.ws}/session/${sessionId}`, options);
        assert.equal(await opened.evaluate(() => window.relay.transport), 'sse');
        send(1, 20);
        await opened.waitForFunction(() => window.got.length === 20, null, patient);

        // The stream is cut after 5 more events; the reconnect waits while more are published.
        proxy.hold();
        proxy.cutStreamAfter(5);
        const attempts = proxy.log.length;
        send(21, 30);
        await opened.waitForFunction(() => window.relay.status === 'reconnecting', null, patient);
        const noticed = Date.now() - proxy.cutAt;
        send(31, 60);
        await eventually(async () => assert.equal(await offset(), 60), 10_000);
        proxy.letUpgradesThrough();
        const released = Date.now();
        proxy.release();

        await opened.waitForFunction(() => window.got.length >= 60, null, patient);
        const caughtUp = Date.now() - released;
        console.log(`[sse-fallback] a cut event stream: noticed in ${noticed} ms; once let through, the missed 30+ messages were in after ${caughtUp} ms`);
        send(61, 65);
        await opened.waitForFunction(() => window.got.length >= 65, null, patient);
        const { got, events, statuses, transport } = await opened.evaluate(() => ({ got: window.got, events: window.events, statuses: window.statuses, transport: window.relay.transport }));
        assert.deepEqual(got, ticks(1, 65).map((t) => t.n), 'every message once, in order, live ones after the replay');
        assert.deepEqual(events, ['recovered']);
        assert.deepEqual(statuses, ['open sse', 'reconnecting null', 'open websocket']);
        assert.equal(transport, 'websocket');
        assert.equal(proxy.log[attempts], 'upgrade', 'the reconnect tried a WebSocket first');
        assert.deepEqual(unexpectedErrors(), []);
      });

      it('measures the fallback and the recovery of a cut stream (logged, not asserted)', async () => {
        const { server, sessionId } = await binaryWithSession();
        const proxy = await fallbackProxy(server.port);
        const options = { recover: true, reconnect: { initialDelayMs: 100, maxDelayMs: 1000, maxAttempts: Infinity } };
        const { opened, took } = await clientPage(proxy.url, `${proxy.ws}/session/${sessionId}`, options);
        const publish = (n) => fetch(`${server.base}/v1/sessions/${sessionId}/messages`, { method: 'POST', body: JSON.stringify({ type: 'tick', n }) });
        await publish(1);
        await opened.waitForFunction(() => window.got.length === 1, null, patient);
        // Cut after the next event; each reconnect is refused its upgrade and falls back again.
        proxy.cutStreamAfter(1);
        await publish(2);
        await opened.waitForFunction(() => window.relay.status === 'reconnecting', null, patient);
        await publish(3);
        await opened.waitForFunction(() => window.relay.status === 'open' && window.got.length >= 3, null, patient);
        const recovered = Date.now() - proxy.cutAt;
        const { got, transport } = await opened.evaluate(() => ({ got: window.got, transport: window.relay.transport }));
        console.log(`[sse-fallback] fallback to an open event stream: ${Math.round(took)} ms; a cut stream recovered over ${transport} in ${recovered} ms (reconnect delay 50-100 ms included), got ${JSON.stringify(got)}`);
        assert.deepEqual(unexpectedErrors(), []);
      });
    });
  });

  describe('TLS', () => {
    it('relays over wss:// with the binary serving a certificate of a CA the browser trusts; a browser that does not trust it never opens', async () => {
      const os = require('node:os');
      const { startBinary, stopBinaries, certificateAuthority, postOverTls, TestClient } = require('./helpers');
      const patient = { timeout: 20_000 };
      const authority = certificateAuthority(fs.mkdtempSync(path.join(os.tmpdir(), 'switchyard-browser-tls-')));
      const pair = authority.issue();
      const server = await startBinary({ args: ['--tls-cert', pair.cert, '--tls-key', pair.key], ca: authority.ca });
      cleanups.push(() => stopBinaries());
      const pages = await appServer();
      cleanups.push(() => pages.close());
      // The test's CA is trusted by its key: Chromium takes no CA file, but it honours a
      // chain (the binary serves the leaf, then the CA) holding a key it is told to trust.
      const trusting = await chromium.launch({
        executablePath: CHROMIUM,
        args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run', `--ignore-certificate-errors-spki-list=${authority.caSpki}`],
      });
      cleanups.push(() => trusting.close());
      const created = await postOverTls(`${server.base}/v1/sessions`, { 'content-type': 'application/json' }, JSON.stringify({ sessionId: 'tls' }), authority.ca);
      assert.equal(created.status, 201);
      const url = `wss://127.0.0.1:${server.port}/session/tls`;
      const opened = await trusting.newPage();
      opened.on('console', (message) => message.type() === 'error' && consoleErrors.push(`trusting: ${message.text()}`));
      opened.on('pageerror', (error) => consoleErrors.push(`trusting: ${error.message}`));
      await opened.goto(pages.url);
      const other = new TestClient(url, { ca: authority.ca });
      await other.opened;
      cleanups.push(() => other.close());
      await opened.evaluate(async (url) => {
        const { RelayClient } = await import('/client/index.js');
        window.got = [];
        window.relay = new RelayClient(url, { reconnect: { maxAttempts: 0 } });
        window.relay.on('greeting', (message) => window.got.push(message.text));
        await new Promise((resolve) => window.relay.onStatusChange((status) => status === 'open' && resolve()));
      }, url);
      await opened.evaluate(() => window.relay.send({ type: 'greeting', text: 'from the page over TLS' }));
      assert.equal((await other.nextOfType('greeting')).json.text, 'from the page over TLS');
      other.send(JSON.stringify({ type: 'greeting', text: 'to the page over TLS' }));
      await opened.waitForFunction(() => window.got.includes('to the page over TLS'), null, patient);

      const untrusting = await page(pages.url);
      const outcome = await untrusting.evaluate(
        (url) =>
          new Promise((resolve) => {
            const socket = new WebSocket(url);
            socket.onopen = () => resolve('opened');
            socket.onclose = (event) => resolve(`closed ${event.code}`);
          }),
        url,
      );
      assert.equal(outcome, 'closed 1006');
      // The one error expected: the untrusting page's refused connection.
      const expected = (error) => error.startsWith(pages.url) && error.includes(`WebSocket connection to '${url}' failed`);
      assert.deepEqual(consoleErrors.filter((error) => !expected(error)), []);
    });
  });

  describe('the admin view', () => {
    /**
     * Dark pixels in a screenshot, counted by decoding it in the page: text and figures
     * drawn, not a blank or an error page.
     */
    async function inkIn(shot, onPage) {
      return onPage.evaluate(async (base64) => {
        const image = new Image();
        image.src = `data:image/png;base64,${base64}`;
        await image.decode();
        const canvas = Object.assign(document.createElement('canvas'), { width: image.width, height: image.height });
        const context = canvas.getContext('2d');
        context.drawImage(image, 0, 0);
        const { data } = context.getImageData(0, 0, image.width, image.height);
        let dark = 0;
        for (let i = 0; i < data.length; i += 4) if (data[i] + data[i + 1] + data[i + 2] < 300) dark++;
        return dark;
      }, shot.toString('base64'));
    }

    const patient = { timeout: 20_000 };
    const tile = (p, id) => p.textContent(`#${id}`);

    /** Waits until the page shows these tile values, then saves and checks a screenshot. */
    async function showsLive(p, expected, file) {
      await p.waitForFunction((want) => Object.entries(want).every(([id, text]) => document.getElementById(id).textContent === text), expected, patient);
      // Rates need two polls: wait for the second, which fills them in.
      await p.waitForFunction(() => document.getElementById('received-rate').textContent !== '–', null, patient);
      assert.match(await tile(p, 'status'), /^Live, updated/);
      assert.notEqual(await tile(p, 'latency'), '– / –', 'relay latency is measured');
      const dir = path.join(__dirname, '..', 'target', 'screenshots');
      fs.mkdirSync(dir, { recursive: true });
      const shot = await p.screenshot({ path: path.join(dir, file), fullPage: true });
      const ink = await inkIn(shot, p);
      assert.ok(ink > 5000, `${file} shows figures and text (${ink} dark pixels)`);
    }

    it('in the Express example: live sessions, connections by transport, channels, rates and latency', async () => {
      const demo = await express.start({ port: 0, host: '127.0.0.1' });
      cleanups.push(() => demo.close());
      const base = `http://127.0.0.1:${new URL(demo.url).port}`;
      const created = await (await fetch(`${base}/api/sessions`, { method: 'POST' })).json();
      const { TestClient } = require('./helpers');
      const a = new TestClient(created.wsUrl.replace('localhost', '127.0.0.1'));
      const b = new TestClient(created.wsUrl.replace('localhost', '127.0.0.1'));
      cleanups.push(() => Promise.all([a.close(), b.close()]));
      await Promise.all([a.nextOfType('client_connected'), b.nextOfType('client_connected')]);
      const watcher = new TestClient(`ws://127.0.0.1:${new URL(demo.url).port}/awareness`);
      cleanups.push(() => watcher.close());
      await watcher.opened;
      watcher.send('{"type":"JOIN_CHANNEL","channel":"news"}');
      await watcher.nextOfType('CHANNEL_JOINED');
      await oneByOne(a, b);

      const admin = await page(`${base}/admin`);
      assert.equal(new URL(admin.url()).pathname, '/admin/', 'redirected to the directory the page polls from');
      await showsLive(admin, { sessions: '1', connections: '3', channels: '1', users: '0' }, 'admin-express.png');
      assert.equal(await tile(admin, 'by-transport'), '(bridge 3)');
      // Traffic while the page watches: the rates it computes between polls move.
      const traffic = setInterval(() => a.send('{"type":"chat"}'), 20);
      cleanups.push(() => clearInterval(traffic));
      await admin.waitForFunction(() => Number(document.getElementById('received-rate').textContent) > 0, null, patient);
      clearInterval(traffic);
      assert.deepEqual(await admin.$$eval('#channel-list tr', (rows) => rows.map((r) => r.textContent)), ['news1']);
      assert.deepEqual(consoleErrors, []);
    });

    it('in the switchyard binary, behind --admin-token: asks for the token, then shows the relay', async () => {
      const { startBinary, stopBinaries } = require('./helpers');
      const server = await startBinary({ env: { SWITCHYARD_ADMIN_TOKEN: 'adm1n' } });
      cleanups.push(() => stopBinaries());
      const created = await (await fetch(`${server.base}/v1/sessions`, { method: 'POST', headers: { authorization: 'Bearer adm1n' } })).json();
      const { TestClient } = require('./helpers');
      const a = new TestClient(`${server.ws}/session/${created.sessionId}`);
      const b = new TestClient(`${server.ws}/session/${created.sessionId}`);
      cleanups.push(() => Promise.all([a.close(), b.close()]));
      await Promise.all([a.nextOfType('client_connected'), b.nextOfType('client_connected')]);
      await oneByOne(a, b);

      const admin = await page(`${server.base}/admin/`);
      await admin.waitForSelector('#token-form.shown', patient);
      assert.equal(await tile(admin, 'status'), 'Needs the admin token');
      assert.equal(await tile(admin, 'sessions'), '–', 'nothing shown without the token');
      await admin.fill('#token', 'adm1n');
      await admin.click('#token-form button');
      await showsLive(admin, { sessions: '1', connections: '2' }, 'admin-binary.png');
      assert.equal(await tile(admin, 'by-transport'), '(native 2)');
      const refused = `${server.base}/admin/: Failed to load resource: the server responded with a status of 401 (Unauthorized)`;
      assert.deepEqual(consoleErrors.filter((e) => e !== refused), [], 'no errors but the first poll, refused without the token');
    });
  });
}
