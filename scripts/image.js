// scripts/image.js: `npm run image`: the standalone server's container image, FROM scratch
// around the static x86_64 musl `switchyard` binary (Containerfile), built with podman, or
// `buildah bud` where podman is missing, tagged switchyard:<version> and switchyard:latest.
// Builds and stages the binary first (`node scripts/setup.js image`, which skips it while
// it is up to date), then prints the image's size. Uses only Node's own modules.
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { root, at, run } = require('./run');
const platforms = require('./platforms');

const { version } = require('../package.json');
const TAGS = [`switchyard:${version}`, 'switchyard:latest'];
const musl = platforms.byDir('linux-x64-musl');
/** The binary the image holds, where `node scripts/setup.js image` stages it. */
const BINARY = at('npm', musl.dir, platforms.binaryName(musl));
const INSTALL = 'install podman (or buildah): apt-get install podman, dnf install podman';

/** The tool to build images with: podman, else buildah, else null. */
function containerTool() {
  return ['podman', 'buildah'].find((tool) => spawnSync(tool, ['--version'], { stdio: 'ignore' }).status === 0) ?? null;
}

/** Runs `tool args` in the project root; returns its stdout, or throws with its output. */
function capture(tool, args, { quiet = true } = {}) {
  const result = spawnSync(tool, args, { cwd: root, encoding: 'utf8', stdio: ['ignore', quiet ? 'pipe' : 'inherit', quiet ? 'pipe' : 'inherit'] });
  if (result.error) throw new Error(`could not run ${tool}: ${result.error.message}`);
  if (result.status !== 0) throw new Error(`${tool} ${args.join(' ')} failed with exit code ${result.status}${quiet ? `:\n${result.stdout}${result.stderr}` : ''}`);
  return result.stdout ?? '';
}

/**
 * The size of image `tag`: `{ bytes, text }` from podman; buildah tells only a rounded
 * text (`9.22 MB`).
 */
function imageSize(tool, tag) {
  if (tool === 'podman') {
    const bytes = Number(capture('podman', ['image', 'inspect', '--format', '{{.Size}}', tag]).trim());
    return { bytes, text: `${(bytes / 1e6).toFixed(2)} MB (${bytes} bytes)` };
  }
  return { bytes: null, text: capture('buildah', ['images', '--format', '{{.Size}}', tag]).trim() };
}

/** The id of image `tag`, or null when there is none. */
function imageId(tool, tag) {
  const format = tool === 'podman' ? '{{.Id}}' : '{{.FromImageID}}';
  const result = spawnSync(tool, ['inspect', '--type', 'image', '--format', format, tag], { encoding: 'utf8' });
  return result.status === 0 ? result.stdout.trim() : null;
}

/** Throws unless the staged binary is there and a static x86_64 executable, as FROM scratch needs. */
function checkBinary() {
  const name = path.relative(root, BINARY);
  if (!fs.existsSync(BINARY)) {
    throw new Error(`${name} is missing: \`node scripts/setup.js image\` builds it, on Linux x64 (glibc) with Zig`);
  }
  const found = platforms.identify(BINARY);
  if (found.format !== 'elf' || found.cpu !== 'x64' || found.kind !== 'executable' || !platforms.linkedStatically(BINARY)) {
    throw new Error(`${name} is not a static x86_64 Linux executable: ${JSON.stringify(found)}`);
  }
}

/**
 * Builds the image from the staged binary with `tool` and tags it with `tags`; returns
 * `{ tool, tags, size }`. `quiet` keeps the tool's output unless it fails.
 */
function buildImage({ tool = containerTool(), tags = TAGS, quiet = false } = {}) {
  if (!tool) throw new Error(`neither podman nor buildah is installed: ${INSTALL}`);
  checkBinary();
  const previous = imageId(tool, tags[0]);
  const args = [
    tool === 'podman' ? 'build' : 'bud',
    '--file', at('Containerfile'),
    // No intermediate images: with one file to copy there is nothing worth caching.
    '--layers=false',
    // The binary is x86_64 whatever builds the image (podman on an arm64 Mac, say).
    ...(process.platform === 'linux' && process.arch === 'x64' ? [] : ['--platform', 'linux/amd64']),
    '--build-arg', `VERSION=${version}`,
    ...tags.flatMap((tag) => ['--tag', tag]),
    root,
  ];
  if (!quiet) console.log(`\n> ${tool} ${args.join(' ')}`);
  capture(tool, args, { quiet });
  // The image these tags named before, now untagged, would stay behind at each rebuild
  // (unless tagged otherwise too: rmi without --force leaves it).
  if (previous && previous !== imageId(tool, tags[0])) spawnSync(tool, ['rmi', previous], { stdio: 'ignore' });
  return { tool, tags, size: imageSize(tool, tags[0]) };
}

module.exports = { TAGS, BINARY, containerTool, buildImage, imageSize };

if (require.main === module) {
  const tool = containerTool();
  if (!tool) {
    console.error(`npm run image: neither podman nor buildah is installed; ${INSTALL}`);
    process.exit(1);
  }
  run(process.execPath, [at('scripts', 'setup.js'), 'image']);
  try {
    const { tags, size } = buildImage({ tool });
    console.log(`\nbuilt ${tags.join(' and ')} with ${tool}: ${size.text}`);
  } catch (err) {
    console.error(`npm run image: ${err.message}`);
    process.exit(1);
  }
}
