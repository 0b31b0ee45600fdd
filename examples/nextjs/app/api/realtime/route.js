// examples/nextjs/app/api/realtime/route.js: the App Router side of the realtime API. GET
// answers health, where to open the WebSocket, the user, and (with `since`) what a client
// missed, waiting up to `waitMs` for something new: a long poll. POST takes the operations
// a client could not send over a WebSocket and publishes each into its session.
export const dynamic = 'force-dynamic';

// Set by server.js, which owns the manager and the WebSocket upgrades.
const manager = () => globalThis.switchyardSessionManager;
const LONGEST_WAIT_MS = 25_000;
const POLL_MS = 50;

export async function GET(request) {
  const url = new URL(request.url);
  const sessionId = url.searchParams.get('sessionId');
  const answer = {
    status: manager().getStats().isRunning ? 'ok' : 'stopped',
    wsUrl: sessionId ? `ws://${request.headers.get('host')}/session/${encodeURIComponent(sessionId)}?positions=1` : null,
    user: request.headers.get('x-user-id'),
  };
  const since = url.searchParams.get('since');
  if (!sessionId || since === null) return Response.json(answer);

  const waitMs = Math.min(Number(url.searchParams.get('waitMs')) || 0, LONGEST_WAIT_MS);
  const deadline = Date.now() + waitMs;
  for (;;) {
    let history;
    try {
      history = manager().history(sessionId, since ? { since } : {});
    } catch (error) {
      return Response.json({ error: error.message }, { status: 400 });
    }
    if (!history) return Response.json({ error: 'Session not found' }, { status: 404 });
    if (history.publications.length > 0 || !history.recovered || Date.now() >= deadline) {
      return Response.json({ ...answer, history });
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

// POST { sessionId, clientId?, operations: [message, ...] }: answers each one's offset.
export async function POST(request) {
  const body = await request.json().catch(() => null);
  const { sessionId, clientId, operations } = body ?? {};
  if (typeof sessionId !== 'string' || !Array.isArray(operations)) {
    return Response.json({ error: 'Expected { sessionId, clientId?, operations: [message, ...] }' }, { status: 400 });
  }
  if (!manager().getSession(sessionId)) return Response.json({ error: 'Session not found' }, { status: 404 });
  try {
    const results = operations.map((operation) => manager().publish(sessionId, operation, clientId ? { clientId } : {}));
    return Response.json({ results: results.map(({ offset, delivered }) => ({ offset: offset ?? null, delivered })) });
  } catch (error) {
    return Response.json({ error: error.message }, { status: 400 });
  }
}
