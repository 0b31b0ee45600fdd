//! `manager.listen({ port, host, path })`: a port of the relay's own, served from Rust on
//! the native runtime. Upgrades never pass through Node's HTTP server, so a connection
//! costs no JavaScript objects at all (with `attach`, Node makes a socket, a parser and a
//! request for each upgrade before handing it over), and the JS thread is not involved
//! in accepting it, unless the app gave `authenticate` (see [`Authenticator`]).

use std::sync::Arc;

use bytes::Bytes;
use switchyard_core::{ConnectionRefusal, Identity};
use switchyard_server::admission::{self, TokenAuth, Upgrade};
use switchyard_server::engine::Engine;
use switchyard_server::listener::{answer, Request, Upgrades};
use switchyard_server::path_pattern::PathPattern;
use switchyard_server::{handshake, Accepted, Spawner};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::Authenticator;
use crate::authentication::Verdict;

/// What a listener needs of its manager to let an upgrade in.
pub struct Listener {
    pub engine: Arc<Engine>,
    pub auth: Option<Arc<TokenAuth>>,
    pub spawner: Spawner,
    pub pattern: PathPattern,
    /// The app's `authenticate`, when it gave one.
    pub authenticator: Option<Authenticator>,
    /// Cancelled by `stop()`: the port closes, and handshakes under way are refused.
    pub stop: CancellationToken,
}

impl Listener {
    fn respond(&self, tcp: TcpStream, response: Vec<u8>) {
        self.spawner.runtime.spawn(answer(tcp, response));
    }
}

/// As `attach` does for the upgrades it takes: the path, the app's `authenticate`, then
/// the address's connection rate and the token, then the handshake itself.
impl Upgrades for Listener {
    async fn upgrade(&self, tcp: TcpStream, request: Request, rest: Bytes) {
        let Some(route) = self.pattern.route(&request.url) else {
            self.engine.relay.handshake_failed();
            return self.respond(tcp, handshake::http_error(404, "Not Found", "No WebSocket is served at this path", ""));
        };
        let given = match &self.authenticator {
            None => Identity::default(),
            Some(authenticator) => {
                let port = tcp.peer_addr().map_or(0, |peer| peer.port());
                let verdict = tokio::select! {
                    verdict = authenticator.ask(&request, port) => verdict,
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
