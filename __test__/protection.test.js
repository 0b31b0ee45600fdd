// __test__/protection.test.js: token auth, rate limits, compression, health and graceful
// stop, over real sockets in both transports and against the binary.
const { describe, it, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFile } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const WebSocket = require('ws');
const { RelaySessionManager } = require('..');
const { locateBinary } = require('../bin/switchyard.js');
const { TestClient, joinedClient, sleep, eventually, startMixedServer, RawClient, upgradeRequest, startBinary, stopBinaries } = require('./helpers');
const { sign, keyPair, now } = require('./jwt');

const SECRET = 'a shared secret that is long enough';
const cleanups = [];
after(async () => {
  stopBinaries();
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function server(config, attachOptions) {
  // Room for more than the default two members: capacity is tested on its own.
  const started = await startMixedServer({ maxClientsPerSession: 8, ...config }, attachOptions);
  cleanups.push(() => started.close());
  return started;
}

/** How an upgrade ended: `{ status }` when refused before it, else `{ open }` with the client, or its close. */
function attempt(url, options = {}, protocols) {
  return new Promise((resolve) => {
    const client = new TestClient(url, options, protocols);
    client.ws.on('unexpected-response', (req, res) => {
      let body = '';
      res.on('data', (chunk) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    client.ws.on('open', () => resolve({ open: client, protocol: client.ws.protocol }));
    client.closed.then((event) => resolve({ closed: event }));
  });
}

const valid = (claims = {}) => ({ sub: 'alice', org: 'acme', exp: now() + 60, iss: 'https://id.example', aud: 'relay', ...claims });

describe('token auth', () => {
  const jwtConfig = { auth: { jwt: { secret: SECRET, issuer: 'https://id.example', audience: 'relay', organizationClaim: 'org' } } };
  const refusals = {
    expired: sign(valid({ exp: now() - 120 }), { key: SECRET }),
    'not yet valid': sign(valid({ nbf: now() + 120 }), { key: SECRET }),
    'wrongly signed': sign(valid(), { key: 'some other secret, just as long' }),
    'wrong issuer': sign(valid({ iss: 'https://elsewhere' }), { key: SECRET }),
    'wrong audience': sign(valid({ aud: 'other' }), { key: SECRET }),
    garbage: 'not-a-token',
  };

  for (const transport of ['native', 'bridge']) {
    it(`${transport}: lets a valid token in from each place, as its claims' identity, and refuses every bad one`, async () => {
      const s = await server(jwtConfig);
      const seen = [];
      s.manager.on('connection', (e) => seen.push(e));
      const { sessionId } = s.manager.createSession();
      const url = s.url(transport, sessionId);
      const token = sign(valid({ rateLimit: { messagesPerSecond: 5, burst: 5 } }), { key: SECRET });
      const places = [
        [`${url}?token=${token}`, {}, undefined],
        [url, { headers: { authorization: `Bearer ${token}` } }, undefined],
        [url, {}, ['switchyard.jwt', token]],
      ];
      for (const [where, options, protocols] of places) {
        const result = await attempt(where, options, protocols);
        assert.ok(result.open, `${JSON.stringify(options)} ${protocols}: ${result.status} ${result.body} ${JSON.stringify(result.closed)}`);
        if (protocols) assert.equal(result.protocol, 'switchyard.jwt', 'the subprotocol is answered, as browsers need');
        result.open.ws.terminate();
      }
      await eventually(() => assert.deepEqual([seen[0]?.userId, seen[0]?.organizationId, seen[0]?.metadata.iss], ['alice', 'acme', 'https://id.example']));

      for (const [name, bad] of Object.entries({ ...refusals, missing: null })) {
        const where = bad ? `${url}?token=${bad}` : url;
        if (transport === 'native') {
          assert.equal((await attempt(where)).status, 401, name);
        } else {
          assert.deepEqual(await new TestClient(where).closedWithin(), { code: 1008, reason: 'Unauthorized' }, name);
        }
      }
    });
  }

  it('bridge: authenticate(request) refuses before ws upgrades', async () => {
    const manager = new RelaySessionManager(jwtConfig);
    const server = http.createServer();
    const wss = new WebSocket.WebSocketServer({ noServer: true });
    const identities = [];
    server.on('upgrade', (request, socket, head) => {
      const identity = manager.authenticate(request);
      if (!identity) return socket.end('HTTP/1.1 401 Unauthorized\r\nConnection: close\r\n\r\n');
      identities.push(identity);
      wss.handleUpgrade(request, socket, head, (ws) => manager.handleUpgrade(null, ws, request, identity));
    });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise((resolve) => server.close(resolve)));
    const base = `ws://127.0.0.1:${server.address().port}/`;
    assert.equal((await attempt(`${base}?token=${refusals.expired}`)).status, 401);
    const result = await attempt(`${base}?token=${sign(valid(), { key: SECRET })}`);
    assert.ok(result.open);
    assert.equal(identities[0].userId, 'alice');
    result.open.ws.terminate();
  });

  it('verifies RS256, ES256 and EdDSA keys, from PEM and from a JWKS by kid', async () => {
    for (const alg of ['RS256', 'ES256', 'EdDSA']) {
      const key = keyPair(alg, `${alg}-key`);
      const s = await server({ auth: { jwt: { publicKey: key.pem, algorithms: [alg] } } });
      const result = await attempt(`${s.sessionless('native')}?token=${sign({ sub: 'u', exp: now() + 60 }, { alg, key: key.privateKey })}`);
      assert.ok(result.open, `${alg}: ${result.status} ${result.body}`);
      const forged = sign({ sub: 'u', exp: now() + 60 }, { alg, key: keyPair(alg).privateKey });
      assert.equal((await attempt(`${s.sessionless('native')}?token=${forged}`)).status, 401, `${alg} forged`);
    }
    const [first, second] = [keyPair('RS256', 'first'), keyPair('ES256', 'second')];
    const jwksFile = path.join(os.tmpdir(), `switchyard-jwks-${process.pid}.json`);
    fs.writeFileSync(jwksFile, JSON.stringify({ keys: [first.jwk, second.jwk] }));
    cleanups.push(() => fs.rmSync(jwksFile, { force: true }));
    for (const jwks of [{ keys: [first.jwk, second.jwk] }, jwksFile]) {
      const s = await server({ auth: { jwt: { jwks, algorithms: ['RS256', 'ES256'] } } });
      const live = s.sessionless('native');
      assert.ok((await attempt(`${live}?token=${sign({ sub: 'a', exp: now() + 60 }, { alg: 'RS256', key: first.privateKey, kid: 'first' })}`)).open);
      assert.ok((await attempt(`${live}?token=${sign({ sub: 'b', exp: now() + 60 }, { alg: 'ES256', key: second.privateKey, kid: 'second' })}`)).open);
      const wrongKid = sign({ sub: 'c', exp: now() + 60 }, { alg: 'RS256', key: first.privateKey, kid: 'second' });
      assert.equal((await attempt(`${live}?token=${wrongKid}`)).status, 401, 'a kid naming another key');
      assert.equal((await attempt(`${live}?token=${sign({ sub: 'd', exp: now() + 60 }, { alg: 'RS256', key: first.privateKey, kid: 'none' })}`)).status, 401);
    }
  });

  it('refuses bad auth options at construction, naming them', () => {
    const cases = [
      [{ auth: { jwt: {} } }, /exactly one of secret, publicKey and jwks/],
      [{ auth: { jwt: { secret: 's', publicKey: 'p' } } }, /exactly one/],
      [{ auth: { jwt: { secret: SECRET, algorithms: ['RS256'] } } }, /does not fit the key/],
      [{ auth: { jwt: { publicKey: 'not a pem' } } }, /cannot be read/],
      [{ auth: { jwt: { secret: SECRET, algorithms: ['XX999'] } } }, /unknown JWT algorithm "XX999"/],
      [{ auth: { jwt: { jwks: '/no/such/file.json' } } }, /cannot read the JWKS file/],
    ];
    for (const [config, message] of cases) assert.throws(() => new RelaySessionManager(config), message, JSON.stringify(config));
  });

  it("with auth, a connection without a token's user cannot claim one by register", async () => {
    const s = await server({ auth: { jwt: { secret: SECRET }, required: false } }, {});
    const register = (client, userId) => client.send(JSON.stringify({ type: 'register', payload: { userId, windowId: 'w', caseId: 'C' } }));
    const opened = async (url) => {
      const client = new TestClient(url);
      await client.opened;
      return client;
    };
    const anonymous = await opened(s.sessionless('native'));
    register(anonymous, 'alice');
    assert.equal((await anonymous.nextOfType('error')).json.payload.code, 'FORBIDDEN');
    const alice = await opened(`${s.sessionless('native')}?token=${sign({ sub: 'alice', exp: now() + 60 }, { key: SECRET })}`);
    register(alice, 'alice');
    await alice.nextOfType('registered');
    assert.equal(s.manager.sendToUser('alice', { type: 'for-alice' }), 1, 'only the real alice');
  });
});

describe('rate limits', () => {
  for (const transport of ['native', 'bridge']) {
    it(`${transport}: refuses a connection over its rate with RATE_LIMITED, then closes it; a tier lifts its limit`, async () => {
      const s = await server({ rateLimit: { messagesPerSecond: 2, burst: 3, maxViolations: 2 } });
      const { sessionId } = s.manager.createSession();
      const flooder = await joinedClient(s.url(transport, sessionId));
      const peer = await joinedClient(s.url(transport, sessionId));
      for (let i = 0; i < 6; i++) flooder.send(JSON.stringify({ type: 'm', i, id: `m${i}` }));
      const refused = (await flooder.nextOfType('error')).json.payload;
      assert.deepEqual(refused, { code: 'RATE_LIMITED', message: 'Too many messages; this one was dropped', correlationId: 'm3' });
      assert.deepEqual(await flooder.closedWithin(), { code: 1008, reason: 'Rate limit exceeded' });
      await eventually(() => assert.deepEqual(peer.inbox.filter((m) => m.json?.type === 'm').map((m) => m.json.i), [0, 1, 2]));
      assert.equal(s.manager.getStats().rateLimited, 3);
    });
  }

  it('shares a user bucket across the user\'s connections, and takes a tier from authenticate', async () => {
    const s = await server(
      { rateLimit: { messagesPerSecond: 100, burst: 100, perUser: { messagesPerSecond: 1, burst: 2 } } },
      { authenticate: (req) => ({ userId: req.headers['x-user'], rateLimit: req.headers['x-tier'] ? { messagesPerSecond: 1, burst: 1 } : undefined }) },
    );
    const { sessionId } = s.manager.createSession();
    const laptop = await joinedClient(s.native(sessionId), { headers: { 'x-user': 'alice' } });
    const phone = await joinedClient(s.native(sessionId), { headers: { 'x-user': 'alice' } });
    laptop.send('{"type":"a"}');
    await phone.nextOfType('a');
    phone.send('{"type":"b"}');
    await laptop.nextOfType('b');
    laptop.send('{"type":"c"}');
    assert.equal((await laptop.nextOfType('error')).json.payload.code, 'RATE_LIMITED', "alice's third message, whichever device");
    const tiered = await joinedClient(s.native(sessionId), { headers: { 'x-user': 'bob', 'x-tier': 'low' } });
    tiered.send('{"type":"d"}');
    tiered.send('{"type":"e"}');
    assert.equal((await tiered.nextOfType('error')).json.payload.code, 'RATE_LIMITED', 'the tier allows a burst of 1');
  });

  it('refuses an address opening connections too fast: 429 natively, 1008 over the bridge', async () => {
    const s = await server({ connectionsPerMinutePerIp: 3 });
    const { sessionId } = s.manager.createSession({ maxClients: 100 });
    const opened = [];
    for (let i = 0; i < 3; i++) opened.push(await joinedClient(s.native(sessionId)));
    assert.equal((await attempt(s.native(sessionId))).status, 429);
    assert.deepEqual(await new TestClient(s.bridge(sessionId)).closedWithin(), { code: 1008, reason: 'Rate limit exceeded' });
    opened.forEach((c) => c.ws.terminate());
  });
});

describe('compression, frames and health', () => {
  it('reports permessage-deflate negotiated by ws in bridge mode', async () => {
    const manager = new RelaySessionManager();
    const server = http.createServer();
    const wss = new WebSocket.WebSocketServer({ server, perMessageDeflate: { threshold: 0 } });
    const { sessionId } = manager.createSession();
    wss.on('connection', (ws, request) => manager.handleUpgrade(sessionId, ws, request));
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanups.push(async () => {
      manager.stop();
      wss.close();
      await new Promise((resolve) => server.close(resolve));
    });
    const url = `ws://127.0.0.1:${server.address().port}/`;
    const a = await joinedClient(url, { perMessageDeflate: true });
    const b = await joinedClient(url, { perMessageDeflate: true });
    const text = JSON.stringify({ type: 'doc', body: 'the same words again and again '.repeat(200) });
    for (let i = 0; i < 20; i++) a.send(text);
    for (let i = 0; i < 20; i++) await b.next((m) => m.json?.type === 'doc');
    const { compression } = manager.getStats();
    assert.equal(compression.connections, 2);
    assert.ok(compression.bytesBeforeCompression >= 20 * text.length, JSON.stringify(compression));
    assert.ok(compression.ratio < 0.2, `compressed to ${compression.ratio}`);
  });

  it('counts frames by size', async () => {
    const s = await server({ maxMessageBytes: 2 * 1024 * 1024 });
    const { sessionId } = s.manager.createSession();
    const a = await joinedClient(s.native(sessionId));
    const b = await joinedClient(s.native(sessionId));
    for (const size of [10, 500, 5000, 50_000, 500_000, 1_500_000]) a.send(Buffer.alloc(size));
    for (let i = 0; i < 6; i++) await b.next((m) => m.isBinary);
    assert.deepEqual(s.manager.getStats().frames, { '<=128': 1, '<=1024': 1, '<=16384': 1, '<=131072': 1, '<=1048576': 1, '>1048576': 1 });
  });

  for (const transport of ['native', 'bridge']) {
    it(`${transport}: health moves when a client stops answering pings`, async () => {
      const s = await server({ pingIntervalMs: 100, heartbeatTimeoutMs: 5000 });
      const { sessionId } = s.manager.createSession();
      await joinedClient(s.url(transport, sessionId));
      await eventually(() => {
        const health = s.manager.checkConnectionHealth();
        assert.deepEqual([health.activeConnections, health.healthyConnections, health.unhealthyConnections], [1, 1, 0]);
        assert.equal(typeof health.averageLatencyMs, 'number', 'a latency once a pong came back');
      });
      await joinedClient(s.url(transport, sessionId), { autoPong: false });
      await eventually(() => {
        const { health } = s.manager.getStats();
        assert.deepEqual([health.activeConnections, health.healthyConnections, health.unhealthyConnections], [2, 1, 1]);
      });
    });
  }
});

describe('graceful stop', () => {
  for (const transport of ['native', 'bridge']) {
    it(`${transport}: closes with a chosen code, waits for close handshakes, then terminates the rest`, async () => {
      const s = await server();
      const { sessionId } = s.manager.createSession();
      const polite = await joinedClient(s.url(transport, sessionId));
      const deaf = new RawClient(s.port);
      await deaf.connected;
      deaf.write(upgradeRequest(transport === 'native' ? `/session/${sessionId}` : `/bridge/${sessionId}`));
      await deaf.responseHead();
      // Paused, it sees neither the close frame nor the FIN after it, so answers neither.
      deaf.socket.pause();
      await sleep(50);
      const started = Date.now();
      await s.manager.stop({ code: 1012, timeoutMs: 600 });
      const took = Date.now() - started;
      assert.deepEqual(await polite.closedWithin(), { code: 1012, reason: 'Service restart' });
      assert.ok(took >= 550 && took < 2000, `resolved after ${took} ms, once the deaf client was terminated`);
      deaf.socket.resume();
      await deaf.ended;
      assert.throws(() => s.manager.stop({ code: 1005 }), /cannot be sent/);
    });
  }
});

describe('the binary: protection flags', () => {
  it('takes JWT keys, rate limits and admission from flags and environment', async () => {
    const key = keyPair('ES256', 'k1');
    const pemFile = path.join(os.tmpdir(), `switchyard-key-${process.pid}.pem`);
    fs.writeFileSync(pemFile, key.pem);
    cleanups.push(() => fs.rmSync(pemFile, { force: true }));
    const { port } = await startBinary({ args: ['--jwt-public-key', pemFile, '--jwt-algorithms', 'ES256', '--jwt-issuer', 'iss-1', '--rate-limit', '1', '--rate-burst', '2', '--connections-per-minute-per-ip', '4'] });
    const url = `ws://127.0.0.1:${port}/`;
    const good = sign({ sub: 'carol', exp: now() + 60, iss: 'iss-1' }, { alg: 'ES256', key: key.privateKey });
    assert.equal((await attempt(url)).status, 401, 'no token');
    assert.equal((await attempt(`${url}?token=${sign({ sub: 'x', exp: now() + 60, iss: 'other' }, { alg: 'ES256', key: key.privateKey })}`)).status, 401);
    const result = await attempt(url, {}, ['switchyard.jwt', good]);
    assert.equal(result.protocol, 'switchyard.jwt');
    const client = result.open;
    for (let i = 0; i < 3; i++) client.send('{"type":"ping"}');
    assert.equal((await client.nextOfType('error')).json.payload.code, 'RATE_LIMITED');
    assert.ok((await attempt(`${url}?token=${good}`)).open);
    assert.equal((await attempt(`${url}?token=${good}`)).status, 429, 'the fifth connection within the minute');
    const stats = await fetch(`http://127.0.0.1:${port}/stats`).then((r) => r.json());
    assert.equal(stats.rateLimited, 2);
    assert.equal(stats.health.activeConnections, 2);
  });

  it('refuses a bad key at start-up, saying why', async () => {
    const run = (args, env = {}) =>
      new Promise((resolve) => execFile(locateBinary(), args, { env: { ...process.env, ...env } }, (err, stdout, stderr) => resolve({ code: err?.code ?? 0, stderr })));
    const badKey = await run([], { JWT_SECRET: 'short', JWT_ALGORITHMS: 'RS256' });
    assert.equal(badKey.code, 2);
    assert.match(badKey.stderr, /does not fit the key/);
    const both = await run(['--jwt-secret', 's', '--jwks', 'x.json']);
    assert.equal(both.code, 2);
    assert.match(both.stderr, /cannot be used with/);
  });
});
