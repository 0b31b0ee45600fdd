// lib/event_stream.js: members over Server-Sent Events, where a WebSocket cannot get
// through, on an app's own HTTP server: `manager.eventStreamHandler()` (bridge mode, one
// `(req, res)` handler for both routes) and the routes `attach()` adds beside its
// WebSocket path. The addon does the rest (admission, the stream's text, the send tokens),
// so a member here is the same as one of the binary's.

/** On a server: the WebSocket paths `attach()` serves event streams beside. */
const PATHS = Symbol('switchyard event-stream paths');

/**
 * Hands an event-stream request to the addon, reading a POST's body first (at most the
 * limit and a byte: past it the answer is 413 whatever follows). `options` are the
 * addon's: `path`, `identity`.
 */
function serve(manager, req, res, options) {
  if (req.method !== 'POST') return manager.eventStream(req, res, undefined, options);
  const handOver = (body) => manager.eventStream(req, res, body, options);
  // A body parser before this handler has read the body already (body-parser marks it
  // `_body`; one that did not match the content type left the stream unread).
  if (req.readableEnded || req._body === true) {
    const given = typeof req.body === 'string' || Buffer.isBuffer(req.body) ? req.body : JSON.stringify(req.body ?? '');
    return handOver(Buffer.from(given));
  }
  const limit = manager.eventStreamBodyLimit();
  const chunks = [];
  let length = 0;
  const done = () => {
    req.off('data', take);
    handOver(Buffer.concat(chunks, Math.min(length, limit + 1)));
  };
  const take = (chunk) => {
    chunks.push(chunk);
    length += chunk.length;
    if (length > limit) {
      req.off('end', done);
      req.resume();
      done();
    }
  };
  req.on('data', take);
  req.once('end', done);
  req.once('error', () => req.off('end', done));
}

/** `manager.eventStreamHandler()`: the session id is the path segment before `events`/`send`. */
function eventStreamHandler(manager) {
  return function switchyardEventStream(req, res) {
    serve(manager, req, res, undefined);
  };
}

/**
 * After `attach(server, { path, authenticate })`: `<path>/events` and `<path>/send` are
 * served before the server's own `request` listeners (those added before `attach`, as
 * `http.createServer(app)` adds the app's), which see every other request. A stream's
 * socket is taken into the native transport, as an upgrade's is, once `authenticate` (if
 * any) has decided; a send is read here and handed over.
 */
function attachEventStreams(manager, server, path, authenticate) {
  if (!server[PATHS]) {
    const paths = (server[PATHS] = []);
    const listeners = server.listeners('request');
    server.removeAllListeners('request');
    server.on('request', (req, res) => {
      // Every request of the app comes through here: only those that could be ours ask the addon.
      const url = req.url ?? '/';
      const pathname = url.split('?', 1)[0];
      const ours = pathname.endsWith('/events') || pathname.endsWith('/send');
      const claimed = ours && paths.find((entry) => manager.eventStreamRoute(url, entry.path));
      if (!claimed) {
        for (const listener of listeners) listener.call(server, req, res);
        return;
      }
      // A send stays Node's: its connection may carry the app's requests next.
      if (req.method !== 'GET') return serve(manager, req, res, { path: claimed.path });
      if (!claimed.authenticate) return manager.adoptEventStream(req, { path: claimed.path });
      // A GET has no body: nothing is lost while authenticate decides.
      Promise.resolve()
        .then(() => claimed.authenticate(req))
        .then(
          (identity) => manager.adoptEventStream(req, { path: claimed.path, identity: identity ?? null }),
          (err) => {
            console.error('attach: authenticate threw for an event stream:', err);
            res.writeHead(500).end();
          },
        );
    });
  }
  server[PATHS].push({ path, authenticate });
}

module.exports = { eventStreamHandler, attachEventStreams };
