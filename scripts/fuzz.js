// scripts/fuzz.js: runs the cargo-fuzz targets in fuzz/ (`npm run fuzz`), each for a bounded
// time, and fails with the crash's path if any of them finds one.
//
//   node scripts/fuzz.js [--seconds N] [target ...]
//
// Every target by default, 60 s each (`--seconds N` or FUZZ_SECONDS to change). Needs the
// nightly toolchain; installs cargo-fuzz with cargo when it is missing. Builds into
// target/fuzz and keeps what the fuzzer finds in target/fuzz-corpus/<target>, reading the
// committed seeds in fuzz/corpus/<target> too, so a run never changes tracked files.
// Crashes land in fuzz/artifacts/<target>/ (ignored by git). Uses only Node's own modules.
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { root, at, run } = require('./run');

const fuzzDir = at('fuzz');
const targetDir = at('target', 'fuzz');
const targets = fs
  .readdirSync(at('fuzz', 'fuzz_targets'))
  .filter((f) => f.endsWith('.rs'))
  .map((f) => f.slice(0, -3))
  .sort();
/** libFuzzer's limits: a hang, a process over 512 MiB, or one allocation over 128 MiB is a crash. */
const limits = ['-timeout=10', '-rss_limit_mb=512', '-malloc_limit_mb=128', '-print_final_stats=1'];
/**
 * AddressSanitizer keeps up to 256 MiB of freed memory in quarantine by default, which alone
 * would take a long run past the RSS limit; a smaller quarantine leaves the limit to the code.
 */
const asanOptions = [process.env.ASAN_OPTIONS, 'quarantine_size_mb=32', 'malloc_context_size=10'].filter(Boolean).join(':');


function usage(message) {
  if (message) console.error(message);
  console.error(`usage: node scripts/fuzz.js [--seconds N] [target ...]\ntargets: ${targets.join(', ')}`);
  process.exit(2);
}

function parseArgs(argv) {
  let seconds = process.env.FUZZ_SECONDS ?? '60';
  const chosen = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '-h' || arg === '--help') usage();
    else if (arg === '--seconds') seconds = argv[++i];
    else if (arg.startsWith('--seconds=')) seconds = arg.slice('--seconds='.length);
    else if (targets.includes(arg)) chosen.push(arg);
    else usage(`unknown target or option: ${arg}`);
  }
  if (!/^[1-9][0-9]*$/.test(String(seconds))) usage(`--seconds (or FUZZ_SECONDS) must be a positive whole number, got ${seconds}`);
  return { seconds: Number(seconds), chosen: chosen.length ? chosen : targets };
}

/** cargo-fuzz builds with sanitizer flags only nightly accepts. */
function checkNightly() {
  const found = spawnSync('cargo', ['+nightly', '--version'], { encoding: 'utf8' });
  if (found.status !== 0) {
    console.error(
      'Fuzzing needs the nightly Rust toolchain, which is not installed here.\n' +
        'Install it with:  rustup toolchain install nightly\n' +
        '(the project itself keeps building with stable; only the fuzz targets need nightly)',
    );
    process.exit(1);
  }
}

function installCargoFuzz() {
  const found = spawnSync('cargo', ['fuzz', '--version'], { encoding: 'utf8' });
  if (found.status !== 0) run('cargo', ['install', 'cargo-fuzz']);
}

/** Crash, leak, out-of-memory and timeout inputs libFuzzer saved for `target` (slow units are not failures). */
function artifacts(target) {
  const dir = at('fuzz', 'artifacts', target);
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir).filter((f) => !f.startsWith('slow-unit-')).map((f) => path.join(dir, f));
}

/** Runs one target, echoing libFuzzer's output and keeping its end for the summary. */
function fuzz(target, seconds) {
  const scratch = at('target', 'fuzz-corpus', target);
  fs.mkdirSync(scratch, { recursive: true });
  const before = new Set(artifacts(target));
  // New finds go to the first corpus directory; the committed seeds are only read.
  const args = ['+nightly', 'fuzz', 'run', '--fuzz-dir', fuzzDir, '--target-dir', targetDir, target, scratch, at('fuzz', 'corpus', target),
    '--', `-max_total_time=${seconds}`, ...limits];
  console.log(`\n> cargo ${args.join(' ')}`);
  const started = Date.now();
  return new Promise((resolve) => {
    const env = { ...process.env, ASAN_OPTIONS: asanOptions };
    const child = spawn('cargo', args, { cwd: root, env, stdio: ['ignore', 'inherit', 'pipe'] });
    let tail = '';
    child.stderr.on('data', (chunk) => {
      process.stderr.write(chunk);
      tail = (tail + chunk.toString()).slice(-64 * 1024);
    });
    child.on('error', (error) => resolve({ target, status: 1, tail: `could not run cargo: ${error.message}`, crashes: [] }));
    child.on('close', (status, signal) => {
      const crashes = artifacts(target).filter((f) => !before.has(f));
      resolve({ target, status: status ?? signal, tail, crashes, elapsed: (Date.now() - started) / 1000, scratch });
    });
  });
}

/** The figures of libFuzzer's last status line and final stats. */
function summary({ tail, scratch }) {
  const done = [...tail.matchAll(/#(\d+)\s+(?:DONE|pulse|NEW|REDUCE|INITED)\s.*?cov: (\d+).*?corp: (\d+)\/(\S+).*?exec\/s: (\d+)/g)].pop();
  const runs = /stat::number_of_executed_units:\s*(\d+)/.exec(tail)?.[1] ?? done?.[1] ?? '?';
  const execs = /stat::average_exec_per_sec:\s*(\d+)/.exec(tail)?.[1] ?? done?.[5] ?? '?';
  const corpus = scratch && fs.existsSync(scratch) ? fs.readdirSync(scratch).length : '?';
  return { runs, execs, cov: done?.[2] ?? '?', corp: done ? `${done[3]} (${done[4]})` : '?', corpus };
}

/** The fuzz crate's lockfile starts as the root one, so the crates under test build with the versions the project tests. */
function seedLockfile() {
  const lock = at('fuzz', 'Cargo.lock');
  if (!fs.existsSync(lock)) fs.copyFileSync(at('Cargo.lock'), lock);
}

async function main() {
  const { seconds, chosen } = parseArgs(process.argv.slice(2));
  checkNightly();
  installCargoFuzz();
  seedLockfile();
  run('cargo', ['+nightly', 'fuzz', 'build', '--fuzz-dir', fuzzDir, '--target-dir', targetDir]);
  const results = [];
  for (const target of chosen) results.push(await fuzz(target, seconds));

  console.log('\nfuzzing summary:');
  let failed = false;
  for (const result of results) {
    const s = summary(result);
    const ok = result.status === 0 && result.crashes.length === 0;
    failed ||= !ok;
    console.log(
      `  ${result.target.padEnd(10)} ${ok ? 'ok    ' : 'FAILED'} ${Math.round(result.elapsed ?? 0)} s, ${s.runs} runs, ` +
        `${s.execs} exec/s, cov ${s.cov}, corpus ${s.corp} in memory, ${s.corpus} files in ${path.relative(root, result.scratch ?? '')}`,
    );
    for (const crash of result.crashes) {
      console.log(`    crash input: ${path.relative(root, crash)}`);
      console.log(`    reproduce:   cargo +nightly fuzz run --fuzz-dir fuzz --target-dir target/fuzz ${result.target} ${path.relative(root, crash)}`);
    }
    if (!ok && result.crashes.length === 0) console.log(`    cargo fuzz exited with ${result.status}; see its output above`);
  }
  process.exit(failed ? 1 : 0);
}

main();
