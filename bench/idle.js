// bench/idle.js (`npm run idle`; not part of `npm test`): many idle connections on the
// binary. Measures the server's memory per idle connection, holds them past a heartbeat
// timeout (they answer pings, as browsers do) to show none is dropped, and measures a few
// active clients' latency before the idle ones come and while they are there.
// Prints one JSON line; exits 1 when a connection was lost or refused.
//
// Options: --connections N (18000; this machine allows 20,000 open files a process),
// --hold-seconds N (75: past the 60 s heartbeat timeout), --messages N (2000 per active
// client and phase).
const WebSocket = require('ws');
const { build, sleep, rssBytes, startRelay, relays } = require('./processes');

const option = (name, fallback) => {
  const at = process.argv.indexOf(`--${name}`);
  return at === -1 ? fallback : Number(process.argv[at + 1]);
};
const connections = option('connections', 18_000);
const holdMs = option('hold-seconds', 75) * 1000;
const messages = option('messages', 2000);
const PER_SESSION = 10;
const BATCH = 200;

async function post(base, body) {
  const response = await fetch(`${base}/v1/sessions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return (await response.json()).sessionId;
}

/** Opens a client and resolves once the server welcomed it. */
function join(url, onClose) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.once('error', reject);
    ws.once('message', () => resolve(ws));
    ws.once('close', (code) => onClose(code));
  });
}

/** Two pairs of active clients relaying `messages` each: latency percentiles in ms. */
async function activeLatency(base, ws) {
  const latencies = [];
  for (let pair = 0; pair < 2; pair++) {
    const id = await post(base, { maxClients: 2 });
    const [a, b] = [await join(`${ws}/session/${id}`, () => {}), await join(`${ws}/session/${id}`, () => {})];
    let received = 0;
    const done = new Promise((resolve) =>
      b.on('message', (data) => {
        const message = JSON.parse(data);
        if (message.type !== 'ping-pong') return;
        latencies.push(performance.now() - message.t);
        if (++received === messages) resolve();
      }),
    );
    for (let i = 0; i < messages; i++) {
      a.send(JSON.stringify({ type: 'ping-pong', t: performance.now() }));
      if (i % 50 === 49) await sleep(5);
    }
    await done;
    a.close();
    b.close();
  }
  latencies.sort((x, y) => x - y);
  const at = (q) => +latencies[Math.floor(latencies.length * q)].toFixed(3);
  return { p50: at(0.5), p99: at(0.99) };
}

async function main() {
  build();
  const running = await startRelay(relays.find((r) => r.name === 'binary'));
  const base = `http://127.0.0.1:${running.port}`;
  const ws = `ws://127.0.0.1:${running.port}`;
  const pid = running.child.pid;
  const sessions = [];
  for (let i = 0; i < Math.ceil(connections / PER_SESSION); i++) sessions.push(await post(base, {}));
  const before = await activeLatency(base, ws);
  await sleep(1000);
  const rssBefore = rssBytes(pid);

  let lost = 0;
  const clients = [];
  const started = performance.now();
  for (let i = 0; i < connections; i += BATCH) {
    const batch = Array.from({ length: Math.min(BATCH, connections - i) }, (_, k) => join(`${ws}/session/${sessions[Math.floor((i + k) / PER_SESSION)]}`, () => lost++));
    clients.push(...(await Promise.all(batch)));
  }
  const openSeconds = (performance.now() - started) / 1000;
  console.error(`idle: ${clients.length} connections open in ${openSeconds.toFixed(1)} s`);
  await sleep(3000);
  const rssIdle = rssBytes(pid);
  const during = await activeLatency(base, ws);
  console.error(`idle: holding them ${holdMs / 1000} s, past a heartbeat timeout`);
  await sleep(holdMs);
  const stats = await (await fetch(`${base}/stats`)).json();
  const result = {
    ok: lost === 0 && stats.connections === connections,
    connections,
    openSeconds: +openSeconds.toFixed(1),
    rssMiB: { before: +(rssBefore / 2 ** 20).toFixed(1), idle: +(rssIdle / 2 ** 20).toFixed(1) },
    bytesPerConnection: Math.round((rssIdle - rssBefore) / connections),
    heldSeconds: holdMs / 1000,
    lostDuringHold: lost,
    serverConnectionsAfterHold: stats.connections,
    activeLatencyMs: { without: before, withIdle: during },
  };
  for (const client of clients) client.terminate();
  await running.stop();
  console.log(JSON.stringify(result));
  process.exit(result.ok ? 0 : 1);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
