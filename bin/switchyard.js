#!/usr/bin/env node
// bin/switchyard.js: `npx switchyard` starts the standalone server (the Rust `switchyard`
// binary), passes SIGINT, SIGTERM (stop) and SIGHUP (read the TLS certificate again) on to
// it, and exits with its exit code, so a process manager that signals this process
// signals the server. A signal that cannot
// be passed on (SIGKILL) must not leave an orphan behind either: the server is given one
// end of a pipe as its descriptor 3 and stops when the pipe closes, which the kernel does
// whenever this process ends (and on Linux it also dies with its parent).
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const exe = process.platform === 'win32' ? 'switchyard.exe' : 'switchyard';

/** Whether this Linux runs on musl (Alpine), told as napi's binding.js tells it. */
const isMusl = () => process.platform === 'linux' && !process.report?.getReport()?.header?.glibcVersionRuntime;

/** The host's Rust target triple, as `napi build` and `npm test` build for it. */
function hostTriple() {
  const { arch, platform } = process;
  const cpu = { x64: 'x86_64', arm64: 'aarch64' }[arch] ?? arch;
  if (platform === 'linux') return `${cpu}-unknown-linux-${isMusl() ? 'musl' : 'gnu'}`;
  if (platform === 'darwin') return `${cpu}-apple-darwin`;
  if (platform === 'win32') return `${cpu}-pc-windows-msvc`;
  return `${cpu}-${platform}`;
}

/** This platform's npm package, which carries the binary beside the addon: `linux-x64-gnu`. */
function platformPackage() {
  const { arch, platform } = process;
  if (platform === 'linux') return `linux-${arch}-${isMusl() ? 'musl' : 'gnu'}`;
  if (platform === 'win32') return `win32-${arch}-msvc`;
  return `${platform}-${arch}`;
}

/**
 * Where the binary is: $SWITCHYARD_BINARY, else the platform package published beside
 * the addon, else this checkout's release build.
 */
function locateBinary() {
  if (process.env.SWITCHYARD_BINARY) return process.env.SWITCHYARD_BINARY;
  const candidates = [];
  try {
    candidates.push(path.join(path.dirname(require.resolve(`switchyard-${platformPackage()}/package.json`)), exe));
  } catch {
    // Not installed from the registry: look for a local build.
  }
  candidates.push(path.join(root, 'target', hostTriple(), 'release', exe), path.join(root, 'target', 'release', exe));
  const found = candidates.find((candidate) => fs.existsSync(candidate));
  if (!found) {
    throw new Error(`the switchyard binary was not found (looked in ${candidates.join(', ')}); build it with "npm run build:server"`);
  }
  return found;
}

module.exports = { locateBinary, hostTriple, platformPackage };

if (require.main === module) {
  let binary;
  try {
    binary = locateBinary();
  } catch (err) {
    console.error(`switchyard: ${err.message}`);
    process.exit(1);
  }
  const child = spawn(binary, process.argv.slice(2), {
    stdio: ['inherit', 'inherit', 'inherit', 'pipe'],
    env: { ...process.env, SWITCHYARD_LAUNCHER_FD: '3', SWITCHYARD_LAUNCHER_PID: String(process.pid) },
  });
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.on(signal, () => child.kill(signal));
  }
  child.on('error', (err) => {
    console.error(`switchyard: cannot start ${binary}: ${err.message}`);
    process.exit(1);
  });
  child.on('exit', (code, signal) => {
    if (signal) {
      process.removeAllListeners(signal);
      process.kill(process.pid, signal);
    } else {
      process.exit(code ?? 1);
    }
  });
}
