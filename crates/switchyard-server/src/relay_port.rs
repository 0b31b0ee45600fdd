//! A port of the relay's own, served on the native runtime (the addon's
//! `manager.listen({ port, host, path })`): upgrades whose path matches join the relay
//! (and event streams and sends beside that path, as [`crate::event_stream`] serves them),
//! after the app's say when it asked for one ([`Gatekeeper`]), with no HTTP server of the
//! host's in the way (with Node's `attach`, Node makes a socket, a parser and a request
//! for each upgrade before handing it over).

use std::future::Future;
use std::pin::Pin;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use switchyard_core::{ConnectionRefusal, Identity, Route};
use tokio_util::sync::CancellationToken;

use crate::admission::{self, TokenAuth, Upgrade, Verdict};
use crate::engine::Engine;
use crate::event_stream::native::{self, http_answer, EventStream};
use crate::event_stream::{self, Endpoint};
use crate::listener::{answer, serve, Request, Upgrades};
use crate::path_pattern::PathPattern;
use crate::socket::Socket;
use crate::tls::Tls;
use crate::waiting::{Limits, Slot, Waiting};
use crate::{handshake, Accepted, Spawner};

/// The app's say on each upgrade (the addon asks its `authenticate` on the JS thread).
pub trait Gatekeeper: Send + Sync + 'static {
    /// The verdict on `request`, from `port` of its address.
    fn ask(&self, request: &Request, port: u16) -> impl Future<Output = Verdict> + Send;
}

/// What a port needs of its relay to let an upgrade in.
pub struct RelayPort<G> {
    /// The relay, and its cluster, that upgrades join.
    pub engine: Arc<Engine>,
    /// Token auth, when it is on.
    pub auth: Option<Arc<TokenAuth>>,
    /// Runs the port and its connections on the native runtime.
    pub spawner: Spawner,
    /// The path upgrades must match, and where a matching one goes.
    pub pattern: PathPattern,
    /// The app's say, when it wants one.
    pub gatekeeper: Option<G>,
    /// Cancelled when the host stops: the port closes, and handshakes under way are refused.
    pub stop: CancellationToken,
    /// The port's certificate and key, when it serves TLS.
    pub tls: Option<Arc<Tls>>,
}

impl<G: Gatekeeper> RelayPort<G> {
    /// Binds `host:port` and serves it on the spawner's runtime until `stop` is cancelled.
    /// Returns the address bound (the port the system chose for 0).
    pub fn open(self, host: &str, port: u16) -> std::io::Result<SocketAddr> {
        let socket = std::net::TcpListener::bind((host, port))?;
        socket.set_nonblocking(true)?;
        let address = socket.local_addr()?;
        let runtime = self.spawner.runtime.clone();
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(socket)?
        };
        let tls = self.tls.clone();
        runtime.spawn(serve(listener, Waiting::new(Limits::default()), self.stop.clone(), Arc::new(self), tls));
        Ok(address)
    }

    fn respond(&self, tcp: Socket, response: Vec<u8>) {
        self.spawner.runtime.spawn(answer(tcp, response));
    }
}

/// As the addon's `attach` does for the upgrades it takes: the path, the app's say, then
/// the address's connection rate and the token, then the handshake itself. Beside the
/// WebSocket path, `<path>/events` and `<path>/send` serve event-stream members.
impl<G: Gatekeeper> Upgrades for RelayPort<G> {
    async fn upgrade(&self, tcp: Socket, request: Request, rest: Bytes, slot: Slot) {
        self.dispatch(tcp, request, rest, Some(slot)).await;
    }

    fn refused(&self) {
        self.engine.relay.handshake_failed();
    }
}

impl<G: Gatekeeper> RelayPort<G> {
    /// One request: a WebSocket upgrade, or an event stream's, or sends. `slot` is held
    /// until the request is dealt with, the app's authenticate included; but a connection
    /// of sends is no handshake, however long it stays open (a request that follows its
    /// sends comes with none).
    fn dispatch(&self, tcp: Socket, request: Request, rest: Bytes, slot: Option<Slot>) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            if let Some(route) = self.pattern.route(&request.url) {
                return self.websocket(tcp, request, rest, route).await;
            }
            let beside = Endpoint::split(&request.url).and_then(|(base, endpoint)| Some((self.pattern.route(&base)?, endpoint)));
            match (beside, request.method.as_str()) {
                (Some(_), "OPTIONS") => self.respond(tcp, http_answer(204, "", "", false)),
                (Some((route, Endpoint::Events)), "GET") => self.event_stream(tcp, request, route).await,
                (Some((route, Endpoint::Send)), "POST") => {
                    drop(slot);
                    if let Some((tcp, next, rest)) = self.send(tcp, request, rest, route).await {
                        self.dispatch(tcp, next, rest, None).await;
                    }
                }
                (Some(_), _) => self.respond(tcp, http_answer(405, "METHOD_NOT_ALLOWED", "GET <path>/events, POST <path>/send", false)),
                (None, _) => {
                    self.engine.relay.handshake_failed();
                    self.respond(tcp, handshake::http_error(404, "Not Found", "No WebSocket is served at this path", ""))
                }
            }
        })
    }

    /// What the app says of a request, when it wants a say; `Err` is the answer to refuse it with.
    async fn given(&self, tcp: &Socket, request: &Request) -> Result<Identity, Vec<u8>> {
        let Some(gatekeeper) = &self.gatekeeper else { return Ok(Identity::default()) };
        let port = tcp.peer_addr().map_or(0, |peer| peer.port());
        let verdict = tokio::select! {
            verdict = gatekeeper.ask(request, port) => verdict,
            () = self.stop.cancelled() => return Err(handshake::http_error(503, "Service Unavailable", "The relay is stopping", "")),
        };
        match verdict {
            Verdict::Admit(identity) => Ok(identity),
            Verdict::Refuse { status, reason } => Err(handshake::http_error(status, reason, reason, "")),
        }
    }

    async fn websocket(&self, tcp: Socket, request: Request, rest: Bytes, route: Route) {
        let given = match self.given(&tcp, &request).await {
            Ok(given) => given,
            Err(answer) => return self.respond(tcp, answer),
        };
        let upgrade = Upgrade { url: Some(&request.url), address: Some(request.address), header: |name: &str| request.header(name) };
        let admitted = match admission::admit(&self.engine.relay, self.auth.as_deref(), upgrade, given) {
            Ok(admitted) => admitted,
            Err(refused) => return self.respond(tcp, refused.http_answer()),
        };
        let accept = match handshake::accept(&request.method, |name| request.header(name)) {
            Ok(accept) => accept,
            Err(error) => {
                self.engine.relay.handshake_failed();
                return self.respond(tcp, handshake::bad_request(&error));
            }
        };
        let deflate = self.spawner.negotiate(request.header("sec-websocket-extensions"));
        let extensions = deflate.map(|deflate| deflate.response());
        let preface = handshake::switching_protocols(&accept, admitted.protocol, extensions.as_deref());
        let accepted = Accepted { io: tcp, preface, head: rest, route, identity: admitted.identity, deflate };
        if self.stop.is_cancelled() {
            return self.spawner.refuse(accepted, ConnectionRefusal::ShuttingDown);
        }
        self.engine.admit(&self.spawner, accepted);
    }

    /// A member over Server-Sent Events, admitted as an upgrade is.
    async fn event_stream(&self, tcp: Socket, request: Request, route: Route) {
        let given = match self.given(&tcp, &request).await {
            Ok(given) => given,
            Err(answer) => return self.respond(tcp, answer),
        };
        let url = event_stream::resume_url(&request.url, request.header("last-event-id"));
        let upgrade = Upgrade { url: Some(&url), address: Some(request.address), header: |name: &str| request.header(name) };
        let identity = match admission::admit(&self.engine.relay, self.auth.as_deref(), upgrade, given) {
            Ok(admitted) => admitted.identity,
            Err(refused) => return self.respond(tcp, refused.http_answer()),
        };
        let refusal = match self.stop.is_cancelled() {
            true => ConnectionRefusal::ShuttingDown,
            false => match EventStream::open(&self.engine, route, identity, event_stream::send_url(&url)).await {
                Ok(stream) => return drop(self.spawner.tasks.spawn_on(native::serve(tcp, native::response_head(), stream), &self.spawner.runtime)),
                Err(refusal) => refusal,
            },
        };
        let (status, code) = event_stream::refusal_status(refusal);
        self.respond(tcp, http_answer(status, code, &refusal.to_string(), false));
    }

    /// A member's frames, and then those of the sends that follow on the same connection;
    /// what follows them that is not a send is given back.
    async fn send(&self, mut tcp: Socket, request: Request, rest: Bytes, route: Route) -> Option<(Socket, Request, Bytes)> {
        let answer = native::read_send(&self.engine, &mut tcp, &request, &rest, &route).await?;
        let pattern = &self.pattern;
        native::serve_sends(&self.engine, tcp, request.address, answer, |url| send_route(pattern, url)).await
    }
}

/// Where a send to `url` goes, when it is one beside `pattern`.
pub fn send_route(pattern: &PathPattern, url: &str) -> Option<Route> {
    match Endpoint::split(url)? {
        (base, Endpoint::Send) => pattern.route(&base),
        _ => None,
    }
}
