//! `RelaySessionManager`, the class Node apps use. Each method checks its arguments and
//! hands over to the [`Host`].

use std::rc::Rc;

use napi::bindgen_prelude::{BufferSlice, FnArgs, Function, Null, Object, This, Uint8Array, Unknown};
use napi::{Env, JsValue, Result, ValueType};
use napi_derive::napi;
use switchyard_core::{ChannelName, ConnId, Frame, PublishError, Target};
use switchyard_core::report::{ConfigReport, HealthReport};
use switchyard_server::now;

use crate::bridge;
use crate::guard;
use crate::hooks::JsHooks;
use crate::host::{Host, Lifecycle};
use crate::js_types::{report_value, ListenAddress, Published, SessionData};
use crate::native;
use crate::attach;
use crate::authentication;
use crate::js;
use crate::options::{self, read_options, session_error, string_argument, type_error};
use switchyard_server::path_pattern::PathPattern;
use crate::request::UpgradeRequest;

/// `listen()` binds every IPv4 interface unless told otherwise, as the binary does.
const DEFAULT_LISTEN_HOST: &str = "0.0.0.0";

/// Sessions and WebSocket connections, relayed by the Rust core.
#[napi]
pub struct RelaySessionManager {
    host: Rc<Host>,
}

#[napi]
impl RelaySessionManager {
    #[napi(constructor, ts_args_type = "config?: RelaySessionManagerConfig")]
    pub fn new(env: Env, config: Option<Unknown>) -> Result<Self> {
        guard(|| {
            let settings = options::settings(&env, config)?;
            let host = Host::new(settings, JsHooks::read(&env, config)?).map_err(|err| type_error(&env, err))?;
            #[cfg(not(target_family = "wasm"))]
            host.join_cluster(&env)?;
            Ok(Self { host })
        })
    }

    /// Starts the ping and cleanup timers. Calling it while running does nothing; after
    /// `stop()` it makes the manager usable again. The timers never keep Node alive.
    #[napi]
    pub fn start(&self, env: Env) -> Result<()> {
        guard(|| self.host.start(&env))
    }

    /// Closes every connection (by default with 1001 "Server shutting down"; 1012
    /// "Service restart" tells clients to come back), forgets every session and stops
    /// the timers; until `start()`, new sessions and connections are refused. The
    /// Promise resolves once every socket has closed, or after `timeoutMs` (default
    /// 5000) once what is left has been terminated.
    #[napi(ts_args_type = "options?: StopOptions", ts_return_type = "Promise<void>")]
    pub fn stop<'env>(&self, env: &'env Env, options: Option<Unknown>) -> Result<Object<'env>> {
        guard(|| {
            let stop = options::stop(env, options)?;
            self.host.stop(env, stop.code, &stop.reason, stop.timeout_ms as f64)
        })
    }

    /// Creates a session, whether or not the manager is running. Throws a `TypeError`
    /// for a bad option and an `Error` for an id that is taken or not 1 to 128
    /// characters free of `/ ? #`, whitespace and control characters.
    #[napi(ts_args_type = "options?: CreateSessionOptions<MetaData>", ts_return_type = "SessionData<MetaData>")]
    pub fn create_session(&self, env: Env, options: Option<Unknown>) -> Result<SessionData> {
        guard(|| {
            let options = options::session_options(&env, options)?;
            let info = self.host.engine.relay.create_session(options, now()).map_err(|err| session_error(&env, err))?;
            self.host.pump(&env)?;
            Ok(info.into())
        })
    }

    /// The session, or `null` when there is none with this id.
    #[napi(ts_args_type = "sessionId: string", ts_return_type = "SessionData<MetaData> | null")]
    pub fn get_session(&self, env: Env, session_id: Unknown) -> Result<Option<SessionData>> {
        guard(|| {
            let session_id = string_argument(&env, session_id, "sessionId")?;
            Ok(self.host.engine.relay.session(&session_id).map(Into::into))
        })
    }

    #[napi(ts_return_type = "Array<SessionData<MetaData>>")]
    pub fn list_sessions(&self) -> Result<Vec<SessionData>> {
        guard(|| Ok(self.host.engine.relay.sessions().into_iter().map(Into::into).collect()))
    }

    /// Removes a session, closing its connections with 1000 "Session deleted". Returns
    /// whether it existed.
    #[napi(ts_args_type = "sessionId: string")]
    pub fn delete_session(&self, env: Env, session_id: Unknown) -> Result<bool> {
        guard(|| {
            let session_id = string_argument(&env, session_id, "sessionId")?;
            let deleted = self.host.engine.relay.delete_session(&session_id, now());
            self.host.pump(&env)?;
            Ok(deleted)
        })
    }

    /// Hands a connection to the relay. `socket` is either a `ws` WebSocket the app
    /// accepted (bridge mode), or the `net.Socket` of an HTTP server's `upgrade` event,
    /// with its `head` in `options` (native mode: Rust answers the handshake and owns the
    /// connection). Returns `true` when it joined; `false` when it was refused and closed:
    /// 1008 "Session not found", "Session full", "Connection limit", "Unauthorized" (no
    /// valid token under `auth`) or "Rate limit exceeded" (`connectionsPerMinutePerIp`),
    /// 1001 after `stop()`; natively, before the upgrade, HTTP 400 for a bad handshake,
    /// 401 and 429 for the last two. `sessionId` `null` makes a sessionless connection.
    /// In a cluster (`redis`), a native connection to a session joins a Redis round trip
    /// later, once this node has learnt the session and held one of its places: `true`
    /// then means it was taken over, and it may still be refused "Session full".
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
            let route = options::route(&env, session_id)?;
            if native::is_net_socket(&socket) {
                let request = match request {
                    // SAFETY: `Object` accepts any object; a wrong shape fails on its first read.
                    Some(request) if request.get_type()? == napi::ValueType::Object => unsafe { request.cast::<Object>()? },
                    _ => return Err(type_error(&env, "request must be the IncomingMessage of the upgrade event")),
                };
                let (identity, head) = options::upgrade_options(&env, options)?;
                // SAFETY: checked to be a net.Socket.
                let socket: Object = unsafe { socket.cast()? };
                return self.host.adopt_native(&env, &socket, &request, route, identity, head);
            }
            let socket = bridge::as_websocket(socket).map_err(|message| type_error(&env, message))?;
            let (identity, _head) = options::upgrade_options(&env, options)?;
            let request = match request {
                // SAFETY: `Object` accepts any object; a wrong shape reads as an empty request.
                Some(request) if request.get_type()? == napi::ValueType::Object => {
                    Some(UpgradeRequest::read(&unsafe { request.cast::<Object>()? })?)
                }
                _ => None,
            };
            self.host.adopt_bridge(&env, socket, request.as_ref(), route, identity)
        })
    }

    /// What `eventStreamHandler()` and `attach()` hand each event-stream request to:
    /// `body` a POST's, read whole (at most `eventStreamBodyLimit()` and a byte, so that a
    /// longer one is refused 413); `options.path` the WebSocket path it stands beside, and
    /// `options.identity` what `authenticate` said (`null`: refused).
    #[napi(skip_typescript)]
    pub fn event_stream(&self, env: Env, request: Object, response: Object, body: Option<BufferSlice>, options: Option<Object>) -> Result<()> {
        guard(|| {
            let (pattern, given) = event_stream_options(&env, options)?;
            self.host.event_stream(&env, &request, response, body.as_deref(), pattern.as_ref(), given)
        })
    }

    /// An event stream's GET beside `attach()`'s WebSocket path `options.path`, taken into
    /// the native transport; `options.identity` is what `authenticate` said (`null`:
    /// refused).
    #[napi(skip_typescript)]
    pub fn adopt_event_stream(&self, env: Env, request: Object, options: Object) -> Result<()> {
        guard(|| {
            let (pattern, given) = event_stream_options(&env, Some(options))?;
            let pattern = pattern.ok_or_else(|| type_error(&env, "options.path is required"))?;
            self.host.adopt_event_stream(&env, &request, &pattern, given)
        })
    }

    /// Whether `url` is one of the event-stream routes beside the WebSocket path `path`.
    #[napi(skip_typescript)]
    pub fn event_stream_route(&self, env: Env, url: String, path: String) -> Result<bool> {
        let pattern = PathPattern::parse(&path).map_err(|message| type_error(&env, message))?;
        Ok(crate::host::event_stream_route(&url, Some(&pattern)).is_some())
    }

    /// The most a send's body may hold.
    #[napi(skip_typescript)]
    pub fn event_stream_body_limit(&self) -> u32 {
        u32::try_from(switchyard_server::event_stream::body_limit(&self.host.engine.relay)).unwrap_or(u32::MAX)
    }

    /// Takes over the WebSocket upgrades of an `http.Server` whose path matches `path`
    /// (default `/session/:sessionId`) into the native transport. `authenticate(request)`
    /// may return an identity, `null` to answer 401, or a Promise of either. Other paths
    /// are left to the server's other `upgrade` listeners.
    #[napi(ts_args_type = "server: HttpServer, options?: AttachOptions")]
    pub fn attach(&self, env: Env, server: Unknown, options: Option<Unknown>) -> Result<()> {
        guard(|| attach::attach(&self.host, &env, server, options))
    }

    /// Serves WebSockets on a port of the relay's own, from Rust: upgrades whose path
    /// matches `path` (default `/session/:sessionId`) join the relay as `attach`'s do,
    /// but Node's HTTP server never sees them. `authenticate(request)` decides as
    /// `attach`'s does, and token auth (`auth.jwt`) applies; any other request gets an
    /// HTTP error and is closed. `stop()` closes the port.
    #[napi(ts_args_type = "options?: ListenOptions")]
    pub fn listen(&self, env: Env, options: Option<Unknown>) -> Result<ListenAddress> {
        guard(|| {
            crate::native::available()?;
            let options = read_options(&env, options, "options", &["port", "host", "path", "authenticate", "tls"])?;
            let port = options.count("port", u16::MAX.into())?.map_or(0, |port| port as u16);
            #[cfg(not(target_family = "wasm"))]
            let tls = match options.has("tls")? {
                true => Some(crate::host::start_tls(crate::options::tls_pair(&options.nested("tls", &["cert", "key"])?, "tls")?)?),
                false => None,
            };
            #[cfg(target_family = "wasm")]
            let tls = None;
            let host = options.string("host")?.unwrap_or_else(|| DEFAULT_LISTEN_HOST.to_owned());
            let pattern = attach::read_path(&env, &options)?;
            let authenticate = authentication::read(&options)?;
            if self.host.lifecycle.get() == Lifecycle::Stopped {
                return Err(napi::Error::from_reason("The manager is stopped: call start() before listen()"));
            }
            self.host.listen(&env, &host, port, pattern, authenticate, tls)
        })
    }

    /// Reads the TLS certificate and key of every `listen()` port again (the files it was
    /// given), or takes the pair given (`{ cert, key }`, as `listen`'s `tls`). Connections
    /// open keep the pair they were accepted with. A pair that cannot serve throws, and
    /// the one in use stays. For SIGHUP: `process.on('SIGHUP', () => manager.reloadTls())`.
    #[napi(ts_args_type = "tls?: ListenTls")]
    pub fn reload_tls(&self, env: Env, tls: Option<Unknown>) -> Result<()> {
        guard(|| {
            crate::native::available()?;
            #[cfg(not(target_family = "wasm"))]
            {
                let given = match tls {
                    Some(tls) if !matches!(tls.get_type()?, napi::ValueType::Undefined) => {
                        Some(crate::options::tls_pair(&read_options(&env, Some(tls), "tls", &["cert", "key"])?, "tls")?)
                    }
                    _ => None,
                };
                self.host.reload_tls(given)?;
            }
            Ok(())
        })
    }

    #[napi(ts_return_type = "RelayStats")]
    pub fn get_stats<'env>(&self, env: &'env Env) -> Result<Object<'env>> {
        guard(|| {
            let uptime = match self.host.lifecycle.get() {
                Lifecycle::Running { since } => Some(now().saturating_sub(since)),
                Lifecycle::Idle | Lifecycle::Stopped => None,
            };
            let relay = &self.host.engine.relay;
            let mut report = report_value(&relay.report(now()));
            report["isRunning"] = uptime.is_some().into();
            report["uptimeMs"] = uptime.unwrap_or(0).into();
            let mut stats = js::object_of(env, &report)?;
            stats.set("compression", js::object_of(env, &self.host.compression(env)?)?)?;
            stats.set("config", js::object_of(env, &ConfigReport::new(relay.config(), self.host.settings()))?)?;
            #[cfg(not(target_family = "wasm"))]
            if let Some(webhooks) = &self.host.webhooks {
                stats.set("webhooks", js::object_of(env, &webhooks.counts())?)?;
            }
            Ok(stats)
        })
    }

    /// The relay's Prometheus metrics in the text exposition format (serve them with
    /// content type `text/plain; version=0.0.4`): connections by transport, closes by
    /// transport and code, histograms of relay latency and message size, process metrics.
    #[napi]
    pub fn metrics(&self) -> Result<String> {
        guard(|| {
            #[cfg(not(target_family = "wasm"))]
            let host = self.host.webhooks.iter().flat_map(|webhooks| webhooks.gauges()).chain(self.host.proxy.iter().flat_map(|proxy| proxy.gauges())).collect();
            #[cfg(target_family = "wasm")]
            let host = Vec::new();
            Ok(switchyard_server::metrics::render(&self.host.engine.relay, self.host.engine.relay.health(now()), host))
        })
    }

    /// Connections by how they answer pings: `getStats().health`.
    #[napi(ts_return_type = "HealthStats")]
    pub fn check_connection_health(&self) -> Result<serde_json::Value> {
        guard(|| Ok(report_value(&HealthReport::from(self.host.engine.relay.health(now())))))
    }

    /// Checks an upgrade request's token, as `handleUpgrade` would: returns the identity
    /// its claims give (`{}` without auth, or without a token when none is required), or
    /// `null` when the request should be refused with 401. For bridge mode, to refuse
    /// before `ws` upgrades.
    #[napi(ts_args_type = "request: IncomingMessage", ts_return_type = "IdentityData | null")]
    pub fn authenticate<'env>(&self, env: &'env Env, request: Unknown) -> Result<Unknown<'env>> {
        guard(|| {
            if request.get_type()? != napi::ValueType::Object {
                return Err(type_error(env, "request must be the IncomingMessage of the upgrade"));
            }
            // SAFETY: an object, checked.
            let request = UpgradeRequest::read(&unsafe { request.cast::<Object>()? })?;
            match self.host.authenticate(&request) {
                Some(identity) => Ok(crate::js::object_of(env, &identity)?.to_unknown()),
                None => crate::js::to_js(env, Null),
            }
        })
    }

    /// Calls `listener` with each event of this name; for `message`, with each message
    /// whose type is in `filter.types` (only those cross into JavaScript). A listener
    /// that throws has its error printed; routing and the other listeners go on.
    #[napi(
        ts_generic_types = "E extends keyof RelayEvents",
        ts_args_type = "event: E, ...args: ListenerArgs<E>",
        ts_return_type = "this"
    )]
    pub fn on<'env>(&self, env: Env, this: This<'env>, event: Unknown, filter: Unknown, listener: Option<Unknown>) -> Result<This<'env>> {
        guard(|| {
            for kind in self.host.listeners.borrow_mut().add(&env, event, filter, listener)? {
                self.host.engine.relay.watch(&kind);
            }
            Ok(this)
        })
    }

    /// Answers `request` messages: `handler(payload, context)` returns the result (or a
    /// Promise of it), sent back as a `response`; what it throws becomes `REQUEST_FAILED`.
    /// `null` removes the handler (requests then get `NO_HANDLER`).
    #[napi(ts_args_type = "handler: RequestHandler | null")]
    pub fn on_request(&self, env: Env, handler: Unknown) -> Result<()> {
        guard(|| {
            let handler = match handler.get_type()? {
                ValueType::Null | ValueType::Undefined => None,
                // SAFETY: a function, checked.
                ValueType::Function => Some(unsafe { handler.cast::<Function<FnArgs<(Unknown, Unknown)>, Unknown>>()? }.create_ref()?),
                _ => return Err(type_error(&env, "handler must be a function, or null")),
            };
            self.host.set_request_handler(handler);
            Ok(())
        })
    }

    /// Sends `message` to every connection of a session (but `exceptConnectionId`).
    /// Returns how many connections it reached.
    #[napi(ts_args_type = "sessionId: string, message: OutgoingMessage, options?: BroadcastOptions")]
    pub fn broadcast(&self, env: Env, session_id: Unknown, message: Unknown, options: Option<Unknown>) -> Result<u32> {
        guard(|| {
            let session_id = string_argument(&env, session_id, "sessionId")?;
            let except = match read_options(&env, options, "options", &["exceptConnectionId"])?.string("exceptConnectionId")? {
                Some(id) => Some(ConnId::parse(&id).ok_or_else(|| type_error(&env, format!("exceptConnectionId {id:?} is not a connection id")))?),
                None => None,
            };
            let frame = outgoing(&env, message)?;
            self.host.send(&env, &Target { session_id: Some(&session_id), except, ..Default::default() }, frame)
        })
    }

    /// A session's kept publications after `since` (`"<epoch>:<offset>"`; all it keeps
    /// without one), at most `limit` (100; up to 1000): `recovered` says whether they are
    /// every one since then. `null` when there is no such session.
    #[napi(ts_args_type = "sessionId: string, options?: HistoryReadOptions", ts_return_type = "SessionHistory | null")]
    pub fn history<'env>(&self, env: &'env Env, session_id: Unknown, options: Option<Unknown>) -> Result<Unknown<'env>> {
        guard(|| {
            let session_id = string_argument(env, session_id, "sessionId")?;
            let (since, limit) = options::history_read(env, options)?;
            env.to_js_value(&self.host.engine.relay.history(&session_id, since.as_ref(), limit, now()))
        })
    }

    /// Publishes `message` to a session as the server, or as the member whose `clientId`
    /// is `options.clientId` (which does not receive it): numbered and kept when the
    /// session has a stream. Returns its offset (`null` without a stream) and how many
    /// members it reached.
    #[napi(ts_args_type = "sessionId: string, message: OutgoingMessage, options?: PublishOptions")]
    pub fn publish(&self, env: Env, session_id: Unknown, message: Unknown, options: Option<Unknown>) -> Result<Published> {
        guard(|| {
            let session_id = string_argument(&env, session_id, "sessionId")?;
            let client_id = read_options(&env, options, "options", &["clientId"])?.string("clientId")?;
            let frame = outgoing(&env, message)?;
            let published = self.host.engine.relay.publish(&session_id, frame, client_id.as_deref(), now());
            self.host.pump(&env)?;
            match published {
                Ok((delivered, offset)) => Ok(Published { offset: offset.map(|o| o as i64), delivered: delivered as u32 }),
                Err(PublishError::SessionNotFound) => Err(napi::Error::from_reason(format!("Session not found: {session_id}"))),
                Err(refused @ PublishError::Refused(_)) => Err(napi::Error::from_reason(refused.to_string())),
                Err(err) => Err(type_error(&env, err.to_string())),
            }
        })
    }

    /// A channel's kept publications after `since`, at most `limit`, as `history()` reads a
    /// session's (with `channels.history` on; an empty history otherwise).
    #[napi(ts_args_type = "channel: string, options?: HistoryReadOptions", ts_return_type = "SessionHistory")]
    pub fn channel_history<'env>(&self, env: &'env Env, channel: Unknown, options: Option<Unknown>) -> Result<Unknown<'env>> {
        guard(|| {
            let channel = string_argument(env, channel, "channel")?;
            let (since, limit) = options::history_read(env, options)?;
            let history = self.host.engine.relay.channel_history(&channel, since.as_ref(), limit, now()).map_err(|r| type_error(env, r.message))?;
            env.to_js_value(&history)
        })
    }

    /// A channel's members, as `PRESENCE` answers: `{ connectionId, clientId, userId, organizationId }` each.
    #[napi(ts_args_type = "channel: string", ts_return_type = "ChannelMember[]")]
    pub fn channel_presence(&self, env: Env, channel: Unknown) -> Result<Vec<serde_json::Value>> {
        guard(|| {
            let channel = string_argument(&env, channel, "channel")?;
            let clients = self.host.engine.relay.channel_presence_of(&channel).map_err(|r| type_error(&env, r.message))?;
            Ok(clients.iter().map(|c| (**c).clone()).collect())
        })
    }

    /// Who is in a session now, in the order they joined; `null` when there is no such session.
    #[napi(ts_args_type = "sessionId: string", ts_return_type = "Array<PresenceData> | null")]
    pub fn presence(&self, env: Env, session_id: Unknown) -> Result<serde_json::Value> {
        guard(|| {
            let session_id = string_argument(&env, session_id, "sessionId")?;
            Ok(serde_json::to_value(self.host.engine.relay.presence(&session_id)).unwrap_or_default())
        })
    }

    /// Sends `message` to every member of a channel. Returns how many it reached.
    #[napi(ts_args_type = "channel: string, message: OutgoingMessage")]
    pub fn broadcast_to_channel(&self, env: Env, channel: Unknown, message: Unknown) -> Result<u32> {
        guard(|| {
            let channel = string_argument(&env, channel, "channel")?;
            ChannelName::parse(&channel).map_err(|r| type_error(&env, r.message))?;
            let frame = outgoing(&env, message)?;
            self.host.send(&env, &Target { channel: Some(&channel), ..Default::default() }, frame)
        })
    }

    /// Sends `message` to every connection matching all the fields of `filter` (at least
    /// one). Returns how many it reached.
    #[napi(ts_args_type = "filter: SendFilter, message: OutgoingMessage")]
    pub fn broadcast_to_filtered(&self, env: Env, filter: Unknown, message: Unknown) -> Result<u32> {
        guard(|| {
            let fields = ["userId", "organizationId", "sessionId", "channel"];
            let filter = read_options(&env, Some(filter), "filter", &fields)?;
            let [user, organization, session, channel] = fields.map(|field| filter.string(field));
            let (user, organization, session, channel) = (user?, organization?, session?, channel?);
            if user.is_none() && organization.is_none() && session.is_none() && channel.is_none() {
                return Err(type_error(&env, "filter must give at least one of userId, organizationId, sessionId, channel"));
            }
            let frame = outgoing(&env, message)?;
            let target = Target {
                session_id: session.as_deref(),
                channel: channel.as_deref(),
                user_id: user.as_deref(),
                organization_id: organization.as_deref(),
                except: None,
            };
            self.host.send(&env, &target, frame)
        })
    }

    /// Sends `message` to every connection of a user. Returns how many it reached.
    #[napi(ts_args_type = "userId: string, message: OutgoingMessage")]
    pub fn send_to_user(&self, env: Env, user_id: Unknown, message: Unknown) -> Result<u32> {
        guard(|| {
            let user_id = string_argument(&env, user_id, "userId")?;
            let frame = outgoing(&env, message)?;
            self.host.send(&env, &Target { user_id: Some(&user_id), ..Default::default() }, frame)
        })
    }
}

/// A server-side message: a string goes as text and a Buffer as binary, as they are;
/// anything else is serialized once with `JSON.stringify`.
fn outgoing(env: &Env, message: Unknown) -> Result<Frame> {
    match message.get_type()? {
        // SAFETY: a string, checked.
        ValueType::String => Ok(Frame::text(unsafe { message.cast::<String>()? })),
        _ if message.is_typedarray()? => {
            // SAFETY: a typed array, checked; a Uint8Array (a Buffer) is what the cast accepts.
            let bytes = unsafe { message.cast::<Uint8Array>() }.map_err(|_| type_error(env, "message must be a Buffer or Uint8Array"))?;
            Ok(Frame::binary(bytes.to_vec()))
        }
        _ => match js::stringify(env, message) {
            Ok(Some(json)) => Ok(Frame::text(json)),
            Ok(None) => Err(type_error(env, "message must be an object, a string or a Buffer")),
            Err(err) => Err(type_error(env, format!("message must be JSON: {}", err.reason))),
        },
    }
}

#[cfg(feature = "test-panic")]
#[napi]
impl RelaySessionManager {
    /// Panics inside the guard, as a bug in any method would. Only in test builds.
    #[napi]
    pub fn panic_for_tests(&self, message: String) -> Result<()> {
        guard(|| panic!("{message}"))
    }
}

/// The options the event-stream methods take from `lib/event_stream.js`: `path`, the
/// WebSocket path the routes stand beside, and `identity`, what `authenticate` said
/// (`null`: refused; absent: no say).
fn event_stream_options(env: &Env, options: Option<Object>) -> Result<(Option<PathPattern>, Option<switchyard_core::Identity>)> {
    let Some(options) = options else { return Ok((None, Some(switchyard_core::Identity::default()))) };
    let path: Option<String> = options.get("path")?;
    let pattern = path.map(|path| PathPattern::parse(&path).map_err(|message| type_error(env, message))).transpose()?;
    let identity: Option<Unknown> = options.get("identity")?;
    let given = match identity {
        Some(value) if value.get_type()? == ValueType::Null => None,
        value => Some(options::identity(env, value.filter(|v| v.get_type().ok() != Some(ValueType::Undefined)))?),
    };
    Ok((pattern, given))
}

