// __test__/server.test.js: the standalone `switchyard` binary: its flags and environment,
// its HTTP API and admin rules, WebSockets, logs, and a graceful stop, all over real
// sockets against the release build; and the npm `switchyard` bin that starts it.
const { describe, it, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn, execFile, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { locateBinary } = require('../bin/switchyard.js');
const { RelaySessionManager } = require('..');
const {
  TestClient,
  joinedClient,
  fetchJson,
  postJson,
  sleep,
  eventually,
  untilHealthy,
  RawClient,
  upgradeRequest,
  freePort,
  startBinary,
  stopBinaries,
  binaries,
  floodBesideSlowReader,
  parsePrometheus,
  oneByOne,
  relaysInOrderBothWays,
} = require('./helpers');

const binary = locateBinary();
after(stopBinaries);

/** An object's keys, nested, with each leaf's type (absent values left out): what two
 * stats answers must share. Maps (frame buckets, channel breakdowns) are one leaf. */
function shapeOf(value, leaveOut = []) {
  if (typeof value !== 'object' || value === null) return typeof value;
  if (Object.keys(value).every((key) => /^[<>]=?\d+$/.test(key))) return 'map';
  const present = Object.keys(value).filter((key) => value[key] != null && !leaveOut.includes(key));
  return Object.fromEntries(present.sort().map((key) => [key, shapeOf(value[key])]));
}
/** In getStats() only, or in /stats only (the awareness service's names). */
const addonOnly = ['isRunning', 'compression', 'uptime', 'connections', 'sessions', 'pendingHandshakes'];

/** Runs the binary to completion (for flag errors and --help). */
function runToEnd(args, env = {}) {
  return new Promise((resolve) => {
    execFile(binary, args, { env: { ...process.env, ...env }, timeout: 10000 }, (err, stdout, stderr) =>
      resolve({ code: err ? err.code : 0, stdout, stderr }),
    );
  });
}

describe('switchyard binary: command line', () => {
  it('describes every flag and its environment variable in --help', async () => {
    const { code, stdout } = await runToEnd(['--help']);
    assert.equal(code, 0);
    for (const [flag, env] of [
      ['-p, --port', 'PORT'],
      ['-h, --host', 'HOST'],
      ['-t, --heartbeat-timeout', 'HEARTBEAT_TIMEOUT'],
      ['-c, --cleanup-interval', 'CLEANUP_INTERVAL'],
      ['--admin-token', 'SWITCHYARD_ADMIN_TOKEN'],
      ['--max-message-bytes', 'MAX_MESSAGE_BYTES'],
      ['--slow-consumer', 'SLOW_CONSUMER'],
      ['--ack', 'ACK'],
      ['--enable-role-management', 'ENABLE_ROLE_MANAGEMENT'],
      ['--channel-allow', 'CHANNEL_ALLOW'],
      ['--request-timeout', 'REQUEST_TIMEOUT'],
    ]) {
      assert.ok(stdout.includes(flag), `--help shows ${flag}`);
      assert.ok(stdout.includes(`env: ${env}`), `--help shows ${env}`);
    }
  });

  it('rejects unknown flags and bad values with a message and exit code 2', async () => {
    for (const [args, message] of [
      [['--nope'], /unexpected argument '--nope'/],
      [['--port', 'abc'], /invalid value 'abc' for '--port/],
      [['--heartbeat-timeout', '0'], /invalid value '0'/],
      [['--slow-consumer', 'wait'], /invalid value 'wait'/],
      [['--host', 'not-an-ip'], /invalid value 'not-an-ip'/],
    ]) {
      const { code, stderr } = await runToEnd(args);
      assert.equal(code, 2, args.join(' '));
      assert.match(stderr, message);
    }
    const { code, stderr } = await runToEnd([], { PORT: 'eighty' });
    assert.equal(code, 2);
    assert.match(stderr, /invalid value 'eighty'/);
  });

  it('takes its settings from environment variables', async () => {
    const port = await freePort();
    const child = spawn(binary, [], { env: { ...process.env, PORT: String(port), HOST: '127.0.0.1', PING_INTERVAL: '100', HEARTBEAT_TIMEOUT: '300' } });
    binaries.add(child);
    await untilHealthy(`http://127.0.0.1:${port}`);
    await postJson(`http://127.0.0.1:${port}/v1/sessions`, { sessionId: 'env' });
    const deaf = await joinedClient(`ws://127.0.0.1:${port}/session/env`, { autoPong: false });
    assert.deepEqual(await deaf.closedWithin(2000), { code: 1001, reason: 'Connection timeout' });
    child.kill('SIGTERM');
  });

  /**
   * Packs the root package and the platform packages `optional` (npm/<dir>), and installs
   * them into a new app as a published release has them: the platform packages as optional
   * dependencies (`napi pre-publish` adds them so), installed where `installFlags` let them.
   */
  function installPacked(dir, optional, installFlags = []) {
    const root = path.join(__dirname, '..');
    const run = (command, args, cwd) => execFileSync(command, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 120_000 });
    run(process.execPath, [path.join(root, 'scripts', 'setup.js'), 'package'], root);
    const pack = (from) => `file:${path.join(dir, run('npm', ['pack', '--silent', '--pack-destination', dir], from).trim().split('\n').pop())}`;
    const optionalDependencies = Object.fromEntries(optional.map((p) => [`switchyard-${p}`, pack(path.join(root, 'npm', p))]));
    const app = path.join(dir, 'app');
    fs.mkdirSync(app);
    fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, dependencies: { switchyard: pack(root) }, optionalDependencies }));
    run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', ...installFlags], app);
    return { app, run };
  }

  it('works installed from the packed npm packages: require(\'switchyard\') and npx switchyard', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'switchyard-pack-'));
    try {
      const platform = require('../bin/switchyard.js').platformPackage();
      const { app, run } = installPacked(dir, [platform]);
      assert.match(run('npx', ['--no-install', 'switchyard', '--help'], app), /^Switchyard: a WebSocket session relay/);
      const script = "require.resolve(`switchyard-${process.argv[1]}/package.json`); const { RelaySessionManager } = require('switchyard'); console.log(new RelaySessionManager().createSession().sessionId.length)";
      assert.equal(run(process.execPath, ['-e', script, platform], app).trim(), '22', 'the addon loads from the platform package');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('falls back to the WebAssembly package where no native one is installed (npm install --cpu=wasm32)', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'switchyard-pack-'));
    try {
      const { app, run } = installPacked(dir, ['wasm32-wasi', require('../bin/switchyard.js').platformPackage()], ['--cpu=wasm32']);
      assert.equal(fs.existsSync(path.join(app, 'node_modules', `switchyard-${require('../bin/switchyard.js').platformPackage()}`)), false);
      const script = [
        "const { RelaySessionManager } = require('switchyard');",
        'const manager = new RelaySessionManager();',
        'console.log(manager.createSession().sessionId.length);',
        "try { manager.attach(require('node:http').createServer()); } catch (err) { console.log(err.message); }",
      ].join('\n');
      const [length, refusal] = run(process.execPath, ['-e', script], app).trim().split('\n');
      assert.equal(length, '22', 'the addon loads from the wasm package');
      assert.match(refusal, /^The native transport is not available in the WebAssembly build/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('switchyard binary: HTTP API', () => {
  it('creates, lists, reads and deletes sessions', async () => {
    const server = await startBinary();
    const created = await postJson(`${server.base}/v1/sessions`, { metadata: { room: 'blue' }, expiresIn: 60000 });
    assert.equal(created.status, 201);
    const session = created.body;
    assert.match(session.sessionId, /^[A-Za-z0-9]{22}$/);
    assert.equal(session.wsUrl, `ws://127.0.0.1:${server.port}/session/${session.sessionId}`);
    assert.equal(Date.parse(session.expiresAt) - Date.parse(session.createdAt), 60000);
    assert.equal(session.clientCount, 0);
    assert.deepEqual(session.metadata, { room: 'blue' });

    const list = await fetchJson(`${server.base}/v1/sessions`);
    assert.deepEqual([list.body.sessions.map((s) => s.sessionId), list.body.next], [[session.sessionId], null]);
    const client = await joinedClient(session.wsUrl);
    assert.equal((await fetchJson(`${server.base}/v1/sessions/${session.sessionId}`)).body.clientCount, 1);

    const deleted = await fetchJson(`${server.base}/v1/sessions/${session.sessionId}`, { method: 'DELETE' });
    assert.deepEqual(deleted, { status: 200, body: { deleted: true } });
    assert.deepEqual(await client.closedWithin(), { code: 1000, reason: 'Session deleted' });
    for (const method of ['GET', 'DELETE']) {
      const missing = await fetchJson(`${server.base}/v1/sessions/${session.sessionId}`, { method });
      assert.equal(missing.status, 404);
      assert.equal(missing.body.error.code, 'SESSION_NOT_FOUND');
      assert.match(missing.body.error.message, new RegExp(session.sessionId));
    }
  });

  it('answers bad bodies with 400 and a code', async () => {
    const server = await startBinary();
    const post = (body) => fetchJson(`${server.base}/v1/sessions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    const cases = [
      ['{"sessionId":', 'INVALID_JSON'],
      ['{"sessionId":7}', 'INVALID_REQUEST'],
      ['{"sesionId":"typo"}', 'INVALID_REQUEST'],
      ['{"sessionId":"a/b"}', 'INVALID_SESSION_ID'],
      ['{"expiresIn":18446744073709551615}', 'INVALID_REQUEST'],
      ['{"expiresIn":-1}', 'INVALID_REQUEST'],
      ['{"conflictResolution":"ask-active"}', 'INVALID_REQUEST'],
    ];
    for (const [body, code] of cases) {
      const answer = await post(body);
      assert.equal(answer.status, 400, body);
      assert.equal(answer.body.error.code, code, body);
      assert.equal(typeof answer.body.error.message, 'string');
    }
    const lasting = (await post('{"sessionId":"default-life","expiresIn":0,"conflictResolution":"deny-both"}')).body;
    assert.equal(Date.parse(lasting.expiresAt) - Date.parse(lasting.createdAt), 1800000, 'expiresIn 0 is the default');
    assert.deepEqual([lasting.conflictResolution, lasting.activeClientId], ['deny-both', null]);
    assert.equal((await post('{"sessionId":"taken"}')).status, 201);
    assert.equal((await post('{"sessionId":"taken"}')).body.error.code, 'SESSION_EXISTS');
    const broadcast = await postJson(`${server.base}/v1/broadcast`, { sessionId: 'nope', type: 'x' });
    assert.equal(broadcast.status, 404);
    assert.equal((await postJson(`${server.base}/v1/broadcast`, { sessionId: 'taken' })).body.error.code, 'INVALID_REQUEST');
  });

  for (const threads of ['1', '2']) {
    it(`relays in order on --threads ${threads}, and stops on SIGTERM with a close for each client`, async () => {
      const server = await startBinary({ args: ['--threads', threads] });
      await postJson(`${server.base}/v1/sessions`, { sessionId: 'threads' });
      const [a, b] = [await joinedClient(`${server.ws}/session/threads`), await joinedClient(`${server.ws}/session/threads`)];
      await relaysInOrderBothWays(a, b);
      server.child.kill('SIGTERM');
      assert.equal((await a.closedWithin()).code, 1001);
      assert.equal((await server.child.exited).code, 0);
    });
  }

  it('broadcasts to a session and relays between its clients', async () => {
    const server = await startBinary();
    await postJson(`${server.base}/v1/sessions`, { sessionId: 'room' });
    const a = await joinedClient(`${server.ws}/session/room`);
    const b = await joinedClient(`${server.ws}/session/room`);
    a.send('{"type":"hello","from":"a"}');
    assert.equal((await b.next((m) => m.json?.type === 'hello')).text, '{"type":"hello","from":"a"}');
    const answer = await postJson(`${server.base}/v1/broadcast`, { sessionId: 'room', type: 'NOTICE', data: { text: 'maintenance at noon' } });
    assert.deepEqual(answer, { status: 200, body: { delivered: 2 } });
    for (const client of [a, b]) {
      const notice = (await client.nextOfType('NOTICE')).json;
      assert.deepEqual(notice.data, { text: 'maintenance at noon' });
      assert.equal(typeof notice.timestamp, 'number');
    }
    await Promise.all([a.close(), b.close()]);
  });

  it('broadcasts to channels, takes the routing flags, and answers requests NO_HANDLER', async () => {
    const server = await startBinary({ args: ['--channel-allow', 'alerts,chat:*', '--ack', 'always', '--request-timeout', '500'] });
    const a = new TestClient(`${server.ws}/`);
    await a.opened;
    a.send('{"type":"JOIN_CHANNEL","channel":"news"}');
    assert.equal((await a.nextOfType('ERROR')).json.data.code, 'CHANNEL_FORBIDDEN');
    a.send('{"type":"JOIN_CHANNEL","channel":"alerts"}');
    await a.nextOfType('CHANNEL_JOINED');
    const answer = await postJson(`${server.base}/v1/broadcast`, { channel: 'alerts', type: 'ALERT', data: { level: 2 } });
    assert.deepEqual(answer, { status: 200, body: { delivered: 1 } });
    const alert = (await a.nextOfType('ALERT')).json;
    assert.deepEqual([alert.channel, alert.data], ['alerts', { level: 2 }]);
    assert.equal((await postJson(`${server.base}/v1/broadcast`, { type: 'x' })).body.error.code, 'INVALID_REQUEST');
    assert.deepEqual((await postJson(`${server.base}/v1/broadcast`, { userId: 'nobody', type: 'x' })).body, { delivered: 0 });
    a.send('{"type":"say","channel":"alerts","id":"m1"}');
    assert.deepEqual([(await a.nextOfType('ACK')).json.delivered], [0]);
    a.send('{"type":"request","requestId":1}');
    assert.equal((await a.nextOfType('error')).json.payload.code, 'NO_HANDLER');
    const stats = (await fetchJson(`${server.base}/stats`)).body;
    assert.deepEqual(stats.channels, { total: 1, breakdown: { alerts: 1 } });
    assert.deepEqual([stats.acks, stats.forbidden], [1, 1]);
    await a.close();
  });

  it('serves a sessionless connection at / that answers ping', async () => {
    const server = await startBinary();
    const client = new TestClient(`${server.ws}/`);
    await client.opened;
    client.send('{"type":"ping"}');
    assert.equal((await client.nextOfType('pong')).json.type, 'pong');
    client.send('{"type":"relay-me"}');
    assert.equal((await client.nextOfType('error')).json.payload.code, 'NO_SESSION');
    await client.close();
  });

  it("answers GET /stats in getStats()'s shape", async () => {
    const server = await startBinary();
    const stats = (await fetchJson(`${server.base}/stats`)).body;
    assert.deepEqual(shapeOf(stats, addonOnly), shapeOf(new RelaySessionManager().getStats(), addonOnly));
    assert.deepEqual([stats.connections, stats.sessions, typeof stats.uptime], [0, 0, 'number'], "and the awareness service's names");
    assert.equal(stats.config.cleanupIntervalMs, 30000, "the configuration in force, with the binary's own defaults");
  });

  it('reports stats and Prometheus metrics that move with traffic', async () => {
    const server = await startBinary();
    await postJson(`${server.base}/v1/sessions`, { sessionId: 'm' });
    const a = await joinedClient(`${server.ws}/session/m`);
    const b = await joinedClient(`${server.ws}/session/m`);
    a.send('{"type":"x"}');
    await b.next((m) => m.json?.type === 'x');
    const bad = new RawClient(server.port);
    await bad.connected;
    bad.write(upgradeRequest('/session/m', { version: '12' }));
    assert.match(await bad.responseHead(), /^HTTP\/1\.1 400 [^]*sec-websocket-version: 13/i);

    const stats = (await fetchJson(`${server.base}/stats`)).body;
    assert.equal(stats.connections, 2);
    assert.equal(stats.sessions, 1);
    assert.deepEqual(stats.messages, { received: 1, relayed: 1, invalid: 0, dropped: 0, passiveUpdatesDropped: 0 });
    assert.equal(stats.handshakeFailures, 1);
    assert.equal(typeof stats.uptimeMs, 'number');
    assert.equal(stats.activeConnections, 2);
    assert.deepEqual(stats.connectionsByTransport, { native: 2, bridge: 0, sse: 0 });

    const response = await fetch(`${server.base}/metrics`);
    assert.match(response.headers.get('content-type'), /^text\/plain; version=0\.0\.4/);
    const metrics = parsePrometheus(await response.text());
    assert.deepEqual(metrics['switchyard_connections{transport="native"}'], { type: 'gauge', value: 2 });
    assert.deepEqual(metrics.switchyard_messages_relayed_total, { type: 'counter', value: 1 });
    assert.deepEqual(metrics.switchyard_handshake_failures_total, { type: 'counter', value: 1 });
    assert.equal(metrics.switchyard_message_size_bytes_count.value, 1, 'the one message sent');
    assert.equal(metrics['switchyard_message_size_bytes_bucket{le="128"}'].value, 1);
    assert.equal(metrics.switchyard_message_size_bytes_sum.value, '{"type":"x"}'.length);
    assert.ok(metrics.process_resident_memory_bytes.value > 0, 'process metrics');
    for (const name of ['sessions', 'messages_received_total', 'messages_dropped_total', 'bytes_received_total', 'bytes_sent_total', 'slow_consumer_closes_total', 'pending_handshakes']) {
      assert.ok(metrics[`switchyard_${name}`], `metric switchyard_${name}`);
    }
    const scrape = async () => parsePrometheus(await (await fetch(`${server.base}/metrics`)).text());
    await oneByOne(a, b);
    assert.ok((await scrape()).switchyard_relay_latency_seconds_count.value >= 1, 'one write in 16 is timed');
    a.ws.close(1000, 'done');
    await a.closed;
    await eventually(async () => assert.equal((await scrape())['switchyard_connections_closed_total{transport="native",code="1000"}']?.value, 1, 'closes are counted by code'));
    assert.equal((await scrape())['switchyard_connections{transport="native"}'].value, 1);
    await b.close();
  });
});

/** A non-loopback IPv4 address of this machine, if it has one. */
function externalAddress() {
  return Object.values(os.networkInterfaces()).flat().find((a) => a.family === 'IPv4' && !a.internal)?.address;
}

describe('switchyard binary: admin endpoints', () => {
  it('require the bearer token when one is set', async () => {
    const server = await startBinary({ env: { SWITCHYARD_ADMIN_TOKEN: 's3cret' } });
    const create = (authorization) =>
      fetchJson(`${server.base}/v1/sessions`, { method: 'POST', headers: authorization ? { authorization } : {} });
    const missing = await create();
    assert.equal(missing.status, 401);
    assert.equal(missing.body.error.code, 'UNAUTHORIZED');
    assert.equal((await create('Bearer wrong')).status, 401);
    assert.equal((await create('Basic czNjcmV0')).status, 401);
    const created = await create('Bearer s3cret');
    assert.equal(created.status, 201);
    assert.equal((await fetchJson(`${server.base}/v1/sessions/${created.body.sessionId}`, { method: 'DELETE' })).status, 401);
    // Session ids are what it takes to join: listing them needs the token too.
    for (const read of ['/v1/sessions', `/v1/sessions/${created.body.sessionId}`, '/stats', '/metrics']) {
      assert.equal((await fetch(`${server.base}${read}`)).status, 401, read);
      assert.equal((await fetch(`${server.base}${read}`, { headers: { authorization: 'bearer s3cret' } })).status, 200, `${read}, scheme in lower case (RFC 7235)`);
    }
    assert.equal((await fetchJson(`${server.base}/health`)).status, 200, 'health stays open');
  });

  it('refuse non-loopback clients with 403 when no token is set', async (t) => {
    const address = externalAddress();
    if (!address) {
      console.warn('SKIPPED: this machine has no non-loopback IPv4 address to test the 403 from');
      t.skip('no non-loopback address');
      return;
    }
    const port = await freePort();
    const child = spawn(binary, ['--port', String(port), '--host', '0.0.0.0']);
    binaries.add(child);
    await untilHealthy(`http://127.0.0.1:${port}`);
    const remote = await fetchJson(`http://${address}:${port}/v1/sessions`, { method: 'POST' });
    assert.equal(remote.status, 403);
    assert.equal(remote.body.error.code, 'FORBIDDEN');
    assert.equal((await fetchJson(`http://${address}:${port}/v1/sessions`)).status, 403, 'nor list session ids');
    assert.equal((await fetchJson(`http://${address}:${port}/stats`)).status, 200, 'counters stay readable');
    assert.equal((await fetchJson(`http://${address}:${port}/health`)).status, 200);
    assert.equal((await postJson(`http://127.0.0.1:${port}/v1/sessions`)).status, 201);
    child.kill('SIGTERM');
  });
});

describe('switchyard binary: bounds', () => {
  it('pages the session list in order of id, and caps how many sessions exist', async () => {
    const server = await startBinary({ args: ['--max-sessions', '25'] });
    const ids = Array.from({ length: 25 }, (_, i) => `s${String(i).padStart(2, '0')}`);
    for (const sessionId of [...ids].reverse()) assert.equal((await postJson(`${server.base}/v1/sessions`, { sessionId })).status, 201);
    const full = await postJson(`${server.base}/v1/sessions`, {});
    assert.deepEqual([full.status, full.body.error.code], [503, 'SESSION_LIMIT']);
    const seen = [];
    let after = '';
    for (let page = 0; page < 10; page++) {
      const { body } = await fetchJson(`${server.base}/v1/sessions?limit=10${after ? `&after=${after}` : ''}`);
      seen.push(...body.sessions.map((s) => s.sessionId));
      if (!body.next) break;
      assert.equal(body.next, body.sessions.at(-1).sessionId);
      after = body.next;
    }
    assert.deepEqual(seen, ids, 'every session once, in order');
    assert.equal((await fetchJson(`${server.base}/v1/sessions`)).body.sessions.length, 25, '100 a page unless asked');
    for (const bad of ['limit=0', 'limit=1001', 'limit=x', 'sort=id']) {
      const answer = await fetchJson(`${server.base}/v1/sessions?${bad}`);
      assert.deepEqual([answer.status, answer.body.error.code], [400, 'INVALID_REQUEST'], bad);
    }
    assert.equal((await fetchJson(`${server.base}/v1/sessions/s00`, { method: 'DELETE' })).status, 200);
    assert.equal((await postJson(`${server.base}/v1/sessions`, {})).status, 201, 'room again once one is gone');
  });

  it('never holds a fast client up behind one that stopped reading', async () => {
    const server = await startBinary({ args: ['--max-queued-bytes', String(256 * 1024), '--max-clients-per-session', '3'] });
    await postJson(`${server.base}/v1/sessions`, { sessionId: 'flood' });
    const sender = await joinedClient(`${server.ws}/session/flood`);
    const fast = await joinedClient(`${server.ws}/session/flood`);
    const slow = new RawClient(server.port);
    await slow.connected;
    slow.write(upgradeRequest('/session/flood'));
    await slow.responseHead();
    slow.socket.pause();
    const { received, longestGap } = await floodBesideSlowReader({ sender, fast });
    assert.equal(received, 20_000, `every message reached the fast client; its longest wait was ${Math.round(longestGap)} ms`);
    await eventually(async () => {
      sender.send('{"type":"nudge"}');
      assert.equal((await fetchJson(`${server.base}/stats`)).body.slowConsumerCloses, 1);
    }, 10_000);
    slow.socket.destroy();
    await Promise.all([sender.close(), fast.close()]);
  });
});

/** A TCP connection to the binary from `localAddress` (another loopback address), whose `ended` resolves when it closes. */
function connectFrom(port, localAddress) {
  const socket = net.connect({ port, host: '127.0.0.1', localAddress });
  socket.on('error', () => {});
  // Reading (and dropping) what arrives is what lets Node see the server close it.
  socket.resume();
  socket.ended = new Promise((resolve) => socket.on('close', resolve));
  return new Promise((resolve) => socket.once('connect', () => resolve(socket)));
}

/**
 * GET `path` from `localAddress` on a connection of its own (closed after it): `{ status,
 * body }`, or `{ status: <the error code> }` when the connection was refused.
 */
function getFrom(port, localAddress, path) {
  return new Promise((resolve) => {
    http
      .get({ port, host: '127.0.0.1', localAddress, path, agent: false }, (res) => {
        let text = '';
        res.on('data', (chunk) => (text += chunk));
        res.on('end', () => resolve({ status: res.statusCode, body: JSON.parse(text) }));
      })
      .on('error', (e) => resolve({ status: e.code }));
  });
}

/** The binary's resident memory in KiB. */
const rssKiB = (pid) => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1]);

describe('switchyard binary: connections that have not finished their handshake', () => {
  it('closes a silent or trickling connection at the handshake deadline', async () => {
    const server = await startBinary({ args: ['--handshake-timeout', '300'] });
    const silent = await connectFrom(server.port, '127.0.0.1');
    const trickle = await connectFrom(server.port, '127.0.0.1');
    const request = Buffer.from(upgradeRequest('/'));
    let sent = 0;
    const dripping = setInterval(() => trickle.write(request.subarray(sent, ++sent)), 50);
    await Promise.all([silent.ended, trickle.ended]);
    clearInterval(dripping);
    assert.ok(sent < request.length, `the trickle was cut off after ${sent} of ${request.length} bytes`);
    const prompt = new TestClient(`${server.ws}/`);
    await prompt.opened;
    await prompt.close();
  });

  it('caps waiting connections per address and overall, and /health and handshakes from elsewhere still work', async () => {
    const server = await startBinary({ args: ['--max-pending-handshakes-per-ip', '20', '--max-pending-handshakes', '30'] });
    await postJson(`${server.base}/v1/sessions`, { sessionId: 'still-open' });
    const held = [];
    const closed = () => held.filter((s) => s.closed).length;
    for (let i = 0; i < 40; i++) held.push(await connectFrom(server.port, '127.0.0.9'));
    await eventually(() => assert.equal(closed(), 20, 'past 20 from one address, closed at once'));
    assert.equal((await getFrom(server.port, '127.0.0.2', '/health')).status, 200, 'another address is answered');
    const client = new TestClient(`${server.ws}/session/still-open`);
    assert.equal((await client.nextOfType('client_connected')).json.sessionId, 'still-open', 'and can join a session');
    // Past the overall cap from a second address: 20 + 15 waiting, of 30 allowed.
    for (let i = 0; i < 15; i++) held.push(await connectFrom(server.port, '127.0.0.3'));
    await eventually(() => assert.ok(closed() > 20, 'past the overall cap, some are refused'));
    await eventually(() => assert.ok(held.filter((s) => !s.closed).length <= 30, 'no more than 30 waiting'));
    assert.notEqual((await getFrom(server.port, '127.0.0.4', '/health')).status, 200, 'past the overall cap, a new address is refused too');
    for (const socket of held) socket.destroy();
    await eventually(async () => assert.equal((await getFrom(server.port, '127.0.0.4', '/health')).status, 200));
    assert.ok((await getFrom(server.port, '127.0.0.4', '/stats')).body.handshakeFailures >= 22, 'the refused are counted');
    await client.close();
  });

  it('bounds what a request head may hold: endless headers cost no memory', async () => {
    const server = await startBinary();
    const before = rssKiB(server.child.pid);
    const header = `X-Filler: ${'a'.repeat(1024)}\r\n`;
    const sockets = await Promise.all(Array.from({ length: 200 }, () => connectFrom(server.port, '127.0.0.5')));
    await Promise.all(
      sockets.map(async (socket) => {
        socket.write('GET /session/x HTTP/1.1\r\nHost: x\r\n');
        for (let i = 0; i < 400 && !socket.destroyed; i++) if (!socket.write(header)) await new Promise((resolve) => socket.once('drain', resolve).once('close', resolve));
        await socket.ended;
      }),
    );
    const grown = rssKiB(server.child.pid) - before;
    assert.ok(grown < 32 * 1024, `200 connections sending 400 KiB of headers each grew the server by ${grown} KiB`);
    assert.equal((await fetchJson(`${server.base}/health`)).status, 200);
  });
});

describe('switchyard binary: stopping', () => {
  it('a SIGSTOP longer than the heartbeat timeout closes nobody and loses nothing', async () => {
    const server = await startBinary({ args: ['--ping-interval', '300', '--heartbeat-timeout', '900'] });
    await postJson(`${server.base}/v1/sessions`, { sessionId: 'paused' });
    const a = await joinedClient(`${server.ws}/session/paused`);
    const b = await joinedClient(`${server.ws}/session/paused`);
    server.child.kill('SIGSTOP');
    for (let i = 0; i < 200; i++) a.send(`{"type":"during","i":${i}}`);
    // The stop itself is what is tested: well past the heartbeat timeout.
    await sleep(2500);
    server.child.kill('SIGCONT');
    for (let i = 0; i < 200; i++) assert.equal((await b.next((m) => m.json?.type === 'during')).json.i, i);
    // Two ping intervals on, both have been judged on pongs read after the stop.
    await sleep(700);
    a.send('{"type":"after"}');
    await b.nextOfType('after');
    assert.equal(a.closeEvent, undefined);
    assert.equal(b.closeEvent, undefined);
    await Promise.all([a.close(), b.close()]);
  });

  for (const signal of ['SIGTERM', 'SIGINT']) {
    it(`closes every socket with 1001 on ${signal} and exits 0`, async () => {
      const server = await startBinary();
      await postJson(`${server.base}/v1/sessions`, { sessionId: 's' });
      const sessionless = new TestClient(`${server.ws}/`);
      await sessionless.opened;
      const clients = [await joinedClient(`${server.ws}/session/s`), await joinedClient(`${server.ws}/session/s`), sessionless];
      const stopped = Date.now();
      server.child.kill(signal);
      for (const client of clients) assert.deepEqual(await client.closedWithin(5000), { code: 1001, reason: 'Server shutting down' });
      assert.deepEqual(await server.child.exited, { code: 0, signal: null });
      assert.ok(Date.now() - stopped < 5000, 'within 5 s');
    });
  }

  it('on SIGHUP without TLS, has nothing to reload and goes on serving', async () => {
    const server = await startBinary();
    const client = new TestClient(`${server.ws}/`);
    await client.opened;
    server.child.kill('SIGHUP');
    await eventually(() => assert.match(server.logs(), /SIGHUP: nothing to reload/));
    assert.equal((await fetchJson(`${server.base}/health`)).status, 200);
    assert.equal(client.closeEvent, undefined);
    await client.close();
  });

  it('started under nohup, goes on ignoring SIGHUP', async () => {
    const server = await startBinary({ command: ['nohup', binary] });
    const client = new TestClient(`${server.ws}/`);
    await client.opened;
    server.child.kill('SIGHUP');
    assert.equal((await fetchJson(`${server.base}/health`)).status, 200);
    server.child.kill('SIGTERM');
    assert.deepEqual(await client.closedWithin(5000), { code: 1001, reason: 'Server shutting down' });
    assert.deepEqual(await server.child.exited, { code: 0, signal: null });
    assert.match(server.logs(), /shutting down cause="SIGTERM"/);
  });

  it('logs one line per connection opened and closed, nothing per message', async () => {
    const server = await startBinary();
    await postJson(`${server.base}/v1/sessions`, { sessionId: 'logs' });
    const a = await joinedClient(`${server.ws}/session/logs`);
    const b = await joinedClient(`${server.ws}/session/logs`);
    for (let i = 0; i < 50; i++) a.send(`{"type":"m","i":${i}}`);
    await b.next((m) => m.json?.i === 49);
    await Promise.all([a.close(), b.close()]);
    const lines = () => server.logs().split('\n').filter(Boolean);
    await eventually(() => assert.equal(lines().filter((l) => l.includes('connection closed')).length, 2));
    assert.equal(lines().filter((l) => l.includes('connection opened')).length, 2);
    assert.ok(lines().length < 10, `a handful of lines, not one per message:\n${lines().join('\n')}`);
  });

  const launcher = [process.execPath, path.join(__dirname, '..', 'bin', 'switchyard.js')];

  /** The pid of the server the launcher `child` started. */
  const serverPid = (child) => Number(fs.readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim());

  /** Whether process `pid` has ended (a zombie nobody reaped yet has). */
  const ended = (pid) => {
    try {
      return fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].startsWith('Z');
    } catch {
      return true;
    }
  };

  /** Whether a new server can listen on `port`: the old one has let it go. */
  const portFree = (port) =>
    new Promise((resolve) => {
      const probe = net.createServer();
      probe.once('error', () => resolve(false));
      probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(true)));
    });

  it('npx switchyard passes SIGTERM on to the server and exits with its code, leaving no orphan', async () => {
    const server = await startBinary({ command: launcher });
    const rustPid = serverPid(server.child);
    assert.ok(rustPid > 0, 'the bin started the server as its child');
    await postJson(`${server.base}/v1/sessions`, { sessionId: 'npx' });
    const clients = [await joinedClient(`${server.ws}/session/npx`), await joinedClient(`${server.ws}/session/npx`)];
    server.child.kill('SIGTERM');
    for (const client of clients) assert.deepEqual(await client.closedWithin(5000), { code: 1001, reason: 'Server shutting down' });
    assert.deepEqual(await server.child.exited, { code: 0, signal: null });
    assert.equal(ended(rustPid), true, 'the server process is gone');
  });

  it('npx switchyard SIGKILLed takes its server with it: clients get 1001, the port is freed, no orphan', async () => {
    const server = await startBinary({ command: launcher });
    const rustPid = serverPid(server.child);
    await postJson(`${server.base}/v1/sessions`, { sessionId: 'orphan' });
    const client = await joinedClient(`${server.ws}/session/orphan`);
    const killedAt = Date.now();
    server.child.kill('SIGKILL');
    assert.deepEqual(await client.closedWithin(5000), { code: 1001, reason: 'Server shutting down' });
    await eventually(async () => assert.equal(await portFree(server.port), true, 'the port is free'), 5000);
    const tookMs = Date.now() - killedAt;
    console.log(`# the port of a server whose launcher was SIGKILLed was free after ${tookMs} ms`);
    assert.ok(tookMs <= 2000, `within 2 s (took ${tookMs} ms)`);
    await eventually(() => assert.equal(ended(rustPid), true, 'the server process is gone'), 5000);
    assert.match(server.logs(), /shutting down cause="the launcher is gone"/);
  });

  // The fallback where the kernel cannot be asked (macOS, Windows): the launcher's pipe
  // alone, closed here while its holder lives on.
  it("stops gracefully when the launcher's pipe closes, the launcher still running", async () => {
    const port = await freePort();
    const child = spawn(binary, ['--port', String(port), '--host', '127.0.0.1'], {
      env: { ...process.env, RUST_LOG: 'info', SWITCHYARD_LAUNCHER_FD: '3', SWITCHYARD_LAUNCHER_PID: String(process.pid) },
      stdio: ['ignore', 'ignore', 'pipe', 'pipe'],
    });
    binaries.add(child);
    let logs = '';
    child.stderr.on('data', (chunk) => (logs += chunk));
    const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
    await untilHealthy(`http://127.0.0.1:${port}`, () => logs);
    await postJson(`http://127.0.0.1:${port}/v1/sessions`, { sessionId: 'pipe' });
    const client = await joinedClient(`ws://127.0.0.1:${port}/session/pipe`);
    child.stdio[3].destroy();
    assert.deepEqual(await client.closedWithin(5000), { code: 1001, reason: 'Server shutting down' });
    assert.deepEqual(await exited, { code: 0, signal: null });
    assert.match(logs, /shutting down cause="the launcher is gone"/);
  });
});
