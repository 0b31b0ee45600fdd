// __test__/hostile.test.js: hostile input over real sockets, against the native transport
// attached to a Node server and against the standalone binary: each bad peer gets its
// refusal or close code, the server stays up, and a pair of good clients keeps relaying
// without loss.
const { describe, it, after } = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const { joinedClient, postJson, sleep, eventually, startMixedServer, RawClient, upgradeRequest, clientFrame, startBinary, stopBinaries } = require('./helpers');

const cleanups = [];
after(async () => {
  stopBinaries();
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/** The two servers under test, each with a way to make a session and read its stats. */
const targets = {
  async native() {
    const server = await startMixedServer();
    cleanups.push(() => server.close());
    return {
      port: server.port,
      session: async () => server.manager.createSession({ maxClients: 100 }).sessionId,
      path: (id) => `/session/${id}`,
      sessionlessPath: '/live',
      stats: async () => server.manager.getStats(),
    };
  },
  async binary() {
    const server = await startBinary();
    return {
      port: server.port,
      session: async () => (await postJson(`${server.base}/v1/sessions`, { maxClients: 100 })).body.sessionId,
      path: (id) => `/session/${id}`,
      sessionlessPath: '/',
      stats: async () => (await fetch(`${server.base}/stats`)).json(),
    };
  },
};

/** A server, a session on it, and two clients of that session relaying to each other. */
async function withPair(kind) {
  const target = await targets[kind]();
  const sessionId = await target.session();
  const url = `ws://127.0.0.1:${target.port}${target.path(sessionId)}`;
  const a = await joinedClient(url);
  const b = await joinedClient(url);
  await a.nextOfType('client_connected');
  let checks = 0;
  return {
    target,
    sessionId,
    url,
    a,
    b,
    /** Shows the pair still relays. */
    async stillRelaying() {
      const tag = `check-${++checks}`;
      a.send(JSON.stringify({ type: 'check', tag }));
      assert.equal((await b.next((m) => m.json?.tag === tag)).json.type, 'check');
    },
    /** Waits until the server holds the pair's two connections and no other. */
    async onlyThePairLeft() {
      await eventually(async () => assert.equal((await target.stats()).health.activeConnections, 2, 'connections left'), 10_000);
    },
  };
}

/** A raw client through the upgrade of `path`, its welcome received. */
async function upgraded(port, path) {
  const raw = new RawClient(port);
  await raw.connected;
  raw.write(upgradeRequest(path));
  assert.match(await raw.responseHead(), /^HTTP\/1\.1 101 /);
  await raw.until(() => raw.frames().some((f) => f.opcode === 1 && f.payload.includes('client_connected')), 'the welcome');
  return raw;
}

for (const kind of Object.keys(targets)) {
  describe(`hostile input: ${kind}`, () => {
    it('answers garbage instead of a handshake with 400 and closes', async () => {
      const pair = await withPair(kind);
      const garbage = [
        Buffer.from('\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 a TLS hello where HTTP belongs\r\n\r\n', 'latin1'),
        Buffer.from('\x00\x01\x02\x03\xff\xfe\r\n\r\n', 'latin1'),
        Buffer.from('GET /session/x HTTP/9.9 nonsense\r\n\r\n'),
      ];
      for (const bytes of garbage) {
        const raw = new RawClient(pair.target.port);
        await raw.connected;
        raw.write(bytes);
        assert.match(await raw.responseHead(), /^HTTP\/1\.1 400 /, JSON.stringify(bytes.toString('latin1')));
        await raw.ended;
        await pair.stillRelaying();
        await pair.onlyThePairLeft();
      }
    });

    it('accepts a handshake and a frame split across many TCP writes', async () => {
      const pair = await withPair(kind);
      const raw = new RawClient(pair.target.port);
      await raw.connected;
      raw.socket.setNoDelay(true);
      const bytes = Buffer.concat([Buffer.from(upgradeRequest(pair.target.path(pair.sessionId))), clientFrame(1, '{"type":"trickled"}')]);
      for (const byte of bytes) {
        raw.write(Buffer.from([byte]));
        await new Promise(setImmediate);
      }
      assert.match(await raw.responseHead(), /^HTTP\/1\.1 101 /);
      assert.equal((await pair.a.next((m) => m.json?.type === 'trickled')).text, '{"type":"trickled"}');
      raw.socket.destroy();
      await pair.stillRelaying();
    });

    // RFC 6455 section 5.2 wants a 64-bit length's top bit clear: 1002, not 1009.
    it('closes with 1002 on a frame header announcing 2^63 bytes, before reading a byte of it', async () => {
      const pair = await withPair(kind);
      const liar = await upgraded(pair.target.port, pair.target.path(pair.sessionId));
      liar.write(clientFrame(2, 'tiny', { length: 2 ** 63 }));
      const close = await liar.closeFrame();
      assert.deepEqual([close.code, close.reason], [1002, 'Payload length with its most significant bit set']);
      await liar.ended;
      await pair.stillRelaying();
      await pair.onlyThePairLeft();
    });

    it('closes with 1002 on unmasked frames and other protocol violations', async () => {
      const pair = await withPair(kind);
      const violations = [
        [clientFrame(1, '{"type":"bare"}', { mask: false }), 'Client frames must be masked'],
        [Buffer.from([0xc1, 0x80, 0, 0, 0, 0]), 'Reserved bits are set'],
        [clientFrame(3, 'x'), 'Invalid opcode'],
        [clientFrame(9, Buffer.alloc(126)), 'Control frames must be final and at most 125 bytes'],
        [clientFrame(0, 'continued'), 'Continuation frame without a message'],
      ];
      for (const [frame, reason] of violations) {
        const raw = await upgraded(pair.target.port, pair.target.path(pair.sessionId));
        raw.write(frame);
        const close = await raw.closeFrame();
        assert.deepEqual([close.code, close.reason], [1002, reason]);
        await raw.ended;
        await pair.stillRelaying();
        await pair.onlyThePairLeft();
      }
      await sleep(50);
      assert.equal(pair.b.inbox.filter((m) => m.json?.type === 'bare').length, 0, 'the unmasked message was not relayed');
    });

    it('echoes every registered close code, 1012 to 1014 and 3000 to 4999 among them, and refuses 1005 and 1015', async () => {
      const pair = await withPair(kind);
      const codeFrame = (code) => { const payload = Buffer.alloc(2); payload.writeUInt16BE(code); return clientFrame(8, payload); };
      for (const code of [1000, 1012, 1013, 1014, 3000, 4999]) {
        const raw = await upgraded(pair.target.port, pair.target.path(pair.sessionId));
        raw.write(codeFrame(code));
        assert.equal((await raw.closeFrame()).code, code, `${code} is echoed`);
        await raw.ended;
      }
      for (const code of [1005, 1015]) {
        const raw = await upgraded(pair.target.port, pair.target.path(pair.sessionId));
        raw.write(codeFrame(code));
        assert.deepEqual([(await raw.closeFrame()).code, (await raw.closeFrame()).reason], [1002, 'Invalid close code'], `${code} is refused`);
        await raw.ended;
      }
      await pair.stillRelaying();
    });

    it('closes with 1007 on invalid UTF-8 in a text frame, relaying none of it', async () => {
      const pair = await withPair(kind);
      const raw = await upgraded(pair.target.port, pair.target.path(pair.sessionId));
      raw.write(clientFrame(1, Buffer.concat([Buffer.from('{"type":"bad","x":"'), Buffer.from([0xc3, 0x28]), Buffer.from('"}')])));
      const close = await raw.closeFrame();
      assert.deepEqual([close.code, close.reason], [1007, 'Invalid UTF-8']);
      await raw.ended;
      await pair.stillRelaying();
      await pair.onlyThePairLeft();
      assert.equal(pair.b.inbox.filter((m) => m.json?.type === 'bad').length, 0);
    });

    it('answers a ping flood from a client that does not read with one pong for the latest ping', async () => {
      const pair = await withPair(kind);
      const flooder = await upgraded(pair.target.port, pair.target.path(pair.sessionId));
      flooder.socket.pause();
      const pings = 20_000;
      const flood = [];
      for (let i = 0; i < pings; i++) flood.push(clientFrame(9, `ping ${i}`));
      flood.push(clientFrame(1, '{"type":"after-flood"}'));
      flooder.write(Buffer.concat(flood));
      assert.equal((await pair.a.next((m) => m.json?.type === 'after-flood')).json.type, 'after-flood', 'the flooder still relays');
      await pair.stillRelaying();
      flooder.socket.resume();
      const last = `ping ${pings - 1}`;
      await flooder.until(() => flooder.frames().some((f) => f.opcode === 10 && f.payload.toString() === last), 'the pong of the last ping');
      const pongs = flooder.frames().filter((f) => f.opcode === 10);
      assert.ok(pongs.length < pings / 10, `${pongs.length} pongs for ${pings} pings: a pong answers only the latest ping`);
      assert.equal(pongs.at(-1).payload.toString(), last);
      assert.equal(flooder.frames().filter((f) => f.opcode === 8).length, 0, 'not closed');
      flooder.socket.destroy();
    });

    it('refuses JSON nested 200 deep with INVALID_MESSAGE, and keeps the connection', async () => {
      const pair = await withPair(kind);
      pair.a.send(`{"type":"deep","payload":${'['.repeat(200)}${']'.repeat(200)}}`);
      const error = (await pair.a.nextOfType('error')).json;
      assert.deepEqual([error.payload.code, error.payload.message], ['INVALID_MESSAGE', 'JSON nested deeper than 100 levels']);
      await pair.stillRelaying();
      assert.equal(pair.b.inbox.filter((m) => m.json?.type === 'deep').length, 0, 'nothing reached the peer');
    });

    it('survives 10,000 connections opened and dropped without closing, losing no message between others', async () => {
      const pair = await withPair(kind);
      const { port } = pair.target;
      let sent = 0;
      let streaming = true;
      const received = [];
      pair.b.ws.on('message', (data) => {
        const message = JSON.parse(data.toString());
        if (message.type === 'seq') received.push(message.n);
      });
      const stream = (async () => {
        while (streaming) {
          pair.a.send(JSON.stringify({ type: 'seq', n: sent++ }));
          await sleep(2);
        }
      })();

      // Three ways to vanish, in turn: at once, halfway through the handshake, and once
      // upgraded; half of the upgraded ones with a reset rather than a FIN.
      const drop = (i) =>
        new Promise((resolve) => {
          const socket = net.connect(port, '127.0.0.1');
          socket.on('error', () => {});
          socket.on('close', resolve);
          socket.once('connect', () => {
            if (i % 3 === 0) return socket.destroy();
            const request = upgradeRequest(pair.target.sessionlessPath);
            if (i % 3 === 1) return socket.write(request.slice(0, 40), () => socket.destroy());
            socket.write(request);
            socket.once('data', () => (i % 2 ? socket.resetAndDestroy() : socket.destroy()));
          });
        });
      const total = 10_000;
      const batch = 500;
      for (let start = 0; start < total; start += batch) {
        await Promise.all(Array.from({ length: batch }, (_, k) => drop(start + k)));
      }

      streaming = false;
      await stream;
      await pair.b.next((m) => m.json?.type === 'seq' && m.json.n === sent - 1, 10_000);
      assert.deepEqual(received, Array.from({ length: sent }, (_, n) => n), `all ${sent} messages, in order`);
      await pair.onlyThePairLeft();
      await pair.stillRelaying();
    });
  });
}
