// __test__/frameworks.test.js: the examples for Express, Fastify and Next.js, over real sockets.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFile } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { TestClient, joinedClient, EventStreamClient, assertQuiet, postJson, hasNativeTransport } = require('./helpers');

const frameworks = {
  express: require('../examples/express/server.js'),
  fastify: require('../examples/fastify/server.js'),
  nextjs: require('../examples/nextjs/server.js'),
  // attach() is the native transport, which the WebAssembly build and Windows lack.
  ...(hasNativeTransport ? { native: require('../examples/native/server.js') } : {}),
};

for (const [name, example] of Object.entries(frameworks)) {
  describe(`${name} example`, () => {
    let server;
    before(async () => {
      server = await example.start({ port: 0, host: '127.0.0.1' });
    });
    after(() => server?.close());

    const newSession = async () => {
      const { status, body } = await postJson(`${server.url}/api/sessions`);
      assert.equal(status, 201);
      return body;
    };

    it('POST /api/sessions returns sessionId, wsUrl and expiresAt', async () => {
      const body = await newSession();
      assert.match(body.sessionId, /^[A-Za-z0-9_-]{22,}$/);
      assert.equal(body.wsUrl, `ws://${new URL(server.url).host}/session/${body.sessionId}`);
      const expiresAt = Date.parse(body.expiresAt);
      assert.ok(expiresAt > Date.now() + 29 * 60 * 1000, `expiresAt ${body.expiresAt} is 30 minutes away`);
      assert.equal(server.sessionManager.getSession(body.sessionId).sessionId, body.sessionId);
    });

    it('serves members over Server-Sent Events beside the WebSocket route, for networks that refuse the upgrade', async () => {
      const { wsUrl, sessionId } = await newSession();
      const ws = await joinedClient(wsUrl);
      const sse = await new EventStreamClient(`${server.url}/session/${sessionId}/events`).joined();
      assert.equal((await ws.nextOfType('client_connected')).json.connectionId, sse.welcome.connectionId);
      ws.send('{"type":"cursor","x":1}');
      assert.equal((await sse.nextOfType('cursor')).text, '{"type":"cursor","x":1}');
      assert.equal((await sse.send('{"type":"reply","ok":true}')).status, 202);
      assert.equal((await ws.nextOfType('reply')).text, '{"type":"reply","ok":true}');
      sse.close();
      await ws.nextOfType('client_disconnected');
      await ws.close();
    });

    it('relays text and binary both ways, byte for byte, never back to the sender', async () => {
      const { wsUrl, sessionId } = await newSession();
      const alice = await joinedClient(wsUrl);
      assert.equal(alice.welcome.sessionId, sessionId);
      assert.equal(alice.welcome.clientId, 'relay-server');
      const bob = await joinedClient(wsUrl);
      const arrival = await alice.nextOfType('client_connected');
      assert.equal(arrival.json.connectionId, bob.welcome.connectionId);

      const text = '{"type":"cursor",  "x": 1.50, "note":"caf\\u00e9 ☕"}';
      alice.send(text);
      const atBob = await bob.next();
      assert.equal(atBob.isBinary, false);
      assert.equal(atBob.text, text, 'the exact bytes, not re-serialized');

      bob.send('{"type":"reply","ok":true}');
      assert.equal((await alice.next()).text, '{"type":"reply","ok":true}');

      const bytes = Buffer.from([0, 1, 2, 253, 254, 255]);
      bob.send(bytes);
      const binary = await alice.next();
      assert.equal(binary.isBinary, true);
      assert.deepEqual(binary.data, bytes);
      alice.send(Buffer.from('binary from alice'));
      assert.deepEqual((await bob.next()).data, Buffer.from('binary from alice'));

      await assertQuiet(alice);
      await assertQuiet(bob);
      await alice.close();
      const left = await bob.nextOfType('client_disconnected');
      assert.equal(left.json.clientId, alice.welcome.connectionId);
      assert.deepEqual(left.json.data, { role: 'passive' });
      await bob.close();
    });

    it('keeps sessions apart', async () => {
      const one = await newSession();
      const two = await newSession();
      const a = await joinedClient(one.wsUrl);
      const b = await joinedClient(one.wsUrl);
      const outsider = await joinedClient(two.wsUrl);
      await a.nextOfType('client_connected');
      a.send('{"type":"secret"}');
      b.send(Buffer.from('secret bytes'));
      await b.next((m) => m.json?.type === 'secret');
      await a.next((m) => m.isBinary);
      await assertQuiet(outsider, 300);
      await Promise.all([a.close(), b.close(), outsider.close()]);
    });

    it('closes unknown sessions with 1008 "Session not found"', async () => {
      const client = new TestClient(`ws://${new URL(server.url).host}/session/no-such-session`);
      assert.deepEqual(await client.closedWithin(), { code: 1008, reason: 'Session not found' });
    });

    it('closes with 1008 "Session full" past maxClients', async () => {
      const session = server.sessionManager.createSession({ maxClients: 2 });
      const url = `ws://${new URL(server.url).host}/session/${session.sessionId}`;
      const a = await joinedClient(url);
      const b = await joinedClient(url);
      const third = new TestClient(url);
      assert.deepEqual(await third.closedWithin(), { code: 1008, reason: 'Session full' });
      assert.equal(server.sessionManager.getSession(session.sessionId).clientCount, 2);
      await Promise.all([a.close(), b.close()]);
    });

    it('deleteSession closes its clients with 1000 "Session deleted"', async () => {
      const { sessionId, wsUrl } = await newSession();
      const a = await joinedClient(wsUrl);
      const b = await joinedClient(wsUrl);
      assert.equal(server.sessionManager.deleteSession(sessionId), true);
      assert.deepEqual(await a.closedWithin(), { code: 1000, reason: 'Session deleted' });
      assert.deepEqual(await b.closedWithin(), { code: 1000, reason: 'Session deleted' });
      assert.equal(server.sessionManager.getSession(sessionId), null);
      assert.equal(server.sessionManager.deleteSession(sessionId), false);
    });
  });
}

describe('the examples, run as the book says', () => {
  const commands = {
    express: 'npm start',
    fastify: 'node examples/fastify/server.js',
    nextjs: 'npm run start:nextjs',
    native: 'node examples/native/server.js',
  };
  for (const [name, command] of Object.entries(commands).filter(([name]) => name in frameworks)) {
    it(`${name}: says what to do when its port is taken, instead of a stack trace`, async () => {
      const taken = net.createServer();
      await new Promise((resolve) => taken.listen(0, resolve));
      const port = taken.address().port;
      try {
        const script = path.join(__dirname, '..', 'examples', name, 'server.js');
        const { code, stderr } = await new Promise((resolve) =>
          execFile(process.execPath, [script], { env: { ...process.env, PORT: String(port) }, timeout: 120_000 }, (err, _stdout, stderr) =>
            resolve({ code: err?.code, stderr }),
          ),
        );
        assert.equal(code, 1);
        assert.equal(stderr.trim().split('\n').at(-1), `Port ${port} is in use. Stop what listens there, or pick another port: PORT=3001 ${command}`);
      } finally {
        taken.close();
      }
    });
  }

  it('nextjs: refuses to start unbuilt, naming the command that builds it', async () => {
    const unbuilt = fs.mkdtempSync(path.join(os.tmpdir(), 'switchyard-next-'));
    try {
      await assert.rejects(frameworks.nextjs.start({ port: 0, host: '127.0.0.1', dir: unbuilt }), {
        message: 'The Next.js example is not built yet. Build and start it with: npm run start:nextjs',
      });
    } finally {
      fs.rmSync(unbuilt, { recursive: true });
    }
  });
});

describe('nextjs example: the App Router realtime route', () => {
  let server;
  before(async () => {
    server = await frameworks.nextjs.start({ port: 0, host: '127.0.0.1' });
  });
  after(() => server?.close());

  it('answers health and where to connect, publishes a client\'s pending operations, and long-polls what it missed', async () => {
    const { sessionId } = (await postJson(`${server.url}/api/sessions`)).body;
    const health = await (await fetch(`${server.url}/api/realtime?sessionId=${sessionId}`, { headers: { 'x-user-id': 'u-7' } })).json();
    assert.deepEqual(health, { status: 'ok', wsUrl: `ws://${new URL(server.url).host}/session/${sessionId}?positions=1`, user: 'u-7' });

    const member = await joinedClient(health.wsUrl.replace('localhost', '127.0.0.1'));
    const { epoch } = member.welcome;
    const posted = await postJson(`${server.url}/api/realtime`, { sessionId, clientId: 'offline-3', operations: [{ type: 'op', n: 1 }, { type: 'op', n: 2 }] });
    assert.deepEqual(posted.body, { results: [{ offset: 1, delivered: 1 }, { offset: 2, delivered: 1 }] });
    assert.deepEqual((await member.nextOfType('publication')).json.data, { type: 'op', n: 1 });

    const missed = await (await fetch(`${server.url}/api/realtime?sessionId=${sessionId}&since=${epoch}:1`)).json();
    assert.deepEqual(missed.history.publications.map((p) => p.data), [{ type: 'op', n: 2 }]);
    // Nothing new after 2: the poll waits, and answers once something is published.
    const polling = fetch(`${server.url}/api/realtime?sessionId=${sessionId}&since=${epoch}:2&waitMs=20000`).then((r) => r.json());
    member.send('{"type":"op","n":3}');
    const polled = await polling;
    assert.deepEqual(polled.history.publications.map((p) => [p.offset, p.data.n]), [[3, 3]]);

    assert.equal((await postJson(`${server.url}/api/realtime`, { operations: [] })).status, 400);
    assert.equal((await postJson(`${server.url}/api/realtime`, { sessionId: 'nope', operations: [] })).status, 404);
    assert.equal((await fetch(`${server.url}/api/realtime?sessionId=${sessionId}&since=garbage`)).status, 400);
    await member.close();
  });
});
