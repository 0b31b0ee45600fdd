//! `RelayClient`: a connection to a Switchyard relay that survives bad networks. It
//! reconnects with backoff, queues what is sent while down, rejoins its channels, and
//! matches requests to responses. With `recover`, it follows its session's stream and
//! reconnects from the last position it saw, so nothing published meanwhile is lost.
//! With `getToken`, each (re)connection carries a fresh token, and a `token_expiring`
//! warning is answered with `refresh`.
//!
//! Each (re)connection tries its transports in order (by default a WebSocket, then the
//! HTTP fallback: Server-Sent Events down, POSTs up): the next one when a transport fails
//! before it opens or has not opened within `fallbackAfterMs`. Whatever carries it, a
//! connection is a `Link`; callbacks of a link that ended find another one current and
//! do nothing.
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
use web_sys::{AbortController, BinaryType, CloseEvent, MessageEvent, ReadableStreamDefaultReader, RequestCache, RequestInit, Response, WebSocket};

use super::timer::Timer;
use super::{error, type_error, Status};
use crate::backoff::{reconnects_after, Backoff};
use crate::eventstream::{self, EventParser, Posted, Posts, Refusal, Transport};
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
    /// The transports each (re)connection tries, in order; `None` for a WebSocket, then
    /// Server-Sent Events.
    pub transports: Option<Vec<Transport>>,
    /// How long a transport may take to open before the next one is tried, in
    /// milliseconds; `None` for 3000.
    pub fallback_after_ms: Option<f64>,
}

#[wasm_bindgen]
extern "C" {
    /// What `Promise.allSettled` gives: a Promise that always fulfills, so a callback
    /// made by `Closure::once_into_js` (freed when called) is never left behind.
    type Settling;
    /// `then(callback)`, for a callback that is a plain function.
    #[wasm_bindgen(method)]
    fn then(this: &Settling, callback: &JsValue);

    /// The global `fetch`, in a window or a worker.
    #[wasm_bindgen(js_name = fetch, catch)]
    fn fetch_with(input: &str, init: &RequestInit) -> Result<Promise, JsValue>;
}

/// Calls `then` with what `promise` gave, or why it failed, once it settles. The callback
/// is freed once called: `Promise.allSettled` always calls it.
fn settle(promise: &Promise, then: impl FnOnce(Result<JsValue, JsValue>) + 'static) {
    let settled = Closure::once_into_js(move |outcomes: Array| {
        let outcome = outcomes.get(0);
        then(match field(&outcome, "status").as_string().as_deref() {
            Some("fulfilled") => Ok(field(&outcome, "value")),
            _ => Err(field(&outcome, "reason")),
        });
    });
    Promise::all_settled(&Array::of1(promise)).unchecked_into::<Settling>().then(&settled);
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
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        self.ws.set_onerror(None);
    }
}

/// The HTTP fallback's connection: an event stream read with `fetch`, and POSTs to send.
struct Stream {
    /// The event stream's URL: what the welcome's `send.url` is relative to.
    url: String,
    /// Ends the stream's request (on `close()`, or when the stream is given up).
    abort: AbortController,
    parser: EventParser,
    /// Where to POST and the token to POST with, from the welcome.
    send: Option<(String, String)>,
    posts: Posts,
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.abort.abort();
    }
}

/// What carries a connection.
enum Carrier {
    WebSocket(Socket),
    Sse(Stream),
}

/// One connection, or one attempt at one, over one transport.
struct Link {
    /// Its number: callbacks that name another link than the current one are late.
    id: u64,
    transport: Transport,
    /// Open: the WebSocket's `open` event came, or the event stream's welcome.
    open: bool,
    /// The relay's name for this connection, from its welcome.
    connection_id: Option<String>,
    carrier: Carrier,
}

impl Link {
    /// Whether a message sent now goes out at once.
    fn sends(&self) -> bool {
        match &self.carrier {
            Carrier::WebSocket(socket) => socket.ws.ready_state() == WebSocket::OPEN,
            Carrier::Sse(_) => self.open,
        }
    }
}

/// How a link ended.
enum Ending {
    /// It dropped, or could not open: the next transport is tried if it never opened,
    /// else the connection is retried.
    Lost,
    /// It was closed with this code and reason, over WebSocket or as the event stream's
    /// `close` event.
    Closed(u16, String),
    /// The relay refused the event stream: retried when `true`, else over.
    Refused(bool),
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
    link: Option<Link>,
    next_link: u64,
    /// The URL this attempt connects to (with its query), and which of the transports it
    /// is trying.
    attempt_url: String,
    tried: usize,
    /// Tries the next transport when the current one is slow to open.
    fallback: Option<Timer>,
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

impl State {
    /// The transport the connection is open on; `None` when it is not open.
    fn transport(&self) -> Option<Transport> {
        self.link.as_ref().filter(|link| link.open && self.status == Status::Open).map(|link| link.transport)
    }
}

/// Called on the connection's own thread (JS is single-threaded) when it opens.
pub type OnOpen = Box<dyn Fn()>;

/// A relay connection that reconnects by itself: what `RelayClient` and
/// `FocusDeclarationProtocol` are built on.
pub struct Connection {
    url: String,
    backoff: Backoff,
    get_token: Option<Function>,
    transports: Vec<Transport>,
    fallback_after_ms: f64,
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
        let transports = options.transports.unwrap_or_else(|| eventstream::DEFAULT_TRANSPORTS.to_vec());
        let fallback_after_ms = options.fallback_after_ms.unwrap_or(eventstream::DEFAULT_FALLBACK_AFTER_MS);
        eventstream::check_transports(&transports, fallback_after_ms).map_err(|message| type_error(&message))?;
        if options.get_token.is_some() {
            // The socket opens once the token comes: check the URL now, for the caller.
            web_sys::Url::new(url)?;
        }
        let limit = options.queue_limit.unwrap_or(DEFAULT_QUEUE_LIMIT);
        let connection = Rc::new_cyclic(|me| Self {
            url: url.to_owned(),
            backoff: options.reconnect,
            get_token: options.get_token,
            transports,
            fallback_after_ms,
            me: me.clone(),
            state: RefCell::new(State {
                link: None,
                next_link: 0,
                attempt_url: String::new(),
                tried: 0,
                fallback: None,
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

    /// Opens a connection: at once, or with `getToken`, once it gives a token. A token that
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

    /// Starts an attempt: its URL carries the stream's place and the token, and its first
    /// transport opens.
    fn connect(&self, token: Option<&str>) -> Result<(), JsValue> {
        let mut query: Vec<String> = self.state.borrow().place.iter().map(Place::query).collect();
        query.extend(token.map(|token| format!("token={}", encode(token))));
        let url = if query.is_empty() {
            self.url.clone()
        } else {
            format!("{}{}{}", self.url, if self.url.contains('?') { '&' } else { '?' }, query.join("&"))
        };
        {
            let mut state = self.state.borrow_mut();
            state.attempt_url = url;
            state.tried = 0;
        }
        self.open_transport()
    }

    /// Opens the attempt's current transport and, when another follows it, a timer that
    /// tries that one if this one has not opened within `fallbackAfterMs`.
    fn open_transport(&self) -> Result<(), JsValue> {
        let (transport, url, id, next) = {
            let mut state = self.state.borrow_mut();
            state.next_link += 1;
            (self.transports[state.tried], state.attempt_url.clone(), state.next_link, state.tried + 1 < self.transports.len())
        };
        let carrier = match transport {
            Transport::WebSocket => Carrier::WebSocket(self.open_socket(id, &url)?),
            Transport::Sse => Carrier::Sse(self.open_stream(id, &url)?),
        };
        let fallback = next.then(|| {
            let me = self.me.clone();
            Timer::once(self.fallback_after_ms, move || {
                if let Some(connection) = me.upgrade() {
                    connection.sweep();
                    connection.too_slow(id);
                }
            })
        });
        let mut state = self.state.borrow_mut();
        state.link = Some(Link { id, transport, open: false, connection_id: None, carrier });
        Self::stop_fallback(&mut state);
        state.fallback = fallback;
        Ok(())
    }

    fn open_socket(&self, id: u64, url: &str) -> Result<Socket, JsValue> {
        let ws = WebSocket::new(url)?;
        ws.set_binary_type(BinaryType::Arraybuffer);
        let handlers = vec![
            self.handler(move |c, _| c.opened(id)),
            self.handler(move |c, event| c.received(id, event.unchecked_into())),
            self.handler(move |c, event| c.socket_closed(id, event.unchecked_into())),
            // An error is followed by a close event, which decides what to do.
            self.handler(|_, _| {}),
        ];
        ws.set_onopen(Some(handlers[0].as_ref().unchecked_ref()));
        ws.set_onmessage(Some(handlers[1].as_ref().unchecked_ref()));
        ws.set_onclose(Some(handlers[2].as_ref().unchecked_ref()));
        ws.set_onerror(Some(handlers[3].as_ref().unchecked_ref()));
        Ok(Socket { ws, _handlers: handlers })
    }

    /// Asks for the event stream of `url` (`GET <path>/events`, with the same query).
    fn open_stream(&self, id: u64, url: &str) -> Result<Stream, JsValue> {
        let not_http = || type_error(&format!("{url} has no HTTP event stream: it is not an absolute ws:, wss:, http: or https: URL"));
        let events = eventstream::events_url(url).ok_or_else(not_http)?;
        let abort = AbortController::new()?;
        let init = RequestInit::new();
        init.set_method("GET");
        init.set_cache(RequestCache::NoStore);
        init.set_signal(Some(&abort.signal()));
        init.set_headers(&headers(&[("accept", "text/event-stream")]));
        let answer = fetch_with(&events, &init)?;
        self.after(&answer, move |c, answer| c.stream_answered(id, answer));
        Ok(Stream { url: events, abort, parser: EventParser::default(), send: None, posts: Posts::default() })
    }

    /// Calls `then` once `promise` settles, unless the client is gone by then.
    fn after(&self, promise: &Promise, then: impl FnOnce(&Connection, Result<JsValue, JsValue>) + 'static) {
        let me = self.me.clone();
        settle(promise, move |outcome| {
            if let Some(connection) = me.upgrade() {
                connection.sweep();
                then(&connection, outcome);
            }
        });
    }

    /// Whether link `id` is the current one.
    fn is_current(&self, id: u64) -> bool {
        self.state.borrow().link.as_ref().is_some_and(|link| link.id == id)
    }

    fn stop_fallback(state: &mut State) {
        if let Some(timer) = state.fallback.take() {
            timer.cancel();
            state.retired.push(Box::new(timer));
        }
    }

    /// `fallbackAfterMs` passed and link `id` has not opened: it is given up for the next
    /// transport.
    fn too_slow(&self, id: u64) {
        let slow = {
            let mut state = self.state.borrow_mut();
            Self::stop_fallback(&mut state);
            state.link.take_if(|link| link.id == id && !link.open)
        };
        let Some(link) = slow else { return };
        self.abandon(link);
        if !self.fall_back() {
            self.retry(true);
        }
    }

    /// Ends a link that is no longer wanted, without waiting for its callbacks.
    fn abandon(&self, link: Link) {
        match &link.carrier {
            Carrier::WebSocket(socket) => {
                let _ = socket.ws.close_with_code(1000);
            }
            Carrier::Sse(stream) => stream.abort.abort(),
        }
        self.state.borrow_mut().retired.push(Box::new(link));
    }

    /// Opens the attempt's next transport; `false` when there is none, or it cannot open.
    fn fall_back(&self) -> bool {
        {
            let mut state = self.state.borrow_mut();
            if state.stopped || state.tried + 1 >= self.transports.len() {
                return false;
            }
            state.tried += 1;
        }
        self.open_transport().is_ok()
    }

    fn set_status(&self, status: Status) {
        let (listeners, transport) = {
            let mut state = self.state.borrow_mut();
            if state.status == status {
                return;
            }
            state.status = status;
            (state.status_listeners.clone(), state.transport())
        };
        let value = JsValue::from_str(status.as_str());
        let transport = transport.map_or(JsValue::NULL, |t| JsValue::from_str(t.as_str()));
        for listener in listeners {
            let _ = listener.call2(&JsValue::NULL, &value, &transport);
        }
    }

    /// Where the connection stands.
    pub fn status(&self) -> Status {
        self.state.borrow().status
    }

    /// The transport the connection is open on; `None` when it is not open.
    pub fn transport(&self) -> Option<Transport> {
        self.state.borrow().transport()
    }

    /// Link `id` opened: channels are rejoined, the open hook runs, what waited goes out
    /// (over the event stream, in one POST), and the status says so.
    fn opened(&self, id: u64) {
        let joins = {
            let mut state = self.state.borrow_mut();
            let Some(link) = state.link.as_mut().filter(|link| link.id == id) else { return };
            link.open = true;
            if let Carrier::Sse(stream) = &mut link.carrier {
                stream.posts.cork();
            }
            state.attempt = 0;
            Self::stop_fallback(&mut state);
            let place = state.place.as_ref();
            state.channels.iter().map(|c| join_message(c, None, &place.map(|p| p.join_fields(c)).unwrap_or_default())).collect::<Vec<_>>()
        };
        for join in joins {
            let _ = self.transmit(join);
        }
        if let Some(on_open) = &*self.on_open.borrow() {
            on_open();
        }
        let waiting: Vec<String> = self.state.borrow_mut().outgoing.drain().collect();
        for message in waiting {
            let _ = self.transmit(message);
        }
        self.post_next(id, Posts::uncork);
        if self.is_current(id) {
            self.set_status(Status::Open);
        }
    }

    /// A WebSocket message.
    fn received(&self, id: u64, event: MessageEvent) {
        if !self.is_current(id) {
            return;
        }
        let data = event.data();
        if let Some(buffer) = data.dyn_ref::<js_sys::ArrayBuffer>() {
            self.received_binary(Uint8Array::new(buffer));
            return;
        }
        let Some(text) = data.as_string() else { return };
        let Ok(message) = JSON::parse(&text) else { return };
        self.received_message(message);
    }

    /// A binary frame, from a WebSocket or the event stream.
    fn received_binary(&self, bytes: Uint8Array) {
        let following = self.state.borrow().place.is_some();
        // Following a stream, a binary publication carries its offset in 8 bytes first.
        if following && bytes.length() >= 8 {
            let mut offset = [0u8; 8];
            bytes.subarray(0, 8).copy_to(&mut offset);
            self.seen(u64::from_be_bytes(offset));
            self.dispatch("binary", &bytes.subarray(8, bytes.length()).into());
        } else {
            self.dispatch("binary", &bytes.into());
        }
    }

    /// A text frame's message, from a WebSocket or the event stream.
    fn received_message(&self, mut message: JsValue) {
        let following = self.state.borrow().place.is_some();
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
        let current = state.link.as_ref().map(|link| link.connection_id.clone());
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
            if let Some(link) = state.link.as_mut() {
                link.connection_id = connection_id.clone();
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

    /// A WebSocket closed: before it opened, it is lost (the browser tells no more); after,
    /// its code and reason decide.
    fn socket_closed(&self, id: u64, event: CloseEvent) {
        let open = self.state.borrow().link.as_ref().is_some_and(|link| link.id == id && link.open);
        self.ended(id, if open { Ending::Closed(event.code(), event.reason()) } else { Ending::Lost });
    }

    /// Link `id` ended. What it had not sent yet waits again; a link lost before it opened
    /// gives way to the attempt's next transport; otherwise the connection is retried, or
    /// over, as the ending says.
    fn ended(&self, id: u64, ending: Ending) {
        let open = {
            let mut state = self.state.borrow_mut();
            let Some(mut link) = state.link.take_if(|link| link.id == id) else { return };
            Self::stop_fallback(&mut state);
            if let Carrier::Sse(stream) = &mut link.carrier {
                stream.abort.abort();
                let unsent = stream.posts.take_waiting();
                if !state.stopped {
                    state.outgoing.requeue(unsent);
                }
            }
            let open = link.open;
            state.retired.push(Box::new(link));
            open
        };
        let retry = match ending {
            Ending::Lost if !open && self.fall_back() => return,
            Ending::Lost => true,
            Ending::Closed(code, reason) => reconnects_after(code, &reason, self.get_token.is_some()),
            Ending::Refused(retry) => retry,
        };
        self.retry(retry);
    }

    /// The answer to `GET .../events`: the stream to read, or a refusal.
    fn stream_answered(&self, id: u64, answer: Result<JsValue, JsValue>) {
        if !self.is_current(id) {
            return;
        }
        let Ok(response) = answer.map(JsCast::unchecked_into::<Response>) else { return self.ended(id, Ending::Lost) };
        if response.ok() {
            let kind = response.headers().get("content-type").ok().flatten().unwrap_or_default();
            let reader = response.body().filter(|_| kind.trim_start().to_ascii_lowercase().starts_with("text/event-stream"));
            match reader {
                Some(body) => self.read_stream(id, body.get_reader().unchecked_into()),
                // Something answered, but not with an event stream.
                None => self.ended(id, Ending::Lost),
            }
            return;
        }
        let status = response.status();
        match response.text() {
            Ok(text) => self.after(&text, move |c, text| c.stream_refused(id, status, text.ok().and_then(|t| t.as_string()))),
            Err(_) => self.stream_refused(id, status, None),
        }
    }

    /// `GET .../events` was answered `status`, with `body`: the relay's refusal, as over
    /// WebSocket, or something else's answer, as a WebSocket that could not open.
    fn stream_refused(&self, id: u64, status: u16, body: Option<String>) {
        let code = relay_error(body.as_deref()).map(|(code, _)| code);
        let ending = match eventstream::refusal(status, code.as_deref(), self.get_token.is_some()) {
            Refusal::Lost => Ending::Lost,
            Refusal::Refused { retry } => Ending::Refused(retry),
        };
        self.ended(id, ending);
    }

    /// Reads the event stream's next chunk, then the one after, until it ends.
    fn read_stream(&self, id: u64, reader: ReadableStreamDefaultReader) {
        let next = reader.read();
        self.after(&next, move |c, chunk| c.stream_read(id, reader, chunk));
    }

    fn stream_read(&self, id: u64, reader: ReadableStreamDefaultReader, chunk: Result<JsValue, JsValue>) {
        if !self.is_current(id) {
            return;
        }
        // An error, or the end without a `close` event: the connection is lost.
        let Ok(chunk) = chunk else { return self.ended(id, Ending::Lost) };
        if field(&chunk, "done").as_bool() != Some(false) {
            return self.ended(id, Ending::Lost);
        }
        let bytes = field(&chunk, "value").dyn_into::<Uint8Array>().map(|bytes| bytes.to_vec()).unwrap_or_default();
        let events = {
            let mut state = self.state.borrow_mut();
            let Some(Carrier::Sse(stream)) = state.link.as_mut().map(|link| &mut link.carrier) else { return };
            stream.parser.push(&bytes)
        };
        for event in events {
            // A listener may have closed the client, or the stream may have said `close`.
            if !self.is_current(id) {
                return;
            }
            self.stream_event(id, event);
        }
        if self.is_current(id) {
            self.read_stream(id, reader);
        }
    }

    /// One event of the stream: the welcome, a frame, a binary frame, or its close.
    fn stream_event(&self, id: u64, event: eventstream::Event) {
        match event.kind.as_str() {
            "welcome" => self.stream_welcome(id, &event.data),
            "message" => {
                if let Ok(message) = JSON::parse(&event.data) {
                    self.received_message(message);
                }
            }
            "binary" => {
                if let Some(bytes) = eventstream::decode_base64(event.data.trim()) {
                    self.received_binary(Uint8Array::from(&bytes[..]));
                }
            }
            "close" => {
                let close = JSON::parse(&event.data).unwrap_or(JsValue::UNDEFINED);
                let code = field(&close, "code").as_f64().filter(|c| (0.0..=65535.0).contains(c)).map_or(1005, |c| c as u16);
                self.ended(id, Ending::Closed(code, field(&close, "reason").as_string().unwrap_or_default()));
            }
            _ => {}
        }
    }

    /// The welcome: where to POST, then the `client_connected` frame a WebSocket member
    /// gets (without `send`). The connection is open.
    fn stream_welcome(&self, id: u64, data: &str) {
        let Ok(welcome) = JSON::parse(data) else { return self.ended(id, Ending::Lost) };
        let send = field(&welcome, "send");
        let target = {
            let state = self.state.borrow();
            let Some(Carrier::Sse(stream)) = state.link.as_ref().map(|link| &link.carrier) else { return };
            let url = field(&send, "url").as_string().and_then(|url| web_sys::Url::new_with_base(&url, &stream.url).ok()).map(|url| url.href());
            url.zip(field(&send, "token").as_string())
        };
        // A welcome without where to send: no relay's event stream.
        let Some(target) = target else { return self.ended(id, Ending::Lost) };
        let _ = Reflect::delete_property(welcome.unchecked_ref::<Object>(), &"send".into());
        {
            let mut state = self.state.borrow_mut();
            let Some(link) = state.link.as_mut().filter(|link| link.id == id && !link.open) else { return };
            if let Carrier::Sse(stream) = &mut link.carrier {
                stream.send = Some(target);
            }
        }
        self.opened(id);
        if self.is_current(id) {
            self.received_message(welcome);
        }
    }

    /// Sends `text` on the current link: at once over a WebSocket, in the next POST over
    /// the event stream.
    fn transmit(&self, text: String) -> Result<(), JsValue> {
        let mut state = self.state.borrow_mut();
        let Some(link) = state.link.as_mut() else {
            return state.outgoing.push(text).map_err(|full| error(&full.to_string()));
        };
        match &mut link.carrier {
            Carrier::WebSocket(socket) => {
                let ws = socket.ws.clone();
                drop(state);
                ws.send_with_str(&text)
            }
            Carrier::Sse(stream) => {
                let batch = stream.posts.push(text);
                let next = stream.send.clone().zip(batch);
                let id = link.id;
                drop(state);
                if let Some(((url, token), batch)) = next {
                    self.post(id, &url, &token, batch);
                }
                Ok(())
            }
        }
    }

    /// Takes the next batch of link `id`'s posts with `take`, and POSTs it.
    fn post_next(&self, id: u64, take: impl FnOnce(&mut Posts) -> Option<Vec<String>>) {
        let next = {
            let mut state = self.state.borrow_mut();
            let Some(link) = state.link.as_mut().filter(|link| link.id == id) else { return };
            let Carrier::Sse(stream) = &mut link.carrier else { return };
            let Some(target) = stream.send.clone() else { return };
            take(&mut stream.posts).map(|batch| (target, batch))
        };
        if let Some(((url, token), batch)) = next {
            self.post(id, &url, &token, batch);
        }
    }

    /// POSTs `frames`, one as it is or several as ndjson, with link `id`'s send token.
    fn post(&self, id: u64, url: &str, token: &str, frames: Vec<String>) {
        let (body, content_type) = eventstream::post_body(&frames);
        let init = RequestInit::new();
        init.set_method("POST");
        init.set_cache(RequestCache::NoStore);
        init.set_headers(&headers(&[("content-type", content_type), ("x-switchyard-send", token)]));
        init.set_body(&JsValue::from_str(&body));
        let answer = fetch_with(url, &init).unwrap_or_else(|thrown| Promise::reject(&thrown));
        self.after(&answer, move |c, answer| c.post_answered(id, frames, answer));
    }

    /// A POST of `frames` was answered (or failed to be).
    fn post_answered(&self, id: u64, frames: Vec<String>, answer: Result<JsValue, JsValue>) {
        let response = answer.ok().map(JsCast::unchecked_into::<Response>);
        let status = response.as_ref().map(Response::status);
        match eventstream::posted(status, frames.len()) {
            Posted::Taken => self.post_next(id, Posts::answered),
            Posted::OneByOne if self.is_current(id) => self.post_next(id, move |posts| posts.one_by_one(frames)),
            Posted::Gone | Posted::OneByOne => self.post_lost(id, frames),
            Posted::Refused => {
                let status = status.unwrap_or_default();
                match response.map(|r| r.text()) {
                    Some(Ok(text)) => self.after(&text, move |c, text| c.post_refused(id, frames, status, text.ok().and_then(|t| t.as_string()))),
                    _ => self.post_refused(id, frames, status, None),
                }
            }
        }
    }

    /// A POST failed: the member is gone (or may be). Its link ends and reconnects; its
    /// frames wait again, first, or go out on the link open by then.
    fn post_lost(&self, id: u64, frames: Vec<String>) {
        self.ended(id, Ending::Lost);
        let mut state = self.state.borrow_mut();
        if state.stopped {
            return;
        }
        if state.link.as_ref().is_some_and(Link::sends) {
            drop(state);
            for frame in frames {
                let _ = self.transmit(frame);
            }
        } else {
            state.outgoing.requeue(frames);
        }
    }

    /// The relay refused the frames of a POST (400, 413, 429): each is dropped and answered
    /// with an `error`, as over WebSocket, which settles a request or join among them.
    fn post_refused(&self, id: u64, frames: Vec<String>, status: u16, body: Option<String>) {
        let (code, message) = relay_error(body.as_deref()).unwrap_or_else(|| {
            let code = match status {
                413 => "MESSAGE_TOO_LARGE",
                429 => "RATE_LIMITED",
                _ => "INVALID_MESSAGE",
            };
            (code.into(), format!("The relay refused the message (HTTP {status})"))
        });
        for frame in frames {
            self.received_message(refusal_for(&frame, &code, &message));
        }
        self.post_next(id, Posts::answered);
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
        self.after(&given, move |connection, given| {
            if !connection.state.borrow().stopped {
                then(connection, token_from(given));
            }
        });
    }

    /// `token_expiring`: sends `refresh` with a fresh token on the connection that was
    /// warned. Once per warning: when no token comes, or the server refuses it
    /// (`INVALID_TOKEN`), the server closes the connection 1008 "Token expired" and the
    /// reconnect asks again.
    fn refresh(&self) {
        let Some(warned) = self.state.borrow().link.as_ref().map(|link| link.id) else { return };
        self.with_token(move |connection, token| match token {
            Ok(token) => {
                // A connection opened since was admitted with a fresh token of its own.
                let sends = connection.state.borrow().link.as_ref().is_some_and(|link| link.id == warned && link.sends());
                if sends {
                    let _ = connection.transmit(format!(r#"{{"type":"refresh","token":{}}}"#, quote(&token)));
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
        if state.link.as_ref().is_some_and(Link::sends) {
            drop(state);
            self.transmit(text)
        } else {
            state.outgoing.push(text).map_err(|full| error(&full.to_string()))
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

    /// Closes for good: no reconnection; what waits fails. A WebSocket is closed 1000; an
    /// event stream's request is aborted.
    pub fn close(&self) {
        let link = {
            let mut state = self.state.borrow_mut();
            state.stopped = true;
            if let Some(timer) = state.reconnect.take() {
                timer.cancel();
                state.retired.push(Box::new(timer));
            }
            Self::stop_fallback(&mut state);
            state.link.take()
        };
        if let Some(link) = link {
            self.abandon(link);
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

/// The `code` and `message` of the relay's JSON error body, `{"error":{"code","message"}}`.
fn relay_error(body: Option<&str>) -> Option<(String, String)> {
    let error = field(&JSON::parse(body?).ok()?, "error");
    let code = field(&error, "code").as_string()?;
    Some((code, field(&error, "message").as_string().unwrap_or_default()))
}

/// The `error` the relay sends a WebSocket member for a refused message, for `frame`,
/// refused over HTTP: with its `requestId`, or else its string `id` as `correlationId`.
fn refusal_for(frame: &str, code: &str, message: &str) -> JsValue {
    let sent = JSON::parse(frame).unwrap_or(JsValue::UNDEFINED);
    let detail = Object::new();
    let _ = Reflect::set(&detail, &"code".into(), &code.into());
    let _ = Reflect::set(&detail, &"message".into(), &message.into());
    let request = field(&sent, "requestId");
    let id = field(&sent, "id");
    if request.is_string() || request.as_f64().is_some() {
        let _ = Reflect::set(&detail, &"requestId".into(), &request);
    } else if id.is_string() {
        let _ = Reflect::set(&detail, &"correlationId".into(), &id);
    }
    let refused = Object::new();
    let _ = Reflect::set(&refused, &"type".into(), &"error".into());
    let _ = Reflect::set(&refused, &"data".into(), &detail);
    let _ = Reflect::set(&refused, &"payload".into(), &Object::assign(&Object::new(), &detail));
    refused.into()
}

/// A `headers` object for `fetch`.
fn headers(pairs: &[(&str, &str)]) -> JsValue {
    let headers = Object::new();
    for (name, value) in pairs {
        let _ = Reflect::set(&headers, &JsValue::from_str(name), &JsValue::from_str(value));
    }
    headers.into()
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
