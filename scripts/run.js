// scripts/run.js: what the set-up, fuzz and benchmark scripts share: the project root, and running a
// command in it that must succeed. Uses only Node's own modules.
const { spawnSync } = require('node:child_process');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const at = (...parts) => path.join(root, ...parts);

/** Runs a command in the project root, echoing it; exits with its code if it fails. */
function run(command, args, options = {}) {
  console.log(`\n> ${command} ${args.join(' ')}`);
  // On Windows npm is npm.cmd, which only a shell starts.
  const shell = process.platform === 'win32' && command === 'npm';
  const result = spawnSync(command, args, { cwd: root, stdio: 'inherit', shell, ...options });
  if (result.error) throw new Error(`could not run ${command}: ${result.error.message}`);
  if (result.status !== 0) {
    console.error(`\n${command} ${args.join(' ')} failed with exit code ${result.status}`);
    process.exit(result.status || 1);
  }
}

module.exports = { root, at, run };
