// __test__/platforms.test.js: every artifact in the npm/<platform> packages is checked for
// its format, CPU, kind and C library (scripts/platforms.js reads the headers), so that a
// package never carries the wrong binary; and the check fails on one that does.
const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const platforms = require('../scripts/platforms');

const root = path.join(__dirname, '..');
const host = platforms.hostPlatform();

describe('platform packages', () => {
  it('lists a package per target napi builds, each with a package.json naming its platform', () => {
    const targets = require('../package.json').napi.targets;
    assert.deepEqual(platforms.platforms.map((p) => p.triple).sort(), [...targets].sort());
    for (const platform of platforms.platforms) {
      const manifest = JSON.parse(fs.readFileSync(path.join(root, 'npm', platform.dir, 'package.json'), 'utf8'));
      assert.equal(manifest.name, `switchyard-${platform.dir}`);
      assert.deepEqual(manifest.cpu, [platform.cpu]);
      for (const file of platforms.addonFiles(platform)) assert.ok(manifest.files.includes(file), `${platform.dir} publishes ${file}`);
      if (platform.format !== 'wasm') assert.ok(manifest.files.includes(platforms.binaryName(platform)), `${platform.dir} publishes the binary`);
    }
  });

  it('holds only artifacts of its own format and CPU (this machine\'s package and the wasm one among them)', () => {
    const checked = platforms.check();
    // `node scripts/setup.js test` stages these two (and linux-arm64-gnu where qemu runs it).
    for (const artifact of [platforms.addonName(host), platforms.binaryName(host)]) {
      assert.ok(checked.includes(path.join('npm', host.dir, artifact)), `${artifact} in ${checked.join(', ')}`);
    }
    assert.ok(checked.includes(path.join('npm', 'wasm32-wasi', 'switchyard.wasm32-wasi.wasm')), 'the wasm addon is staged');
  });

  it('reads this Node as an executable of this CPU, and the addon as a library', () => {
    const node = platforms.identify(process.execPath);
    assert.deepEqual([node.format, node.cpu, node.kind], [host.format, host.cpu, 'executable']);
    if (host.libc) assert.equal(node.libc, host.libc);
    assert.equal(platforms.identify(path.join(root, platforms.addonName(host))).kind, 'library');
    assert.equal(platforms.identify(path.join(root, 'package.json')).format, 'unknown');
  });

  it('fails on an addon of the wrong CPU or C library, or a binary where a library belongs', { skip: host.dir !== 'linux-x64-gnu' && 'it misplaces Linux x64 files' }, () => {
    const packages = fs.mkdtempSync(path.join(os.tmpdir(), 'switchyard-npm-'));
    try {
      const place = (dir, name, from) => {
        fs.mkdirSync(path.join(packages, dir), { recursive: true });
        fs.copyFileSync(from, path.join(packages, dir, name));
      };
      const x64Addon = path.join(root, platforms.addonName(host));
      place('linux-arm64-gnu', 'switchyard.linux-arm64-gnu.node', x64Addon);
      place('linux-x64-musl', 'switchyard.linux-x64-musl.node', x64Addon);
      place('linux-x64-gnu', 'switchyard.linux-x64-gnu.node', process.execPath);
      place('darwin-arm64', 'switchyard', process.execPath);
      assert.throws(() => platforms.check(packages), (err) => {
        assert.match(err.message, /linux-arm64-gnu\/switchyard\.linux-arm64-gnu\.node: cpu x64, not arm64/);
        assert.match(err.message, /linux-x64-musl\/switchyard\.linux-x64-musl\.node: links glibc, not musl/);
        assert.match(err.message, /linux-x64-gnu\/switchyard\.linux-x64-gnu\.node: a executable, not a library/);
        assert.match(err.message, /darwin-arm64\/switchyard: format elf, not mach-o/);
        return true;
      });
    } finally {
      fs.rmSync(packages, { recursive: true, force: true });
    }
  });
});
