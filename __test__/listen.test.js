// __test__/listen.test.js: listen(), a port of the relay's own served from Rust. Its
// clients share sessions with attach's and the bridge's, reach the app's listeners, are
// checked for tokens, and whatever is not a WebSocket upgrade is answered and closed
// without harming anyone else. Skipped where the addon has no native transport.
const { describe, it, after } = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const path = require('node:path');
const readline = require('node:readline');
const { once } = require('node:events');
const { spawn } = require('node:child_process');
const { RelaySessionManager } = require('..');
const { TestClient, joinedClient, eventually, RawClient, upgradeRequest, clientFrame, startMixedServer, hasNativeTransport } = require('./helpers');
const { sign, now } = require('./jwt');

const stops = [];
after(() => Promise.all(stops.map((stop) => stop())));

/** A manager serving its own port on 127.0.0.1: the manager, the port and a session URL maker. */
function listening(config, options) {
  const manager = new RelaySessionManager({ maxClientsPerSession: 8, ...config });
  manager.start();
  const address = manager.listen({ host: '127.0.0.1', ...options });
  stops.push(() => manager.stop({ timeoutMs: 200 }));
  return { manager, port: address.port, address, url: (id) => `ws://127.0.0.1:${address.port}/session/${id}` };
}

/** Two clients of one session relaying to each other. */
async function assertRelaying(a, b, tag) {
  a.send(JSON.stringify({ type: 'check', tag }));
  assert.equal((await b.next((m) => m.json?.tag === tag)).json.type, 'check');
}

/** Sends `bytes` on a raw connection and returns the HTTP answer's head, once the server has closed. */
async function answerTo(port, bytes) {
  const raw = new RawClient(port);
  await raw.connected;
  raw.write(bytes);
  const head = await raw.responseHead();
  await raw.ended;
  return head;
}

describe('listen()', { skip: !hasNativeTransport && 'no native transport in this build' }, () => {
  it('serves its own port: its clients relay among themselves and with attach and bridge clients of the same sessions', async () => {
    const mixed = await startMixedServer({ maxClientsPerSession: 8 });
    stops.push(() => mixed.close());
    const address = mixed.manager.listen({ host: '127.0.0.1', port: 0 });
    const { port } = address;
    assert.deepEqual(address, { host: '127.0.0.1', port });
    assert.ok(port > 0 && port !== mixed.port, 'the system chose a port of its own');
    const { sessionId } = mixed.manager.createSession();
    const own = await joinedClient(`ws://127.0.0.1:${port}/session/${sessionId}`);
    const attached = await joinedClient(mixed.native(sessionId));
    const bridged = await joinedClient(mixed.bridge(sessionId));
    assert.equal(own.welcome.sessionId, sessionId);
    const text = '{"type":"cursor",  "x": 1.50, "note":"caf\\u00e9 ☕"}';
    own.send(text);
    assert.equal((await attached.next((m) => m.json?.type === 'cursor')).text, text, 'byte for byte');
    assert.equal((await bridged.next((m) => m.json?.type === 'cursor')).text, text);
    await assertRelaying(bridged, own, 'from the bridge');
    await assertRelaying(attached, own, 'from attach');
    const bytes = Buffer.from([0, 1, 2, 253, 254, 255]);
    attached.send(bytes);
    assert.deepEqual((await own.next((m) => m.isBinary)).data, bytes);
    await Promise.all([own.close(), attached.close(), bridged.close()]);
  });

  it("tells the app's listeners of its connections, messages and departures", async () => {
    const { manager, url } = listening();
    const seen = [];
    manager.on('connection', (e) => seen.push(['connection', e.connectionId]));
    manager.on('message', { types: ['note'] }, (e) => seen.push(['message', e.connectionId, e.message.text]));
    manager.on('disconnect', (e) => seen.push(['disconnect', e.connectionId]));
    const { sessionId } = manager.createSession();
    const alice = await joinedClient(url(sessionId));
    const bob = await joinedClient(url(sessionId));
    alice.send(JSON.stringify({ type: 'note', text: 'hello' }));
    await bob.nextOfType('note');
    await alice.close();
    const id = alice.welcome.connectionId;
    await eventually(() => assert.deepEqual(seen.filter(([, conn]) => conn === id), [['connection', id], ['message', id, 'hello'], ['disconnect', id]]));
    assert.equal(manager.getStats().activeConnections, 1);
    await bob.close();
  });

  it('checks tokens when auth is on: none or a bad one is answered 401, a good one joins as its claims', async () => {
    const secret = 'a secret of at least thirty-two bytes';
    const { manager, url, port } = listening({ auth: { jwt: { secret } } });
    const users = [];
    manager.on('connection', (e) => users.push(e.userId));
    const { sessionId } = manager.createSession();
    assert.match(await answerTo(port, upgradeRequest(`/session/${sessionId}`)), /^HTTP\/1.1 401 Unauthorized\r\n[^]*WWW-Authenticate: Bearer\r\n/);
    const forged = sign({ sub: 'mallory', exp: now() + 60 }, { key: 'some other secret, just as long' });
    assert.match(await answerTo(port, upgradeRequest(`/session/${sessionId}?token=${forged}`)), /^HTTP\/1.1 401 /);
    const token = sign({ sub: 'alice', exp: now() + 60 }, { key: secret });
    const alice = await joinedClient(`${url(sessionId)}?token=${token}`);
    const bob = await joinedClient(url(sessionId), { headers: { authorization: `Bearer ${sign({ sub: 'bob', exp: now() + 60 }, { key: secret })}` } });
    await assertRelaying(alice, bob, 'verified');
    await eventually(() => assert.deepEqual(users, ['alice', 'bob']));
    await Promise.all([alice.close(), bob.close()]);
  });

  it("asks the app's authenticate as attach does: it sees the request, null is 401, a throw, a rejection or a bad identity 500, an identity joins as it says", async (t) => {
    const printed = [];
    t.mock.method(console, 'error', (...args) => printed.push(args.join(' ')));
    const asked = [];
    const { manager, url, port } = listening({}, {
      authenticate: (request) => {
        asked.push(request);
        const who = request.headers['x-user'];
        if (who === 'boom') throw new Error('auth backend down');
        if (who === 'rejecting') return Promise.reject(new Error('directory unreachable'));
        if (who === 'numeric') return { userId: 42 };
        if (who === 'late') return new Promise((resolve) => setTimeout(() => resolve({ userId: 'late' }), 50));
        if (who === 'late-no') return Promise.resolve(null);
        return who ? { userId: who, organizationId: 'org-1' } : null;
      },
    });
    const users = [];
    manager.on('connection', (e) => users.push([e.userId, e.organizationId]));
    const { sessionId } = manager.createSession();
    const statusOf = async (who) => {
      const head = await answerTo(port, upgradeRequest(`/session/${sessionId}`, { headers: who ? { 'x-user': who } : {} }));
      return Number(/^HTTP\/1\.1 (\d+) /.exec(head)[1]);
    };
    assert.equal(await statusOf(null), 401);
    assert.equal(await statusOf('late-no'), 401);
    assert.equal(await statusOf('boom'), 500);
    assert.equal(await statusOf('rejecting'), 500);
    assert.equal(await statusOf('numeric'), 500);
    const said = printed.join('\n');
    assert.match(said, /listen's authenticate threw: .*auth backend down/);
    assert.match(said, /listen's authenticate rejected: .*directory unreachable/);
    assert.match(said, /listen's authenticate returned a bad identity: .*userId/);

    const raw = new RawClient(port);
    await raw.connected;
    const headers = { 'x-user': 'late', Cookie: 'a=1', cookie: 'b=2', 'X-List': 'one', 'x-list': 'two', 'User-Agent': 'first', 'user-agent': 'second' };
    // Bytes sent while authenticate is still deciding reach the relay after the upgrade.
    raw.write(Buffer.concat([Buffer.from(upgradeRequest(`/session/${sessionId}?tab=3`, { headers })), clientFrame(1, '{"type":"while-deciding"}')]));
    const alice = await joinedClient(url(sessionId), { headers: { 'x-user': 'alice' } });
    assert.equal((await alice.next((m) => m.json?.type === 'while-deciding')).text, '{"type":"while-deciding"}');
    const request = asked.find((r) => r.headers['x-user'] === 'late');
    assert.deepEqual(
      { method: request.method, url: request.url, cookie: request.headers.cookie, list: request.headers['x-list'], agent: request.headers['user-agent'], host: request.headers.host },
      { method: 'GET', url: `/session/${sessionId}?tab=3`, cookie: 'a=1; b=2', list: 'one, two', agent: 'first', host: '127.0.0.1' },
    );
    assert.deepEqual(request.socket, { remoteAddress: '127.0.0.1', remotePort: raw.socket.localPort });
    await eventually(() => assert.deepEqual(users.sort(), [['alice', 'org-1'], ['late', undefined]]));
    raw.socket.destroy();
    await alice.close();
  });

  it('lets authenticate add to a token: the fields it gives override the claims', async () => {
    const secret = 'a secret of at least thirty-two bytes';
    const { manager, url } = listening({ auth: { jwt: { secret, organizationClaim: 'org' } } }, { authenticate: async () => ({ organizationId: 'org-from-app' }) });
    const users = [];
    manager.on('connection', (e) => users.push([e.userId, e.organizationId]));
    const { sessionId } = manager.createSession();
    const token = sign({ sub: 'alice', org: 'org-from-token', exp: now() + 60 }, { key: secret });
    const alice = await joinedClient(`${url(sessionId)}?token=${token}`);
    await eventually(() => assert.deepEqual(users, [['alice', 'org-from-app']]));
    await alice.close();
  });

  it('answers 503 to an upgrade whose authenticate has not answered when the manager stops', async () => {
    let asked;
    const wasAsked = new Promise((resolve) => (asked = resolve));
    const { manager, port } = listening({}, {
      authenticate: () => {
        asked();
        return new Promise(() => {});
      },
    });
    const { sessionId } = manager.createSession();
    const raw = new RawClient(port);
    await raw.connected;
    raw.write(upgradeRequest(`/session/${sessionId}`));
    await wasAsked;
    await manager.stop({ timeoutMs: 1000 });
    assert.match(await raw.responseHead(), /^HTTP\/1\.1 503 Service Unavailable\r\n/);
    await raw.ended;
  });

  it('counts upgrades waiting for authenticate among the 256 unfinished handshakes an address may have', async () => {
    let release;
    const released = new Promise((resolve) => (release = resolve));
    let asked = 0;
    const { manager, port } = listening({}, {
      authenticate: async () => {
        asked++;
        await released;
        return { userId: 'patient' };
      },
    });
    const waiting = [];
    for (let i = 0; i < 256; i++) waiting.push(new RawClient(port));
    await Promise.all(waiting.map((raw) => raw.connected));
    for (const raw of waiting) raw.write(upgradeRequest('/session/none-such'));
    await eventually(() => assert.equal(asked, 256), 30_000);
    const extra = new RawClient(port);
    await extra.connected;
    extra.write(upgradeRequest('/session/none-such'));
    await extra.ended;
    assert.equal(extra.received.length, 0, 'closed at once, without an answer');
    release();
    const { sessionId } = manager.createSession();
    const heads = await Promise.all(waiting.map((raw) => raw.responseHead()));
    assert.ok(heads.every((head) => /^HTTP\/1\.1 101 /.test(head)), 'each waiting upgrade is answered once authenticate is');
    for (const raw of waiting) raw.socket.destroy();
    const alice = await eventually(() => joinedClient(`ws://127.0.0.1:${port}/session/${sessionId}`), 30_000);
    await alice.close();
  });

  it('refuses an authenticate that is not a function', () => {
    const manager = new RelaySessionManager();
    assert.throws(() => manager.listen({ host: '127.0.0.1', authenticate: 'yes' }), { name: 'TypeError', message: /authenticate must be a function, got/ });
  });

  it('answers what is not an upgrade to its path, closes it, and goes on relaying', async () => {
    const { manager, url, port } = listening({}, { path: '/relay/:sessionId' });
    const { sessionId } = manager.createSession();
    const alice = await joinedClient(`ws://127.0.0.1:${port}/relay/${sessionId}`);
    const bob = await joinedClient(`ws://127.0.0.1:${port}/relay/${sessionId}`);
    const answers = {
      'a path it does not serve': [upgradeRequest(`/session/${sessionId}`), 404],
      'a plain GET': [`GET /relay/${sessionId} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`, 400],
      'a POST': [`POST /relay/${sessionId} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n`, 400],
      'a wrong version': [upgradeRequest(`/relay/${sessionId}`, { version: '8' }), 400],
      'a bad key': [upgradeRequest(`/relay/${sessionId}`, { key: 'short' }), 400],
      'bytes that are not HTTP': ['\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n', 400],
      'a head past 8 KiB': [upgradeRequest(`/relay/${sessionId}`, { headers: { 'x-padding': 'p'.repeat(9000) } }), 431],
      'more than 64 headers': [upgradeRequest(`/relay/${sessionId}`, { headers: Object.fromEntries([...Array(70).keys()].map((i) => [`x-h${i}`, 'v'])) }), 431],
    };
    for (const [what, [bytes, status]] of Object.entries(answers)) {
      assert.match(await answerTo(port, bytes), new RegExp(`^HTTP/1.1 ${status} `), what);
    }
    assert.ok(manager.getStats().handshakeFailures >= Object.keys(answers).length, 'each is counted');
    assert.equal((await new TestClient(url(sessionId)).closed).code, 1006, 'the default path is not served when another is given');
    await assertRelaying(alice, bob, 'after all of them');
    await Promise.all([alice.close(), bob.close()]);
  });

  it('holds at most 256 unfinished handshakes from one address: more are closed at once, and the port serves again once they go', async () => {
    const { manager, url, port } = listening();
    const silent = [];
    for (let i = 0; i < 256; i++) silent.push(new RawClient(port));
    await Promise.all(silent.map((s) => s.connected));
    const { sessionId } = manager.createSession();
    // The listener counts a connection once it has accepted it: until all 256 are
    // counted, which takes the runtime a moment under load, a real client still gets in
    // (and is let go, to try again).
    await eventually(async () => {
      const extra = new RawClient(port);
      await extra.connected;
      extra.write(upgradeRequest(`/session/${sessionId}`));
      const answered = extra.responseHead();
      answered.catch(() => {});
      await Promise.race([extra.ended, answered]);
      extra.socket.destroy();
      assert.equal(extra.received.length, 0, 'closed at once, without an answer');
    }, 30_000);
    for (const s of silent) s.socket.destroy();
    const alice = await eventually(() => joinedClient(url(sessionId)), 30_000);
    await alice.close();
  });

  it('closes its port at stop(), with its clients; listens again after start()', async () => {
    const { manager, url, port } = listening();
    const { sessionId } = manager.createSession();
    const alice = await joinedClient(url(sessionId));
    await manager.stop({ timeoutMs: 1000 });
    assert.equal((await alice.closed).code, 1001);
    await eventually(
      () =>
        new Promise((resolve, reject) => {
          const socket = net.connect(port, '127.0.0.1');
          socket.on('error', (err) => (err.code === 'ECONNREFUSED' ? resolve() : reject(err)));
          socket.on('connect', () => {
            socket.destroy();
            reject(new Error('the port still accepts'));
          });
        }),
    );
    assert.throws(() => manager.listen({ host: '127.0.0.1' }), /stopped: call start\(\) before listen\(\)/);
    manager.start();
    const again = manager.listen({ host: '127.0.0.1', port });
    assert.equal(again.port, port, 'the same port, free again');
    const { sessionId: next } = manager.createSession();
    const bob = await joinedClient(url(next));
    await bob.close();
  });

  it('keeps a Node process that only listens alive until stop(), which lets it exit', async () => {
    const script = `
      const { RelaySessionManager } = require(${JSON.stringify(path.resolve(__dirname, '..'))});
      process.channel.unref();
      const relay = new RelaySessionManager();
      relay.start();
      const { port } = relay.listen({ host: '127.0.0.1' });
      console.log(JSON.stringify({ port, sessionId: relay.createSession().sessionId }));
      process.once('message', () => relay.stop({ timeoutMs: 1000 }));
    `;
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit', 'ipc'] });
    const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    stops.push(() => child.kill('SIGKILL'));
    const [line] = await once(readline.createInterface({ input: child.stdout }), 'line');
    const { port, sessionId } = JSON.parse(line);
    const alice = await joinedClient(`ws://127.0.0.1:${port}/session/${sessionId}`);
    const bob = await joinedClient(`ws://127.0.0.1:${port}/session/${sessionId}`);
    await assertRelaying(alice, bob, 'in a process that only listens');
    child.send('stop');
    assert.equal((await alice.closed).code, 1001);
    assert.deepEqual(await exited, { code: 0, signal: null }, 'nothing else holds the process once the port is closed');
  });

  it('refuses bad options and a port in use with errors that say so', async () => {
    const { manager, port } = listening();
    assert.throws(() => manager.listen({ port: 70000 }), { name: 'TypeError', message: /port must be a whole number from 0 to 65535, got 70000/ });
    assert.throws(() => manager.listen({ port: '80' }), { name: 'TypeError', message: /port must be a whole number/ });
    assert.throws(() => manager.listen({ path: 'session' }), { name: 'TypeError', message: /path must start with '\/'/ });
    assert.throws(() => manager.listen({ prot: 1 }), { name: 'TypeError', message: /prot/ });
    assert.throws(() => manager.listen({ host: '127.0.0.1', port }), new RegExp(`cannot listen on 127.0.0.1:${port}: .*(in use|AddrInUse)`, 'i'));
  });
});
