// lib/admin.js: `manager.adminHandler()`, the admin view for an app's own HTTP server:
// the page in admin/index.html (the one the switchyard binary serves at /admin/) and the
// `getStats()` it polls, as JSON. Plain Node (request, response), so Express mounts it
// with app.use() and Fastify or node:http call it with their raw request and response.
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

const page = path.join(__dirname, '..', 'admin', 'index.html');

/** Whether the request carries `Authorization: Bearer <token>`, compared in constant time. */
function hasToken(request, token) {
  const match = /^bearer\s+(.+)$/i.exec(request.headers.authorization ?? '');
  if (!match) return false;
  const given = crypto.createHash('sha256').update(match[1].trim()).digest();
  const expected = crypto.createHash('sha256').update(token).digest();
  return crypto.timingSafeEqual(given, expected);
}

function adminHandler(manager, options = {}) {
  if (options === null || typeof options !== 'object') throw new TypeError('adminHandler(options): options must be an object, such as { token }');
  const { token, ...unknown } = options;
  const extra = Object.keys(unknown);
  if (extra.length) throw new TypeError(`adminHandler(options): unknown option ${JSON.stringify(extra[0])}; expected: token`);
  if (token !== undefined && (typeof token !== 'string' || token === '')) throw new TypeError('adminHandler(options): token must be a non-empty string');
  const html = fs.readFileSync(page);

  return function admin(request, response) {
    // Express strips its mount path from `url` and keeps the whole path in `originalUrl`.
    const url = new URL(request.originalUrl ?? request.url, 'http://localhost');
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      response.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain; charset=utf-8' });
      return response.end('The admin view only answers GET\n');
    }
    if (url.pathname.endsWith('/stats')) {
      if (token !== undefined && !hasToken(request, token)) {
        response.writeHead(401, { 'www-authenticate': 'Bearer', 'content-type': 'application/json' });
        return response.end(JSON.stringify({ error: { code: 'UNAUTHORIZED', message: 'Send the admin token as Authorization: Bearer <token>' } }));
      }
      response.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      return response.end(JSON.stringify(manager.getStats()));
    }
    if (!url.pathname.endsWith('/')) {
      // The page asks for `stats` relative to itself, so it must be served from a directory.
      response.writeHead(308, { location: `${url.pathname}/${url.search}` });
      return response.end();
    }
    response.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-length': html.length });
    response.end(request.method === 'HEAD' ? undefined : html);
  };
}

module.exports = { adminHandler };
