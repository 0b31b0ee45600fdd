// examples/native/server.js: Express with the native transport. attach() takes the
// /session/:sessionId upgrades from Node's HTTP server, and Rust serves those
// connections: relayed messages never enter the JavaScript thread.
const express = require('express');
const { createServer } = require('node:http');
const { RelaySessionManager } = require('switchyard');

async function start({ port = 3000, host, config } = {}) {
  const sessionManager = new RelaySessionManager(config);
  const app = express();
  app.use(express.json());

  app.post('/api/sessions', (req, res) => {
    const session = sessionManager.createSession({ metadata: req.body?.metadata ?? null });
    res.status(201).json({
      sessionId: session.sessionId,
      wsUrl: `ws://${req.headers.host}/session/${session.sessionId}`,
      expiresAt: session.expiresAt,
    });
  });

  const server = createServer(app);
  sessionManager.attach(server, {
    path: '/session/:sessionId',
    // Return who the client is, or null to refuse the upgrade with 401.
    authenticate: (request) => ({ clientId: request.headers['x-client-id'] }),
  });

  sessionManager.start();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  return {
    url: `http://localhost:${server.address().port}`,
    sessionManager,
    async close() {
      await sessionManager.stop();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

module.exports = { start };

if (require.main === module) {
  const port = Number(process.env.PORT) || 3000;
  start({ port }).then(({ url }) => {
    console.log(`Switchyard relay (native transport) listening on ${url}`);
  }, (err) => {
    if (err.code === 'EADDRINUSE') console.error(`Port ${port} is in use. Stop what listens there, or pick another port: PORT=3001 node examples/native/server.js`);
    else console.error(err);
    process.exit(1);
  });
}
