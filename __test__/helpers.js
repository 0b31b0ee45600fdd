// __test__/helpers.js: WebSocket clients that record what they receive, and HTTP helpers.
const assert = require('node:assert/strict');
const WebSocket = require('ws');

const WAIT_MS = 3000;

/** A `ws` client that keeps every message it gets, so none is missed between awaits. */
class TestClient {
  constructor(url, options) {
    this.ws = new WebSocket(url, options);
    this.inbox = [];
    this.waiters = [];
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
      });
    });
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', resolve);
      this.ws.once('error', reject);
    });
    this.ws.on('error', () => {});
  }

  /** Takes the first message matching `match`, waiting for it if needed. */
  next(match = () => true, timeoutMs = WAIT_MS) {
    return new Promise((resolve, reject) => {
      const waiter = {
        check: () => {
          const index = this.inbox.findIndex(match);
          if (index === -1) return false;
          clearTimeout(timer);
          resolve(this.inbox.splice(index, 1)[0]);
          return true;
        },
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`no matching message within ${timeoutMs} ms; inbox: ${JSON.stringify(this.inbox.map((m) => m.text ?? `<${m.data.length} binary bytes>`))}`));
      }, timeoutMs);
      if (!waiter.check()) this.waiters.push(waiter);
    });
  }

  /** Takes the next message of this `type`. */
  nextOfType(type, timeoutMs) {
    return this.next((m) => m.json?.type === type, timeoutMs);
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

async function postJson(url, body = {}) {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: response.status, body: await response.json() };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

module.exports = { TestClient, joinedClient, assertQuiet, postJson, sleep };
