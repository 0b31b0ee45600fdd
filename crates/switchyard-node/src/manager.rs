//! `RelaySessionManager`, the class Node apps use. Each method checks its arguments and
//! hands over to the [`Host`].

use std::rc::Rc;

use napi::bindgen_prelude::{Object, This, Unknown};
use napi::{Env, Error, Result, Status};
use napi_derive::napi;
use switchyard_server::now;

use crate::bridge;
use crate::config::{read_config, read_route, read_session_options, read_upgrade_options, session_error};
use crate::guard;
use crate::host::{Host, Lifecycle};
use crate::js_types::{RelayStats, SessionData};
use crate::native;
use crate::options::type_error;
use crate::attach;

/// Sessions and WebSocket connections, relayed by the Rust core.
#[napi]
pub struct RelaySessionManager {
    host: Rc<Host>,
}

#[napi]
impl RelaySessionManager {
    #[napi(constructor, ts_args_type = "config?: RelaySessionManagerConfig")]
    pub fn new(env: Env, config: Option<Unknown>) -> Result<Self> {
        guard(|| Ok(Self { host: Host::new(read_config(&env, config)?) }))
    }

    /// Starts the ping and cleanup timers. Calling it while running does nothing; after
    /// `stop()` it makes the manager usable again. The timers never keep Node alive.
    #[napi]
    pub fn start(&self, env: Env) -> Result<()> {
        guard(|| {
            if let Lifecycle::Running { .. } = self.host.lifecycle.get() {
                return Ok(());
            }
            self.host.start_timer(&env)?;
            self.host.lifecycle.set(Lifecycle::Running { since: now() });
            Ok(())
        })
    }

    /// Closes every connection with 1001 "Server shutting down", forgets every session
    /// and stops the timers. Until `start()`, new sessions and connections are refused.
    #[napi]
    pub fn stop(&self, env: Env) -> Result<()> {
        guard(|| self.host.stop(&env))
    }

    /// Creates a session. Throws a `TypeError` for a bad option and an `Error` for an id
    /// that is taken or not `[A-Za-z0-9_-]{1,128}`.
    #[napi(ts_args_type = "options?: CreateSessionOptions")]
    pub fn create_session(&self, env: Env, options: Option<Unknown>) -> Result<SessionData> {
        guard(|| {
            let options = read_session_options(&env, options)?;
            if self.host.lifecycle.get() == Lifecycle::Stopped {
                return Err(Error::new(
                    Status::GenericFailure,
                    "RelaySessionManager is stopped; call start() before creating sessions",
                ));
            }
            let info = self.host.relay.create_session(options, now()).map_err(|err| session_error(&env, err))?;
            self.host.pump(&env)?;
            Ok(info.into())
        })
    }

    /// The session, or `null` when there is none with this id.
    #[napi]
    pub fn get_session(&self, session_id: String) -> Result<Option<SessionData>> {
        guard(|| Ok(self.host.relay.session(&session_id).map(Into::into)))
    }

    #[napi]
    pub fn list_sessions(&self) -> Result<Vec<SessionData>> {
        guard(|| Ok(self.host.relay.sessions().into_iter().map(Into::into).collect()))
    }

    /// Removes a session, closing its connections with 1000 "Session deleted". Returns
    /// whether it existed.
    #[napi]
    pub fn delete_session(&self, env: Env, session_id: String) -> Result<bool> {
        guard(|| {
            let deleted = self.host.relay.delete_session(&session_id, now());
            self.host.pump(&env)?;
            Ok(deleted)
        })
    }

    /// Hands a connection to the relay. `socket` is either a `ws` WebSocket the app
    /// accepted (bridge mode), or the `net.Socket` of an HTTP server's `upgrade` event,
    /// with its `head` in `options` (native mode: Rust answers the handshake and owns the
    /// connection). Returns `true` when it joined; `false` when it was refused and closed
    /// (1008 "Session not found" or "Session full", 1001 after `stop()`, or HTTP 400 for
    /// a bad handshake). `sessionId` `null` makes a sessionless connection.
    #[napi(
        ts_args_type = "sessionId: string | null, socket: WebSocketLike | Duplex, request?: IncomingMessage, options?: UpgradeOptions"
    )]
    pub fn handle_upgrade(
        &self,
        env: Env,
        session_id: Unknown,
        socket: Unknown,
        request: Option<Unknown>,
        options: Option<Unknown>,
    ) -> Result<bool> {
        guard(|| {
            let route = read_route(&env, session_id)?;
            if native::is_net_socket(&socket) {
                let request = match request {
                    // SAFETY: `Object` accepts any object; a wrong shape fails on its first read.
                    Some(request) if request.get_type()? == napi::ValueType::Object => unsafe { request.cast::<Object>()? },
                    _ => return Err(type_error(&env, "request must be the IncomingMessage of the upgrade event")),
                };
                let (identity, head) = read_upgrade_options(&env, options)?;
                // SAFETY: checked to be a net.Socket.
                let socket: Object = unsafe { socket.cast()? };
                return self.host.adopt_native(&env, &socket, &request, route, identity, head);
            }
            let socket = bridge::as_websocket(socket).map_err(|message| type_error(&env, message))?;
            let (identity, _head) = read_upgrade_options(&env, options)?;
            self.host.adopt_bridge(&env, socket, route, identity)
        })
    }

    /// Takes over the WebSocket upgrades of an `http.Server` whose path matches `path`
    /// (default `/session/:sessionId`) into the native transport. `authenticate(request)`
    /// may return an identity, `null` to answer 401, or a Promise of either. Other paths
    /// are left to the server's other `upgrade` listeners.
    #[napi(ts_args_type = "server: HttpServer, options?: AttachOptions")]
    pub fn attach(&self, env: Env, server: Unknown, options: Option<Unknown>) -> Result<()> {
        guard(|| attach::attach(&self.host, &env, server, options))
    }

    #[napi]
    pub fn get_stats(&self) -> Result<RelayStats> {
        guard(|| {
            let uptime = match self.host.lifecycle.get() {
                Lifecycle::Running { since } => Some(now().saturating_sub(since)),
                Lifecycle::Idle | Lifecycle::Stopped => None,
            };
            Ok(RelayStats::new(self.host.relay.stats(), self.host.relay.config(), uptime))
        })
    }

    /// Calls `listener` with each event of this name. A listener that throws has its
    /// error printed; routing and the other listeners go on.
    #[napi(
        ts_generic_types = "E extends keyof RelayEvents",
        ts_args_type = "event: E, listener: (payload: RelayEvents[E]) => void",
        ts_return_type = "this"
    )]
    pub fn on<'env>(&self, env: Env, this: This<'env>, event: Unknown, listener: Unknown) -> Result<This<'env>> {
        guard(|| {
            self.host.listeners.borrow_mut().add(&env, event, listener)?;
            Ok(this)
        })
    }
}
