// __test__/native.test.js: the native transport. Sockets are taken from a Node HTTP
// server (attach, handleUpgrade with a net.Socket) and served by Rust; bridge clients of
// the same manager join the same sessions.
const { describe, it, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFile } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const https = require('node:https');
const path = require('node:path');
const { RelaySessionManager } = require('..');
const { TestClient, joinedClient, assertQuiet, eventually, RawClient, upgradeRequest, clientFrame, startMixedServer, floodBesideSlowReader, relaysInOrderBothWays } = require('./helpers');

const servers = [];
after(() => Promise.all(servers.map((s) => s.close())));

async function mixedServer(config, attachOptions) {
  // Room for more than the default two members: capacity is tested on its own.
  const server = await startMixedServer({ maxClientsPerSession: 8, ...config }, attachOptions);
  servers.push(server);
  return server;
}

/** Two clients of one session relaying to each other, to show a bad neighbour harmed no one. */
async function assertStillRelaying(a, b, tag) {
  a.send(JSON.stringify({ type: 'check', tag }));
  assert.equal((await b.next((m) => m.json?.tag === tag)).json.type, 'check');
}

describe('native transport', () => {
  it('relays text and binary byte for byte between native clients, never back nor across sessions', async () => {
    const server = await mixedServer();
    const one = server.manager.createSession();
    const two = server.manager.createSession();
    const alice = await joinedClient(server.native(one.sessionId));
    const bob = await joinedClient(server.native(one.sessionId));
    const outsider = await joinedClient(server.native(two.sessionId));
    assert.equal(alice.welcome.sessionId, one.sessionId);
    assert.equal((await alice.nextOfType('client_connected')).json.connectionId, bob.welcome.connectionId);

    const text = '{"type":"cursor",  "x": 1.50, "note":"caf\\u00e9 ☕"}';
    alice.send(text);
    assert.equal((await bob.next()).text, text);
    const bytes = Buffer.from([0, 1, 2, 253, 254, 255]);
    bob.send(bytes);
    const binary = await alice.next();
    assert.equal(binary.isBinary, true);
    assert.deepEqual(binary.data, bytes);
    const large = JSON.stringify({ type: 'large', data: 'x'.repeat(200_000) });
    alice.send(large);
    assert.equal((await bob.next()).text, large);

    await assertQuiet(alice);
    await assertQuiet(outsider);
    await alice.close();
    assert.equal((await bob.nextOfType('client_disconnected')).json.clientId, alice.welcome.connectionId);
    await Promise.all([bob.close(), outsider.close()]);
  });

  for (const nativeThreads of [1, 2]) {
    it(`serves native clients on ${nativeThreads} thread(s), in order, and a stop that runs out of time drops a deaf one`, async () => {
      const s = await mixedServer({ nativeThreads });
      assert.equal(s.manager.getStats().config.nativeThreads, nativeThreads);
      const { sessionId } = s.manager.createSession();
      const [a, b] = [await joinedClient(s.native(sessionId)), await joinedClient(s.native(sessionId))];
      await relaysInOrderBothWays(a, b);
      const deaf = new RawClient(s.port);
      await deaf.connected;
      deaf.write(upgradeRequest(`/session/${sessionId}`));
      await deaf.responseHead();
      deaf.socket.pause();
      await s.manager.stop({ timeoutMs: 300 });
      assert.equal((await a.closedWithin()).code, 1001);
      deaf.socket.resume();
      await deaf.ended;
    });
  }

  it('mixes native and bridge clients in one session', async () => {
    const server = await mixedServer();
    const { sessionId } = server.manager.createSession();
    const native = await joinedClient(server.native(sessionId));
    const bridged = await joinedClient(server.bridge(sessionId));
    await native.nextOfType('client_connected');
    native.send('{"type":"from-native"}');
    assert.equal((await bridged.next()).text, '{"type":"from-native"}');
    bridged.send(Buffer.from('from bridge'));
    assert.deepEqual((await native.next()).data, Buffer.from('from bridge'));
    assert.equal(server.manager.getSession(sessionId).clientCount, 2);
    await Promise.all([native.close(), bridged.close()]);
  });

  it('answers a bad handshake with 400, and harms no one else', async () => {
    const server = await mixedServer();
    const { sessionId } = server.manager.createSession();
    const a = await joinedClient(server.native(sessionId));
    const b = await joinedClient(server.native(sessionId));
    const cases = [
      [upgradeRequest(`/session/${sessionId}`, { key: null }), /^HTTP\/1\.1 400 /, /Missing Sec-WebSocket-Key/],
      [upgradeRequest(`/session/${sessionId}`, { version: '12' }), /^HTTP\/1\.1 400 /, /Sec-WebSocket-Version: 13/],
      [upgradeRequest(`/session/${sessionId}`, { key: 'not-base64' }), /^HTTP\/1\.1 400 /, /16 bytes/],
    ];
    for (const [request, status, detail] of cases) {
      const raw = new RawClient(server.port);
      await raw.connected;
      raw.write(request);
      const head = await raw.responseHead();
      assert.match(head, status, JSON.stringify(request));
      await raw.ended;
      assert.match(raw.received.toString(), detail);
      await assertStillRelaying(a, b, request.length);
    }
    assert.equal(server.manager.getStats().handshakeFailures, 3);
    await Promise.all([a.close(), b.close()]);
  });

  it('does not lose the bytes that came with the upgrade request', async () => {
    const server = await mixedServer();
    const { sessionId } = server.manager.createSession();
    const peer = await joinedClient(server.native(sessionId));
    const raw = new RawClient(server.port);
    await raw.connected;
    raw.write(Buffer.concat([Buffer.from(upgradeRequest(`/session/${sessionId}`)), clientFrame(1, '{"type":"early"}')]));
    assert.match(await raw.responseHead(), /^HTTP\/1\.1 101 Switching Protocols\r\n[^]*Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=\r\n/);
    assert.equal((await peer.next((m) => m.json?.type === 'early')).text, '{"type":"early"}');
    raw.socket.destroy();
    await peer.close();
  });

  it('closes a client over maxMessageBytes with 1009, and others keep relaying', async () => {
    const server = await mixedServer({ maxMessageBytes: 1024 });
    const { sessionId } = server.manager.createSession();
    const a = await joinedClient(server.native(sessionId));
    const b = await joinedClient(server.native(sessionId));
    // A bridge client too: this server's ws has no maxPayload, so the relay itself refuses.
    for (const transport of ['native', 'bridge']) {
      const big = await joinedClient(server.url(transport, sessionId));
      big.send(Buffer.alloc(1024, 1));
      assert.equal((await a.next((m) => m.isBinary && m.data.length === 1024)).data.length, 1024);
      a.inbox.length = 0;
      big.send(Buffer.alloc(1025, 1));
      assert.deepEqual(await big.closedWithin(), { code: 1009, reason: 'Message too large' }, transport);
      await assertStillRelaying(a, b, `after 1009 (${transport})`);
    }
    await Promise.all([a.close(), b.close()]);
  });

  for (const transport of ['native', 'bridge']) {
    it(`closes a client that stops reading with 1013, and never holds the others up behind it (${transport})`, async () => {
      const server = await mixedServer({ maxQueuedBytes: 256 * 1024, maxClientsPerSession: 3 });
      const { sessionId } = server.manager.createSession();
      const sender = await joinedClient(server.url(transport, sessionId));
      const fast = await joinedClient(server.url(transport, sessionId));
      const slow = new RawClient(server.port);
      await slow.connected;
      slow.write(upgradeRequest(new URL(server.url(transport, sessionId)).pathname));
      await slow.responseHead();
      slow.socket.pause();

      const { received, longestGap } = await floodBesideSlowReader({ sender, fast });
      assert.equal(received, 20_000, `every message reached the fast client; its longest wait was ${Math.round(longestGap)} ms`);
      // A client counts as slow once its socket has taken nothing for a second: keep the
      // messages coming until then.
      await eventually(() => {
        sender.send('{"type":"nudge"}');
        assert.equal(server.manager.getStats().slowConsumerCloses, 1, 'the slow client is closed');
      }, 10_000);
      assert.equal(server.manager.getSession(sessionId).clientCount, 2);
      // Its close frame waits behind what it did not read; a native connection that still
      // reads nothing is dropped after a while, so its socket ends instead.
      slow.socket.resume();
      await Promise.race([slow.ended, slow.closeFrame(15_000)]);
      const close = slow.frames().find((f) => f.opcode === 8);
      if (close) assert.deepEqual([close.code, close.reason], [1013, 'Slow consumer']);
      await Promise.all([sender.close(), fast.close()]);
    });
  }

  it('pings native clients and closes one that stops answering with 1001', async () => {
    const server = await mixedServer({ pingIntervalMs: 100, heartbeatTimeoutMs: 400 });
    const { sessionId } = server.manager.createSession();
    const healthy = await joinedClient(server.native(sessionId));
    let pings = 0;
    healthy.ws.on('ping', () => pings++);
    const deaf = await joinedClient(server.native(sessionId), { autoPong: false });
    assert.deepEqual(await deaf.closedWithin(2000), { code: 1001, reason: 'Connection timeout' });
    assert.equal(healthy.closeEvent, undefined);
    assert.ok(pings >= 3, `pinged ${pings} times`);
    await healthy.close();
  });

  it('refuses unknown and full sessions with 1008 after the handshake', async () => {
    const server = await mixedServer();
    const unknown = new TestClient(server.native('no-such-session'));
    assert.deepEqual(await unknown.closedWithin(), { code: 1008, reason: 'Session not found' });
    const { sessionId } = server.manager.createSession({ maxClients: 1 });
    const first = await joinedClient(server.native(sessionId));
    const second = new TestClient(server.native(sessionId));
    assert.deepEqual(await second.closedWithin(), { code: 1008, reason: 'Session full' });
    await first.close();
  });

  it('reports native connections in events, in order, and a throwing listener breaks nothing', async (t) => {
    t.mock.method(console, 'error', () => {});
    const server = await mixedServer(undefined, {
      authenticate: async (request) => ({ userId: request.headers['x-user'], organizationId: 'org-1' }),
    });
    const events = [];
    server.manager.on('connection', () => {
      throw new Error('listener bug');
    });
    server.manager.on('connection', (e) => events.push(['connection', e.connectionId, e.userId]));
    server.manager.on('disconnect', (e) => events.push(['disconnect', e.connectionId, e.code]));
    const { sessionId } = server.manager.createSession();
    const a = await joinedClient(server.native(sessionId), { headers: { 'x-user': 'alice' } });
    const b = await joinedClient(server.native(sessionId), { headers: { 'x-user': 'bob' } });
    await assertStillRelaying(a, b, 'with a throwing listener');
    await a.close();
    await b.nextOfType('client_disconnected');
    const id = a.welcome.connectionId;
    await eventually(() => assert.deepEqual(
      events.filter((e) => e[1] === id),
      [['connection', id, 'alice'], ['disconnect', id, 1005]],
    ));
    await b.close();
  });
});

describe('attach', () => {
  it('takes only its own path and leaves the other upgrades to their listeners', async () => {
    const server = await mixedServer();
    const { sessionId } = server.manager.createSession();
    const bridged = await joinedClient(server.bridge(sessionId));
    assert.equal(bridged.welcome.sessionId, sessionId, 'the ws listener still got /bridge');
    const plain = await fetch(`http://127.0.0.1:${server.port}/`);
    assert.equal(await plain.text(), 'plain http');
    await bridged.close();
  });

  it('answers 404 to an upgrade nobody claims, once, however many attach() calls passed it over', async () => {
    const manager = new RelaySessionManager();
    const server = http.createServer();
    manager.attach(server, { path: '/live/:sessionId' });
    manager.attach(server, { path: '/other' });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    servers.push({ close: () => new Promise((resolve) => server.close(resolve)) });
    const raw = new RawClient(server.address().port);
    await raw.connected;
    raw.write(upgradeRequest('/elsewhere'));
    assert.match(await raw.responseHead(), /^HTTP\/1\.1 404 /);
    await raw.ended;
    assert.equal(raw.received.toString().split('HTTP/1.1').length, 2, 'one answer');
    const claimed = new RawClient(server.address().port);
    await claimed.connected;
    claimed.write(upgradeRequest('/other'));
    assert.match(await claimed.responseHead(), /^HTTP\/1\.1 101 /, 'the second attach takes its own path');
    claimed.socket.destroy();
  });

  it('leaves an upgrade no attach() claims to the server\'s other listeners', async () => {
    const manager = new RelaySessionManager();
    const server = http.createServer();
    manager.attach(server, { path: '/live/:sessionId' });
    server.on('upgrade', (request, socket) => socket.end('HTTP/1.1 418 I\'m a teapot\r\n\r\n'));
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    servers.push({ close: () => new Promise((resolve) => server.close(resolve)) });
    const raw = new RawClient(server.address().port);
    await raw.connected;
    raw.write(upgradeRequest('/elsewhere'));
    assert.match(await raw.responseHead(), /^HTTP\/1\.1 418 /);
  });

  it('answers 401 when authenticate returns null, sync or async, and 500 when it throws or returns a bad identity', async (t) => {
    const printed = [];
    t.mock.method(console, 'error', (...args) => printed.push(args.join(' ')));
    const server = await mixedServer(undefined, {
      authenticate: (request) => {
        const who = request.headers['x-user'];
        if (who === 'boom') throw new Error('auth backend down');
        if (who === 'numeric') return { userId: 42 };
        if (who === 'late') return new Promise((resolve) => setTimeout(() => resolve({ userId: 'late' }), 50));
        if (who === 'late-no') return Promise.resolve(null);
        return who ? { userId: who } : null;
      },
    });
    const { sessionId } = server.manager.createSession();
    const statusOf = (headers) =>
      new Promise((resolve) => {
        const client = new TestClient(server.native(sessionId), { headers });
        client.ws.on('unexpected-response', (req, res) => resolve(res.statusCode));
        client.ws.on('open', () => resolve(101));
      });
    assert.equal(await statusOf({}), 401);
    assert.equal(await statusOf({ 'x-user': 'late-no' }), 401);
    assert.equal(await statusOf({ 'x-user': 'boom' }), 500);
    assert.match(printed.join('\n'), /authenticate threw: .*auth backend down/);
    assert.equal(await statusOf({ 'x-user': 'numeric' }), 500);
    assert.match(printed.join('\n'), /attach's authenticate returned a bad identity: .*userId must be a string, got 42/);
    const late = await joinedClient(server.native(sessionId), { headers: { 'x-user': 'late' } });
    const early = new RawClient(server.port);
    await early.connected;
    // Bytes sent while authenticate is still deciding reach the relay after the takeover.
    early.write(Buffer.concat([Buffer.from(upgradeRequest(`/session/${sessionId}`, { headers: { 'x-user': 'late' } })), clientFrame(1, '{"type":"while-deciding"}')]));
    assert.equal((await late.next((m) => m.json?.type === 'while-deciding')).text, '{"type":"while-deciding"}');
    early.socket.destroy();
    await late.close();
  });

  it('refuses TLS: attach on an https server, and handleUpgrade with a TLS socket, name bridge mode', async () => {
    const tls = {
      key: fs.readFileSync(path.join(__dirname, 'fixtures', 'tls-key.pem')),
      cert: fs.readFileSync(path.join(__dirname, 'fixtures', 'tls-cert.pem')),
    };
    const manager = new RelaySessionManager();
    const server = https.createServer(tls);
    assert.throws(() => manager.attach(server), /cannot take over TLS[^]*bridge mode/);
    const { sessionId } = manager.createSession();
    const thrown = new Promise((resolve) => {
      server.on('upgrade', (request, socket, head) => {
        try {
          manager.handleUpgrade(sessionId, socket, request, { head });
          resolve(null);
        } catch (err) {
          socket.destroy();
          resolve(err);
        }
      });
    });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    servers.push({ close: () => new Promise((resolve) => server.close(resolve)) });
    const client = new TestClient(`wss://127.0.0.1:${server.address().port}/`, { rejectUnauthorized: false });
    const err = await thrown;
    assert.ok(err instanceof Error, 'handleUpgrade threw');
    assert.match(err.message, /TLS socket cannot be taken over[^]*bridge mode[^]*proxy/);
    await client.closed;
  });
});

describe('native lifecycle', () => {
  it('stop() closes native clients with 1001, and the process exits on its own', async () => {
    const script = path.join(__dirname, 'fixtures', 'exit-after-stop.js');
    for (const mode of ['native-stop', 'native-no-stop']) {
      const { stdout } = await new Promise((resolve, reject) => {
        execFile(process.execPath, [script, mode], { timeout: 10000 }, (err, out, stderr) =>
          err ? reject(new Error(`${mode}: ${err.message}\n${stderr}`)) : resolve({ stdout: out }),
        );
      });
      assert.match(stdout, /relayed/);
      if (mode === 'native-stop') assert.match(stdout, /closed 1001 Server shutting down/);
    }
  });
});
