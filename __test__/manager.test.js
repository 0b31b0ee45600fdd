// __test__/manager.test.js: RelaySessionManager's API, limits and timers, over real sockets.
const { describe, it, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFile } = require('node:child_process');
const path = require('node:path');
const { RelaySessionManager } = require('..');
const express = require('../examples/express/server.js');
const { TestClient, joinedClient, sleep, eventually, INVALID_MESSAGE } = require('./helpers');

/** The WebAssembly build refuses the redis option whatever it holds: clusters need a native package. */
const hasClusters = require('../binding.js').__napiBindingTarget !== 'wasm32-wasi';

const servers = [];
async function relayServer(config) {
  const server = await express.start({ port: 0, host: '127.0.0.1', config });
  servers.push(server);
  const wsBase = `ws://${new URL(server.url).host}/session/`;
  return { ...server, wsUrl: (id) => wsBase + id };
}
after(() => Promise.all(servers.map((s) => s.close())));

describe('configuration', () => {
  it('has the documented defaults', () => {
    const { config } = new RelaySessionManager().getStats();
    assert.deepEqual(config, {
      sessionTimeoutMs: 1800000,
      maxSessions: 100000,
      maxClientsPerSession: 2,
      pingIntervalMs: 30000,
      heartbeatTimeoutMs: 60000,
      cleanupIntervalMs: 60000,
      maxMessageBytes: 1048576,
      maxQueuedBytes: 1048576,
      slowConsumer: 'close',
      channels: {},
      maxChannelsPerConnection: 256,
      requestTimeoutMs: 30000,
      maxRequestsPerConnection: 256,
      hookTimeoutMs: 5000,
      ack: 'requested',
      enableRoleManagement: true,
      defaultConflictResolution: 'first-come-first-served',
      controlRequestTimeoutMs: 5000,
      maxConnectionsPerUser: 10,
      maxWindowsPerUser: 64,
      rateLimit: null,
      connectionsPerMinutePerIp: null,
      auth: null,
      nativeCompression: null,
      nativeThreads: null,
      hooks: { joinChannel: false, publish: false },
      webhooks: null,
      proxy: null,
      history: null,
      historyMaxBytes: 67108864,
    });
  });

  it('throws a TypeError naming a bad option', () => {
    const cases = [
      [{ sessionTimeoutMs: -1 }, /sessionTimeoutMs/],
      [{ maxClientsPerSession: 0 }, /maxClientsPerSession/],
      [{ pingIntervalMs: '30000' }, /pingIntervalMs/],
      [{ heartbeatTimeoutMs: NaN }, /heartbeatTimeoutMs/],
      [{ cleanupIntervalMs: Infinity }, /cleanupIntervalMs/],
      [{ maxMessageBytes: 1.5 }, /maxMessageBytes/],
      [{ slowConsumer: 'wait' }, /slowConsumer/],
      [{ ack: 'sometimes' }, /ack must be one of "requested" or "always" or "never"/],
      [{ enableRoleManagement: 'yes' }, /enableRoleManagement must be true or false/],
      [{ defaultConflictResolution: 'vote' }, /defaultConflictResolution must be one of "first-come-first-served"/],
      [{ conflictResolution: 'deny-both' }, /unknown option "conflictResolution"/],
      [{ requestTimeoutMs: 0 }, /requestTimeoutMs/],
      [{ channels: { allow: 'chat:*' } }, /allow must be an array of strings/],
      [{ channels: { allow: ['bad pattern'] } }, /channels\.allow pattern "bad pattern"/],
      [{ channels: { deny: [] } }, /unknown option "deny" in channels/],
      [{ sessionTimeout: 1000 }, /unknown option "sessionTimeout"/],
      [{ maxChannelsPerConnection: 0 }, /maxChannelsPerConnection must be a whole number from 1/],
      [{ maxWindowsPerUser: 2.5 }, /maxWindowsPerUser/],
      ...(hasClusters
        ? [
            [{ redis: { url: 'redis://127.0.0.1:1', timeoutMs: 0 } }, /timeoutMs must be a whole number from 1/],
            [{ redis: { url: 'redis://127.0.0.1:1', maxQueued: -1 } }, /maxQueued must be a whole number from 1/],
            [{ redis: {} }, /redis needs a url, such as .* or a cluster's nodes/],
            [{ redis: { url: 'redis://127.0.0.1:1', cluster: ['redis://127.0.0.1:2'] } }, /redis takes a url or a cluster, not both/],
            [{ redis: { cluster: 'redis://127.0.0.1:2' } }, /cluster must be an array of strings/],
            [{ redis: { url: 'redis+cluster://' } }, /name a Redis, such as redis:\/\/127.0.0.1:6379, or a cluster's nodes/],
          ]
        : [[{ redis: { url: 'redis://127.0.0.1:1' } }, /not available in the WebAssembly build/]]),
      ['fast', /config/],
    ];
    for (const [config, message] of cases) {
      assert.throws(() => new RelaySessionManager(config), (err) => err instanceof TypeError && message.test(err.message), JSON.stringify(config));
    }
  });

  it('accepts a partial config and undefined values', () => {
    const manager = new RelaySessionManager({ maxClientsPerSession: 3, pingIntervalMs: undefined });
    assert.equal(manager.getStats().config.maxClientsPerSession, 3);
    assert.equal(manager.getStats().config.pingIntervalMs, 30000);
  });
});

describe('sessions', () => {
  it('creates sessions with Dates, metadata of any JSON shape, and custom ids', () => {
    const manager = new RelaySessionManager({ sessionTimeoutMs: 60000 });
    const before = Date.now();
    const session = manager.createSession({ metadata: { tutorial: 'intro', tags: ['a', 1, null] } });
    assert.ok(session.createdAt instanceof Date && session.expiresAt instanceof Date && session.lastActivity instanceof Date);
    assert.ok(session.createdAt.getTime() >= before && session.createdAt.getTime() <= Date.now());
    assert.equal(session.expiresAt.getTime() - session.createdAt.getTime(), 60000);
    assert.equal(session.clientCount, 0);
    assert.deepEqual(session.metadata, { tutorial: 'intro', tags: ['a', 1, null] });
    assert.equal(JSON.parse(JSON.stringify(session)).expiresAt, session.expiresAt.toISOString());

    for (const metadata of ['text', 42, [1, 2], null, true]) {
      assert.deepEqual(manager.createSession({ metadata }).metadata, metadata);
    }
    assert.equal(manager.createSession().metadata, undefined, 'absent, as in the original');

    const custom = manager.createSession({ sessionId: 'room-42_A', expiresIn: 5000, maxClients: 2 });
    assert.equal(custom.sessionId, 'room-42_A');
    assert.equal(custom.expiresAt.getTime() - custom.createdAt.getTime(), 5000);
    assert.deepEqual(manager.getSession('room-42_A'), custom);
    assert.equal(manager.getSession('nope'), null);
    assert.equal(manager.listSessions().length, 8);
  });

  it('generates distinct unguessable ids', () => {
    const manager = new RelaySessionManager();
    const ids = new Set(Array.from({ length: 500 }, () => manager.createSession().sessionId));
    assert.equal(ids.size, 500);
    for (const id of ids) assert.match(id, /^[A-Za-z0-9]{22}$/);
  });

  it('holds at most maxSessions sessions', () => {
    const manager = new RelaySessionManager({ maxSessions: 3 });
    const made = [1, 2, 3].map(() => manager.createSession());
    assert.throws(() => manager.createSession(), /there are 3 sessions, the most allowed \(maxSessions\)/);
    manager.deleteSession(made[0].sessionId);
    assert.ok(manager.createSession().sessionId, 'room again once one is gone');
  });

  it('refuses bad or taken ids, and arguments of the wrong type, with clear errors', () => {
    const manager = new RelaySessionManager();
    manager.createSession({ sessionId: 'taken' });
    assert.throws(() => manager.createSession({ sessionId: 'taken' }), /session "taken" already exists/);
    assert.throws(() => manager.createSession({ sessionId: 'x'.repeat(129) }), /at most 128 characters/);
    assert.throws(() => manager.createSession({ sessionId: 'a/b' }), /may not contain '\/', '\?', '#', whitespace or control characters/);
    assert.throws(() => manager.createSession({ sessionId: 7 }), TypeError);
    assert.throws(() => manager.createSession({ expiresIn: -5 }), (e) => e instanceof TypeError && /expiresIn/.test(e.message));
    assert.throws(() => manager.createSession({ maxClients: 0 }), (e) => e instanceof TypeError && /maxClients/.test(e.message));
    assert.throws(() => manager.createSession({ metadata: { big: 10n } }), /metadata/);
    assert.throws(() => manager.createSession({ sesionId: 'typo' }), /unknown option "sesionId"/);
    const named = (name) => (e) => e instanceof TypeError && e.message.startsWith(`${name} must be a string`);
    assert.throws(() => manager.getSession(5), named('sessionId'));
    assert.throws(() => manager.deleteSession({}), named('sessionId'));
    assert.throws(() => manager.broadcast(null, {}), named('sessionId'));
    assert.throws(() => manager.broadcastToChannel(1, {}), named('channel'));
    assert.throws(() => manager.sendToUser(undefined, {}), named('userId'));
    assert.equal(manager.getSession('taken').sessionId, 'taken', 'nothing else was harmed');
  });

  it('keeps an empty session until it expires, then closes its clients with 1000', async () => {
    const server = await relayServer({ sessionTimeoutMs: 600, cleanupIntervalMs: 50 });
    const expired = [];
    server.sessionManager.on('sessionExpired', (e) => expired.push(e.sessionId));
    const empty = server.sessionManager.createSession();
    const busy = server.sessionManager.createSession();
    const client = await joinedClient(server.wsUrl(busy.sessionId));
    await sleep(300);
    assert.ok(server.sessionManager.getSession(empty.sessionId), 'an empty session survives cleanups');
    assert.deepEqual(await client.closedWithin(1500), { code: 1000, reason: 'Session expired' });
    await eventually(() => assert.equal(server.sessionManager.getSession(empty.sessionId), null));
    assert.deepEqual(expired.sort(), [empty.sessionId, busy.sessionId].sort());
  });
});

describe('connections', () => {
  it('refuses a socket that is not a WebSocket with a TypeError', () => {
    const manager = new RelaySessionManager();
    const { sessionId } = manager.createSession();
    for (const socket of [null, {}, 'ws', { send() {} }]) {
      assert.throws(() => manager.handleUpgrade(sessionId, socket, {}), TypeError);
    }
  });

  it('returns true when accepted, false when refused', async () => {
    const server = await relayServer();
    const results = [];
    const { WebSocketServer } = require('ws');
    const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    const session = server.sessionManager.createSession({ maxClients: 1 });
    wss.on('connection', (socket, request) => {
      const id = request.url.slice(1);
      results.push(server.sessionManager.handleUpgrade(id, socket, request));
    });
    await new Promise((resolve) => wss.on('listening', resolve));
    const base = `ws://127.0.0.1:${wss.address().port}/`;
    const ok = await joinedClient(base + session.sessionId);
    const full = new TestClient(base + session.sessionId);
    const unknown = new TestClient(base + 'unknown');
    await full.closedWithin();
    await unknown.closedWithin();
    assert.deepEqual(results, [true, false, false]);
    await ok.close();
    wss.close();
  });

  it('reports connections and disconnections with identities', async () => {
    const server = await relayServer();
    const events = [];
    for (const name of ['connection', 'disconnect']) server.sessionManager.on(name, (e) => events.push([name, e]));
    const { WebSocketServer } = require('ws');
    const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    const session = server.sessionManager.createSession();
    wss.on('connection', (socket, request) => {
      server.sessionManager.handleUpgrade(session.sessionId, socket, request, {
        userId: 'user-1',
        organizationId: 'org-1',
        clientId: 'alice-laptop',
        metadata: { plan: 'pro' },
      });
    });
    await new Promise((resolve) => wss.on('listening', resolve));
    const other = await joinedClient(server.wsUrl(session.sessionId));
    const alice = await joinedClient(`ws://127.0.0.1:${wss.address().port}/`);
    const announced = await other.nextOfType('client_connected');
    assert.equal(announced.json.clientId, 'alice-laptop');
    assert.equal(announced.json.connectionId, alice.welcome.connectionId);
    await alice.ws.close(4000, 'done');
    await alice.closed;
    await other.nextOfType('client_disconnected');
    const [[, first], [, second], [name, gone]] = events;
    assert.equal(first.clientId, other.welcome.connectionId);
    assert.deepEqual(second, {
      connectionId: alice.welcome.connectionId,
      sessionId: session.sessionId,
      clientId: 'alice-laptop',
      userId: 'user-1',
      organizationId: 'org-1',
      metadata: { plan: 'pro' },
    });
    assert.equal(name, 'disconnect');
    assert.deepEqual(gone, { ...second, code: 4000, reason: 'done' });
    await other.close();
    wss.close();
  });

  it('answers invalid JSON with INVALID_MESSAGE and keeps the connection', async () => {
    const server = await relayServer();
    const { sessionId } = server.sessionManager.createSession();
    const a = await joinedClient(server.wsUrl(sessionId));
    const b = await joinedClient(server.wsUrl(sessionId));
    await a.nextOfType('client_connected');
    for (const bad of ['{not json', '[1,2]', '{"type":5}', '"just a string"']) {
      a.send(bad);
      const error = (await a.nextOfType('error')).json;
      assert.deepEqual(error.payload, { code: 'INVALID_MESSAGE', message: INVALID_MESSAGE });
      assert.equal(typeof error.timestamp, 'number');
    }
    a.send('{"type":"still here"}');
    assert.equal((await b.next()).json.type, 'still here');
    a.send('{"type":"ping","id":9}');
    assert.equal((await a.nextOfType('pong')).json.id, 9);
    assert.equal(server.sessionManager.getStats().messages.invalid, 4);
    await Promise.all([a.close(), b.close()]);
  });

  it('refuses a message over maxMessageBytes with 1009 before buffering it, and others keep relaying', async () => {
    const server = await relayServer({ maxMessageBytes: 1024, maxClientsPerSession: 3 });
    const { sessionId } = server.sessionManager.createSession();
    const big = await joinedClient(server.wsUrl(sessionId));
    const a = await joinedClient(server.wsUrl(sessionId));
    const b = await joinedClient(server.wsUrl(sessionId));
    big.send(Buffer.alloc(1024, 1));
    assert.equal((await a.next((m) => m.isBinary)).data.length, 1024);
    big.send(Buffer.alloc(1025, 1));
    // The example gives ws maxPayload = maxMessageBytes, so ws refuses it, with no reason.
    assert.deepEqual(await big.closedWithin(), { code: 1009, reason: '' });
    a.send('{"type":"after"}');
    assert.equal((await b.next((m) => m.json?.type === 'after')).text, '{"type":"after"}');
    await Promise.all([a.close(), b.close()]);
  });

  it('pings, and closes a connection that stops answering with 1001', async () => {
    const server = await relayServer({ pingIntervalMs: 100, heartbeatTimeoutMs: 400 });
    const { sessionId } = server.sessionManager.createSession();
    const healthy = await joinedClient(server.wsUrl(sessionId));
    let pings = 0;
    healthy.ws.on('ping', () => pings++);
    const deaf = await joinedClient(server.wsUrl(sessionId), { autoPong: false });
    assert.deepEqual(await deaf.closedWithin(2000), { code: 1001, reason: 'Connection timeout' });
    await sleep(300);
    assert.equal(healthy.closeEvent, undefined, 'a client answering pings stays');
    assert.ok(pings >= 3, `pinged ${pings} times`);
    await healthy.close();
  });

  it('a listener that throws does not break routing; its error is printed', async (t) => {
    const printed = [];
    t.mock.method(console, 'error', (...args) => printed.push(args));
    const server = await relayServer();
    server.sessionManager.on('connection', () => {
      throw new Error('listener bug');
    });
    let seen = 0;
    server.sessionManager.on('connection', () => seen++);
    const { sessionId } = server.sessionManager.createSession();
    const a = await joinedClient(server.wsUrl(sessionId));
    const b = await joinedClient(server.wsUrl(sessionId));
    a.send('{"type":"hi"}');
    assert.equal((await b.next((m) => m.json?.type === 'hi')).json.type, 'hi');
    assert.equal(seen, 2, 'the next listener still runs');
    assert.equal(printed.length, 2);
    assert.equal(printed[0][0], 'switchyard: a "connection" listener threw:');
    assert.equal(printed[0][1].message, 'listener bug');
    await Promise.all([a.close(), b.close()]);
  });

  it('refuses unknown event names and non-function listeners', () => {
    const manager = new RelaySessionManager();
    assert.throws(() => manager.on('conection', () => {}), (e) => e instanceof TypeError && /conection/.test(e.message));
    assert.throws(() => manager.on('connection', 'nope'), TypeError);
  });
});

describe('stats and lifecycle', () => {
  it('counts sessions, connections, messages and bytes', async () => {
    const server = await relayServer({ maxClientsPerSession: 3 });
    const { sessionId } = server.sessionManager.createSession();
    const a = await joinedClient(server.wsUrl(sessionId));
    const b = await joinedClient(server.wsUrl(sessionId));
    const c = await joinedClient(server.wsUrl(sessionId));
    a.send('{"type":"x"}');
    await b.next((m) => m.json?.type === 'x');
    await c.next((m) => m.json?.type === 'x');
    const stats = server.sessionManager.getStats();
    assert.equal(stats.isRunning, true);
    assert.equal(typeof stats.uptimeMs, 'number');
    assert.equal(stats.activeSessions, 1);
    assert.equal(stats.activeConnections, 3);
    assert.deepEqual(stats.messages, { received: 1, relayed: 2, invalid: 0, dropped: 0, passiveUpdatesDropped: 0 });
    assert.equal(stats.bytes.received, 12);
    assert.ok(stats.bytes.sent >= 24);
    await Promise.all([a.close(), b.close(), c.close()]);
  });

  it('answers getStats() and checkConnectionHealth() with what their typings declare, no more and no less', async () => {
    // The typings of the stats are written by hand (the addon hands over the report the
    // binary serializes): this holds them to what the manager really returns.
    const typings = require('node:fs').readFileSync(path.join(__dirname, '..', 'binding.d.ts'), 'utf8');
    const interfaces = new Map(
      [...typings.matchAll(/^export interface (\w+)(?:<[^>]*>)? \{\n([\s\S]*?)^\}/gm)].map(([, name, body]) => [
        name,
        [...body.matchAll(/^  (\w+)(\??): (.+)$/gm)].map(([, key, optional, type]) => ({ key, optional: optional === '?', type })),
      ]),
    );
    const check = (value, name, at) => {
      const declared = interfaces.get(name);
      assert.ok(declared, `${name} is declared in binding.d.ts`);
      for (const { key, optional, type } of declared) {
        if (!(key in value)) {
          assert.ok(optional, `${at}.${key} is declared but missing`);
          continue;
        }
        const nested = type.replace(/ \| null$/, '');
        if (interfaces.has(nested) && value[key] !== null) check(value[key], nested, `${at}.${key}`);
        else if (type === 'number') assert.equal(typeof value[key], 'number', `${at}.${key}`);
        else if (type === 'boolean') assert.equal(typeof value[key], 'boolean', `${at}.${key}`);
      }
      const known = new Set(declared.map(({ key }) => key));
      for (const key of Object.keys(value)) assert.ok(known.has(key), `${at}.${key} is returned but not declared`);
    };
    const server = await relayServer({ rateLimit: { messagesPerSecond: 10, burst: 10 }, history: { size: 10, ttlMs: 60000 } });
    const manager = server.sessionManager;
    manager.start();
    const { sessionId } = manager.createSession();
    const client = await joinedClient(server.wsUrl(sessionId));
    client.send('{"type":"x"}');
    await eventually(() => assert.equal(manager.getStats().messages.received, 1));
    check(manager.getStats(), 'RelayStats', 'getStats()');
    check(manager.checkConnectionHealth(), 'HealthStats', 'checkConnectionHealth()');
    await client.close();
  });

  it('stop() closes every connection with 1001, forgets sessions and refuses connections until start()', async () => {
    const server = await relayServer();
    const manager = server.sessionManager;
    const { sessionId } = manager.createSession();
    const a = await joinedClient(server.wsUrl(sessionId));
    manager.start();
    manager.stop();
    assert.deepEqual(await a.closedWithin(), { code: 1001, reason: 'Server shutting down' });
    assert.equal(manager.getStats().isRunning, false);
    assert.deepEqual(manager.listSessions(), []);
    assert.equal(manager.getSession(sessionId), null);
    assert.equal(manager.deleteSession(sessionId), false);
    const meanwhile = manager.createSession();
    assert.equal(manager.getSession(meanwhile.sessionId).clientCount, 0, 'sessions can be made while stopped, as in the original');
    const late = new TestClient(server.wsUrl(meanwhile.sessionId));
    assert.deepEqual(await late.closedWithin(), { code: 1001, reason: 'Server shutting down' });
    manager.start();
    const again = manager.getSession(meanwhile.sessionId);
    const b = await joinedClient(server.wsUrl(again.sessionId));
    assert.equal(manager.getStats().isRunning, true);
    await b.close();
  });

  it('a started manager does not keep the process alive, and stop() leaves nothing behind', async () => {
    const script = path.join(__dirname, 'fixtures', 'exit-after-stop.js');
    for (const mode of ['stop', 'no-stop']) {
      const started = Date.now();
      const { stdout } = await new Promise((resolve, reject) => {
        execFile(process.execPath, [script, mode], { timeout: 10000 }, (err, stdout, stderr) =>
          err ? reject(new Error(`${mode}: ${err.message}\n${stderr}`)) : resolve({ stdout }),
        );
      });
      assert.match(stdout, /relayed/);
      assert.ok(Date.now() - started < 8000, `${mode}: exited on its own`);
    }
  });
});
