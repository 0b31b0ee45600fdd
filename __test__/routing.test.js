// __test__/routing.test.js: channels, users and organizations, requests,
// acknowledgements, control roles and message events, over real sockets, in both
// transports (and mixed), and POST /v1/broadcast on the binary.
const { describe, it, after } = require('node:test');
const assert = require('node:assert/strict');
const { TestClient, joinedClient, assertQuiet, sleep, eventually, startMixedServer } = require('./helpers');

const servers = [];
after(() => Promise.all(servers.map((s) => s.close())));

async function server(config) {
  // Room for more than the default two members: capacity is tested on its own.
  const started = await startMixedServer({ maxClientsPerSession: 8, ...config });
  servers.push(started);
  return started;
}

/** A client that identifies itself by headers; `joined` waits for the welcome (sessions only). */
async function client(url, { user, org, name } = {}, { joined = true } = {}) {
  const headers = {};
  if (user) headers['x-user'] = user;
  if (org) headers['x-org'] = org;
  if (name) headers['x-client'] = name;
  if (joined) return joinedClient(url, { headers });
  const sessionless = new TestClient(url, { headers });
  await sessionless.opened;
  return sessionless;
}

const send = (c, message) => c.send(JSON.stringify(message));
const answer = async (c, type) => (await c.nextOfType(type)).json;

for (const transport of ['native', 'bridge']) {
  const other = transport === 'native' ? 'bridge' : 'native';

  describe(`channels (${transport})`, () => {
    it('joins, publishes byte for byte to the other members across sessions and transports, and leaves', async () => {
      const s = await server();
      const [one, two] = [s.manager.createSession(), s.manager.createSession()];
      const a = await client(s.url(transport, one.sessionId));
      const b = await client(s.url(other, two.sessionId));
      const c = await client(s.sessionless(transport), {}, { joined: false });
      const notMember = await client(s.url(transport, one.sessionId));
      for (const member of [a, b, c]) {
        send(member, { type: 'JOIN_CHANNEL', channel: 'news' });
        assert.deepEqual(await answer(member, 'CHANNEL_JOINED'), { type: 'CHANNEL_JOINED', channel: 'news' });
      }
      const text = '{"type":"headline", "channel":"news", "text":"caf\\u00e9"}';
      a.send(text);
      assert.equal((await b.next((m) => m.json?.type === 'headline')).text, text);
      assert.equal((await c.next((m) => m.json?.type === 'headline')).text, text, 'a sessionless member');
      await assertQuiet(notMember, 150, (m) => m.json?.type === 'client_connected');
      assert.deepEqual(s.manager.getStats().channels, { total: 1, breakdown: { news: 3 } });

      send(notMember, { type: 'headline', channel: 'news' });
      assert.equal((await answer(notMember, 'error')).payload.code, 'NOT_IN_CHANNEL');
      send(c, { type: 'LEAVE_CHANNEL', channel: 'news' });
      assert.deepEqual(await answer(c, 'CHANNEL_LEFT'), { type: 'CHANNEL_LEFT', channel: 'news' });
      await b.close();
      await eventually(() => assert.deepEqual(s.manager.getStats().channels, { total: 1, breakdown: { news: 1 } }, 'a closed connection leaves'));
      send(a, { type: 'headline', channel: 'news' });
      await assertQuiet(c, 150);
      await Promise.all([a.close(), c.close(), notMember.close()]);
      await eventually(() => assert.deepEqual(s.manager.getStats().channels, { total: 0, breakdown: {} }, 'empty channels are deleted'));
    });

    it('refuses joins outside the allow patterns and user/org channels of others', async () => {
      const s = await server({ channels: { allow: ['chat:*', 'user:{userId}', 'org:{organizationId}'] } });
      const alice = await client(s.sessionless(transport), { user: 'alice', org: 'acme' }, { joined: false });
      for (const [channel, expected] of [
        ['chat:lobby', 'CHANNEL_JOINED'],
        ['user:alice', 'CHANNEL_JOINED'],
        ['org:acme', 'CHANNEL_JOINED'],
        ['user:bob', 'CHANNEL_FORBIDDEN'],
        ['org:globex', 'CHANNEL_FORBIDDEN'],
        ['news', 'CHANNEL_FORBIDDEN'],
        ['no spaces', 'INVALID_MESSAGE'],
      ]) {
        send(alice, { type: 'JOIN_CHANNEL', channel });
        // Upper-case types get the channel manager's `ERROR`.
        const reply = (await alice.next((m) => ['CHANNEL_JOINED', 'ERROR'].includes(m.json?.type))).json;
        assert.equal(reply.type === 'ERROR' ? reply.data.code : reply.type, expected, channel);
      }
      assert.equal(s.manager.getStats().forbidden, 3);
      await alice.close();
    });
  });

  describe(`users and organizations (${transport})`, () => {
    it('server-side sends reach exactly the matching connections', async () => {
      const s = await server();
      const { sessionId } = s.manager.createSession();
      const clients = {
        aliceLaptop: await client(s.url(transport, sessionId), { user: 'alice', org: 'acme' }),
        alicePhone: await client(s.sessionless(other), { user: 'alice', org: 'acme' }, { joined: false }),
        bob: await client(s.url(other, sessionId), { user: 'bob', org: 'acme' }),
        carol: await client(s.sessionless(transport), { user: 'carol', org: 'globex' }, { joined: false }),
      };
      for (const name of ['alicePhone', 'carol']) {
        send(clients[name], { type: 'JOIN_CHANNEL', channel: 'alerts' });
        await answer(clients[name], 'CHANNEL_JOINED');
      }
      const who = (tag) => Object.entries(clients)
        .filter(([, c]) => c.inbox.some((m) => m.json?.tag === tag))
        .map(([name]) => name);
      const expected = {};
      const reaches = async (sendIt, names) => {
        const tag = `n${Object.keys(expected).length + 1}`;
        expected[tag] = names;
        assert.equal(sendIt({ type: 'NOTE', tag }), names.length, `${tag}: the returned count`);
        await eventually(() => assert.deepEqual(who(tag), names, tag));
      };
      await reaches((m) => s.manager.sendToUser('alice', m), ['aliceLaptop', 'alicePhone']);
      await reaches((m) => s.manager.broadcastToFiltered({ organizationId: 'acme' }, m), ['aliceLaptop', 'alicePhone', 'bob']);
      await reaches((m) => s.manager.broadcastToFiltered({ organizationId: 'globex' }, m), ['carol']);
      await reaches((m) => s.manager.broadcastToChannel('alerts', m), ['alicePhone', 'carol']);
      await reaches((m) => s.manager.broadcastToFiltered({ channel: 'alerts', organizationId: 'acme' }, m), ['alicePhone']);
      await reaches((m) => s.manager.broadcast(sessionId, m), ['aliceLaptop', 'bob']);
      const except = { exceptConnectionId: clients.bob.welcome.connectionId };
      await reaches((m) => s.manager.broadcast(sessionId, m, except), ['aliceLaptop']);
      assert.equal(s.manager.getStats().users, 3, 'alice, bob and carol');

      s.manager.broadcast(sessionId, 'plain text, as is');
      assert.equal((await clients.bob.next((m) => m.text === 'plain text, as is')).isBinary, false);
      s.manager.sendToUser('bob', Buffer.from([1, 2, 3]));
      assert.deepEqual((await clients.bob.next((m) => m.isBinary)).data, Buffer.from([1, 2, 3]));
      // By now a note that went to anyone it should not have would have arrived too.
      for (const [tag, names] of Object.entries(expected)) assert.deepEqual(who(tag), names, `${tag}, later`);
      assert.throws(() => s.manager.broadcastToFiltered({}, {}), /at least one of/);
      assert.throws(() => s.manager.broadcast(sessionId, {}, { exceptConnectionId: 'nope' }), TypeError);
      assert.throws(() => s.manager.broadcastToChannel('bad name', {}), TypeError);
      await Promise.all(Object.values(clients).map((c) => c.close()));
    });

    it('shows the identity in events', async () => {
      const s = await server();
      const seen = [];
      s.manager.on('connection', (e) => seen.push(e));
      await client(s.sessionless(transport), { user: 'dana', org: 'initech', name: 'dana-tablet' }, { joined: false });
      await eventually(() => assert.deepEqual(
        seen.map(({ userId, organizationId, clientId }) => ({ userId, organizationId, clientId })),
        [{ userId: 'dana', organizationId: 'initech', clientId: 'dana-tablet' }],
      ));
    });
  });

  describe(`requests (${transport})`, () => {
    it('answers NO_HANDLER without a handler, then responses in parallel, out of order, matched by requestId', async () => {
      const s = await server({ requestTimeoutMs: 300 });
      const { sessionId } = s.manager.createSession();
      const c = await client(s.url(transport, sessionId), { user: 'erin' });
      send(c, { type: 'request', requestId: 'r0', payload: {} });
      assert.deepEqual((await answer(c, 'error')).payload, { code: 'NO_HANDLER', message: 'No request handler is registered', requestId: 'r0' });

      const contexts = [];
      s.manager.onRequest(async (payload, context) => {
        contexts.push(context);
        if (payload.action === 'fail') throw new Error('no such record');
        if (payload.action === 'never') return new Promise(() => {});
        if (payload.action === 'sync') return { sync: true };
        await sleep(payload.delay);
        return { echo: payload.value };
      });
      send(c, { type: 'request', requestId: 'slow', payload: { delay: 120, value: 1 } });
      send(c, { type: 'request', requestId: 2, payload: { delay: 10, value: 2 } });
      send(c, { type: 'request', requestId: 'boom', payload: { action: 'fail' } });
      send(c, { type: 'request', requestId: 'now', payload: { action: 'sync' } });
      send(c, { type: 'request', requestId: 'lost', payload: { action: 'never' } });
      const replies = [];
      for (let i = 0; i < 5; i++) replies.push((await c.next((m) => ['response', 'error'].includes(m.json?.type), 2000)).json);
      const byId = Object.fromEntries(replies.map((r) => [r.requestId ?? r.payload.requestId, r]));
      assert.deepEqual(byId.slow.payload, { echo: 1 });
      assert.deepEqual(byId[2].payload, { echo: 2 });
      assert.deepEqual(byId.now.payload, { sync: true });
      assert.deepEqual(byId.boom.payload, { code: 'REQUEST_FAILED', message: 'no such record', requestId: 'boom' });
      assert.equal(byId.lost.payload.code, 'REQUEST_TIMEOUT');
      assert.ok(replies.findIndex((r) => r.requestId === 2) < replies.findIndex((r) => r.requestId === 'slow'), 'the quick one came first');
      assert.equal(contexts[0].userId, 'erin');
      assert.equal(contexts[0].connectionId, c.welcome.connectionId);
      assert.equal(contexts[0].sessionId, sessionId);
      assert.equal(contexts[0].requestId, 'slow');
      assert.equal(s.manager.getStats().requests, 5);
      await c.close();
    });
  });

  describe(`acknowledgements (${transport})`, () => {
    it('ACKs with the delivered count, and NACKs a refusal in place of its error', async () => {
      const s = await server();
      const { sessionId } = s.manager.createSession();
      const a = await client(s.url(transport, sessionId));
      await client(s.url(other, sessionId));
      await client(s.url(transport, sessionId));
      send(a, { type: 'move', id: 'm1', ack: true });
      const ack = await answer(a, 'ACK');
      assert.deepEqual([ack.correlationId, ack.delivered, typeof ack.timestamp], ['m1', 2, 'number']);
      send(a, { type: 'JOIN_CHANNEL', channel: 'room' });
      await answer(a, 'CHANNEL_JOINED');
      send(a, { type: 'say', channel: 'room', id: 'm2', ack: true });
      assert.equal((await answer(a, 'ACK')).delivered, 0, 'alone in the channel');
      send(a, { type: 'say', channel: 'elsewhere', id: 'm3', ack: true });
      const nack = await answer(a, 'NACK');
      assert.deepEqual([nack.correlationId, nack.payload.code], ['m3', 'NOT_IN_CHANNEL']);
      send(a, { type: 'move', id: 'm4' });
      await assertQuiet(a, 150, (m) => m.json?.type === 'client_connected');
      const stats = s.manager.getStats();
      assert.deepEqual([stats.acks, stats.nacks], [2, 1]);
    });

    it("acknowledges every message with an id under ack: 'always', none under 'never'", async () => {
      for (const [ack, expected] of [['always', 'ACK'], ['never', null]]) {
        const s = await server({ ack });
        const { sessionId } = s.manager.createSession();
        const a = await client(s.url(transport, sessionId));
        send(a, { type: 'move', id: 'x' });
        if (expected) assert.equal((await answer(a, expected)).correlationId, 'x');
        else await assertQuiet(a, 150);
      }
    });
  });

  describe(`control roles (${transport})`, () => {
    it('grants, forwards, swaps, declines, drops passive updates, and survives the active member leaving mid-transfer', async () => {
      const s = await server({ defaultConflictResolution: 'user-choice' });
      const { sessionId } = s.manager.createSession();
      const a = await client(s.url(transport, sessionId), { name: 'alice' });
      const b = await client(s.url(other, sessionId), { name: 'bob' });
      const c = await client(s.url(transport, sessionId), { name: 'carol' });

      // A passive member's update is dropped without a word: the ping after it is the first answer.
      send(b, { type: 'state_update', v: 1 });
      send(b, { type: 'ping' });
      assert.equal((await b.next((m) => m.json?.type !== 'client_connected')).json.type, 'pong');
      send(a, { type: 'request_control' });
      assert.equal((await answer(a, 'accept_control')).data.granted, true);
      assert.equal(s.manager.getSession(sessionId).activeClientId, 'alice');
      send(a, { type: 'state_update', v: 2 });
      assert.equal((await answer(b, 'state_update')).v, 2);

      send(b, { type: 'request_control', clientId: 'bob', data: { note: 'my turn' } });
      const asked = await answer(a, 'request_control');
      assert.deepEqual([asked.clientId, asked.data], ['bob', { note: 'my turn' }]);
      send(c, { type: 'request_control' });
      assert.deepEqual((await answer(c, 'decline_control')).data, { reason: 'transfer_in_progress' });
      send(a, { type: 'decline_control', data: { reason: 'busy' } });
      assert.deepEqual((await answer(b, 'decline_control')).data, { reason: 'busy' });

      send(b, { type: 'request_control' });
      await answer(a, 'request_control');
      send(a, { type: 'accept_control', clientId: 'alice', data: {} });
      assert.equal((await answer(b, 'accept_control')).clientId, 'alice', 'the accept as its sender wrote it');
      assert.deepEqual((await answer(c, 'confirm_transfer')).data, { newActiveClient: 'bob' });
      assert.equal(s.manager.getSession(sessionId).activeClientId, 'bob');

      send(c, { type: 'request_control', clientId: 'carol', data: {} });
      assert.equal((await answer(b, 'request_control')).clientId, 'carol');
      await b.close();
      assert.deepEqual((await answer(c, 'client_disconnected')).data, { role: 'active' });
      assert.equal((await answer(c, 'accept_control')).data.granted, true, 'the waiting requester gets control');
      assert.equal(s.manager.getSession(sessionId).activeClientId, 'carol');
      send(a, { type: 'role_changed', data: { role: 'active' } });
      assert.deepEqual((await answer(c, 'role_changed')).data, { role: 'active' });
      assert.equal(s.manager.getSession(sessionId).activeClientId, 'alice', 'announcing itself active takes control');
      assert.equal((await answer(c, 'accept_control')).clientId, 'alice', 'and the member it took control from is told, in its name');
      send(a, { type: 'release_control' });
      await answer(c, 'release_control');
      assert.equal(s.manager.getSession(sessionId).activeClientId, null);
    });
  });

  describe(`message events (${transport})`, () => {
    it('shows the app only the types it asked for, with the sender and the parsed message', async () => {
      const s = await server();
      const { sessionId } = s.manager.createSession();
      const seen = [];
      s.manager.on('message', { types: ['JOB_UPDATE', 'DONE'] }, (e) => seen.push(e));
      const a = await client(s.url(transport, sessionId), { user: 'fay' });
      const b = await client(s.url(transport, sessionId));
      send(a, { type: 'cursor', x: 1 });
      send(a, { type: 'JOB_UPDATE', progress: 50 });
      send(a, { type: 'DONE' });
      await b.next((m) => m.json?.type === 'DONE');
      await eventually(() => assert.deepEqual(
        seen.map(({ type, message, userId, connectionId }) => ({ type, message, userId, connectionId })),
        [
          { type: 'JOB_UPDATE', message: { type: 'JOB_UPDATE', progress: 50 }, userId: 'fay', connectionId: a.welcome.connectionId },
          { type: 'DONE', message: { type: 'DONE' }, userId: 'fay', connectionId: a.welcome.connectionId },
        ],
      ));
      assert.throws(() => s.manager.on('message', () => {}), /types/);
      assert.throws(() => s.manager.on('message', { types: [] }, () => {}), /types/);
    });
  });
}
