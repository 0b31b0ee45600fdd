// __test__/webhooks.test.js: lifecycle webhooks from the binary to a real Express
// receiver: the six events, signed, batched and in order; an endpoint that fails and
// recovers gets every event at least once; one that stays down has its batches dropped
// and counted after --webhook-max-age.
const { describe, it, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const http = require('node:http');
const express = require('express');
const { joinedClient, postJson, fetchJson, eventually, startBinary, stopBinaries, freePort, startMixedServer, transports } = require('./helpers');

const SECRET = 'webhook secret';
const receivers = [];
const servers = [];
after(async () => {
  stopBinaries();
  await Promise.all(servers.map((s) => s.close()));
  await Promise.all(receivers.map((r) => new Promise((resolve) => r.close(resolve))));
});

/** An Express app that checks each batch's signature and keeps its events; `fail(n)` answers the next n with 500. */
async function receiver() {
  const app = express();
  const events = [];
  const batches = [];
  let failing = 0;
  app.post('/hooks', express.raw({ type: 'application/json' }), (req, res) => {
    const expected = `sha256=${crypto.createHmac('sha256', SECRET).update(req.body).digest('hex')}`;
    if (req.get('x-switchyard-signature') !== expected) return res.status(401).send('bad signature');
    if (failing > 0) {
      failing -= 1;
      return res.status(500).send('try later');
    }
    const batch = JSON.parse(req.body.toString('utf8'));
    batches.push(batch.events.length);
    events.push(...batch.events);
    res.status(204).end();
  });
  const server = http.createServer(app);
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  receivers.push(server);
  return { url: `http://127.0.0.1:${server.address().port}/hooks`, events, batches, fail: (n) => (failing = n) };
}

const webhookArgs = (url, extra = []) => ['--webhook-url', url, '--webhook-secret', SECRET, ...extra];
const send = (c, message) => c.send(JSON.stringify(message));

describe('webhooks (binary)', () => {
  it('sends the six lifecycle events, signed, in order, with their ids', async () => {
    const hooks = await receiver();
    const server = await startBinary({ args: webhookArgs(hooks.url, ['--session-timeout', '60000']) });
    const { sessionId, wsUrl } = (await postJson(`${server.base}/v1/sessions`, {})).body;
    const a = await joinedClient(wsUrl);
    send(a, { type: 'JOIN_CHANNEL', channel: 'news' });
    await a.nextOfType('CHANNEL_JOINED');
    send(a, { type: 'LEAVE_CHANNEL', channel: 'news' });
    await a.nextOfType('CHANNEL_LEFT');
    await fetchJson(`${server.base}/v1/sessions/${sessionId}`, { method: 'DELETE' });
    await a.closedWithin();
    await eventually(() => assert.equal(hooks.events.at(-1)?.name, 'session_ended'), 10_000);
    const connectionId = a.welcome.connectionId;
    const strip = ({ timestamp, ...rest }) => {
      assert.ok(Math.abs(timestamp - Date.now()) < 60_000, 'a timestamp in ms');
      return rest;
    };
    assert.deepEqual(hooks.events.map(strip), [
      { name: 'session_created', sessionId },
      { name: 'member_joined', sessionId, connectionId, clientId: connectionId },
      { name: 'channel_occupied', channel: 'news' },
      { name: 'channel_vacated', channel: 'news' },
      { name: 'member_left', sessionId, connectionId, clientId: connectionId },
      { name: 'session_ended', sessionId, reason: 'deleted' },
    ]);
    // The receiver has the events before the sender has read its answer and counted them.
    await eventually(async () => assert.deepEqual((await fetchJson(`${server.base}/stats`)).body.webhooks, { queued: 0, delivered: 6, retries: 0, dropped: 0 }));
  });

  it('sends only the events asked for, and session_ended when a session expires', async () => {
    const hooks = await receiver();
    const server = await startBinary({ args: webhookArgs(hooks.url, ['--webhook-events', 'session_ended', '--cleanup-interval', '100']) });
    const { sessionId } = (await postJson(`${server.base}/v1/sessions`, { expiresIn: 200 })).body;
    await eventually(() => assert.deepEqual(hooks.events.map((e) => [e.name, e.sessionId, e.reason]), [['session_ended', sessionId, 'expired']]), 10_000);
  });

  it('retries an endpoint that fails until it answers, losing nothing and keeping the order', async () => {
    const hooks = await receiver();
    hooks.fail(3);
    const server = await startBinary({ args: webhookArgs(hooks.url) });
    const ids = [];
    for (let i = 0; i < 5; i += 1) ids.push((await postJson(`${server.base}/v1/sessions`, {})).body.sessionId);
    await eventually(() => assert.deepEqual(hooks.events.map((e) => e.sessionId), ids), 15_000);
    await eventually(async () => assert.deepEqual((await fetchJson(`${server.base}/stats`)).body.webhooks, { queued: 0, delivered: 5, retries: 3, dropped: 0 }));
  });

  it('drops and counts what an endpoint that stays down never takes, after --webhook-max-age', async () => {
    const down = `http://127.0.0.1:${await freePort()}/hooks`;
    const server = await startBinary({ args: webhookArgs(down, ['--webhook-max-age', '500']) });
    for (let i = 0; i < 3; i += 1) await postJson(`${server.base}/v1/sessions`, {});
    await eventually(async () => assert.deepEqual((await fetchJson(`${server.base}/stats`)).body.webhooks, { queued: 0, delivered: 0, retries: (await fetchJson(`${server.base}/stats`)).body.webhooks.retries, dropped: 3 }), 15_000);
    const metrics = (await fetch(`${server.base}/metrics`).then((r) => r.text())).split('\n');
    assert.ok(metrics.some((line) => /^switchyard_webhook_dropped 3(\.0)?$/.test(line)), metrics.filter((l) => l.includes('webhook')).join('\n'));
    assert.match(server.logs(), /webhook: the endpoint is unreachable; dropped a batch/);
  });

  it('refuses a URL without a secret, or an event it does not know, at start', async () => {
    const { spawnSync } = require('node:child_process');
    const binary = require('../bin/switchyard.js').locateBinary();
    const run = (args) => spawnSync(binary, args, { encoding: 'utf8', timeout: 30_000 });
    const noSecret = run(['--webhook-url', 'http://127.0.0.1:9/hooks']);
    assert.equal(noSecret.status, 2);
    assert.match(noSecret.stderr, /--webhook-secret\) is needed/);
    const unknown = run([...webhookArgs('http://127.0.0.1:9/hooks'), '--webhook-events', 'member_joined,session_deleted']);
    assert.equal(unknown.status, 2);
    assert.match(unknown.stderr, /"session_deleted" is not one of/);
  });
});

describe('webhooks (Node)', () => {
  it('sends what happens to the manager\'s sessions and members, signed, from every transport', async () => {
    const hooks = await receiver();
    const s = await startMixedServer({ maxClientsPerSession: 4, webhooks: { url: hooks.url, secret: SECRET, events: ['session_created', 'member_joined', 'member_left'] } });
    servers.push(s);
    const { sessionId } = s.manager.createSession();
    const members = [];
    for (const transport of transports) members.push(await joinedClient(s.url(transport, sessionId)));
    for (const member of members) await member.close();
    const ids = members.map((m) => m.welcome.connectionId);
    await eventually(() => assert.equal(hooks.events.length, 1 + 2 * members.length), 10_000);
    assert.deepEqual(hooks.events.map((e) => [e.name, e.sessionId, e.connectionId]), [
      ['session_created', sessionId, undefined],
      ...ids.map((id) => ['member_joined', sessionId, id]),
      ...ids.map((id) => ['member_left', sessionId, id]),
    ]);
    await eventually(() => assert.deepEqual(s.manager.getStats().webhooks, { queued: 0, delivered: hooks.events.length, retries: 0, dropped: 0 }));
    assert.match(s.manager.metrics(), new RegExp(`^switchyard_webhook_delivered ${hooks.events.length}(\\.0)?$`, 'm'));
    assert.deepEqual(s.manager.getStats().config.webhooks, { url: hooks.url, events: ['session_created', 'member_joined', 'member_left'], maxAgeMs: 600000 });
  });

  it('refuses options it cannot use, naming them', () => {
    const { RelaySessionManager } = require('..');
    assert.throws(() => new RelaySessionManager({ webhooks: { url: 'http://127.0.0.1:9/hooks' } }), { name: 'TypeError', message: /webhooks.secret/ });
    assert.throws(() => new RelaySessionManager({ webhooks: { secret: 's' } }), { name: 'TypeError', message: /webhooks.url is needed/ });
    assert.throws(() => new RelaySessionManager({ webhooks: { url: 'ftp://x', secret: 's' } }), { name: 'TypeError', message: /http:\/\// });
  });
});
