// examples/quickstart/server.js: the README's quick start, the least a server needs.
const express = require('express');
const { RelaySessionManager } = require('switchyard');

const manager = new RelaySessionManager();
manager.start();

const app = express();
app.post('/api/sessions', (req, res) => {
  const { sessionId, expiresAt } = manager.createSession();
  res.status(201).json({ sessionId, wsUrl: `ws://${req.headers.host}/session/${sessionId}`, expiresAt });
});

const server = app.listen(Number(process.env.PORT ?? 3000), () => {
  console.log(`listening on http://localhost:${server.address().port}`);
});
// WebSockets to /session/<id> join that session; Rust owns those connections.
manager.attach(server);
