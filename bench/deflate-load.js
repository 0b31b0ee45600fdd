// bench/deflate-load.js: the load generator of `npm run bench`'s compressed scenario. The
// Rust load generator speaks no permessage-deflate, so this one is `ws` clients that
// offer it as browsers do (and compress what they send), sending JSON-like documents at a
// fixed rate, each session's members taking turns; it checks every delivery arrives
// whole, once, in its session, and counts the bytes the clients read off their sockets.
//
// Usage: node bench/deflate-load.js --server 127.0.0.1:PORT --create-path /sessions
//   [--sessions 50] [--clients 4] [--rate 2000] [--duration-ms 5000] [--warmup-ms 1000]
// Prints one JSON line (as bench/loadgen does); `measure-start` and `measure-end` events
// go to stderr as JSON lines, so the caller can read the server's CPU between them.
const WebSocket = require('ws');

const option = (name, fallback) => {
  const at = process.argv.indexOf(`--${name}`);
  return at === -1 ? fallback : process.argv[at + 1];
};
const server = option('server');
const createPath = option('create-path', '/sessions');
const sessions = Number(option('sessions', 50));
const clients = Number(option('clients', 4));
const rate = Number(option('rate', 2000));
const durationMs = Number(option('duration-ms', 5000));
const warmupMs = Number(option('warmup-ms', 1000));
const WORDS = ['cursor', 'selection', 'paragraph', 'heading', 'insert', 'delete', 'format', 'bold', 'comment', 'author', 'revision', 'anchor'];

/** About 1 KiB of JSON such as an editor sends: repeated keys, varying values. */
function document(session, sender, seq) {
  const ops = [];
  for (let i = 0; i < 12; i++) {
    const word = WORDS[(seq * 7 + i * 5) % WORDS.length];
    ops.push({ op: word, path: ['blocks', (seq + i) % 97, 'children', i], value: `${word}-${(seq * 31 + i) % 1000}`, at: seq * 12 + i });
  }
  return JSON.stringify({ type: 'doc_update', session, sender, seq, sentAt: 0, ops });
}

const event = (name) => process.stderr.write(`${JSON.stringify({ event: name })}\n`);
const percentile = (sorted, p) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] : NaN);

async function main() {
  const members = [];
  for (let s = 0; s < sessions; s++) {
    const { sessionId } = await fetch(`http://${server}${createPath}`, { method: 'POST' }).then((r) => r.json());
    const session = [];
    for (let c = 0; c < clients; c++) {
      const ws = new WebSocket(`ws://${server}/session/${sessionId}`, { perMessageDeflate: { threshold: 0 } });
      await new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('error', reject);
      });
      session.push({ ws, session: s, index: c, nextSeq: new Map() });
    }
    members.push(session);
  }
  const negotiated = members.flat().every(({ ws }) => ws.extensions.includes('permessage-deflate'));
  let measuring = false;
  // Sent, and sent while measuring; deliveries of those, and all deliveries read while measuring.
  let [sent, sentMeasured, delivered, received, errors, bytesAtStart] = [0, 0, 0, 0, [], 0];
  const latencies = [];
  let [start, measureFrom, stopAt] = [Infinity, Infinity, Infinity];
  for (const session of members) {
    for (const member of session) {
      member.ws.on('message', (data, isBinary) => {
        const text = data.toString();
        if (isBinary || !text.startsWith('{"type":"doc_update"')) return;
        const message = JSON.parse(text);
        const expected = member.nextSeq.get(message.sender) ?? message.seq;
        if (message.session !== member.session || message.sender === member.index || message.seq !== expected) {
          errors.push(`client ${member.session}/${member.index} got ${message.session}/${message.sender}#${message.seq}, expected #${expected}`);
        } else if (text !== document(message.session, message.sender, message.seq).replace('"sentAt":0', `"sentAt":${message.sentAt}`)) {
          errors.push(`client ${member.session}/${member.index} got a damaged document`);
        }
        member.nextSeq.set(message.sender, message.seq + 1);
        if (measuring) received++;
        if (message.sentAt >= measureFrom && message.sentAt < stopAt) {
          delivered++;
          latencies.push(performance.now() - message.sentAt);
        }
      });
    }
  }
  const bytesRead = () => members.flat().reduce((sum, { ws }) => sum + ws._socket.bytesRead, 0);
  start = performance.now();
  measureFrom = start + warmupMs;
  stopAt = measureFrom + durationMs;
  const cpuAtStart = process.cpuUsage();
  const seqs = members.map((session) => session.map(() => 0));
  // Sends in ticks of 10 ms, keeping to the rate over the whole run.
  await new Promise((resolve) => {
    let turn = 0;
    const tick = () => {
      const now = performance.now();
      if (!measuring && now >= measureFrom) {
        measuring = true;
        bytesAtStart = bytesRead();
        event('measure-start');
      }
      if (now >= stopAt) return resolve();
      const due = Math.floor(((now - start) / 1000) * rate);
      for (; sent < due; sent++, turn++) {
        const session = turn % sessions;
        const sender = Math.floor(turn / sessions) % clients;
        const seq = seqs[session][sender]++;
        const sentAt = performance.now();
        members[session][sender].ws.send(document(session, sender, seq).replace('"sentAt":0', `"sentAt":${sentAt}`));
        // Counted as its deliveries are: by when it was sent.
        if (sentAt >= measureFrom && sentAt < stopAt) sentMeasured++;
      }
      setTimeout(tick, 10);
    };
    tick();
  });
  const expected = sentMeasured * (clients - 1);
  // What was sent in the window may still be on its way.
  for (let waited = 0; delivered < expected && waited < 5000; waited += 50) await new Promise((r) => setTimeout(r, 50));
  measuring = false;
  event('measure-end');
  const wire = bytesRead() - bytesAtStart;
  const cpu = process.cpuUsage(cpuAtStart);
  latencies.sort((a, b) => a - b);
  const lost = expected - delivered;
  const result = {
    ok: negotiated && errors.length === 0 && lost <= 0,
    negotiated,
    errors: errors.slice(0, 5),
    lost: Math.max(0, lost),
    sent: sentMeasured,
    deliveriesPerSec: delivered / (durationMs / 1000),
    wireBytesPerDelivery: wire / received,
    payloadBytes: document(0, 0, 0).length,
    latencyUs: { p50: percentile(latencies, 0.5) * 1000, p99: percentile(latencies, 0.99) * 1000, p999: percentile(latencies, 0.999) * 1000 },
    cpuPercent: (100 * (cpu.user + cpu.system)) / 1000 / (performance.now() - start),
  };
  for (const member of members.flat()) member.ws.terminate();
  console.log(JSON.stringify(result));
}

main().catch((error) => {
  console.log(JSON.stringify({ ok: false, error: String(error) }));
  process.exit(1);
});
