// __test__/helpers.js: WebSocket clients that record what they receive, raw sockets that
// misbehave on purpose, servers of both transports, the binary, and HTTP helpers.
const assert = require('node:assert/strict');
const { spawn, execFile } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const net = require('node:net');
const http = require('node:http');
const WebSocket = require('ws');
const { WebSocketServer } = WebSocket;

const WAIT_MS = 3000;

/** A `ws` client that keeps every message it gets, so none is missed between awaits. */
class TestClient {
  constructor(url, options, protocols) {
    this.inbox = [];
    this.waiters = [];
    if (url === null) {
      this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
      return;
    }
    this.ws = protocols ? new WebSocket(url, protocols, options) : new WebSocket(url, options);
    this.ws.on('message', (data, isBinary) => {
      const message = { data, isBinary, text: isBinary ? null : data.toString('utf8') };
      message.json = isBinary ? null : safeParse(message.text);
      this.inbox.push(message);
      this.waiters = this.waiters.filter((w) => !w.check());
    });
    this.closed = new Promise((resolve) => {
      this.ws.on('close', (code, reason) => {
        this.closeEvent = { code, reason: reason.toString() };
        resolve(this.closeEvent);
        // Nothing more can come: a waiter still waiting fails now, saying why.
        for (const waiter of this.waiters.splice(0)) waiter.closed();
      });
    });
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', resolve);
      this.ws.once('error', reject);
    });
    // Refused clients never open; only a test that awaits `opened` should see why.
    this.opened.catch(() => {});
    this.ws.on('error', () => {});
  }

  /** Takes the first message matching `match` (described as `what` if it times out), waiting for it if needed. */
  next(match = () => true, timeoutMs = WAIT_MS, what = 'matching') {
    return new Promise((resolve, reject) => {
      const inbox = () => JSON.stringify(this.inbox.map((m) => m.text ?? `<${m.data.length} binary bytes>`));
      const waiter = {
        check: () => {
          const index = this.inbox.findIndex(match);
          if (index === -1) return false;
          clearTimeout(timer);
          resolve(this.inbox.splice(index, 1)[0]);
          return true;
        },
        closed: () => {
          clearTimeout(timer);
          reject(new Error(`no ${what} message before the connection closed (${JSON.stringify(this.closeEvent)}); inbox: ${inbox()}`));
        },
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`no ${what} message within ${timeoutMs} ms; inbox: ${inbox()}`));
      }, timeoutMs);
      if (waiter.check()) return;
      if (this.closeEvent) waiter.closed();
      else this.waiters.push(waiter);
    });
  }

  /** Takes the next message of this `type`. */
  nextOfType(type, timeoutMs) {
    return this.next((m) => m.json?.type === type, timeoutMs, JSON.stringify(type));
  }

  /** Connects and takes the server's welcome; resolves to this client. */
  async joined() {
    await this.opened;
    this.welcome = (await this.nextOfType('client_connected')).json;
    return this;
  }

  send(data, options) {
    this.ws.send(data, options);
  }

  /** Resolves with the close event, failing after `timeoutMs`. */
  async closedWithin(timeoutMs = WAIT_MS) {
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`not closed within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      return await Promise.race([this.closed, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  close() {
    this.ws.close();
    return this.closed;
  }
}

/**
 * A member over Server-Sent Events, as a browser behind a proxy that refuses upgrades is:
 * streams `<path>/events` (node:http, one connection of its own: fetch would open a spare
 * one after an abort, which keeps servers from closing) and parses it; `send` POSTs to the
 * welcome's send URL. Keeps every event, with TestClient's `next`, `nextOfType` and
 * `closed` (the `close` event's code and reason, or 1006 when the stream just ended).
 */
class EventStreamClient extends TestClient {
  constructor(url, { headers = {}, ca } = {}) {
    super(null);
    this.url = url;
    // With `ca`, over HTTPS, trusting that authority.
    this.ca = ca;
    this.opened = new Promise((resolve, reject) => {
      const transport = url.startsWith('https:') ? require('node:https') : http;
      this.request = transport.get(url, { agent: false, ca, headers: { accept: 'text/event-stream', ...headers } }, (response) => {
        this.status = response.statusCode;
        if (response.statusCode !== 200) {
          let body = '';
          response.on('data', (chunk) => (body += chunk));
          response.on('end', () => {
            this.refusal = safeParse(body);
            this.ended({ code: 1006, reason: `HTTP ${response.statusCode}` });
            reject(Object.assign(new Error(`event stream refused: ${response.statusCode} ${body}`), { status: response.statusCode, body: this.refusal }));
          });
          return;
        }
        this.headers = response.headers;
        resolve(response);
        this.read(response).catch(() => {}).finally(() => this.ended({ code: 1006, reason: '' }));
      });
      this.request.on('error', (err) => {
        this.ended({ code: 1006, reason: err.message });
        reject(err);
      });
    });
    this.opened.catch(() => {});
  }

  async read(body) {
    const decoder = new TextDecoder();
    let buffered = '';
    let event = { event: 'message', data: [] };
    for await (const chunk of body) {
      buffered += decoder.decode(chunk, { stream: true });
      let newline;
      while ((newline = buffered.indexOf('\n')) !== -1) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        if (line === '') {
          if (event.data.length) this.take(event);
          event = { event: 'message', data: [] };
        } else if (line.startsWith(':')) {
          this.pings = (this.pings ?? 0) + 1;
        } else {
          const colon = line.indexOf(':');
          const [field, value] = [line.slice(0, colon), line.slice(colon + 1).replace(/^ /, '')];
          if (field === 'data') event.data.push(value);
          else event[field] = value;
        }
      }
    }
  }

  take({ event, id, data }) {
    const text = data.join('\n');
    if (event === 'close') return this.ended(JSON.parse(text));
    const message = event === 'binary'
      ? { event, id, isBinary: true, data: Buffer.from(text, 'base64'), text: null, json: null }
      : { event, id, isBinary: false, text, json: safeParse(text) };
    if (event === 'welcome') this.sendTo = new URL(message.json.send.url, this.url).href;
    if (event === 'welcome') this.token = message.json.send.token;
    this.inbox.push(message);
    this.waiters = this.waiters.filter((w) => !w.check());
  }

  ended(closeEvent) {
    if (this.closeEvent) return;
    this.closeEvent = closeEvent;
    this.resolveClosed(closeEvent);
    for (const waiter of this.waiters.splice(0)) waiter.closed();
  }

  /** POSTs frames (one, or several as ndjson) as this member; resolves to `{ status, body }`. */
  async send(frames, { token = this.token, to = this.sendTo, contentType } = {}) {
    const list = Array.isArray(frames) ? frames : [frames];
    const text = list.map((frame) => (typeof frame === 'string' ? frame : JSON.stringify(frame))).join('\n');
    const type = contentType ?? (Array.isArray(frames) ? 'application/x-ndjson' : 'text/plain');
    const headers = { 'content-type': type, 'x-switchyard-send': token };
    if (this.ca) return postOverTls(to, headers, text, this.ca);
    const response = await fetch(to, { method: 'POST', headers, body: text });
    const body = await response.text();
    return { status: response.status, body: body ? JSON.parse(body) : null, length: response.headers.get('content-length') };
  }

  close() {
    this.request.destroy();
    return this.closed;
  }
}

/** A POST over HTTPS trusting `ca` (fetch takes no CA): `{ status, body, length }`. */
function postOverTls(url, headers, text, ca) {
  return new Promise((resolve, reject) => {
    const request = require('node:https').request(url, { method: 'POST', headers, ca, agent: false }, (response) => {
      let body = '';
      response.on('data', (chunk) => (body += chunk));
      response.on('end', () => resolve({ status: response.statusCode, body: body ? JSON.parse(body) : null, length: response.headers['content-length'] }));
    });
    request.on('error', reject).end(text);
  });
}

function safeParse(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

async function joinedClient(url, options) {
  return new TestClient(url, options).joined();
}

/** Asserts that no message other than those `ignore` accepts arrives within `ms`. */
async function assertQuiet(client, ms = 200, ignore = () => false) {
  await new Promise((resolve) => setTimeout(resolve, ms));
  const unexpected = client.inbox.filter((m) => !ignore(m));
  assert.deepEqual(unexpected.map((m) => m.text ?? `<binary ${m.data.length}>`), [], 'expected no messages');
}

/** Fetches `url` and reads its JSON answer: `{ status, body }`. */
async function fetchJson(url, init) {
  const response = await fetch(url, init);
  return { status: response.status, body: await response.json() };
}

function postJson(url, body = {}) {
  return fetchJson(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Retries `assertion` until it stops throwing, then returns what it returned; after
 * `timeoutMs` it throws the assertion's last error. For what the server does a little
 * after the event a test awaited, such as counting a closed connection.
 */
async function eventually(assertion, timeoutMs = WAIT_MS) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await assertion();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await sleep(10);
    }
  }
}

/** Waits until the HTTP server at `base` answers `/health`. */
async function untilHealthy(base, logs = () => '', withinMs = 5000) {
  await eventually(async () => assert.ok(await fetch(`${base}/health`).then((r) => r.ok, () => false), `the server did not start:\n${logs()}`), withinMs);
}

/**
 * Compiles `files` (name → source) with `tsc --strict` against the package's own typings
 * (`__test__/typescript/tsconfig.json`), each call in a folder of its own so that test
 * files running at once do not clash. Resolves to `{ ok, output }`.
 */
async function typecheck(files) {
  const base = path.join(__dirname, 'typescript');
  const dir = fs.mkdtempSync(path.join(base, 'generated-'));
  try {
    fs.writeFileSync(path.join(dir, 'tsconfig.json'), JSON.stringify({ extends: '../tsconfig.json', include: ['*.mts'] }));
    for (const [name, source] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), source);
    const root = path.resolve(__dirname, '..');
    const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');
    return await new Promise((resolve) => {
      execFile(process.execPath, [tsc, '-p', dir], { cwd: root, timeout: 120000 }, (err, stdout, stderr) =>
        resolve({ ok: !err, output: `${stdout}${stderr}` }),
      );
    });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

module.exports = { TestClient, EventStreamClient, joinedClient, assertQuiet, fetchJson, postJson, sleep, eventually, untilHealthy, typecheck };

/** An upgrade request, as raw text, with the headers a test chooses to break. */
function upgradeRequest(path, { key = 'dGhlIHNhbXBsZSBub25jZQ==', version = '13', headers = {} } = {}) {
  const lines = [`GET ${path} HTTP/1.1`, 'Host: 127.0.0.1', 'Upgrade: websocket', 'Connection: Upgrade'];
  if (version !== null) lines.push(`Sec-WebSocket-Version: ${version}`);
  if (key !== null) lines.push(`Sec-WebSocket-Key: ${key}`);
  for (const [name, value] of Object.entries(headers)) lines.push(`${name}: ${value}`);
  return `${lines.join('\r\n')}\r\n\r\n`;
}

/** A client frame: masked unless told otherwise, announcing `length` if given (to lie). */
function clientFrame(opcode, payload = Buffer.alloc(0), { mask = true, fin = true, length } = {}) {
  const data = Buffer.from(payload);
  const size = length ?? data.length;
  const head = [(fin ? 0x80 : 0) | opcode];
  let extended = Buffer.alloc(0);
  if (size < 126) head.push((mask ? 0x80 : 0) | size);
  else if (size <= 0xffff) {
    head.push((mask ? 0x80 : 0) | 126);
    extended = Buffer.alloc(2);
    extended.writeUInt16BE(size);
  } else {
    head.push((mask ? 0x80 : 0) | 127);
    extended = Buffer.alloc(8);
    extended.writeBigUInt64BE(BigInt(size));
  }
  const key = Buffer.from([0x11, 0x22, 0x33, 0x44]);
  const body = mask ? Buffer.from(data.map((b, i) => b ^ key[i % 4])) : data;
  return Buffer.concat([Buffer.from(head), extended, mask ? key : Buffer.alloc(0), body]);
}

/**
 * A TCP client that speaks just enough WebSocket to misbehave on purpose: it writes
 * whatever bytes a test gives it and parses what the server answers (an HTTP head, then
 * unmasked frames).
 */
class RawClient {
  constructor(port) {
    this.socket = net.connect(port, '127.0.0.1');
    this.received = Buffer.alloc(0);
    this.waiters = [];
    this.ended = new Promise((resolve) => this.socket.on('close', resolve));
    this.socket.on('data', (chunk) => {
      this.received = Buffer.concat([this.received, chunk]);
      this.waiters = this.waiters.filter((w) => !w());
    });
    this.socket.on('error', () => {});
    this.connected = new Promise((resolve) => this.socket.once('connect', resolve));
  }

  write(bytes) {
    this.socket.write(bytes);
  }

  /** Waits until `check()` is true of what arrived. */
  until(check, what, timeoutMs = WAIT_MS) {
    return new Promise((resolve, reject) => {
      const waiter = () => {
        if (!check()) return false;
        clearTimeout(timer);
        resolve();
        return true;
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`${what} did not arrive within ${timeoutMs} ms; got ${JSON.stringify(this.received.toString('latin1').slice(0, 300))}`));
      }, timeoutMs);
      if (!waiter()) this.waiters.push(waiter);
    });
  }

  /** The HTTP response head, once it is complete. */
  async responseHead() {
    await this.until(() => this.received.includes('\r\n\r\n'), 'an HTTP response');
    return this.received.subarray(0, this.received.indexOf('\r\n\r\n') + 4).toString('latin1');
  }

  /** The frames after the HTTP head: `{ opcode, payload, compressed }` (RSV1), with `code` and `reason` for a close. */
  frames() {
    let at = this.received.indexOf('\r\n\r\n') + 4;
    const frames = [];
    while (at + 2 <= this.received.length) {
      const opcode = this.received[at] & 0x0f;
      const compressed = (this.received[at] & 0x40) !== 0;
      let length = this.received[at + 1] & 0x7f;
      let start = at + 2;
      const extendedBytes = length === 126 ? 2 : length === 127 ? 8 : 0;
      // A frame header can arrive split across reads: wait for the rest of it.
      if (start + extendedBytes > this.received.length) break;
      if (length === 126) {
        length = this.received.readUInt16BE(at + 2);
        start += 2;
      } else if (length === 127) {
        length = Number(this.received.readBigUInt64BE(at + 2));
        start += 8;
      }
      if (start + length > this.received.length) break;
      const payload = this.received.subarray(start, start + length);
      const frame = { opcode, payload, compressed };
      if (opcode === 8 && payload.length >= 2) Object.assign(frame, { code: payload.readUInt16BE(0), reason: payload.subarray(2).toString() });
      frames.push(frame);
      at = start + length;
    }
    return frames;
  }

  /** Waits for the server's close frame and returns it. */
  async closeFrame(timeoutMs) {
    await this.until(() => this.frames().some((f) => f.opcode === 8), 'a close frame', timeoutMs);
    return this.frames().find((f) => f.opcode === 8);
  }
}

/**
 * Floods a session from `sender` while `slow` (a raw client that upgraded and then
 * stopped reading) is in it too, and measures how `fast` keeps up: the sender stays at
 * most `window` messages ahead of what `fast` has received, as a full-speed reader would
 * let it, and the run fails as soon as `fast` waits longer than `maxGapMs` for its next
 * message. Resolves to the longest wait seen. No total time is asserted: a loaded machine
 * is slower, but a fast client held up behind a slow one waits without end.
 */
async function floodBesideSlowReader({ sender, fast, count = 20_000, window = 200, maxGapMs = 2000 }) {
  const filler = 'x'.repeat(1000);
  let received = 0;
  let lastArrival = performance.now();
  let longestGap = 0;
  let caughtUp = null;
  fast.ws.on('message', (data) => {
    if (!data.toString('latin1', 0, 16).startsWith('{"type":"flood"')) return;
    const now = performance.now();
    longestGap = Math.max(longestGap, now - lastArrival);
    lastArrival = now;
    received += 1;
    if (caughtUp && received >= caughtUp.at) caughtUp.resolve();
  });
  let sent = 0;
  const progress = (at) =>
    new Promise((resolve, reject) => {
      // The watchdog runs on this thread too: how late its own ticks come says whether the
      // wait was this process's (its event loop held up) or the server's.
      let lastTick = performance.now();
      let latestTick = 0;
      const watchdog = setInterval(() => {
        const now = performance.now();
        latestTick = Math.max(latestTick, now - lastTick);
        lastTick = now;
        const waited = now - lastArrival;
        if (waited > maxGapMs) {
          clearInterval(watchdog);
          const closed = fast.closeEvent ? `, the fast client closed with ${JSON.stringify(fast.closeEvent)}` : '';
          const state = `sent ${sent}, the sender's socket holding ${sender.ws.bufferedAmount} bytes${closed}; this event loop's longest tick ${Math.round(latestTick)} ms`;
          reject(new Error(`the fast client waited ${Math.round(waited)} ms for a message, at ${received} of ${count}; ${state}`));
        }
      }, 50);
      caughtUp = { at, resolve: () => { clearInterval(watchdog); caughtUp = null; resolve(); } };
      if (received >= at) caughtUp.resolve();
    });
  lastArrival = performance.now();
  for (let i = 0; i < count; i++) {
    sender.send(`{"type":"flood","i":${i},"pad":"${filler}"}`);
    sent = i + 1;
    if (i + 1 - received > window) await progress(i + 1 - window / 2);
  }
  await progress(count);
  return { received, longestGap };
}

module.exports.floodBesideSlowReader = floodBesideSlowReader;
module.exports.upgradeRequest = upgradeRequest;
module.exports.clientFrame = clientFrame;
module.exports.RawClient = RawClient;

/**
 * Whether the addon these tests drive has the native transport: the WebAssembly build
 * (`npm test` runs the bridge-mode tests again with NAPI_RS_FORCE_WASI=true) and Windows
 * have none.
 */
const hasNativeTransport = require('../binding.js').__napiBindingTarget !== 'wasm32-wasi' && process.platform !== 'win32';
/** The transports a test can use with this addon. */
const transports = hasNativeTransport ? ['native', 'bridge'] : ['bridge'];

module.exports.hasNativeTransport = hasNativeTransport;
module.exports.transports = transports;

/**
 * An HTTP server with both transports on one manager: native (attach) at
 * `/session/:sessionId` and, sessionless, `/live`; bridge (ws) at `/bridge/:sessionId`
 * and `/bridge-live`; the bridge alone where there is no native transport. Clients name themselves
 * with `x-user`, `x-org` and `x-client` headers, which become their identity (through
 * `authenticate` in native mode, through `handleUpgrade`'s options in bridge mode) unless
 * `attachOptions` says otherwise.
 */
async function startMixedServer(config, attachOptions) {
  const { RelaySessionManager } = require('..');
  const manager = new RelaySessionManager(config);
  manager.start();
  const server = http.createServer((req, res) => res.end('plain http'));
  const identify = (request) => {
    const header = (name) => request.headers[name] ?? undefined;
    return { userId: header('x-user'), organizationId: header('x-org'), clientId: header('x-client') };
  };
  const options = attachOptions ?? { authenticate: identify };
  if (hasNativeTransport) {
    manager.attach(server, options);
    manager.attach(server, { ...options, path: '/live' });
  }
  const wss = new WebSocketServer({ noServer: true });
  server.on('upgrade', (request, socket, head) => {
    const match = /^\/bridge(?:\/([^/?]+)|-live)/.exec(request.url);
    if (match) wss.handleUpgrade(request, socket, head, (ws) => manager.handleUpgrade(match[1] ?? null, ws, request, identify(request)));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = server.address().port;
  const base = `ws://127.0.0.1:${port}`;
  return {
    manager,
    port,
    native: (id) => `${base}/session/${id}`,
    bridge: (id) => `${base}/bridge/${id}`,
    /** A sessionless URL of either transport. */
    sessionless: (transport) => (transport === 'native' ? `${base}/live` : `${base}/bridge-live`),
    /** A session URL of either transport. */
    url: (transport, id) => (transport === 'native' ? `${base}/session/${id}` : `${base}/bridge/${id}`),
    async close() {
      // Short: a test may leave a client that never answers the close handshake.
      await manager.stop({ timeoutMs: 200 });
      wss.close();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

module.exports.startMixedServer = startMixedServer;

/** The binaries the tests started; `stopBinaries` kills what is left of them. */
const binaries = new Set();

async function freePort() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Starts the `switchyard` binary (or `command`, such as the npm bin) and waits until it answers. */
async function startBinary({ args = [], env = {}, command, startupMs, ca } = {}) {
  const [program, ...rest] = command ?? [require('../bin/switchyard.js').locateBinary()];
  const port = await freePort();
  const child = spawn(program, [...rest, '--port', String(port), '--host', '127.0.0.1', ...args], {
    env: { ...process.env, RUST_LOG: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  binaries.add(child);
  let logs = '';
  child.stderr.on('data', (chunk) => (logs += chunk));
  child.exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  // With `ca`, the server serves TLS with a certificate that authority signed.
  const [http, ws] = ca ? ['https', 'wss'] : ['http', 'ws'];
  const base = `${http}://127.0.0.1:${port}`;
  if (ca) {
    const healthy = () => httpsGet(`${base}/health`, ca).then((r) => r.status === 200, () => false);
    await eventually(async () => assert.ok(await healthy(), `the server did not start:\n${logs}`), startupMs ?? 5000);
  } else {
    await untilHealthy(base, () => logs, startupMs);
  }
  return { child, port, base, ws: `${ws}://127.0.0.1:${port}`, logs: () => logs };
}

function stopBinaries() {
  for (const child of binaries) child.kill('SIGKILL');
}

module.exports.binaries = binaries;
module.exports.freePort = freePort;
module.exports.startBinary = startBinary;
module.exports.stopBinaries = stopBinaries;

/** What the relay answers to a text frame that is not a JSON object with a string `type`. */
module.exports.INVALID_MESSAGE = 'Invalid message format: expected a JSON object with a string "type", such as {"type":"chat","text":"hello"}';

/**
 * Parses Prometheus text exposition, failing on any line that does not follow it: each
 * sample by its name and labels as written (`name{transport="native"}`), with the type
 * its family declared.
 */
module.exports.parsePrometheus = function parsePrometheus(text) {
  const samples = {};
  const types = {};
  for (const line of text.split('\n').filter(Boolean)) {
    if (/^# HELP [a-zA-Z_:][a-zA-Z0-9_:]* .+$/.test(line)) continue;
    const declared = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/.exec(line);
    if (declared) {
      types[declared[1]] = declared[2];
      continue;
    }
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="[^"]*",?)*\})? (-?[0-9.e+-]+|NaN|\+Inf|-Inf)$/.exec(line);
    assert.ok(match, `not a Prometheus line: ${JSON.stringify(line)}`);
    const histogram = match[1].replace(/_(bucket|sum|count)$/, '');
    const type = types[match[1]] ?? (types[histogram] === 'histogram' ? 'histogram' : undefined);
    assert.ok(type, `${match[1]} has a # TYPE line before it`);
    samples[match[1] + (match[2] ?? '')] = { type, value: Number(match[3]) };
  }
  return samples;
};

/**
 * Sends `times` messages from `from` to `to`, each after the last arrived, so that each is
 * a write of its own: the relay times one write in 16 per connection (its latency sample).
 */
/** `a` and `b` send `count` messages to each other at once; each side gets the other's in order. */
module.exports.relaysInOrderBothWays = async function relaysInOrderBothWays(a, b, count = 200) {
  for (let n = 0; n < count; n++) {
    a.send(JSON.stringify({ type: 'n', n }));
    b.send(JSON.stringify({ type: 'm', n }));
  }
  for (let n = 0; n < count; n++) {
    assert.equal((await b.nextOfType('n')).json.n, n);
    assert.equal((await a.nextOfType('m')).json.n, n);
  }
};

module.exports.oneByOne = async function oneByOne(from, to, times = 16) {
  for (let i = 0; i < times; i++) {
    from.send(JSON.stringify({ type: 'one-by-one', i }));
    await to.next((m) => m.json?.type === 'one-by-one' && m.json.i === i);
  }
};

/** Where `redis-server` is, if it is installed. */
function redisServerPath() {
  const dirs = (process.env.PATH ?? '').split(path.delimiter).concat(['/usr/bin', '/usr/local/bin', '/usr/sbin']);
  return dirs.map((dir) => path.join(dir, 'redis-server')).find((file) => fs.existsSync(file));
}

/** Whether something answers on 127.0.0.1:`port`. */
function listening(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.end(() => resolve(true)));
    socket.on('error', () => resolve(false));
  });
}

/** Runs `redis-cli` against 127.0.0.1:`port`, and answers what it printed; throws on an error reply. */
function redisCli(port, ...args) {
  const printed = require('node:child_process').execFileSync('redis-cli', ['-p', String(port), ...args], { encoding: 'utf8' });
  if (/^(ERR|\(error\))/.test(printed)) throw new Error(`redis-cli -p ${port} ${args.join(' ')}: ${printed}`);
  return printed;
}

/** Starts one `redis-server` on `port` and waits until it answers. It saves nothing, but a
 * replica writes what its master sends, and every process reads a dump in its directory
 * when it starts: so each has a directory of its own. */
async function startRedisProcess(port, args = []) {
  const dir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), `switchyard-redis-${port}-`));
  const child = spawn(redisServerPath(), ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, ...args], { stdio: 'ignore' });
  child.exited = new Promise((resolve) => child.on('exit', resolve));
  await eventually(async () => assert.ok(await listening(port), `redis-server did not start on ${port}`), 5000);
  return child;
}

/**
 * A `redis-server` of the test's own on a free port: `url` for the nodes,
 * `client()` (node-redis) to look at what they keep, `cli(...args)` on each of its
 * processes (one here), `nodes` (`{ port, child }`), `urlAs(user, password)`; `kill()`
 * SIGKILLs it and `start()` starts it again on the same port.
 */
async function startRedis() {
  if (!redisServerPath()) throw new Error('redis-server is not installed (apt-get install redis-server)');
  const port = await freePort();
  const node = { port, child: null };
  const redis = {
    url: `redis://127.0.0.1:${port}`,
    nodes: [node],
    urlAs: (user, password) => `redis://${user}:${password}@127.0.0.1:${port}`,
    cli: (...args) => [redisCli(port, ...args)],
    client: async () => {
      const client = require('redis').createClient({ url: redis.url });
      await client.connect();
      return client;
    },
    start: async () => {
      node.child = await startRedisProcess(port);
    },
    kill: async () => {
      node.child.kill('SIGKILL');
      await node.child.exited;
    },
  };
  await redis.start();
  return redis;
}

/**
 * A Redis Cluster of the test's own, shaped as `startRedis`'s server (its `url` is
 * `redis+cluster://` and its nodes; `kill()` and `start()` act on every process), of
 * `masters` masters each with `replicas` replicas (`seeds`: a `redis://` URL of each), joined with `redis-cli --cluster
 * create` (one master alone holds every slot itself). A node that stops answering for
 * `nodeTimeoutMs` is failed over to its replica. `masterOf(key)` is the port of the master
 * serving `key`'s slot now; `moveSlot(key)` moves it to another; `killNode(port)` SIGKILLs
 * one process.
 */
async function startRedisCluster({ masters = 3, replicas = 1, nodeTimeoutMs = 2000 } = {}) {
  if (!redisServerPath()) throw new Error('redis-server is not installed (apt-get install redis-server)');
  const dir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'switchyard-cluster-'));
  const nodes = [];
  // Each node also listens on its port + 10000, the cluster bus: both must be free.
  const taken = (port) => nodes.some((node) => [node.port, node.port + 10000].some((used) => used === port || used === port + 10000));
  while (nodes.length < masters * (1 + replicas)) {
    const port = await freePort();
    if (port + 10000 <= 65535 && !taken(port) && !(await listening(port + 10000))) nodes.push({ port, child: null });
  }
  const addresses = nodes.map(({ port }) => `127.0.0.1:${port}`);
  const startNode = async (node) => {
    const config = ['--cluster-enabled', 'yes', '--cluster-config-file', path.join(dir, `nodes-${node.port}.conf`), '--cluster-node-timeout', String(nodeTimeoutMs), '--repl-diskless-sync-delay', '0'];
    node.child = await startRedisProcess(node.port, config);
  };
  const alive = (node) => node.child.exitCode === null && node.child.signalCode === null;
  // Every node sees the cluster whole: its slots served, each master holding some and
  // every other node a replica.
  const healthy = () =>
    eventually(() => {
      for (const node of nodes.filter(alive)) {
        const info = redisCli(node.port, 'CLUSTER', 'INFO');
        assert.match(info, /cluster_state:ok/, `cluster node ${node.port}: ${info}`);
        assert.match(info, new RegExp(`cluster_known_nodes:${nodes.length}\\b`), `cluster node ${node.port}: ${info}`);
        const view = redisCli(node.port, 'CLUSTER', 'NODES').trim().split('\n').map((line) => line.split(' '));
        assert.equal(view.filter(([, , flags, , , , , , ...slots]) => flags.includes('master') && slots.length > 0).length, masters, `cluster node ${node.port}: ${view.join('\n')}`);
        assert.equal(view.filter(([, , flags]) => flags.includes('slave')).length, masters * replicas, `cluster node ${node.port}: ${view.join('\n')}`);
        // A replica that has not yet copied its master's data would never take over.
        const replication = redisCli(node.port, 'INFO', 'replication');
        if (/role:slave/.test(replication)) assert.match(replication, /master_link_status:up/, `replica ${node.port}: ${replication}`);
      }
    }, 30000);
  const cluster = {
    url: `redis+cluster://${addresses.join(',')}`,
    seeds: addresses.map((address) => `redis://${address}`),
    nodes,
    urlAs: (user, password) => `redis+cluster://${user}:${password}@${addresses.join(',')}`,
    cli: (...args) => nodes.filter(alive).map((node) => redisCli(node.port, ...args)),
    client: async () => {
      const client = require('redis').createCluster({ rootNodes: nodes.map(({ port }) => ({ url: `redis://127.0.0.1:${port}` })) });
      await client.connect();
      return client;
    },
    start: async () => {
      await Promise.all(nodes.filter((node) => !node.child || !alive(node)).map(startNode));
      await healthy();
    },
    kill: async () => {
      for (const node of nodes) node.child.kill('SIGKILL');
      await Promise.all(nodes.map((node) => node.child.exited));
    },
    killNode: async (port) => {
      const node = nodes.find((n) => n.port === port);
      node.child.kill('SIGKILL');
      await node.child.exited;
    },
    /** Moves `key`'s slot, with its keys, from the master serving it to another, as
     * `redis-cli --cluster reshard` does: importing and migrating, the keys a hundred at a
     * time, then every master told the new owner. Answers the new owner's port. */
    moveSlot: (key) => {
      const from = cluster.masterOf(key);
      const serving = redisCli(from, 'CLUSTER', 'NODES').trim().split('\n').map((line) => line.split(' '));
      const masters = serving.filter(([, , flags, , , , , , ...slots]) => flags.includes('master') && !flags.includes('fail') && slots.length > 0);
      const portOf = (address) => Number(address.split('@')[0].split(':')[1]);
      const [toId, toAddress] = masters.find(([, address]) => portOf(address) !== from);
      const to = portOf(toAddress);
      const slot = redisCli(from, 'CLUSTER', 'KEYSLOT', key).trim();
      const fromId = redisCli(from, 'CLUSTER', 'MYID').trim();
      redisCli(to, 'CLUSTER', 'SETSLOT', slot, 'IMPORTING', fromId);
      redisCli(from, 'CLUSTER', 'SETSLOT', slot, 'MIGRATING', toId);
      for (;;) {
        const keys = redisCli(from, 'CLUSTER', 'GETKEYSINSLOT', slot, '100').trim().split('\n').filter(Boolean);
        if (keys.length === 0) break;
        redisCli(from, 'MIGRATE', '127.0.0.1', String(to), '', '0', '5000', 'KEYS', ...keys);
      }
      // The new owner first (it takes a new config epoch), then the old, then the rest.
      const others = masters.map(([, address]) => portOf(address)).filter((port) => port !== to && port !== from);
      for (const port of [to, from, ...others]) redisCli(port, 'CLUSTER', 'SETSLOT', slot, 'NODE', toId);
      return to;
    },
    masterOf: (key) => {
      const live = nodes.find(alive);
      const slot = Number(redisCli(live.port, 'CLUSTER', 'KEYSLOT', key));
      for (const line of redisCli(live.port, 'CLUSTER', 'NODES').trim().split('\n')) {
        const [, address, flags, , , , , , ...ranges] = line.split(' ');
        if (!flags.includes('master') || flags.includes('fail')) continue;
        const holds = ranges.some((range) => {
          const [from, to = from] = range.split('-').map(Number);
          return slot >= from && slot <= to;
        });
        if (holds) return Number(address.split('@')[0].split(':')[1]);
      }
      throw new Error(`no live master serves ${key}`);
    },
  };
  try {
    await Promise.all(nodes.map(startNode));
    if (masters === 1 && replicas === 0) {
      redisCli(nodes[0].port, 'CLUSTER', 'ADDSLOTSRANGE', '0', '16383');
    } else {
      const created = require('node:child_process').spawnSync('redis-cli', ['--cluster', 'create', ...addresses, '--cluster-replicas', String(replicas), '--cluster-yes'], { encoding: 'utf8' });
      assert.equal(created.status, 0, `redis-cli --cluster create failed:\n${created.stdout}${created.stderr}`);
    }
    await healthy();
  } catch (error) {
    for (const node of nodes) node.child?.kill('SIGKILL');
    throw error;
  }
  return cluster;
}

module.exports.redisServerPath = redisServerPath;
module.exports.startRedis = startRedis;
module.exports.startRedisCluster = startRedisCluster;

/**
 * A certificate authority of the test's own and certificates it signs for 127.0.0.1 and
 * localhost, made with openssl's CLI in `dir`. `ca` is the authority's PEM (what a client
 * trusts), `caSpki` the base64 SHA-256 of its public key (what Chromium's
 * --ignore-certificate-errors-spki-list takes); `issue(name)` writes a new certificate
 * chain (the leaf, then the authority) and key: `{ cert, key, serial }`, paths and the
 * leaf's serial number as Node's `getPeerCertificate()` gives it.
 */
function certificateAuthority(dir) {
  const { execFileSync } = require('node:child_process');
  const crypto = require('node:crypto');
  const openssl = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  fs.mkdirSync(dir, { recursive: true });
  openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=switchyard test CA');
  fs.writeFileSync(path.join(dir, 'san.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
  const ca = fs.readFileSync(path.join(dir, 'ca.crt'), 'utf8');
  const caSpki = crypto.createHash('sha256').update(new crypto.X509Certificate(ca).publicKey.export({ type: 'spki', format: 'der' })).digest('base64');
  let issued = 0;
  function issue(name = `server-${++issued}`) {
    openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
    openssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.leaf`, '-days', '2', '-extfile', 'san.ext');
    const leaf = fs.readFileSync(path.join(dir, `${name}.leaf`), 'utf8');
    fs.writeFileSync(path.join(dir, `${name}.crt`), leaf + ca);
    return { cert: path.join(dir, `${name}.crt`), key: path.join(dir, `${name}.key`), serial: new crypto.X509Certificate(leaf).serialNumber };
  }
  return { ca, caSpki, issue };
}

/** The serial number of the certificate a TLS server at `port` presents now. */
function servedSerial(port, ca) {
  const tls = require('node:tls');
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ca, servername: 'localhost' }, () => {
      resolve(socket.getPeerCertificate().serialNumber);
      socket.end();
    });
    socket.on('error', reject);
  });
}

/** GET over HTTPS, trusting `ca`: `{ status, body }` (the body parsed when it is JSON). */
function httpsGet(url, ca) {
  const https = require('node:https');
  return new Promise((resolve, reject) => {
    https
      .get(url, { ca, agent: false }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk) => (text += chunk));
        res.on('end', () => resolve({ status: res.statusCode, body: safeParse(text) ?? text }));
      })
      .on('error', reject);
  });
}

module.exports.certificateAuthority = certificateAuthority;
module.exports.postOverTls = postOverTls;
module.exports.servedSerial = servedSerial;
module.exports.httpsGet = httpsGet;
