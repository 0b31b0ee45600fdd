// scripts/test.js: every test: the Rust workspace, then the Node tests over real sockets.
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');

function run(command, args, env = {}) {
  console.log(`\n> ${command} ${args.join(' ')}`);
  const result = spawnSync(command, args, { cwd: root, stdio: 'inherit', env: { ...process.env, ...env } });
  if (result.error) throw new Error(`could not run ${command}: ${result.error.message}`);
  return result.status === 0;
}

const testDir = path.join(root, '__test__');
const test = (name) => path.join('__test__', `${name}.test.js`);
// The bridge-mode tests (event streams, the frameworks, hooks, the manager API, the protocol and its roles) run
// again on the WebAssembly build, which has no native transport, with wasm.test.js; and
// alone on Windows, whose addon has none either (Node cannot hand its sockets over there).
const bridgeTests = ['event_stream', 'frameworks', 'hooks', 'manager', 'protocol'].map(test);
const wasmTests = [...bridgeTests, test('wasm')];
const nodeTests =
  process.platform === 'win32'
    ? bridgeTests
    : fs
        .readdirSync(testDir)
        .filter((f) => f.endsWith('.test.js'))
        .map((f) => path.join('__test__', f))
        .filter((f) => f !== test('wasm'));
const nodeTest = (files, env) => run(process.execPath, ['--test', '--test-reporter=spec', '--test-timeout=300000', ...files], { NEXT_TELEMETRY_DISABLED: '1', ...env });

const results = [
  // The addon crate has no Rust tests (the Node tests drive it), and building it again in
  // debug would only cost time.
  // The benchmark's load generator reads CPU time with getrusage: it is built for Unix only.
  ['cargo test', run('cargo', ['test', '--workspace', '--exclude', 'switchyard-node', ...(process.platform === 'win32' ? ['--exclude', 'switchyard-bench'] : [])])],
  ['node tests', nodeTest(nodeTests)],
  ['node tests on the WebAssembly build', nodeTest(wasmTests, { NAPI_RS_FORCE_WASI: 'true' })],
];
const failed = results.filter(([, ok]) => !ok).map(([name]) => name);
if (failed.length) {
  console.error(`\nFailed: ${failed.join(', ')}`);
  process.exit(1);
}
console.log('\nAll tests passed.');
