// __test__/awareness.test.js: the focus declaration protocol over real sockets, in both
// transports of the Node addon and in the `switchyard` binary started with the flags of
// the awareness service it replaces, spoken to as that service's clients spoke to it.
const { describe, it, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const { locateBinary } = require('../bin/switchyard.js');
const { TestClient, sleep, untilHealthy, freePort, startMixedServer } = require('./helpers');

const cleanups = [];
after(async () => {
  for (const cleanup of cleanups) await cleanup();
});

async function server(config) {
  const started = await startMixedServer(config);
  cleanups.push(() => started.close());
  return started;
}

async function open(url, headers = {}) {
  const client = new TestClient(url, { headers });
  await client.opened;
  return client;
}

const say = (client, type, payload) => client.send(JSON.stringify({ type, payload }));
const register = (client, userId, windowId, caseId) =>
  say(client, 'register', { userId, windowId, caseId, slideId: 'SLIDE-001', timestamp: new Date().toISOString() });
const warningOf = async (client, kind) => (await client.next((m) => m.json?.type === 'warning' && m.json.payload.type === kind)).json.payload;

for (const transport of ['native', 'bridge']) {
  describe(`awareness (${transport})`, () => {
    it('answers registered, warns both windows of two cases, and clears when one closes', async () => {
      const s = await server();
      const first = await open(s.sessionless(transport));
      const second = await open(s.sessionless(transport === 'native' ? 'bridge' : 'native'));
      register(first, 'user-12345', 'window-abc', 'CASE-001');
      assert.deepEqual((await first.nextOfType('registered')).json, { type: 'registered', payload: { windowId: 'window-abc', caseId: 'CASE-001' } });
      register(second, 'user-12345', 'window-xyz', 'CASE-002');
      await second.nextOfType('registered');
      const expected = {
        type: 'multi-case',
        cases: [{ caseId: 'CASE-001', windowId: 'window-abc' }, { caseId: 'CASE-002', windowId: 'window-xyz' }],
        message: 'Multiple cases are open in this session',
      };
      assert.deepEqual(await warningOf(first, 'multi-case'), expected);
      assert.deepEqual(await warningOf(second, 'multi-case'), expected);
      const mismatch = await warningOf(first, 'case-mismatch');
      assert.deepEqual([mismatch.caseId, mismatch.windowId], ['CASE-002', 'window-xyz']);
      const stats = s.manager.getStats();
      assert.deepEqual([stats.users, stats.registrations], [1, 2]);

      await second.close();
      const cleared = (await first.nextOfType('warning_cleared')).json.payload;
      assert.deepEqual(cleared, { cases: [{ caseId: 'CASE-001', windowId: 'window-abc' }] });
      assert.equal(s.manager.getStats().registrations, 1);
      await first.close();
    });

    it('removes a registration whose heartbeat is stale, and keeps one that heartbeats', async () => {
      const s = await server({ heartbeatTimeoutMs: 600, pingIntervalMs: 100 });
      const page = await open(s.sessionless(transport));
      register(page, 'u-stale', 'w-kept', 'CASE-A');
      register(page, 'u-stale', 'w-stale', 'CASE-B');
      await warningOf(page, 'multi-case');
      const beat = setInterval(() => say(page, 'heartbeat', { userId: 'u-stale', windowId: 'w-kept' }), 100);
      say(page, 'focus', { userId: 'u-stale', windowId: 'w-kept' });
      try {
        const cleared = (await page.nextOfType('warning_cleared', 3000)).json.payload;
        assert.deepEqual(cleared.cases, [{ caseId: 'CASE-A', windowId: 'w-kept' }]);
        assert.equal(s.manager.getStats().registrations, 1);
        await sleep(800);
        assert.equal(s.manager.getStats().registrations, 1, 'the heartbeating window stays');
        assert.equal(page.closeEvent, undefined, 'the connection stays');
      } finally {
        clearInterval(beat);
      }
      await page.close();
    });

    it('refuses another user in the payload with FORBIDDEN, and a user past its connection limit with CONNECTION_LIMIT and 1008', async () => {
      const s = await server({ maxConnectionsPerUser: 2 });
      const alice = await open(s.sessionless(transport), { 'x-user': 'alice' });
      register(alice, 'mallory', 'w', 'C');
      assert.equal((await alice.nextOfType('error')).json.payload.code, 'FORBIDDEN');
      await open(s.sessionless(transport), { 'x-user': 'alice' });
      const third = new TestClient(s.sessionless(transport), { headers: { 'x-user': 'alice' } });
      assert.deepEqual((await third.nextOfType('error')).json.payload, { code: 'CONNECTION_LIMIT', message: 'Maximum connections per user exceeded' });
      assert.deepEqual(await third.closedWithin(), { code: 1008, reason: 'Connection limit' });

      const anonymous = [];
      for (let i = 0; i < 3; i++) anonymous.push(await open(s.sessionless(transport)));
      // One at a time: connections are served in parallel, so which of three sent at once
      // is the third to arrive is up to the scheduler.
      for (const [i, page] of anonymous.slice(0, 2).entries()) {
        register(page, 'bob', `w${i}`, 'C');
        await page.nextOfType('registered');
      }
      register(anonymous[2], 'bob', 'w2', 'C');
      assert.equal((await anonymous[2].nextOfType('error')).json.payload.code, 'CONNECTION_LIMIT');
      assert.deepEqual(await anonymous[2].closedWithin(), { code: 1008, reason: 'Connection limit' });
      assert.equal(s.manager.getStats().forbidden, 1);
    });

    it('refuses a 65th window with WINDOW_LIMIT and keeps the connection and the other 64', async () => {
      const s = await server();
      const page = await open(s.sessionless(transport), { 'x-user': 'erin' });
      for (let i = 0; i < 64; i++) register(page, 'erin', `w${i}`, 'CASE-1');
      register(page, 'erin', 'w64', 'CASE-1');
      const refused = (await page.nextOfType('error')).json.payload;
      assert.deepEqual(refused, { code: 'WINDOW_LIMIT', message: 'Maximum windows per user exceeded; deregister one first' });
      assert.equal(page.inbox.filter((m) => m.json?.type === 'registered').length, 64);
      say(page, 'deregister', { userId: 'erin', windowId: 'w0' });
      register(page, 'erin', 'w64', 'CASE-2');
      assert.deepEqual((await page.next((m) => m.json?.payload?.windowId === 'w64')).json, { type: 'registered', payload: { windowId: 'w64', caseId: 'CASE-2' } });
      assert.equal(s.manager.getStats().registrations, 64);
      assert.equal(page.closeEvent, undefined);
      await page.close();
    });
  });
}

describe('the switchyard binary as the awareness service', () => {
  it('takes the old flags and serves an old-style client unchanged', async () => {
    const port = await freePort();
    const child = spawn(locateBinary(), ['-p', String(port), '-h', '127.0.0.1', '-t', '60000', '-c', '30000', '-m', '10']);
    cleanups.push(() => child.kill('SIGKILL'));
    await untilHealthy(`http://127.0.0.1:${port}`);
    const url = `ws://127.0.0.1:${port}`;
    const health = await open(url);
    health.send('{"type":"ping"}');
    assert.equal((await health.nextOfType('pong')).json.type, 'pong', 'wscat -x \'{"type":"ping"}\' works as a health check');

    const pages = [await open(url), await open(url)];
    register(pages[0], 'user-12345', 'window-abc', 'CASE-001');
    register(pages[1], 'user-12345', 'window-xyz', 'CASE-002');
    for (const page of pages) assert.equal((await warningOf(page, 'multi-case')).cases.length, 2);
    say(pages[1], 'deregister', { userId: 'user-12345', windowId: 'window-xyz' });
    assert.equal((await pages[0].nextOfType('warning_cleared')).json.payload.cases.length, 1);

    const stats = await fetch(`http://127.0.0.1:${port}/stats`).then((r) => r.json());
    assert.equal(stats.connections, 3);
    assert.equal(stats.users, 1);
    assert.equal(stats.registrations, 1);
    assert.equal(typeof stats.uptime, 'number');
    await Promise.all([health, ...pages].map((c) => c.close()));
  });
});
