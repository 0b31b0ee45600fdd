//! A port of the relay's own, served on the native runtime (the addon's
//! `manager.listen({ port, host, path })`): upgrades whose path matches join the relay,
//! after the app's say when it asked for one ([`Gatekeeper`]), with no HTTP server of the
//! host's in the way (with Node's `attach`, Node makes a socket, a parser and a request
//! for each upgrade before handing it over).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use switchyard_core::{ConnectionRefusal, Identity};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::admission::{self, TokenAuth, Upgrade, Verdict};
use crate::engine::Engine;
use crate::listener::{answer, serve, Request, Upgrades};
use crate::path_pattern::PathPattern;
use crate::waiting::{Limits, Waiting};
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
        runtime.spawn(serve(listener, Waiting::new(Limits::default()), self.stop.clone(), Arc::new(self)));
        Ok(address)
    }

    fn respond(&self, tcp: TcpStream, response: Vec<u8>) {
        self.spawner.runtime.spawn(answer(tcp, response));
    }
}

/// As the addon's `attach` does for the upgrades it takes: the path, the app's say, then
/// the address's connection rate and the token, then the handshake itself.
impl<G: Gatekeeper> Upgrades for RelayPort<G> {
    async fn upgrade(&self, tcp: TcpStream, request: Request, rest: Bytes) {
        let Some(route) = self.pattern.route(&request.url) else {
            self.engine.relay.handshake_failed();
            return self.respond(tcp, handshake::http_error(404, "Not Found", "No WebSocket is served at this path", ""));
        };
        let given = match &self.gatekeeper {
            None => Identity::default(),
            Some(gatekeeper) => {
                let port = tcp.peer_addr().map_or(0, |peer| peer.port());
                let verdict = tokio::select! {
                    verdict = gatekeeper.ask(&request, port) => verdict,
                    () = self.stop.cancelled() => {
                        return self.respond(tcp, handshake::http_error(503, "Service Unavailable", "The relay is stopping", ""));
                    }
                };
                match verdict {
                    Verdict::Admit(identity) => identity,
                    Verdict::Refuse { status, reason } => return self.respond(tcp, handshake::http_error(status, reason, reason, "")),
                }
            }
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

    fn refused(&self) {
        self.engine.relay.handshake_failed();
    }
}
