// bench/servers.js: the relays `npm run bench` compares, each a Node process serving
// `POST /sessions` (answering `{ sessionId }`) and WebSockets at `/session/<id>`; the
// switchyard ones also event-stream members at `/session/<id>/events` and `/send`:
//
//   native    switchyard, sockets taken over by Rust through attach()
//   listen    switchyard, WebSockets on a port of the relay's own (listen()); sessions are
//             created on a Node HTTP server at the third argument's port
//   bridge    switchyard over ws: ws accepts, handleUpgrade bridges; eventStreamHandler()
//             serves event streams
//   ws        baseline 1: a plain ws relay, a Map of Sets forwarding the received data
//   original  baseline 2: the original design, JSON.parse then JSON.stringify per recipient
//   uws       the peer a Node user would pick instead: uWebSockets.js (v20.30, prebuilt, from
//             the npm registry), a topic per session, each message `publish`ed to it
//             (with COMPRESSION, its SHARED_COMPRESSOR)
//   backend   not a relay: the app's backend for the binary's proxy, allowing every
//             publication ({"result":{}})
//   socketio  the cluster peer: Socket.IO 4 with @socket.io/redis-adapter, a room per
//             session, each `m` event emitted to the rest of the room on every node
//
// TLS_CERT and TLS_KEY (PEM files: a certificate chain and its key) make `listen` and
// `uws` serve TLS instead, on every port (`listen`: its relay port through `listen({ tls })`,
// its sessions on an `https` server; `uws`: `SSLApp`), as the binary does with `--tls-cert`
// and `--tls-key`; the other kinds refuse them.
//
// Usage: node --expose-gc bench/servers.js <kind> <port> [<http port>]; HISTORY_SIZE=n keeps session
// history in the switchyard servers, as it does in the binary, COMPRESSION=true turns
// permessage-deflate on in each (as in the binary), and REDIS_URL (with
// NODE_ID) makes the server a node of a cluster. `POST /gc` collects garbage so memory is
// measured on live objects only; `GET /health` answers once a cluster node sees a peer.
const http = require('node:http');
const https = require('node:https');
const crypto = require('node:crypto');
const fs = require('node:fs');
const { WebSocketServer } = require('ws');
const { RelaySessionManager } = require('..');

const [kind, port, httpPort] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4] ?? process.argv[3])];
// As the binary's HISTORY_SIZE and HISTORY_TTL: sessions keep this many publications.
const { HISTORY_SIZE, HISTORY_TTL = '300000' } = process.env;
const history = HISTORY_SIZE ? { size: Number(HISTORY_SIZE), ttlMs: Number(HISTORY_TTL) } : undefined;
const redis = process.env.REDIS_URL ? { url: process.env.REDIS_URL, nodeId: process.env.NODE_ID } : undefined;
// As the binary's COMPRESSION: permessage-deflate for clients that offer it, payloads of
// 256 bytes and more compressed (switchyard's default threshold).
const compression = Boolean(process.env.COMPRESSION);
const perMessageDeflate = compression && { threshold: 256 };
// PUBLISH_HOOK=sync asks a synchronous publish hook that allows every message.
const hooks = process.env.PUBLISH_HOOK === 'sync' ? { publish: () => true } : undefined;
const { TLS_CERT, TLS_KEY } = process.env;
const tls = TLS_CERT && TLS_KEY ? { cert: fs.readFileSync(TLS_CERT), key: fs.readFileSync(TLS_KEY) } : undefined;
/** The kinds that serve TLS when given TLS_CERT and TLS_KEY. */
const TLS_KINDS = ['listen', 'uws'];
const sessionPath = /^\/session\/([^/?]+)/;
const eventStreamPath = /^\/session\/[^/?]+\/(events|send)(\?|$)/;

function httpHandler(createSession, peers = () => 1) {
  return (req, res) => {
    if (req.method === 'GET' && req.url === '/health') {
      res.statusCode = peers() > 0 ? 200 : 503;
      return res.end('{}');
    }
    if (req.method === 'POST' && req.url === '/sessions') {
      res.setHeader('content-type', 'application/json');
      return res.end(JSON.stringify({ sessionId: createSession() }));
    }
    if (req.method === 'POST' && req.url === '/gc') {
      global.gc?.();
      return res.end('{}');
    }
    res.statusCode = 404;
    res.end();
  };
}

/** The baselines: sessions are a Map of Sets of sockets. */
function plainRelay(forward) {
  const sessions = new Map();
  const server = http.createServer(
    httpHandler(() => {
      const id = crypto.randomUUID();
      sessions.set(id, new Set());
      return id;
    }),
  );
  const wss = new WebSocketServer({ server, perMessageDeflate });
  wss.on('connection', (socket, request) => {
    const members = sessions.get(sessionPath.exec(request.url)?.[1]);
    if (!members) return socket.close(1008, 'Session not found');
    members.add(socket);
    socket.on('message', (data, isBinary) => forward(members, socket, data, isBinary));
    socket.on('close', () => members.delete(socket));
  });
  return server;
}

const servers = {
  native() {
    const manager = new RelaySessionManager({ maxClientsPerSession: 100, history, redis, nativeCompression: compression, hooks });
    manager.start();
    const server = http.createServer(httpHandler(() => manager.createSession().sessionId, () => manager.getStats().cluster?.peers ?? 1));
    manager.attach(server);
    return server;
  },
  listen() {
    const manager = new RelaySessionManager({ maxClientsPerSession: 100, history, nativeCompression: compression });
    manager.start();
    const api = httpHandler(() => manager.createSession().sessionId);
    const server = tls ? https.createServer(tls, api) : http.createServer(api);
    return {
      listen(port, host, done) {
        manager.listen({ port, host, tls });
        server.listen(httpPort, host, done);
      },
    };
  },
  bridge() {
    const manager = new RelaySessionManager({ maxClientsPerSession: 100, history, redis });
    manager.start();
    const api = httpHandler(() => manager.createSession().sessionId);
    const eventStreams = manager.eventStreamHandler();
    const server = http.createServer((req, res) => (eventStreamPath.test(req.url) ? eventStreams(req, res) : api(req, res)));
    const wss = new WebSocketServer({ server, perMessageDeflate });
    wss.on('connection', (socket, request) => manager.handleUpgrade(sessionPath.exec(request.url)?.[1] ?? '', socket, request));
    return server;
  },
  ws() {
    return plainRelay((members, from, data, isBinary) => {
      for (const member of members) if (member !== from) member.send(data, { binary: isBinary });
    });
  },
  uws() {
    const { App, SSLApp, SHARED_COMPRESSOR, DISABLED } = require('@trufflesuite/uws-js-unofficial');
    const json = (res, body) => res.writeHeader('content-type', 'application/json').end(JSON.stringify(body));
    const app = (tls ? SSLApp({ cert_file_name: TLS_CERT, key_file_name: TLS_KEY }) : App())
      .post('/sessions', (res) => {
        res.onAborted(() => {});
        json(res, { sessionId: crypto.randomUUID() });
      })
      .post('/gc', (res) => {
        res.onAborted(() => {});
        global.gc?.();
        json(res, {});
      })
      .ws('/session/:id', {
        maxPayloadLength: 1024 * 1024,
        maxBackpressure: 1024 * 1024,
        idleTimeout: 0,
        compression: compression ? SHARED_COMPRESSOR : DISABLED,
        upgrade: (res, req, context) =>
          res.upgrade({ session: req.getParameter(0) }, req.getHeader('sec-websocket-key'), req.getHeader('sec-websocket-protocol'), req.getHeader('sec-websocket-extensions'), context),
        open: (ws) => ws.subscribe(ws.getUserData().session),
        // `publish` from a socket reaches every subscriber but that socket; it compresses
        // only when told to.
        message: (ws, message, isBinary) => ws.publish(ws.getUserData().session, message, isBinary, compression),
      });
    return {
      listen(port, host, done) {
        app.listen(host, port, (token) => (token ? done() : process.exit(1)));
      },
    };
  },
  async socketio() {
    const { Server } = require('socket.io');
    const { createAdapter } = require('@socket.io/redis-adapter');
    const { createClient } = require('redis');
    const publisher = createClient({ url: process.env.REDIS_URL });
    const subscriber = publisher.duplicate();
    await Promise.all([publisher.connect(), subscriber.connect()]);
    const server = http.createServer(httpHandler(() => crypto.randomUUID()));
    // Runs end long before a ping is due: the load generator does not answer pings.
    const io = new Server(server, { adapter: createAdapter(publisher, subscriber), transports: ['websocket'], serveClient: false, pingInterval: 300000, pingTimeout: 60000 });
    io.on('connection', (socket) => {
      const room = socket.handshake.query.session;
      socket.join(room);
      socket.on('m', (message) => socket.to(room).emit('m', message));
    });
    return server;
  },
  backend() {
    return http.createServer((req, res) => {
      req.resume();
      req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{"result":{}}'));
    });
  },
  original() {
    return plainRelay((members, from, data) => {
      const message = JSON.parse(data.toString());
      for (const member of members) if (member !== from) member.send(JSON.stringify(message));
    });
  },
};

if (!servers[kind]) {
  console.error(`usage: node bench/servers.js <${Object.keys(servers).join('|')}> <port>`);
  process.exit(2);
}
if (tls && !TLS_KINDS.includes(kind)) {
  console.error(`bench/servers.js: ${kind} serves no TLS (TLS_CERT and TLS_KEY are for ${TLS_KINDS.join(', ')})`);
  process.exit(2);
}
Promise.resolve(servers[kind]()).then((server) => server.listen(port, '127.0.0.1', () => console.log(`${kind} listening on ${port}`)));
process.on('SIGTERM', () => process.exit(0));
