// __test__/hooks.test.js: the app in the path after the upgrade: `hooks.joinChannel` and
// `hooks.publish` (sync, async, throwing, slow), the order of a connection's messages while
// a hook is pending and its bound, private channels with subscription tokens, and what
// getStats() counts, over real sockets in both transports.
const { describe, it, after } = require('node:test');
const assert = require('node:assert/strict');
const { TestClient, joinedClient, assertQuiet, eventually, startMixedServer, transports } = require('./helpers');
const { sign, now } = require('./jwt');

const servers = [];
after(() => Promise.all(servers.map((s) => s.close())));

async function server(config) {
  const started = await startMixedServer({ maxClientsPerSession: 8, ...config });
  servers.push(started);
  return started;
}

async function client(url, user) {
  return joinedClient(url, { headers: user ? { 'x-user': user } : {} });
}

const send = (c, message) => c.send(JSON.stringify(message));
const answer = async (c, type) => (await c.nextOfType(type)).json;
const errorOf = async (c) => (await answer(c, 'error')).payload;
/** The error a `JOIN_CHANNEL` gets: upper case, as the message was. */
const joinError = async (c) => (await answer(c, 'ERROR')).payload;

/** A hook whose answers the test gives: each call waits in `asked` until answered. */
function heldHook() {
  const asked = [];
  const waiters = [];
  const hook = (question) =>
    new Promise((resolve) => {
      asked.push({ question, resolve });
      for (const wake of waiters.splice(0)) wake();
    });
  /** The next question, once it has been asked. */
  hook.next = async () => {
    while (asked.length === 0) await new Promise((wake) => waiters.push(wake));
    return asked.shift();
  };
  hook.pending = () => asked.length;
  return hook;
}

/** Captures console.error while `body` runs. */
async function capturingErrors(body) {
  const printed = [];
  const original = console.error;
  console.error = (...args) => printed.push(args.map(String).join(' '));
  try {
    await body(printed);
  } finally {
    console.error = original;
  }
  return printed;
}

for (const transport of transports) {
  describe(`joinChannel hook (${transport})`, () => {
    it('is asked who joins, sync or async; a refusal is CHANNEL_FORBIDDEN with its reason', async () => {
      const questions = [];
      const s = await server({
        hooks: {
          joinChannel: (question) => {
            questions.push(question);
            if (question.channel === 'open') return true;
            if (question.channel === 'later') return Promise.resolve({ allow: true });
            if (question.channel === 'closed') return false;
            return { allow: false, reason: `${question.identity.userId} is not in project 7` };
          },
        },
      });
      const { sessionId } = s.manager.createSession();
      const a = await client(s.url(transport, sessionId), 'alice');
      for (const channel of ['open', 'later']) {
        send(a, { type: 'JOIN_CHANNEL', channel });
        assert.deepEqual(await answer(a, 'CHANNEL_JOINED'), { type: 'CHANNEL_JOINED', channel });
      }
      send(a, { type: 'JOIN_CHANNEL', channel: 'closed' });
      assert.deepEqual(await joinError(a), { code: 'CHANNEL_FORBIDDEN', message: 'This channel may not be joined' });
      send(a, { type: 'JOIN_CHANNEL', channel: 'project:7' });
      assert.deepEqual(await joinError(a), { code: 'CHANNEL_FORBIDDEN', message: 'alice is not in project 7' });
      assert.deepEqual(questions[0], {
        channel: 'open',
        connectionId: a.welcome.connectionId,
        sessionId,
        identity: { clientId: a.welcome.connectionId, userId: 'alice' },
      });
      assert.deepEqual(s.manager.getStats().channels.breakdown, { open: 1, later: 1 });
      const { hooks } = s.manager.getStats();
      assert.equal(hooks.asked, 4);
      assert.equal(hooks.refused, 2);
      assert.equal(hooks.unavailable, 0);
      assert.deepEqual(s.manager.getStats().config.hooks, { joinChannel: true, publish: false });
    });

    it('cannot widen the channel rules: a join they refuse is not asked about', async () => {
      let asked = 0;
      const s = await server({ channels: { allow: ['chat:*'] }, hooks: { joinChannel: () => ++asked > 0 } });
      const a = await client(s.url(transport, s.manager.createSession().sessionId), 'alice');
      send(a, { type: 'JOIN_CHANNEL', channel: 'admin' });
      assert.equal((await joinError(a)).code, 'CHANNEL_FORBIDDEN');
      send(a, { type: 'JOIN_CHANNEL', channel: 'user:bob' });
      assert.equal((await joinError(a)).code, 'CHANNEL_FORBIDDEN');
      assert.equal(asked, 0);
    });
  });

  describe(`publish hook (${transport})`, () => {
    it('allows, refuses (PUBLISH_REFUSED, or NACK when acknowledged) and replaces, in sessions and channels', async () => {
      const questions = [];
      const s = await server({
        hooks: {
          publish: async ({ message, channel, sessionId, connectionId, identity }) => {
            questions.push({ type: message.type, channel, sessionId, connectionId, userId: identity.userId });
            if (message.type === 'spam') return { allow: false, reason: 'No spam here' };
            if (message.type === 'shout') return { message: { ...message, text: message.text.toLowerCase(), checked: true } };
            return true;
          },
        },
      });
      const { sessionId } = s.manager.createSession();
      const a = await client(s.url(transport, sessionId), 'alice');
      const b = await client(s.url(transport, sessionId), 'bob');
      const original = '{"type":"chat",  "text":"kept byte for byte"}';
      a.send(original);
      assert.equal((await b.nextOfType('chat')).text, original, 'an allowed message goes on as it was sent');
      send(a, { type: 'spam' });
      assert.deepEqual(await errorOf(a), { code: 'PUBLISH_REFUSED', message: 'No spam here' });
      send(a, { type: 'spam', id: 'm1', ack: true });
      const nack = await answer(a, 'NACK');
      assert.equal(nack.correlationId, 'm1');
      assert.deepEqual(nack.payload, { code: 'PUBLISH_REFUSED', message: 'No spam here' });
      send(a, { type: 'shout', text: 'HELLO' });
      assert.deepEqual((await b.nextOfType('shout')).json, { type: 'shout', text: 'hello', checked: true });

      for (const member of [a, b]) {
        send(member, { type: 'JOIN_CHANNEL', channel: 'news' });
        await answer(member, 'CHANNEL_JOINED');
      }
      send(a, { type: 'shout', channel: 'news', text: 'BREAKING' });
      assert.deepEqual((await b.next((m) => m.json?.type === 'shout' && m.json.channel === 'news')).json, {
        type: 'shout',
        channel: 'news',
        text: 'breaking',
        checked: true,
      });
      assert.deepEqual(questions[0], { type: 'chat', channel: undefined, sessionId, connectionId: a.welcome.connectionId, userId: 'alice' });
      assert.equal(questions.at(-1).channel, 'news');
      await assertQuiet(b, 100, (m) => m.json?.type !== 'spam');
    });

    it('is not asked about control, awareness or messages the relay refuses anyway', async () => {
      const asked = [];
      const s = await server({ hooks: { publish: ({ message }) => asked.push(message.type) > 0 } });
      const { sessionId } = s.manager.createSession();
      const a = await client(s.url(transport, sessionId), 'alice');
      send(a, { type: 'request_control' });
      send(a, { type: 'register', payload: { userId: 'alice', windowId: 'w1', caseId: 'c1' } });
      send(a, { type: 'ping', id: 1 });
      await answer(a, 'pong');
      send(a, { type: 'chat', channel: 'not-joined' });
      assert.equal((await errorOf(a)).code, 'NOT_IN_CHANNEL');
      const sessionless = new TestClient(s.sessionless(transport), { headers: { 'x-user': 'carol' } });
      await sessionless.opened;
      send(sessionless, { type: 'chat' });
      assert.equal((await errorOf(sessionless)).code, 'NO_SESSION');
      assert.deepEqual(asked, []);
    });

    it("keeps a connection's order while its hook is pending, and other connections go on meanwhile", async () => {
      const hook = heldHook();
      const s = await server({ hooks: { publish: hook } });
      const { sessionId } = s.manager.createSession();
      const a = await client(s.url(transport, sessionId), 'alice');
      const b = await client(s.url(transport, sessionId), 'bob');
      const c = await client(s.url(transport, sessionId), 'carol');
      for (let i = 1; i <= 3; i += 1) send(a, { type: 'chat', n: i });
      send(a, { type: 'ping', id: 'after-3' });
      const first = await hook.next();
      assert.equal(first.question.message.n, 1);
      send(b, { type: 'ping', id: 'b' });
      assert.equal((await answer(b, 'pong')).id, 'b', "another connection's messages are not held");
      await assertQuiet(a, 100, (m) => m.json?.type !== 'pong');
      assert.equal(hook.pending(), 0, 'the second message is asked about only once the first is answered');
      first.resolve(true);
      for (let i = 2; i <= 3; i += 1) {
        const next = await hook.next();
        assert.equal(next.question.message.n, i);
        next.resolve(true);
      }
      assert.equal((await answer(a, 'pong')).id, 'after-3');
      const seen = [];
      for (let i = 1; i <= 3; i += 1) seen.push((await c.nextOfType('chat')).json.n);
      assert.deepEqual(seen, [1, 2, 3]);
    });

    it('refuses with UNAVAILABLE when the hook throws, rejects, answers nonsense or outlives hookTimeoutMs, printing each hook once', async () => {
      const printed = await capturingErrors(async () => {
        const s = await server({
          hookTimeoutMs: 300,
          hooks: {
            publish: ({ message }) => {
              if (message.type === 'throw') throw new Error('database down');
              if (message.type === 'reject') return Promise.reject(new Error('timeout upstream'));
              if (message.type === 'nonsense') return 42;
              if (message.type === 'never') return new Promise(() => {});
              return true;
            },
          },
        });
        const { sessionId } = s.manager.createSession();
        const a = await client(s.url(transport, sessionId), 'alice');
        const b = await client(s.url(transport, sessionId), 'bob');
        for (const type of ['throw', 'reject', 'nonsense', 'never']) {
          send(a, { type });
          assert.deepEqual(await errorOf(a), { code: 'UNAVAILABLE', message: 'The application did not answer' }, type);
        }
        send(a, { type: 'chat', text: 'after the timeout' });
        assert.equal((await b.nextOfType('chat')).json.text, 'after the timeout', 'the connection goes on');
        assert.equal(s.manager.getStats().hooks.unavailable, 4);
      });
      const hookErrors = printed.filter((line) => line.includes('publish hook'));
      assert.equal(hookErrors.length, 1, `printed: ${printed.join('\n')}`);
      assert.match(hookErrors[0], /database down/);
    });

    it('holds at most 256 messages a connection; the next is refused RATE_LIMITED', async () => {
      const hook = heldHook();
      const s = await server({ hooks: { publish: hook } });
      const { sessionId } = s.manager.createSession();
      const a = await client(s.url(transport, sessionId), 'alice');
      const b = await client(s.url(transport, sessionId), 'bob');
      for (let i = 0; i < 260; i += 1) send(a, { type: 'chat', n: i });
      const refused = [];
      for (let i = 0; i < 4; i += 1) refused.push((await errorOf(a)).code);
      assert.deepEqual(refused, ['RATE_LIMITED', 'RATE_LIMITED', 'RATE_LIMITED', 'RATE_LIMITED']);
      for (let i = 0; i < 256; i += 1) (await hook.next()).resolve(true);
      for (let i = 0; i < 256; i += 1) assert.equal((await b.nextOfType('chat')).json.n, i);
    });
  });

  describe(`private channels (${transport})`, () => {
    const secret = 'a secret of at least thirty-two bytes';
    const token = (claims) => sign({ exp: now() + 60, ...claims }, { key: secret });

    it('are joined with a subscription token for that channel and user, and by no one else', async () => {
      const s = await server({ auth: { jwt: { secret }, required: false }, channels: { allow: ['chat:*'] } });
      const a = await client(s.url(transport, s.manager.createSession().sessionId), 'alice');
      const join = (extra) => send(a, { type: 'JOIN_CHANNEL', channel: 'private:doc-7', ...extra });
      join();
      assert.equal((await joinError(a)).code, 'CHANNEL_FORBIDDEN');
      const refusals = [
        [token({ sub: 'alice', channel: 'private:doc-8' }), /another channel/],
        [token({ sub: 'bob', channel: 'private:doc-7' }), /another user/],
        [sign({ sub: 'alice', channel: 'private:doc-7', exp: now() - 3600 }, { key: secret }), /refused/],
        [sign({ sub: 'alice', channel: 'private:doc-7', exp: now() + 60 }, { key: 'another secret, thirty-two bytes long' }), /refused/],
        ['not.a.token', /refused/],
      ];
      for (const [bad, reason] of refusals) {
        join({ token: bad });
        const error = await joinError(a);
        assert.equal(error.code, 'CHANNEL_FORBIDDEN');
        assert.match(error.message, reason);
      }
      join({ token: token({ sub: 'alice', channel: 'private:doc-7' }) });
      assert.deepEqual(await answer(a, 'CHANNEL_JOINED'), { type: 'CHANNEL_JOINED', channel: 'private:doc-7' }, 'channels.allow does not name private channels');
      const anonymous = await client(s.url(transport, s.manager.createSession().sessionId));
      send(anonymous, { type: 'JOIN_CHANNEL', channel: 'private:doc-7', token: token({ sub: 'alice', channel: 'private:doc-7' }) });
      assert.match((await joinError(anonymous)).message, /needs a connection with a user/);
    });

    it("are joined with the joinChannel hook's yes, without a token", async () => {
      const s = await server({ hooks: { joinChannel: ({ channel, identity }) => channel !== 'private:doc-7' || identity.userId === 'alice' } });
      const { sessionId } = s.manager.createSession();
      const a = await client(s.url(transport, sessionId), 'alice');
      const b = await client(s.url(transport, sessionId), 'bob');
      send(a, { type: 'JOIN_CHANNEL', channel: 'private:doc-7' });
      await answer(a, 'CHANNEL_JOINED');
      send(b, { type: 'JOIN_CHANNEL', channel: 'private:doc-7' });
      assert.equal((await joinError(b)).code, 'CHANNEL_FORBIDDEN');
    });
  });
}

for (const transport of transports) {
  describe(`token lifetime (${transport})`, () => {
    const secret = 'a secret of at least thirty-two bytes';
    const token = (sub, seconds) => sign({ sub, exp: now() + seconds }, { key: secret });
    const connect = (s, sessionId, jwt) => joinedClient(`${s.url(transport, sessionId)}?token=${jwt}`);

    it('warns ahead of exp, takes a refresh for the same user and a later exp, and closes 1008 the one left unrefreshed', async () => {
      const s = await server({ auth: { jwt: { secret } } });
      const { sessionId } = s.manager.createSession();
      // Both tokens expire within the refresh window (30 s): each is warned at once.
      const refreshed = await connect(s, sessionId, token('alice', 4));
      const left = await connect(s, sessionId, token('bob', 4));
      const warning = await answer(refreshed, 'token_expiring');
      assert.equal(warning.clientId, 'relay-server');
      assert.ok(Math.abs(warning.data.expiresAt - (Date.now() + 4000)) <= 2000, JSON.stringify(warning));

      send(refreshed, { type: 'refresh', token: token('mallory', 60) });
      assert.deepEqual(await errorOf(refreshed), { code: 'INVALID_TOKEN', message: 'The token is for another user' });
      send(refreshed, { type: 'refresh', token: 'not-a-token' });
      assert.equal((await errorOf(refreshed)).code, 'INVALID_TOKEN');
      send(refreshed, { type: 'refresh', token: token('alice', 60) });
      const renewed = await answer(refreshed, 'refreshed');
      assert.ok(renewed.data.expiresAt >= Date.now() + 58_000, JSON.stringify(renewed));
      send(refreshed, { type: 'refresh', token: token('alice', 30) });
      assert.equal((await errorOf(refreshed)).message, 'The new token must expire later than the one it replaces');

      assert.deepEqual(await left.closedWithin(15_000), { code: 1008, reason: 'Token expired' });
      send(refreshed, { type: 'ping', id: 'still here' });
      assert.equal((await answer(refreshed, 'pong')).id, 'still here', 'the refreshed connection outlives its first token');
    });

    it('with enforceExpiry false, leaves tokens checked at the upgrade only', async () => {
      const enforced = await server({ auth: { jwt: { secret } } });
      const relaxed = await server({ auth: { jwt: { secret, enforceExpiry: false } } });
      const clock = await connect(enforced, enforced.manager.createSession().sessionId, token('alice', 1));
      const kept = await connect(relaxed, relaxed.manager.createSession().sessionId, token('alice', 1));
      assert.equal((await clock.closedWithin(15_000)).reason, 'Token expired');
      send(kept, { type: 'ping', id: 'kept' });
      assert.equal((await answer(kept, 'pong')).id, 'kept');
      assert.ok(!kept.inbox.some((m) => m.json?.type === 'token_expiring'), 'no warning either');
    });
  });
}

describe('hook options', () => {
  it('are functions, named when they are not', () => {
    const { RelaySessionManager } = require('..');
    assert.throws(() => new RelaySessionManager({ hooks: { publish: 5 } }), { name: 'TypeError', message: /publish must be a function, got 5/ });
    assert.throws(() => new RelaySessionManager({ hooks: { connect() {} } }), { name: 'TypeError', message: /connect/ });
    assert.throws(() => new RelaySessionManager({ hookTimeoutMs: 0 }), { name: 'TypeError', message: /hookTimeoutMs/ });
  });
});
