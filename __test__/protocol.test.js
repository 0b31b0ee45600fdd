// __test__/protocol.test.js: docs/protocol.md says what the server sends. Every example
// marked `<!-- frame: NAME -->` in it has a scenario here that makes a real
// RelaySessionManager (over the `ws` bridge; key frames over the native transport too)
// produce that frame, or react to the client frame as the page says; the frame the
// server really sent is compared with the example: the same keys at every level, the same
// JSON type for each, and equal values for the fields that never vary.
const { describe, it, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { isDeepStrictEqual } = require('node:util');
const { TestClient, startMixedServer, startBinary, stopBinaries, transports } = require('./helpers');
const { sign, now } = require('./jwt');

const root = path.resolve(__dirname, '..');
const PAGE = path.join(root, 'docs', 'protocol.md');
/** Every wait for a frame: generous, so that a loaded 2-core machine passes. */
const TIMEOUT_MS = 20_000;
const SERVER = 'relay-server';
/** Fields whose value is part of the protocol, so the example must give the real one. */
const CONSTANT_KEYS = new Set(['type', 'channel', 'code', 'protocol_version', 'message', 'reason', 'role', 'granted']);

after(() => stopBinaries());

/**
 * The page's `json` blocks: `{ examples: Map(name -> { value, line }), unmarked, problems }`.
 * A block is marked when the line just before its fence is `<!-- frame: NAME -->`.
 */
function readPage(text) {
  const examples = new Map();
  const unmarked = [];
  const problems = [];
  for (const match of text.matchAll(/```json\n([\s\S]*?)```/g)) {
    const line = text.slice(0, match.index).split('\n').length;
    const marker = /<!-- frame: (\S+) -->\n$/.exec(text.slice(0, match.index));
    if (!marker) {
      unmarked.push(line);
      continue;
    }
    const name = marker[1];
    if (examples.has(name)) problems.push(`line ${line}: a second example named ${name}`);
    try {
      examples.set(name, { value: JSON.parse(match[1]), line });
    } catch (error) {
      problems.push(`line ${line} (${name}): not JSON: ${error.message}`);
    }
  }
  return { examples, unmarked, problems };
}

const page = readPage(fs.readFileSync(PAGE, 'utf8'));
/** A deep copy of the example `name`, for a scenario to send or build on. */
function example(name) {
  const found = page.examples.get(name);
  if (!found) throw new Error(`docs/protocol.md has no example named ${name}`);
  return structuredClone(found.value);
}

const typeOf = (value) => (value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value);
const show = (value) => JSON.stringify(value);

/** What differs between a documented example and the frame the server sent. */
function differences(documented, real, where = 'frame', problems = []) {
  const [documentedType, realType] = [typeOf(documented), typeOf(real)];
  if (documentedType !== realType) {
    problems.push(`${where}: the example has the ${documentedType} ${show(documented)}, the server sent the ${realType} ${show(real)}`);
    return problems;
  }
  if (documentedType === 'object') {
    const lacking = Object.keys(real).filter((key) => !(key in documented));
    const invented = Object.keys(documented).filter((key) => !(key in real));
    if (lacking.length) problems.push(`${where}: the example lacks ${lacking.join(', ')} (the server sent ${show(real)})`);
    if (invented.length) problems.push(`${where}: the server sends no ${invented.join(', ')} (it sent ${show(real)})`);
    for (const key of Object.keys(documented).filter((k) => k in real)) {
      const at = `${where}.${key}`;
      const constant = CONSTANT_KEYS.has(key) || (key === 'clientId' && (documented[key] === SERVER || real[key] === SERVER));
      if (constant && !isDeepStrictEqual(documented[key], real[key])) {
        problems.push(`${at}: the example says ${show(documented[key])}, the server sent ${show(real[key])}`);
      } else if (!constant) {
        differences(documented[key], real[key], at, problems);
      }
    }
  } else if (documentedType === 'array') {
    if (documented.length !== real.length) {
      problems.push(`${where}: the example has ${documented.length} items, the server sent ${real.length}: ${show(real)}`);
    } else {
      documented.forEach((item, i) => differences(item, real[i], `${where}[${i}]`, problems));
    }
  }
  return problems;
}

/** What a scenario uses: a fresh server, its clients, and waits that never sleep. */
class Scene {
  constructor(server, transport) {
    this.server = server;
    this.transport = transport;
    this.manager = server.manager;
    this.clients = [];
    this.barriers = 0;
  }

  /** A client of `url`, once its socket is open. */
  async open(url, headers = {}) {
    const client = new TestClient(url, { headers });
    this.clients.push(client);
    await client.opened;
    return client;
  }

  /** A sessionless connection; `headers` x-user, x-org, x-client name it. */
  sessionless(headers) {
    return this.open(this.server.sessionless(this.transport), headers);
  }

  /** A member of `sessionId`, with its welcome read into `client.welcome`. */
  async member(sessionId, headers) {
    const client = await this.open(this.server.url(this.transport, sessionId), headers);
    client.welcome = (await this.next(client, 'client_connected')).json;
    return client;
  }

  /** A new session and its members, joined in order; each earlier one has seen the later join. */
  async session(names, options) {
    const { sessionId } = this.manager.createSession({ maxClients: names.length, ...options });
    const members = [];
    for (const name of names) {
      const joined = await this.member(sessionId, name ? { 'x-client': name } : {});
      for (const earlier of members) await this.next(earlier, 'client_connected');
      members.push(joined);
    }
    return { sessionId, members };
  }

  /** The next message of `client` of this `type` (or matching the function). */
  async next(client, match) {
    const check = typeof match === 'function' ? match : (m) => m.json?.type === match;
    return client.next(check, TIMEOUT_MS);
  }

  /** Sends an object as JSON (or a string as it is); returns the text sent. */
  send(client, message) {
    const text = typeof message === 'string' ? message : JSON.stringify(message);
    client.send(text);
    return text;
  }

  /** Sends `message` from `from`; `to` must receive it byte for byte. Returns what arrived, parsed. */
  async relayed(from, to, message) {
    const text = this.send(from, message);
    const received = await this.next(to, (m) => m.json?.type === JSON.parse(text).type);
    assert.equal(received.text, text, 'relayed byte for byte');
    return received.json;
  }

  /** A ping round trip: whatever the server answers to what was sent before has arrived. */
  async roundTrip(client) {
    const id = `barrier-${++this.barriers}`;
    this.send(client, { type: 'ping', id });
    await this.next(client, (m) => m.json?.type === 'pong' && m.json.id === id);
  }

  /** Asserts the server answered nothing it should not have (no error, ERROR or NACK). */
  async noErrors(client) {
    await this.roundTrip(client);
    const refusals = client.inbox.filter((m) => ['error', 'ERROR', 'NACK'].includes(m.json?.type));
    assert.deepEqual(refusals.map((m) => m.text), [], 'the server refused nothing');
  }

  async close() {
    await this.server.close();
    await Promise.all(this.clients.map((c) => c.closedWithin(TIMEOUT_MS).catch(() => {})));
  }
}

/** Two members in control-role order: `alice` joined first and holds control. */
async function aliceInControl(scene, options) {
  const { sessionId, members } = await scene.session(['alice', 'bob'], options);
  const [alice, bob] = members;
  scene.send(alice, { type: 'request_control', clientId: 'alice', data: {}, timestamp: Date.now(), protocol_version: 1 });
  assert.equal((await scene.next(alice, 'accept_control')).json.clientId, SERVER);
  return { sessionId, alice, bob };
}

/** Bob's request forwarded to alice, who holds control (the session lets requests through). */
async function bobWaiting(scene, options) {
  const found = await aliceInControl(scene, { conflictResolution: 'user-choice', ...options });
  await scene.relayed(found.bob, found.alice, example('request_control'));
  return found;
}

/** Two windows of user dr-lee on two connections: `left` with the documented case, `right` with another. */
async function twoCases(scene) {
  const first = await scene.sessionless();
  const second = await scene.sessionless();
  const register = example('register');
  scene.send(first, register);
  await scene.next(first, 'registered');
  const [, other] = example('warning.multi-case').payload.cases;
  scene.send(second, { type: 'register', payload: { ...register.payload, windowId: other.windowId, caseId: other.caseId } });
  await scene.next(second, 'registered');
  return { first, second };
}

const CHANNEL_HISTORY = { channels: { history: { size: 100, ttlMs: 60_000 } } };

const SECRET = 'a secret of at least thirty-two bytes';
/** A JWT of `claims` for user dr-lee, signed with the server's SECRET, expiring in `seconds`. */
const token = (seconds, claims = {}) => sign({ sub: 'dr-lee', exp: now() + seconds, ...claims }, { key: SECRET });
const TOKEN_AUTH = { auth: { jwt: { secret: SECRET } } };

/** A sessionless connection of dr-lee admitted with a token that expires in `seconds` (inside the refresh window). */
function tokenHolder(s, seconds = 5) {
  return s.open(`${s.server.sessionless(s.transport)}?token=${token(seconds)}`);
}

/** A refresh of the documented shape, with a real fresh token. */
function refresh(seconds = 3600, claims) {
  return { ...example('refresh'), token: token(seconds, claims) };
}

/** A member reads a channel publication, drops, two more are published, and it joins again with `since`. */
async function channelRecovered(s) {
  const { channel } = example('channel.join');
  const first = await s.sessionless();
  s.send(first, example('channel.join.positions'));
  const { epoch } = (await s.next(first, 'CHANNEL_JOINED')).json;
  s.manager.broadcastToChannel(channel, { type: 'headline', text: 'one' });
  const { offset } = (await s.next(first, 'publication')).json;
  first.ws.terminate();
  s.manager.broadcastToChannel(channel, { type: 'headline', text: 'two' });
  s.manager.broadcastToChannel(channel, { type: 'headline', text: 'three' });
  const back = await s.sessionless();
  const sent = { type: 'JOIN_CHANNEL', channel, since: { epoch, offset } };
  s.send(back, sent);
  const joined = (await s.next(back, 'CHANNEL_JOINED')).json;
  const replayed = [(await s.next(back, 'publication')).json.offset, (await s.next(back, 'publication')).json.offset];
  assert.deepEqual(replayed, [offset + 1, offset + 2], 'the missed publications follow, in order');
  return { sent, joined };
}

/** A watcher joined with presence sees another member join, then leave. */
async function memberComesAndGoes(s) {
  const watcher = await s.sessionless();
  s.send(watcher, { ...example('channel.join'), presence: true });
  await s.next(watcher, 'CHANNEL_JOINED');
  const other = await s.sessionless();
  s.send(other, example('channel.join'));
  await s.next(other, 'CHANNEL_JOINED');
  const joined = (await s.next(watcher, 'CHANNEL_MEMBER_JOINED')).json;
  s.send(other, example('channel.leave'));
  const left = (await s.next(watcher, 'CHANNEL_MEMBER_LEFT')).json;
  assert.deepEqual(left.client, joined.client);
  return { joined, left };
}

const warning = (kind) => (m) => m.json?.type === 'warning' && m.json.payload?.type === kind;
const BOTH = [...transports].reverse();

/**
 * One scenario per marked example: `run(scene)` resolves to the frame the server sent
 * (for a client frame: the frame as the server passed it on, or as sent once the server
 * reacted as documented). `config` configures the manager; `transports` defaults to
 * the bridge alone.
 */
const scenarios = {
  'client_connected.self': {
    transports: BOTH,
    async run(s) {
      const { sessionId } = s.manager.createSession();
      const client = await s.member(sessionId);
      assert.equal(client.welcome.sessionId, sessionId);
      return client.welcome;
    },
  },
  'client_connected.peer': {
    transports: BOTH,
    async run(s) {
      const { sessionId } = s.manager.createSession();
      const first = await s.member(sessionId);
      const second = await s.member(sessionId);
      const notice = (await s.next(first, 'client_connected')).json;
      assert.deepEqual([notice.clientId, notice.connectionId], [second.welcome.connectionId, second.welcome.connectionId]);
      return notice;
    },
  },
  'relay.message': {
    transports: BOTH,
    async run(s) {
      const { members: [a, b] } = await s.session([null, null]);
      return s.relayed(a, b, example('relay.message'));
    },
  },
  client_disconnected: {
    transports: BOTH,
    async run(s) {
      const { members: [a, b] } = await s.session([null, null]);
      s.send(a, { type: 'hello', clientId: 'alice' });
      await s.next(b, 'hello');
      await a.close();
      const farewell = (await s.next(b, 'client_disconnected')).json;
      assert.deepEqual([farewell.clientId, farewell.connectionId], ['alice', a.welcome.connectionId]);
      return farewell;
    },
  },
  ping: {
    async run(s) {
      const client = await s.sessionless();
      const sent = example('ping');
      s.send(client, sent);
      await s.next(client, 'pong');
      return sent;
    },
  },
  pong: {
    transports: BOTH,
    async run(s) {
      const client = await s.sessionless();
      s.send(client, example('ping'));
      return (await s.next(client, 'pong')).json;
    },
  },
  'ping.with-id': {
    async run(s) {
      const client = await s.sessionless();
      const sent = example('ping.with-id');
      s.send(client, sent);
      assert.equal((await s.next(client, 'pong')).json.id, sent.id);
      return sent;
    },
  },
  'pong.with-id': {
    async run(s) {
      const client = await s.sessionless();
      const sent = example('ping.with-id');
      s.send(client, sent);
      const pong = (await s.next(client, 'pong')).json;
      assert.equal(pong.id, sent.id, 'the id comes back');
      return pong;
    },
  },
  'ping.upper': {
    async run(s) {
      const client = await s.sessionless();
      const sent = example('ping.upper');
      s.send(client, sent);
      await s.next(client, 'PONG');
      return sent;
    },
  },
  'pong.upper': {
    async run(s) {
      const client = await s.sessionless();
      s.send(client, example('ping.upper'));
      return (await s.next(client, 'PONG')).json;
    },
  },
  token_expiring: {
    transports: BOTH,
    config: TOKEN_AUTH,
    async run(s) {
      const client = await tokenHolder(s);
      const warning = (await s.next(client, 'token_expiring')).json;
      assert.ok(Math.abs(warning.data.expiresAt - (Date.now() + 5000)) <= 2000, 'expiresAt is the token exp, in ms');
      return warning;
    },
  },
  refresh: {
    config: TOKEN_AUTH,
    async run(s) {
      const client = await tokenHolder(s);
      const sent = refresh();
      s.send(client, sent);
      await s.next(client, 'refreshed');
      return sent;
    },
  },
  refreshed: {
    transports: BOTH,
    config: TOKEN_AUTH,
    async run(s) {
      const client = await tokenHolder(s);
      s.send(client, refresh());
      const refreshed = (await s.next(client, 'refreshed')).json;
      assert.ok(refreshed.data.expiresAt >= Date.now() + 3_500_000, 'the new expiry');
      return refreshed;
    },
  },
  'error.invalid-token': {
    config: TOKEN_AUTH,
    async run(s) {
      const client = await tokenHolder(s);
      s.send(client, refresh(3600, { sub: 'someone-else' }));
      return (await s.next(client, 'error')).json;
    },
  },
  'error.invalid-message': {
    transports: BOTH,
    async run(s) {
      const { members: [a] } = await s.session([null]);
      s.send(a, 'this is not JSON');
      return (await s.next(a, 'error')).json;
    },
  },
  'error.upper': {
    transports: BOTH,
    async run(s) {
      const client = await s.sessionless();
      const offending = example('error.upper').data.originalMessage;
      s.send(client, offending);
      const error = (await s.next(client, 'ERROR')).json;
      assert.deepEqual(error.data.originalMessage, offending, 'the offending message is repeated');
      return error;
    },
  },
  'error.upper.unparsable': {
    async run(s) {
      const client = await s.sessionless();
      s.send(client, { type: 'PING' });
      await s.next(client, 'PONG');
      const text = example('error.upper.unparsable').data.originalMessage;
      s.send(client, text);
      const error = (await s.next(client, 'ERROR')).json;
      assert.equal(error.data.originalMessage, text, 'the text is repeated');
      return error;
    },
  },
  'error.correlation-id': {
    async run(s) {
      const client = await s.sessionless();
      const id = example('error.correlation-id').data.correlationId;
      s.send(client, { ...example('channel.publish'), id });
      const error = (await s.next(client, 'error')).json;
      assert.deepEqual([error.data.correlationId, error.payload.correlationId], [id, id]);
      return error;
    },
  },
  'error.no-session': {
    async run(s) {
      const client = await s.sessionless();
      s.send(client, example('relay.message'));
      return (await s.next(client, 'error')).json;
    },
  },
  'error.rate-limited': {
    config: { rateLimit: { messagesPerSecond: 1, burst: 1 } },
    async run(s) {
      const client = await s.sessionless();
      for (let i = 0; i < 4; i++) s.send(client, { type: 'ping' });
      return (await s.next(client, 'error')).json;
    },
  },
  'error.connection-limit': {
    config: { maxConnectionsPerUser: 1 },
    async run(s) {
      await s.sessionless({ 'x-user': 'dr-lee' });
      const refused = new TestClient(s.server.sessionless(s.transport), { headers: { 'x-user': 'dr-lee' } });
      s.clients.push(refused);
      const error = (await s.next(refused, 'error')).json;
      assert.deepEqual(await refused.closedWithin(TIMEOUT_MS), { code: 1008, reason: 'Connection limit' });
      return error;
    },
  },
  'ack.request': {
    async run(s) {
      const { members: [a, b] } = await s.session([null, null]);
      const relayed = await s.relayed(a, b, example('ack.request'));
      assert.equal((await s.next(a, 'ACK')).json.correlationId, relayed.id);
      return relayed;
    },
  },
  ack: {
    transports: BOTH,
    async run(s) {
      const { members: [a, b] } = await s.session([null, null]);
      const sent = example('ack.request');
      await s.relayed(a, b, sent);
      const ack = (await s.next(a, 'ACK')).json;
      assert.deepEqual([ack.correlationId, ack.delivered], [sent.id, 1]);
      return ack;
    },
  },
  nack: {
    async run(s) {
      const client = await s.sessionless();
      const id = example('nack').correlationId;
      s.send(client, { ...example('channel.publish'), id, ack: true });
      const nack = (await s.next(client, 'NACK')).json;
      assert.equal(nack.correlationId, id);
      return nack;
    },
  },
  request: {
    async run(s) {
      s.manager.onRequest(async () => example('response').payload);
      const client = await s.sessionless();
      const sent = example('request');
      s.send(client, sent);
      assert.equal((await s.next(client, 'response')).json.requestId, sent.requestId);
      return sent;
    },
  },
  response: {
    transports: BOTH,
    async run(s) {
      const received = [];
      s.manager.onRequest(async (payload) => {
        received.push(payload);
        return { slides: 12 };
      });
      const { members: [client] } = await s.session([null]);
      const sent = example('request');
      s.send(client, sent);
      const response = (await s.next(client, 'response')).json;
      assert.deepEqual(received, [sent.payload], 'the handler got the payload');
      assert.deepEqual([response.requestId, response.payload], [sent.requestId, { slides: 12 }]);
      return response;
    },
  },
  'error.request-failed': {
    async run(s) {
      s.manager.onRequest(async () => {
        throw new Error('Case S24-1001 is archived');
      });
      const client = await s.sessionless();
      const sent = example('request');
      s.send(client, sent);
      const error = (await s.next(client, 'error')).json;
      assert.deepEqual([error.data.requestId, error.payload.requestId], [sent.requestId, sent.requestId]);
      return error;
    },
  },
  'error.request-timeout': {
    config: { requestTimeoutMs: 200 },
    async run(s) {
      s.manager.onRequest(() => new Promise(() => {}));
      const client = await s.sessionless();
      s.send(client, example('request'));
      return (await s.next(client, 'error')).json;
    },
  },
  'error.no-handler': {
    async run(s) {
      const client = await s.sessionless();
      s.send(client, example('request'));
      return (await s.next(client, 'error')).json;
    },
  },
  'channel.join': {
    async run(s) {
      const client = await s.sessionless();
      const sent = example('channel.join');
      s.send(client, sent);
      await s.next(client, 'CHANNEL_JOINED');
      assert.equal(s.manager.getStats().channels.breakdown[sent.channel], 1);
      return sent;
    },
  },
  'channel.joined': {
    transports: BOTH,
    async run(s) {
      const client = await s.sessionless();
      s.send(client, example('channel.join'));
      return (await s.next(client, 'CHANNEL_JOINED')).json;
    },
  },
  'channel.leave': {
    async run(s) {
      const client = await s.sessionless();
      s.send(client, example('channel.join'));
      await s.next(client, 'CHANNEL_JOINED');
      const sent = example('channel.leave');
      s.send(client, sent);
      await s.next(client, 'CHANNEL_LEFT');
      assert.equal(s.manager.getStats().channels.total, 0, 'the empty channel is gone');
      return sent;
    },
  },
  'channel.left': {
    async run(s) {
      const client = await s.sessionless();
      s.send(client, example('channel.join'));
      await s.next(client, 'CHANNEL_JOINED');
      s.send(client, example('channel.leave'));
      return (await s.next(client, 'CHANNEL_LEFT')).json;
    },
  },
  'channel.publish': {
    async run(s) {
      const [publisher, reader] = [await s.sessionless(), await s.sessionless()];
      for (const client of [publisher, reader]) {
        s.send(client, example('channel.join'));
        await s.next(client, 'CHANNEL_JOINED');
      }
      const received = await s.relayed(publisher, reader, example('channel.publish'));
      await s.noErrors(publisher);
      return received;
    },
  },
  'channel.join.user': {
    async run(s) {
      const sent = example('channel.join.user');
      const client = await s.sessionless({ 'x-user': sent.channel.slice('user:'.length) });
      s.send(client, sent);
      assert.equal((await s.next(client, 'CHANNEL_JOINED')).json.channel, sent.channel);
      return sent;
    },
  },
  'error.channel-forbidden': {
    async run(s) {
      const client = await s.sessionless({ 'x-user': 'someone-else' });
      const offending = example('error.channel-forbidden').data.originalMessage;
      s.send(client, offending);
      const error = (await s.next(client, 'ERROR')).json;
      assert.deepEqual(error.data.originalMessage, offending);
      return error;
    },
  },
  'channel.join.private': {
    config: { auth: { jwt: { secret: SECRET }, required: false } },
    async run(s) {
      const client = await s.sessionless({ 'x-user': 'dr-lee' });
      const documented = example('channel.join.private');
      const sent = { ...documented, token: token(60, { channel: documented.channel }) };
      s.send(client, sent);
      assert.equal((await s.next(client, 'CHANNEL_JOINED')).json.channel, documented.channel);
      return sent;
    },
  },
  'error.publish-refused': {
    config: { hooks: { publish: () => ({ allow: false, reason: 'Case S24-1001 is closed for comments' }) } },
    async run(s) {
      const { members: [a, b] } = await s.session([null, null]);
      s.send(a, example('relay.message'));
      const error = (await s.next(a, 'error')).json;
      await s.noErrors(b);
      assert.equal(b.inbox.filter((m) => m.json?.type === example('relay.message').type).length, 0, 'not relayed');
      return error;
    },
  },
  'error.unavailable': {
    config: { hookTimeoutMs: 200, hooks: { publish: () => new Promise(() => {}) } },
    async run(s) {
      const { members: [a] } = await s.session([null]);
      s.send(a, example('relay.message'));
      return (await s.next(a, 'error')).json;
    },
  },
  'server-send.binary': {
    binary: true,
    async run({ binary }) {
      const documented = example('server-send.binary');
      const client = new TestClient(`${binary.ws}/`);
      try {
        await client.opened;
        client.send(JSON.stringify({ type: 'JOIN_CHANNEL', channel: documented.channel }));
        await client.next((m) => m.json?.type === 'CHANNEL_JOINED', TIMEOUT_MS);
        const body = { channel: documented.channel, type: documented.type, data: documented.data };
        const answer = await fetch(`${binary.base}/v1/broadcast`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
        assert.deepEqual(await answer.json(), { delivered: 1 });
        const sent = (await client.next((m) => m.json?.type === documented.type, TIMEOUT_MS)).json;
        assert.deepEqual(sent.data, documented.data);
        return sent;
      } finally {
        client.ws.terminate();
      }
    },
  },
  'client_connected.positions': {
    transports: BOTH,
    config: { history: { size: 100, ttlMs: 60_000 } },
    async run(s) {
      const { sessionId } = s.manager.createSession();
      const client = await s.open(`${s.server.url(s.transport, sessionId)}?positions=1`);
      return (await s.next(client, 'client_connected')).json;
    },
  },
  publication: {
    transports: BOTH,
    config: { history: { size: 100, ttlMs: 60_000 } },
    async run(s) {
      const { sessionId } = s.manager.createSession();
      const reader = await s.open(`${s.server.url(s.transport, sessionId)}?positions=1`);
      await s.next(reader, 'client_connected');
      const publisher = await s.member(sessionId);
      const documented = example('publication');
      s.send(publisher, documented.data);
      const publication = (await s.next(reader, 'publication')).json;
      assert.deepEqual([publication.from, publication.data], [publisher.welcome.connectionId, documented.data]);
      return publication;
    },
  },
  'client_connected.recovered': {
    transports: BOTH,
    config: { history: { size: 100, ttlMs: 60_000 } },
    async run(s) {
      const { sessionId } = s.manager.createSession();
      const url = s.server.url(s.transport, sessionId);
      const first = await s.open(`${url}?positions=1`);
      const { epoch, connectionId } = (await s.next(first, 'client_connected')).json;
      s.manager.publish(sessionId, { type: 'missed' });
      await s.next(first, 'publication');
      first.ws.terminate();
      s.manager.publish(sessionId, { type: 'missed' });
      const back = await s.open(`${url}?since=${epoch}:1&previous=${connectionId}`);
      const welcome = (await s.next(back, 'client_connected')).json;
      assert.equal((await s.next(back, 'publication')).json.offset, 2, 'the missed publication follows');
      return welcome;
    },
  },
  'http.history': {
    binary: true,
    async run({ binary }) {
      const { sessionId } = await (await fetch(`${binary.base}/v1/sessions`, { method: 'POST', body: '{"history":{"size":10,"ttlMs":60000}}' })).json();
      const documented = example('http.history').publications[0].data;
      const publish = () => fetch(`${binary.base}/v1/sessions/${sessionId}/messages`, { method: 'POST', body: JSON.stringify(documented) });
      await publish();
      const { epoch } = await (await fetch(`${binary.base}/v1/sessions/${sessionId}/history`)).json();
      await publish();
      return (await fetch(`${binary.base}/v1/sessions/${sessionId}/history?since=${epoch}:1`)).json();
    },
  },
  'http.published': {
    binary: true,
    async run({ binary }) {
      const { sessionId } = await (await fetch(`${binary.base}/v1/sessions`, { method: 'POST', body: '{"history":{"size":10,"ttlMs":60000}}' })).json();
      const member = new TestClient(`${binary.ws}/session/${sessionId}`);
      try {
        await member.opened;
        const post = () => fetch(`${binary.base}/v1/sessions/${sessionId}/messages`, { method: 'POST', body: '{"type":"op"}' }).then((r) => r.json());
        await post();
        return await post();
      } finally {
        member.ws.terminate();
      }
    },
  },
  'http.presence': {
    binary: true,
    async run({ binary }) {
      const { sessionId } = await (await fetch(`${binary.base}/v1/sessions`, { method: 'POST' })).json();
      const member = new TestClient(`${binary.ws}/session/${sessionId}`);
      try {
        await member.nextOfType('client_connected', TIMEOUT_MS);
        return await (await fetch(`${binary.base}/v1/sessions/${sessionId}/presence`)).json();
      } finally {
        member.ws.terminate();
      }
    },
  },
  'channel.join.positions': {
    transports: BOTH,
    config: CHANNEL_HISTORY,
    async run(s) {
      const client = await s.sessionless();
      const sent = example('channel.join.positions');
      s.send(client, sent);
      assert.equal(typeof (await s.next(client, 'CHANNEL_JOINED')).json.epoch, 'string', 'answered with a position');
      return sent;
    },
  },
  'channel.joined.positions': {
    transports: BOTH,
    config: CHANNEL_HISTORY,
    async run(s) {
      const client = await s.sessionless();
      s.send(client, example('channel.join.positions'));
      return (await s.next(client, 'CHANNEL_JOINED')).json;
    },
  },
  'channel.publication': {
    transports: BOTH,
    config: CHANNEL_HISTORY,
    async run(s) {
      const reader = await s.sessionless();
      s.send(reader, example('channel.join.positions'));
      await s.next(reader, 'CHANNEL_JOINED');
      const writer = await s.sessionless();
      s.send(writer, example('channel.join'));
      await s.next(writer, 'CHANNEL_JOINED');
      const message = example('channel.publication').data;
      s.send(writer, message);
      const publication = (await s.next(reader, 'publication')).json;
      assert.deepEqual(publication.data, message);
      return publication;
    },
  },
  'channel.join.since': {
    config: CHANNEL_HISTORY,
    async run(s) {
      return (await channelRecovered(s)).sent;
    },
  },
  'channel.joined.recovered': {
    transports: BOTH,
    config: CHANNEL_HISTORY,
    async run(s) {
      return (await channelRecovered(s)).joined;
    },
  },
  'channel.presence.ask': {
    async run(s) {
      const client = await s.sessionless();
      s.send(client, example('channel.join'));
      await s.next(client, 'CHANNEL_JOINED');
      const asked = example('channel.presence.ask');
      s.send(client, asked);
      assert.equal((await s.next(client, 'PRESENCE')).json.clients.length, 1);
      return asked;
    },
  },
  'channel.presence': {
    transports: BOTH,
    async run(s) {
      const client = await s.sessionless();
      s.send(client, example('channel.join'));
      await s.next(client, 'CHANNEL_JOINED');
      s.send(client, example('channel.presence.ask'));
      return (await s.next(client, 'PRESENCE')).json;
    },
  },
  'channel.member-joined': {
    transports: BOTH,
    async run(s) {
      return (await memberComesAndGoes(s)).joined;
    },
  },
  'channel.member-left': {
    transports: BOTH,
    async run(s) {
      return (await memberComesAndGoes(s)).left;
    },
  },
  request_control: {
    async run(s) {
      const { alice, bob } = await aliceInControl(s, { conflictResolution: 'user-choice' });
      return s.relayed(bob, alice, example('request_control'));
    },
  },
  'accept_control.granted': {
    transports: BOTH,
    async run(s) {
      const { sessionId, members: [, bob] } = await s.session(['alice', 'bob']);
      s.send(bob, example('request_control'));
      const granted = (await s.next(bob, 'accept_control')).json;
      assert.equal(s.manager.getSession(sessionId).activeClientId, 'bob');
      return granted;
    },
  },
  'decline_control.transfer_in_progress': {
    async run(s) {
      const { sessionId, members: [alice, bob, carol] } = await s.session(['alice', 'bob', 'carol'], { conflictResolution: 'user-choice' });
      s.send(alice, { type: 'request_control', clientId: 'alice', data: {}, timestamp: Date.now(), protocol_version: 1 });
      await s.next(alice, 'accept_control');
      await s.relayed(bob, alice, example('request_control'));
      s.send(carol, { ...example('request_control'), clientId: 'carol' });
      const declined = (await s.next(carol, 'decline_control')).json;
      assert.equal(s.manager.getSession(sessionId).activeClientId, 'alice');
      return declined;
    },
  },
  'decline_control.conflict_resolution_denied': {
    async run(s) {
      const { alice, bob } = await aliceInControl(s);
      s.send(bob, example('request_control'));
      const declined = (await s.next(bob, 'decline_control')).json;
      await s.noErrors(alice);
      assert.equal(alice.inbox.filter((m) => m.json?.type === 'request_control').length, 0, 'not forwarded');
      return declined;
    },
  },
  'decline_control.timeout': {
    config: { controlRequestTimeoutMs: 200 },
    async run(s) {
      const { bob } = await bobWaiting(s);
      return (await s.next(bob, 'decline_control')).json;
    },
  },
  accept_control: {
    async run(s) {
      const { sessionId, alice, bob } = await bobWaiting(s);
      const received = await s.relayed(alice, bob, example('accept_control'));
      assert.equal(s.manager.getSession(sessionId).activeClientId, 'bob');
      return received;
    },
  },
  confirm_transfer: {
    async run(s) {
      const { alice, bob } = await bobWaiting(s);
      await s.relayed(alice, bob, example('accept_control'));
      const confirmation = (await s.next(bob, 'confirm_transfer')).json;
      assert.deepEqual([confirmation.clientId, confirmation.data.newActiveClient], ['alice', 'bob']);
      await s.noErrors(alice);
      assert.equal(alice.inbox.filter((m) => m.json?.type === 'confirm_transfer').length, 0, 'not to the accepter');
      return confirmation;
    },
  },
  decline_control: {
    async run(s) {
      const { sessionId, alice, bob } = await bobWaiting(s);
      const received = await s.relayed(alice, bob, example('decline_control'));
      assert.equal(s.manager.getSession(sessionId).activeClientId, 'alice');
      return received;
    },
  },
  offer_control: {
    async run(s) {
      const { alice, bob } = await aliceInControl(s);
      return s.relayed(alice, bob, example('offer_control'));
    },
  },
  'accept_control.offer': {
    transports: BOTH,
    async run(s) {
      const { sessionId, alice, bob } = await aliceInControl(s);
      await s.relayed(alice, bob, example('offer_control'));
      const received = await s.relayed(bob, alice, example('accept_control.offer'));
      assert.equal(s.manager.getSession(sessionId).activeClientId, 'bob', 'the accept takes the offered control');
      return received;
    },
  },
  role_changed: {
    async run(s) {
      const { sessionId, alice, bob } = await aliceInControl(s);
      const received = await s.relayed(bob, alice, example('role_changed'));
      assert.equal(s.manager.getSession(sessionId).activeClientId, 'bob', 'announcing active takes control');
      return received;
    },
  },
  'accept_control.taken': {
    transports: BOTH,
    async run(s) {
      const { sessionId, alice, bob } = await aliceInControl(s);
      s.send(bob, example('role_changed'));
      const told = (await s.next(alice, 'accept_control')).json;
      assert.equal(s.manager.getSession(sessionId).activeClientId, 'bob');
      await s.noErrors(bob);
      assert.equal(bob.inbox.filter((m) => m.json?.type === 'accept_control').length, 0, 'only the member that lost control is told');
      return told;
    },
  },
  release_control: {
    async run(s) {
      const { sessionId, alice, bob } = await aliceInControl(s);
      const received = await s.relayed(alice, bob, example('release_control'));
      assert.equal(s.manager.getSession(sessionId).activeClientId, null, 'control is free');
      return received;
    },
  },
  state_update: {
    async run(s) {
      const { alice, bob } = await aliceInControl(s);
      return s.relayed(alice, bob, example('state_update'));
    },
  },
  'nack.not-active': {
    async run(s) {
      const { alice, bob } = await aliceInControl(s);
      const id = example('nack.not-active').correlationId;
      s.send(bob, { ...example('state_update'), clientId: 'bob', id, ack: true });
      const nack = (await s.next(bob, 'NACK')).json;
      assert.equal(nack.correlationId, id);
      await s.noErrors(alice);
      assert.equal(alice.inbox.filter((m) => m.json?.type === 'state_update').length, 0, 'dropped');
      return nack;
    },
  },
  'client_disconnected.active': {
    async run(s) {
      const { sessionId, alice, bob } = await aliceInControl(s);
      await alice.close();
      const farewell = (await s.next(bob, 'client_disconnected')).json;
      assert.equal(farewell.clientId, 'alice');
      assert.equal(s.manager.getSession(sessionId).activeClientId, null);
      return farewell;
    },
  },
  register: {
    async run(s) {
      const client = await s.sessionless();
      const sent = example('register');
      s.send(client, sent);
      await s.next(client, 'registered');
      assert.equal(s.manager.getStats().registrations, 1);
      return sent;
    },
  },
  registered: {
    transports: BOTH,
    async run(s) {
      const client = await s.sessionless();
      const sent = example('register');
      s.send(client, sent);
      const registered = (await s.next(client, 'registered')).json;
      assert.deepEqual(registered.payload, { caseId: sent.payload.caseId, windowId: sent.payload.windowId });
      return registered;
    },
  },
  'warning.multi-case': {
    async run(s) {
      const { first, second } = await twoCases(s);
      const [one, two] = [(await s.next(first, warning('multi-case'))).json, (await s.next(second, warning('multi-case'))).json];
      assert.deepEqual(one, two, 'every connection of the user is warned');
      assert.deepEqual(one.payload.cases, example('warning.multi-case').payload.cases);
      return one;
    },
  },
  'warning.case-mismatch': {
    async run(s) {
      const { first } = await twoCases(s);
      const mismatch = (await s.next(first, warning('case-mismatch'))).json;
      const documented = example('warning.case-mismatch').payload;
      assert.deepEqual([mismatch.payload.caseId, mismatch.payload.windowId, mismatch.payload.cases], [documented.caseId, documented.windowId, documented.cases]);
      return mismatch;
    },
  },
  focus: {
    async run(s) {
      const client = await s.sessionless();
      s.send(client, example('register'));
      await s.next(client, 'registered');
      const sent = example('focus');
      s.send(client, sent);
      await s.noErrors(client);
      return sent;
    },
  },
  heartbeat: {
    async run(s) {
      const client = await s.sessionless();
      s.send(client, example('register'));
      await s.next(client, 'registered');
      const sent = example('heartbeat');
      s.send(client, sent);
      await s.noErrors(client);
      return sent;
    },
  },
  deregister: {
    async run(s) {
      const { first, second } = await twoCases(s);
      const sent = example('deregister');
      s.send(second, sent);
      await s.next(first, 'warning_cleared');
      await s.noErrors(second);
      assert.equal(s.manager.getStats().registrations, 1);
      return sent;
    },
  },
  warning_cleared: {
    async run(s) {
      const { first, second } = await twoCases(s);
      s.send(second, example('deregister'));
      const cleared = (await s.next(first, 'warning_cleared')).json;
      assert.deepEqual(cleared.payload, example('warning_cleared').payload);
      return cleared;
    },
  },
  'error.forbidden': {
    async run(s) {
      const client = await s.sessionless({ 'x-user': 'dr-lee' });
      const register = example('register');
      s.send(client, { ...register, payload: { ...register.payload, userId: 'someone-else' } });
      return (await s.next(client, 'error')).json;
    },
  },
  'error.window-limit': {
    async run(s) {
      const client = await s.sessionless();
      const { payload } = example('register');
      for (let i = 0; i < 64; i++) s.send(client, { type: 'register', payload: { ...payload, windowId: `window-${i}` } });
      for (let i = 0; i < 64; i++) await s.next(client, 'registered');
      s.send(client, { type: 'register', payload: { ...payload, windowId: 'one-too-many' } });
      const error = (await s.next(client, 'error')).json;
      s.send(client, { type: 'register', payload: { ...payload, windowId: 'window-0' } });
      await s.next(client, 'registered');
      return error;
    },
  },
};

describe('docs/protocol.md', () => {
  it('is linked from the README, which links no PROTOCOL.md', () => {
    const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
    assert.ok(/\]\(docs\/protocol\.md\)/.test(readme), 'the README links docs/protocol.md');
    const stale = readme.match(/\]\([^)]*PROTOCOL\.md[^)]*\)/g) ?? [];
    assert.deepEqual(stale, [], 'the README links no PROTOCOL.md');
  });

  it('marks every json example, once each, and each is JSON', () => {
    assert.ok(page.examples.size > 0, 'the page has marked examples');
    assert.deepEqual(page.unmarked.map((line) => `line ${line}`), [], 'every json block is marked <!-- frame: NAME -->');
    assert.deepEqual(page.problems, []);
  });

  it('has a scenario for every marked example, and an example for every scenario', () => {
    const marked = [...page.examples.keys()].sort();
    const checked = Object.keys(scenarios).sort();
    assert.deepEqual(marked.filter((name) => !checked.includes(name)), [], 'marked examples without a scenario');
    assert.deepEqual(checked.filter((name) => !marked.includes(name)), [], 'scenarios whose example is gone from the page');
  });

  for (const [name, { value, line }] of page.examples) {
    const scenario = scenarios[name];
    for (const transport of scenario?.binary ? ['binary'] : (scenario?.transports ?? ['bridge'])) {
      it(`${name} (line ${line}, ${transport})`, async () => {
        assert.ok(scenario, `no scenario produces the example "${name}" at line ${line} of docs/protocol.md`);
        let real;
        if (scenario.binary) {
          const binary = await startBinary();
          try {
            real = await scenario.run({ binary });
          } finally {
            binary.child.kill('SIGTERM');
            await binary.child.exited;
          }
        } else {
          const scene = new Scene(await startMixedServer(scenario.config), transport);
          try {
            real = await scenario.run(scene);
          } finally {
            await scene.close();
          }
        }
        const problems = differences(value, real);
        assert.deepEqual(problems, [], `docs/protocol.md line ${line} (${name}) differs from what the server sent`);
      });
    }
  }
});
