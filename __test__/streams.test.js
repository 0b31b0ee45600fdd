// __test__/streams.test.js: session streams over real sockets, in both transports and the
// binary: positions on the upgrade URL, recovery after abrupt reconnects (every offset
// once, in order), a gap past the kept history (recovered: false, nothing replayed), and
// history, publish and presence from Node and over HTTP.
const { describe, it, after } = require('node:test');
const assert = require('node:assert/strict');
const { RelaySessionManager } = require('..');
const { TestClient, startMixedServer, startBinary, stopBinaries, eventually } = require('./helpers');

const WAIT_MS = 20_000;
const cleanups = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
  stopBinaries();
});

async function server(config = {}) {
  const s = await startMixedServer({ maxClientsPerSession: 2, history: { size: 5000, ttlMs: 600_000 }, ...config });
  cleanups.push(() => s.close());
  return s;
}

/** A member whose welcome has been read into `client.welcome`. */
async function member(url) {
  const client = new TestClient(url);
  client.welcome = (await client.nextOfType('client_connected', WAIT_MS)).json;
  return client;
}

for (const transport of ['native', 'bridge']) {
  describe(`session streams (${transport})`, () => {
    it('gives positions to the clients that ask, and the others the bytes as sent', async () => {
      const s = await server();
      s.manager.createSession({ sessionId: 'positions' });
      const numbered = await member(`${s.url(transport, 'positions')}?positions=1`);
      assert.equal(numbered.welcome.offset, 0);
      assert.match(numbered.welcome.epoch, /^[A-Za-z0-9]{8}$/);
      const plain = await member(s.url(transport, 'positions'));
      assert.equal(plain.welcome.epoch, undefined);
      plain.send('{"type":"move","x":1}');
      const publication = await numbered.nextOfType('publication', WAIT_MS);
      assert.equal(publication.text, `{"type":"publication","offset":1,"from":"${plain.welcome.connectionId}","data":{"type":"move","x":1}}`);
      numbered.send('{"type":"reply"}');
      assert.equal((await plain.nextOfType('reply', WAIT_MS)).text, '{"type":"reply"}');
      plain.send(Buffer.from([7, 7, 7]));
      const binary = await numbered.next((m) => m.isBinary, WAIT_MS);
      assert.deepEqual([...binary.data], [0, 0, 0, 0, 0, 0, 0, 3, 7, 7, 7]);
      await Promise.all([numbered.close(), plain.close()]);
    });

    it('a client reconnecting abruptly six times while another sends 3,000 messages sees every offset once, in order', async () => {
      const s = await server();
      s.manager.createSession({ sessionId: 'flood' });
      let reader = await member(`${s.url(transport, 'flood')}?positions=1`);
      const epoch = reader.welcome.epoch;
      const sender = await member(s.url(transport, 'flood'));
      const seen = [];
      const TOTAL = 3000;
      const sending = (async () => {
        for (let i = 1; i <= TOTAL; i++) {
          sender.send(`{"type":"tick","i":${i}}`);
          // Batches, so that reconnects fall among live sends as well as replays.
          if (i % 100 === 0) await new Promise((resolve) => setImmediate(resolve));
        }
      })();
      /** Reads publications into `seen` until `count` more have come, or all of them. */
      const readUpTo = async (client, count) => {
        const target = Math.min(seen.length + count, TOTAL);
        while (seen.length < target) {
          const { json } = await client.nextOfType('publication', WAIT_MS);
          seen.push(json.offset);
          assert.equal(json.data.i, json.offset, 'the offset numbers the message it carries');
        }
      };
      /** Where the run was, for a failure's message. */
      let step = 'before the first reconnect';
      const where = () => `${step}: ${seen.length} seen, the last ${JSON.stringify(seen.slice(-3))}; relay ${JSON.stringify((({ messages, slowConsumerCloses, connectionsByTransport }) => ({ messages, slowConsumerCloses, connectionsByTransport }))(s.manager.getStats()))}`;
      try {
        for (let reconnect = 0; reconnect < 6; reconnect++) {
          await readUpTo(reader, 350);
          const previous = reader.welcome.connectionId;
          // Abrupt: no close frame; the relay still holds the old connection when the new one comes.
          reader.ws.terminate();
          step = `reconnect ${reconnect + 1}`;
          reader = await member(`${s.url(transport, 'flood')}?since=${epoch}:${seen.at(-1)}&previous=${previous}`);
          assert.equal(reader.welcome.recovered, true, `reconnect ${reconnect + 1} recovered: ${JSON.stringify(reader.welcome)}`);
          assert.equal(reader.welcome.epoch, epoch);
        }
        await sending;
        step = 'after the last reconnect';
        await readUpTo(reader, TOTAL);
      } catch (err) {
        err.message = `${where()}\n${err.message}`;
        throw err;
      }
      assert.deepEqual(seen, Array.from({ length: TOTAL }, (_, i) => i + 1), 'every offset exactly once, in order');
      assert.equal(s.manager.getSession('flood').clientCount, 2, 'each reconnect replaced its past');
      await Promise.all([reader.close(), sender.close()]);
    });

    it('a gap past the kept history recovers nothing, and says so', async () => {
      const s = await server({ history: { size: 3, ttlMs: 600_000 } });
      s.manager.createSession({ sessionId: 'gap' });
      const first = await member(`${s.url(transport, 'gap')}?positions=1`);
      const { epoch } = first.welcome;
      const sender = await member(s.url(transport, 'gap'));
      sender.send('{"type":"one"}');
      await first.nextOfType('publication', WAIT_MS);
      first.ws.terminate();
      for (const type of ['two', 'three', 'four', 'five']) sender.send(`{"type":"${type}"}`);
      await eventually(() => assert.equal(s.manager.history('gap').offset, 5));
      // Server-side, through the same stream.
      assert.equal(s.manager.publish('gap', { type: 'six' }).offset, 6);
      const back = await member(`${s.url(transport, 'gap')}?since=${epoch}:1&previous=${first.welcome.connectionId}`);
      assert.deepEqual([back.welcome.recovered, back.welcome.offset], [false, 6]);
      back.send('{"type":"ping","id":"after"}');
      await back.next((m) => m.json?.type === 'pong', WAIT_MS);
      assert.deepEqual(back.inbox.filter((m) => m.json?.type === 'publication'), [], 'nothing replayed');
      await Promise.all([back.close(), sender.close()]);
    });
  });
}

describe('history, publish and presence from Node', () => {
  it('reads what was published, publishes as a member or the server, and lists members', async () => {
    const s = await server({ history: undefined });
    const { sessionId } = s.manager.createSession({ history: { size: 10, ttlMs: 60_000 } });
    const a = await member(`${s.native(sessionId)}?positions=1`);
    const b = await member(s.bridge(sessionId));
    b.send('{"type":"chat","clientId":"bob","text":"hi"}');
    await a.nextOfType('publication', WAIT_MS);

    assert.deepEqual(s.manager.publish(sessionId, { type: 'notice' }, { clientId: 'bob' }), { offset: 2, delivered: 1 });
    assert.equal((await a.nextOfType('publication', WAIT_MS)).json.from, b.welcome.connectionId, 'published as bob');
    assert.deepEqual(s.manager.publish(sessionId, Buffer.from([1, 2])), { offset: 3, delivered: 2 });

    const history = s.manager.history(sessionId);
    assert.equal(history.epoch, a.welcome.epoch);
    assert.deepEqual([history.offset, history.recovered], [3, true]);
    assert.deepEqual(history.publications.map((p) => [p.offset, p.from]), [[1, b.welcome.connectionId], [2, b.welcome.connectionId], [3, 'server']]);
    assert.deepEqual(history.publications[0].data, { type: 'chat', clientId: 'bob', text: 'hi' });
    assert.deepEqual([...history.publications[2].binary], [1, 2]);
    assert.ok(Buffer.isBuffer(history.publications[2].binary), 'a binary publication is a Buffer');
    assert.equal(typeof history.publications[0].timestamp, 'number', 'a timestamp is a number, not a BigInt');
    assert.doesNotThrow(() => JSON.stringify(history), 'res.json(history) works');
    assert.deepEqual(s.manager.history(sessionId, { since: `${history.epoch}:2` }).publications.map((p) => p.offset), [3]);
    assert.deepEqual(s.manager.history(sessionId, { since: 'other:1' }), { epoch: history.epoch, offset: 3, recovered: false, publications: [] });
    assert.equal(s.manager.history('no-such-session'), null);

    const present = s.manager.presence(sessionId);
    assert.deepEqual(present.map((p) => [p.connectionId, p.clientId]), [[a.welcome.connectionId, a.welcome.connectionId], [b.welcome.connectionId, 'bob']]);
    assert.equal(typeof present[0].connectedAt, 'number');
    assert.equal(s.manager.presence('no-such-session'), null);

    assert.throws(() => s.manager.publish(sessionId, { type: 'state_update', data: {} }, { clientId: 'bob' }), {
      message: 'NOT_ACTIVE: Only the active member may do this',
    }, 'as bob, a passive member, as over its socket');
    assert.throws(() => s.manager.publish(sessionId, { type: 'request_control' }, { clientId: 'bob' }), /Control-role messages go over the member's WebSocket/);
    assert.throws(() => s.manager.publish('no-such-session', { type: 'x' }), /Session not found: no-such-session/);
    assert.throws(() => s.manager.publish(sessionId, 'not json'), { name: 'TypeError', message: /JSON object with a string "type"/ });
    assert.throws(() => s.manager.history(sessionId, { since: 'garbage' }), { name: 'TypeError', message: /since "garbage" is not <epoch>:<offset>/ });
    assert.throws(() => s.manager.createSession({ history: { size: 10 } }), { name: 'TypeError', message: /history needs both size and ttlMs/ });
    assert.throws(() => new RelaySessionManager({ history: { size: 0, ttlMs: 5 } }), /size/);
    assert.ok(s.manager.getStats().historyBytes > 0);
    assert.deepEqual(s.manager.getStats().config.history, null);
    await Promise.all([a.close(), b.close()]);
  });

  it('keeps no stream, and relays as before, when history is off', async () => {
    const s = await server({ history: undefined });
    const { sessionId } = s.manager.createSession();
    const a = await member(`${s.native(sessionId)}?positions=1`);
    assert.equal(a.welcome.epoch, undefined, 'positions need a stream');
    assert.deepEqual(s.manager.publish(sessionId, { type: 'x' }), { delivered: 1 });
    assert.equal((await a.nextOfType('x', WAIT_MS)).text, '{"type":"x"}');
    assert.deepEqual(s.manager.history(sessionId), { epoch: null, offset: 0, recovered: false, publications: [] });
    await a.close();
  });
});

describe('history, publish and presence over HTTP (the binary)', () => {
  it('long-polls history, publishes the body, and lists presence', async () => {
    const binary = await startBinary({ args: ['--history-size', '100', '--history-ttl', '60000'] });
    const created = await (await fetch(`${binary.base}/v1/sessions`, { method: 'POST' })).json();
    const id = created.sessionId;
    const a = await member(`${binary.ws}/session/${id}?positions=1`);
    cleanups.push(() => a.close());

    const empty = await (await fetch(`${binary.base}/v1/sessions/${id}/history`)).json();
    assert.deepEqual(empty, { epoch: a.welcome.epoch, offset: 0, recovered: true, publications: [] });
    // A long poll waiting for the next publication, answered once it comes.
    const polling = fetch(`${binary.base}/v1/sessions/${id}/history?since=${empty.epoch}:0&waitMs=20000`).then((r) => r.json());
    const posted = await fetch(`${binary.base}/v1/sessions/${id}/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"type":"op","clientId":"offline-7","n":1}',
    });
    assert.deepEqual(await posted.json(), { offset: 1, delivered: 1 });
    const polled = await polling;
    assert.equal(polled.recovered, true);
    assert.deepEqual(polled.publications.map((p) => [p.offset, p.from, p.data]), [[1, 'server', { type: 'op', clientId: 'offline-7', n: 1 }]]);
    assert.equal(typeof polled.publications[0].timestamp, 'number');
    assert.equal((await a.nextOfType('publication', WAIT_MS)).json.offset, 1);

    const started = Date.now();
    const timedOut = await (await fetch(`${binary.base}/v1/sessions/${id}/history?since=${empty.epoch}:1&waitMs=200`)).json();
    assert.deepEqual(timedOut.publications, []);
    assert.ok(Date.now() - started >= 150, 'it waited before answering nothing new');

    const lost = await (await fetch(`${binary.base}/v1/sessions/${id}/history?since=other:0`)).json();
    assert.deepEqual([lost.recovered, lost.publications], [false, []]);
    assert.equal((await fetch(`${binary.base}/v1/sessions/${id}/history?since=nonsense`)).status, 400);
    assert.equal((await fetch(`${binary.base}/v1/sessions/nope/history`)).status, 404);
    const bad = await fetch(`${binary.base}/v1/sessions/${id}/messages`, { method: 'POST', body: '{"no":"type"}' });
    assert.equal(bad.status, 400);
    const passive = await fetch(`${binary.base}/v1/sessions/${id}/messages`, {
      method: 'POST',
      body: JSON.stringify({ type: 'state_update', clientId: a.welcome.connectionId, data: {} }),
    });
    assert.deepEqual([passive.status, (await passive.json()).error.code], [403, 'NOT_ACTIVE'], 'as the connected member, which is passive');

    const presence = await (await fetch(`${binary.base}/v1/sessions/${id}/presence`)).json();
    assert.deepEqual(presence.clients.map((c) => [c.connectionId, c.role]), [[a.welcome.connectionId, 'passive']]);
    assert.deepEqual(Object.keys(presence.clients[0]).sort(), ['clientId', 'connectedAt', 'connectionId', 'organizationId', 'role', 'userId']);
  });
});

describe('channel streams and presence', () => {
  it('recover a channel after an abrupt drop, and show who is there, in Node and over HTTP', async () => {
    const s = await server({ history: undefined, channels: { history: { size: 100, ttlMs: 60_000 } } });
    const join = async (url, fields) => {
      const client = new TestClient(url);
      await client.opened;
      client.send(JSON.stringify({ type: 'JOIN_CHANNEL', channel: 'desk', ...fields }));
      client.joined = (await client.nextOfType('CHANNEL_JOINED', WAIT_MS)).json;
      return client;
    };
    const reader = await join(s.sessionless('native'), { positions: true, presence: true });
    const writer = await join(s.sessionless('bridge'), {});
    const { epoch } = reader.joined;
    assert.equal((await reader.nextOfType('CHANNEL_MEMBER_JOINED', WAIT_MS)).json.channel, 'desk');
    writer.send('{"type":"note","channel":"desk","n":1}');
    assert.equal((await reader.nextOfType('publication', WAIT_MS)).json.offset, 1);
    reader.ws.terminate();
    for (let n = 2; n <= 4; n++) writer.send(`{"type":"note","channel":"desk","n":${n}}`);
    await eventually(() => assert.equal(s.manager.channelHistory('desk').offset, 4));
    const back = await join(s.sessionless('bridge'), { since: { epoch, offset: 1 } });
    assert.deepEqual([back.joined.recovered, back.joined.offset], [true, 4]);
    const replayed = [];
    for (let i = 0; i < 3; i++) replayed.push((await back.nextOfType('publication', WAIT_MS)).json.data.n);
    assert.deepEqual(replayed, [2, 3, 4]);

    const history = s.manager.channelHistory('desk', { since: `${epoch}:3` });
    assert.deepEqual(history.publications.map((p) => p.data.n), [4]);
    await eventually(() => assert.equal(s.manager.channelPresence('desk').length, 2));
    assert.deepEqual(s.manager.channelPresence('desk').map((c) => Object.keys(c).sort()), [
      ['clientId', 'connectionId', 'organizationId', 'userId'],
      ['clientId', 'connectionId', 'organizationId', 'userId'],
    ]);
    assert.throws(() => s.manager.channelHistory('bad name'), { name: 'TypeError', message: /channel name/ });
    assert.deepEqual(s.manager.getStats().config.channels, { history: { size: 100, ttlMs: 60_000 } });
    await Promise.all([back.close(), writer.close()]);
  });

  it('serves channel history and presence from the binary, following the rules of joining', async () => {
    const binary = await startBinary({ args: ['--channel-history-size', '10'] });
    const member = new TestClient(`${binary.ws}/`);
    cleanups.push(() => member.close());
    await member.opened;
    member.send('{"type":"JOIN_CHANNEL","channel":"ops","positions":true}');
    const { epoch } = (await member.nextOfType('CHANNEL_JOINED', WAIT_MS)).json;
    await fetch(`${binary.base}/v1/broadcast`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"channel":"ops","type":"alert","data":{"level":2}}' });
    assert.equal((await member.nextOfType('publication', WAIT_MS)).json.offset, 1);
    const history = await (await fetch(`${binary.base}/v1/channels/ops/history`)).json();
    assert.deepEqual([history.epoch, history.offset, history.recovered], [epoch, 1, true]);
    assert.equal(history.publications[0].data.type, 'alert');
    const presence = await (await fetch(`${binary.base}/v1/channels/ops/presence`)).json();
    assert.equal(presence.clients.length, 1);
    const forbidden = await fetch(`${binary.base}/v1/channels/user:someone/history`);
    assert.equal(forbidden.status, 403);
    assert.equal((await forbidden.json()).error.code, 'CHANNEL_FORBIDDEN');
  });
});
