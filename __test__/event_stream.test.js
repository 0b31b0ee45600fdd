// __test__/event_stream.test.js: members over Server-Sent Events with POST for sending,
// where a WebSocket cannot get through: in the binary, in `listen()`, and in bridge mode
// through `eventStreamHandler()` mounted in Express and Fastify. Each host is driven the
// same way, over real sockets, beside WebSocket members of the same session.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const express = require('express');
const Fastify = require('fastify');
const { TestClient, EventStreamClient, RawClient, startBinary, stopBinaries, postJson, eventually, hasNativeTransport, floodBesideSlowReader } = require('./helpers');

after(stopBinaries);

/** Every host, each with: `ws(id)` and `events(id, query)` URLs, `createSession(options)`, and `close()`. */
const hosts = {
  async binary() {
    return managedBinary(await startBinary({ args: ['--rate-limit', '50', '--rate-burst', '20'] }));
  },
  async listen() {
    const { RelaySessionManager } = require('..');
    const manager = new RelaySessionManager({ rateLimit: { messagesPerSecond: 50, burst: 20 } });
    manager.start();
    const { port } = manager.listen({ port: 0, host: '127.0.0.1' });
    return managed(manager, `ws://127.0.0.1:${port}`, `http://127.0.0.1:${port}`, async () => manager.stop({ timeoutMs: 200 }));
  },
  async attach() {
    const { RelaySessionManager } = require('..');
    const manager = new RelaySessionManager({ rateLimit: { messagesPerSecond: 50, burst: 20 } });
    manager.start();
    const server = http.createServer((req, res) => res.end('the app'));
    manager.attach(server, { authenticate: (request) => (request.headers['x-user'] === 'banned' ? null : { userId: request.headers['x-user'] }) });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address();
    return managed(manager, `ws://127.0.0.1:${port}`, `http://127.0.0.1:${port}`, async () => {
      await manager.stop({ timeoutMs: 200 });
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    });
  },
  async express() {
    const { RelaySessionManager } = require('..');
    const manager = new RelaySessionManager({ rateLimit: { messagesPerSecond: 50, burst: 20 } });
    manager.start();
    const app = express();
    const handler = manager.eventStreamHandler();
    app.get('/session/:sessionId/events', handler);
    app.post('/session/:sessionId/send', handler);
    app.options('/session/:sessionId/:endpoint', handler);
    return bridged(manager, http.createServer(app));
  },
  async fastify() {
    const { RelaySessionManager } = require('..');
    const manager = new RelaySessionManager({ rateLimit: { messagesPerSecond: 50, burst: 20 } });
    manager.start();
    const app = Fastify();
    const handler = manager.eventStreamHandler();
    await app.register(async (scope) => {
      // The handler reads its own body: Fastify's parsers leave it alone here.
      scope.removeAllContentTypeParsers();
      scope.addContentTypeParser('*', (request, payload, done) => done(null));
      const route = (request, reply) => {
        reply.hijack();
        handler(request.raw, reply.raw);
      };
      scope.get('/session/:sessionId/events', route);
      scope.post('/session/:sessionId/send', route);
    });
    await app.ready();
    return bridged(manager, app.server, () => app.close());
  },
};

function managed(manager, ws, base, close) {
  return {
    ws: (id) => `${ws}/session/${id}`,
    events: (id, query = '') => `${base}/session/${id}/events${query}`,
    createSession: async (options) => manager.createSession(options),
    deleteSession: async (id) => manager.deleteSession(id),
    presence: (id) => manager.presence(id),
    stats: async () => manager.getStats(),
    close,
  };
}

/** A manager whose WebSocket members come through `ws` (bridge mode) on the same server. */
async function bridged(manager, server, closeApp) {
  const { WebSocketServer } = require('ws');
  const wss = new WebSocketServer({ noServer: true });
  server.on('upgrade', (request, socket, head) => {
    const id = /^\/session\/([^/?]+)/.exec(request.url)?.[1];
    wss.handleUpgrade(request, socket, head, (ws) => manager.handleUpgrade(decodeURIComponent(id), ws, request));
  });
  if (!server.listening) await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return managed(manager, `ws://127.0.0.1:${port}`, `http://127.0.0.1:${port}`, async () => {
    await manager.stop({ timeoutMs: 200 });
    wss.close();
    server.closeAllConnections?.();
    if (closeApp) await closeApp();
    else await new Promise((resolve) => server.close(resolve));
  });
}

for (const [name, start] of Object.entries(hosts)) {
  // The binary is tested once, with the native build of the addon.
  const needsNative = name === 'listen' || name === 'attach' || name === 'binary';
  describe(`event-stream members (${name})`, { skip: needsNative && !hasNativeTransport && 'no native transport here' }, () => {
    let host;
    let ids = 0;
    const session = async (options = {}) => {
      const sessionId = `sse-${name}-${++ids}`;
      await host.createSession({ sessionId, ...options });
      return sessionId;
    };
    before(async () => (host = await start()));
    after(() => host?.close());

    it('is a member like any other: relays both ways with a WebSocket member, is announced, counted, and leaves when its stream closes', async () => {
      const id = await session();
      const ws = await new TestClient(host.ws(id)).joined();
      const sse = await new EventStreamClient(host.events(id)).joined();
      assert.equal(sse.welcome.type, 'client_connected');
      assert.match(sse.welcome.send.url, new RegExp(`/session/${id}/send$`));
      const announced = await ws.nextOfType('client_connected');
      assert.equal(announced.json.connectionId, sse.welcome.connectionId);

      ws.send(JSON.stringify({ type: 'cursor', x: 1, text: 'line one\nline two' }));
      const relayed = await sse.nextOfType('cursor');
      assert.deepEqual(relayed.json, { type: 'cursor', x: 1, text: 'line one\nline two' });
      ws.send(Buffer.from([1, 2, 3]), { binary: true });
      assert.deepEqual([...(await sse.next((m) => m.isBinary)).data], [1, 2, 3]);

      const taken = await sse.send({ type: 'cursor', x: 2 });
      assert.deepEqual([taken.status, taken.length], [202, '0'], 'answered with its length, so a client reads it without chunking');
      assert.equal((await ws.nextOfType('cursor')).json.x, 2);
      assert.equal((await sse.send([{ type: 'op', n: 1 }, { type: 'op', n: 2 }, { type: 'op', n: 3 }])).status, 202, 'ndjson');
      for (const n of [1, 2, 3]) assert.equal((await ws.nextOfType('op')).json.n, n, 'in order');
      assert.equal((await sse.send({ type: 'ping', id: 'p1' })).status, 202);
      assert.equal((await sse.nextOfType('pong')).json.id, 'p1', 'answers come down the stream');

      const stats = await host.stats();
      assert.equal(stats.connectionsByTransport.sse, 1);
      assert.equal((await sse.send({ type: 'request_control', clientId: 'sse', data: {}, timestamp: Date.now(), protocol_version: 1 })).status, 202);
      assert.equal((await sse.nextOfType('accept_control')).json.data.granted, true, 'roles: a stream member takes control');

      const token = sse.token;
      sse.close();
      const left = await ws.nextOfType('client_disconnected');
      assert.equal(left.json.connectionId, sse.welcome.connectionId);
      assert.equal(left.json.data.role, 'active');
      const gone = await sse.send({ type: 'cursor' }, { token });
      assert.equal(gone.status, 404, 'a closed member\'s token');
      assert.equal(gone.body.error.code, 'MEMBER_NOT_FOUND');
      ws.close();
    });

    it('refuses bad input with the protocol\'s errors and nothing else changes', async () => {
      const id = await session({ maxClients: 2 });
      const ws = await new TestClient(host.ws(id)).joined();
      const sse = await new EventStreamClient(host.events(id)).joined();
      const other = await session();

      const wrong = await sse.send({ type: 'cursor' }, { token: `${sse.token.split('.')[0]}.not-the-secret` });
      assert.deepEqual([wrong.status, wrong.body.error.code], [403, 'FORBIDDEN']);
      assert.ok(Number(wrong.length) > 0, 'an error is answered with its length');
      const none = await sse.send({ type: 'cursor' }, { token: '' });
      assert.equal(none.status, 403);
      const elsewhere = await sse.send({ type: 'cursor' }, { to: host.events(other).replace(/events$/, 'send') });
      assert.equal(elsewhere.status, 403, 'a token is good for its own session only');
      const malformed = await sse.send('{"type": "cursor"', {});
      assert.deepEqual([malformed.status, malformed.body.error.code], [400, 'INVALID_REQUEST']);
      const empty = await sse.send('', {});
      assert.equal(empty.status, 400);
      const halfBad = await sse.send(['{"type":"op","n":1}', 'not json'], {});
      assert.equal(halfBad.status, 400, 'a batch is checked whole before any of it is taken');
      const huge = await sse.send({ type: 'big', data: 'x'.repeat(2 * 1024 * 1024) });
      assert.deepEqual([huge.status, huge.body.error.code], [413, 'MESSAGE_TOO_LARGE']);

      const full = new EventStreamClient(host.events(id));
      await assert.rejects(full.opened, (err) => err.status === 409 && err.body.error.code === 'SESSION_FULL');
      const missing = new EventStreamClient(host.events('no-such-session'));
      await assert.rejects(missing.opened, (err) => err.status === 404 && err.body.error.code === 'SESSION_NOT_FOUND');

      // Nothing of that reached the WebSocket member, and the stream still works.
      assert.equal((await sse.send({ type: 'after', n: 1 })).status, 202);
      assert.deepEqual((await ws.next((m) => m.json?.type !== 'client_connected')).json, { type: 'after', n: 1 });
      assert.deepEqual(ws.inbox.map((m) => m.json.type), ['client_connected'], 'only the stream member\'s arrival');

      let limited;
      for (let i = 0; i < 60 && !limited; i++) {
        const sent = await sse.send([{ type: 'flood', i }, { type: 'flood', i }]);
        if (sent.status === 429) limited = sent;
      }
      assert.equal(limited?.body.error.code, 'RATE_LIMITED', 'the connection\'s message rate holds over POST');
      ws.close();
      sse.close();
    });

    it('recovers what it missed by Last-Event-ID, once and in order, without what it sent itself', async () => {
      const id = await session({ history: { size: 100, ttlMs: 60_000 } });
      const ws = await new TestClient(`${host.ws(id)}?positions=1`).joined();
      const first = await new EventStreamClient(host.events(id, '?positions=1')).joined();
      ws.send(JSON.stringify({ type: 'op', n: 1 }));
      const seen = await first.nextOfType('publication');
      assert.match(seen.id, /^[A-Za-z0-9]+:\d+$/, 'a publication carries its position as the event id');
      first.close();
      await ws.nextOfType('client_disconnected');
      ws.send(JSON.stringify({ type: 'op', n: 2 }));
      ws.send(JSON.stringify({ type: 'op', n: 3 }));
      const again = await new EventStreamClient(host.events(id, `?previous=${first.welcome.connectionId}`), { headers: { 'last-event-id': seen.id } }).joined();
      assert.equal(again.welcome.recovered, true);
      const replayed = [(await again.nextOfType('publication')).json.data.n, (await again.nextOfType('publication')).json.data.n];
      assert.deepEqual(replayed, [2, 3]);
      ws.send(JSON.stringify({ type: 'op', n: 4 }));
      assert.equal((await again.nextOfType('publication')).json.data.n, 4);
      assert.equal(again.inbox.length, 0, 'nothing doubled');
      again.close();
      ws.close();
    });
  });
}

describe('event-stream members beside attach()', { skip: !hasNativeTransport && 'no native transport here' }, () => {
  it('leaves every other request to the app, and asks authenticate about a stream as about an upgrade', async () => {
    const host = await hosts.attach();
    try {
      const base = host.events('x').replace(/\/session\/x\/events$/, '');
      assert.equal(await (await fetch(`${base}/anything`)).text(), 'the app');
      assert.equal(await (await fetch(`${base}/session/x/other`)).text(), 'the app');
      const id = 'attach-auth';
      await host.createSession({ sessionId: id });
      const banned = new EventStreamClient(host.events(id), { headers: { 'x-user': 'banned' } });
      await assert.rejects(banned.opened, (err) => err.status === 401);
      const ws = await new TestClient(host.ws(id), { headers: { 'x-user': 'bob' } }).joined();
      const alice = await new EventStreamClient(host.events(id), { headers: { 'x-user': 'alice' } }).joined();
      assert.equal((await host.stats()).connectionsByTransport.sse, 1);
      // Written by Rust on the socket taken from Node, as listen() writes one.
      assert.equal(alice.headers['transfer-encoding'], undefined);
      assert.equal(alice.headers.connection, 'close');
      assert.equal(host.presence(id).find((c) => c.connectionId === alice.welcome.connectionId)?.userId, 'alice', 'authenticate named the stream\'s user');
      ws.close();
      alice.close();
    } finally {
      await host.close();
    }
  });
});

describe('event-stream members: heartbeats, slow readers and connections', () => {
  it('gives up its place among the pending handshakes once a stream is open, and serves a request line that comes in pieces (binary)', { skip: !hasNativeTransport && 'the binary is tested with the native build' }, async () => {
    const binary = await startBinary({ args: ['--max-pending-handshakes-per-ip', '4'] });
    const host = managedBinary(binary);
    try {
      await host.createSession({ sessionId: 'many', maxClients: 20 });
      const streams = [];
      for (let i = 0; i < 12; i++) streams.push(await new EventStreamClient(host.events('many')).joined());
      assert.equal((await host.stats()).connectionsByTransport.sse, 12, 'three times the per-address cap of waiting handshakes');

      const slow = new RawClient(binary.port);
      await slow.connected;
      // Flushed apart: hyper reads this request, not the stream's own path.
      await new Promise((resolve) => slow.socket.write('GET /session/many/ev', resolve));
      await host.stats();
      slow.write('ents HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n');
      await slow.until(() => slow.received.includes('event: welcome'), 'the welcome');
      assert.match(slow.received.toString(), /^HTTP\/1\.1 200 /);
      assert.equal((await host.stats()).connectionsByTransport.sse, 13);
      slow.socket.destroy();
      await Promise.all(streams.map((stream) => stream.close()));
    } finally {
      await host.close();
    }
  });

  it('serves whatever follows a send on one kept-alive connection, as a browser reuses it (listen)', { skip: !hasNativeTransport && 'no native transport here' }, async () => {
    const host = await hosts.listen();
    try {
      const id = 'reused';
      await host.createSession({ sessionId: id, maxClients: 3 });
      const sse = await new EventStreamClient(host.events(id)).joined();
      const ws = await new TestClient(host.ws(id)).joined();
      const { port } = new URL(host.events(id));
      const raw = new RawClient(Number(port));
      await raw.connected;
      const body = '{"type":"first"}';
      raw.write(`POST /session/${id}/send HTTP/1.1\r\nHost: x\r\nX-Switchyard-Send: ${sse.token}\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
      await raw.until(() => raw.received.includes('202'), 'the send\'s answer');
      assert.match(raw.received.toString(), /connection: keep-alive/);
      assert.equal((await ws.nextOfType('first')).text, body);
      raw.write(`GET /session/${id}/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n`);
      await raw.until(() => raw.received.includes('event: welcome'), 'a stream on the same connection');
      raw.socket.destroy();
      sse.close();
      ws.close();
    } finally {
      await host.close();
    }
  });

  const beatingHosts = {
    binary: async () => managedBinary(await startBinary({ args: ['--ping-interval', '300', '--heartbeat-timeout', '1500'] })),
    express: async () => {
      const { RelaySessionManager } = require('..');
      const manager = new RelaySessionManager({ pingIntervalMs: 300, heartbeatTimeoutMs: 1500 });
      manager.start();
      const app = express();
      app.get('/session/:sessionId/events', manager.eventStreamHandler());
      return bridged(manager, http.createServer(app));
    },
  };
  for (const [name, start] of Object.entries(beatingHosts)) {
    const skip = name === 'binary' && !hasNativeTransport && 'the binary is tested with the native build';
    it(`keeps a stream alive past the heartbeat timeout with its pings, and tells it why it ends (${name})`, { skip }, async () => {
      const host = await start();
      try {
        const id = `beating-${name}`;
        await host.createSession({ sessionId: id });
        const sse = await new EventStreamClient(host.events(id)).joined();
        const ws = await new TestClient(host.ws(id)).joined();
        // Ten pings take twice the heartbeat timeout.
        await eventually(() => assert.ok(sse.pings >= 10, `pings: ${sse.pings}`), 20_000);
        assert.equal(sse.closeEvent, undefined, 'an SSE member need not answer pings');
        ws.send('{"type":"still-here"}');
        await sse.nextOfType('still-here');
        await host.deleteSession(id);
        const closed = await sse.closedWithin(5000);
        const wsClosed = await ws.closedWithin(5000);
        assert.deepEqual(closed, wsClosed, 'the stream says why it ends, as a WebSocket is told');
      } finally {
        await host.close();
      }
    });
  }

  const slowHosts = {
    binary: async () => {
      const binary = await startBinary({ args: ['--max-queued-bytes', '262144'] });
      return { port: binary.port, ...managedBinary(binary) };
    },
    express: async () => {
      const { RelaySessionManager } = require('..');
      const manager = new RelaySessionManager({ maxQueuedBytes: 256 * 1024 });
      manager.start();
      const app = express();
      app.get('/session/:sessionId/events', manager.eventStreamHandler());
      const server = http.createServer(app);
      const host = await bridged(manager, server);
      return { port: server.address().port, ...host };
    },
  };
  for (const [name, start] of Object.entries(slowHosts)) {
    const skip = name === 'binary' && !hasNativeTransport && 'the binary is tested with the native build';
    it(`closes a stream that stops being read as a slow consumer, and never holds the others up behind it (${name})`, { skip }, async () => {
      const host = await start();
      try {
        const id = `slow-sse-${name}`;
        await host.createSession({ sessionId: id, maxClients: 3 });
        const sender = await new TestClient(host.ws(id)).joined();
        const fast = await new TestClient(host.ws(id)).joined();
        const slow = new RawClient(host.port);
        await slow.connected;
        slow.write(`GET /session/${id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n`);
        await fast.nextOfType('client_connected');
        slow.socket.pause();
        const { received, longestGap } = await floodBesideSlowReader({ sender, fast });
        assert.equal(received, 20_000, `every message reached the fast client; its longest wait was ${Math.round(longestGap)} ms`);
        await eventually(async () => {
          sender.send('{"type":"nudge"}');
          assert.equal((await host.stats()).slowConsumerCloses, 1, 'the slow stream is closed');
        }, 10_000);
        assert.equal((await host.stats()).connectionsByTransport.sse, 0);
        await Promise.all([sender.close(), fast.close()]);
        slow.socket.destroy();
      } finally {
        await host.close();
      }
    });
  }
});

/** The binary as the hosts above describe it. */
function managedBinary(binary) {
  return {
    ws: (id) => `${binary.ws}/session/${id}`,
    events: (id, query = '') => `${binary.base}/session/${id}/events${query}`,
    createSession: (options) => postJson(`${binary.base}/v1/sessions`, options),
    deleteSession: (id) => fetch(`${binary.base}/v1/sessions/${id}`, { method: 'DELETE' }),
    stats: async () => (await fetch(`${binary.base}/stats`)).json(),
    close: async () => binary.child.kill('SIGKILL'),
  };
}

