// __test__/wasm.test.js: the WebAssembly build of the addon. `npm test` runs this file with
// the bridge-mode tests under NAPI_RS_FORCE_WASI=true (scripts/test.js): the build is what
// loaded, and what it cannot do (the native transport, clusters) fails with an Error that
// says what to use instead, harming nothing else.
const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const net = require('node:net');
const { RelaySessionManager } = require('..');
const { joinedClient, startMixedServer } = require('./helpers');

const BRIDGE_ONLY = /^The native transport is not available in the WebAssembly build of switchyard .*use bridge mode, accepting the upgrade with ws and passing its WebSocket to handleUpgrade$/;

describe('the WebAssembly build', () => {
  it('is what loaded', () => {
    assert.equal(require('../binding.js').__napiBindingTarget, 'wasm32-wasi');
  });

  it('attach() throws an Error naming bridge mode and adds no upgrade listener', () => {
    const manager = new RelaySessionManager();
    const server = http.createServer();
    assert.throws(() => manager.attach(server), (err) => err instanceof Error && BRIDGE_ONLY.test(err.message));
    assert.equal(server.listenerCount('upgrade'), 0);
  });

  it('listen() throws the same', () => {
    const manager = new RelaySessionManager();
    manager.start();
    assert.throws(() => manager.listen({ host: '127.0.0.1', authenticate: () => ({}) }), (err) => err instanceof Error && BRIDGE_ONLY.test(err.message));
    return manager.stop({ timeoutMs: 100 });
  });

  it('handleUpgrade with a net.Socket throws the same, and leaves the socket to the app, which can still answer it', async () => {
    const manager = new RelaySessionManager();
    const { sessionId } = manager.createSession();
    const thrown = [];
    const server = http.createServer();
    server.on('upgrade', (request, socket) => {
      try {
        manager.handleUpgrade(sessionId, socket, request);
      } catch (err) {
        thrown.push(err);
        socket.end('HTTP/1.1 501 Not Implemented\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      }
    });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const answer = await new Promise((resolve, reject) => {
        const client = net.connect(server.address().port, '127.0.0.1');
        let received = '';
        client.on('data', (chunk) => (received += chunk));
        client.on('end', () => resolve(received));
        client.on('error', reject);
        client.write(
          `GET /session/${sessionId} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
            'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
        );
      });
      assert.match(answer, /^HTTP\/1\.1 501 Not Implemented\r\n/);
      assert.equal(thrown.length, 1);
      assert.match(thrown[0].message, BRIDGE_ONLY);
      assert.equal(manager.getSession(sessionId).clientCount, 0);
    } finally {
      server.close();
    }
  });

  it('the redis option throws, saying clusters need a native package', () => {
    assert.throws(() => new RelaySessionManager({ redis: { url: 'redis://127.0.0.1:6379' } }), {
      name: 'TypeError',
      message: /^Clusters \(the redis option\) are not available in the WebAssembly build of switchyard/,
    });
  });

  it('a manager whose attach() was refused still relays in bridge mode', async () => {
    const s = await startMixedServer();
    try {
      assert.throws(() => s.manager.attach(http.createServer()), { message: BRIDGE_ONLY });
      const { sessionId } = s.manager.createSession();
      const alice = await joinedClient(s.bridge(sessionId));
      const bob = await joinedClient(s.bridge(sessionId));
      alice.send('{"type":"hello"}');
      assert.equal((await bob.next()).text, '{"type":"hello"}');
    } finally {
      await s.close();
    }
  });
});
