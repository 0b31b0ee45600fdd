// bench/soak.js (`npm run soak`; not part of `npm test`): thousands of connections
// relaying at a steady rate for minutes, with clients leaving and joining all the while.
// Passes when no message was lost, duplicated or reordered and the server's RSS at the end
// is within 10% of its RSS after warm-up; prints one JSON line and exits 1 otherwise.
//
// Loss is checked exactly: every message carries its sender and a per-sender sequence
// number, and a client that joined (had its welcome) before a message was sent must get
// it, in order, unless it left itself. A client that leaves closes gracefully after its
// last send, so its messages still count.
//
// Bad neighbours can be mixed in, and are left out of the loss count: `--slow N` clients
// that upgrade and then never read (answering no ping, the server closes them at its
// heartbeat timeout, or with 1013 once their queue is full, without holding anyone up;
// each is replaced after 90 s), and `--garbage N` connections a second that
// send a frame breaking RFC 6455 (closed with 1002) or text that is not JSON (answered
// INVALID_MESSAGE). `--hogs N` runs CPU-bound processes beside it all.
//
// Options: --server binary|native|bridge (binary), --minutes N (10), --connections N
// (2000), --per-session N (10), --rate N (messages per client per second, 1),
// --churn N (clients replaced per second, 10), --warmup-seconds N (60, at most a fifth
// of the run), --slow N (0), --garbage N (0), --hogs N (0).
const net = require('node:net');
const { spawn } = require('node:child_process');
const WebSocket = require('ws');
const { relays, build, sleep, rssBytes, startRelay } = require('./processes');
const { upgradeRequest, clientFrame } = require('../__test__/helpers');

const option = (name, fallback) => {
  const at = process.argv.indexOf(`--${name}`);
  if (at === -1) return fallback;
  const value = process.argv[at + 1];
  if (typeof fallback === 'number' && !(Number(value) > 0)) throw new Error(`--${name} takes a positive number, not ${value}`);
  return typeof fallback === 'number' ? Number(value) : value;
};
const relay = relays.find((r) => r.name === option('server', 'binary') && ['binary', 'native', 'bridge'].includes(r.name));
if (!relay) throw new Error('--server is binary, native or bridge');
const durationMs = option('minutes', 10) * 60_000;
const connections = option('connections', 2000);
const perSession = option('per-session', 10);
const ratePerClient = option('rate', 1);
const churnPerSecond = option('churn', 10);
const warmupMs = Math.min(option('warmup-seconds', 60) * 1000, durationMs / 5);
const slowCount = option('slow', 0);
const garbagePerSecond = option('garbage', 0);
const hogCount = option('hogs', 0);
const SLOW_LIFETIME_MS = 90_000;
const RSS_TOLERANCE = 0.1;
const DRAIN_MS = 3000;
const SAMPLE_EVERY_MS = 30_000;
const PADDING = 'x'.repeat(64);

const totals = { sent: 0, delivered: 0, lost: 0, duplicated: 0, joins: 0, leaves: 0, refused: 0, closedByServer: 0 };
const neighbours = { slowOpened: 0, garbageSent: 0, garbageAnswered: 0 };

/** A raw connection to `path` that has upgraded: resolves once the 101 arrived. */
function rawUpgraded(port, path) {
  const socket = net.connect(port, '127.0.0.1');
  socket.on('error', () => {});
  socket.write(upgradeRequest(path));
  return new Promise((resolve) => {
    let head = '';
    const onData = (chunk) => {
      head += chunk.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      socket.off('data', onData);
      resolve(socket);
    };
    socket.on('data', onData);
    socket.on('close', () => resolve(socket));
  });
}

/** A client that upgrades and then never reads again. */
async function openSlowConsumer(port, path) {
  const socket = await rawUpgraded(port, path);
  socket.pause();
  neighbours.slowOpened++;
  return { socket, openedAt: performance.now() };
}

/** A connection that misbehaves once: a frame breaking RFC 6455, or text that is not JSON. */
async function misbehave(port, path, kind) {
  const socket = await rawUpgraded(port, path);
  neighbours.garbageSent++;
  socket.resume();
  socket.on('data', () => {});
  socket.write(kind === 'frame' ? clientFrame(1, '{"type":"bare"}', { mask: false }) : clientFrame(1, 'not json {'));
  await new Promise((resolve) => {
    socket.once('data', () => {
      neighbours.garbageAnswered++;
      resolve();
    });
    socket.once('close', resolve);
    setTimeout(resolve, 2000);
  });
  socket.destroy();
}
const latencies = [];
let nextClientNumber = 0;

/** Index of the first send after `time` in a sender's ascending send times. */
function firstSentAfter(sentAt, time) {
  let [low, high] = [0, sentAt.length];
  while (low < high) {
    const mid = (low + high) >> 1;
    if (sentAt[mid] > time) high = mid;
    else low = mid + 1;
  }
  return low;
}

/** One soak client: sends its numbered stream, checks everyone else's. */
class SoakClient {
  constructor(session, url) {
    this.key = `c${nextClientNumber++}`;
    this.session = session;
    this.sentAt = [];
    this.nextExpected = new Map();
    this.joinedAt = null;
    this.leaving = false;
    this.nextSendAt = Infinity;
    this.ws = new WebSocket(url);
    this.ready = new Promise((resolve, reject) => {
      this.ws.on('error', reject);
      this.ws.on('close', (code) => {
        if (this.leaving) return;
        totals.closedByServer++;
        session.members.delete(this);
        reject(new Error(`closed with ${code} before leaving`));
      });
      this.ws.on('message', (data) => {
        const message = JSON.parse(data.toString());
        if (this.joinedAt === null && message.type === 'client_connected') {
          this.joinedAt = performance.now();
          this.nextSendAt = this.joinedAt + Math.random() * (1000 / ratePerClient);
          session.members.add(this);
          session.everyone.add(this);
          resolve(this);
        } else if (message.type === 'soak') {
          this.receive(message);
        }
      });
    });
    this.ready.catch(() => totals.refused++);
  }

  send(now) {
    const seq = this.sentAt.length;
    this.sentAt.push(now);
    this.ws.send(JSON.stringify({ type: 'soak', from: this.key, seq, t: Date.now(), pad: PADDING }));
    totals.sent++;
    this.nextSendAt += 1000 / ratePerClient;
  }

  receive({ from, seq, t }) {
    totals.delivered++;
    latencies.push(Date.now() - t);
    if (latencies.length > 200_000) latencies.splice(0, 100_000);
    const next = this.nextExpected.get(from);
    if (next === undefined) {
      // Its first from this sender may be one sent before it joined that reached the
      // server after; it must not be later than the first sent after it joined.
      const firstOwed = firstSentAfter(this.session.byKey.get(from).sentAt, this.joinedAt);
      if (seq > firstOwed) totals.lost += seq - firstOwed;
    } else if (seq > next) totals.lost += seq - next;
    else if (seq < next) totals.duplicated++;
    this.nextExpected.set(from, seq + 1);
  }

  /** Messages it should have had by the end and did not. */
  missing() {
    let missing = 0;
    for (const sender of this.session.everyone) {
      if (sender === this) continue;
      const from = this.nextExpected.get(sender.key) ?? firstSentAfter(sender.sentAt, this.joinedAt);
      missing += Math.max(0, sender.sentAt.length - from);
    }
    return missing;
  }

  leave() {
    this.leaving = true;
    this.nextSendAt = Infinity;
    this.session.members.delete(this);
    this.ws.close(1000);
    totals.leaves++;
  }
}

async function main() {
  build();
  const hogs = Array.from({ length: hogCount }, () => spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' }));
  process.on('exit', () => hogs.forEach((hog) => hog.kill('SIGKILL')));
  const running = await startRelay(relay);
  const base = `127.0.0.1:${running.port}`;
  const pid = running.child.pid;
  const sessions = [];
  for (let i = 0; i < Math.ceil(connections / perSession); i++) {
    const response = await fetch(`http://${base}${running.createPath}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"maxClients":100}' });
    const { sessionId } = await response.json();
    sessions.push({ url: `ws://${base}/session/${sessionId}`, members: new Set(), everyone: new Set(), byKey: new Map() });
  }
  const join = (session) => {
    const client = new SoakClient(session, session.url);
    session.byKey.set(client.key, client);
    totals.joins++;
    return client.ready;
  };
  for (let i = 0; i < connections; i += 100) {
    await Promise.all(Array.from({ length: Math.min(100, connections - i) }, (_, k) => join(sessions[(i + k) % sessions.length])));
  }
  const sessionPath = (session) => new URL(session.url).pathname;
  const randomSession = () => sessions[Math.floor(Math.random() * sessions.length)];
  const slow = await Promise.all(Array.from({ length: slowCount }, () => openSlowConsumer(running.port, sessionPath(randomSession()))));
  console.error(
    `soak: ${connections} connections in ${sessions.length} sessions on the ${relay.label}; ${durationMs / 60_000} min at ${ratePerClient}/s each, ${churnPerSecond} replaced per second; ${slowCount} slow consumers, ${garbagePerSecond} misbehaving connections a second, ${hogCount} CPU hogs`,
  );

  const started = performance.now();
  const samples = [];
  let rssAfterWarmup = null;
  const pending = new Set();
  let lastChurn = started;
  while (performance.now() - started < durationMs) {
    const now = performance.now();
    for (const session of sessions) for (const client of session.members) if (client.nextSendAt <= now) client.send(now);
    if (now - lastChurn >= 1000) {
      lastChurn = now;
      for (let i = 0; i < churnPerSecond; i++) {
        const session = sessions[Math.floor(Math.random() * sessions.length)];
        const leaving = [...session.members][Math.floor(Math.random() * session.members.size)];
        if (!leaving) continue;
        leaving.leave();
        const joined = join(session).catch(() => {});
        pending.add(joined);
        joined.finally(() => pending.delete(joined));
      }
      for (let i = 0; i < slow.length; i++) {
        if (now - slow[i].openedAt < SLOW_LIFETIME_MS) continue;
        slow[i].socket.destroy();
        slow[i] = { socket: null, openedAt: now };
        const replaced = openSlowConsumer(running.port, sessionPath(randomSession())).then((fresh) => (slow[i] = fresh));
        pending.add(replaced);
        replaced.finally(() => pending.delete(replaced));
      }
      for (let i = 0; i < garbagePerSecond; i++) {
        const bad = misbehave(running.port, sessionPath(randomSession()), i % 2 === 0 ? 'frame' : 'text');
        pending.add(bad);
        bad.finally(() => pending.delete(bad));
      }
      const elapsed = now - started;
      if (rssAfterWarmup === null && elapsed >= warmupMs) {
        await running.collectGarbage();
        rssAfterWarmup = rssBytes(pid);
        console.error(`soak: RSS after ${Math.round(elapsed / 1000)} s of warm-up: ${(rssAfterWarmup / 2 ** 20).toFixed(1)} MiB`);
      }
      if (elapsed >= (samples.length + 1) * SAMPLE_EVERY_MS) {
        samples.push({ seconds: Math.round(elapsed / 1000), rssMiB: +(rssBytes(pid) / 2 ** 20).toFixed(1) });
        console.error(`soak: ${Math.round(elapsed / 1000)} s, RSS ${samples.at(-1).rssMiB} MiB, sent ${totals.sent}, delivered ${totals.delivered}, lost ${totals.lost}`);
      }
    }
    await sleep(10);
  }
  await running.collectGarbage();
  const rssAtEnd = rssBytes(pid);
  await Promise.all(pending);
  await sleep(DRAIN_MS);
  for (const session of sessions) for (const client of session.members) totals.lost += client.missing();
  for (const session of sessions) for (const client of session.members) client.leave();
  for (const consumer of slow) consumer.socket?.destroy();
  const serverStats = relay.binary ? await (await fetch(`http://${base}/stats`)).json() : null;
  await running.stop();
  hogs.forEach((hog) => hog.kill('SIGKILL'));

  latencies.sort((a, b) => a - b);
  const growth = rssAtEnd / rssAfterWarmup - 1;
  const ok = totals.lost === 0 && totals.duplicated === 0 && totals.refused === 0 && totals.closedByServer === 0 && growth <= RSS_TOLERANCE;
  const result = {
    ok,
    server: relay.name,
    minutes: durationMs / 60_000,
    connections,
    ...totals,
    neighbours: { ...neighbours, slowConsumerCloses: serverStats?.slowConsumerCloses, invalid: serverStats?.messages.invalid },
    hogs: hogCount,
    latencyMs: { p50: latencies[Math.floor(latencies.length * 0.5)], p99: latencies[Math.floor(latencies.length * 0.99)] },
    rssMiB: { afterWarmup: +(rssAfterWarmup / 2 ** 20).toFixed(1), atEnd: +(rssAtEnd / 2 ** 20).toFixed(1), growthPercent: +(growth * 100).toFixed(1) },
    samples,
  };
  console.log(JSON.stringify(result));
  process.exit(ok ? 0 : 1);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
