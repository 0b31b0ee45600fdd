// scripts/platforms.js: the platforms switchyard ships to, building their packages and
// checking what is in them. Each `npm/<dir>` package holds the addon built for one target
// and, except for WebAssembly, the `switchyard` binary.
//
//   node scripts/platforms.js build [dir ...]   builds what this machine can (default: all of it)
//   node scripts/platforms.js check [--all]     checks every artifact in npm/ for its format and
//                                               CPU (--all: and that none is missing)
//
// Each machine builds its own target and the WebAssembly one (rustc alone); from Linux the
// other Linux targets cross-build with Zig (cargo-zigbuild). macOS and Windows packages are
// built on their own runners by .github/workflows/release.yml. Uses only Node's own modules.
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { root, at, run } = require('./run');

/**
 * `dir`: the npm/<dir> package (napi's name for the target); `cpu` and `format`: what
 * every artifact in it must be; `libc`: which C library a Linux artifact links.
 */
const platforms = [
  { dir: 'linux-x64-gnu', triple: 'x86_64-unknown-linux-gnu', format: 'elf', cpu: 'x64', libc: 'glibc' },
  { dir: 'linux-arm64-gnu', triple: 'aarch64-unknown-linux-gnu', format: 'elf', cpu: 'arm64', libc: 'glibc' },
  { dir: 'linux-x64-musl', triple: 'x86_64-unknown-linux-musl', format: 'elf', cpu: 'x64', libc: 'musl' },
  { dir: 'linux-arm64-musl', triple: 'aarch64-unknown-linux-musl', format: 'elf', cpu: 'arm64', libc: 'musl' },
  { dir: 'darwin-x64', triple: 'x86_64-apple-darwin', format: 'mach-o', cpu: 'x64' },
  { dir: 'darwin-arm64', triple: 'aarch64-apple-darwin', format: 'mach-o', cpu: 'arm64' },
  { dir: 'win32-x64-msvc', triple: 'x86_64-pc-windows-msvc', format: 'pe', cpu: 'x64' },
  { dir: 'wasm32-wasi', triple: 'wasm32-wasip1-threads', format: 'wasm', cpu: 'wasm32' },
];

const { hostTriple } = require('../bin/switchyard.js');
/** Whether `platform` is built with a cross toolchain here (Zig, for Linux targets). */
const isCross = (platform) => platform.format !== 'wasm' && platform.triple !== hostTriple();
/** What this machine can build: its own target, WebAssembly, and from Linux every Linux target. */
const buildableHere = (platform) => !isCross(platform) || (process.platform === 'linux' && platform.format === 'elf');

const byDir = (dir) => {
  const platform = platforms.find((p) => p.dir === dir);
  if (!platform) throw new Error(`unknown platform ${dir}; one of ${platforms.map((p) => p.dir).join(', ')}`);
  return platform;
};

const addonName = (platform) => `switchyard.${platform.dir}.node`;
const binaryName = (platform) => (platform.dir.startsWith('win32') ? 'switchyard.exe' : 'switchyard');

// ---- reading headers ----

const ELF_MACHINES = { 0x3e: 'x64', 0xb7: 'arm64' };
const MACHO_CPUS = { 0x01000007: 'x64', 0x0100000c: 'arm64' };
const PE_MACHINES = { 0x8664: 'x64', 0xaa64: 'arm64' };

/**
 * What a file is, from its header: `{ format, cpu, kind }`, with `kind` 'executable' or
 * 'library' (and for ELF, `libc`: 'glibc' when it asks for glibc's symbol versions).
 */
function identify(file) {
  const bytes = fs.readFileSync(file);
  if (bytes.readUInt32BE(0) === 0x7f454c46) {
    if (bytes[4] !== 2 || bytes[5] !== 1) return { format: 'elf', cpu: 'not 64-bit little-endian' };
    const type = bytes.readUInt16LE(16);
    return {
      format: 'elf',
      cpu: ELF_MACHINES[bytes.readUInt16LE(18)] ?? `machine ${bytes.readUInt16LE(18)}`,
      kind: type === 2 || (type === 3 && isPie(bytes)) ? 'executable' : 'library',
      libc: bytes.includes('GLIBC_2.') ? 'glibc' : 'musl',
    };
  }
  if (bytes.readUInt32LE(0) === 0xfeedfacf) {
    const fileType = bytes.readUInt32LE(12);
    return { format: 'mach-o', cpu: MACHO_CPUS[bytes.readUInt32LE(4)] ?? 'unknown', kind: fileType === 2 ? 'executable' : 'library' };
  }
  if (bytes.readUInt16LE(0) === 0x5a4d) {
    const pe = bytes.readUInt32LE(0x3c);
    if (bytes.readUInt32LE(pe) !== 0x00004550) return { format: 'not PE' };
    const characteristics = bytes.readUInt16LE(pe + 22);
    return { format: 'pe', cpu: PE_MACHINES[bytes.readUInt16LE(pe + 4)] ?? 'unknown', kind: characteristics & 0x2000 ? 'library' : 'executable' };
  }
  if (bytes.readUInt32BE(0) === 0x0061736d) {
    // A threads build imports a shared memory: the `env.memory` import's limits flag 3.
    return { format: 'wasm', cpu: 'wasm32', kind: 'library', sharedMemory: bytes.includes(Buffer.from('\x03env\x06memory\x02\x03', 'latin1')) };
  }
  return { format: 'unknown' };
}

/**
 * Whether a 64-bit ELF shared object is a position-independent executable: it has an
 * interpreter (PT_INTERP), or, linked statically as a musl binary is, DF_1_PIE.
 */
function isPie(bytes) {
  const phoff = Number(bytes.readBigUInt64LE(32));
  const entrySize = bytes.readUInt16LE(54);
  for (let i = 0; i < bytes.readUInt16LE(56); i++) {
    const header = phoff + i * entrySize;
    const type = bytes.readUInt32LE(header);
    if (type === 3) return true;
    if (type !== 2) continue;
    const start = Number(bytes.readBigUInt64LE(header + 8));
    const end = start + Number(bytes.readBigUInt64LE(header + 32));
    for (let entry = start; entry + 16 <= end; entry += 16) {
      if (bytes.readBigUInt64LE(entry) === 0x6ffffffbn) return (bytes.readBigUInt64LE(entry + 8) & 0x08000000n) !== 0n;
    }
  }
  return false;
}

/**
 * Whether an ELF executable is linked statically: it names no interpreter (PT_INTERP, the
 * dynamic loader) to start it, so it runs where there is no C library at all (FROM scratch).
 */
function linkedStatically(file) {
  const bytes = fs.readFileSync(file);
  if (identify(file).format !== 'elf') return false;
  const phoff = Number(bytes.readBigUInt64LE(32));
  const entrySize = bytes.readUInt16LE(54);
  for (let i = 0; i < bytes.readUInt16LE(56); i++) {
    if (bytes.readUInt32LE(phoff + i * entrySize) === 3) return false;
  }
  return true;
}

/** The artifacts `packages`/<dir> should hold, each with what its header must say. */
function expectedArtifacts(platform, packages) {
  const expected = (name, kind) => ({ file: path.join(packages, platform.dir, name), kind });
  if (platform.format === 'wasm') return [expected('switchyard.wasm32-wasi.wasm', 'library')];
  return [expected(addonName(platform), 'library'), expected(binaryName(platform), 'executable')];
}

/** Problems with one artifact: wrong format, CPU, kind or C library. */
function problems(platform, artifact) {
  const found = identify(artifact.file);
  const wrong = [];
  if (found.format !== platform.format) wrong.push(`format ${found.format}, not ${platform.format}`);
  else {
    if (found.cpu !== platform.cpu) wrong.push(`cpu ${found.cpu}, not ${platform.cpu}`);
    if (found.kind !== artifact.kind) wrong.push(`a ${found.kind}, not a ${artifact.kind}`);
    if (platform.libc && found.libc !== platform.libc) wrong.push(`links ${found.libc}, not ${platform.libc}`);
    if (platform.format === 'wasm' && !found.sharedMemory) wrong.push('no shared memory: not a threads build');
  }
  return wrong;
}

/**
 * Checks every artifact present in npm/ (or `packages`); with `all`, every one must be
 * there (before publishing). Returns what was checked; throws on a wrong or missing one.
 */
function check(packages = at('npm'), { all = false } = {}) {
  const checked = [];
  const wrong = [];
  for (const platform of platforms) {
    for (const artifact of expectedArtifacts(platform, packages)) {
      if (!fs.existsSync(artifact.file)) {
        if (all) wrong.push(`${path.relative(path.dirname(packages), artifact.file)}: missing`);
        continue;
      }
      const found = problems(platform, artifact);
      const name = path.relative(path.dirname(packages), artifact.file);
      if (found.length) wrong.push(`${name}: ${found.join(', ')}`);
      checked.push(name);
    }
  }
  if (wrong.length) throw new Error(`artifacts missing or of the wrong kind:\n  ${wrong.join('\n  ')}`);
  return checked;
}

// ---- building ----

const succeeds = (command, args) => spawnSync(command, args, { encoding: 'utf8' }).status === 0;

/** The Rust standard library for `triple`, and for a cross build Zig and cargo-zigbuild. */
function toolchainFor(platform) {
  const installed = spawnSync('rustup', ['target', 'list', '--installed'], { encoding: 'utf8' }).stdout ?? '';
  if (!installed.split('\n').includes(platform.triple)) run('rustup', ['target', 'add', platform.triple]);
  if (isCross(platform) && !succeeds('cargo-zigbuild', ['--version'])) {
    // Both come from PyPI as wheels: Zig itself, and cargo-zigbuild, which finds it there.
    run('python3', ['-m', 'pip', 'install', '--quiet', 'ziglang', 'cargo-zigbuild']);
  }
}

/**
 * The addon for `platform`, built with napi and copied into the project root, where
 * `npm run build` leaves this machine's. napi writes into a directory of its own: given the
 * root without a JS binding to write, it deletes the root's binding.js.
 */
function buildAddon(platform) {
  const output = at('target', 'napi', platform.dir);
  const args = ['build', '--platform', '--release', '--target', platform.triple, '--manifest-path', 'crates/switchyard-node/Cargo.toml'];
  if (isCross(platform)) args.push('--cross-compile');
  // The typings are the host build's (binding.d.ts); --dts is relative to the output.
  args.push('--output-dir', output, '--no-js', '--dts', 'binding.d.ts');
  const env = { ...process.env };
  if (platform.format === 'wasm') env.EMNAPI_LINK_DIR = at('node_modules', 'emnapi', 'lib', 'wasm32-wasi-threads');
  run(process.execPath, [at('node_modules', '@napi-rs', 'cli', 'dist', 'cli.js'), ...args], { env });
  for (const name of addonFiles(platform)) fs.copyFileSync(path.join(output, name), at(name));
}

/** The files of `platform`'s addon in the project root: the module, and for wasm napi's loaders. */
function addonFiles(platform) {
  if (platform.format !== 'wasm') return [addonName(platform)];
  return JSON.parse(fs.readFileSync(at('npm', platform.dir, 'package.json'), 'utf8')).files;
}

/** Where cargo leaves the release binary for `platform`. */
const releaseBinary = (platform) => at('target', platform.triple, 'release', binaryName(platform));

/** The `switchyard` binary for `platform`, cross-built with Zig unless it is this machine's. */
function buildBinary(platform) {
  run('cargo', [isCross(platform) ? 'zigbuild' : 'build', '--release', '-p', 'switchyard-server', '--target', platform.triple]);
}

/** Copies what was built for `platform` into its package, npm/<dir>. */
function stage(platform) {
  const staged = addonFiles(platform).map((name) => [at(name), at('npm', platform.dir, name)]);
  if (platform.format !== 'wasm') staged.push([releaseBinary(platform), at('npm', platform.dir, binaryName(platform))]);
  for (const [from, to] of staged) fs.copyFileSync(from, to);
  console.log(`staged npm/${platform.dir}: ${staged.map(([, to]) => path.basename(to)).join(', ')}`);
}

function build(platform) {
  if (!buildableHere(platform)) throw new Error(`npm/${platform.dir} is built on a ${platform.format === 'pe' ? 'Windows' : 'macOS'} runner (.github/workflows/release.yml), not here`);
  toolchainFor(platform);
  buildAddon(platform);
  if (platform.format !== 'wasm') buildBinary(platform);
  stage(platform);
}

/** This machine's package. */
const hostPlatform = () => byDir(require('../bin/switchyard.js').platformPackage());

module.exports = { platforms, byDir, hostPlatform, buildableHere, build, buildAddon, buildBinary, toolchainFor, stage, addonFiles, check, identify, linkedStatically, addonName, binaryName, releaseBinary };

if (require.main === module) {
  const [command, ...dirs] = process.argv.slice(2);
  if (command === 'build') {
    const chosen = dirs.length ? dirs.map(byDir) : platforms.filter(buildableHere);
    for (const platform of chosen) build(platform);
  } else if (command !== 'check' || (dirs.length && dirs[0] !== '--all')) {
    console.error('usage: node scripts/platforms.js build [dir ...] | check [--all]');
    process.exit(2);
  }
  try {
    for (const name of check(at('npm'), { all: dirs[0] === '--all' })) console.log(`ok  ${name}  ${JSON.stringify(identify(at(name)))}`);
  } catch (err) {
    console.error(err.message);
    process.exit(1);
  }
}
