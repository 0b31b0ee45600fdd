//! `RelaySessionManager`, the class Node apps use: sessions, WebSocket upgrades, timers,
//! stats and events, over one [`Relay`].
//!
//! Everything here runs on the JavaScript thread. Each call into the relay ends with
//! [`Manager::pump`], which writes what the relay queued for bridge sockets and hands
//! queued events to listeners, so a relayed message leaves within the same JS task that
//! received it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use napi::bindgen_prelude::{
    BufferSlice, FnArgs, Function, FunctionCallContext, FunctionRef, JsObjectValue, Object, ObjectRef, This,
    ToNapiValue, Unknown,
};
use napi::{Env, Error, JsValue, Result, Status, ValueType};
use napi_derive::napi;
use switchyard_core::{
    close_code, Config, ConnId, Event, Frame, Identity, Millis, Refusal, Relay, Route, SessionError, SessionOptions,
    SlowConsumerPolicy,
};

use crate::bridge::{self, BridgeOutbox, BridgeSocket, Flusher};
use crate::guard;
use crate::js_types::{ConnectionEvent, DisconnectEvent, RelayStats, SessionData, SessionEndedEvent};
use crate::options::{type_error, OptionsReader};
use crate::pending::Pending;

/// Longest interval a JS timer accepts (2^31 - 1 ms); longer ones fire at once.
const MAX_TIMER_MS: u64 = i32::MAX as u64;
/// Bounds of the other numeric options: comfortably inside a JS number's exact range.
const MAX_MS: u64 = 1 << 50;
const MAX_BYTES: u64 = 1 << 40;

const CONFIG_OPTIONS: [&str; 8] = [
    "sessionTimeoutMs",
    "maxClientsPerSession",
    "pingIntervalMs",
    "heartbeatTimeoutMs",
    "cleanupIntervalMs",
    "maxMessageBytes",
    "maxQueuedBytes",
    "slowConsumer",
];
const SESSION_OPTIONS: [&str; 4] = ["sessionId", "expiresIn", "metadata", "maxClients"];
const CONNECTION_OPTIONS: [&str; 4] = ["userId", "organizationId", "clientId", "metadata"];

fn now() -> Millis {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as Millis)
}

/// The events listeners can subscribe to, by the names users write.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum EventName {
    Connection,
    Disconnect,
    SessionCreated,
    SessionDeleted,
    SessionExpired,
}

const EVENT_NAMES: [(&str, EventName); 5] = [
    ("connection", EventName::Connection),
    ("disconnect", EventName::Disconnect),
    ("sessionCreated", EventName::SessionCreated),
    ("sessionDeleted", EventName::SessionDeleted),
    ("sessionExpired", EventName::SessionExpired),
];

impl EventName {
    fn parse(name: &str) -> Option<Self> {
        EVENT_NAMES.iter().find(|(n, _)| *n == name).map(|(_, e)| *e)
    }

    fn as_str(self) -> &'static str {
        EVENT_NAMES.iter().find(|(_, e)| *e == self).map_or("?", |(n, _)| n)
    }
}

type Listener = FunctionRef<Unknown<'static>, Unknown<'static>>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    /// Constructed; sessions and connections work, timers are off.
    Idle,
    Running { since: Millis },
    /// After `stop()`: everything refused until `start()`.
    Stopped,
}

/// The state behind a `RelaySessionManager`, shared with the callbacks it gives sockets
/// and timers. JS-thread only.
struct Manager {
    relay: Arc<Relay>,
    pending: Arc<Pending>,
    sockets: RefCell<HashMap<ConnId, Rc<BridgeSocket>>>,
    listeners: RefCell<HashMap<EventName, Vec<Rc<Listener>>>>,
    lifecycle: Cell<Lifecycle>,
    timer: RefCell<Option<ObjectRef<false>>>,
}

impl Manager {
    /// Flushes bridge outboxes and delivers events until nothing is left: a listener may
    /// act on the relay and queue more.
    fn pump(&self, env: &Env) -> Result<()> {
        loop {
            let outboxes = self.pending.take_outboxes();
            let events = self.pending.take_events();
            if outboxes.is_empty() && events.is_empty() {
                return Ok(());
            }
            let sockets: Vec<Rc<BridgeSocket>> = {
                let registry = self.sockets.borrow();
                outboxes.iter().filter_map(|o| o.conn().and_then(|c| registry.get(&c).cloned())).collect()
            };
            let mut flusher = Flusher::new(env);
            for socket in &sockets {
                flusher.flush(socket)?;
            }
            for event in events {
                self.dispatch(env, event)?;
            }
        }
    }

    fn dispatch(&self, env: &Env, event: Event) -> Result<()> {
        let name = match &event {
            Event::Connected(_) => EventName::Connection,
            Event::Disconnected { .. } => EventName::Disconnect,
            Event::SessionCreated(_) => EventName::SessionCreated,
            Event::SessionDeleted { .. } => EventName::SessionDeleted,
            Event::SessionExpired { .. } => EventName::SessionExpired,
        };
        let listeners: Vec<Rc<Listener>> = self.listeners.borrow().get(&name).cloned().unwrap_or_default();
        if listeners.is_empty() {
            return Ok(());
        }
        let payload = match event {
            Event::Connected(info) => to_js(env, ConnectionEvent::from(info))?,
            Event::Disconnected { connection, code, reason } => to_js(env, DisconnectEvent::new(connection, code, reason))?,
            Event::SessionCreated(info) => to_js(env, SessionData::from(info))?,
            Event::SessionDeleted { session_id } | Event::SessionExpired { session_id } => {
                to_js(env, SessionEndedEvent { session_id: session_id.to_string() })?
            }
        };
        for listener in listeners {
            // SAFETY: `payload` lives in the current handle scope.
            let argument = unsafe { Unknown::from_raw_unchecked(env.raw(), payload.raw()) };
            if let Err(err) = listener.borrow_back(env)?.call(argument) {
                report_listener_error(env, name, err)?;
            }
        }
        Ok(())
    }

    fn tick(&self, env: &Env) -> Result<()> {
        self.relay.tick(now());
        self.pump(env)
    }

    fn start_timer(self: &Rc<Self>, env: &Env) -> Result<()> {
        let config = self.relay.config();
        let every = config.ping_interval_ms.min(config.cleanup_interval_ms).min(MAX_TIMER_MS);
        let manager = Rc::downgrade(self);
        let callback = env.create_function_from_closure::<(), (), _>("switchyardTick", move |ctx| {
            guard(|| match manager.upgrade() {
                Some(manager) => manager.tick(ctx.env),
                None => Ok(()),
            })
        })?;
        let set_interval: Function<FnArgs<(Function<(), ()>, f64)>, Object> =
            env.get_global()?.get_named_property_unchecked("setInterval")?;
        let timer = set_interval.call((callback, every as f64).into())?;
        // An unref'd timer does not keep the process alive.
        let unref: Function<(), Unknown> = timer.get_named_property_unchecked("unref")?;
        unref.bind(&timer)?.call(())?;
        *self.timer.borrow_mut() = Some(timer.create_ref()?);
        Ok(())
    }

    fn stop_timer(&self, env: &Env) -> Result<()> {
        if let Some(timer) = self.timer.borrow_mut().take() {
            let clear: Function<Object, Unknown> = env.get_global()?.get_named_property_unchecked("clearInterval")?;
            clear.call(timer.get_value(env)?)?;
            timer.unref(env)?;
        }
        Ok(())
    }

    /// The socket's events, wired to the relay. Each callback ends with a pump so what
    /// the frame caused goes out at once.
    fn listen_to(self: &Rc<Self>, env: &Env, socket: &Object, conn: ConnId) -> Result<()> {
        let manager = self.clone();
        bridge::listen(env, socket, "message", move |ctx: FunctionCallContext| {
            guard(|| {
                let data: BufferSlice = ctx.get(0)?;
                let is_binary: bool = ctx.get(1)?;
                let bytes = bytes::Bytes::copy_from_slice(&data);
                let frame = if is_binary { Frame::binary(bytes) } else { Frame::text(bytes) };
                manager.relay.receive(conn, frame, now());
                manager.pump(ctx.env)
            })
        })?;
        let manager = self.clone();
        bridge::listen(env, socket, "pong", move |ctx: FunctionCallContext| {
            guard(|| {
                manager.relay.pong(conn, now());
                manager.pump(ctx.env)
            })
        })?;
        let manager = self.clone();
        bridge::listen(env, socket, "close", move |ctx: FunctionCallContext| {
            guard(|| {
                let code: u32 = ctx.get(0).unwrap_or(1005);
                let reason: String = ctx.get::<BufferSlice>(1).map(|r| String::from_utf8_lossy(&r).into_owned()).unwrap_or_default();
                manager.relay.close(conn, u16::try_from(code).unwrap_or(1005), &reason, now());
                manager.sockets.borrow_mut().remove(&conn);
                manager.pump(ctx.env)
            })
        })?;
        // Without a listener, an `error` event would be thrown; `close` follows it.
        bridge::listen(env, socket, "error", |_ctx: FunctionCallContext| Ok(()))
    }
}

fn to_js<T: ToNapiValue>(env: &Env, value: T) -> Result<Unknown<'static>> {
    // SAFETY: the value is created in the current handle scope and used within it.
    unsafe { Ok(Unknown::from_raw_unchecked(env.raw(), T::to_napi_value(env.raw(), value)?)) }
}

/// A throwing listener must not stop routing nor the other listeners: its error is
/// printed, as Node prints an unhandled rejection, and the relay carries on.
fn report_listener_error(env: &Env, name: EventName, err: Error) -> Result<()> {
    let console: Object = env.get_global()?.get_named_property_unchecked("console")?;
    let print: Function<FnArgs<(String, Error)>, Unknown> = console.get_named_property_unchecked("error")?;
    let message = format!("switchyard: a {:?} listener threw:", name.as_str());
    print.bind(&console)?.call((message, err).into())?;
    Ok(())
}

fn read_config(env: &Env, value: Option<Unknown>) -> Result<Config> {
    let options = OptionsReader::new(env, value, "config", &CONFIG_OPTIONS)?;
    let defaults = Config::default();
    Ok(Config {
        session_timeout_ms: options.positive_integer("sessionTimeoutMs", MAX_MS)?.unwrap_or(defaults.session_timeout_ms),
        max_clients_per_session: options
            .positive_integer("maxClientsPerSession", u32::MAX.into())?
            .map_or(defaults.max_clients_per_session, |n| n as usize),
        ping_interval_ms: options.positive_integer("pingIntervalMs", MAX_TIMER_MS)?.unwrap_or(defaults.ping_interval_ms),
        heartbeat_timeout_ms: options.positive_integer("heartbeatTimeoutMs", MAX_MS)?.unwrap_or(defaults.heartbeat_timeout_ms),
        cleanup_interval_ms: options.positive_integer("cleanupIntervalMs", MAX_TIMER_MS)?.unwrap_or(defaults.cleanup_interval_ms),
        max_message_bytes: options
            .positive_integer("maxMessageBytes", MAX_BYTES)?
            .map_or(defaults.max_message_bytes, |n| n as usize),
        max_queued_bytes: options
            .positive_integer("maxQueuedBytes", MAX_BYTES)?
            .map_or(defaults.max_queued_bytes, |n| n as usize),
        slow_consumer: options
            .choice("slowConsumer", &SlowConsumerPolicy::NAMES)?
            .and_then(SlowConsumerPolicy::from_name)
            .unwrap_or(defaults.slow_consumer),
    })
}

fn read_session_options(env: &Env, value: Option<Unknown>) -> Result<SessionOptions> {
    let options = OptionsReader::new(env, value, "options", &SESSION_OPTIONS)?;
    Ok(SessionOptions {
        session_id: options.string("sessionId")?,
        expires_in_ms: options.positive_integer("expiresIn", MAX_MS)?,
        metadata: options.json("metadata")?,
        max_clients: options.positive_integer("maxClients", u32::MAX.into())?.map(|n| n as usize),
    })
}

fn read_identity(env: &Env, value: Option<Unknown>) -> Result<Identity> {
    let options = OptionsReader::new(env, value, "options", &CONNECTION_OPTIONS)?;
    Ok(Identity {
        user_id: options.string("userId")?,
        organization_id: options.string("organizationId")?,
        client_id: options.string("clientId")?,
        metadata: options.json("metadata")?,
    })
}

/// `sessionId` as given to `handleUpgrade`: a string, or `null` for a sessionless
/// connection.
fn read_route(env: &Env, value: Unknown) -> Result<Route> {
    match value.get_type()? {
        ValueType::Null | ValueType::Undefined => Ok(Route::Sessionless),
        // SAFETY: a string, checked.
        ValueType::String => Ok(Route::Session(unsafe { value.cast::<String>()? })),
        _ => Err(type_error(env, "sessionId must be a string, or null for a sessionless connection")),
    }
}

fn session_error(env: &Env, err: SessionError) -> Error {
    match err {
        SessionError::InvalidOption(message) => type_error(env, message),
        other => Error::new(Status::InvalidArg, other.to_string()),
    }
}

/// Sessions and WebSocket connections relayed by the Rust core. See the README for the
/// whole API; `index.d.ts` types every option and event.
#[napi]
pub struct RelaySessionManager {
    manager: Rc<Manager>,
}

#[napi]
impl RelaySessionManager {
    #[napi(constructor, ts_args_type = "config?: RelaySessionManagerConfig")]
    pub fn new(env: Env, config: Option<Unknown>) -> Result<Self> {
        guard(|| {
            let config = read_config(&env, config)?;
            config.validate().map_err(|err| type_error(&env, err.to_string()))?;
            let pending = Arc::new(Pending::default());
            Ok(Self {
                manager: Rc::new(Manager {
                    relay: Arc::new(Relay::new(config, pending.clone())),
                    pending,
                    sockets: RefCell::default(),
                    listeners: RefCell::default(),
                    lifecycle: Cell::new(Lifecycle::Idle),
                    timer: RefCell::default(),
                }),
            })
        })
    }

    /// Starts the ping and cleanup timers. Calling it while running does nothing; after
    /// `stop()` it makes the manager usable again. The timers never keep Node alive.
    #[napi]
    pub fn start(&self, env: Env) -> Result<()> {
        guard(|| {
            if let Lifecycle::Running { .. } = self.manager.lifecycle.get() {
                return Ok(());
            }
            self.manager.start_timer(&env)?;
            self.manager.lifecycle.set(Lifecycle::Running { since: now() });
            Ok(())
        })
    }

    /// Closes every connection with 1001 "Server shutting down", forgets every session
    /// and stops the timers. Until `start()`, new sessions and connections are refused.
    #[napi]
    pub fn stop(&self, env: Env) -> Result<()> {
        guard(|| {
            self.manager.stop_timer(&env)?;
            self.manager.lifecycle.set(Lifecycle::Stopped);
            self.manager.relay.shutdown(close_code::GOING_AWAY, Refusal::ShuttingDown.reason(), now());
            self.manager.pump(&env)
        })
    }

    /// Creates a session. Throws a `TypeError` for a bad option and an `Error` for an id
    /// that is taken or not `[A-Za-z0-9_-]{1,128}`.
    #[napi(ts_args_type = "options?: CreateSessionOptions")]
    pub fn create_session(&self, env: Env, options: Option<Unknown>) -> Result<SessionData> {
        guard(|| {
            let options = read_session_options(&env, options)?;
            if self.manager.lifecycle.get() == Lifecycle::Stopped {
                return Err(Error::new(
                    Status::GenericFailure,
                    "RelaySessionManager is stopped; call start() before creating sessions",
                ));
            }
            let info = self.manager.relay.create_session(options, now()).map_err(|err| session_error(&env, err))?;
            self.manager.pump(&env)?;
            Ok(info.into())
        })
    }

    /// The session, or `null` when there is none with this id.
    #[napi]
    pub fn get_session(&self, session_id: String) -> Result<Option<SessionData>> {
        guard(|| Ok(self.manager.relay.session(&session_id).map(Into::into)))
    }

    #[napi]
    pub fn list_sessions(&self) -> Result<Vec<SessionData>> {
        guard(|| Ok(self.manager.relay.sessions().into_iter().map(Into::into).collect()))
    }

    /// Removes a session, closing its connections with 1000 "Session deleted". Returns
    /// whether it existed.
    #[napi]
    pub fn delete_session(&self, env: Env, session_id: String) -> Result<bool> {
        guard(|| {
            let deleted = self.manager.relay.delete_session(&session_id, now());
            self.manager.pump(&env)?;
            Ok(deleted)
        })
    }

    /// Hands an accepted `ws` WebSocket to the relay. Returns `true` when it joined;
    /// `false` when it was refused and closed (1008 "Session not found" or "Session
    /// full", 1001 after `stop()`). `sessionId` `null` makes a sessionless connection.
    #[napi(
        ts_args_type = "sessionId: string | null, socket: WebSocketLike, request?: IncomingMessage, options?: ConnectionOptions"
    )]
    pub fn handle_upgrade(
        &self,
        env: Env,
        session_id: Unknown,
        socket: Unknown,
        request: Option<Unknown>,
        options: Option<Unknown>,
    ) -> Result<bool> {
        let _ = request;
        guard(|| {
            let route = read_route(&env, session_id)?;
            let socket = bridge::as_websocket(socket).map_err(|message| type_error(&env, message))?;
            let identity = read_identity(&env, options)?;
            if !bridge::is_open(&socket)? {
                return Ok(false);
            }
            if self.manager.lifecycle.get() == Lifecycle::Stopped {
                let refusal = Refusal::ShuttingDown;
                bridge::close_unadopted(&socket, refusal.close_code(), refusal.reason())?;
                return Ok(false);
            }
            // `message` hands over a Buffer whatever the app set before.
            let mut socket_object = socket;
            socket_object.set_named_property("binaryType", "nodebuffer")?;
            let outbox = BridgeOutbox::new(self.manager.pending.clone(), self.manager.relay.config().max_queued_bytes);
            match self.manager.relay.open(route, identity, outbox.clone(), now()) {
                Ok(conn) => {
                    outbox.set_conn(conn);
                    let bridged = Rc::new(BridgeSocket::new(&env, &socket_object, outbox)?);
                    self.manager.sockets.borrow_mut().insert(conn, bridged);
                    self.manager.listen_to(&env, &socket_object, conn)?;
                    self.manager.pump(&env)?;
                    Ok(true)
                }
                Err(refusal) => {
                    bridge::close_unadopted(&socket_object, refusal.close_code(), refusal.reason())?;
                    Ok(false)
                }
            }
        })
    }

    #[napi]
    pub fn get_stats(&self) -> Result<RelayStats> {
        guard(|| {
            let uptime = match self.manager.lifecycle.get() {
                Lifecycle::Running { since } => Some(now().saturating_sub(since)),
                Lifecycle::Idle | Lifecycle::Stopped => None,
            };
            Ok(RelayStats::new(self.manager.relay.stats(), self.manager.relay.config(), uptime))
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
            let (name, listener) = read_listener(&env, event, listener)?;
            self.manager.listeners.borrow_mut().entry(name).or_default().push(Rc::new(listener));
            Ok(this)
        })
    }
}

fn read_listener(env: &Env, event: Unknown, listener: Unknown) -> Result<(EventName, Listener)> {
    let names = || EVENT_NAMES.iter().map(|(n, _)| format!("{n:?}")).collect::<Vec<_>>().join(", ");
    let name = match event.get_type()? {
        // SAFETY: a string, checked.
        ValueType::String => unsafe { event.cast::<String>()? },
        _ => return Err(type_error(env, format!("event must be a string, one of {}", names()))),
    };
    let Some(name) = EventName::parse(&name) else {
        return Err(type_error(env, format!("unknown event {name:?}; expected one of {}", names())));
    };
    if listener.get_type()? != ValueType::Function {
        return Err(type_error(env, "listener must be a function"));
    }
    // SAFETY: a function, checked.
    let function: Function<Unknown<'static>, Unknown<'static>> = unsafe { listener.cast()? };
    Ok((name, function.create_ref()?))
}
