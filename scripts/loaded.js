// scripts/loaded.js (`npm run test:loaded`): runs `npm test` several times in a row with
// CPU hogs beside it, as a busy CI machine would be, and prints each run's result and
// time. The hogs are child processes spinning on a core each; they are stopped when the
// runs end, however they end. Options: --runs N (10), --hogs N (2).
const { spawn, spawnSync } = require('node:child_process');
const { root } = require('./run');

const option = (name, fallback) => {
  const at = process.argv.indexOf(`--${name}`);
  return at === -1 ? fallback : Number(process.argv[at + 1]);
};
const runs = option('runs', 10);
const hogCount = option('hogs', 2);

const hogs = Array.from({ length: hogCount }, () => spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' }));
const stopHogs = () => hogs.forEach((hog) => hog.kill('SIGKILL'));
process.on('exit', stopHogs);
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(130));

const results = [];
for (let run = 1; run <= runs; run++) {
  const started = Date.now();
  const { status } = spawnSync('npm', ['test'], { cwd: root, stdio: ['ignore', 'inherit', 'inherit'], env: { ...process.env } });
  const seconds = Math.round((Date.now() - started) / 1000);
  results.push({ run, passed: status === 0, seconds });
  console.log(`\nloaded run ${run} of ${runs} (${hogCount} CPU hogs): ${status === 0 ? 'passed' : `FAILED (exit ${status})`} in ${seconds} s`);
}
stopHogs();
const passed = results.filter((r) => r.passed).length;
console.log(`\n${results.map((r) => `run ${r.run}: ${r.passed ? 'passed' : 'FAILED'} (${r.seconds} s)`).join('\n')}`);
console.log(`${passed} passed, ${runs - passed} failed`);
process.exit(passed === runs ? 0 : 1);
