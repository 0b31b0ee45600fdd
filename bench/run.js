// bench/run.js (`npm run bench`): every relay under the same load, interleaved, over
// several rounds; medians reported as ratios to a plain `ws` relay. Prints the results as
// Markdown and one JSON line; with --write, also writes them to bench/RESULTS.md (the
// committed figures, so only full runs should). Exits 1 if any run lost, duplicated,
// misrouted or echoed a message.
//
// Fairness: each server runs pinned to core 0 (`taskset -c 0`) and the load generator
// to core 1, so every server gets the same single core and the load generator its own.
// The load generator reports its own CPU use: a number it produced at ~100% of its core
// is capped by it, and the table says so.
//
// A/B: --before REF adds the `switchyard` binary of another build (a commit, or a binary's
// path) as server `before`, interleaved with the rest in the same rounds, in the relay and
// fan-out scenarios; the report then gives this build's binary against it.
//
// TLS: `tls-w4` runs relay-w4's load over TLS (wss://, and HTTPS to create sessions) on the
// binary (--tls-cert/--tls-key), listen() (its `tls` option) and uWebSockets.js (SSLApp),
// with a CA and a certificate for 127.0.0.1 made by openssl's CLI into target/bench-tls
// once a run; each server's deliveries per core-second are given against its own in
// relay-w4 and against uWebSockets.js's over TLS. Run the two together:
// `npm run bench -- --only binary,listen,uws --scenarios relay-w4,tls-w4`.
//
// Options: --rounds N (3), --duration-ms N (5000), --only name,name (servers),
// --scenarios name,name, --before REF, --write.
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');
const { hostTriple } = require('../bin/switchyard.js');
const { root, relays, build, binaryOf, sleep, cpuSeconds, rssBytes, startRelay, makeCertificates } = require('./processes');
const { startRedis, startRedisCluster } = require('../__test__/helpers');

const option = (name, fallback) => {
  const at = process.argv.indexOf(`--${name}`);
  return at === -1 ? fallback : process.argv[at + 1];
};
const rounds = Number(option('rounds', 3));
const durationMs = Number(option('duration-ms', 5000));
const loadgenPath = path.join(root, 'target', hostTriple(), 'release', 'loadgen');
/** Measures the machine's own round trip between the two cores (bench/loadgen/src/floor.rs). */
const floorPath = path.join(root, 'target', hostTriple(), 'release', 'floor');
/** The compressed scenario's load generator: the Rust one speaks no permessage-deflate. */
const deflateLoadgen = [process.execPath, path.join(__dirname, 'deflate-load.js')];
/** How long after the idle connections open their RSS is read, without a forced GC. */
const IDLE_READ_AFTER_MS = 3000;
const LOADGEN_CAPPED_PERCENT = 90;
const SETTLE_SAMPLES = 12;

/** The scenarios an A/B run compares the two builds' binaries in. */
const AB_SCENARIOS = ['relay', 'relay-w4', 'relay-w1', 'fanout', 'latency'];
const before = option('before') && {
  name: 'before',
  label: `switchyard binary, before (${option('before')})`,
  binary: true,
  executable: binaryOf(option('before')),
  scenarios: AB_SCENARIOS,
};
const servers = [...relays, ...(before ? [before] : [])].filter((s) => !option('only') || option('only').split(',').includes(s.name));
/** The servers a scenario runs on: those it names, else every one not kept to clusters or to scenarios of its own. */
const serversOf = (scenario) =>
  servers.filter((s) => (scenario.relays ? scenario.relays.includes(s.name) : !s.clusterOnly && (!s.scenarios || s.scenarios.includes(scenario.name))));
/** What a scenario's ratios are to: a server of it (`ws` by default), or the same server in another scenario. */
const versusLabel = (scenario) => `vs ${scenario.versus ?? scenario.baseline ?? 'ws'}`;
const versus = (summary, scenario, server) => (scenario.versus ? summary[scenario.versus]?.[server.name] : summary[scenario.name][scenario.baseline ?? 'ws']);

const CLUSTER_RELAYS = ['binary', 'native', 'socketio'];
/** The payload-size scenarios compare the native servers with uWebSockets.js and ws. */
const SIZE_RELAYS = ['native', 'binary', 'uws', 'ws'];
/** The servers with event-stream members (Server-Sent Events down, POST up): attach(), listen(), eventStreamHandler() and the binary. */
const EVENT_STREAM_RELAYS = ['native', 'listen', 'bridge', 'binary'];
/** The servers that serve TLS themselves: the binary, listen() and uWebSockets.js (SSLApp). */
const TLS_RELAYS = ['binary', 'listen', 'uws'];
const scenarios = [
  { name: 'relay', label: '100 sessions x 4 clients x 100 B, max rate', args: ['--sessions', '100', '--clients', '4', '--bytes', '100'] },
  { name: 'relay-w4', label: '100 x 4 x 100 B, window 4 (a sender waits once 4 of its messages are in flight)', args: ['--sessions', '100', '--clients', '4', '--bytes', '100', '--window', '4'] },
  { name: 'relay-w1', label: '100 x 4 x 100 B, window 1', args: ['--sessions', '100', '--clients', '4', '--bytes', '100', '--window', '1'] },
  // What TLS costs a relay: relay-w4's load over TLS 1.3, per core-second against the same
  // server in relay-w4 and against uWebSockets.js's own TLS.
  {
    name: 'tls-w4',
    label: '100 x 4 x 100 B, window 4, over TLS (wss://), against the same server in plain (relay-w4) and uWebSockets.js over TLS',
    args: ['--sessions', '100', '--clients', '4', '--bytes', '100', '--window', '4'],
    tls: true,
    relays: TLS_RELAYS,
    versus: 'relay-w4',
    peer: 'uws',
  },
  { name: 'size-1k', label: '100 x 4 x 1 KiB, window 4', args: ['--sessions', '100', '--clients', '4', '--bytes', '1024', '--window', '4'], relays: SIZE_RELAYS },
  { name: 'size-16k', label: '100 x 4 x 16 KiB, window 4', args: ['--sessions', '100', '--clients', '4', '--bytes', '16384', '--window', '4'], relays: SIZE_RELAYS },
  { name: 'fanout', label: '10 sessions x 50 clients x 100 B, max rate', args: ['--sessions', '10', '--clients', '50', '--bytes', '100', '--window', '4'] },
  { name: 'fanout-w1', label: '10 x 50 x 100 B, window 1', args: ['--sessions', '10', '--clients', '50', '--bytes', '100', '--window', '1'], relays: SIZE_RELAYS },
  { name: 'latency', label: '100 x 4 at 20,000 messages/s (60,000 deliveries/s)', args: ['--sessions', '100', '--clients', '4', '--bytes', '100', '--rate', '20000'], floor: true },
  // What a hook adds to each message, at a rate the proxy's backend (a Node process on the
  // relay's core) keeps up with.
  {
    name: 'hook-latency',
    label: '100 x 4 at 5,000 messages/s (15,000 deliveries/s), with and without a publish hook',
    args: ['--sessions', '100', '--clients', '4', '--bytes', '100', '--rate', '5000'],
    relays: ['native', 'native-hook', 'binary', 'binary-proxy'],
  },
  {
    name: 'positions',
    label: '100 x 4, max rate, history on and one client per session with positions (the others get frames as sent)',
    args: ['--sessions', '100', '--clients', '4', '--bytes', '100', '--positions-clients', '1'],
    env: { HISTORY_SIZE: '100' },
    relays: ['native', 'bridge', 'binary'],
    versus: 'relay',
  },
  {
    name: 'cluster',
    label: 'cluster: 2 nodes and Redis, 100 sessions x 4 clients spread over both nodes, max rate',
    args: ['--sessions', '100', '--clients', '4', '--bytes', '100'],
    cluster: true,
    relays: CLUSTER_RELAYS,
    baseline: 'socketio',
  },
  {
    name: 'cluster-sharded',
    label: 'cluster: the same layout on a Redis Cluster of three masters (all on core 0), max rate',
    args: ['--sessions', '100', '--clients', '4', '--bytes', '100'],
    cluster: true,
    redisMasters: 3,
    relays: ['binary', 'native'],
    versus: 'cluster',
  },
  {
    name: 'cluster-5k',
    label: 'cluster: the same layout at 5,000 messages/s (15,000 deliveries/s)',
    args: ['--sessions', '100', '--clients', '4', '--bytes', '100', '--rate', '5000'],
    cluster: true,
    relays: CLUSTER_RELAYS,
    baseline: 'socketio',
  },
  {
    name: 'cluster-sharded-5k',
    label: 'cluster: on the Redis Cluster of three masters at 5,000 messages/s (15,000 deliveries/s)',
    args: ['--sessions', '100', '--clients', '4', '--bytes', '100', '--rate', '5000'],
    cluster: true,
    redisMasters: 3,
    relays: ['binary', 'native'],
  },
  {
    name: 'compressed',
    label: 'permessage-deflate: 50 sessions x 4 clients, 1 KiB JSON documents at 1,000 messages/s, ws clients that compress what they send',
    compressed: true,
    args: ['--sessions', '50', '--clients', '4', '--rate', '1000'],
    env: { COMPRESSION: 'true' },
    relays: ['native', 'bridge', 'binary', 'ws', 'uws'],
  },
  // Event-stream members beside WebSocket ones, each against the same shape all over
  // WebSocket (a server does more per wake-up with more messages in flight, so the shape
  // must match). A POST sender is an event-stream member (its token comes from its
  // stream's welcome) and every member receives, so senders and SSE receivers are kept
  // apart: in the fan-out a few WebSocket senders a session and SSE receivers, in the
  // publish scenarios one POST sender a session and WebSocket receivers.
  {
    name: 'fanout-few-senders',
    label: '10 x 50 x 100 B, window 4, 5 senders a session, all WebSocket',
    args: ['--sessions', '10', '--clients', '50', '--bytes', '100', '--window', '4', '--senders', '5'],
    relays: EVENT_STREAM_RELAYS,
  },
  {
    name: 'sse-fanout',
    label: '10 x 50 x 100 B, window 4, 5 WebSocket senders a session, the 45 others receiving over Server-Sent Events',
    args: ['--sessions', '10', '--clients', '50', '--bytes', '100', '--window', '4', '--senders', '5', '--sse-receivers', '45'],
    relays: EVENT_STREAM_RELAYS,
    versus: 'fanout-few-senders',
  },
  {
    name: 'one-sender-w4',
    label: '100 x 4 x 100 B, window 4, one sender a session and three receivers, all WebSocket',
    args: ['--sessions', '100', '--clients', '4', '--bytes', '100', '--window', '4', '--senders', '1'],
    relays: EVENT_STREAM_RELAYS,
  },
  {
    name: 'post-publish-w4',
    label: '100 x 4 x 100 B, window 4, one sender a session publishing by POST (one request in flight, carrying what the window has room for, as the browser client sends), three WebSocket receivers',
    args: ['--sessions', '100', '--clients', '4', '--bytes', '100', '--window', '4', '--senders', '1', '--post-senders'],
    relays: EVENT_STREAM_RELAYS,
    versus: 'one-sender-w4',
  },
  {
    name: 'one-sender-w1',
    label: '100 x 4 x 100 B, window 1, one sender a session and three receivers, all WebSocket',
    args: ['--sessions', '100', '--clients', '4', '--bytes', '100', '--window', '1', '--senders', '1'],
    relays: EVENT_STREAM_RELAYS,
  },
  {
    name: 'post-publish-w1',
    label: '100 x 4 x 100 B, window 1, one sender a session publishing by POST, three WebSocket receivers',
    args: ['--sessions', '100', '--clients', '4', '--bytes', '100', '--window', '1', '--senders', '1', '--post-senders'],
    relays: EVENT_STREAM_RELAYS,
    versus: 'one-sender-w1',
  },
  { name: 'idle', label: '10,000 idle connections', idle: 10_000 },
  { name: 'idle-18k', label: '18,000 idle connections (this machine allows 20,000 open files a process)', idle: 18_000 },
  { name: 'idle-5k', label: '5,000 idle WebSocket members', idle: 5_000, relays: EVENT_STREAM_RELAYS },
  {
    name: 'idle-sse',
    label: '5,000 idle event-stream members (Server-Sent Events), against as many over WebSocket (idle-5k)',
    idle: 5_000,
    args: ['--sse-receivers', '10'],
    relays: EVENT_STREAM_RELAYS,
    versus: 'idle-5k',
  },
].filter((s) => !option('scenarios') || option('scenarios').split(',').includes(s.name));
/** The TLS scenarios' CA and server certificate, made once a run. */
const certificates = scenarios.some((s) => s.tls) ? makeCertificates(path.join(root, 'target', 'bench-tls')) : null;

/** RSS once idle memory has settled: the lowest of several samples, each after a GC. */
async function settledRss(running, pid) {
  let lowest = Infinity;
  for (let sample = 0; sample < SETTLE_SAMPLES; sample++) {
    await sleep(1000);
    await running.collectGarbage();
    lowest = Math.min(lowest, rssBytes(pid));
  }
  return lowest;
}

/** Runs a load generator against a server; `onEvent(name)` hears its stderr events. */
function loadgen(args, onEvent, program = [loadgenPath]) {
  const child = spawn('taskset', ['-c', '1', ...program, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk) => (stdout += chunk));
  readline.createInterface({ input: child.stderr }).on('line', (line) => {
    stderr += `${line}\n`;
    try {
      const { event } = JSON.parse(line);
      if (event) onEvent(event, child);
    } catch {
      // Not an event line.
    }
  });
  return new Promise((resolve) => {
    child.on('exit', () => {
      try {
        resolve(JSON.parse(stdout.trim().split('\n').pop()));
      } catch {
        resolve({ ok: false, error: `no result from the load generator: ${stderr.slice(-500)}` });
      }
    });
  });
}

/** Every command the Redis processes have run since they started, from INFO commandstats. */
function redisCommands(redis) {
  return redis.nodes.reduce((sum, { port }) => {
    const info = spawnSync('redis-cli', ['-p', String(port), 'INFO', 'commandstats'], { encoding: 'utf8' }).stdout ?? '';
    return sum + [...info.matchAll(/^cmdstat_[^:]+:calls=(\d+)/gm)].reduce((calls, [, n]) => calls + Number(n), 0);
  }, 0);
}

/** Two nodes of `server` and a Redis (or a cluster of `scenario.redisMasters`), all on
 * core 0; clients spread over both nodes. */
async function measureCluster(server, scenario) {
  const redis = scenario.redisMasters ? await startRedisCluster({ masters: scenario.redisMasters, replicas: 0 }) : await startRedis();
  for (const { child } of redis.nodes) spawnSync('taskset', ['-cp', '0', String(child.pid)]);
  const nodes = [];
  try {
    for (const id of ['a', 'b']) nodes.push(await startRelay(server, { REDIS_URL: redis.url, NODE_ID: id }));
    for (const node of nodes) {
      for (let tries = 0; !(await node.clustered()); tries++) {
        if (tries > 400) throw new Error(`${server.name} nodes did not see each other`);
        await sleep(25);
      }
    }
    const pids = [...nodes, ...redis.nodes].map(({ child }) => child.pid);
    const cpu = () => pids.reduce((sum, pid) => sum + cpuSeconds(pid), 0);
    const redisCpu = () => redis.nodes.reduce((sum, { child }) => sum + cpuSeconds(child.pid), 0);
    const args = ['--server', nodes.map((node) => `127.0.0.1:${node.port}`).join(','), '--create-path', nodes[0].createPath];
    if (server.wsPath) args.push('--ws-path', server.wsPath);
    let [cpuAtStart, cpuAtEnd, timeAtStart, timeAtEnd, commandsAtStart, commandsAtEnd, redisCpuAtStart, redisCpuAtEnd] = [0, 0, 0, 0, 0, 0, 0, 0];
    const tripsAtStart = await Promise.all(nodes.map((node) => node.roundTrips()));
    const result = await loadgen([...args, ...(server.loadgenArgs ?? []), ...scenario.args, '--duration-ms', String(durationMs)], (event) => {
      if (event === 'measure-start') [cpuAtStart, timeAtStart, commandsAtStart, redisCpuAtStart] = [cpu(), performance.now(), redisCommands(redis), redisCpu()];
      if (event === 'measure-end') [cpuAtEnd, timeAtEnd, commandsAtEnd, redisCpuAtEnd] = [cpu(), performance.now(), redisCommands(redis), redisCpu()];
    });
    const trips = (await Promise.all(nodes.map((node) => node.roundTrips()))).map((n, i) => n - tripsAtStart[i]);
    const seconds = (timeAtEnd - timeAtStart) / 1000;
    const messagesPerSec = result.deliveriesPerSec / 3;
    return {
      ...result,
      serverCpuPercent: (100 * (cpuAtEnd - cpuAtStart)) / seconds,
      redisCpuPercent: (100 * (redisCpuAtEnd - redisCpuAtStart)) / seconds,
      serverRssBytes: nodes.reduce((sum, node) => sum + rssBytes(node.child.pid), 0),
      redisCommandsPerMessage: (commandsAtEnd - commandsAtStart) / seconds / messagesPerSec,
      roundTripsPerMessage: trips.every(Number.isFinite) ? trips.reduce((a, b) => a + b, 0) / result.sent : NaN,
    };
  } finally {
    for (const node of nodes) await node.stop();
    await redis.kill();
  }
}

async function measure(server, scenario) {
  if (scenario.cluster) return measureCluster(server, scenario);
  const running = await startRelay(server, scenario.env, { tls: scenario.tls && certificates });
  const pid = running.child.pid;
  const common = ['--server', `127.0.0.1:${running.port}`, '--create-server', `127.0.0.1:${running.httpPort}`, '--create-path', running.createPath];
  if (scenario.tls) common.push('--ca', certificates.ca);
  try {
    if (scenario.idle) {
      const rss = {};
      const connections = scenario.idle;
      const result = await loadgen([...common, '--idle', '--sessions', String(connections / 10), '--clients', '10', ...(scenario.args ?? [])], async (event, child) => {
        if (event === 'sessions-created') {
          await running.collectGarbage();
          rss.before = rssBytes(pid);
        }
        if (event === 'connected') {
          await sleep(IDLE_READ_AFTER_MS);
          rss.open = rssBytes(pid);
          rss.settled = await settledRss(running, pid);
        }
        child.stdin.write('\n');
      });
      return { ...result, bytesPerConnection: (rss.open - rss.before) / connections, settledBytesPerConnection: (rss.settled - rss.before) / connections };
    }
    let cpuAtStart = 0;
    let cpuAtEnd = 0;
    let timeAtStart = 0;
    let timeAtEnd = 0;
    const onEvent = (event) => {
      if (event === 'measure-start') [cpuAtStart, timeAtStart] = [cpuSeconds(pid), performance.now()];
      if (event === 'measure-end') [cpuAtEnd, timeAtEnd] = [cpuSeconds(pid), performance.now()];
    };
    const result = await loadgen([...common, ...scenario.args, '--duration-ms', String(durationMs)], onEvent, scenario.compressed ? deflateLoadgen : undefined);
    const serverCpuPercent = (100 * (cpuAtEnd - cpuAtStart)) / ((timeAtEnd - timeAtStart) / 1000);
    return { ...result, serverCpuPercent, serverRssBytes: rssBytes(pid) };
  } finally {
    await running.stop();
  }
}

const median = (values) => {
  const sorted = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  return sorted.length ? sorted[Math.floor((sorted.length - 1) / 2)] : NaN;
};

function summarize(results) {
  const summary = {};
  for (const scenario of scenarios) {
    summary[scenario.name] = {};
    for (const server of serversOf(scenario)) {
      const runs = results.filter((r) => r.scenario === scenario.name && r.server === server.name).map((r) => r.result);
      const pick = (f) => median(runs.map(f));
      summary[scenario.name][server.name] = scenario.idle
        ? { bytesPerConnection: pick((r) => r.bytesPerConnection), settledBytesPerConnection: pick((r) => r.settledBytesPerConnection) }
        : {
            deliveriesPerSec: pick((r) => r.deliveriesPerSec),
            p50Us: pick((r) => r.latencyUs?.p50),
            p99Us: pick((r) => r.latencyUs?.p99),
            p999Us: pick((r) => r.latencyUs?.p999),
            serverCpuPercent: pick((r) => r.serverCpuPercent),
            serverRssBytes: pick((r) => r.serverRssBytes),
            loadgenCpuPercent: pick((r) => r.cpuPercent),
            redisCommandsPerMessage: pick((r) => r.redisCommandsPerMessage),
            redisCpuPercent: pick((r) => r.redisCpuPercent),
            roundTripsPerMessage: pick((r) => r.roundTripsPerMessage),
            wireBytesPerDelivery: pick((r) => r.wireBytesPerDelivery),
            payloadBytes: pick((r) => r.payloadBytes),
            // What the TLS connections negotiated, in each run of the server.
            tls: [...new Set(runs.map((r) => r.tls && `${r.tls.version} ${r.tls.cipherSuite}${r.tls.alpn ? `, ALPN ${r.tls.alpn}` : ''}`).filter(Boolean))].join('; '),
          };
    }
  }
  return summary;
}

const fmt = (n, digits = 0) => (Number.isFinite(n) ? n.toLocaleString('en-US', { maximumFractionDigits: digits }) : 'n/a');
const ratio = (value, baseline) => (Number.isFinite(value) && baseline ? `${(value / baseline).toFixed(2)}x` : 'n/a');

/** The header's word on the check of every delivery, and the runs that failed it. */
function checked(failed) {
  if (!failed.length) return ['Ratios are to baseline 1, a plain `ws` relay, unless a table says otherwise. Every delivery was checked: none lost, reordered, echoed or sent to another session.'];
  return [
    'Ratios are to baseline 1, a plain `ws` relay, unless a table says otherwise. Every delivery was checked; these runs failed the check (a server that falls behind a fixed rate drops what its slow-consumer policy refuses), and their rows count what arrived:',
    '',
    ...failed.map(({ round, server, scenario, errors }) => `- round ${round + 1}, ${server} / ${scenario}: ${Object.entries(errors ?? {}).filter(([, n]) => n > 0).map(([what, n]) => `${n.toLocaleString('en-US')} ${what}`).join(', ') || 'no result'}`),
  ];
}

/** The sentence under a fixed-rate table giving this machine's floor, from each round's measure of it. */
function floorLine(floors) {
  const at = (q) => fmt(median(floors.map((f) => f.latencyUs?.[q])) / 1000, 2);
  return `The floor of this machine, with no relay: a 1-byte TCP round trip over loopback from core 1 to an echo on core 0 and back, once a millisecond (the two wake-ups a relayed message has and nothing else), took p50 ${at('p50')} ms, p99 ${at('p99')} ms, p99.9 ${at('p999')} ms (median of ${floors.length} runs, one a round).`;
}

function markdown(summary, machine, failed, floors) {
  const lines = [
    '# Benchmark results',
    '',
    `Written by \`npm run bench\` on ${new Date().toISOString().slice(0, 10)}: ${machine.cpu}, ${machine.cores} cores, ${machine.memoryGiB} GiB, Linux ${machine.kernel}, Node ${process.version}.`,
    `Each server pinned to core 0, the load generator to core 1; ${rounds} rounds, servers interleaved, medians shown; ${durationMs / 1000} s measured per run after 1 s of warm-up.`,
    ...checked(failed),
    '',
  ];
  for (const scenario of scenarios) {
    lines.push(`## ${scenario.label}`, '');
    const rows = summary[scenario.name];
    if (scenario.idle) {
      // Against the same server in another scenario, the difference per connection too.
      const more = scenario.versus ? [` | more than ${scenario.versus}, settled`, ' ---: |'] : ['', ''];
      lines.push(
        `The RSS the ${scenario.idle.toLocaleString('en-US')} connections added, divided among them: ${IDLE_READ_AFTER_MS / 1000} s after they opened, as a user sees it (no forced GC), and once settled (the lowest of ${SETTLE_SAMPLES} samples a second apart, garbage collected before each: what V8 gives back of the heap that accepting them grew).`,
        '',
        `| server | RSS per idle connection, ${IDLE_READ_AFTER_MS / 1000} s after | ${versusLabel(scenario)} | settled, after GC${more[0]} |`,
        `| --- | ---: | ---: | ---: |${more[1]}`,
      );
      for (const server of serversOf(scenario)) {
        const { bytesPerConnection, settledBytesPerConnection } = rows[server.name];
        const other = versus(summary, scenario, server);
        const difference = scenario.versus ? ` | ${fmt((settledBytesPerConnection - other?.settledBytesPerConnection) / 1024, 2)} KiB` : '';
        lines.push(
          `| ${server.label} | ${fmt(bytesPerConnection / 1024, 2)} KiB | ${ratio(bytesPerConnection, other?.bytesPerConnection)} | ${fmt(settledBytesPerConnection / 1024, 2)} KiB${difference} |`,
        );
      }
    } else if (scenario.compressed) {
      lines.push(
        'Every server negotiates permessage-deflate with every client (switchyard with `nativeCompression` / `--compression`, `ws` with `perMessageDeflate: { threshold: 256 }`, uWebSockets.js with `SHARED_COMPRESSOR`). Bytes on the wire are what the clients read off their sockets, frame headers included, per delivery; CPU per delivery is the server\'s own.',
        '',
        `| server | deliveries/s | bytes on the wire per delivery | of the payload | server CPU | server CPU per delivery | p50 | p99 | load generator CPU |`,
        '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
      );
      for (const server of serversOf(scenario)) {
        const r = rows[server.name];
        const cpuPerDelivery = (r.serverCpuPercent / 100 / r.deliveriesPerSec) * 1e6;
        lines.push(
          `| ${server.label} | ${fmt(r.deliveriesPerSec)} | ${fmt(r.wireBytesPerDelivery)} B | ${fmt((100 * r.wireBytesPerDelivery) / r.payloadBytes)}% | ${fmt(r.serverCpuPercent)}% | ${fmt(cpuPerDelivery, 2)} us | ${fmt(r.p50Us / 1000, 2)} ms | ${fmt(r.p99Us / 1000, 2)} ms | ${fmt(r.loadgenCpuPercent)}% |`,
        );
      }
    } else if (scenario.cluster) {
      lines.push(
        'Server CPU and RSS are both nodes and Redis together (all on core 0). Half of each session\'s members are on the other node, so two in three deliveries cross nodes. Redis CPU is Redis\'s share of it (every process of a Redis Cluster). Redis commands per message count every command Redis ran; round trips per message are the pipelines switchyard\'s binary sent (its `/stats`).',
        '',
        `| server | deliveries/s | ${versusLabel(scenario)} | p50 | p99 | p99.9 | CPU (nodes + Redis) | Redis CPU | Redis commands per message | round trips per message |`,
        '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
      );
      for (const server of serversOf(scenario)) {
        const r = rows[server.name];
        lines.push(
          `| ${server.label} | ${fmt(r.deliveriesPerSec)} | ${scenario.args.includes('--rate') ? 'n/a (fixed rate)' : ratio(r.deliveriesPerSec, versus(summary, scenario, server)?.deliveriesPerSec)} | ${fmt(r.p50Us / 1000, 2)} ms | ${fmt(r.p99Us / 1000, 2)} ms | ${fmt(r.p999Us / 1000, 2)} ms | ${fmt(r.serverCpuPercent)}% | ${fmt(r.redisCpuPercent)}% | ${fmt(r.redisCommandsPerMessage, 3)} | ${fmt(r.roundTripsPerMessage, 3)} |`,
        );
      }
    } else {
      // Against the same server in another scenario, per core-second too: what a run capped by the load generator still compares.
      const perCoreVersus = scenario.versus ? [` | per core-second ${versusLabel(scenario)}`, ' ---: |'] : ['', ''];
      // And against a peer in this scenario (uWebSockets.js over TLS), per core-second.
      const perCorePeer = scenario.peer ? [` | per core-second vs ${scenario.peer}`, ' ---: |'] : ['', ''];
      if (scenario.tls) {
        const negotiated = serversOf(scenario).map((server) => `${server.name}: ${rows[server.name].tls || 'n/a'}`);
        lines.push(`Every connection over TLS, the load generator's rustls (ring) offering TLS 1.3's AES-128-GCM first, as browsers do; negotiated: ${negotiated.join('; ')}.`, '');
      }
      lines.push(
        `| server | deliveries/s | ${versusLabel(scenario)} | per server core-second${perCoreVersus[0]}${perCorePeer[0]} | p50 | p99 | p99.9 | server CPU | server RSS | load generator CPU |`,
        `| --- | ---: | ---: | ---: |${perCoreVersus[1]}${perCorePeer[1]} ---: | ---: | ---: | ---: | ---: | ---: |`,
      );
      // What a load generator that cannot saturate the server still shows: deliveries per second of the server's own CPU.
      const perCore = (r) => r.deliveriesPerSec / (r.serverCpuPercent / 100);
      for (const server of serversOf(scenario)) {
        const r = rows[server.name];
        const capped = r.loadgenCpuPercent >= LOADGEN_CAPPED_PERCENT ? ' (capped by the load generator)' : '';
        const other = versus(summary, scenario, server);
        const perCoreRatio = scenario.versus ? ` | ${ratio(perCore(r), other && perCore(other))}` : '';
        const peer = scenario.peer && rows[scenario.peer];
        const perCorePeerRatio = scenario.peer ? ` | ${ratio(perCore(r), peer && perCore(peer))}` : '';
        lines.push(
          `| ${server.label} | ${fmt(r.deliveriesPerSec)}${capped} | ${ratio(r.deliveriesPerSec, other?.deliveriesPerSec)} | ${fmt(perCore(r))}${perCoreRatio}${perCorePeerRatio} | ${fmt(r.p50Us / 1000, 2)} ms | ${fmt(r.p99Us / 1000, 2)} ms | ${fmt(r.p999Us / 1000, 2)} ms | ${fmt(r.serverCpuPercent)}% | ${fmt(r.serverRssBytes / 2 ** 20, 1)} MiB | ${fmt(r.loadgenCpuPercent)}% |`,
        );
      }
      if (scenario.floor && floors.length) lines.push('', floorLine(floors));
    }
    lines.push('');
  }
  return lines.join('\n');
}

const AB_HEADING = "## A/B: this build's binary against";

/** The A/B table: this build's binary against the `--before` build's, scenario by scenario. */
function beforeAndAfter(summary, results, machine) {
  const lines = [
    `${AB_HEADING} ${option('before')}`,
    '',
    `Written by \`npm run bench -- --before ${option('before')}\` on ${new Date().toISOString().slice(0, 10)}: ${machine.cpu}, ${machine.cores} cores. Both binaries ran in the same ${rounds} rounds, interleaved (${durationMs / 1000} s measured per run, medians shown), each pinned to core 0 and the load generator to core 1. After / before above 1 is this build delivering more.`,
    '',
    '| scenario | deliveries/s before | after | after / before | the rounds\' after / before (median, lowest, highest) | per core-second after / before | p99 before | p99 after |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const scenario of scenarios.filter((s) => summary[s.name]?.before && summary[s.name]?.binary)) {
    const [was, now] = [summary[scenario.name].before, summary[scenario.name].binary];
    const perCore = (r) => r.deliveriesPerSec / (r.serverCpuPercent / 100);
    // Each round's pair ran a few seconds apart: their ratio is freer of the machine's drift than the medians'.
    const of = (server, round) => results.find((r) => r.scenario === scenario.name && r.server === server && r.round === round)?.result.deliveriesPerSec;
    const paired = [...Array(rounds).keys()].map((round) => of('binary', round) / of('before', round)).filter(Number.isFinite).sort((a, b) => a - b);
    const spread = paired.length ? `${paired[Math.floor((paired.length - 1) / 2)].toFixed(2)}x (${paired[0].toFixed(2)}x, ${paired.at(-1).toFixed(2)}x)` : 'n/a';
    lines.push(
      `| ${scenario.name} | ${fmt(was.deliveriesPerSec)} | ${fmt(now.deliveriesPerSec)} | ${ratio(now.deliveriesPerSec, was.deliveriesPerSec)} | ${spread} | ${ratio(perCore(now), perCore(was))} | ${fmt(was.p99Us / 1000, 2)} ms | ${fmt(now.p99Us / 1000, 2)} ms |`,
    );
  }
  return [...lines, ''];
}

(async () => {
  if (os.platform() !== 'linux') throw new Error('the benchmark needs Linux (taskset, /proc)');
  for (const scenario of scenarios.filter((s) => s.versus && !scenarios.some((other) => other.name === s.versus))) {
    console.error(`${scenario.name} is compared with ${scenario.versus}, which this run leaves out: add it to --scenarios for the comparison`);
  }
  build({ loadgen: true });
  const results = [];
  const failed = [];
  const floors = [];
  for (let round = 0; round < rounds; round++) {
    for (const scenario of scenarios) {
      if (scenario.floor) {
        const floor = await loadgen(['--server-core', '0', '--duration-ms', String(durationMs)], () => {}, [floorPath]);
        if (floor.ok) floors.push(floor);
        else console.error(`the floor was not measured: ${floor.error}`);
        console.error(`round ${round + 1}/${rounds}  floor    round trip p50 ${fmt(floor.latencyUs?.p50 / 1000, 2)} ms, p99 ${fmt(floor.latencyUs?.p99 / 1000, 2)} ms`);
      }
      // Rotate the order each round, so no server always runs first or last.
      const runs = serversOf(scenario);
      const order = runs.map((_, i) => runs[(i + round) % runs.length]);
      for (const server of order) {
        const result = await measure(server, scenario);
        if (!result.ok) {
          failed.push({ round, server: server.name, scenario: scenario.name, errors: result.errors });
          console.error(`FAILED: ${server.name} / ${scenario.name}: ${JSON.stringify(result)}`);
        }
        results.push({ round, scenario: scenario.name, server: server.name, result });
        const shown = scenario.idle
          ? `${fmt(result.bytesPerConnection / 1024, 2)} KiB per idle connection (${fmt(result.settledBytesPerConnection / 1024, 2)} KiB settled)`
          : `${fmt(result.deliveriesPerSec)} deliveries/s, p99 ${fmt(result.latencyUs?.p99 / 1000, 2)} ms, server CPU ${fmt(result.serverCpuPercent)}%, load generator CPU ${fmt(result.cpuPercent)}%`;
        console.error(`round ${round + 1}/${rounds}  ${scenario.name.padEnd(8)} ${server.name.padEnd(9)} ${shown}`);
      }
    }
  }
  const summary = summarize(results);
  const machine = {
    cpu: os.cpus()[0]?.model.trim(),
    cores: os.cpus().length,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    kernel: os.release(),
  };
  const report = markdown(summary, machine, failed, floors);
  const resultsFile = path.join(__dirname, 'RESULTS.md');
  if (before) {
    const ab = beforeAndAfter(summary, results, machine).join('\n');
    console.error(`\n${report}\n${ab}`);
    if (process.argv.includes('--write')) {
      // An A/B run replaces the A/B section of the committed results and leaves the full run's tables.
      const kept = fs.readFileSync(resultsFile, 'utf8').split(`\n${AB_HEADING}`)[0].trimEnd();
      fs.writeFileSync(resultsFile, `${kept}\n\n${ab}`);
      console.error('wrote the A/B section of bench/RESULTS.md');
    }
  } else if (process.argv.includes('--write')) {
    // A full run replaces the tables and keeps the last A/B section, which compares two builds.
    const written = fs.existsSync(resultsFile) ? fs.readFileSync(resultsFile, 'utf8') : '';
    const ab = written.includes(`\n${AB_HEADING}`) ? written.slice(written.indexOf(`\n${AB_HEADING}`)) : '';
    fs.writeFileSync(resultsFile, `${report.trimEnd()}\n${ab}`);
    console.error('wrote bench/RESULTS.md');
  } else {
    console.error(`\n${report}\n(printed only: npm run bench -- --write puts it in bench/RESULTS.md)`);
  }
  console.log(JSON.stringify({ machine, rounds, durationMs, failures: failed.length, summary, floors: floors.map((f) => f.latencyUs) }));
  process.exit(failed.length ? 1 : 0);
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
