// bench/processes.js: what `npm run bench` and `npm run soak` share: the relays they can
// start (each its own process, pinned to core 0), building them, reading a process's
// CPU time and memory from /proc, and the TLS scenarios' certificates.
const { spawn, spawnSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const { hostTriple, locateBinary } = require('../bin/switchyard.js');
const { root, run } = require('../scripts/run');
const { freePort, sleep } = require('../__test__/helpers');

const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK']).stdout.toString().trim()) || 100;

/** The scenarios the hooked relays run in, beside the others. */
const HOOK_SCENARIOS = ['relay', 'relay-w4', 'latency'];

const relays = [
  { name: 'native', label: 'switchyard native (attach)', node: 'native' },
  // The native transport on a port of its own (listen()); sessions are created on a
  // second port, a Node HTTP server's.
  { name: 'listen', label: 'switchyard native (listen)', node: 'listen', httpPort: true, scenarios: ['relay-w4', 'relay-w1', 'latency', 'idle', 'idle-18k'] },
  { name: 'bridge', label: 'switchyard bridge (ws)', node: 'bridge' },
  // The same bridge server on the WebAssembly addon, napi's fallback where no native package fits.
  { name: 'wasm', label: 'switchyard bridge on the WebAssembly build', node: 'bridge', env: { NAPI_RS_FORCE_WASI: 'true' }, scenarios: ['relay-w4', 'latency'] },
  { name: 'binary', label: 'switchyard binary', binary: true },
  // The price of the application in the path: every message asked of a publish hook that
  // says yes, in JavaScript (synchronously) or over HTTP from the binary (a Node backend,
  // pinned beside it, whose CPU is not the relay's).
  { name: 'native-hook', label: 'switchyard native, sync publish hook', node: 'native', env: { PUBLISH_HOOK: 'sync' }, scenarios: HOOK_SCENARIOS },
  { name: 'binary-proxy', label: 'switchyard binary, publish hook by proxy', binary: true, proxy: true, scenarios: HOOK_SCENARIOS },
  // What a second core buys the binary: two worker threads, free to run on both cores
  // (the load generator's too), against the one thread of `binary` on core 0. Per server
  // core-second, what the locks and the hand-offs between threads cost.
  { name: 'binary-2t', label: 'switchyard binary, 2 worker threads on both cores', binary: true, cores: '0,1', env: { SWITCHYARD_THREADS: '2' }, scenarios: ['relay-w4', 'fanout'] },
  { name: 'ws', label: 'baseline 1: plain ws relay', node: 'ws' },
  { name: 'original', label: 'baseline 2: parse + stringify per recipient', node: 'original' },
  { name: 'uws', label: 'peer: uWebSockets.js 20.30 (pub/sub)', node: 'uws' },
  {
    name: 'socketio',
    label: 'Socket.IO 4 + @socket.io/redis-adapter',
    node: 'socketio',
    clusterOnly: true,
    wsPath: '/socket.io/?EIO=4&transport=websocket&session=',
    loadgenArgs: ['--socketio'],
  },
];

/** Builds the addons (native and WebAssembly) and the binary (release), and the load generator when asked. */
function build({ loadgen = false } = {}) {
  run(process.execPath, ['scripts/setup.js', 'bench']);
  if (loadgen) run('cargo', ['build', '--release', '-p', 'switchyard-bench', '--target', hostTriple()]);
}

/**
 * The `switchyard` binary of another build, for an A/B run (`npm run bench -- --before REF`):
 * REF is the path of a binary, or a commit of this repository, whose sources are unpacked
 * into target/before/<commit> and built there in release (into target/before/target,
 * which later builds of other commits reuse).
 */
function binaryOf(ref) {
  if (fs.existsSync(ref) && fs.statSync(ref).isFile()) return path.resolve(ref);
  const commit = spawnSync('git', ['rev-parse', '--verify', '--quiet', `${ref}^{commit}`], { cwd: root, encoding: 'utf8' }).stdout.trim();
  if (!commit) throw new Error(`--before ${ref}: neither a file nor a commit of this repository`);
  const sources = path.join(root, 'target', 'before', commit);
  if (!fs.existsSync(path.join(sources, 'Cargo.toml'))) {
    fs.mkdirSync(sources, { recursive: true });
    run('bash', ['-c', 'git archive "$0" | tar -x -C "$1"', commit, sources]);
  }
  const targetDir = path.join(root, 'target', 'before', 'target');
  run('cargo', ['build', '--release', '-p', 'switchyard-server', '--bin', 'switchyard', '--target-dir', targetDir], { cwd: sources });
  const built = path.join(targetDir, 'release', 'switchyard');
  // The next commit built overwrites it: this run keeps its own copy.
  const copy = path.join(root, 'target', 'before', `switchyard-${commit.slice(0, 12)}`);
  fs.copyFileSync(built, copy);
  fs.chmodSync(copy, 0o755);
  return copy;
}

/** CPU seconds a process has used, all threads, from /proc. */
function cpuSeconds(pid) {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

function rssBytes(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)[1]) * 1024;
}

/**
 * The TLS scenarios' certificates, made with openssl's CLI into `dir` (emptied first): a
 * CA (`ca`, the load generator's `--ca`) and a server certificate for 127.0.0.1 and
 * localhost that it signed (`cert`, key `key`), ECDSA P-256 keys in PKCS #8, valid for
 * two days. Returns their paths.
 */
function makeCertificates(dir) {
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const at = (name) => path.join(dir, name);
  fs.writeFileSync(
    at('ca.cnf'),
    ['[req]', 'distinguished_name = dn', 'prompt = no', 'x509_extensions = ca', '[dn]', 'CN = switchyard bench CA', '[ca]', 'basicConstraints = critical,CA:TRUE', 'keyUsage = critical,keyCertSign,cRLSign', 'subjectKeyIdentifier = hash', ''].join('\n'),
  );
  fs.writeFileSync(
    at('server.ext'),
    ['basicConstraints = critical,CA:FALSE', 'keyUsage = critical,digitalSignature', 'extendedKeyUsage = serverAuth', 'subjectAltName = IP:127.0.0.1,DNS:localhost', 'subjectKeyIdentifier = hash', 'authorityKeyIdentifier = keyid', ''].join('\n'),
  );
  const openssl = (...args) => {
    const done = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' });
    if (done.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${done.error?.message ?? done.stderr}`);
  };
  const p256 = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  openssl('req', '-x509', ...p256, '-config', 'ca.cnf', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2');
  openssl('req', ...p256, '-subj', '/CN=127.0.0.1', '-keyout', 'server.key', '-out', 'server.csr');
  const serial = `0x${crypto.randomBytes(8).toString('hex')}`;
  openssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-set_serial', serial, '-days', '2', '-extfile', 'server.ext', '-out', 'server.pem');
  return { ca: at('ca.pem'), cert: at('server.pem'), key: at('server.key') };
}

/**
 * Starts one of `relays` on core 0 (or the cores it names) and waits until it accepts connections, with `env`
 * added to its environment (the binary and servers.js read `HISTORY_SIZE`, `REDIS_URL`
 * and `NODE_ID`); with `tls` (`makeCertificates`'s paths), over TLS on every port (the
 * binary's `--tls-cert`/`--tls-key`, servers.js's `TLS_CERT`/`TLS_KEY`). Over TLS,
 * `clustered`, `roundTrips` and `collectGarbage` (plain HTTP) do not work: no cluster or
 * idle scenario runs so.
 */
async function startRelay(relay, env = {}, { tls } = {}) {
  const port = await freePort();
  // Where sessions are created, /health and /gc answered: the relay's port, or another.
  const httpPort = relay.httpPort ? await freePort() : port;
  const backend = relay.proxy ? await startBackend() : null;
  const proxyArgs = backend ? ['--proxy-publish-url', `http://127.0.0.1:${backend.port}/publish`] : [];
  const tlsArgs = tls ? ['--tls-cert', tls.cert, '--tls-key', tls.key] : [];
  const tlsEnv = tls ? { TLS_CERT: tls.cert, TLS_KEY: tls.key } : {};
  const command = relay.binary
    ? [relay.executable ?? locateBinary(), '--port', String(port), '--host', '127.0.0.1', '--max-clients-per-session', '100', ...proxyArgs, ...tlsArgs]
    : [process.execPath, '--expose-gc', path.join(__dirname, 'servers.js'), relay.node, String(port), String(httpPort)];
  const child = spawn('taskset', ['-c', relay.cores ?? '0', ...command], { cwd: root, stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, RUST_LOG: 'warn', ...relay.env, ...env, ...tlsEnv } });
  await untilListening(httpPort, relay.name);
  return {
    child,
    port,
    httpPort,
    createPath: relay.binary ? '/v1/sessions' : '/sessions',
    /** A cluster node: whether it sees another node yet. */
    async clustered() {
      const health = await fetch(`http://127.0.0.1:${httpPort}/health`).then((r) => (r.ok ? r.json() : null), () => null);
      return relay.binary ? health?.cluster?.peers > 0 : health !== null;
    },
    /** The Redis round trips a binary node has made (its /stats); NaN for others. */
    async roundTrips() {
      if (!relay.binary) return NaN;
      return (await (await fetch(`http://127.0.0.1:${port}/stats`)).json()).cluster?.roundTrips ?? NaN;
    },
    /** Node servers: collect garbage, so memory counts live objects only. */
    async collectGarbage() {
      if (!relay.binary) await fetch(`http://127.0.0.1:${httpPort}/gc`, { method: 'POST' });
      await sleep(200);
    },
    async stop() {
      child.kill('SIGTERM');
      await new Promise((resolve) => (child.exitCode !== null ? resolve() : child.on('exit', resolve)));
      await backend?.stop();
    },
  };
}

/** Waits until something accepts connections on `port` (5 s at most). */
async function untilListening(port, what) {
  for (let tries = 0; ; tries++) {
    const open = await new Promise((resolve) => {
      const socket = net.connect(port, '127.0.0.1', () => socket.end(() => resolve(true)));
      socket.on('error', () => resolve(false));
    });
    if (open) return;
    if (tries > 200) throw new Error(`${what} did not start`);
    await sleep(25);
  }
}

/** The app's backend for the proxy scenarios: allows every publication (bench/servers.js backend). */
async function startBackend() {
  const port = await freePort();
  const child = spawn('taskset', ['-c', '0', process.execPath, path.join(__dirname, 'servers.js'), 'backend', String(port)], { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] });
  await untilListening(port, 'the proxy backend');
  return {
    port,
    async stop() {
      child.kill('SIGTERM');
      await new Promise((resolve) => (child.exitCode !== null ? resolve() : child.on('exit', resolve)));
    },
  };
}

module.exports = { root, relays, build, binaryOf, sleep, cpuSeconds, rssBytes, startRelay, makeCertificates };
