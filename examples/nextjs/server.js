// examples/nextjs/server.js: a custom Next.js server that hands /session/:id upgrades (and
// their event-stream fallback) to Switchyard; pages/api/sessions.js creates sessions, app/api/realtime/route.js is the
// App Router fallback for clients without a WebSocket.
const fs = require('node:fs');
const { createServer } = require('node:http');
const path = require('node:path');
const next = require('next');
const { WebSocketServer } = require('ws');
const { RelaySessionManager } = require('switchyard');

async function start({ port = 3000, host, config, dev = false, dir = __dirname } = {}) {
  if (!dev && !fs.existsSync(path.join(dir, '.next', 'BUILD_ID'))) {
    throw new Error('The Next.js example is not built yet. Build and start it with: npm run start:nextjs');
  }
  // History lets clients recover after a reconnect, and app/api/realtime read what they missed.
  const sessionManager = new RelaySessionManager({ history: { size: 1000, ttlMs: 10 * 60 * 1000 }, ...config });
  // API routes are bundled apart from this file: globalThis is what both of them see.
  globalThis.switchyardSessionManager = sessionManager;
  sessionManager.start();
  const app = next({ dev, dir });
  await app.prepare();
  const handle = app.getRequestHandler();
  // Members over Server-Sent Events, for browsers whose network refuses the WebSocket
  // upgrade (@switchyard/client falls back to them by itself); Next.js has the rest.
  const eventStreams = sessionManager.eventStreamHandler();
  const server = createServer((req, res) => {
    if (/^\/session\/[^/]+\/(events|send)(\?|$)/.test(req.url)) return eventStreams(req, res);
    handle(req, res);
  });

  // ws reads each message whole before the relay sees it: capped at the relay's
  // maxMessageBytes, a bigger one is refused (1009) before it is buffered.
  const maxPayload = sessionManager.getStats().config.maxMessageBytes;
  const wss = new WebSocketServer({ noServer: true, maxPayload });
  const nextUpgrade = app.getUpgradeHandler();
  server.on('upgrade', (request, socket, head) => {
    const { pathname } = new URL(request.url, 'http://localhost');
    const match = /^\/session\/([^/]+)$/.exec(pathname);
    if (!match) return nextUpgrade(request, socket, head); // Next.js's own (HMR in dev)
    wss.handleUpgrade(request, socket, head, (ws) => sessionManager.handleUpgrade(match[1], ws, request));
  });

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  return {
    url: `http://localhost:${server.address().port}`,
    sessionManager,
    async close() {
      await sessionManager.stop();
      delete globalThis.switchyardSessionManager;
      wss.close();
      await new Promise((resolve) => server.close(resolve));
      await app.close?.();
    },
  };
}

module.exports = { start };

if (require.main === module) {
  const port = Number(process.env.PORT) || 3000;
  start({ port }).then(({ url }) => {
    console.log(`Switchyard relay (Next.js example) listening on ${url}; create a session with curl -X POST ${url}/api/sessions`);
  }, (err) => {
    if (err.code === 'EADDRINUSE') console.error(`Port ${port} is in use. Stop what listens there, or pick another port: PORT=3001 npm run start:nextjs`);
    else console.error(err.message);
    process.exit(1);
  });
}
