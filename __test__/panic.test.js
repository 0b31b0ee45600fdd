// __test__/panic.test.js: a Rust panic inside the addon reaches JavaScript as an Error,
// and the process, the manager and its other connections go on. Uses the addon built with
// the `test-panic` feature (`node scripts/setup.js test` builds it into target/), whose
// `panicForTests()` panics as a bug in any method would; the published addon has no such
// method.
const { describe, it, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const { WebSocketServer } = require('ws');
const { joinedClient } = require('./helpers');

const addon = path.join(__dirname, '..', 'target', 'test-addon', 'switchyard.node');
const cleanups = [];
after(() => Promise.all(cleanups.map((cleanup) => cleanup())));

describe('a panic in the addon', () => {
  it('is thrown as an Error, and every connection and the manager carry on', async () => {
    assert.ok(fs.existsSync(addon), `${addon} is missing: run node scripts/setup.js test`);
    const { RelaySessionManager } = require(addon);
    assert.equal(typeof require('..').RelaySessionManager.prototype.panicForTests, 'undefined', 'the published addon has no such method');
    const manager = new RelaySessionManager();
    const server = http.createServer();
    const wss = new WebSocketServer({ server });
    wss.on('connection', (socket, request) => manager.handleUpgrade(request.url.slice(1), socket, request));
    manager.start();
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanups.push(async () => {
      await manager.stop({ timeoutMs: 200 });
      wss.close();
      await new Promise((resolve) => server.close(resolve));
    });
    const { sessionId } = manager.createSession();
    const url = `ws://127.0.0.1:${server.address().port}/${sessionId}`;
    const [a, b] = [await joinedClient(url), await joinedClient(url)];

    assert.throws(
      () => manager.panicForTests('a bug'),
      (err) => err instanceof Error && /^switchyard internal error: a bug/.test(err.message),
    );
    a.send('{"type":"after-the-panic"}');
    assert.equal((await b.nextOfType('after-the-panic')).text, '{"type":"after-the-panic"}', 'relaying goes on');
    assert.equal(manager.getSession(sessionId).clientCount, 2);
    assert.ok(manager.createSession().sessionId, 'and the manager still works');
    await Promise.all([a.close(), b.close()]);
  });
});
