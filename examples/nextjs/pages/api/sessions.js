// examples/nextjs/pages/api/sessions.js: create a session; clients connect to its wsUrl.
export default function handler(req, res) {
  if (req.method !== 'POST') {
    res.setHeader('Allow', 'POST');
    return res.status(405).json({ error: 'Method not allowed' });
  }
  // Set by server.js, which owns the manager and the WebSocket upgrades.
  const sessionManager = globalThis.switchyardSessionManager;
  const session = sessionManager.createSession({ metadata: req.body?.metadata ?? null });
  res.status(201).json({
    sessionId: session.sessionId,
    wsUrl: `ws://${req.headers.host}/session/${session.sessionId}`,
    expiresAt: session.expiresAt,
  });
}
