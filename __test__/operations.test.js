// Operating the standalone server and listen(): TLS of their own (with `ws` trusting a CA
// the test makes, and a certificate reloaded under open connections), the config file,
// the `config` and `token` subcommands, readiness, and draining with --shutdown-grace.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFile } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const {
  TestClient,
  EventStreamClient,
  joinedClient,
  fetchJson,
  postJson,
  eventually,
  startBinary,
  stopBinaries,
  freePort,
  certificateAuthority,
  servedSerial,
  httpsGet,
  postOverTls,
  hasNativeTransport,
} = require('./helpers');
const { RelaySessionManager } = require('..');
const { locateBinary } = require('../bin/switchyard.js');

const binary = locateBinary();
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'switchyard-operations-'));
let authority;

before(() => {
  authority = certificateAuthority(path.join(scratch, 'ca'));
});
after(() => {
  stopBinaries();
  fs.rmSync(scratch, { recursive: true, force: true });
});

/** Runs the binary to the end: `{ code, stdout, stderr }`. */
function runBinary(args, env = {}) {
  return new Promise((resolve) => {
    execFile(binary, args, { env: { ...process.env, ...env }, timeout: 60000 }, (err, stdout, stderr) =>
      resolve({ code: err ? err.code : 0, stdout, stderr }),
    );
  });
}

/** A file in the test's scratch folder, with `text` in it. */
function scratchFile(name, text) {
  const file = path.join(scratch, name);
  fs.writeFileSync(file, text);
  return file;
}

/** Copies a certificate and key to `<name>.crt` and `<name>.key`, the paths a server is given. */
function placePair(pair, name) {
  const placed = { cert: path.join(scratch, `${name}.crt`), key: path.join(scratch, `${name}.key`) };
  fs.copyFileSync(pair.cert, placed.cert);
  fs.copyFileSync(pair.key, placed.key);
  return placed;
}

/** A plain-HTTP request to a port: `{ status, body }`, or the error it met. */
function plainGet(port, pathname) {
  return new Promise((resolve) => {
    http
      .get({ host: '127.0.0.1', port, path: pathname, agent: false }, (res) => {
        let body = '';
        res.on('data', (chunk) => (body += chunk));
        res.on('end', () => resolve({ status: res.statusCode, body }));
      })
      .on('error', (error) => resolve({ error: error.message }));
  });
}

/** Creates a session on a TLS binary (the admin API over HTTPS, from loopback): its status. */
async function createSessionOverTls(server, sessionId) {
  return (await postOverTls(`${server.base}/v1/sessions`, { 'content-type': 'application/json' }, JSON.stringify({ sessionId }), authority.ca)).status;
}

/** An event-stream member and a WebSocket member of `session` relaying both ways over TLS. */
async function assertStreamsOverTls(base, session, websocketUrl) {
  const stream = new EventStreamClient(`${base}/session/${session}/events`, { ca: authority.ca });
  await stream.opened;
  await stream.nextOfType('client_connected');
  const member = await joinedClient(websocketUrl, { ca: authority.ca });
  member.send(JSON.stringify({ type: 'chat', text: 'down the stream' }));
  assert.equal((await stream.next((m) => m.json?.type === 'chat')).json.text, 'down the stream');
  assert.equal((await stream.send({ type: 'chat', text: 'up by POST' })).status, 202);
  assert.equal((await member.next((m) => m.json?.type === 'chat')).json.text, 'up by POST');
  await Promise.all([stream.close(), member.close()]);
}

async function assertRelays(from, to, text) {
  from.send(JSON.stringify({ type: 'chat', text }));
  assert.equal((await to.next((m) => m.json?.type === 'chat' && m.json.text === text)).json.text, text);
}

describe('switchyard binary: TLS', () => {
  it('serves wss:// and https:// with the certificate it is given, and answers plain HTTP 400 without harm', async () => {
    const pair = authority.issue();
    const server = await startBinary({ args: ['--tls-cert', pair.cert, '--tls-key', pair.key], ca: authority.ca });
    assert.equal(await servedSerial(server.port, authority.ca), pair.serial);
    assert.deepEqual((await httpsGet(`${server.base}/ready`, authority.ca)).body, { ready: true });
    assert.equal(await createSessionOverTls(server, 'tls'), 201);
    const a = await joinedClient(`${server.ws}/session/tls`, { ca: authority.ca });
    const b = await joinedClient(`${server.ws}/session/tls`, { ca: authority.ca });
    await assertRelays(a, b, 'over TLS');
    await assertRelays(b, a, 'and back');
    await Promise.all([a.close(), b.close()]);
    await assertStreamsOverTls(server.base, 'tls', `${server.ws}/session/tls`);

    const plain = await plainGet(server.port, '/health');
    assert.equal(plain.status, 400);
    assert.match(plain.body, /speaks TLS: connect with wss:\/\/ or https:\/\//);
    const refused = new TestClient(`ws://127.0.0.1:${server.port}/session/tls`);
    await assert.rejects(refused.opened, /Unexpected server response: 400/);
    // A client that trusts no such authority is refused by its own side.
    const untrusting = new TestClient(`${server.ws}/session/tls`);
    await assert.rejects(untrusting.opened, /certificate/);

    const c = await joinedClient(`${server.ws}/session/tls`, { ca: authority.ca });
    assert.equal(c.welcome.sessionId, 'tls', 'joined after the refusals');
    await c.close();
  });

  it('delivers the last of a burst that filled a paused reader\'s socket, with nothing sent after it', async () => {
    const pair = authority.issue();
    const server = await startBinary({ args: ['--tls-cert', pair.cert, '--tls-key', pair.key, '--max-queued-bytes', String(64 << 20)], ca: authority.ca });
    assert.equal(await createSessionOverTls(server, 'burst'), 201);
    const sender = await joinedClient(`${server.ws}/session/burst`, { ca: authority.ca });
    const reader = await joinedClient(`${server.ws}/session/burst`, { ca: authority.ca });
    reader.ws._socket.pause();
    const pad = 'x'.repeat(1000);
    const count = 8000;
    for (let i = 1; i <= count; i++) sender.send(`{"type":"burst","i":${i},"pad":"${pad}"}`);
    // Every one of them read by the server (and queued for the reader) before it reads.
    await eventually(async () => assert.ok((await httpsGet(`${server.base}/stats`, authority.ca)).body.messages.received >= count));
    reader.ws._socket.resume();
    assert.equal((await reader.next((m) => m.json?.i === count, 20000)).json.i, count);
    await Promise.all([sender.close(), reader.close()]);
  });

  it('reloads its certificate on SIGHUP (through the npm launcher) without dropping a connection, and keeps it when the new files are bad', async () => {
    const first = authority.issue();
    const { cert, key } = placePair(first, 'reload');
    const server = await startBinary({ command: [process.execPath, path.join(__dirname, '..', 'bin', 'switchyard.js')], args: ['--tls-cert', cert, '--tls-key', key], ca: authority.ca });
    assert.equal(await createSessionOverTls(server, 'reload'), 201);
    const a = await joinedClient(`${server.ws}/session/reload`, { ca: authority.ca });
    const b = await joinedClient(`${server.ws}/session/reload`, { ca: authority.ca });

    const second = authority.issue();
    placePair(second, 'reload');
    server.child.kill('SIGHUP');
    await eventually(() => assert.match(server.logs(), /SIGHUP: reloaded the TLS certificate and key/));
    assert.equal(await servedSerial(server.port, authority.ca), second.serial);
    await assertRelays(a, b, 'after the reload');
    await assertRelays(b, a, 'both ways');
    assert.equal(a.closeEvent, undefined);

    fs.writeFileSync(cert, 'not a certificate');
    server.child.kill('SIGHUP');
    await eventually(() => assert.match(server.logs(), /kept the TLS certificate and key in use.*holds no PEM certificate|holds no PEM certificate.*kept the TLS certificate and key in use/));
    assert.equal(await servedSerial(server.port, authority.ca), second.serial);
    await assertRelays(a, b, 'after a bad reload');
    const c = new TestClient(`${server.ws}/`, { ca: authority.ca });
    await c.opened;
    await Promise.all([a.close(), b.close(), c.close()]);
    server.child.kill('SIGTERM');
    assert.deepEqual(await server.child.exited, { code: 0, signal: null });
  });

  it('exits 2 at start, naming the file and the reason, for a missing file, one that is not PEM, or a key that is not the certificate\'s', async () => {
    const pair = authority.issue();
    const other = authority.issue();
    const missing = path.join(scratch, 'missing.crt');
    const notPem = scratchFile('not-pem.crt', 'hello');
    const cases = [
      [['--tls-cert', missing, '--tls-key', pair.key], new RegExp(`cannot read ${missing}: No such file`)],
      [['--tls-cert', notPem, '--tls-key', pair.key], new RegExp(`${notPem} holds no PEM certificate`)],
      [['--tls-cert', pair.cert, '--tls-key', pair.cert], /holds no PEM private key/],
      [['--tls-cert', pair.cert, '--tls-key', other.key], /cannot serve TLS/],
      [['--tls-cert', pair.cert], /--tls-key/],
    ];
    for (const [args, reason] of cases) {
      const { code, stderr } = await runBinary(['--port', '0', ...args]);
      assert.equal(code, 2, stderr);
      assert.match(stderr, reason);
    }
  });
});

describe('listen() with TLS', { skip: !hasNativeTransport && 'the native transport is not in this build' }, () => {
  it('serves wss:// from files, reloads them and takes a pair given as PEM, keeping open connections; a bad pair throws and changes nothing', async () => {
    const first = authority.issue();
    const { cert, key } = placePair(first, 'listen');
    const manager = new RelaySessionManager();
    manager.start();
    try {
      const { port } = manager.listen({ host: '127.0.0.1', port: 0, tls: { cert, key } });
      assert.equal(await servedSerial(port, authority.ca), first.serial);
      manager.createSession({ sessionId: 'l' });
      let a = await joinedClient(`wss://127.0.0.1:${port}/session/l`, { ca: authority.ca });
      let b = await joinedClient(`wss://127.0.0.1:${port}/session/l`, { ca: authority.ca });
      await assertRelays(a, b, 'listen over TLS');
      await Promise.all([a.close(), b.close()]);
      a = await joinedClient(`wss://127.0.0.1:${port}/session/l`, { ca: authority.ca });
      b = await joinedClient(`wss://127.0.0.1:${port}/session/l`, { ca: authority.ca });
      manager.createSession({ sessionId: 'sse' });
      await assertStreamsOverTls(`https://127.0.0.1:${port}`, 'sse', `wss://127.0.0.1:${port}/session/sse`);
      const plain = await plainGet(port, '/session/l');
      assert.equal(plain.status, 400);

      const second = authority.issue();
      placePair(second, 'listen');
      manager.reloadTls();
      assert.equal(await servedSerial(port, authority.ca), second.serial);
      await assertRelays(b, a, 'after reloadTls()');

      const third = authority.issue();
      manager.reloadTls({ cert: fs.readFileSync(third.cert, 'utf8'), key: fs.readFileSync(third.key) });
      assert.equal(await servedSerial(port, authority.ca), third.serial);

      assert.throws(() => manager.reloadTls({ cert: fs.readFileSync(first.cert), key: fs.readFileSync(second.key) }), /reloadTls: .*cannot serve TLS.*the pair in use stays/);
      assert.throws(() => manager.reloadTls({ cert }), /needs both cert and key: key is missing/);
      assert.equal(await servedSerial(port, authority.ca), third.serial);
      await assertRelays(a, b, 'after the refused pairs');
      assert.equal(a.closeEvent, undefined);
      await Promise.all([a.close(), b.close()]);
    } finally {
      await manager.stop();
    }
  });

  it('refuses to listen on a file it cannot read, naming it', async () => {
    const manager = new RelaySessionManager();
    manager.start();
    try {
      const missing = path.join(scratch, 'nowhere.pem');
      assert.throws(() => manager.listen({ port: 0, tls: { cert: missing, key: missing } }), new RegExp(`listen: TLS: cannot read ${missing}`));
      assert.throws(() => manager.reloadTls(), /no listen\(\) port serves TLS/);
    } finally {
      await manager.stop();
    }
  });
});

describe('switchyard binary: the config file', () => {
  it('takes every setting from the file, under the environment, under the flags; names bad values and unknown keys', async () => {
    const file = scratchFile('layers.toml', 'max_clients_per_session = 3\nping_interval = 7000\nheartbeat_timeout = 21000\nchannel_allow = ["chat:*", "user:{userId}"]\nmax_mesage_bytes = 5\n');
    const fromFile = await startBinary({ args: ['--config', file] });
    const config = (await fetchJson(`${fromFile.base}/stats`)).body.config;
    assert.equal(config.maxClientsPerSession, 3);
    assert.equal(config.pingIntervalMs, 7000);
    assert.equal(config.heartbeatTimeoutMs, 21000);
    assert.deepEqual(config.channels.allow, ['chat:*', 'user:{userId}']);
    assert.match(fromFile.logs(), /layers\.toml: unknown key `max_mesage_bytes` \(did you mean `max_message_bytes`\?\) \(ignored; --strict makes this an error\)/);

    const overridden = await startBinary({ args: ['--config', file, '--ping-interval', '9000'], env: { MAX_CLIENTS_PER_SESSION: '4', PING_INTERVAL: '8000' } });
    const layered = (await fetchJson(`${overridden.base}/stats`)).body.config;
    assert.equal(layered.maxClientsPerSession, 4, 'the environment over the file');
    assert.equal(layered.pingIntervalMs, 9000, 'the flag over the environment');
    assert.equal(layered.heartbeatTimeoutMs, 21000, 'the file over the default');

    const strict = await runBinary(['--config', file, '--strict', '--port', '0']);
    assert.equal(strict.code, 2);
    assert.match(strict.stderr, /unknown key `max_mesage_bytes`/);
    const strictInFile = await runBinary(['--config', scratchFile('strict.toml', 'strict = true\nnot_a_setting = 1\n'), '--port', '0']);
    assert.equal(strictInFile.code, 2);
    assert.match(strictInFile.stderr, /unknown key `not_a_setting`/);

    const bad = await runBinary(['--config', scratchFile('bad.toml', 'port = "eighty"\ncompression = "yes"\n')]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /bad\.toml: `port`: invalid value 'eighty' for '--port <PORT>'/);
    assert.match(bad.stderr, /bad\.toml: `compression`: expected true or false/);
    const notToml = await runBinary(['--config', scratchFile('broken.toml', 'port = = 1\n')]);
    assert.equal(notToml.code, 2);
    assert.match(notToml.stderr, /broken\.toml is not TOML/);
    const absent = await runBinary(['--config', path.join(scratch, 'absent.toml')]);
    assert.equal(absent.code, 2);
    assert.match(absent.stderr, /cannot read .*absent\.toml/);
  });

  it('config init writes every flag as a key at its default, and config check passes it, or lists what is wrong', async () => {
    const help = (await runBinary(['--help'])).stdout;
    const flags = [...help.matchAll(/^\s+(?:-\w, )?--([a-z0-9-]+)/gm)].map((m) => m[1]).filter((f) => !['help', 'version', 'config'].includes(f));
    assert.ok(flags.length > 60, `flags in --help: ${flags.length}`);
    const init = await runBinary(['config', 'init']);
    assert.equal(init.code, 0);
    for (const flag of flags) assert.match(init.stdout, new RegExp(`^# ${flag.replaceAll('-', '_')} = `, 'm'), `--${flag} is a key of config init`);
    assert.match(init.stdout, /^# max_message_bytes = 1048576$/m);
    assert.match(init.stdout, /^# proxy_headers = \["cookie", "authorization"\]$/m);

    const written = path.join(scratch, 'init.toml');
    assert.equal((await runBinary(['config', 'init', written])).code, 0);
    assert.equal((await runBinary(['config', 'init', written])).code, 2, 'an existing file is left alone');
    // Uncommenting the lines with a default gives a file the server takes as it is.
    const uncommented = fs
      .readFileSync(written, 'utf8')
      .split('\n')
      .map((line) => (/^# [a-z0-9_]+ = /.test(line) && !/= (""|\[\]|1)$/.test(line) ? line.slice(2) : line))
      .join('\n');
    const check = await runBinary(['config', 'check', scratchFile('uncommented.toml', uncommented)]);
    assert.equal(check.code, 0, check.stderr);
    assert.match(check.stdout, /uncommented\.toml: ok \(\d+ settings\)/);

    const wrong = await runBinary(['config', 'check', scratchFile('wrong.toml', 'max_message_bytes = 0\nlisten_backlog = -1\nhistroy_size = 4\ntls_cert = "/nowhere.crt"\ntls_key = "/nowhere.key"\n')]);
    assert.equal(wrong.code, 2);
    assert.match(wrong.stderr, /`max_message_bytes`: invalid value '0'/);
    assert.match(wrong.stderr, /`listen_backlog`: invalid value '-1'/);
    assert.match(wrong.stderr, /unknown key `histroy_size` \(did you mean `history_size`\?\)/);
    const unreadable = await runBinary(['config', 'check', scratchFile('tls.toml', 'tls_cert = "/nowhere.crt"\ntls_key = "/nowhere.key"\n')]);
    assert.equal(unreadable.code, 2);
    assert.match(unreadable.stderr, /tls\.toml: TLS: cannot read \/nowhere\.crt/);
  });
});

describe('switchyard binary: token subcommands', () => {
  it('token create makes a token the server admits, token check says whose it is or why it is refused', async () => {
    const file = scratchFile('auth.toml', 'jwt_secret = "config-secret"\njwt_organization_claim = "org"\njwt_issuer = "ops-test"\n');
    const server = await startBinary({ args: ['--config', file] });
    const created = await runBinary(['token', 'create', '--config', file, '--sub', 'alice', '--org', 'acme', '--ttl', '10m']);
    assert.equal(created.code, 0, created.stderr);
    const token = created.stdout.trim();
    const client = new TestClient(`${server.ws}/?token=${token}`);
    await client.opened;
    await client.close();
    const tokenless = new TestClient(`${server.ws}/`);
    await assert.rejects(tokenless.opened, /401/);

    const checked = await runBinary(['token', 'check', token, '--config', file]);
    assert.equal(checked.code, 0, checked.stderr);
    assert.match(checked.stdout, /"sub": "alice"/);
    assert.match(checked.stdout, /"iss": "ops-test"/);
    assert.match(checked.stdout, /valid: user alice, organization acme/);
    assert.match(checked.stdout, /expires in (9m|10m)/);

    const wrongKey = await runBinary(['token', 'check', token], { JWT_SECRET: 'another' });
    assert.equal(wrongKey.code, 1);
    assert.match(wrongKey.stdout, /refused: The token's signature is not valid/);
    const expired = (await runBinary(['token', 'create', '--config', file, '--sub', 'bob', '--claim', 'exp=1000'])).stdout.trim();
    const late = await runBinary(['token', 'check', expired, '--config', file]);
    assert.equal(late.code, 1);
    assert.match(late.stdout, /refused: The token has expired/);
    const refusedByServer = new TestClient(`${server.ws}/?token=${expired}`);
    await assert.rejects(refusedByServer.opened, /401/);
    const noKey = await runBinary(['token', 'check', token]);
    assert.equal(noKey.code, 2);
    assert.match(noKey.stderr, /no key to check with/);
  });

  it('signs with a private key for a server that holds the public one (ES256)', async () => {
    const { execFileSync } = require('node:child_process');
    const dir = path.join(scratch, 'es256');
    fs.mkdirSync(dir, { recursive: true });
    execFileSync('openssl', ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', path.join(dir, 'ec.key')]);
    execFileSync('openssl', ['pkcs8', '-topk8', '-nocrypt', '-in', path.join(dir, 'ec.key'), '-out', path.join(dir, 'private.pem')]);
    execFileSync('openssl', ['ec', '-in', path.join(dir, 'ec.key'), '-pubout', '-out', path.join(dir, 'public.pem')], { stdio: 'ignore' });
    const keyArgs = ['--jwt-public-key', path.join(dir, 'public.pem'), '--jwt-algorithms', 'ES256'];
    const created = await runBinary([...keyArgs, 'token', 'create', '--sub', 'carol', '--key', path.join(dir, 'private.pem')]);
    assert.equal(created.code, 0, created.stderr);
    const checked = await runBinary([...keyArgs, 'token', 'check', created.stdout.trim()]);
    assert.equal(checked.code, 0, checked.stderr);
    assert.match(checked.stdout, /valid: user carol/);
    const unsigned = await runBinary(['token', 'create', '--sub', 'dave']);
    assert.equal(unsigned.code, 2);
    assert.match(unsigned.stderr, /no key to sign with/);
  });

  it('has help for each subcommand', async () => {
    for (const [args, says] of [
      [['config', '--help'], /init.*\n.*check/s],
      [['config', 'init', '--help'], /commented out at its default/],
      [['config', 'check', '--help'], /exits 2/],
      [['token', 'create', '--help'], /--sub <USER>.*--org <ORG>.*--channel <CHANNEL>.*--ttl <DURATION>/s],
      [['token', 'check', '--help'], /why it\s+is refused/],
    ]) {
      const { code, stdout } = await runBinary(args);
      assert.equal(code, 0);
      assert.match(stdout, says, `${args.join(' ')}:\n${stdout}`);
    }
  });
});

describe('switchyard binary: probes and draining', () => {
  it('/ready is 503 while the cluster link is down, where /health stays 200', async () => {
    const nowhere = await freePort();
    const server = await startBinary({ args: ['--redis-url', `redis://127.0.0.1:${nowhere}`, '--redis-timeout', '200'] });
    const ready = await fetchJson(`${server.base}/ready`);
    assert.equal(ready.status, 503);
    assert.deepEqual(ready.body, { ready: false, reason: 'the link to the cluster is down' });
    assert.equal((await fetchJson(`${server.base}/health`)).status, 200);
  });

  it('on SIGTERM with --shutdown-grace: not ready, refuses new connections, closes open ones with 1012 spread over the grace, then exits 0', async () => {
    const graceMs = 1500;
    const server = await startBinary({ args: ['--shutdown-grace', String(graceMs), '--max-clients-per-session', '8'] });
    assert.deepEqual((await fetchJson(`${server.base}/ready`)).body, { ready: true });
    await postJson(`${server.base}/v1/sessions`, { sessionId: 'drain' });
    const clients = [];
    for (let i = 0; i < 6; i++) clients.push(await joinedClient(`${server.ws}/session/drain`));
    const closedAt = clients.map((client) => client.closed.then((event) => ({ ...event, at: Date.now() })));
    const signalled = Date.now();
    server.child.kill('SIGTERM');
    await eventually(async () => assert.equal((await fetchJson(`${server.base}/ready`)).status, 503));
    assert.deepEqual((await fetchJson(`${server.base}/ready`)).body, { ready: false, reason: 'draining' });
    const late = new TestClient(`${server.ws}/session/drain`);
    await assert.rejects(late.opened, /Unexpected server response: 503/);
    const closes = await Promise.all(closedAt);
    for (const close of closes) assert.deepEqual({ code: close.code, reason: close.reason }, { code: 1012, reason: 'Service restart' });
    // The server closes the last of six no sooner than five sixths of the grace in.
    const last = Math.max(...closes.map((close) => close.at)) - signalled;
    assert.ok(last >= (graceMs * 5) / 6 - 50, `the last close came ${last} ms after SIGTERM`);
    assert.deepEqual(await server.child.exited, { code: 0, signal: null });
    assert.ok(Date.now() - signalled >= graceMs, 'exits once the grace is over');
    assert.match(server.logs(), /draining connections=6 grace_ms=1500/);
  });

  it('a second signal cuts the grace short: the connections not yet closed get 1001 at once', async () => {
    const server = await startBinary({ args: ['--shutdown-grace', '600000'] });
    const first = new TestClient(`${server.ws}/`);
    await first.opened;
    const second = new TestClient(`${server.ws}/`);
    await second.opened;
    server.child.kill('SIGTERM');
    // Of two connections, one is closed at the start of the grace, the other half-way.
    const drained = await Promise.race([first.closed, second.closed]);
    assert.deepEqual(drained, { code: 1012, reason: 'Service restart' });
    server.child.kill('SIGINT');
    assert.deepEqual(await server.child.exited, { code: 0, signal: null });
    const rest = first.closeEvent === drained ? second : first;
    assert.deepEqual(await rest.closedWithin(5000), { code: 1001, reason: 'Server shutting down' });
    assert.match(server.logs(), /draining cut short cause="SIGINT"/);
  });
});
