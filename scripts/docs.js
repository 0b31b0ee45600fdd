// scripts/docs.js (`npm run docs`): builds the book (book.toml, its pages in docs/) into
// target/book with mdbook, installing mdbook with cargo first when it is missing, as
// setup.js does wasm-bindgen-cli. Uses only Node's own modules.
const { spawnSync } = require('node:child_process');
const os = require('node:os');
const path = require('node:path');
const { at, run } = require('./run');

/** mdbook 0.4, the release line book.toml is written for. */
const MDBOOK = /^mdbook v0\.4\./;

function mdbook() {
  const cargoBin = path.join(process.env.CARGO_HOME ?? path.join(os.homedir(), '.cargo'), 'bin');
  for (const candidate of ['mdbook', path.join(cargoBin, 'mdbook')]) {
    const found = spawnSync(candidate, ['--version'], { encoding: 'utf8' });
    if (MDBOOK.test(found.stdout ?? '')) return candidate;
  }
  run('cargo', ['install', 'mdbook', '--version', '^0.4', '--no-default-features', '--features', 'search']);
  return path.join(cargoBin, 'mdbook');
}

run(mdbook(), ['build', at()]);
console.log(`\nThe book is in ${at('target', 'book')}: open ${at('target', 'book', 'index.html')}`);
