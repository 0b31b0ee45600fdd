// __test__/compat.test.js: drop-in fidelity with the original @gitorial/sync-client 0.2.1.
// `OriginalPeer` sends what the original RelayClient sends, field for field (read from
// its source), and reads what it reads; every flow runs over real sockets in both
// transports. The original's own TypeScript compiles, strictly, against our typings.
const { describe, it, after } = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const { WebSocketServer } = require('ws');
const { RelaySessionManager, ConflictResolution, ClientRole } = require('..');
const { TestClient, startMixedServer, typecheck, INVALID_MESSAGE } = require('./helpers');

const servers = [];
after(() => Promise.all(servers.map((s) => s.close())));

async function server(config) {
  const started = await startMixedServer(config);
  servers.push(started);
  return started;
}

/** Messages the original client's `handleMessage` reacts to, in the order they came. */
const isProtocol = (m) => m.json && m.json.type !== 'client_connected';

/**
 * A peer that speaks as the original RelayClient: its id is `client_<random>`, every
 * message carries `clientId`, `data`, `timestamp` and `protocol_version`, and on opening
 * it announces its role with `role_changed`, as the original does.
 */
class OriginalPeer {
  static async join(url) {
    const peer = new OriginalPeer(url);
    await peer.socket.opened;
    peer.announce(ClientRole.PASSIVE);
    peer.welcome = (await peer.socket.nextOfType('client_connected')).json;
    return peer;
  }

  constructor(url) {
    this.clientId = `client_${Math.random().toString(36).substring(2, 15)}`;
    this.socket = new TestClient(url);
  }

  send(type, data) {
    this.socket.send(JSON.stringify({ type, clientId: this.clientId, data, timestamp: Date.now(), protocol_version: 1 }));
  }

  announce(role) {
    this.send('role_changed', { role, timestamp: Date.now() });
  }

  requestControl(reason) {
    this.send('request_control', { requestingClientId: this.clientId, targetClientId: 'other', requestTimestamp: Date.now(), reason });
  }

  /** The original's `requestActiveRole()` when nobody holds control: the request, the
   * server's grant, and its new role announced. */
  async takeControl() {
    this.requestControl();
    const granted = await this.next('accept_control');
    assert.equal(granted.data?.granted, true, 'control was granted');
    this.announce(ClientRole.ACTIVE);
  }

  offerControl(state) {
    const metadata = { transferTimestamp: Date.now(), fromClientId: this.clientId, toClientId: 'other', stateChecksum: 'checksum_1' };
    this.send('offer_control', { tutorialState: state, metadata });
  }

  /** The original's `acceptTransfer()`: the accept, then its own role announced as active. */
  acceptControl(fromClientId) {
    this.send('accept_control', { fromClientId, timestamp: Date.now() });
    this.announce(ClientRole.ACTIVE);
  }

  /**
   * The original's answer to a peer's `accept_control` while it is active: it turns
   * passive, announcing it, and confirms the transfer to the peer.
   */
  yieldTo(accept) {
    this.announce(ClientRole.PASSIVE);
    this.send('confirm_transfer', { toClientId: accept.clientId, timestamp: Date.now() });
  }

  releaseControl() {
    this.send('release_control', { timestamp: Date.now() });
    this.announce(ClientRole.PASSIVE);
  }

  sendState(state) {
    this.send('state_update', state);
  }

  /**
   * The next message of `type`; without one, the next message the original client
   * would handle, skipping peers' role announcements.
   */
  async next(type) {
    const match = type ? (m) => m.json?.type === type : (m) => isProtocol(m) && m.json.type !== 'role_changed';
    return (await this.socket.next(match)).json;
  }

  /** Round-trips a `request_sync` through `other`: whatever `other` was sent before it has arrived. */
  async syncedWith(other) {
    this.send('request_sync', {});
    return other.next('request_sync');
  }

  close() {
    return this.socket.close();
  }
}

/** Two original peers in a new session; `first` joins before `second`. */
async function pair(s, transport, options) {
  const { sessionId } = s.manager.createSession(options);
  const first = await OriginalPeer.join(s.url(transport, sessionId));
  const second = await OriginalPeer.join(s.url(transport, sessionId));
  return { sessionId, first, second };
}

for (const transport of ['native', 'bridge']) {
  describe(`the original RelayClient's flows (${transport})`, () => {
    it('is welcomed as the original welcomes it, and a third client finds the session full', async () => {
      const s = await server();
      const { sessionId, first, second } = await pair(s, transport);
      assert.equal(first.welcome.clientId, 'relay-server');
      assert.equal(first.welcome.protocol_version, 1);
      assert.equal(typeof first.welcome.timestamp, 'number');
      const joined = await first.next('client_connected');
      assert.deepEqual([joined.clientId, joined.connectionId], [second.welcome.connectionId, second.welcome.connectionId], 'a newcomer has sent nothing yet');
      const third = new TestClient(s.url(transport, sessionId));
      assert.deepEqual(await third.closedWithin(), { code: 1008, reason: 'Session full' });
      assert.equal(s.manager.getSession(sessionId).clientCount, 2);
    });

    it('grants control when nobody holds it, with the accept the original client waits for', async () => {
      const s = await server();
      const { sessionId, first, second } = await pair(s, transport);
      second.requestControl('Extension driving tutorial');
      const granted = await second.next('accept_control');
      assert.equal(granted.clientId, 'relay-server');
      assert.equal(granted.data.granted, true);
      assert.equal(typeof granted.data.timestamp, 'number');
      assert.equal(granted.protocol_version, 1);
      assert.equal(s.manager.getSession(sessionId).activeClientId, second.clientId);
      second.announce(ClientRole.ACTIVE);
      second.sendState({ tutorialId: 'js-intro', stepContent: { index: 0 } });
      assert.deepEqual((await first.next('state_update')).data, { tutorialId: 'js-intro', stepContent: { index: 0 } });
    });

    it('first-come-first-served declines a later joiner and forwards an earlier one verbatim', async () => {
      const s = await server();
      const { first, second } = await pair(s, transport);
      first.requestControl('mine');
      await first.next('accept_control');
      second.requestControl('my turn');
      const declined = await second.next('decline_control');
      assert.deepEqual([declined.clientId, declined.data, declined.protocol_version], ['relay-server', { reason: 'conflict_resolution_denied' }, 1]);

      const later = await pair(s, transport);
      later.second.requestControl('second joiner takes control');
      await later.second.next('accept_control');
      const sent = { requestingClientId: later.first.clientId, targetClientId: 'other', requestTimestamp: 1, reason: 'first joiner asks' };
      later.first.socket.send(JSON.stringify({ type: 'request_control', clientId: later.first.clientId, data: sent, timestamp: 1, protocol_version: 1 }));
      const forwarded = await later.second.socket.next((m) => m.json?.type === 'request_control');
      assert.equal(forwarded.text, JSON.stringify({ type: 'request_control', clientId: later.first.clientId, data: sent, timestamp: 1, protocol_version: 1 }));
    });

    // The accept alone: the original client's acceptTransfer() also announces itself
    // active right after, which takes control back, as it did on the original server.
    it('an accepted request hands control over and confirms the transfer to the others', async () => {
      const s = await server({ defaultConflictResolution: ConflictResolution.USER_CHOICE });
      const { sessionId, first, second } = await pair(s, transport);
      await first.takeControl();
      second.requestControl('Website wants control');
      const asked = await first.next('request_control');
      assert.equal(asked.clientId, second.clientId);
      first.send('accept_control', { fromClientId: second.clientId, timestamp: Date.now() });
      const accept = await second.next('accept_control');
      assert.deepEqual([accept.clientId, accept.data.fromClientId], [first.clientId, second.clientId]);
      const confirmed = await second.next('confirm_transfer');
      assert.deepEqual([confirmed.clientId, confirmed.data], [first.clientId, { newActiveClient: second.clientId }]);
      assert.equal(s.manager.getSession(sessionId).activeClientId, second.clientId);
      second.sendState({ step: 2 });
      assert.deepEqual((await first.next('state_update')).data, { step: 2 });
    });

    // The original server left the offerer active beside the accepter; a server with one
    // active member must tell the offerer, or its client would go on believing itself
    // active while its updates were dropped.
    it('an offered handoff completes: the offerer gets the accept, turns passive, and can take control back', async () => {
      const s = await server();
      const { sessionId, first, second } = await pair(s, transport);
      await first.takeControl();
      first.sendState({ step: 1 });
      assert.deepEqual((await second.next('state_update')).data, { step: 1 });

      first.offerControl({ step: 1 });
      const offer = await second.next('offer_control');
      assert.equal(offer.data.metadata.fromClientId, first.clientId);
      second.acceptControl(first.clientId);
      const accept = await first.next('accept_control');
      assert.deepEqual([accept.clientId, accept.data.fromClientId], [second.clientId, first.clientId], 'the accept as its sender wrote it');
      assert.equal(s.manager.getSession(sessionId).activeClientId, second.clientId);
      first.yieldTo(accept);
      const confirmed = await second.next('confirm_transfer');
      assert.deepEqual([confirmed.clientId, confirmed.data.toClientId], [first.clientId, second.clientId]);

      second.sendState({ step: 2 });
      assert.deepEqual((await first.next('state_update')).data, { step: 2 }, "the new active client's updates arrive");
      second.releaseControl();
      await first.next('release_control');
      first.requestControl();
      assert.equal((await first.next('accept_control')).data.granted, true, 'control was free again');
      first.announce(ClientRole.ACTIVE);
      first.sendState({ step: 3 });
      assert.deepEqual((await second.next('state_update')).data, { step: 3 }, "the first client's updates arrive again");
      assert.equal(first.socket.inbox.some((m) => m.json?.type === 'accept_control'), false, 'it was told once');
      assert.equal(s.manager.getStats().messages.passiveUpdatesDropped, 0, 'nothing was dropped');
    });

    it('a client announcing itself active while another holds control: the holder is told with an accept in its name', async () => {
      const s = await server();
      const { sessionId, first, second } = await pair(s, transport);
      await first.takeControl();
      // Messages of two connections may be handled in either order: second announces
      // once first's announcement has reached it.
      await second.socket.next((m) => m.json?.type === 'role_changed' && m.json.clientId === first.clientId && m.json.data.role === 'active');
      second.announce(ClientRole.ACTIVE);
      const accept = await first.next('accept_control');
      assert.deepEqual([accept.clientId, accept.data.fromClientId, accept.protocol_version], [second.clientId, first.clientId, 1]);
      assert.equal(s.manager.getSession(sessionId).activeClientId, second.clientId);
      first.yieldTo(accept);
      await second.next('confirm_transfer');
      second.sendState({ step: 1 });
      assert.deepEqual((await first.next('state_update')).data, { step: 1 });
      assert.equal(second.socket.inbox.some((m) => m.json?.type === 'accept_control'), false, 'the new holder is told nothing');
    });

    it('a release is relayed, so the other client hears controlReleased, and control is free again', async () => {
      const s = await server();
      const { sessionId, first, second } = await pair(s, transport);
      first.requestControl();
      await first.next('accept_control');
      first.releaseControl();
      const released = await second.next('release_control');
      assert.equal(released.clientId, first.clientId);
      assert.equal(s.manager.getSession(sessionId).activeClientId, null);
      second.requestControl();
      assert.equal((await second.next('accept_control')).data.granted, true);
    });

    it('an unanswered request is declined in time, and the next one is heard', async () => {
      const s = await server({ defaultConflictResolution: 'user-choice', controlRequestTimeoutMs: 100 });
      const { first, second } = await pair(s, transport);
      first.requestControl();
      await first.next('accept_control');
      second.requestControl();
      await first.next('request_control');
      const declined = await second.next('decline_control');
      assert.deepEqual([declined.clientId, declined.data], ['relay-server', { reason: 'timeout' }]);
      second.requestControl();
      assert.equal((await first.next('request_control')).clientId, second.clientId, 'no transfer_in_progress left behind');
    });

    it('a session keeps its own conflict resolution', async () => {
      const s = await server({ defaultConflictResolution: 'user-choice' });
      const { sessionId, first, second } = await pair(s, transport, { conflictResolution: ConflictResolution.DENY_BOTH });
      assert.equal(s.manager.getSession(sessionId).conflictResolution, 'deny-both');
      second.requestControl();
      await second.next('accept_control');
      first.requestControl();
      assert.deepEqual((await first.next('decline_control')).data, { reason: 'conflict_resolution_denied' });
    });

    it("tells the others the active client left, with its role, and frees control", async () => {
      const s = await server();
      const { sessionId, first, second } = await pair(s, transport);
      first.requestControl();
      await first.next('accept_control');
      await first.close();
      const left = await second.next('client_disconnected');
      assert.deepEqual([left.clientId, left.data, left.protocol_version], [first.clientId, { role: 'active' }, 1]);
      assert.equal(s.manager.getSession(sessionId).activeClientId, null);
    });

    it('writes one error frame that the original client, awareness clients and channel clients all read', async () => {
      const s = await server();
      const { first } = await pair(s, transport);
      first.socket.send('not json');
      const error = await first.next('error');
      assert.deepEqual(error, {
        type: 'error',
        clientId: 'relay-server',
        data: { code: 'INVALID_MESSAGE', message: INVALID_MESSAGE },
        payload: { code: 'INVALID_MESSAGE', message: INVALID_MESSAGE },
        timestamp: error.timestamp,
        protocol_version: 1,
      });
      const channels = new TestClient(s.sessionless(transport));
      await channels.opened;
      channels.send(JSON.stringify({ type: 'JOIN_CHANNEL', channel: 'no spaces allowed' }));
      const upper = (await channels.nextOfType('ERROR')).json;
      assert.equal(upper.channel, 'error');
      assert.equal(upper.data.code, 'INVALID_MESSAGE');
      assert.match(upper.data.message, /channel/i);
      assert.deepEqual(upper.data.originalMessage, { type: 'JOIN_CHANNEL', channel: 'no spaces allowed' });
      assert.equal(upper.payload.code, 'INVALID_MESSAGE', 'awareness-style clients read payload.code');
      channels.send('{broken');
      const unreadable = (await channels.nextOfType('ERROR')).json;
      assert.equal(unreadable.data.originalMessage, '{broken', 'no readable type: the casing it last used');
    });
  });
}

describe('the original manager API', () => {
  it('has the original defaults and names every option in getStats().config', () => {
    const { config } = new RelaySessionManager().getStats();
    assert.equal(config.maxClientsPerSession, 2);
    assert.equal(config.enableRoleManagement, true);
    assert.equal(config.defaultConflictResolution, 'first-come-first-served');
    assert.equal(config.sessionTimeoutMs, 30 * 60 * 1000);
    assert.equal(config.pingIntervalMs, 30 * 1000);
    assert.equal(config.cleanupIntervalMs, 60 * 1000);
  });

  it('accepts every option the original accepted, with its enums or their string values', () => {
    const manager = new RelaySessionManager({
      sessionTimeoutMs: 60000,
      pingIntervalMs: 10000,
      cleanupIntervalMs: 5000,
      enableRoleManagement: true,
      defaultConflictResolution: ConflictResolution.DENY_BOTH,
    });
    assert.equal(manager.getStats().config.defaultConflictResolution, 'deny-both');
    for (const name of ['first-come-first-served', 'deny-both', 'user-choice', 'active-wins', 'timestamp-wins']) {
      assert.equal(new RelaySessionManager({ defaultConflictResolution: name }).getStats().config.defaultConflictResolution, name);
    }
    assert.throws(() => new RelaySessionManager({ defaultConflictResolution: 'ask-active' }), TypeError);
    assert.deepEqual(ConflictResolution, {
      FIRST_COME_FIRST_SERVED: 'first-come-first-served',
      DENY_BOTH: 'deny-both',
      USER_CHOICE: 'user-choice',
      ACTIVE_WINS: 'active-wins',
      TIMESTAMP_WINS: 'timestamp-wins',
    });
    assert.deepEqual(ClientRole, { ACTIVE: 'active', PASSIVE: 'passive', REQUESTING: 'requesting' });
  });

  it('creates sessions before start() and after stop(), with the ids and expiresIn the original took', async () => {
    const manager = new RelaySessionManager({ sessionTimeoutMs: 60000 });
    const before = manager.createSession({ sessionId: 'tutorial:intro.step-1', expiresIn: 0, metadata: { tutorial: 'intro' } });
    assert.equal(before.expiresAt - before.createdAt, 60000, 'expiresIn 0 means the default');
    assert.equal(before.activeClientId, null);
    assert.equal(before.metadata.tutorial, 'intro');
    assert.equal(manager.createSession().metadata, undefined, 'no metadata, as in the original');
    for (const id of ['user@example.com', 'caf\u00e9', 'a'.repeat(128), 'x~y!$&()*+,;=']) assert.equal(manager.createSession({ sessionId: id }).sessionId, id);
    assert.equal(manager.createSession({ sessionId: '' }).sessionId.length, 22, "'' asks for a generated id, as in the original");
    for (const bad of ['a/b', 'a?b', 'a#b', 'a b', 'a\nb', 'a'.repeat(129)]) {
      assert.throws(() => manager.createSession({ sessionId: bad }), /session id/, JSON.stringify(bad));
    }
    manager.start();
    await manager.stop();
    assert.equal(manager.createSession({ sessionId: 'after-stop' }).sessionId, 'after-stop');
    assert.equal(manager.getSession('after-stop').clientCount, 0);
  });

  it('serves the original server code: ws, a ?session= query, and an id with a colon and a dot', async () => {
    const manager = new RelaySessionManager();
    const httpServer = http.createServer();
    const wss = new WebSocketServer({ server: httpServer });
    wss.on('connection', (socket, request) => {
      const sessionId = new URL(request.url, `http://${request.headers.host}`).searchParams.get('session');
      if (!manager.handleUpgrade(sessionId, socket, request)) socket.close(1008, 'Failed to join session');
    });
    manager.start();
    await new Promise((resolve) => httpServer.listen(0, '127.0.0.1', resolve));
    try {
      const { sessionId } = manager.createSession({ sessionId: 'tutorial:intro.step-1' });
      const url = `ws://127.0.0.1:${httpServer.address().port}?session=${encodeURIComponent(sessionId)}`;
      const [a, b] = [await OriginalPeer.join(url), await OriginalPeer.join(url)];
      a.sendState({ step: 1 });
      await a.syncedWith(b);
      assert.equal(b.socket.inbox.some((m) => m.json?.type === 'state_update'), false, 'a passive update is not relayed');
      assert.equal(manager.getSession(sessionId).clientCount, 2);
    } finally {
      await manager.stop({ timeoutMs: 200 });
      wss.close();
      await new Promise((resolve) => httpServer.close(resolve));
    }
  });

  it('joins a session whose id needs escaping through the native path', async () => {
    const s = await server();
    const { sessionId } = s.manager.createSession({ sessionId: 'caf\u00e9:step-1' });
    const peer = await OriginalPeer.join(s.native(encodeURIComponent(sessionId)));
    assert.equal(peer.welcome.sessionId, sessionId);
  });

  it('compiles TypeScript written for the original, strictly, against index.d.ts', async () => {
    const { ok, output } = await typecheck({
      'original-user.mts': `
import { RelaySessionManager, ConflictResolution, ClientRole, type SessionData, type CreateSessionOptions, type RelaySessionManagerConfig } from 'switchyard';

interface TutorialMeta { tutorial: string; step?: number }
const config: RelaySessionManagerConfig = {
  sessionTimeoutMs: 60000,
  pingIntervalMs: 10000,
  cleanupIntervalMs: 5000,
  enableRoleManagement: true,
  defaultConflictResolution: ConflictResolution.FIRST_COME_FIRST_SERVED,
};
const manager = new RelaySessionManager<TutorialMeta>(config);
manager.start();
const options: CreateSessionOptions<TutorialMeta> = { metadata: { tutorial: 'javascript-basics' }, expiresIn: 60000, conflictResolution: ConflictResolution.DENY_BOTH };
const session: SessionData<TutorialMeta> = manager.createSession(options);
const title: string = session.metadata.tutorial;
const active: string | null = session.activeClientId;
const plain = new RelaySessionManager();
const untyped = plain.createSession({ metadata: { anything: 1 } });
const anything: number = untyped.metadata.anything;
const stranger: SessionData | null = plain.getSession('tutorial:intro.step-1');
const role: ClientRole = ClientRole.ACTIVE;
const passive: ClientRole.PASSIVE = ClientRole.PASSIVE;
const stats = manager.getStats();
const running: boolean = stats.isRunning;
const strategy: ConflictResolution = stats.config.defaultConflictResolution;
const fromString = new RelaySessionManager({ defaultConflictResolution: 'user-choice' });
manager.stop();
export { title, active, anything, stranger, role, passive, running, strategy, fromString };
`,
    });
    assert.ok(ok, `tsc failed:\n${output}`);
  });
});
