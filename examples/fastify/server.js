// examples/fastify/server.js: Fastify + @fastify/websocket, relayed by Switchyard.
const Fastify = require('fastify');
const websocket = require('@fastify/websocket');
const { RelaySessionManager } = require('switchyard');

async function start({ port = 3000, host, config } = {}) {
  const sessionManager = new RelaySessionManager(config);
  const fastify = Fastify();
  // ws reads each message whole before the relay sees it: capped at the relay's
  // maxMessageBytes, a bigger one is refused (1009) before it is buffered.
  const maxPayload = sessionManager.getStats().config.maxMessageBytes;
  await fastify.register(websocket, { options: { maxPayload } });

  fastify.post('/api/sessions', async (request, reply) => {
    const session = sessionManager.createSession({ metadata: request.body?.metadata ?? null });
    reply.code(201);
    return {
      sessionId: session.sessionId,
      wsUrl: `ws://${request.headers.host}/session/${session.sessionId}`,
      expiresAt: session.expiresAt,
    };
  });

  fastify.delete('/api/sessions/:sessionId', async (request) => ({
    deleted: sessionManager.deleteSession(request.params.sessionId),
  }));

  // Members over Server-Sent Events, for browsers whose network refuses the WebSocket
  // upgrade: @switchyard/client falls back to these by itself. The handler reads its own
  // body, so Fastify's parsers are left out of these two routes.
  const eventStreams = sessionManager.eventStreamHandler();
  fastify.register(async (scoped) => {
    scoped.removeAllContentTypeParsers();
    scoped.addContentTypeParser('*', (request, payload, done) => done(null));
    const raw = (request, reply) => {
      reply.hijack();
      eventStreams(request.raw, reply.raw);
    };
    scoped.get('/session/:sessionId/events', raw);
    scoped.post('/session/:sessionId/send', raw);
  });

  fastify.register(async (scoped) => {
    // @fastify/websocket 11 passes the ws WebSocket itself (older versions: connection.socket).
    scoped.get('/session/:sessionId', { websocket: true }, (socket, request) => {
      sessionManager.handleUpgrade(request.params.sessionId, socket, request.raw);
    });
  });

  sessionManager.start();
  await fastify.listen({ port, host });
  return {
    url: `http://localhost:${fastify.server.address().port}`,
    sessionManager,
    async close() {
      await sessionManager.stop();
      await fastify.close();
    },
  };
}

module.exports = { start };

if (require.main === module) {
  const port = Number(process.env.PORT) || 3000;
  start({ port }).then(({ url }) => {
    console.log(`Switchyard relay (Fastify example) listening on ${url}`);
  }, (err) => {
    if (err.code === 'EADDRINUSE') console.error(`Port ${port} is in use. Stop what listens there, or pick another port: PORT=3001 node examples/fastify/server.js`);
    else console.error(err);
    process.exit(1);
  });
}
