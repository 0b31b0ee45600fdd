// examples/express/server.js: Express + ws, sessions created over HTTP, relayed by Switchyard.
// The page at / is a demo of @switchyard/client: relayed messages and case awareness.
const express = require('express');
const { createServer } = require('node:http');
const path = require('node:path');
const { WebSocketServer } = require('ws');
const { RelaySessionManager } = require('switchyard');

async function start({ port = 3000, host, config } = {}) {
  const sessionManager = new RelaySessionManager(config);
  const app = express();
  app.use(express.json());
  app.use(express.static(path.join(__dirname, 'public')));
  app.use('/client', express.static(path.dirname(require.resolve('@switchyard/client/package.json'))));

  app.post('/api/sessions', (req, res) => {
    const session = sessionManager.createSession({ metadata: req.body?.metadata ?? null });
    res.status(201).json({
      sessionId: session.sessionId,
      wsUrl: `ws://${req.headers.host}/session/${session.sessionId}`,
      expiresAt: session.expiresAt,
    });
  });

  app.get('/api/sessions/:sessionId', (req, res) => {
    const session = sessionManager.getSession(req.params.sessionId);
    if (session) res.json(session);
    else res.status(404).json({ error: 'Session not found' });
  });

  app.delete('/api/sessions/:sessionId', (req, res) => {
    res.json({ deleted: sessionManager.deleteSession(req.params.sessionId) });
  });

  app.get('/api/stats', (req, res) => res.json(sessionManager.getStats()));

  // Members over Server-Sent Events, for browsers whose network refuses the WebSocket
  // upgrade: @switchyard/client falls back to these by itself.
  const eventStreams = sessionManager.eventStreamHandler();
  app.get('/session/:sessionId/events', eventStreams);
  app.post('/session/:sessionId/send', eventStreams);

  // The admin view (live sessions, connections, message rates, relay latency) and the
  // Prometheus metrics. Open to anyone here: in production, pass a token (the page asks
  // for it) or mount both behind your own auth.
  app.use('/admin', sessionManager.adminHandler({ token: process.env.ADMIN_TOKEN || undefined }));
  app.get('/metrics', (req, res) => res.type('text/plain; version=0.0.4').send(sessionManager.metrics()));

  const server = createServer(app);
  // ws reads each message whole before the relay sees it: capped at the relay's
  // maxMessageBytes, a bigger one is refused (1009) before it is buffered.
  const maxPayload = sessionManager.getStats().config.maxMessageBytes;
  const wss = new WebSocketServer({ server, maxPayload });
  wss.on('connection', (socket, request) => {
    const { pathname } = new URL(request.url, 'http://localhost');
    // Sessionless: case awareness (register, heartbeat, focus) and channels.
    if (pathname === '/awareness') return sessionManager.handleUpgrade(null, socket, request);
    const [, prefix, sessionId] = pathname.split('/');
    if (prefix !== 'session' || !sessionId) return socket.close(1008, 'Session not found');
    sessionManager.handleUpgrade(sessionId, socket, request);
  });

  sessionManager.start();
  // ws re-emits the server's errors (a port in use among them) on itself.
  await new Promise((resolve, reject) => {
    wss.once('error', reject);
    server.listen(port, host, resolve);
  });
  return {
    url: `http://localhost:${server.address().port}`,
    sessionManager,
    async close() {
      await sessionManager.stop();
      wss.close();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

module.exports = { start };

if (require.main === module) {
  const port = Number(process.env.PORT) || 3000;
  start({ port }).then(({ url, close }) => {
    console.log(`Switchyard relay (Express example) listening on ${url}`);
    console.log(`Open ${url} in a browser: the page gives you a link for a second window of its session.`);
    console.log(`Or create a session with curl -X POST ${url}/api/sessions and connect two WebSocket clients to its wsUrl.`);
    console.log(`The admin view is at ${url}/admin/, Prometheus metrics at ${url}/metrics.`);
    const shutdown = () => close().then(() => process.exit(0));
    process.once('SIGINT', shutdown);
    process.once('SIGTERM', shutdown);
  }, (err) => {
    if (err.code === 'EADDRINUSE') console.error(`Port ${port} is in use. Stop what listens there, or pick another port: PORT=3001 npm start`);
    else console.error(err);
    process.exit(1);
  });
}
