// __test__/image.test.js: the container image of `npm run image` (Containerfile: FROM
// scratch around the static musl binary that `node scripts/setup.js test` cross-builds
// with Zig and stages in npm/linux-x64-musl), built with podman: it holds that one file in
// one layer and runs as a non-root user; run with its port published it answers /health
// and relays between two members of a session made with the admin token; on `podman stop`
// (SIGTERM) it drains as the Kubernetes manifest (docs/operations/kubernetes.yaml)
// relies on, and exits 0. The manifest's config file passes `switchyard config check`.
// Without podman or buildah, `npm run image` says to install one and exits 1.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { TestClient, joinedClient, eventually, untilHealthy } = require('./helpers');
const platforms = require('../scripts/platforms');
const { TAGS, BINARY, buildImage } = require('../scripts/image');

const root = path.join(__dirname, '..');
// The image is built where the musl binary is, from Linux x64 (.github/workflows/release.yml
// builds the packages elsewhere).
const onLinuxX64 = platforms.hostPlatform().dir === 'linux-x64-gnu';
const succeeds = (command, args) => spawnSync(command, args, { stdio: 'ignore' }).status === 0;
const missing = [
  !succeeds('podman', ['--version']) && 'podman (apt-get install podman runc)',
  !fs.existsSync(BINARY) && `${path.relative(root, BINARY)} (node scripts/setup.js test builds it where podman is)`,
].filter(Boolean);
if (onLinuxX64 && missing.length) {
  const message = `container image tests SKIPPED: missing ${missing.join(', ')}`;
  console.error(`\n*** ${message} ***\n`);
  if (process.env.CI === 'true') {
    it('runs under CI, where podman is required', () => assert.fail(message));
  }
}

// Starting a container is slow on a busy machine: every wait is generous.
const STARTUP_MS = 60_000;
const WAIT_MS = 15_000;
const TOKEN = 'image-test-admin-token';
// Long enough to see the drain from outside; the stop must come well within podman's
// --time, after which it would SIGKILL (exit code 137).
const GRACE_MS = 3000;
const STOP_TIME_S = 60;

function podman(args) {
  const result = spawnSync('podman', args, { encoding: 'utf8' });
  assert.equal(result.status, 0, `podman ${args.join(' ')} failed: ${result.stderr}`);
  return result.stdout.trim();
}

/** This process's hard limit `name` (as /proc/self/limits names it), or `fallback` when it is unlimited. */
function hardLimit(name, fallback) {
  const line = fs.readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith(name));
  const value = Number(line?.slice(name.length).trim().split(/ +/)[1]);
  return Number.isFinite(value) ? value : fallback;
}

/**
 * What `podman run` needs here besides the image. Resource limits at or below the ones
 * podman has: by default it asks the runtime for more (RLIMIT_NOFILE and RLIMIT_NPROC of
 * 1048576), which fails without CAP_SYS_RESOURCE, as in a sandbox or a container
 * ("crun: setrlimit `RLIMIT_NOFILE`: Operation not permitted"). And runc where it is
 * installed: Debian 12's crun refuses any container on a host whose cgroups are a v1/v2
 * hybrid with a controller on v2 ("cgroups in hybrid mode not supported").
 */
function runOptions() {
  const nofile = Math.min(hardLimit('Max open files', 65536), 65536);
  const nproc = Math.min(hardLimit('Max processes', 4096), 4096);
  return [
    ...(succeeds('runc', ['--version']) ? ['--runtime', 'runc'] : []),
    '--ulimit', `nofile=${nofile}:${nofile}`,
    '--ulimit', `nproc=${nproc}:${nproc}`,
  ];
}

describe('the container image', { skip: !onLinuxX64 || missing.length > 0 }, () => {
  const name = `switchyard-image-test-${process.pid}`;
  let built;
  let base;
  let ws;
  const logs = () => spawnSync('podman', ['logs', name], { encoding: 'utf8' }).stderr ?? '';
  const authorized = { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` };

  before(async () => {
    built = buildImage({ tool: 'podman', quiet: true });
    spawnSync('podman', ['rm', '--force', '--time', '0', name], { stdio: 'ignore' });
    // The port published on loopback, to a port the host picks; the container sees the
    // test's requests come from its network's gateway, not loopback, so the admin
    // endpoints need the token.
    podman(['run', '--detach', '--name', name, ...runOptions(), '--publish', '127.0.0.1::8765', TAGS[0], '--admin-token', TOKEN, '--shutdown-grace', String(GRACE_MS)]);
    // A container that exits (a limit it cannot set, a bad flag) fails the start at once.
    const waiter = spawn('podman', ['wait', name], { stdio: 'ignore' });
    const exited = new Promise((_, reject) => waiter.on('exit', (code, signal) => signal || reject(new Error(`the container exited:\n${logs()}`))));
    exited.catch(() => {});
    try {
      const address = podman(['port', name, '8765/tcp']).split('\n')[0];
      base = `http://${address}`;
      ws = `ws://${address}`;
      await Promise.race([untilHealthy(base, logs, STARTUP_MS), exited]);
    } finally {
      waiter.kill();
    }
  });
  after(() => {
    spawnSync('podman', ['rm', '--force', '--time', '0', name], { stdio: 'ignore' });
  });

  it('holds the static binary alone, in one layer, run by a numeric non-root user', (t) => {
    const [config] = JSON.parse(podman(['image', 'inspect', TAGS[0]]));
    assert.equal(config.Config.User, '65532:65532');
    assert.deepEqual(config.Config.Entrypoint, ['/switchyard']);
    assert.deepEqual(Object.keys(config.Config.ExposedPorts), ['8765/tcp']);
    assert.equal(config.Architecture, 'amd64');
    assert.equal(config.RootFS.Layers.length, 1);
    const saved = fs.mkdtempSync(path.join(os.tmpdir(), 'switchyard-image-'));
    try {
      podman(['save', '--format', 'oci-dir', '--output', path.join(saved, 'oci'), TAGS[0]]);
      const blob = (digest) => path.join(saved, 'oci', 'blobs', ...digest.split(':'));
      const [manifest] = JSON.parse(fs.readFileSync(path.join(saved, 'oci', 'index.json'), 'utf8')).manifests;
      const { layers } = JSON.parse(fs.readFileSync(blob(manifest.digest), 'utf8'));
      assert.equal(layers.length, 1);
      const listing = spawnSync('tar', ['-tvf', blob(layers[0].digest)], { encoding: 'utf8' });
      assert.equal(listing.status, 0, listing.stderr);
      const entries = listing.stdout.trim().split('\n');
      assert.equal(entries.length, 1, listing.stdout);
      assert.match(entries[0], /^-rwxr-xr-x 0\/0 +\d+ .* switchyard$/);
      assert.equal(Number(entries[0].split(/ +/)[2]), fs.statSync(BINARY).size);
      t.diagnostic(`image ${TAGS[0]}: ${built.size.text}; its layer, compressed: ${(layers[0].size / 1e6).toFixed(2)} MB`);
    } finally {
      fs.rmSync(saved, { recursive: true, force: true });
    }
    assert.ok(built.size.bytes < 20e6, `the image is ${built.size.text}`);
  });

  it('answers /health and /ready, and relays between two members of a session made with the admin token', async () => {
    assert.equal((await fetch(`${base}/ready`)).status, 200);
    const created = await fetch(`${base}/v1/sessions`, { method: 'POST', headers: authorized, body: '{"sessionId":"x"}' });
    assert.equal(created.status, 201, await created.text());
    const alice = await joinedClient(`${ws}/session/x`);
    const bob = await joinedClient(`${ws}/session/x`);
    alice.send('{"type":"cursor","from":"alice"}');
    assert.equal((await bob.next(() => true, WAIT_MS)).text, '{"type":"cursor","from":"alice"}');
    bob.send(Buffer.from([1, 2, 3]));
    assert.deepEqual((await alice.next((m) => m.isBinary, WAIT_MS)).data, Buffer.from([1, 2, 3]));
    alice.close();
    bob.close();
  });

  it('drains on podman stop (SIGTERM): /ready answers 503, upgrades are refused, members get 1012; then exits 0', async (t) => {
    await fetch(`${base}/v1/sessions`, { method: 'POST', headers: authorized, body: '{"sessionId":"drain"}' });
    const member = await joinedClient(`${ws}/session/drain`);
    const started = performance.now();
    const stop = spawn('podman', ['stop', '--time', String(STOP_TIME_S), name], { stdio: 'ignore' });
    const stopped = new Promise((resolve) => stop.on('exit', resolve));
    const closed = await member.closedWithin(WAIT_MS);
    assert.equal(closed.code, 1012);
    await eventually(async () => assert.equal((await fetch(`${base}/ready`)).status, 503), WAIT_MS);
    const late = new TestClient(`${ws}/session/drain`);
    await assert.rejects(late.opened, /503/);
    assert.equal(await stopped, 0);
    const seconds = (performance.now() - started) / 1000;
    t.diagnostic(`podman stop took ${seconds.toFixed(1)} s with --shutdown-grace ${GRACE_MS}`);
    assert.equal(podman(['inspect', '--format', '{{.State.ExitCode}}', name]), '0', logs());
    assert.ok(seconds < STOP_TIME_S / 2, `podman stop took ${seconds} s`);
  });
});

describe('docs/operations/kubernetes.yaml', { skip: !onLinuxX64 || (!fs.existsSync(BINARY) && `no ${path.relative(root, BINARY)}`) }, () => {
  const manifest = fs.readFileSync(path.join(root, 'docs', 'operations', 'kubernetes.yaml'), 'utf8');
  /** The ConfigMap's switchyard.toml: the block scalar's lines, unindented. */
  const toml = () => {
    const [, block] = /^ {2}switchyard\.toml: \|\n((?: {4}.*\n|\n)+)/m.exec(manifest) ?? [];
    assert.ok(block, 'the ConfigMap holds switchyard.toml');
    return block.replace(/^ {4}/gm, '');
  };
  const setting = (key) => Number(new RegExp(`^${key} = (\\d+)$`, 'm').exec(toml())?.[1]);

  it("has a config file that `switchyard config check` accepts", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'switchyard-k8s-'));
    try {
      fs.writeFileSync(path.join(dir, 'switchyard.toml'), toml());
      const checked = spawnSync(BINARY, ['config', 'check', path.join(dir, 'switchyard.toml')], { encoding: 'utf8' });
      assert.equal(checked.status, 0, `${checked.stdout}${checked.stderr}`);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('gives the pod longer to stop than the shutdown grace and timeout take', () => {
    const [grace, timeout] = [setting('shutdown_grace'), setting('shutdown_timeout')];
    assert.ok(grace > 0 && timeout > 0, 'the config file sets shutdown_grace and shutdown_timeout');
    const period = Number(/terminationGracePeriodSeconds: (\d+)/.exec(manifest)?.[1]);
    assert.ok(period * 1000 > grace + timeout, `terminationGracePeriodSeconds ${period} s, grace and timeout ${grace + timeout} ms`);
  });

  it('passes only flags the binary has', () => {
    const help = spawnSync(BINARY, ['--help'], { encoding: 'utf8' }).stdout;
    const flags = [...manifest.matchAll(/^ +- (--[a-z-]+)$/gm)].map(([, flag]) => flag);
    assert.deepEqual(flags, ['--config', '--tls-cert', '--tls-key']);
    for (const flag of flags) assert.match(help, new RegExp(`^ +${flag} <FILE>`, 'm'), `${flag} is in --help`);
  });
});

describe('npm run image without podman or buildah', () => {
  it('says to install one and exits 1', () => {
    const result = spawnSync(process.execPath, [path.join(root, 'scripts', 'image.js')], { cwd: root, encoding: 'utf8', env: { ...process.env, PATH: '' } });
    assert.equal(result.status, 1, result.stderr);
    assert.match(result.stderr, /neither podman nor buildah is installed; install podman \(or buildah\)/);
  });
});
