// __test__/compression.test.js: permessage-deflate (RFC 7692) in the native transport and
// the binary: what is negotiated, that frames really are compressed on the wire, once per
// message, that compressed client messages are inflated, and never past maxMessageBytes.
const { describe, it, after } = require('node:test');
const assert = require('node:assert/strict');
const zlib = require('node:zlib');
const { RelaySessionManager } = require('..');
const { TestClient, joinedClient, startMixedServer, RawClient, upgradeRequest, clientFrame, startBinary, stopBinaries, postJson, fetchJson } = require('./helpers');

const cleanups = [];
after(async () => {
  stopBinaries();
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function server(config) {
  const started = await startMixedServer({ maxClientsPerSession: 8, ...config });
  cleanups.push(() => started.close());
  return started;
}

const AGREED = 'permessage-deflate; server_no_context_takeover; client_no_context_takeover';
const document = (n) => JSON.stringify({ type: 'doc', n, body: 'the same words again and again '.repeat(100) });

/** A ws client that also keeps the Sec-WebSocket-Extensions answer of its upgrade. */
function client(url, options) {
  const made = new TestClient(url, options);
  made.agreed = new Promise((resolve) => made.ws.once('upgrade', (response) => resolve(response.headers['sec-websocket-extensions'])));
  return made;
}

/** A raw client upgraded with `offer`, reading frames as they are on the wire. */
async function rawClient(port, path, offer) {
  const raw = new RawClient(port);
  await raw.connected;
  raw.write(upgradeRequest(path, { headers: offer ? { 'Sec-WebSocket-Extensions': offer } : {} }));
  raw.head = await raw.responseHead();
  await raw.until(() => texts(raw).some((text) => text.includes('client_connected')), 'the welcome');
  return raw;
}

const inflate = (payload) =>
  zlib.inflateRawSync(Buffer.concat([payload, Buffer.from([0, 0, 0xff, 0xff])]), { finishFlush: zlib.constants.Z_SYNC_FLUSH }).toString();
/** The text messages a raw client got, inflated where they came compressed. */
const texts = (raw) => raw.frames().filter((f) => f.opcode === 1).map((f) => (f.compressed ? inflate(f.payload) : f.payload.toString()));

/** Relays compressible documents both ways between two ws clients and checks each arrives whole. */
async function relaysDocuments(url) {
  const a = client(url);
  const b = client(url);
  await Promise.all([a.joined(), b.joined()]);
  assert.equal(await a.agreed, AGREED);
  for (let n = 0; n < 20; n++) a.send(document(n));
  for (let n = 0; n < 20; n++) assert.equal((await b.next((m) => m.json?.n === n)).text, document(n));
  b.send(document(99));
  assert.equal((await a.next((m) => m.json?.n === 99)).text, document(99), 'a compressed client message is inflated');
  return [a, b];
}

describe('permessage-deflate in the native transport', () => {
  it('negotiates with ws clients, relays their compressed messages and reports the saving', async () => {
    const s = await server({ nativeCompression: true });
    const { sessionId } = s.manager.createSession();
    await relaysDocuments(s.native(sessionId));
    const { compression } = s.manager.getStats();
    assert.equal(compression.connections, 2);
    assert.ok(compression.bytesBeforeCompression >= 21 * document(0).length, JSON.stringify(compression));
    assert.ok(compression.ratio < 0.2, `compressed to ${compression.ratio}`);
  });

  it('sends RSV1 frames a plain inflater reads, the same bytes to every recipient, and small messages as they are', async () => {
    const s = await server({ nativeCompression: { threshold: 64 } });
    const { sessionId } = s.manager.createSession();
    const path = `/session/${sessionId}`;
    const readers = [];
    for (let i = 0; i < 3; i++) readers.push(await rawClient(s.port, path, 'permessage-deflate; client_max_window_bits'));
    assert.match(readers[0].head, new RegExp(`Sec-WebSocket-Extensions: ${AGREED}\r\n`, 'i'));
    const sender = await joinedClient(s.native(sessionId), { perMessageDeflate: false });
    const before = s.manager.getStats().compression;
    sender.send(document(1));
    sender.send('{"type":"tiny"}');
    const delivered = [];
    for (const reader of readers) {
      await reader.until(() => texts(reader).includes('{"type":"tiny"}'), 'the small message');
      const [big, small] = reader.frames().filter((f) => f.opcode === 1).slice(-2);
      assert.equal(big.compressed, true);
      assert.equal(inflate(big.payload), document(1));
      assert.equal(small.compressed, false);
      assert.equal(small.payload.toString(), '{"type":"tiny"}');
      delivered.push(big.payload);
    }
    assert.ok(delivered.every((payload) => payload.equals(delivered[0])), 'every recipient got the same compressed bytes');
    const after = s.manager.getStats().compression;
    assert.equal(after.bytesBeforeCompression - before.bytesBeforeCompression, 3 * (document(1).length + '{"type":"tiny"}'.length));
    for (const reader of readers) reader.socket.destroy();
  });

  it('honours a small server window, and declines what it does not know', async () => {
    const s = await server({ nativeCompression: true });
    const { sessionId } = s.manager.createSession();
    const small = await rawClient(s.port, `/session/${sessionId}`, 'permessage-deflate; server_max_window_bits=9');
    assert.match(small.head, /Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9\r\n/i);
    const declined = await rawClient(s.port, `/session/${sessionId}`, 'permessage-deflate; bogus_parameter');
    assert.doesNotMatch(declined.head, /Sec-WebSocket-Extensions/i);
    const sender = await joinedClient(s.native(sessionId), { perMessageDeflate: false });
    const short = JSON.stringify({ type: 'short', body: 'abc '.repeat(100) });
    sender.send(document(2));
    sender.send(short);
    for (const reader of [small, declined]) await reader.until(() => texts(reader).includes(short), 'both messages');
    const [longFrame, shortFrame] = small.frames().filter((f) => f.opcode === 1).slice(-2);
    assert.equal(longFrame.compressed, false, 'longer than the 512-byte window: sent as it is');
    assert.equal(longFrame.payload.toString(), document(2));
    assert.equal(shortFrame.compressed, true);
    assert.equal(inflate(shortFrame.payload), short);
    assert.ok(declined.frames().every((f) => !f.compressed));
    small.socket.destroy();
    declined.socket.destroy();
  });

  it('closes a decompression bomb with 1009 and an RSV1 frame without the extension with 1002, and nobody else', async () => {
    const s = await server({ nativeCompression: true, maxMessageBytes: 64 * 1024 });
    const { sessionId } = s.manager.createSession();
    const bystander = await joinedClient(s.native(sessionId));
    const bomber = await rawClient(s.port, `/session/${sessionId}`, 'permessage-deflate');
    const bomb = zlib.deflateRawSync(Buffer.from(JSON.stringify({ type: 'x', pad: 'a'.repeat(8 * 1024 * 1024) })), { finishFlush: zlib.constants.Z_SYNC_FLUSH });
    assert.ok(bomb.length < 64 * 1024, 'the frame itself is within the limit');
    const frame = clientFrame(0x1, bomb.subarray(0, bomb.length - 4));
    frame[0] |= 0x40;
    bomber.write(frame);
    assert.equal((await bomber.closeFrame()).code, 1009);
    const plain = await rawClient(s.port, `/session/${sessionId}`);
    const unexpected = clientFrame(0x1, Buffer.from('{"type":"x"}'));
    unexpected[0] |= 0x40;
    plain.write(unexpected);
    assert.equal((await plain.closeFrame()).code, 1002);
    bystander.send('{"type":"still here"}');
    const other = await joinedClient(s.native(sessionId));
    other.send('{"type":"hello"}');
    assert.equal((await bystander.nextOfType('hello')).json.type, 'hello');
  });

  it('is off unless asked for, and refuses options it cannot read', async () => {
    const s = await server({});
    const { sessionId } = s.manager.createSession();
    const offered = client(s.native(sessionId));
    await offered.joined();
    assert.equal(await offered.agreed, undefined);
    assert.throws(() => new RelaySessionManager({ nativeCompression: 5 }), /nativeCompression must be true, false or \{ threshold \}/);
    assert.throws(() => new RelaySessionManager({ nativeCompression: { threshold: -1 } }), /threshold must be a whole number/);
    assert.throws(() => new RelaySessionManager({ nativeCompression: { level: 9 } }), /unknown option "level" in nativeCompression/);
  });
});

describe('permessage-deflate in the binary', () => {
  it('negotiates with --compression and reports it in /stats', async () => {
    const binary = await startBinary({ args: ['--compression'] });
    await postJson(`${binary.base}/v1/sessions`, { sessionId: 'deflated' });
    await relaysDocuments(`${binary.ws}/session/deflated`);
    const { compression } = (await fetchJson(`${binary.base}/stats`)).body;
    assert.equal(compression.connections, 2);
    assert.ok(compression.ratio < 0.2, JSON.stringify(compression));
    const plain = await startBinary();
    await postJson(`${plain.base}/v1/sessions`, { sessionId: 'plain' });
    const offered = client(`${plain.ws}/session/plain`);
    await offered.joined();
    assert.equal(await offered.agreed, undefined, 'off without --compression');
  });
});
