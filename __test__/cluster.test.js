// __test__/cluster.test.js: clusters on Redis. A real `redis-server` of the tests' own,
// three `switchyard` binaries and Node managers in one cluster: the session directory,
// capacity and deletion everywhere, relay and channel publications across nodes
// (verbatim, no echo, in order, once), server sends from any node and from a worker with
// no clients, presence, a SIGKILLed node, Redis killed and restarted, and clients that
// come in through a round-robin proxy with no stickiness; all of it on one Redis and again
// on a Redis Cluster of three masters and three replicas, where a session's slot is also
// moved and a master SIGKILLed. Without redis-server the tests say loudly that they were
// skipped; under CI=true that is a failure.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const { RelaySessionManager } = require('..');
const { TestClient, fetchJson, postJson, eventually, startBinary, stopBinaries, startMixedServer, startRedis, startRedisCluster, redisServerPath } = require('./helpers');

const HEARTBEAT_TIMEOUT_MS = 4000;
const NODE_ARGS = ['--max-clients-per-session', '10', '--heartbeat-timeout', String(HEARTBEAT_TIMEOUT_MS), '--ping-interval', '1000'];
/** Long enough for news to cross the cluster on a loaded machine. */
const CROSSING_MS = 5000;

if (!redisServerPath()) {
  const message = 'redis-server not found: the cluster tests were SKIPPED (install it with apt-get install redis-server)';
  if (process.env.CI === 'true') {
    it('has redis-server to run the cluster tests (CI=true)', () => assert.fail(message));
  } else {
    console.warn(`\n*** ${message} ***\n`);
    it('cluster tests', { skip: message }, () => {});
  }
} else {
  describe('on one Redis server', () => clusterTests({ on: 'clusters on Redis', startRedis: () => startRedis() }));
  // The same on a Redis Cluster, which refuses a command, script or pipeline over keys of
  // two slots and shards pub/sub: every key and channel of a topic shares its hash tag.
  describe('on a Redis Cluster of three masters and three replicas', () =>
    clusterTests({ on: 'clusters on a Redis Cluster', startRedis: () => startRedisCluster(), startOwn: () => startRedisCluster({ masters: 1, replicas: 0 }), sharded: true }));
}

/** A TCP proxy that sends each new connection to the next of `ports` in turn; while
 * `down`, it refuses new ones. */
async function roundRobin(ports) {
  let next = 0;
  let up = true;
  const sockets = new Set();
  const proxy = net.createServer((client) => {
    if (!up) return client.destroy();
    const upstream = net.connect(ports[next++ % ports.length], '127.0.0.1');
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('error', () => {});
      socket.on('close', () => sockets.delete(socket));
    }
    client.pipe(upstream);
    upstream.pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  return {
    port: proxy.address().port,
    /** Cuts every connection through it at once, as a network that drops. */
    cutAll() {
      for (const socket of sockets) socket.destroy();
    },
    /** Cuts every connection and refuses new ones until `restore()`. */
    down() {
      up = false;
      for (const socket of sockets) socket.destroy();
    },
    restore() {
      up = true;
    },
    close: () => new Promise((resolve) => {
      for (const socket of sockets) socket.destroy();
      proxy.close(resolve);
    }),
  };
}

const health = async (node) => (await fetchJson(`${node.base}/health`)).body;
/** What the binaries logged about their links to Redis, for a failure's message. */
const linkEvents = (binaries) => binaries.flatMap((node) => node.logs().split('\n').filter((line) => /Redis|lease/.test(line))).join('\n');
const presenceOn = async (node, id) => (await fetchJson(`${node.base}/v1/sessions/${id}/presence`)).body.clients ?? [];

/** Sends `count` numbered messages from each client, and checks every other got each once, in order. */
async function everyoneHearsEveryone(clients, count, label) {
  for (const [index, client] of clients.entries()) {
    for (let n = 0; n < count; n++) client.send(JSON.stringify({ type: 'seq', label, from: index, n }));
  }
  for (const [index, client] of clients.entries()) {
    const heard = clients.map(() => []);
    while (heard.reduce((sum, list) => sum + list.length, 0) < (clients.length - 1) * count) {
      const { json } = await client.next((m) => m.json?.type === 'seq' && m.json.label === label, CROSSING_MS);
      assert.notEqual(json.from, index, `client ${index} got its own message back`);
      heard[json.from].push(json.n);
    }
    for (const [from, list] of heard.entries()) {
      if (from !== index) assert.deepEqual(list, [...Array(count).keys()], `client ${index} heard client ${from}'s messages once each, in order`);
    }
  }
  for (const client of clients) {
    assert.equal(client.inbox.filter((m) => m.json?.label === label).length, 0, 'and nothing more');
  }
}

/** Runs `use` with a client of `redis`, to look at what the nodes keep there. */
async function inRedis(redis, use) {
  const client = await redis.client();
  try {
    return await use(client);
  } finally {
    client.destroy();
  }
}

/** The cluster tests, on the Redis `startRedis` starts; `startOwn` starts one for a test
 * alone; `sharded`, a Redis Cluster, also has its slots moved and a master killed. */
function clusterTests({ on, startRedis, startOwn = startRedis, sharded = false }) {
  let redis;
  let nodes;
  let managerNode;
  let worker;
  const closers = [];

  before(async () => {
    redis = await startRedis();
    // A cluster is named both ways: one redis+cluster:// URL, or each of its nodes.
    const urls = (id) => (redis.seeds && id === 'b' ? redis.seeds : [redis.url]).flatMap((url) => ['--redis-url', url]);
    nodes = await Promise.all(['a', 'b', 'c'].map((id) => startBinary({ args: [...NODE_ARGS, ...urls(id), '--node-id', id] })));
    const named = redis.seeds ? { cluster: redis.seeds } : { url: redis.url };
    managerNode = await startMixedServer({ redis: { ...named, nodeId: 'm' }, maxClientsPerSession: 10, heartbeatTimeoutMs: HEARTBEAT_TIMEOUT_MS });
    closers.push(() => managerNode.close());
    // A worker: a manager with no server and no clients, publishing into the cluster.
    worker = new RelaySessionManager({ redis: { url: redis.url, nodeId: 'worker' }, heartbeatTimeoutMs: HEARTBEAT_TIMEOUT_MS });
    closers.push(() => worker.stop({ timeoutMs: 200 }));
    await eventually(async () => {
      for (const node of nodes) assert.equal((await health(node)).cluster?.peers, 4, 'every node sees the four others');
      assert.equal(managerNode.manager.getStats().cluster?.peers, 4);
    }, 10000);
  });

  after(async () => {
    for (const close of closers.reverse()) await close();
    stopBinaries();
    await redis?.kill();
  });

  describe(`${on}: the session directory`, () => {
    it('sees a session created on one node on every node, keeps ids unique, and counts capacity across nodes', async () => {
      const [a, b, c] = nodes;
      assert.equal((await postJson(`${a.base}/v1/sessions`, { sessionId: 'dir-1', maxClients: 2 })).status, 201);
      for (const node of [b, c]) assert.equal((await fetchJson(`${node.base}/v1/sessions/dir-1`)).status, 200, 'GET on another node');
      await eventually(() => assert.equal(managerNode.manager.getSession('dir-1')?.sessionId, 'dir-1'), CROSSING_MS);
      assert.equal((await postJson(`${b.base}/v1/sessions`, { sessionId: 'dir-1' })).status, 409, 'the id is taken cluster-wide');

      const first = await new TestClient(`${a.ws}/session/dir-1`).joined();
      const second = await new TestClient(`${b.ws}/session/dir-1`).joined();
      const heard = await first.nextOfType('client_connected', CROSSING_MS);
      assert.equal(heard.json.connectionId, second.welcome.connectionId, 'a join on one node is announced on the other');
      await eventually(async () => assert.equal((await presenceOn(c, 'dir-1')).length, 2), CROSSING_MS);
      assert.equal((await fetchJson(`${c.base}/v1/sessions/dir-1`)).body.clientCount, 2, 'clientCount counts every node');
      const third = new TestClient(`${c.ws}/session/dir-1`);
      assert.deepEqual(await third.closedWithin(CROSSING_MS), { code: 1008, reason: 'Session full' }, 'two members on two nodes fill a session of two');
      await Promise.all([first.close(), second.close()]);
    });

    it('lets one node of three create an id they are all asked for at once, and fills the last places once', async () => {
      const created = await Promise.all(nodes.map((node) => postJson(`${node.base}/v1/sessions`, { sessionId: 'race-1', maxClients: 2 })));
      assert.deepEqual(created.map((answer) => answer.status).sort(), [201, 409, 409]);
      for (const node of nodes) await eventually(async () => assert.equal((await fetchJson(`${node.base}/v1/sessions/race-1`)).status, 200), CROSSING_MS);
      const racers = nodes.flatMap((node) => [0, 1].map(() => new TestClient(`${node.ws}/session/race-1`)));
      const outcomes = await Promise.all(racers.map((client) => Promise.race([client.nextOfType('client_connected', CROSSING_MS).then(() => 'joined'), client.closed.then((e) => e.reason)])));
      assert.deepEqual(outcomes.sort(), ['Session full', 'Session full', 'Session full', 'Session full', 'joined', 'joined'], 'six clients on three nodes at once: two places');
      await Promise.all(racers.map((client) => client.close()));
    });

    it('closes the members on every node when a session is deleted on any', async () => {
      const [a, b, c] = nodes;
      await postJson(`${a.base}/v1/sessions`, { sessionId: 'dir-2' });
      const onA = await new TestClient(`${a.ws}/session/dir-2`).joined();
      const onB = await new TestClient(`${b.ws}/session/dir-2`).joined();
      await eventually(() => assert.ok(managerNode.manager.getSession('dir-2')), CROSSING_MS);
      const onM = await new TestClient(managerNode.native('dir-2')).joined();
      assert.equal((await fetch(`${c.base}/v1/sessions/dir-2`, { method: 'DELETE' })).status, 200);
      for (const client of [onA, onB, onM]) {
        assert.deepEqual(await client.closedWithin(CROSSING_MS), { code: 1000, reason: 'Session deleted' });
      }
      for (const node of nodes) await eventually(async () => assert.equal((await fetchJson(`${node.base}/v1/sessions/dir-2`)).status, 404), CROSSING_MS);
      await eventually(() => assert.equal(managerNode.manager.getSession('dir-2'), null), CROSSING_MS);
    });
  });

  describe(`${on}: publications across nodes`, () => {
    it('relays among members on every node and both transports: verbatim, never echoed, in order, once', async () => {
      const [a, b, c] = nodes;
      await postJson(`${b.base}/v1/sessions`, { sessionId: 'relay-1' });
      await eventually(() => assert.ok(managerNode.manager.getSession('relay-1')), CROSSING_MS);
      const clients = await Promise.all(
        [`${a.ws}/session/relay-1`, `${b.ws}/session/relay-1`, `${c.ws}/session/relay-1`, managerNode.native('relay-1'), managerNode.bridge('relay-1')].map((url) => new TestClient(url).joined()),
      );
      await eventually(async () => assert.equal((await presenceOn(a, 'relay-1')).length, 5), CROSSING_MS);
      for (const client of clients) client.inbox.length = 0;

      const exact = '{"type":"exact",  "spaced" : [1, 2.50, "é"]}';
      clients[0].send(exact);
      for (const other of clients.slice(1)) assert.equal((await other.nextOfType('exact', CROSSING_MS)).text, exact, 'byte for byte');
      await everyoneHearsEveryone(clients, 200, 'relay');
      await Promise.all(clients.map((client) => client.close()));
    });

    it("publishes to a channel's members on every node", async () => {
      const members = await Promise.all([...nodes.map((node) => `${node.ws}/`), managerNode.sessionless('native')].map(async (url) => {
        const client = new TestClient(url);
        await client.opened;
        client.send(JSON.stringify({ type: 'JOIN_CHANNEL', channel: 'news' }));
        await client.nextOfType('CHANNEL_JOINED');
        return client;
      }));
      await eventually(async () => {
        const probe = `probe-${Date.now()}`;
        members[0].send(JSON.stringify({ type: 'probe', channel: 'news', probe }));
        for (const member of members.slice(1)) await member.next((m) => m.json?.probe === probe, 300);
      }, CROSSING_MS);
      for (const member of members) member.inbox.length = 0;
      for (const [index, member] of members.entries()) {
        for (let n = 0; n < 50; n++) member.send(JSON.stringify({ type: 'headline', channel: 'news', from: index, n }));
      }
      for (const [index, member] of members.entries()) {
        const heard = new Map();
        for (let i = 0; i < 50 * (members.length - 1); i++) {
          const { json } = await member.nextOfType('headline', CROSSING_MS);
          assert.notEqual(json.from, index, 'never echoed');
          heard.set(json.from, [...(heard.get(json.from) ?? []), json.n]);
        }
        for (const list of heard.values()) assert.deepEqual(list, [...Array(50).keys()]);
      }
      await Promise.all(members.map((member) => member.close()));
    });

    it('delivers server sends from any node and from a worker with no clients: to sessions, channels, users and organizations', async () => {
      const [a, b] = nodes;
      await postJson(`${a.base}/v1/sessions`, { sessionId: 'sends-1' });
      await eventually(() => assert.ok(managerNode.manager.getSession('sends-1')), CROSSING_MS);
      const inSession = await Promise.all([`${b.ws}/session/sends-1`, managerNode.native('sends-1')].map((url) => new TestClient(url).joined()));
      const alice = new TestClient(managerNode.sessionless('native'), { headers: { 'x-user': 'alice', 'x-org': 'acme' } });
      const bob = new TestClient(managerNode.sessionless('bridge'), { headers: { 'x-user': 'bob', 'x-org': 'acme' } });
      const onChannel = new TestClient(`${b.ws}/`);
      await Promise.all([alice.opened, bob.opened, onChannel.opened]);
      onChannel.send(JSON.stringify({ type: 'JOIN_CHANNEL', channel: 'alerts' }));
      await onChannel.nextOfType('CHANNEL_JOINED');
      await eventually(async () => assert.equal((await presenceOn(a, 'sends-1')).length, 2), CROSSING_MS);

      // A worker's sends: its returned counts are deliveries on its own node, none here.
      await eventually(async () => {
        assert.equal(worker.broadcastToChannel('alerts', { type: 'alert', n: 1 }), 0);
        await onChannel.next((m) => m.json?.type === 'alert', 300);
      }, CROSSING_MS);
      worker.broadcast('sends-1', { type: 'to-session' });
      for (const client of inSession) await client.nextOfType('to-session', CROSSING_MS);
      worker.sendToUser('alice', { type: 'to-alice' });
      await alice.nextOfType('to-alice', CROSSING_MS);
      worker.broadcastToFiltered({ organizationId: 'acme' }, { type: 'to-acme' });
      for (const client of [alice, bob]) await client.nextOfType('to-acme', CROSSING_MS);

      const answer = await postJson(`${a.base}/v1/broadcast`, { channel: 'alerts', type: 'from-http' });
      assert.equal(answer.status, 200);
      await onChannel.nextOfType('from-http', CROSSING_MS);
      assert.equal(bob.inbox.filter((m) => m.json?.type === 'to-alice').length, 0, 'a user send reaches that user only');
      await Promise.all([...inSession, alice, bob, onChannel].map((client) => client.close()));
    });
  });

  describe(`${on}: control roles`, () => {
    it('keeps one active member per session across nodes: grants, transfers, gates state_update, frees on leave', async () => {
      const [a, b, c] = nodes;
      await postJson(`${a.base}/v1/sessions`, { sessionId: 'roles-1', conflictResolution: 'user-choice' });
      const first = await new TestClient(`${a.ws}/session/roles-1`).joined();
      const second = await new TestClient(`${b.ws}/session/roles-1`).joined();
      await first.nextOfType('client_connected', CROSSING_MS);
      const control = (client, type, data = {}) => client.send(JSON.stringify({ type, clientId: client.welcome.clientId, data }));

      control(first, 'request_control');
      assert.equal((await first.nextOfType('accept_control', CROSSING_MS)).json.data.granted, true);
      await eventually(async () => assert.deepEqual((await presenceOn(c, 'roles-1')).map((p) => p.role), ['passive', 'passive'].map((_, i) => (i === 0 ? 'active' : 'passive'))), CROSSING_MS);
      second.send(JSON.stringify({ type: 'state_update', data: { from: 'passive' } }));
      first.send(JSON.stringify({ type: 'state_update', data: { from: 'active' } }));
      assert.equal((await second.nextOfType('state_update', CROSSING_MS)).json.data.from, 'active');

      control(second, 'request_control');
      const forwarded = await first.nextOfType('request_control', CROSSING_MS);
      assert.equal(forwarded.json.clientId, second.welcome.clientId, 'forwarded to the active member on the other node');
      control(first, 'accept_control');
      await second.nextOfType('accept_control', CROSSING_MS);
      await eventually(async () => {
        const roles = Object.fromEntries((await presenceOn(c, 'roles-1')).map((p) => [p.connectionId, p.role]));
        assert.deepEqual(roles, { [first.welcome.connectionId]: 'passive', [second.welcome.connectionId]: 'active' });
      }, CROSSING_MS);
      // The name second announced reaches the other nodes with its record, as the roles did c's.
      await eventually(async () => assert.equal((await fetchJson(`${a.base}/v1/sessions/roles-1`)).body.activeClientId, second.welcome.clientId), CROSSING_MS);
      assert.equal(first.inbox.filter((m) => m.json?.data?.from === 'passive').length, 0, "a passive member's state_update went nowhere");

      // An offered handoff, each way: the offerer on the other node is sent the accept.
      for (const [offerer, taker] of [[second, first], [first, second]]) {
        control(offerer, 'offer_control', { note: 'yours' });
        await taker.nextOfType('offer_control', CROSSING_MS);
        control(taker, 'accept_control', { fromClientId: offerer.welcome.clientId });
        assert.equal((await offerer.nextOfType('accept_control', CROSSING_MS)).json.clientId, taker.welcome.clientId, 'the offerer is sent the accept');
        await eventually(async () => {
          const roles = Object.fromEntries((await presenceOn(c, 'roles-1')).map((p) => [p.connectionId, p.role]));
          assert.deepEqual(roles, { [offerer.welcome.connectionId]: 'passive', [taker.welcome.connectionId]: 'active' });
        }, CROSSING_MS);
      }

      await second.close();
      const left = await first.nextOfType('client_disconnected', CROSSING_MS);
      assert.equal(left.json.data.role, 'active', 'the active member left');
      control(first, 'request_control');
      assert.equal((await first.nextOfType('accept_control', CROSSING_MS)).json.data.granted, true, 'the role was free again');
      await first.close();
    });
  });

  describe(`${on}: case awareness`, () => {
    it("keeps one set of a user's windows across nodes: warns both of two cases, clears when one closes", async () => {
      const [a, b] = nodes;
      const register = (client, windowId, caseId) => client.send(JSON.stringify({ type: 'register', payload: { userId: 'carol', windowId, caseId } }));
      const first = new TestClient(`${a.ws}/`);
      const second = new TestClient(`${b.ws}/`);
      await Promise.all([first.opened, second.opened]);
      register(first, 'w-a', 'CASE-1');
      await first.nextOfType('registered', CROSSING_MS);
      register(second, 'w-b', 'CASE-2');
      await second.nextOfType('registered', CROSSING_MS);
      for (const page of [first, second]) {
        const warning = await page.next((m) => m.json?.type === 'warning' && m.json.payload.type === 'multi-case', CROSSING_MS);
        assert.deepEqual(warning.json.payload.cases, [{ caseId: 'CASE-1', windowId: 'w-a' }, { caseId: 'CASE-2', windowId: 'w-b' }], 'both windows, though on two nodes');
      }
      await second.close();
      assert.deepEqual((await first.nextOfType('warning_cleared', CROSSING_MS)).json.payload.cases, [{ caseId: 'CASE-1', windowId: 'w-a' }]);
      await first.close();
    });
  });

  describe(`${on}: streams`, () => {
    it('welcomes clients on every node at the epoch of the stream the creating node numbers, right after it answered', async () => {
      const [a, b, c] = nodes;
      assert.equal((await postJson(`${a.base}/v1/sessions`, { sessionId: 'epoch-1', history: { size: 10, ttlMs: 60000 } })).status, 201);
      const welcomed = await Promise.all([b, c, a].map(async (node) => new TestClient(`${node.ws}/session/epoch-1?positions=1`).joined()));
      const { epoch } = (await fetchJson(`${a.base}/v1/sessions/epoch-1/history`)).body;
      assert.deepEqual(welcomed.map((client) => client.welcome.epoch), [epoch, epoch, epoch]);
      await Promise.all(welcomed.map((client) => client.close()));
    });

    it('numbers publications in Redis, so a client recovers on another node what it missed, and history reads the same everywhere', async () => {
      const [a, b, c] = nodes;
      await postJson(`${a.base}/v1/sessions`, { sessionId: 'stream-1', history: { size: 1000, ttlMs: 60000 } });
      const reader = await new TestClient(`${a.ws}/session/stream-1?positions=1`).joined();
      const writer = await new TestClient(`${b.ws}/session/stream-1`).joined();
      const onA = await new TestClient(`${a.ws}/session/stream-1`).joined();
      await eventually(async () => assert.equal((await presenceOn(c, 'stream-1')).length, 3), CROSSING_MS);
      const offsets = [];
      const take = async (client, n) => {
        for (let i = 0; i < n; i++) {
          const { json } = await client.nextOfType('publication', CROSSING_MS);
          offsets.push(json.offset);
          assert.equal(json.data.n, json.offset, 'offsets follow the order sent');
        }
      };
      for (let n = 1; n <= 20; n++) writer.send(JSON.stringify({ type: 'note', n }));
      await take(reader, 20);
      for (let n = 1; n <= 20; n++) assert.equal((await onA.nextOfType('note', CROSSING_MS)).json.n, n, 'members without positions get the bytes as sent');
      const { epoch } = reader.welcome;
      reader.ws.terminate();
      await reader.closed;
      for (let n = 21; n <= 50; n++) writer.send(JSON.stringify({ type: 'note', n }));
      for (let n = 21; n <= 50; n++) await onA.nextOfType('note', CROSSING_MS);

      const back = await new TestClient(`${c.ws}/session/stream-1?since=${epoch}:20&previous=${reader.welcome.connectionId}`).joined();
      assert.deepEqual([back.welcome.recovered, back.welcome.epoch, back.welcome.offset], [true, epoch, 50], 'recovered on another node');
      writer.send(JSON.stringify({ type: 'note', n: 51 }));
      await take(back, 31);
      assert.deepEqual(offsets, [...Array(51).keys()].map((i) => i + 1), 'every offset once, in order, the missed ones before the live one');

      for (const node of nodes) {
        await eventually(async () => {
          const history = (await fetchJson(`${node.base}/v1/sessions/stream-1/history?since=${epoch}:45`)).body;
          assert.deepEqual([history.epoch, history.offset, history.recovered, history.publications.map((p) => p.data.n)], [epoch, 51, true, [46, 47, 48, 49, 50, 51]]);
        }, CROSSING_MS);
      }
      const lost = await new TestClient(`${b.ws}/session/stream-1?since=another:3`).joined();
      assert.deepEqual([lost.welcome.recovered, lost.welcome.offset], [false, 51], 'a position of another epoch recovers nothing, and says so');
      await Promise.all([back.close(), writer.close(), onA.close(), lost.close()]);
    });
  });

  describe(`${on}: the Node manager as a node`, () => {
    it("recovers a native client on the manager's node, and counts its places with the binaries'", async () => {
      const [a] = nodes;
      await postJson(`${a.base}/v1/sessions`, { sessionId: 'mgr-1', maxClients: 2, history: { size: 100, ttlMs: 60000 } });
      const writer = await new TestClient(`${a.ws}/session/mgr-1`).joined();
      const reader = await new TestClient(`${managerNode.native('mgr-1')}?positions=1`).joined();
      await writer.nextOfType('client_connected', CROSSING_MS);
      for (let n = 1; n <= 5; n++) writer.send(JSON.stringify({ type: 'line', n }));
      for (let n = 1; n <= 5; n++) assert.equal((await reader.nextOfType('publication', CROSSING_MS)).json.offset, n);
      const third = new TestClient(managerNode.native('mgr-1'));
      assert.deepEqual(await third.closedWithin(CROSSING_MS), { code: 1008, reason: 'Session full' }, 'one member here, one on a binary: full');

      reader.ws.terminate();
      await reader.closed;
      for (let n = 6; n <= 10; n++) writer.send(JSON.stringify({ type: 'line', n }));
      await eventually(async () => assert.equal((await fetchJson(`${a.base}/v1/sessions/mgr-1/history`)).body.offset, 10), CROSSING_MS);
      const back = await new TestClient(`${managerNode.native('mgr-1')}?since=${reader.welcome.epoch}:5&previous=${reader.welcome.connectionId}`).joined();
      assert.equal(back.welcome.recovered, true, `recovered on another node; what the nodes' links said:\n${linkEvents(nodes)}`);
      for (let n = 6; n <= 10; n++) assert.equal((await back.nextOfType('publication', CROSSING_MS)).json.data.n, n);
      await Promise.all([back.close(), writer.close()]);
    });
  });

  describe(`${on}: failures`, () => {
    // A node killed outright is noticed when its lease runs out; one whose npm launcher
    // was killed stops with it and leaves the cluster as a graceful stop does.
    const LAUNCHER = [process.execPath, require.resolve('../bin/switchyard.js')];
    for (const [what, command, id] of [
      ['a SIGKILLed node', undefined, 'kill-1'],
      ['a node whose npm launcher was SIGKILLed', LAUNCHER, 'kill-2'],
    ]) {
      it(`takes the members of ${what} out of presence within the heartbeat timeout, and loses no session`, async () => {
        const victim = await startBinary({ command, args: [...NODE_ARGS, '--redis-url', redis.url, '--node-id', `victim-${id}`] });
        // Healthy is not yet clustered: until its link is up, a node relays among its own
        // clients only, and its members' joins reach no one else.
        await eventually(async () => assert.equal((await health(victim)).status, 'ok'), CROSSING_MS);
        const [a] = nodes;
        await postJson(`${a.base}/v1/sessions`, { sessionId: id });
        const survivor = await new TestClient(`${a.ws}/session/${id}`).joined();
        const doomed = await new TestClient(`${victim.ws}/session/${id}`).joined();
        await survivor.nextOfType('client_connected', CROSSING_MS);
        await eventually(async () => assert.equal((await presenceOn(a, id)).length, 2), CROSSING_MS);

        const killedAt = Date.now();
        victim.child.kill('SIGKILL');
        const left = await survivor.nextOfType('client_disconnected', HEARTBEAT_TIMEOUT_MS * 2).catch((error) => {
          throw new Error(`${error.message}\nwhat the nodes logged of their links:\n${linkEvents([...nodes, victim])}`);
        });
        const tookMs = Date.now() - killedAt;
        console.log(`# the member of ${what} left its peers' presence after ${tookMs} ms (heartbeatTimeoutMs ${HEARTBEAT_TIMEOUT_MS})`);
        assert.equal(left.json.connectionId, doomed.welcome.connectionId);
        assert.ok(tookMs <= HEARTBEAT_TIMEOUT_MS, `within heartbeatTimeoutMs (took ${tookMs} ms)`);
        assert.deepEqual((await presenceOn(a, id)).map((p) => p.connectionId), [survivor.welcome.connectionId]);
        assert.equal((await fetchJson(`${nodes[2].base}/v1/sessions/${id}`)).status, 200, 'the session lives on');
        // And the directory forgets it: a node joining later learns only the survivor.
        await inRedis(redis, (directory) =>
          eventually(async () => {
            assert.equal(await directory.hLen(`switchyard:{s:${id}}:members`), 1, 'the survivor alone in the members hash');
            assert.equal(await directory.exists(`switchyard:{nodes}:sessions:victim-${id}`), 0, 'the gone node\'s notes are gone');
          }, CROSSING_MS),
        );
        const back = await new TestClient(`${nodes[1].ws}/session/${id}`).joined();
        await survivor.nextOfType('client_connected', CROSSING_MS);
        back.send('{"type":"after-kill"}');
        await survivor.nextOfType('after-kill', CROSSING_MS);
        await Promise.all([survivor.close(), back.close()]);
        // A node's notes of where it has members let a session go with its last member there.
        await inRedis(redis, (directory) =>
          eventually(async () => {
            for (const node of ['a', 'b']) assert.ok(!(await directory.sMembers(`switchyard:{nodes}:sessions:${node}`)).includes(id), `node ${node}'s notes`);
          }, CROSSING_MS),
        );
      });
    }

    it('keeps relaying on each node while Redis is gone, reports degraded, refuses new sessions UNAVAILABLE, and heals when Redis returns', async () => {
      const [a, b] = nodes;
      await postJson(`${a.base}/v1/sessions`, { sessionId: 'heal-1' });
      const onA1 = await new TestClient(`${a.ws}/session/heal-1`).joined();
      const onA2 = await new TestClient(`${a.ws}/session/heal-1`).joined();
      const onB = await new TestClient(`${b.ws}/session/heal-1`).joined();
      await eventually(async () => assert.equal((await presenceOn(b, 'heal-1')).length, 3), CROSSING_MS);
      // Traffic throughout: a message every 5 ms from a, across the outage and the healing.
      let steady = 0;
      const sending = setInterval(() => onA1.send(JSON.stringify({ type: 'steady', n: steady++ })), 5);

      await redis.kill();
      const lostAt = Date.now();
      await eventually(async () => assert.equal((await health(a)).status, 'degraded'), CROSSING_MS);
      await eventually(() => assert.equal(managerNode.manager.getStats().status, 'degraded'), CROSSING_MS);
      onA1.send('{"type":"local-only"}');
      await onA2.nextOfType('local-only', CROSSING_MS);
      const refused = await postJson(`${a.base}/v1/sessions`, {});
      assert.deepEqual([refused.status, refused.body.error.code], [503, 'UNAVAILABLE']);
      assert.throws(() => managerNode.manager.createSession(), /UNAVAILABLE/);

      await redis.start();
      const backAt = Date.now();
      await eventually(async () => {
        for (const node of nodes) assert.equal((await health(node)).status, 'ok');
        assert.equal(managerNode.manager.getStats().status, 'ok');
      }, 15000);
      console.log(`# Redis was away ${backAt - lostAt} ms; every node healed by itself ${Date.now() - backAt} ms after it returned`);
      await eventually(async () => {
        const probe = `probe-${Date.now()}`;
        onA1.send(JSON.stringify({ type: 'healed', probe }));
        await onB.next((m) => m.json?.probe === probe, 300);
      }, 15000);
      clearInterval(sending);
      const last = steady - 1;
      const heardOn = async (client) => {
        const heard = [];
        while (heard.at(-1) !== last) heard.push((await client.nextOfType('steady', CROSSING_MS)).json.n);
        return heard;
      };
      assert.deepEqual(await heardOn(onA2), [...Array(steady).keys()], 'on its own node, nothing was lost while Redis was away');
      const acrossNodes = await heardOn(onB);
      assert.ok(acrossNodes.every((n, i) => i === 0 || n > acrossNodes[i - 1]), 'across nodes, what arrived came in order and once');
      console.log(`# of ${steady} messages sent through the outage, ${acrossNodes.length} crossed nodes (the rest were dropped while Redis was away)`);
      assert.equal((await presenceOn(b, 'heal-1')).length, 3, 'members registered again');
      assert.ok((await fetchJson(`${a.base}/stats`)).body.cluster.dropped >= 1, 'what could not cross was dropped and counted');
      await Promise.all([onA1.close(), onA2.close(), onB.close()]);
    });
  });

  describe(`${on}: webhooks`, () => {
    it('tells each event once across three nodes: sessions, members, and a channel first occupied and last vacated anywhere', async () => {
      const crypto = require('node:crypto');
      const http = require('node:http');
      const express = require('express');
      const secret = 'cluster webhook secret';
      const events = [];
      const app = express();
      app.post('/hooks', express.raw({ type: 'application/json' }), (req, res) => {
        const expected = `sha256=${crypto.createHmac('sha256', secret).update(req.body).digest('hex')}`;
        if (req.get('x-switchyard-signature') !== expected) return res.status(401).end();
        events.push(...JSON.parse(req.body.toString('utf8')).events);
        res.status(204).end();
      });
      const receiver = http.createServer(app);
      await new Promise((resolve) => receiver.listen(0, '127.0.0.1', resolve));
      closers.push(() => new Promise((resolve) => receiver.close(resolve)));
      const hookArgs = ['--webhook-url', `http://127.0.0.1:${receiver.address().port}/hooks`, '--webhook-secret', secret, '--cleanup-interval', '200'];
      const hooked = await Promise.all(['w1', 'w2', 'w3'].map((id) => startBinary({ args: [...NODE_ARGS, ...hookArgs, '--redis-url', redis.url, '--node-id', id, '--redis-prefix', 'hooks:'] })));
      await eventually(async () => {
        for (const node of hooked) assert.equal((await health(node)).cluster?.peers, 2);
      }, 10000);
      const [a, b, c] = hooked;
      const { sessionId } = (await postJson(`${a.base}/v1/sessions`, { maxClients: 10 })).body;
      const members = [];
      for (const node of hooked) {
        const member = new TestClient(`${node.ws}/session/${sessionId}`);
        await member.joined();
        members.push(member);
      }
      // One change at a time, each counted in Redis before the next: which node is first
      // and which last is then plain.
      const counter = await redis.client();
      closers.push(() => counter.destroy());
      const occupants = () => counter.sCard('hooks:{c:cluster-news}:occupants');
      for (const [index, member] of members.entries()) {
        member.send(JSON.stringify({ type: 'JOIN_CHANNEL', channel: 'cluster-news' }));
        await member.nextOfType('CHANNEL_JOINED');
        await eventually(async () => assert.equal(await occupants(), index + 1), CROSSING_MS);
      }
      for (const [index, member] of members.entries()) {
        member.send(JSON.stringify({ type: 'LEAVE_CHANNEL', channel: 'cluster-news' }));
        await member.nextOfType('CHANNEL_LEFT');
        await eventually(async () => assert.equal(await occupants(), members.length - index - 1), CROSSING_MS);
      }
      assert.equal((await fetchJson(`${b.base}/v1/sessions/${sessionId}`, { method: 'DELETE' })).status, 200);
      for (const member of members) await member.closedWithin(CROSSING_MS);
      const expiring = (await postJson(`${c.base}/v1/sessions`, { expiresIn: 300 })).body.sessionId;

      const count = (name, id = sessionId) => events.filter((e) => e.name === name && (e.sessionId ?? e.channel) === id).length;
      await eventually(() => assert.equal(count('session_ended', expiring), 1), 10000);
      await eventually(async () => {
        const stats = await Promise.all(hooked.map(async (node) => (await fetchJson(`${node.base}/stats`)).body.webhooks));
        assert.ok(stats.every((s) => s.queued === 0), JSON.stringify(stats));
        assert.equal(stats.reduce((sum, s) => sum + s.delivered, 0), events.length, 'every event delivered is one the receiver has');
        assert.deepEqual(
          {
            created: count('session_created'),
            joined: count('member_joined'),
            occupied: count('channel_occupied', 'cluster-news'),
            vacated: count('channel_vacated', 'cluster-news'),
            left: count('member_left'),
            ended: events.filter((e) => e.name === 'session_ended' && e.sessionId === sessionId).map((e) => e.reason),
            expiredCreated: count('session_created', expiring),
          },
          { created: 1, joined: 3, occupied: 1, vacated: 1, left: 3, ended: ['deleted'], expiredCreated: 1 },
        );
      }, 10000);
      const ids = members.map((m) => m.welcome.connectionId);
      assert.deepEqual(events.filter((e) => e.name === 'member_joined').map((e) => e.connectionId).sort(), [...ids].sort(), 'each member by its own node');
      for (const node of hooked) node.child.kill('SIGKILL');
    });
  });

  describe(`${on}: the link's options`, () => {
    it('drops what is past redis.maxQueued while Redis stalls, and counts Redis lost after redis.timeoutMs', async () => {
      // A Redis of this test's own, stopped (SIGSTOP) so that its sockets stay open and
      // nothing it is sent is answered: only a timeout tells the link it is gone.
      const stalled = await startOwn();
      const quick = new RelaySessionManager({ redis: { url: stalled.url, nodeId: 'quick', timeoutMs: 200, maxQueued: 4 } });
      const patient = new RelaySessionManager({ redis: { url: stalled.url, nodeId: 'patient', timeoutMs: 600_000 } });
      try {
        await eventually(() => {
          for (const manager of [quick, patient]) assert.equal(manager.getStats().cluster?.peers, 1);
        }, 10000);
        quick.createSession({ sessionId: 'stall-1' });
        patient.createSession({ sessionId: 'stall-2' });
        await eventually(() => assert.ok(quick.getSession('stall-2') && patient.getSession('stall-1')), CROSSING_MS);
        const dropped = () => [quick, patient].map((manager) => manager.getStats().cluster.dropped);
        const droppedBefore = dropped();
        stalled.nodes[0].child.kill('SIGSTOP');
        // More than the link takes into one pipeline, so that some must wait in its queue.
        for (let n = 0; n < 3000; n++) {
          quick.publish('stall-1', { type: 'stalled', n });
          patient.publish('stall-2', { type: 'stalled', n });
        }
        const [quickDropped, patientDropped] = dropped().map((count, i) => count - droppedBefore[i]);
        assert.ok(quickDropped > 0, `past maxQueued 4, what waited for the stalled link was dropped (dropped ${quickDropped} of 3000)`);
        assert.equal(patientDropped, 0, 'the default maxQueued holds all 3000');
        await eventually(() => assert.equal(quick.getStats().status, 'degraded'), CROSSING_MS);
        assert.equal(patient.getStats().status, 'ok', 'a node whose timeoutMs has not run out still counts Redis as there');
      } finally {
        stalled.nodes[0].child.kill('SIGCONT');
        await Promise.all([quick.stop({ timeoutMs: 200 }), patient.stop({ timeoutMs: 200 })]);
        await stalled.kill();
      }
    });
  });

  describe(`${on}: a node cut off alone`, () => {
    it('ends, when it rejoins, a session deleted elsewhere while it could not hear, and does not bring it back', async () => {
      // A Redis user of its own, switched off and its connections cut to cut it off: on a
      // cluster, where a proxy in front of one address would be bypassed, on every node.
      redis.cli('ACL', 'SETUSER', 'lonely', 'on', '>lonely-secret', '~*', '&*', '+@all');
      const lonely = await startBinary({ args: [...NODE_ARGS, '--redis-url', redis.urlAs('lonely', 'lonely-secret'), '--node-id', 'lonely'] });
      await eventually(async () => assert.equal((await health(lonely)).status, 'ok'), CROSSING_MS);
      await postJson(`${nodes[0].base}/v1/sessions`, { sessionId: 'cut-1' });
      const stranded = await new TestClient(`${lonely.ws}/session/cut-1`).joined();
      await eventually(async () => assert.equal((await presenceOn(nodes[1], 'cut-1')).length, 1), CROSSING_MS);

      redis.cli('ACL', 'SETUSER', 'lonely', 'off');
      redis.cli('CLIENT', 'KILL', 'USER', 'lonely');
      await eventually(async () => assert.equal((await health(lonely)).status, 'degraded'), CROSSING_MS);
      assert.equal((await fetch(`${nodes[1].base}/v1/sessions/cut-1`, { method: 'DELETE' })).status, 200);
      assert.equal((await fetchJson(`${lonely.base}/v1/sessions/cut-1`)).status, 200, 'cut off, it has not heard');
      redis.cli('ACL', 'SETUSER', 'lonely', 'on');
      assert.deepEqual(await stranded.closedWithin(15000), { code: 1000, reason: 'Session deleted' }, 'rejoining, it ends the session');
      for (const node of [...nodes, lonely]) assert.equal((await fetchJson(`${node.base}/v1/sessions/cut-1`)).status, 404, 'and nobody has it back');
      lonely.child.kill('SIGTERM');
      await lonely.child.exited;
    });
  });

  describe(`${on}: no sticky sessions`, () => {
    it('serves clients that a round-robin proxy spreads over the nodes, and that reconnect elsewhere', async () => {
      const proxy = await roundRobin(nodes.map((node) => node.port));
      closers.push(() => proxy.close());
      const base = `http://127.0.0.1:${proxy.port}`;
      const created = await postJson(`${base}/v1/sessions`, { sessionId: 'rr-1' });
      assert.equal(created.status, 201);
      const clients = [];
      for (let i = 0; i < 3; i++) clients.push(await new TestClient(`ws://127.0.0.1:${proxy.port}/session/rr-1`).joined());
      await eventually(async () => assert.equal((await presenceOn(nodes[0], 'rr-1')).length, 3), CROSSING_MS);
      await everyoneHearsEveryone(clients, 50, 'rr-before');

      proxy.cutAll();
      await Promise.all(clients.map((client) => client.closed));
      const again = [];
      for (let i = 0; i < 3; i++) again.push(await new TestClient(`ws://127.0.0.1:${proxy.port}/session/rr-1`).joined());
      await eventually(async () => assert.equal((await presenceOn(nodes[1], 'rr-1')).length, 3, 'the dropped members left, the new ones came'), HEARTBEAT_TIMEOUT_MS * 2);
      await everyoneHearsEveryone(again, 50, 'rr-after');
      await Promise.all(again.map((client) => client.close()));
    });

    it('recovers a client that dropped and came back through the proxy to another node', async () => {
      const proxy = await roundRobin(nodes.map((node) => node.port));
      closers.push(() => proxy.close());
      const through = `ws://127.0.0.1:${proxy.port}/session/rr-2`;
      assert.equal((await postJson(`http://127.0.0.1:${proxy.port}/v1/sessions`, { sessionId: 'rr-2', history: { size: 100, ttlMs: 60000 } })).status, 201);
      const reader = await new TestClient(`${through}?positions=1`).joined();
      let writer = await new TestClient(through).joined();
      await reader.nextOfType('client_connected', CROSSING_MS);
      for (let n = 1; n <= 10; n++) writer.send(JSON.stringify({ type: 'line', n }));
      for (let n = 1; n <= 10; n++) assert.equal((await reader.nextOfType('publication', CROSSING_MS)).json.offset, n);

      proxy.cutAll();
      await Promise.all([reader.closed, writer.closed]);
      writer = await new TestClient(through).joined();
      for (let n = 11; n <= 20; n++) writer.send(JSON.stringify({ type: 'line', n }));
      await eventually(async () => assert.equal((await fetchJson(`${nodes[0].base}/v1/sessions/rr-2/history`)).body.offset, 20), CROSSING_MS);
      const back = await new TestClient(`${through}?since=${reader.welcome.epoch}:10&previous=${reader.welcome.connectionId}`).joined();
      assert.equal(back.welcome.recovered, true, `recovered on another node; what the nodes' links said:\n${linkEvents(nodes)}`);
      for (let n = 11; n <= 20; n++) {
        const { json } = await back.nextOfType('publication', CROSSING_MS);
        assert.deepEqual([json.offset, json.data.n], [n, n]);
      }
      await Promise.all([back.close(), writer.close()]);
    });
  });

  if (!sharded) return;
  /** A session with history made on node a, a member publishing on a and one with
   * positions on b; `key`, a key in the session's slot. */
  async function acrossTwoNodes(sessionId) {
    const [a, b] = nodes;
    await postJson(`${a.base}/v1/sessions`, { sessionId, history: { size: 10000, ttlMs: 600000 } });
    const publisher = await new TestClient(`${a.ws}/session/${sessionId}`).joined();
    const subscriber = await new TestClient(`${b.ws}/session/${sessionId}?positions=1`).joined();
    await eventually(async () => assert.equal((await presenceOn(b, sessionId)).length, 2), CROSSING_MS);
    return { publisher, subscriber, key: `switchyard:{s:${sessionId}}:stream` };
  }

  describe(`${on}: a slot moved`, () => {
    it("follows a session's slot moved to another master mid-traffic: every publication arrives once, in order, and a position from before recovers", async () => {
      const { publisher, subscriber, key } = await acrossTwoNodes('moved-1');
      const from = redis.masterOf(key);
      for (let n = 1; n <= 50; n++) publisher.send(JSON.stringify({ type: 'tick', n }));
      // Moved while those are on their way.
      const to = redis.moveSlot(key);
      assert.notEqual(to, from);
      assert.equal(redis.masterOf(key), to, 'the slot is served by another master now');
      for (let n = 51; n <= 100; n++) publisher.send(JSON.stringify({ type: 'tick', n }));
      const heard = [];
      for (let n = 1; n <= 100; n++) {
        const { json } = await subscriber.nextOfType('publication', CROSSING_MS).catch((error) => assert.fail(`${error.message}; after ${JSON.stringify(heard)}; the links said:\n${linkEvents(nodes)}`));
        heard.push([json.offset, json.data.n]);
      }
      assert.deepEqual(heard, [...Array(100).keys()].map((i) => [i + 1, i + 1]), 'every publication once, in order, numbered on');
      const back = await new TestClient(`${nodes[1].ws}/session/moved-1?since=${subscriber.welcome.epoch}:40`).joined();
      assert.deepEqual([back.welcome.recovered, back.welcome.offset], [true, 100], 'the stream moved with its slot');
      await Promise.all([publisher.close(), subscriber.close(), back.close()]);
    });
  });

  describe(`${on}: a master lost`, () => {
    it("follows the failover to its replica: relay resumes, and a client that missed publications recovers false, never short", async () => {
      const { publisher, subscriber, key } = await acrossTwoNodes('failover-1');
      const heard = [];
      const listening = (async () => {
        for (;;) {
          // Until the connection is closed (or nothing comes for two minutes).
          const message = await subscriber.next((m) => m.json?.type === 'publication', 120000).catch(() => null);
          if (!message) return;
          heard.push({ n: message.json.data.n, offset: message.json.offset, at: Date.now() });
        }
      })();
      let sent = 0;
      const sending = setInterval(() => publisher.send(JSON.stringify({ type: 'tick', n: sent++ })), 10);
      await eventually(() => assert.ok(heard.length >= 20), CROSSING_MS);

      const killed = redis.masterOf(key);
      const killedAt = Date.now();
      const sentBefore = sent;
      await redis.killNode(killed);
      await eventually(() => assert.notEqual(redis.masterOf(key), killed, 'a replica took over'), 60000);
      const failedOverAt = Date.now();
      // Relayed again: a tick sent after the failover arrives.
      const sentAtFailover = sent;
      await eventually(() => assert.ok(heard.some(({ n }) => n >= sentAtFailover), `no tick sent after the failover has arrived yet; the links said:\n${linkEvents(nodes)}`), 60000);
      const resumedAt = Date.now();
      clearInterval(sending);
      const last = sent - 1;
      await eventually(() => assert.equal(heard.at(-1)?.n, last, 'the last tick arrives'), CROSSING_MS);
      const lost = sent - heard.length;
      console.log(
        `# failover: master ${killed} SIGKILLed with ${sentBefore} ticks sent; a replica served its slots ${failedOverAt - killedAt} ms later; ` +
          `relay resumed ${resumedAt - killedAt} ms after the kill; of ${sent} ticks, ${heard.length} arrived live, ${lost} were lost`,
      );
      const ns = heard.map(({ n }) => n);
      assert.ok(ns.every((n, i) => i === 0 || n > ns[i - 1]), 'what arrived came in order and once');

      // Back with the position it held before the first break in its offsets.
      const unbroken = heard.findIndex(({ offset }, i) => i > 0 && offset !== heard[i - 1].offset + 1);
      const before = unbroken === -1 ? heard.length : unbroken;
      const since = heard[before - 1].offset;
      subscriber.ws.terminate();
      await listening;
      const back = await new TestClient(`${nodes[1].ws}/session/failover-1?since=${subscriber.welcome.epoch}:${since}`).joined();
      const replayed = [];
      if (back.welcome.recovered) {
        while (replayed.length < back.welcome.offset - since) replayed.push((await back.nextOfType('publication', CROSSING_MS)).json.data.n);
      }
      console.log(`# back from ${subscriber.welcome.epoch}:${since}: recovered ${back.welcome.recovered}, ${replayed.length} replayed`);
      const known = new Set([...ns.slice(0, before), ...replayed]);
      if (back.welcome.recovered) {
        assert.equal(known.size, sent, 'recovered: every tick, live before the break or replayed');
      } else {
        assert.ok(lost > 0 || before < heard.length, 'recovered false only when something was missed');
      }
      if (lost > 0) assert.equal(back.welcome.recovered, false, 'ticks were lost: recovery says so rather than leave a silent gap');
      await Promise.all([publisher.close(), back.close()]);
    });
  });
}
