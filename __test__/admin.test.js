// __test__/admin.test.js: what operators read: `manager.metrics()` (Prometheus text,
// labelled by transport and close code, with histograms), `manager.adminHandler()` in
// node:http, Express and Fastify, and the Grafana dashboard's queries against the real
// metric names. The page itself is drawn in Chromium by browser.test.js.
const { describe, it, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const { RelaySessionManager } = require('..');
const { TestClient, startMixedServer, parsePrometheus, eventually, oneByOne } = require('./helpers');

const cleanups = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function listen(handler) {
  const server = http.createServer(handler);
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise((resolve) => server.close(resolve)));
  return `http://127.0.0.1:${server.address().port}`;
}

describe('manager.metrics()', () => {
  it('labels connections by transport and closes by code, with histograms of latency and size', async () => {
    const s = await startMixedServer();
    cleanups.push(() => s.close());
    s.manager.createSession({ sessionId: 'metrics' });
    const native = new TestClient(s.native('metrics'));
    await native.nextOfType('client_connected');
    const bridge = new TestClient(s.bridge('metrics'));
    await bridge.nextOfType('client_connected');
    native.send('{"type":"one"}');
    await bridge.nextOfType('one');
    bridge.send('{"type":"two","padding":"' + 'x'.repeat(2000) + '"}');
    await native.nextOfType('two');
    const sizes = parsePrometheus(s.manager.metrics());
    assert.equal(sizes.switchyard_message_size_bytes_count.value, 2);
    assert.equal(sizes['switchyard_message_size_bytes_bucket{le="128"}'].value, 1, 'buckets are cumulative');
    assert.equal(sizes['switchyard_message_size_bytes_bucket{le="16384"}'].value, 2);
    await oneByOne(native, bridge);
    await oneByOne(bridge, native);

    let metrics = parsePrometheus(s.manager.metrics());
    assert.equal(metrics['switchyard_connections{transport="native"}'].value, 1);
    assert.equal(metrics['switchyard_connections{transport="bridge"}'].value, 1);
    assert.equal(metrics['switchyard_connections_opened_total{transport="bridge"}'].value, 1);
    assert.ok(metrics.switchyard_relay_latency_seconds_count.value >= 2, 'a write in 16 through each transport is timed');
    assert.equal(metrics['switchyard_relay_latency_seconds_bucket{le="+Inf"}'].value, metrics.switchyard_relay_latency_seconds_count.value);
    assert.ok(metrics.process_cpu_seconds_total.value >= 0 && metrics.process_open_fds.value > 0, 'process metrics');

    bridge.ws.close(4001, 'bye');
    await bridge.closed;
    await eventually(() => {
      metrics = parsePrometheus(s.manager.metrics());
      assert.equal(metrics['switchyard_connections_closed_total{transport="bridge",code="4001"}']?.value, 1);
    });
    assert.equal(metrics['switchyard_connections{transport="bridge"}'].value, 0);

    const stats = s.manager.getStats();
    assert.deepEqual(stats.connectionsByTransport, { native: 1, bridge: 0, sse: 0 });
    assert.ok(stats.relayLatency.samples >= 2);
    assert.equal(typeof stats.relayLatency.p99Ms, 'number');
    await native.close();
  });
});

describe('manager.adminHandler()', () => {
  it('serves the page from a directory, getStats() as JSON, and only GET', async () => {
    const manager = new RelaySessionManager();
    manager.createSession({ sessionId: 'seen' });
    const base = await listen(manager.adminHandler());

    const bare = await fetch(`${base}/admin`, { redirect: 'manual' });
    assert.deepEqual([bare.status, bare.headers.get('location')], [308, '/admin/']);
    const page = await fetch(`${base}/admin/`);
    assert.match(page.headers.get('content-type'), /^text\/html/);
    assert.match(await page.text(), /<title>Switchyard admin<\/title>[^]*fetch\('stats'/);
    const stats = await fetch(`${base}/admin/stats`);
    assert.equal(stats.headers.get('cache-control'), 'no-store');
    const body = await stats.json();
    assert.equal(body.activeSessions, 1);
    assert.deepEqual(Object.keys(body).sort(), Object.keys(JSON.parse(JSON.stringify(manager.getStats()))).sort());
    assert.equal((await fetch(`${base}/admin/stats`, { method: 'POST' })).status, 405);
  });

  it('asks for the token, when given one, for the stats but not the page', async () => {
    const manager = new RelaySessionManager();
    const base = await listen(manager.adminHandler({ token: 's3cret' }));
    assert.equal((await fetch(`${base}/admin/`)).status, 200, 'the page holds nothing secret');
    const refused = await fetch(`${base}/admin/stats`);
    assert.equal(refused.status, 401);
    assert.equal(refused.headers.get('www-authenticate'), 'Bearer');
    assert.equal((await refused.json()).error.code, 'UNAUTHORIZED');
    for (const wrong of ['Bearer s3cre', 'Bearer s3cret2', 'Basic czNjcmV0']) {
      assert.equal((await fetch(`${base}/admin/stats`, { headers: { authorization: wrong } })).status, 401, wrong);
    }
    assert.equal((await fetch(`${base}/admin/stats`, { headers: { authorization: 'bearer s3cret' } })).status, 200);
  });

  it('refuses options it does not know, naming them', () => {
    const manager = new RelaySessionManager();
    assert.throws(() => manager.adminHandler({ tokn: 'x' }), { name: 'TypeError', message: /unknown option "tokn"; expected: token/ });
    assert.throws(() => manager.adminHandler({ token: '' }), { name: 'TypeError', message: /token must be a non-empty string/ });
    assert.throws(() => manager.adminHandler('s3cret'), { name: 'TypeError', message: /options must be an object/ });
  });

  it('mounts in Express under its path and in Fastify with the raw request', async () => {
    const express = require('express');
    const manager = new RelaySessionManager();
    manager.createSession();
    const app = express();
    app.use('/ops/admin', manager.adminHandler());
    const expressBase = await listen(app);
    const bare = await fetch(`${expressBase}/ops/admin`, { redirect: 'manual' });
    assert.equal(bare.headers.get('location'), '/ops/admin/', 'Express strips the mount path; the redirect keeps it');
    assert.equal((await (await fetch(`${expressBase}/ops/admin/stats`)).json()).activeSessions, 1);

    const Fastify = require('fastify');
    const fastify = Fastify();
    const admin = manager.adminHandler();
    fastify.get('/admin/*', (request, reply) => {
      reply.hijack();
      admin(request.raw, reply.raw);
    });
    await fastify.listen({ port: 0, host: '127.0.0.1' });
    cleanups.push(() => fastify.close());
    const fastifyBase = `http://127.0.0.1:${fastify.server.address().port}`;
    assert.match(await (await fetch(`${fastifyBase}/admin/`)).text(), /Switchyard admin/);
    assert.equal((await (await fetch(`${fastifyBase}/admin/stats`)).json()).activeSessions, 1);
  });
});

describe('docs/grafana-dashboard.json', () => {
  it('queries only metrics that /metrics exports', () => {
    const dashboard = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'docs', 'grafana-dashboard.json'), 'utf8'));
    // Every family /metrics declares, histograms by their bucket series.
    const declared = [...new RelaySessionManager().metrics().matchAll(/^# TYPE (\S+) (\S+)$/gm)];
    const exported = new Set(declared.map(([, name, type]) => (type === 'histogram' ? `${name}_bucket` : name)));
    const queries = dashboard.panels.flatMap((panel) => (panel.targets ?? []).map((target) => [panel.title, target.expr]));
    assert.ok(queries.length >= 8, 'the dashboard has panels with queries');
    for (const [title, expr] of queries) {
      const names = expr.match(/\b(?:switchyard|process)_[a-z_]+/g) ?? [];
      assert.ok(names.length > 0, `${title}: ${expr} names a metric`);
      for (const name of names) assert.ok(exported.has(name), `${title}: ${name} is exported`);
    }
  });
});
