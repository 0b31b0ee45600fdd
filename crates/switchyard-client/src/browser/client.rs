//! `RelayClient`: a WebSocket to a Switchyard relay that survives bad networks. It
//! reconnects with backoff, queues what is sent while down, rejoins its channels, and
//! matches requests to responses. With `recover`, it follows its session's stream and
//! reconnects from the last position it saw, so nothing published meanwhile is lost.
//! With `getToken`, each (re)connection carries a fresh token, and a `token_expiring`
//! warning is answered with `refresh`.
//!
//! JavaScript callbacks (listeners, Promise settlers) are always called with no borrow of
//! the client's state held, so they may call the client again. Closures that end their
//! own timer or socket hand it to `retired`, emptied when the next callback starts.

use std::any::Any;
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::rc::{Rc, Weak};

use js_sys::{Array, Function, Promise, JSON, Object, Reflect, Uint8Array};
use serde::Deserialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{BinaryType, CloseEvent, MessageEvent, WebSocket};

use super::timer::Timer;
use super::{error, type_error, Status};
use crate::backoff::{reconnects_after, Backoff};
use crate::outgoing::Outgoing;
use crate::requests::Requests;

const DEFAULT_QUEUE_LIMIT: usize = 1000;
const DEFAULT_REQUEST_TIMEOUT_MS: f64 = 30_000.0;

/// `RelayClient`'s options, as JavaScript gives them (`RelayClientOptions`).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientOptions {
    /// When to try again after the connection drops.
    #[serde(default)]
    pub reconnect: Backoff,
    /// Messages that may wait while the connection is down; `None` for 1000.
    pub queue_limit: Option<usize>,
    /// Whether to follow the session's stream and reconnect from the last position seen.
    #[serde(default)]
    pub recover: bool,
    /// Gives the token for each (re)connection and each `refresh`. Serde cannot read a
    /// function: `RelayClient` takes it out of the options itself.
    #[serde(skip)]
    pub get_token: Option<Function>,
}

#[wasm_bindgen]
extern "C" {
    /// What `Promise.allSettled` gives: a Promise that always fulfills, so a callback
    /// made by `Closure::once_into_js` (freed when called) is never left behind.
    type Settling;
    /// `then(callback)`, for a callback that is a plain function.
    #[wasm_bindgen(method)]
    fn then(this: &Settling, callback: &JsValue);
}

/// Where the client stands in its session's stream, with `recover`.
#[derive(Default)]
struct Place {
    /// The stream's epoch and the last offset seen; `None` before the first welcome.
    position: Option<(String, u64)>,
    /// Its connections since the last publication it saw: what a reconnect names as
    /// `previous`, so that nothing it published through them comes back.
    since_seen: Vec<String>,
    /// Each joined channel's epoch and last offset seen.
    channels: HashMap<String, (String, u64)>,
}

impl Place {
    /// The most connections `previous` names (the server reads 16).
    const MAX_PREVIOUS: usize = 16;

    /// What a `JOIN_CHANNEL` adds to follow the channel's stream: from where it left off,
    /// or from now.
    fn join_fields(&self, channel: &str) -> String {
        match self.channels.get(channel) {
            Some((epoch, offset)) => format!(r#","since":{{"epoch":{},"offset":{offset}}}"#, quote(epoch)),
            None => r#","positions":true"#.into(),
        }
    }

    /// The query a (re)connection adds to the URL.
    fn query(&self) -> String {
        match &self.position {
            None => "positions=1".into(),
            Some((epoch, offset)) => {
                let previous: Vec<String> = self.since_seen.iter().map(|id| encode(id)).collect();
                format!("since={}:{offset}&previous={}", encode(epoch), previous.join(","))
            }
        }
    }
}

fn encode(text: &str) -> String {
    js_sys::encode_uri_component(text).into()
}

/// A socket and the closures that handle its events.
struct Socket {
    ws: WebSocket,
    _handlers: Vec<Closure<dyn FnMut(JsValue)>>,
    /// The relay's name for this connection, from its welcome.
    connection_id: Option<String>,
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        self.ws.set_onerror(None);
    }
}

struct Pending {
    resolve: Function,
    reject: Function,
    timer: Timer,
}

struct Join {
    channel: String,
    resolve: Function,
    reject: Function,
}

struct State {
    socket: Option<Socket>,
    status: Status,
    /// Reconnection attempts since the connection was last open.
    attempt: u32,
    /// `close()` was called: never reconnect.
    stopped: bool,
    outgoing: Outgoing,
    requests: Requests<Pending>,
    /// `joinChannel` Promises, by the `id` their JOIN_CHANNEL carried.
    joins: HashMap<String, Join>,
    next_join: u64,
    /// Channels to rejoin after a reconnect.
    channels: BTreeSet<String>,
    listeners: Vec<(String, Function)>,
    status_listeners: Vec<Function>,
    reconnect: Option<Timer>,
    retired: Vec<Box<dyn Any>>,
    /// With `recover`.
    place: Option<Place>,
}

/// Called on the connection's own thread (JS is single-threaded) when it opens.
pub type OnOpen = Box<dyn Fn()>;

/// A relay connection that reconnects by itself: what `RelayClient` and
/// `FocusDeclarationProtocol` are built on.
pub struct Connection {
    url: String,
    backoff: Backoff,
    get_token: Option<Function>,
    me: Weak<Connection>,
    state: RefCell<State>,
    /// Run after each (re)open, before queued messages go out: the focus protocol
    /// registers its open case here.
    on_open: RefCell<Option<OnOpen>>,
}

impl Connection {
    /// Starts connecting to `url`; fails when the options are wrong or the browser rejects the URL.
    pub fn new(url: &str, options: ClientOptions) -> Result<Rc<Self>, JsValue> {
        options.reconnect.check().map_err(|message| type_error(&message))?;
        if options.get_token.is_some() {
            // The socket opens once the token comes: check the URL now, for the caller.
            web_sys::Url::new(url)?;
        }
        let limit = options.queue_limit.unwrap_or(DEFAULT_QUEUE_LIMIT);
        let connection = Rc::new_cyclic(|me| Self {
            url: url.to_owned(),
            backoff: options.reconnect,
            get_token: options.get_token,
            me: me.clone(),
            state: RefCell::new(State {
                socket: None,
                status: Status::Connecting,
                attempt: 0,
                stopped: false,
                outgoing: Outgoing::new(limit),
                requests: Requests::default(),
                joins: HashMap::new(),
                next_join: 0,
                channels: BTreeSet::new(),
                listeners: Vec::new(),
                status_listeners: Vec::new(),
                reconnect: None,
                retired: Vec::new(),
                place: options.recover.then(Place::default),
            }),
            on_open: RefCell::new(None),
        });
        connection.start()?;
        Ok(connection)
    }

    /// Sets what runs after each (re)open, before queued messages go out.
    pub fn set_on_open(&self, on_open: OnOpen) {
        *self.on_open.borrow_mut() = Some(on_open);
    }

    /// Frees what callbacks retired; called first thing in every callback.
    fn sweep(&self) {
        let retired = std::mem::take(&mut self.state.borrow_mut().retired);
        drop(retired);
    }

    fn handler(&self, mut on: impl FnMut(&Connection, JsValue) + 'static) -> Closure<dyn FnMut(JsValue)> {
        let me = self.me.clone();
        Closure::new(move |event: JsValue| {
            if let Some(connection) = me.upgrade() {
                connection.sweep();
                on(&connection, event);
            }
        })
    }

    /// Opens a socket: at once, or with `getToken`, once it gives a token. A token that
    /// does not come counts as a failed attempt.
    fn start(&self) -> Result<(), JsValue> {
        if self.get_token.is_none() {
            return self.connect(None);
        }
        self.with_token(|connection, token| match token {
            Ok(token) => {
                if connection.connect(Some(&token)).is_err() {
                    connection.give_up();
                }
            }
            Err(reason) => {
                connection.token_error(&reason);
                connection.retry(true);
            }
        });
        Ok(())
    }

    fn connect(&self, token: Option<&str>) -> Result<(), JsValue> {
        let mut query: Vec<String> = self.state.borrow().place.iter().map(Place::query).collect();
        query.extend(token.map(|token| format!("token={}", encode(token))));
        let url = if query.is_empty() {
            self.url.clone()
        } else {
            format!("{}{}{}", self.url, if self.url.contains('?') { '&' } else { '?' }, query.join("&"))
        };
        let ws = WebSocket::new(&url)?;
        ws.set_binary_type(BinaryType::Arraybuffer);
        let handlers = vec![
            self.handler(|c, _| c.opened()),
            self.handler(|c, event| c.received(event.unchecked_into())),
            self.handler(|c, event| c.closed(event.unchecked_into())),
            // An error is followed by a close event, which decides what to do.
            self.handler(|_, _| {}),
        ];
        ws.set_onopen(Some(handlers[0].as_ref().unchecked_ref()));
        ws.set_onmessage(Some(handlers[1].as_ref().unchecked_ref()));
        ws.set_onclose(Some(handlers[2].as_ref().unchecked_ref()));
        ws.set_onerror(Some(handlers[3].as_ref().unchecked_ref()));
        self.state.borrow_mut().socket = Some(Socket { ws, _handlers: handlers, connection_id: None });
        Ok(())
    }

    fn set_status(&self, status: Status) {
        let listeners = {
            let mut state = self.state.borrow_mut();
            if state.status == status {
                return;
            }
            state.status = status;
            state.status_listeners.clone()
        };
        let value = JsValue::from_str(status.as_str());
        for listener in listeners {
            let _ = listener.call1(&JsValue::NULL, &value);
        }
    }

    /// Where the connection stands.
    pub fn status(&self) -> Status {
        self.state.borrow().status
    }

    fn opened(&self) {
        let (joins, ws) = {
            let mut state = self.state.borrow_mut();
            state.attempt = 0;
            let Some(socket) = &state.socket else { return };
            let place = state.place.as_ref();
            let joins: Vec<String> =
                state.channels.iter().map(|c| join_message(c, None, &place.map(|p| p.join_fields(c)).unwrap_or_default())).collect();
            (joins, socket.ws.clone())
        };
        for join in joins {
            let _ = ws.send_with_str(&join);
        }
        if let Some(on_open) = &*self.on_open.borrow() {
            on_open();
        }
        let waiting: Vec<String> = self.state.borrow_mut().outgoing.drain().collect();
        for message in waiting {
            let _ = ws.send_with_str(&message);
        }
        self.set_status(Status::Open);
    }

    fn received(&self, event: MessageEvent) {
        let data = event.data();
        let following = self.state.borrow().place.is_some();
        if let Some(buffer) = data.dyn_ref::<js_sys::ArrayBuffer>() {
            let bytes = Uint8Array::new(buffer);
            // Following a stream, a binary publication carries its offset in 8 bytes first.
            if following && bytes.length() >= 8 {
                let mut offset = [0u8; 8];
                bytes.subarray(0, 8).copy_to(&mut offset);
                self.seen(u64::from_be_bytes(offset));
                self.dispatch("binary", &bytes.subarray(8, bytes.length()).into());
            } else {
                self.dispatch("binary", &bytes.into());
            }
            return;
        }
        let Some(text) = data.as_string() else { return };
        let Ok(mut message) = JSON::parse(&text) else { return };
        let mut kind = field(&message, "type").as_string().unwrap_or_default();
        if following && kind == "publication" {
            // The app hears the message as it was published; the client keeps its place.
            let offset = field(&message, "offset").as_f64().map(|o| o as u64).unwrap_or_default();
            match field(&message, "channel").as_string() {
                Some(channel) => self.seen_in_channel(&channel, offset),
                None => self.seen(offset),
            }
            message = field(&message, "data");
            kind = field(&message, "type").as_string().unwrap_or_default();
        } else if following && kind == "client_connected" && from_server(&message) {
            self.welcomed(&message);
        } else if following && kind == "CHANNEL_JOINED" {
            self.channel_joined(&message);
        } else if kind == "token_expiring" && self.get_token.is_some() && from_server(&message) {
            self.refresh();
        }
        match kind.as_str() {
            "response" => {
                let id = request_id(&field(&message, "requestId"));
                let waiting = self.state.borrow_mut().requests.take(&id);
                if let Some(pending) = waiting {
                    self.retire(pending.timer);
                    let _ = pending.resolve.call1(&JsValue::NULL, &field(&message, "payload"));
                }
            }
            // `ERROR` answers an upper-case message, such as a refused JOIN_CHANNEL.
            "error" | "ERROR" => {
                let payload = field(&message, "payload");
                self.refused(&payload, &field(&payload, "requestId"), &field(&payload, "correlationId"));
            }
            // A server acknowledging every message (`ack: 'always'`) refuses a join this way.
            "NACK" => self.refused(&field(&message, "payload"), &JsValue::UNDEFINED, &field(&message, "correlationId")),
            "CHANNEL_JOINED" => {
                let channel = field(&message, "channel").as_string().unwrap_or_default();
                let joined: Vec<Join> = {
                    let mut state = self.state.borrow_mut();
                    let ids: Vec<String> = state.joins.iter().filter(|(_, j)| j.channel == channel).map(|(id, _)| id.clone()).collect();
                    ids.iter().filter_map(|id| state.joins.remove(id)).collect()
                };
                for join in joined {
                    let _ = join.resolve.call0(&JsValue::NULL);
                }
            }
            _ => {}
        }
        self.dispatch(&kind, &message);
    }

    /// A publication at `offset` arrived: the stream's place moves on.
    fn seen(&self, offset: u64) {
        let mut state = self.state.borrow_mut();
        let current = state.socket.as_ref().map(|s| s.connection_id.clone());
        if let Some(place) = state.place.as_mut() {
            if let Some((_, last)) = place.position.as_mut() {
                *last = offset;
            }
            place.since_seen = current.flatten().into_iter().collect();
        }
    }

    fn seen_in_channel(&self, channel: &str, offset: u64) {
        if let Some(place) = self.state.borrow_mut().place.as_mut() {
            if let Some((_, last)) = place.channels.get_mut(channel) {
                *last = offset;
            }
        }
    }

    /// A channel joined with positions: its place, and whether what was missed follows.
    fn channel_joined(&self, joined: &JsValue) {
        let (Some(channel), Some(epoch), Some(offset)) =
            (field(joined, "channel").as_string(), field(joined, "epoch").as_string(), field(joined, "offset").as_f64())
        else {
            return;
        };
        let recovered = field(joined, "recovered").as_bool();
        if recovered != Some(true) {
            if let Some(place) = self.state.borrow_mut().place.as_mut() {
                place.channels.insert(channel, (epoch, offset as u64));
            }
        }
        match recovered {
            Some(true) => self.dispatch("recovered", joined),
            Some(false) => self.dispatch("resync", joined),
            None => {}
        }
    }

    /// The welcome of a connection following the stream: it names the connection, and
    /// says whether what was missed follows (`recovered`) or the app must reload its
    /// state (`resync`).
    fn welcomed(&self, welcome: &JsValue) {
        let epoch = field(welcome, "epoch").as_string();
        let offset = field(welcome, "offset").as_f64().map(|o| o as u64);
        let recovered = field(welcome, "recovered").as_bool();
        let connection_id = field(welcome, "connectionId").as_string();
        {
            let mut state = self.state.borrow_mut();
            if let Some(socket) = state.socket.as_mut() {
                socket.connection_id = connection_id.clone();
            }
            let Some(place) = state.place.as_mut() else { return };
            if let Some(id) = connection_id {
                place.since_seen.push(id);
                let excess = place.since_seen.len().saturating_sub(Place::MAX_PREVIOUS);
                place.since_seen.drain(..excess);
            }
            if recovered != Some(true) {
                if let (Some(epoch), Some(offset)) = (epoch, offset) {
                    place.position = Some((epoch, offset));
                }
            }
        }
        match recovered {
            Some(true) => self.dispatch("recovered", welcome),
            Some(false) => self.dispatch("resync", welcome),
            None => {}
        }
    }

    /// An `error` or `NACK` from the server settles the request or join it names.
    fn refused(&self, payload: &JsValue, request: &JsValue, correlation: &JsValue) {
        let reason = || {
            let code = field(payload, "code").as_string().unwrap_or_default();
            let message = field(payload, "message").as_string().unwrap_or_default();
            error(&format!("{code}: {message}"))
        };
        if !request.is_undefined() {
            let waiting = self.state.borrow_mut().requests.take(&request_id(request));
            if let Some(pending) = waiting {
                self.retire(pending.timer);
                let _ = pending.reject.call1(&JsValue::NULL, &reason());
            }
        }
        if let Some(id) = correlation.as_string() {
            let join = self.state.borrow_mut().joins.remove(&id);
            if let Some(join) = join {
                self.state.borrow_mut().channels.remove(&join.channel);
                let _ = join.reject.call1(&JsValue::NULL, &reason());
            }
        }
    }

    fn dispatch(&self, kind: &str, message: &JsValue) {
        let listeners: Vec<Function> =
            self.state.borrow().listeners.iter().filter(|(k, _)| k == kind || k == "*").map(|(_, f)| f.clone()).collect();
        for listener in listeners {
            let _ = listener.call1(&JsValue::NULL, message);
        }
    }

    fn closed(&self, event: CloseEvent) {
        {
            let mut state = self.state.borrow_mut();
            if let Some(socket) = state.socket.take() {
                state.retired.push(Box::new(socket));
            }
        }
        self.retry(reconnects_after(event.code(), &event.reason(), self.get_token.is_some()));
    }

    /// A connection or an attempt failed: tries again after the backoff's delay if
    /// `retryable` and attempts remain, else gives up.
    fn retry(&self, retryable: bool) {
        let delay = {
            let mut state = self.state.borrow_mut();
            if state.stopped {
                return;
            }
            let delay = if retryable { self.backoff.delay(state.attempt, js_sys::Math::random()) } else { None };
            if delay.is_some() {
                state.attempt += 1;
            }
            delay
        };
        match delay {
            Some(delay) => {
                self.set_status(Status::Reconnecting);
                let me = self.me.clone();
                let timer = Timer::once(delay, move || {
                    if let Some(connection) = me.upgrade() {
                        connection.sweep();
                        if connection.start().is_err() {
                            connection.give_up();
                        }
                    }
                });
                self.state.borrow_mut().reconnect = Some(timer);
            }
            None => self.give_up(),
        }
    }

    /// Asks `getToken` for a token, then calls `then` with it or with why there is none;
    /// not at all if the client closed meanwhile.
    fn with_token(&self, then: impl FnOnce(&Connection, Result<String, String>) + 'static) {
        let Some(get_token) = &self.get_token else { return };
        let given = match get_token.call0(&JsValue::NULL) {
            Ok(value) => Promise::resolve(&value),
            Err(thrown) => Promise::reject(&thrown),
        };
        let me = self.me.clone();
        let settled = Closure::once_into_js(move |outcomes: Array| {
            let Some(connection) = me.upgrade() else { return };
            connection.sweep();
            if connection.state.borrow().stopped {
                return;
            }
            let outcome = outcomes.get(0);
            let given = match field(&outcome, "status").as_string().as_deref() {
                Some("fulfilled") => Ok(field(&outcome, "value")),
                _ => Err(field(&outcome, "reason")),
            };
            then(&connection, token_from(given));
        });
        Promise::all_settled(&Array::of1(&given)).unchecked_into::<Settling>().then(&settled);
    }

    /// `token_expiring`: sends `refresh` with a fresh token on the socket that was warned.
    /// Once per warning: when no token comes, or the server refuses it (`INVALID_TOKEN`),
    /// the server closes the connection 1008 "Token expired" and the reconnect asks again.
    fn refresh(&self) {
        let Some(warned) = self.state.borrow().socket.as_ref().map(|s| s.ws.clone()) else { return };
        self.with_token(move |connection, token| match token {
            Ok(token) => {
                // A socket opened since was admitted with a fresh token of its own.
                if connection.state.borrow().socket.as_ref().is_some_and(|s| s.ws == warned) {
                    let _ = warned.send_with_str(&format!(r#"{{"type":"refresh","token":{}}}"#, quote(&token)));
                }
            }
            Err(reason) => connection.token_error(&reason),
        });
    }

    /// Tells the app that `getToken` gave no token, as a `token_error` event.
    fn token_error(&self, reason: &str) {
        let event = Object::new();
        let _ = Reflect::set(&event, &"type".into(), &"token_error".into());
        let _ = Reflect::set(&event, &"message".into(), &JsValue::from_str(reason));
        self.dispatch("token_error", &event);
    }

    /// The connection is over for good: what waits for it fails.
    fn give_up(&self) {
        let (requests, joins) = {
            let mut state = self.state.borrow_mut();
            state.stopped = true;
            state.outgoing.clear();
            (state.requests.take_all(), state.joins.drain().map(|(_, j)| j).collect::<Vec<_>>())
        };
        let closed = error("the connection closed before an answer came");
        for pending in requests {
            self.retire(pending.timer);
            let _ = pending.reject.call1(&JsValue::NULL, &closed);
        }
        for join in joins {
            let _ = join.reject.call1(&JsValue::NULL, &closed);
        }
        self.set_status(Status::Closed);
    }

    fn retire(&self, timer: Timer) {
        timer.cancel();
        self.state.borrow_mut().retired.push(Box::new(timer));
    }

    /// Sends now when open, else queues; fails when the queue is full or the client closed.
    pub fn send_text(&self, text: String) -> Result<(), JsValue> {
        let mut state = self.state.borrow_mut();
        if state.stopped {
            return Err(error("the client is closed"));
        }
        let open = state.socket.as_ref().filter(|s| s.ws.ready_state() == WebSocket::OPEN).map(|s| s.ws.clone());
        match open {
            Some(ws) => {
                drop(state);
                ws.send_with_str(&text)
            }
            None => state.outgoing.push(text).map_err(|full| error(&full.to_string())),
        }
    }

    /// Sends a `request`; the Promise resolves with the `response`'s payload, or rejects with the
    /// server's error, after `timeout_ms` milliseconds without an answer, or when the request cannot
    /// be sent or the connection ends for good.
    pub fn request(&self, payload: JsValue, timeout_ms: f64) -> js_sys::Promise {
        let me = self.me.clone();
        js_sys::Promise::new(&mut |resolve, reject| {
            let Some(connection) = me.upgrade() else { return };
            let id_cell: Rc<RefCell<String>> = Rc::default();
            let timer = {
                let (me, id_cell, timeout) = (connection.me.clone(), id_cell.clone(), timeout_ms);
                Timer::once(timeout_ms, move || {
                    let Some(connection) = me.upgrade() else { return };
                    connection.sweep();
                    let id = id_cell.borrow().clone();
                    let waiting = connection.state.borrow_mut().requests.take(&id);
                    if let Some(pending) = waiting {
                        let timed_out = error(&format!("request {id} got no response within {timeout} ms"));
                        connection.retire(pending.timer);
                        let _ = pending.reject.call1(&JsValue::NULL, &timed_out);
                    }
                })
            };
            let id = connection.state.borrow_mut().requests.start(Pending { resolve, reject: reject.clone(), timer });
            *id_cell.borrow_mut() = id.clone();
            let message = Object::new();
            let _ = Reflect::set(&message, &"type".into(), &"request".into());
            let _ = Reflect::set(&message, &"requestId".into(), &JsValue::from_str(&id));
            let _ = Reflect::set(&message, &"payload".into(), &payload);
            let sent = JSON::stringify(&message).map(String::from).map_err(|_| error("the payload is not JSON"));
            if let Err(err) = sent.and_then(|text| connection.send_text(text)) {
                let waiting = connection.state.borrow_mut().requests.take(&id);
                if let Some(pending) = waiting {
                    connection.retire(pending.timer);
                }
                let _ = reject.call1(&JsValue::NULL, &err);
            }
        })
    }

    /// Joins `channel`, and rejoins it after each reconnect; the Promise resolves on
    /// `CHANNEL_JOINED`, or rejects when the join is refused or cannot be sent.
    pub fn join(&self, channel: &str) -> js_sys::Promise {
        let me = self.me.clone();
        let channel = channel.to_owned();
        js_sys::Promise::new(&mut |resolve, reject| {
            let Some(connection) = me.upgrade() else { return };
            let id = {
                let mut state = connection.state.borrow_mut();
                state.next_join += 1;
                let id = format!("join-{}", state.next_join);
                state.channels.insert(channel.clone());
                state.joins.insert(id.clone(), Join { channel: channel.clone(), resolve, reject: reject.clone() });
                id
            };
            let fields = connection.state.borrow().place.as_ref().map(|p| p.join_fields(&channel)).unwrap_or_default();
            if let Err(err) = connection.send_text(join_message(&channel, Some(&id), &fields)) {
                connection.state.borrow_mut().joins.remove(&id);
                let _ = reject.call1(&JsValue::NULL, &err);
            }
        })
    }

    /// Sends `LEAVE_CHANNEL` and forgets the channel, so it is not rejoined after a reconnect.
    pub fn leave(&self, channel: &str) -> Result<(), JsValue> {
        let mut state = self.state.borrow_mut();
        state.channels.remove(channel);
        if let Some(place) = state.place.as_mut() {
            place.channels.remove(channel);
        }
        drop(state);
        self.send_text(format!(r#"{{"type":"LEAVE_CHANNEL","channel":{}}}"#, quote(channel)))
    }

    /// Calls `listener` with each message of type `kind` (`"*"` for all, `"binary"` for binary frames).
    pub fn on(&self, kind: &str, listener: Function) {
        self.state.borrow_mut().listeners.push((kind.to_owned(), listener));
    }

    /// Removes `listener` from messages of type `kind`.
    pub fn off(&self, kind: &str, listener: &Function) {
        self.state.borrow_mut().listeners.retain(|(k, f)| !(k == kind && f == listener));
    }

    /// Calls `listener` with the new status each time it changes.
    pub fn on_status(&self, listener: Function) {
        self.state.borrow_mut().status_listeners.push(listener);
    }

    /// Closes for good: no reconnection; what waits fails.
    pub fn close(&self) {
        let socket = {
            let mut state = self.state.borrow_mut();
            state.stopped = true;
            if let Some(timer) = state.reconnect.take() {
                timer.cancel();
                state.retired.push(Box::new(timer));
            }
            state.socket.take()
        };
        if let Some(socket) = socket {
            let _ = socket.ws.close_with_code(1000);
            self.state.borrow_mut().retired.push(Box::new(socket));
        }
        self.give_up();
    }
}

fn field(object: &JsValue, name: &str) -> JsValue {
    Reflect::get(object, &JsValue::from_str(name)).unwrap_or(JsValue::UNDEFINED)
}

/// Whether the relay itself wrote this message, not a peer.
fn from_server(message: &JsValue) -> bool {
    field(message, "clientId").as_string().as_deref() == Some("relay-server")
}

/// The token `getToken` gave, or what was wrong: it threw, rejected, or gave no string.
fn token_from(given: Result<JsValue, JsValue>) -> Result<String, String> {
    match given {
        Ok(value) => match value.as_string() {
            Some(token) if !token.is_empty() => Ok(token),
            Some(_) => Err("getToken gave an empty token".into()),
            None => Err(format!("getToken must give a string (the token), not {}", value.js_typeof().as_string().unwrap_or_default())),
        },
        Err(reason) => {
            let why = reason.dyn_ref::<js_sys::Error>().map(|err| String::from(err.message())).or_else(|| reason.as_string());
            Err(format!("getToken failed: {}", why.unwrap_or_else(|| "it rejected without a reason".into())))
        }
    }
}

/// A `requestId` as the waiting list knows it: the string itself.
fn request_id(value: &JsValue) -> String {
    value.as_string().or_else(|| value.as_f64().map(|n| n.to_string())).unwrap_or_default()
}

fn quote(text: &str) -> String {
    JSON::stringify(&JsValue::from_str(text)).map(String::from).unwrap_or_else(|_| "\"\"".into())
}

/// `JOIN_CHANNEL`, with an `id` to settle its Promise by, and `fields` (a stream's place).
fn join_message(channel: &str, id: Option<&str>, fields: &str) -> String {
    match id {
        Some(id) => format!(r#"{{"type":"JOIN_CHANNEL","channel":{},"id":{}{fields}}}"#, quote(channel), quote(id)),
        None => format!(r#"{{"type":"JOIN_CHANNEL","channel":{}{fields}}}"#, quote(channel)),
    }
}

/// A message for `send`: a string as it is, anything else as JSON.
pub fn serialize(message: &JsValue) -> Result<String, JsValue> {
    if let Some(text) = message.as_string() {
        return Ok(text);
    }
    match JSON::stringify(message) {
        Ok(text) if text.is_string() => Ok(text.into()),
        _ => Err(type_error("message must be an object, or a string of JSON")),
    }
}

/// How long a request waits for its response when no `timeoutMs` is given, in milliseconds.
pub const REQUEST_TIMEOUT_MS: f64 = DEFAULT_REQUEST_TIMEOUT_MS;
