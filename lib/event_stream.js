// lib/event_stream.js: `manager.eventStreamHandler()`, members over Server-Sent Events
// for an app's own HTTP server (bridge mode), where a WebSocket cannot get through. One
// `(req, res)` handler serves both routes; the addon does the rest (admission, the
// stream's text, the send tokens), so a member here is the same as one of the binary's.

/**
 * @param {import('..').RelaySessionManager} manager
 * @returns {(req: import('http').IncomingMessage, res: import('http').ServerResponse) => void}
 */
function eventStreamHandler(manager) {
  const limit = manager.eventStreamBodyLimit();
  return function switchyardEventStream(req, res) {
    if (req.method !== 'POST') return manager.eventStream(req, res);
    // A body parser before this handler has read the body already.
    if (req.readableEnded || req.body !== undefined) {
      const given = typeof req.body === 'string' || Buffer.isBuffer(req.body) ? req.body : JSON.stringify(req.body ?? '');
      return manager.eventStream(req, res, Buffer.from(given));
    }
    const chunks = [];
    let length = 0;
    const done = () => {
      req.off('data', take);
      manager.eventStream(req, res, Buffer.concat(chunks, Math.min(length, limit + 1)));
    };
    const take = (chunk) => {
      chunks.push(chunk);
      length += chunk.length;
      // Past the limit the rest is not kept: the answer is 413 whatever follows.
      if (length > limit) {
        req.off('end', done);
        req.resume();
        done();
      }
    };
    req.on('data', take);
    req.once('end', done);
    req.once('error', () => req.off('end', done));
  };
}

module.exports = { eventStreamHandler };
