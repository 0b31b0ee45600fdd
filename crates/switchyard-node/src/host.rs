//! The state behind a `RelaySessionManager` on the JavaScript thread: the relay, the
//! bridge sockets, the listeners, the timer and the native runtime, and the
//! [`Host::pump`] that ends every call into the relay.
//!
//! Each call ends with a pump, which writes what the relay queued for bridge sockets and
//! hands queued events to listeners. Messages from bridge sockets are pumped once per
//! event-loop turn instead, so a burst leaves each socket in one write. Native
//! connections' threads wake the pump through a thread-safe function.
//!
//! The WebAssembly build has neither the native runtime nor clusters (both need tokio's
//! sockets): what uses them is left out of it.

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use napi::bindgen_prelude::{BufferSlice, FnArgs, Function, FunctionCallContext, FunctionRef, JsObjectValue, Object, Unknown};
use napi::{Env, JsValue, Result};
use serde_json::value::RawValue;
use switchyard_core::{
    close_code, ConnId, ConnectionInfo, ErrorCode, Event, Frame, HostSettings, Identity, Millis, ConnectionRefusal, MessageRejection, Route, Target,
    Transport,
};
use switchyard_server::admission::{self, Admitted, Refused, TokenAuth, Upgrade};
use switchyard_server::bridge_outbox::BridgeOutbox;
use switchyard_server::hooks::TokenChecks;
#[cfg(not(target_family = "wasm"))]
use switchyard_server::hooks::EitherHooks;
#[cfg(not(target_family = "wasm"))]
use switchyard_server::proxy::Proxy;
use switchyard_core::Hooks;
use switchyard_server::host_queue::{HostQueue, LoopHooks, Queued};
use switchyard_server::settings::Settings;
use switchyard_server::engine::Engine;
use switchyard_server::deflate::{CompressionConfig, CompressionCounts};
use switchyard_server::event_stream::{self, Endpoint, StreamText};
use switchyard_server::path_pattern::PathPattern;
use switchyard_server::{handshake, now};

use crate::bridge::{self, BridgeSocket, Flusher};
use crate::options::MAX_TIMER_MS;
use crate::request::UpgradeRequest;
use crate::events::{self, Listeners};
use crate::hooks::JsHooks;
use crate::guard;
use crate::persistent_object::PersistentObject;
use crate::js::{self, to_js};
use crate::native;
#[cfg(target_family = "wasm")]
use crate::{authentication::Authenticate, js_types::ListenAddress};
#[cfg(target_family = "wasm")]
use napi::{Error, Status};
#[cfg(not(target_family = "wasm"))]
use switchyard_server::native_runtime::NativeRuntime;
#[cfg(not(target_family = "wasm"))]
use switchyard_server::webhooks::{Webhooks, WithWebhooks};
#[cfg(not(target_family = "wasm"))]
use switchyard_core::EventSink;

#[cfg(not(target_family = "wasm"))]
mod transport;
#[cfg(not(target_family = "wasm"))]
pub use transport::start_tls;

/// How often a stopping manager looks whether its sockets have closed.
const STOP_POLL_MS: f64 = 20.0;

/// `onRequest`'s handler: `(payload, context) => result`.
pub type RequestHandler = FunctionRef<FnArgs<(Unknown<'static>, Unknown<'static>)>, Unknown<'static>>;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Constructed; sessions and connections work, timers are off.
    Idle,
    Running { since: Millis },
    /// After `stop()`: new connections are refused until `start()`, so that a graceful
    /// stop does not admit what it is closing; sessions can still be created.
    Stopped,
}

pub struct Host {
    /// The relay and, with `redis` configured, its link to the other nodes.
    pub engine: Arc<Engine>,
    auth: Option<Arc<TokenAuth>>,
    pending: Arc<HostQueue<BridgeOutbox>>,
    sockets: RefCell<HashMap<ConnId, Rc<BridgeSocket>>>,
    pub listeners: RefCell<Listeners>,
    pub lifecycle: Cell<Lifecycle>,
    timer: RefCell<Option<PersistentObject>>,
    #[cfg(not(target_family = "wasm"))]
    native: OnceCell<NativeRuntime>,
    /// The ports `listen()` opened.
    #[cfg(not(target_family = "wasm"))]
    ports: RefCell<Vec<transport::Port>>,
    /// permessage-deflate for native connections (`nativeCompression`).
    compression: Option<CompressionConfig>,
    /// `nativeThreads`.
    native_threads: Option<usize>,
    /// `onRequest`'s handler.
    request_handler: RefCell<Option<Rc<RequestHandler>>>,
    /// The config's `hooks`.
    hooks: JsHooks,
    /// The config's `webhooks`, sent from the native runtime.
    #[cfg(not(target_family = "wasm"))]
    pub webhooks: Option<Arc<Webhooks>>,
    /// The config's `proxy`, which calls from the native runtime.
    #[cfg(not(target_family = "wasm"))]
    pub proxy: Option<Arc<Proxy>>,
    /// permessage-deflate totals of the bridge sockets that have closed: bytes before
    /// compression, bytes on the wire.
    closed_compression: Cell<(u64, u64)>,
    /// A pump is scheduled for the end of this event-loop turn.
    pump_scheduled: Cell<bool>,
    /// The function `setImmediate` calls for it, made once.
    deferred_pump: OnceCell<FunctionRef<(), ()>>,
}

impl Host {
    /// Fails on a bad `redis` option, with what is wrong with it.
    pub fn new(settings: Settings, hooks: JsHooks) -> std::result::Result<Rc<Self>, String> {
        let pending = Arc::new(HostQueue::default());
        let auth = settings.auth.map(Arc::new);
        let in_js: Arc<dyn Hooks> = Arc::new(LoopHooks { decides: hooks.decides(), queue: pending.clone() });
        #[cfg(not(target_family = "wasm"))]
        let proxy = settings.proxy.map(Proxy::new);
        #[cfg(not(target_family = "wasm"))]
        let app: Arc<dyn Hooks> = match &proxy {
            Some(proxy) => Arc::new(EitherHooks { js: in_js, proxy: proxy.clone() }),
            None => in_js,
        };
        #[cfg(target_family = "wasm")]
        let app = in_js;
        let asked = Arc::new(TokenChecks::new(auth.clone(), app));
        #[cfg(not(target_family = "wasm"))]
        let webhooks = settings.webhooks.map(Webhooks::new);
        #[cfg(not(target_family = "wasm"))]
        let sink: Arc<dyn EventSink> = match &webhooks {
            Some(webhooks) => Arc::new(WithWebhooks { inner: pending.clone(), webhooks: webhooks.clone() }),
            None => pending.clone(),
        };
        #[cfg(not(target_family = "wasm"))]
        let engine = Engine::new(settings.config, sink, asked, settings.redis).map_err(|e| e.to_string())?;
        #[cfg(target_family = "wasm")]
        let engine = Engine::alone(settings.config, pending.clone(), asked);
        Ok(Rc::new(Self {
            engine: Arc::new(engine),
            auth,
            pending,
            sockets: RefCell::default(),
            listeners: RefCell::default(),
            lifecycle: Cell::new(Lifecycle::Idle),
            timer: RefCell::default(),
            #[cfg(not(target_family = "wasm"))]
            native: OnceCell::new(),
            #[cfg(not(target_family = "wasm"))]
            ports: RefCell::default(),
            compression: settings.compression,
            native_threads: settings.native_threads,
            request_handler: RefCell::default(),
            hooks,
            #[cfg(not(target_family = "wasm"))]
            webhooks,
            #[cfg(not(target_family = "wasm"))]
            proxy,
            closed_compression: Cell::new((0, 0)),
            pump_scheduled: Cell::new(false),
            deferred_pump: OnceCell::new(),
        }))
    }

    /// Flushes bridge outboxes and delivers events until nothing is left: a listener may
    /// act on the relay and queue more.
    pub fn pump(self: &Rc<Self>, env: &Env) -> Result<()> {
        loop {
            let queued = self.pending.take();
            if queued.is_empty() {
                return Ok(());
            }
            let Queued { outboxes, events, questions } = queued;
            let sockets: Vec<Rc<BridgeSocket>> = {
                let registry = self.sockets.borrow();
                outboxes.iter().filter_map(|o| o.conn().and_then(|c| registry.get(&c).cloned())).collect()
            };
            let mut flusher = Flusher::new(env);
            for socket in &sockets {
                if let Some(waited) = flusher.flush(socket)? {
                    self.engine.relay.record_relay_latency(waited);
                }
            }
            for event in events {
                if let Event::Request { connection, request_id, payload } = event {
                    self.handle_request(env, connection, request_id, payload)?;
                    continue;
                }
                let Some((name, listeners)) = self.listeners.borrow().of(&event) else { continue };
                if !listeners.is_empty() {
                    events::deliver(env, name, listeners, event)?;
                }
            }
            for question in questions {
                let (conn, id) = (question.connection.connection_id, question.id);
                let host = self.clone();
                self.hooks.ask(env, question, move |env, verdict| {
                    host.engine.relay.decide(conn, id, verdict, now());
                    // Once at the end of the turn for every answer given in it: a burst of
                    // questions answered at once leaves each socket in one write.
                    host.pump_soon(env)
                })?;
            }
        }
    }

    /// Sets (or, with `None`, removes) the handler of `request` messages.
    pub fn set_request_handler(&self, handler: Option<RequestHandler>) {
        #[cfg(not(target_family = "wasm"))]
        let by_proxy = self.proxy.as_ref().is_some_and(|proxy| proxy.answers_requests());
        #[cfg(target_family = "wasm")]
        let by_proxy = false;
        self.engine.relay.answer_requests(handler.is_some() || by_proxy);
        *self.request_handler.borrow_mut() = handler.map(Rc::new);
    }

    /// Calls the request handler with the payload and who asked; its result (or its
    /// Promise's) is the `response`, what it throws a `REQUEST_FAILED`.
    fn handle_request(self: &Rc<Self>, env: &Env, connection: ConnectionInfo, request_id: String, payload: String) -> Result<()> {
        let conn = connection.connection_id;
        let Some(handler) = self.request_handler.borrow().clone() else {
            #[cfg(not(target_family = "wasm"))]
            if let Some(proxy) = self.proxy.as_ref().filter(|proxy| proxy.answers_requests()) {
                proxy.request(connection, request_id, payload);
                return Ok(());
            }
            self.engine.relay.respond(conn, &request_id, Err(&ErrorCode::NoHandler.into()), now());
            return Ok(());
        };
        let mut context = js::object_of(env, &connection)?;
        context.set("requestId", js::parse(env, &request_id)?)?;
        let host = self.clone();
        let answer = move |env: &Env, outcome: std::result::Result<Unknown, Unknown>| -> Result<()> {
            let result = match outcome {
                Ok(value) => match js::stringify(env, value) {
                    Ok(json) => Ok(json.unwrap_or_else(|| "null".into())),
                    Err(err) => Err(format!("The result is not JSON: {}", err.reason)),
                },
                Err(reason) => Err(js::reason(reason)),
            };
            let result = result
                .and_then(|json| RawValue::from_string(json).map_err(|err| err.to_string()))
                .map_err(|message| MessageRejection::new(ErrorCode::RequestFailed, message));
            host.engine.relay.respond(conn, &request_id, result.as_deref(), now());
            host.pump(env)
        };
        let payload = js::parse(env, &payload)?;
        match handler.borrow_back(env)?.call((payload, context.to_unknown()).into()) {
            Ok(value) => js::when_settled(env, value, answer),
            Err(thrown) => answer(env, Err(to_js(env, thrown)?)),
        }
    }

    /// Sends a message from the app to every connection `target` matches.
    pub fn send(self: &Rc<Self>, env: &Env, target: &Target, frame: Frame) -> Result<u32> {
        let delivered = self.engine.relay.send(target, frame, now());
        self.pump(env)?;
        Ok(delivered as u32)
    }

    /// Pumps at the end of this event-loop turn (`setImmediate`) rather than now, so that
    /// every message read in the turn is routed first and each socket gets all of its
    /// frames in one write.
    fn pump_soon(self: &Rc<Self>, env: &Env) -> Result<()> {
        if self.pump_scheduled.replace(true) {
            return Ok(());
        }
        let deferred = match self.deferred_pump.get() {
            Some(deferred) => deferred,
            None => {
                let host = Rc::downgrade(self);
                let function = env.create_function_from_closure::<(), (), _>("switchyardPump", move |ctx| {
                    guard(|| match host.upgrade() {
                        Some(host) => {
                            host.pump_scheduled.set(false);
                            host.pump(ctx.env)
                        }
                        None => Ok(()),
                    })
                })?;
                self.deferred_pump.get_or_init(|| function.create_ref().expect("a reference to a new function"))
            }
        };
        let set_immediate: Function<Function<(), ()>, Unknown> = env.get_global()?.get_named_property_unchecked("setImmediate")?;
        set_immediate.call(deferred.borrow_back(env)?)?;
        Ok(())
    }

    /// Starts the timers; after a stop, lets native connections in again.
    pub fn start(self: &Rc<Self>, env: &Env) -> Result<()> {
        if let Lifecycle::Running { .. } = self.lifecycle.get() {
            return Ok(());
        }
        self.start_timer(env)?;
        #[cfg(not(target_family = "wasm"))]
        {
            if let Some(native) = self.native.get() {
                native.spawner.tasks.reopen();
            }
            // After stop() the relay forgot the cluster's sessions; the link learns them again.
            if let (Some(broker), Lifecycle::Stopped) = (&self.engine.cluster, self.lifecycle.get()) {
                broker.resync();
            }
        }
        self.lifecycle.set(Lifecycle::Running { since: now() });
        Ok(())
    }

    /// What this manager applies of its options beside the relay's config.
    pub fn settings(&self) -> HostSettings {
        HostSettings {
            auth_required: self.auth.as_ref().map(|auth| auth.required),
            compression_threshold: self.compression.map(|compression| compression.threshold),
            threads: self.native_threads,
            hooks: self.engine.relay.decides(),
            #[cfg(not(target_family = "wasm"))]
            webhooks: self.webhooks.as_ref().map(|webhooks| webhooks.report()),
            #[cfg(target_family = "wasm")]
            webhooks: None,
            #[cfg(not(target_family = "wasm"))]
            proxy: self.proxy.as_ref().map(|proxy| proxy.report()),
            #[cfg(target_family = "wasm")]
            proxy: None,
        }
    }

    /// permessage-deflate over the bridge and the native transport: connections that
    /// negotiated it now, and, over all that ever did, payload bytes sent and bytes on the
    /// wire.
    pub fn compression(&self, env: &Env) -> Result<CompressionCounts> {
        let (before, after) = self.closed_compression.get();
        #[cfg(not(target_family = "wasm"))]
        let mut counts = self.native.get().map_or_else(CompressionCounts::default, |native| native.spawner.compression().counts());
        #[cfg(target_family = "wasm")]
        let mut counts = CompressionCounts::default();
        counts.bytes_before_compression += before;
        counts.bytes_on_wire += after;
        for socket in self.sockets.borrow().values() {
            if let Some((sent, on_wire)) = socket.compression(env)? {
                counts.connections += 1;
                counts.bytes_before_compression += sent;
                counts.bytes_on_wire += on_wire;
            }
        }
        Ok(counts)
    }

    fn start_timer(self: &Rc<Self>, env: &Env) -> Result<()> {
        let every = self.engine.relay.config().tick_interval_ms().min(MAX_TIMER_MS);
        let host = Rc::downgrade(self);
        let callback = env.create_function_from_closure::<(), (), _>("switchyardTick", move |ctx| {
            guard(|| match host.upgrade() {
                Some(host) => {
                    host.engine.relay.tick(now());
                    host.pump(ctx.env)
                }
                None => Ok(()),
            })
        })?;
        let set_interval: js::SetTimer<Object> = env.get_global()?.get_named_property_unchecked("setInterval")?;
        let timer = set_interval.call((callback, every as f64).into())?;
        // An unref'd timer does not keep the process alive.
        let unref: Function<(), Object> = timer.get_named_property_unchecked("unref")?;
        unref.bind(timer)?.call(())?;
        *self.timer.borrow_mut() = Some(PersistentObject::new(env, &timer)?);
        Ok(())
    }

    pub fn stop_timer(&self, env: &Env) -> Result<()> {
        if let Some(timer) = self.timer.borrow_mut().take() {
            let clear: Function<Object, Object> = env.get_global()?.get_named_property_unchecked("clearInterval")?;
            clear.call(timer.get(env)?)?;
        }
        Ok(())
    }

    /// Whether an upgrade may go ahead, and as whom: [`admission::admit`], with what
    /// the app passed overriding the token's claims field by field.
    fn check_upgrade(&self, request: Option<&UpgradeRequest>, given: Identity) -> std::result::Result<Admitted, Refused> {
        let upgrade = Upgrade {
            url: request.map(|r| r.url.as_str()),
            address: request.and_then(|r| r.address),
            header: |name: &str| request.and_then(|r| r.header(name)),
        };
        admission::admit(&self.engine.relay, self.auth.as_deref(), upgrade, given)
    }

    /// `manager.authenticate(request)`: the identity a valid token gives, `None` when the
    /// request must be refused (401).
    pub fn authenticate(&self, request: &UpgradeRequest) -> Option<Identity> {
        admission::identity_of(self.auth.as_deref(), &request.url, |name| request.header(name))
    }

    /// Takes a `ws` WebSocket into the relay. Returns whether it joined.
    pub fn adopt_bridge(
        self: &Rc<Self>,
        env: &Env,
        mut socket: Object,
        request: Option<&UpgradeRequest>,
        route: Route,
        identity: Identity,
    ) -> Result<bool> {
        if !bridge::is_open(&socket)? {
            return Ok(false);
        }
        if self.lifecycle.get() == Lifecycle::Stopped {
            bridge::refuse(&socket, ConnectionRefusal::ShuttingDown)?;
            return Ok(false);
        }
        let identity = match self.check_upgrade(request, identity) {
            Ok(admitted) => admitted.identity,
            Err(refused) => {
                bridge::refuse(&socket, refused.refusal())?;
                return Ok(false);
            }
        };
        // `message` then hands over a Buffer whatever the app set before.
        socket.set_named_property("binaryType", "nodebuffer")?;
        let outbox = BridgeOutbox::new(self.pending.clone(), self.engine.relay.config().max_queued_bytes, Transport::Bridge);
        match self.engine.relay.open(route, identity, outbox.clone(), now()) {
            Ok(conn) => {
                outbox.set_conn(conn);
                let bridged = Rc::new(BridgeSocket::new(env, &socket, outbox)?);
                self.sockets.borrow_mut().insert(conn, bridged);
                self.listen_to(env, &socket, conn)?;
                self.pump(env)?;
                Ok(true)
            }
            Err(refusal) => {
                bridge::refuse(&socket, refusal)?;
                Ok(false)
            }
        }
    }

    /// An HTTP request to one of the event-stream routes (`eventStreamHandler()`, and
    /// `attach()` beside its WebSocket path): a GET becomes a member whose frames are
    /// written to `response` as the stream's text, a POST (its `body` read by the caller)
    /// hands a member's frames to the relay. The session is where `pattern` puts it, or
    /// the path segment before `events`/`send`; `given` is what the app's `authenticate`
    /// said of a GET (`None`: refused, 401). Every answer is written to `response`.
    pub fn event_stream(
        self: &Rc<Self>,
        env: &Env,
        request: &Object,
        response: Object,
        body: Option<&[u8]>,
        pattern: Option<&PathPattern>,
        given: Option<Identity>,
    ) -> Result<()> {
        let mut request = UpgradeRequest::read(request)?;
        let Some((endpoint, route)) = event_stream_route(&request.url, pattern) else {
            return answer(env, &response, 404, &[], &event_stream::error_body("NOT_FOUND", "Event streams are served at <path>/events, sends at <path>/send"));
        };
        match (endpoint, request.method.as_str(), body) {
            (_, "OPTIONS", _) => answer(env, &response, 204, &[], ""),
            (Endpoint::Send, "POST", Some(body)) => {
                let token = request.header(event_stream::SEND_TOKEN_HEADER);
                let sent = event_stream::send(&self.engine.relay, &self.engine.send_tokens, &route, token, request.header("content-type"), Bytes::copy_from_slice(body));
                let answered = match sent {
                    Ok(_) => answer(env, &response, 202, &[], ""),
                    Err(error) => answer(env, &response, error.status(), &[], &error.body()),
                };
                self.pump(env)?;
                answered
            }
            (Endpoint::Events, "GET", _) => {
                request.url = event_stream::resume_url(&request.url, request.header("last-event-id")).into_owned();
                let refused = |refusal: ConnectionRefusal| {
                    let (status, code) = event_stream::refusal_status(refusal);
                    answer(env, &response, status, &[], &event_stream::error_body(code, &refusal.to_string()))
                };
                if self.lifecycle.get() == Lifecycle::Stopped {
                    return refused(ConnectionRefusal::ShuttingDown);
                }
                let Some(given) = given else { return refused(ConnectionRefusal::Unauthorized) };
                let identity = match self.check_upgrade(Some(&request), given) {
                    Ok(admitted) => admitted.identity,
                    Err(refusal) => return refused(refusal.refusal()),
                };
                let positions = identity.resume.positions;
                let outbox = BridgeOutbox::new(self.pending.clone(), self.engine.relay.config().max_queued_bytes, Transport::EventStream);
                let conn = match self.engine.relay.open(route.clone(), identity, outbox.clone(), now()) {
                    Ok(conn) => conn,
                    Err(refusal) => return refused(refusal),
                };
                outbox.set_conn(conn);
                answer(env, &response, 200, &event_stream::HEADERS, "")?;
                let text = StreamText::new(positions, event_stream::send_url(&request.url), self.engine.send_tokens.issue(conn, &route));
                let bridged = Rc::new(BridgeSocket::event_stream(env, &response, outbox, text, self.engine.relay.clone(), conn)?);
                self.sockets.borrow_mut().insert(conn, bridged);
                let host = self.clone();
                js::listen(env, &response, "close", move |ctx: FunctionCallContext| {
                    guard(|| {
                        host.engine.send_tokens.forget(conn);
                        host.engine.relay.connection_closed(conn, close_code::ABNORMAL, "Stream closed", now());
                        host.sockets.borrow_mut().remove(&conn);
                        host.pump(ctx.env)
                    })
                })?;
                self.pump(env)
            }
            _ => answer(env, &response, 405, &[], &event_stream::error_body("METHOD_NOT_ALLOWED", "GET <path>/events, POST <path>/send")),
        }
    }

    /// The bridge socket's events, wired to the relay.
    fn listen_to(self: &Rc<Self>, env: &Env, socket: &Object, conn: ConnId) -> Result<()> {
        let host = self.clone();
        js::listen(env, socket, "message", move |ctx: FunctionCallContext| {
            guard(|| {
                let data: BufferSlice = ctx.get(0)?;
                let is_binary: bool = ctx.get(1)?;
                let bytes = Bytes::copy_from_slice(&data);
                let frame = if is_binary { Frame::binary(bytes) } else { Frame::text(bytes) };
                host.engine.relay.receive(conn, frame, now());
                host.pump_soon(ctx.env)
            })
        })?;
        let host = self.clone();
        js::listen(env, socket, "pong", move |ctx: FunctionCallContext| {
            guard(|| {
                host.engine.relay.pong(conn, now());
                host.pump(ctx.env)
            })
        })?;
        let host = self.clone();
        js::listen(env, socket, "close", move |ctx: FunctionCallContext| {
            guard(|| {
                let code: u32 = ctx.get(0).unwrap_or(close_code::NO_STATUS.into());
                let reason = ctx.get::<BufferSlice>(1).map(|r| String::from_utf8_lossy(&r).into_owned()).unwrap_or_default();
                let code = u16::try_from(code).unwrap_or(close_code::NO_STATUS);
                host.engine.relay.connection_closed(conn, code, &reason, now());
                let closed = host.sockets.borrow_mut().remove(&conn);
                if let Some((before, after)) = closed.map(|s| s.compression(ctx.env)).transpose()?.flatten() {
                    let (total_before, total_after) = host.closed_compression.get();
                    host.closed_compression.set((total_before + before, total_after + after));
                }
                host.pump(ctx.env)
            })
        })?;
        // Without a listener, an `error` event would be thrown; `close` follows it.
        js::listen(env, socket, "error", |_ctx: FunctionCallContext| Ok(()))
    }

    /// The WebAssembly build cannot take sockets ([`transport`] has the native
    /// transport's `adopt_native`): [`native::available`] says so.
    #[cfg(target_family = "wasm")]
    pub fn adopt_native(self: &Rc<Self>, _: &Env, _: &Object, _: &Object, _: Route, _: Identity, _: Bytes) -> Result<bool> {
        native::available().map(|()| false)
    }

    /// Nor take an event stream's socket: [`native::available`] says so.
    #[cfg(target_family = "wasm")]
    pub fn adopt_event_stream(self: &Rc<Self>, _: &Env, _: &Object, _: &PathPattern, _: Option<Identity>) -> Result<()> {
        native::available()
    }

    /// Nor open a port of its own: [`native::available`] says so.
    #[cfg(target_family = "wasm")]
    pub fn listen(self: &Rc<Self>, _: &Env, _: &str, _: u16, _: PathPattern, _: Option<Rc<Authenticate>>, _: Option<()>) -> Result<ListenAddress> {
        native::available().and_then(|()| Err(Error::new(Status::GenericFailure, "listen() needs the native transport")))
    }

    /// Answers an upgrade the app refused (its `authenticate` said no, or threw).
    pub fn refuse_upgrade(&self, socket: &Object, status: u16, reason: &str) -> Result<()> {
        native::respond_and_close(socket, handshake::http_error(status, reason, reason, ""))
    }

    /// Closes every connection with `code` and `reason`, forgets every session and stops
    /// the timers; resolves the returned Promise once every socket has closed, or, after
    /// `timeout_ms`, once what is left has been terminated.
    pub fn stop<'env>(self: &Rc<Self>, env: &'env Env, code: u16, reason: &str, timeout_ms: f64) -> Result<Object<'env>> {
        self.stop_timer(env)?;
        self.lifecycle.set(Lifecycle::Stopped);
        self.engine.relay.shutdown(code, reason, now());
        self.pump(env)?;
        #[cfg(not(target_family = "wasm"))]
        {
            self.ports.borrow_mut().clear();
            if let Some(native) = self.native.get() {
                native.spawner.tasks.close();
            }
        }
        let (deferred, promise) = env.create_deferred::<(), fn(Env) -> Result<()>>()?;
        self.await_closed(env, Instant::now() + Duration::from_secs_f64(timeout_ms / 1000.0), Box::new(move || deferred.resolve(|_| Ok(()))))?;
        Ok(promise)
    }

    /// Calls `done` once no socket is open, polling every few milliseconds; at `deadline`
    /// terminates bridge sockets and drops native connections first.
    fn await_closed(self: &Rc<Self>, env: &Env, deadline: Instant, done: Box<dyn FnOnce()>) -> Result<()> {
        #[cfg(not(target_family = "wasm"))]
        let native_open = self.native.get().is_some_and(|n| !n.spawner.tasks.is_empty());
        #[cfg(target_family = "wasm")]
        let native_open = false;
        if self.sockets.borrow().is_empty() && !native_open {
            done();
            return Ok(());
        }
        if Instant::now() >= deadline {
            let sockets: Vec<Rc<BridgeSocket>> = self.sockets.borrow_mut().drain().map(|(_, s)| s).collect();
            for socket in sockets {
                socket.terminate(env)?;
            }
            #[cfg(not(target_family = "wasm"))]
            if let Some(native) = self.native.get() {
                native.spawner.abort_all();
            }
            done();
            return Ok(());
        }
        let host = self.clone();
        js::set_timeout(env, STOP_POLL_MS, move |env| host.await_closed(env, deadline, done))
    }
}

/// Writes an answer of the event-stream routes to a `ServerResponse`: the status, `headers`
/// and the CORS ones, and `body` (JSON) to end it; a stream (status 200) stays open, its
/// head sent at once.
fn answer(env: &Env, response: &Object, status: u16, headers: &[(&str, &str)], body: &str) -> Result<()> {
    let json = [("content-type", "application/json")];
    let headers = if body.is_empty() { headers } else { &json[..] };
    let mut head = Object::new(env)?;
    for (name, value) in headers.iter().chain(&event_stream::CORS) {
        head.set_named_property(name, *value)?;
    }
    // Written with its length: `writeHead` fixes the head, and without one Node would chunk it.
    if status != 200 {
        head.set_named_property("content-length", body.len() as u32)?;
    }
    let write_head: Function<FnArgs<(u32, Object)>, Unknown> = response.get_named_property_unchecked("writeHead")?;
    write_head.bind(response)?.call((u32::from(status), head).into())?;
    if status == 200 {
        return js::call_method(response, "flushHeaders").map(drop);
    }
    let end: Function<&str, Unknown> = response.get_named_property_unchecked("end")?;
    end.bind(response)?.call(body).map(drop)
}

/// Which event-stream route `url` is, and the member's route: where `pattern` (a
/// WebSocket path) puts the path before `/events` or `/send`, or, without one, a session
/// named by the segment before them (none for `/events` itself).
pub fn event_stream_route(url: &str, pattern: Option<&PathPattern>) -> Option<(Endpoint, Route)> {
    let (base, endpoint) = Endpoint::split(url)?;
    let route = match (pattern, base.split(['?', '#']).next().unwrap_or_default().rsplit_once('/')) {
        (Some(pattern), _) => pattern.route(&base)?,
        (None, Some((_, ""))) | (None, None) => Route::Sessionless,
        (None, Some((_, segment))) => Route::Session(percent_encoding::percent_decode_str(segment).decode_utf8_lossy().into_owned()),
    };
    Some((endpoint, route))
}
