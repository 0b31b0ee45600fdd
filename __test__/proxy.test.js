// __test__/proxy.test.js: the binary's backend proxy against a real Express app: connect,
// join, publish and request decided by POSTs of JSON, and a backend that is down, slow,
// failing then recovering, or answering garbage (UNAVAILABLE, 503, logged once).
const { describe, it, after } = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const express = require('express');
const WebSocket = require('ws');
const { TestClient, joinedClient, postJson, eventually, startBinary, stopBinaries, freePort, fetchJson, startMixedServer, transports } = require('./helpers');

const backends = [];
const managers = [];
after(async () => {
  stopBinaries();
  await Promise.all(managers.map((m) => m.close()));
  await Promise.all(backends.map((b) => new Promise((resolve) => b.close(resolve))));
});

/** An Express backend; `calls` records each POST by path, `behave` can replace a route's answer. */
async function backend() {
  const app = express();
  app.use(express.json());
  const calls = [];
  const behaviour = new Map();
  app.post('/:decision', async (req, res) => {
    calls.push({ path: req.params.decision, body: req.body });
    const behave = behaviour.get(req.params.decision);
    if (behave) return behave(req, res);
    switch (req.params.decision) {
      case 'connect':
        if (req.body.headers.authorization === 'Bearer banned') return res.json({ disconnect: { code: 4403, reason: 'Banned' } });
        return res.json({ result: { userId: req.body.headers.authorization?.replace('Bearer ', '') ?? 'guest', metadata: { plan: 'pro' } } });
      case 'join':
        return res.json(req.body.channel.startsWith('project:7') && req.body.userId !== 'alice' ? { error: { code: 'NOT_MEMBER', message: 'Not in project 7' } } : { result: {} });
      case 'publish':
        if (req.body.message.type === 'spam') return res.json({ error: { code: 'SPAM', message: 'No spam here' } });
        if (req.body.message.type === 'shout') return res.json({ result: { message: { ...req.body.message, text: req.body.message.text.toLowerCase() } } });
        return res.json({ result: {} });
      case 'request':
        return res.json({ result: { payload: { echoed: req.body.payload, by: req.body.userId } } });
      default:
        return res.status(404).end();
    }
  });
  const server = http.createServer(app);
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  backends.push(server);
  const base = `http://127.0.0.1:${server.address().port}`;
  return { base, calls, behave: (path, handler) => behaviour.set(path, handler), server };
}

function proxyArgs(base, decisions = ['connect', 'join', 'publish', 'request'], timeoutMs = 3000) {
  return [...decisions.flatMap((d) => [`--proxy-${d}-url`, `${base}/${d}`]), '--proxy-timeout', String(timeoutMs)];
}

async function session(server) {
  return (await postJson(`${server.base}/v1/sessions`, { maxClients: 8 })).body;
}

const send = (c, message) => c.send(JSON.stringify(message));
const answer = async (c, type) => (await c.nextOfType(type)).json;

/** The status an upgrade is answered with when it is refused. */
function refusedWith(url, headers) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers });
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (chunk) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    ws.on('open', () => reject(new Error('the upgrade was let in')));
    ws.on('error', () => {});
  });
}

describe('the backend proxy (binary)', () => {
  it('asks the backend who connects, who joins, what is published, and what requests answer', async () => {
    const app = await backend();
    const server = await startBinary({ args: proxyArgs(app.base) });
    const { sessionId, wsUrl } = await session(server);
    const alice = await joinedClient(wsUrl, { headers: { authorization: 'Bearer alice' } });
    const bob = await joinedClient(wsUrl, { headers: { authorization: 'Bearer bob', cookie: 'sid=1' } });
    const connect = app.calls.find((c) => c.path === 'connect' && c.body.headers.cookie === 'sid=1');
    assert.deepEqual(connect.body, { sessionId, headers: { authorization: 'Bearer bob', cookie: 'sid=1' }, remoteAddress: '127.0.0.1' });
    assert.deepEqual(await refusedWith(wsUrl, { authorization: 'Bearer banned' }), { status: 403, body: 'Banned' });

    send(alice, { type: 'JOIN_CHANNEL', channel: 'project:7' });
    await answer(alice, 'CHANNEL_JOINED');
    send(bob, { type: 'JOIN_CHANNEL', channel: 'project:7' });
    assert.deepEqual((await answer(bob, 'ERROR')).payload, { code: 'CHANNEL_FORBIDDEN', message: 'Not in project 7' });
    assert.deepEqual(app.calls.filter((c) => c.path === 'join').at(-1).body, { connectionId: bob.welcome.connectionId, userId: 'bob', channel: 'project:7' });

    const original = '{"type":"chat",  "text":"as sent"}';
    alice.send(original);
    assert.equal((await bob.nextOfType('chat')).text, original);
    assert.deepEqual(app.calls.filter((c) => c.path === 'publish')[0].body, {
      connectionId: alice.welcome.connectionId,
      userId: 'alice',
      sessionId,
      message: { type: 'chat', text: 'as sent' },
    });
    send(alice, { type: 'spam' });
    assert.deepEqual((await answer(alice, 'error')).payload, { code: 'PUBLISH_REFUSED', message: 'No spam here' });
    send(alice, { type: 'shout', text: 'LOUD' });
    assert.deepEqual((await bob.nextOfType('shout')).json, { type: 'shout', text: 'loud' });

    send(alice, { type: 'request', requestId: 'r1', payload: { q: 1 } });
    const response = await answer(alice, 'response');
    assert.equal(response.requestId, 'r1');
    assert.deepEqual(response.payload ?? response.data, { echoed: { q: 1 }, by: 'alice' });
  });

  it('refuses UNAVAILABLE (503 at connect) while the backend is down, and logs it once', async () => {
    const downPort = await freePort();
    const server = await startBinary({ args: proxyArgs(`http://127.0.0.1:${downPort}`, ['join', 'publish']) });
    const { wsUrl } = await session(server);
    const a = await joinedClient(wsUrl);
    const b = await joinedClient(wsUrl);
    for (let i = 0; i < 3; i += 1) {
      send(a, { type: 'chat', n: i });
      assert.deepEqual((await answer(a, 'error')).payload, { code: 'UNAVAILABLE', message: 'The application did not answer' });
    }
    send(a, { type: 'JOIN_CHANNEL', channel: 'news' });
    assert.equal((await answer(a, 'ERROR')).payload.code, 'UNAVAILABLE');
    const logged = server.logs().split('\n').filter((line) => line.includes('backend proxy'));
    assert.equal(logged.filter((line) => line.includes('endpoint="publish"') || line.includes('endpoint=publish')).length, 1, logged.join('\n'));
    assert.equal((await fetchJson(`${server.base}/health`)).status, 200);
    assert.ok(b.inbox.every((m) => m.json?.type !== 'chat'), 'nothing was relayed');

    const connecting = await startBinary({ args: proxyArgs(`http://127.0.0.1:${downPort}`, ['connect']) });
    const { wsUrl: refused } = await session(connecting);
    assert.deepEqual(await refusedWith(refused), { status: 503, body: 'The application did not answer' });
  });

  it('gives up on a backend slower than --proxy-timeout, keeps other connections going, and takes late answers nowhere', async () => {
    const app = await backend();
    const stalled = [];
    app.behave('publish', (req, res) => {
      if (req.body.message.type === 'slow') stalled.push(res);
      else res.json({ result: {} });
    });
    const server = await startBinary({ args: proxyArgs(app.base, ['publish'], 300) });
    const { wsUrl } = await session(server);
    const a = await joinedClient(wsUrl);
    const b = await joinedClient(wsUrl);
    const c = await joinedClient(wsUrl);
    send(a, { type: 'slow' });
    await eventually(() => assert.equal(stalled.length, 1));
    send(b, { type: 'chat', from: 'b' });
    assert.equal((await c.nextOfType('chat')).json.from, 'b', "another connection's message goes on meanwhile");
    assert.deepEqual((await answer(a, 'error')).payload, { code: 'UNAVAILABLE', message: 'The application did not answer' });
    stalled[0].json({ result: {} });
    send(a, { type: 'chat', from: 'a' });
    assert.equal((await c.nextOfType('chat')).json.from, 'a');
    assert.ok(c.inbox.every((m) => m.json?.type !== 'slow'), 'the late answer let nothing through');
  });

  it('recovers when a backend that answered 500 answers again, and survives garbage', async () => {
    const app = await backend();
    const answers = ['500', 'garbage', 'not-an-object', 'ok'];
    app.behave('publish', (req, res) => {
      const next = answers.shift() ?? 'ok';
      if (next === '500') return res.status(500).send('boom');
      if (next === 'garbage') return res.type('text').send('<html>not json');
      if (next === 'not-an-object') return res.json([1, 2, 3]);
      return res.json({ result: {} });
    });
    const server = await startBinary({ args: proxyArgs(app.base, ['publish']) });
    const { wsUrl } = await session(server);
    const a = await joinedClient(wsUrl);
    const b = await joinedClient(wsUrl);
    for (let i = 0; i < 3; i += 1) {
      send(a, { type: 'chat', n: i });
      assert.equal((await answer(a, 'error')).payload.code, 'UNAVAILABLE', `answer ${i}`);
    }
    send(a, { type: 'chat', n: 3 });
    assert.equal((await b.nextOfType('chat')).json.n, 3, 'relayed once the backend answers again');
    const stats = (await fetchJson(`${server.base}/stats`)).body;
    assert.equal(stats.hooks.unavailable, 3);
    assert.equal(stats.hooks.asked, 4);
    assert.equal((await fetchJson(`${server.base}/health`)).status, 200);
    const sessionless = new TestClient(server.ws);
    await sessionless.opened;
    await sessionless.close();
  });

  it("renews a lifetime the connect answer gave through the refresh URL, and ends the one it will not renew", async () => {
    const app = await backend();
    app.behave('connect', (req, res) => res.json({ result: { userId: req.body.headers.authorization.replace('Bearer ', ''), expiresAt: Date.now() + 3000 } }));
    app.behave('refresh', (req, res) =>
      req.body.userId === 'alice' ? res.json({ result: { expiresAt: Date.now() + 60_000 } }) : res.json({ error: { code: 'EXPIRED', message: 'Sign in again' } }),
    );
    const server = await startBinary({ args: [...proxyArgs(app.base, ['connect', 'refresh'])] });
    const { wsUrl } = await session(server);
    const alice = await joinedClient(wsUrl, { headers: { authorization: 'Bearer alice' } });
    const bob = await joinedClient(wsUrl, { headers: { authorization: 'Bearer bob' } });
    await answer(alice, 'token_expiring');
    const renewed = await answer(alice, 'refreshed');
    assert.ok(renewed.data.expiresAt > Date.now() + 50_000, JSON.stringify(renewed));
    assert.deepEqual(app.calls.find((c) => c.path === 'refresh' && c.body.userId === 'alice').body, { connectionId: alice.welcome.connectionId, userId: 'alice' });
    assert.deepEqual(await bob.closedWithin(15_000), { code: 1008, reason: 'Token expired' });
    send(alice, { type: 'ping', id: 'renewed' });
    assert.equal((await answer(alice, 'pong')).id, 'renewed', 'the renewed connection outlives its first lifetime');
  });

  it('refuses a URL that is not http:// at start, naming the flag', async () => {
    const { spawnSync } = require('node:child_process');
    const binary = require('../bin/switchyard.js').locateBinary();
    const run = spawnSync(binary, ['--proxy-publish-url', 'https://backend.internal/publish'], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(run.status, 2);
    assert.match(run.stderr, /--proxy-publish-url must be an absolute http:\/\/ URL/);
  });
});

describe('the backend proxy (Node, configured with URLs)', () => {
  for (const transport of transports) {
    it(`asks the backend who joins, what is published and what requests answer, beside a JavaScript hook (${transport})`, async () => {
      const app = await backend();
      const joins = [];
      const s = await startMixedServer({
        maxClientsPerSession: 4,
        hooks: { joinChannel: ({ channel }) => joins.push(channel) > 0 },
        proxy: { publishUrl: `${app.base}/publish`, requestUrl: `${app.base}/request` },
      });
      managers.push(s);
      const { sessionId } = s.manager.createSession();
      const a = await joinedClient(s.url(transport, sessionId), { headers: { 'x-user': 'alice' } });
      const b = await joinedClient(s.url(transport, sessionId));
      send(a, { type: 'JOIN_CHANNEL', channel: 'news' });
      await answer(a, 'CHANNEL_JOINED');
      assert.deepEqual(joins, ['news'], 'the join went to the JavaScript hook');
      send(a, { type: 'spam' });
      assert.deepEqual((await answer(a, 'error')).payload, { code: 'PUBLISH_REFUSED', message: 'No spam here' });
      send(a, { type: 'shout', text: 'LOUD' });
      assert.deepEqual((await b.nextOfType('shout')).json, { type: 'shout', text: 'loud' });
      send(a, { type: 'request', requestId: 7, payload: 'q' });
      const response = await answer(a, 'response');
      assert.deepEqual(response.payload ?? response.data, { echoed: 'q', by: 'alice' });
      assert.deepEqual(s.manager.getStats().config.proxy, { publishUrl: `${app.base}/publish`, requestUrl: `${app.base}/request` });
      assert.deepEqual(s.manager.getStats().config.hooks, { joinChannel: true, publish: true });
    });
  }

  it('refuses a decision given both to a hook and to the backend, and a URL that is not http://', () => {
    const { RelaySessionManager } = require('..');
    assert.throws(() => new RelaySessionManager({ hooks: { publish: () => true }, proxy: { publishUrl: 'http://127.0.0.1:9/publish' } }), { name: 'TypeError', message: /not both/ });
    assert.throws(() => new RelaySessionManager({ proxy: { joinUrl: 'https://backend/join' } }), { name: 'TypeError', message: /proxy.joinUrl must be an absolute http:\/\/ URL/ });
  });
});
