//! The classes JavaScript sees: `RelayClient` and `FocusDeclarationProtocol`, and the
//! TypeScript shapes of their options and messages.

mod client;
mod focus;
mod timer;

use js_sys::{Function, Object, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use client::{serialize, ClientOptions, Connection, REQUEST_TIMEOUT_MS};

#[wasm_bindgen(typescript_custom_section)]
const TYPES: &'static str = r#"
/** Any JSON value. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/** Where a client's connection stands. */
export type ConnectionStatus = 'connecting' | 'open' | 'reconnecting' | 'closed';

/**
 * How a client reaches the relay: `'websocket'`, or `'sse'`, the HTTP fallback for
 * networks that refuse WebSockets (Server-Sent Events from `<path>/events` down, POSTs up).
 */
export type Transport = 'websocket' | 'sse';

/** Reconnection with exponential backoff and jitter. */
export interface ReconnectOptions {
  /** Delay before the first attempt. Default 1000. */
  initialDelayMs?: number;
  /** Longest delay. Default 30 000. */
  maxDelayMs?: number;
  /** Attempts in a row before giving up; `Infinity` never gives up. Default 10. */
  maxAttempts?: number;
}

export interface RelayClientOptions {
  reconnect?: ReconnectOptions;
  /** Messages that may wait while the connection is down. Default 1000. */
  queueLimit?: number;
  /**
   * Follow the session's stream (the server must keep history) and reconnect from the
   * last position seen: what was published meanwhile arrives, once and in order, before
   * anything live. Listeners hear each message as it was published. After a reconnect
   * the client emits `recovered`, or `resync` when the server no longer had it all: then
   * reload the state. Channels likewise (with the server's `channels.history`): their
   * `recovered` and `resync` carry the `CHANNEL_JOINED` answer. Default false.
   */
  recover?: boolean;
  /**
   * Gives the token (a JWT) to connect with. Called before every connect and reconnect,
   * whose URL carries it as `token=`, and on each `token_expiring` from the server, which
   * the client answers with `refresh` (the server says `refreshed`, or sends an `error`
   * with code `INVALID_TOKEN`). A connection the server closes 1008 "Token expired"
   * reconnects, with backoff, asking for a token again. When it throws, rejects or gives
   * no string, the client emits `token_error` (a `TokenError`) and sends no refresh; at
   * a connect, that counts as a failed attempt.
   */
  getToken?: () => string | Promise<string>;
  /**
   * The transports each connect and reconnect tries, in order. Default
   * `['websocket', 'sse']`: a WebSocket, and when it fails before it opens (a proxy that
   * refuses the upgrade) or has not opened within `fallbackAfterMs`, the relay's event
   * stream at the same URL's path plus `/events` (http(s) for ws(s), same query), with
   * sends POSTed to the URL its welcome gives. The queue, recovery, channels, requests and
   * `getToken` carry on across the switch, and the next reconnect tries a WebSocket first
   * again. `['websocket']` never falls back; `['sse']` uses only the event stream. Over
   * the event stream, what is sent while a POST is under way goes in the next one, in
   * order; a message the relay refuses (too large, over the rate) is answered with an
   * `error` message, as over WebSocket, and a POST that fails (the member is gone)
   * reconnects, its messages waiting in the queue. Binary frames can be received over
   * either transport; the client sends text only.
   */
  transports?: Transport[];
  /** How long a transport may take to open before the next one is tried. Default 3000. */
  fallbackAfterMs?: number;
}

/** Emitted as `token_error` when `getToken` gave no token. */
export interface TokenError {
  type: 'token_error';
  /** What went wrong, e.g. `getToken failed: <the error's message>`. */
  message: string;
}

/** A message from the relay: a JSON object with a string `type`. */
export interface ServerMessage {
  type: string;
  [field: string]: JsonValue;
}

export interface RequestOptions {
  /** Reject if no response comes within this. Default 30 000. */
  timeoutMs?: number;
}

export interface FocusDeclarationOptions {
  /** The awareness service, e.g. `ws://localhost:8765`. */
  sessionServiceUrl: string;
  userId: string;
  /** This window's id; by default a random one kept in sessionStorage, so a reload keeps it. */
  windowId?: string;
  /** How often a heartbeat keeps the registration fresh. Default 20 000. */
  heartbeatIntervalMs?: number;
  reconnect?: ReconnectOptions;
}

export interface CaseWindow {
  caseId: string;
  windowId: string;
}

/** The answer to a registration. */
export interface Registered {
  windowId: string;
  caseId: string;
}

/** `multi-case`: the user has several cases open; `case-mismatch`: a window opened a case other than the one in focus. */
export interface CaseWarning {
  type: 'multi-case' | 'case-mismatch';
  cases: CaseWindow[];
  message: string;
  /** For `case-mismatch`: the case just opened, and where. */
  caseId?: string;
  windowId?: string;
}

export interface WarningCleared {
  cases: CaseWindow[];
}

/** Binary frames arrive as bytes, and `token_error` is the client's own, not a `ServerMessage`. */
export interface RelayClient {
  on(type: 'binary', listener: (data: Uint8Array) => void): void;
  off(type: 'binary', listener: (data: Uint8Array) => void): void;
  on(type: 'token_error', listener: (error: TokenError) => void): void;
  off(type: 'token_error', listener: (error: TokenError) => void): void;
}
"#;

/// Where a connection stands.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Status {
    /// The first connection is being opened.
    Connecting,
    /// The socket is open: messages go out at once.
    Open,
    /// The connection dropped; the next attempt is waiting for its delay, or under way.
    Reconnecting,
    /// Over for good: `close()` was called, the close code is not worth retrying, or reconnecting
    /// failed or ran out of attempts.
    Closed,
}

impl Status {
    /// The status as JavaScript sees it (`ConnectionStatus`).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Connecting => "connecting",
            Status::Open => "open",
            Status::Reconnecting => "reconnecting",
            Status::Closed => "closed",
        }
    }
}

pub(crate) fn error(message: &str) -> JsValue {
    js_sys::Error::new(message).into()
}

pub(crate) fn type_error(message: &str) -> JsValue {
    js_sys::TypeError::new(message).into()
}

/// Reads an object JavaScript gave, naming what was wrong with it.
pub(crate) fn read<T: serde::de::DeserializeOwned>(value: JsValue, what: &str) -> Result<T, JsValue> {
    serde_wasm_bindgen::from_value(value).map_err(|err| type_error(&format!("{what}: {err}")))
}

/// Reads an optional options object: `undefined` or `null` gives the defaults.
pub(crate) fn options<T: serde::de::DeserializeOwned + Default>(value: JsValue, what: &str) -> Result<T, JsValue> {
    if value.is_undefined() || value.is_null() {
        return Ok(T::default());
    }
    read(value, what)
}

/// `RelayClient`'s options: `getToken`, a function serde cannot read, is taken out of a
/// copy of them before serde reads the rest.
fn client_options(value: JsValue) -> Result<ClientOptions, JsValue> {
    const WHAT: &str = "RelayClient options";
    if !value.is_object() {
        return options(value, WHAT);
    }
    let key = JsValue::from_str("getToken");
    let get_token = Reflect::get(&value, &key)?;
    let rest = Object::assign(&Object::new(), value.unchecked_ref());
    Reflect::delete_property(&rest, &key)?;
    let mut options: ClientOptions = read(rest.into(), WHAT)?;
    if !get_token.is_undefined() {
        let wrong = |_| type_error(&format!("{WHAT}: getToken must be a function that gives a token (a string, or a Promise of one)"));
        options.get_token = Some(get_token.dyn_into().map_err(wrong)?);
    }
    Ok(options)
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RequestOptions {
    timeout_ms: Option<f64>,
}

/// A connection to a Switchyard relay that reconnects by itself.
#[wasm_bindgen]
pub struct RelayClient {
    connection: std::rc::Rc<Connection>,
}

#[wasm_bindgen]
impl RelayClient {
    /// Connects to `url` (a session's `wsUrl`, or a sessionless endpoint). Reconnects with
    /// exponential backoff and jitter after a dropped connection or a 1001 (server
    /// shutting down, usually to restart); not after 1000 or 1008, which retrying cannot
    /// change (the session is gone, full, or not allowed), except 1008 "Token expired"
    /// when `getToken` can give a fresh token. Over the HTTP fallback (`transports`), the
    /// event stream's `close` event counts as those close codes, and its refusals as
    /// theirs: 404 (no such session) and 409 (full) end the client, 401 is retried only
    /// with `getToken`, 429 and 5xx are retried.
    #[wasm_bindgen(constructor)]
    pub fn new(url: &str, #[wasm_bindgen(unchecked_optional_param_type = "RelayClientOptions")] options: JsValue) -> Result<RelayClient, JsValue> {
        Ok(Self { connection: Connection::new(url, client_options(options)?)? })
    }

    /// Calls `listener` with each message of this `type` (`'*'` for every message,
    /// `'binary'` for binary frames, as a `Uint8Array`).
    pub fn on(&self, r#type: &str, #[wasm_bindgen(unchecked_param_type = "(message: ServerMessage) => void")] listener: Function) {
        self.connection.on(r#type, listener);
    }

    /// Stops calling `listener` for messages of this `type`; the same function given to `on()`.
    pub fn off(&self, r#type: &str, #[wasm_bindgen(unchecked_param_type = "(message: ServerMessage) => void")] listener: &Function) {
        self.connection.off(r#type, listener);
    }

    /// Calls `listener` with the new status each time it changes, and the transport the
    /// connection is open on (`null` unless the status is `'open'`).
    #[wasm_bindgen(js_name = onStatusChange)]
    pub fn on_status_change(
        &self,
        #[wasm_bindgen(unchecked_param_type = "(status: ConnectionStatus, transport: Transport | null) => void")] listener: Function,
    ) {
        self.connection.on_status(listener);
    }

    /// Sends a message (an object, sent as JSON, or a string sent as it is). While the
    /// connection is down it waits in a bounded queue and goes out, in order, once the
    /// connection is back; a full queue throws.
    pub fn send(&self, #[wasm_bindgen(unchecked_param_type = "ServerMessage | string")] message: JsValue) -> Result<(), JsValue> {
        self.connection.send_text(serialize(&message)?)
    }

    /// Sends a `request` and resolves with the `response`'s payload; rejects with the
    /// server's error (`REQUEST_FAILED: ...`) or when no answer comes within `timeoutMs`.
    #[wasm_bindgen(unchecked_return_type = "Promise<JsonValue>")]
    pub fn request(
        &self,
        #[wasm_bindgen(unchecked_param_type = "JsonValue")] payload: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "RequestOptions")] options: JsValue,
    ) -> Result<js_sys::Promise, JsValue> {
        let options: RequestOptions = self::options(options, "request options")?;
        let timeout = options.timeout_ms.unwrap_or(REQUEST_TIMEOUT_MS);
        if !timeout.is_finite() || timeout <= 0.0 {
            return Err(type_error("timeoutMs must be a positive number of milliseconds"));
        }
        Ok(self.connection.request(payload, timeout))
    }

    /// Joins a channel; resolves once joined, rejects if refused. The client rejoins its
    /// channels after reconnecting.
    #[wasm_bindgen(js_name = joinChannel, unchecked_return_type = "Promise<void>")]
    pub fn join_channel(&self, name: &str) -> js_sys::Promise {
        self.connection.join(name)
    }

    /// Leaves a channel and stops rejoining it after a reconnect; throws when the message
    /// cannot be sent or queued.
    #[wasm_bindgen(js_name = leaveChannel)]
    pub fn leave_channel(&self, name: &str) -> Result<(), JsValue> {
        self.connection.leave(name)
    }

    /// Closes the connection for good (1000). Waiting requests reject.
    pub fn close(&self) {
        self.connection.close();
    }

    /// Where the connection stands: `'connecting'`, `'open'`, `'reconnecting'` or `'closed'`.
    #[wasm_bindgen(getter, unchecked_return_type = "ConnectionStatus")]
    pub fn status(&self) -> String {
        self.connection.status().as_str().to_owned()
    }

    /// The transport the connection is open on: `'websocket'`, `'sse'` (the HTTP
    /// fallback), or `null` when it is not open.
    #[wasm_bindgen(getter, unchecked_return_type = "Transport | null")]
    pub fn transport(&self) -> JsValue {
        self.connection.transport().map_or(JsValue::NULL, |transport| JsValue::from_str(transport.as_str()))
    }
}
