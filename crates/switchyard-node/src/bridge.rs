//! The bridge transport: connections whose socket is a `ws` WebSocket the app already
//! accepted (from `ws`'s `WebSocketServer` or `@fastify/websocket`).
//!
//! The relay pushes into a [`BridgeOutbox`], which only queues; the JS thread then
//! flushes it through the socket's own `send`, `ping` and `close`, and tells it what `ws`
//! has buffered but not yet written (`bufferedAmount`), which counts against its bound.
//! An event-stream member (`eventStreamHandler()`) is bridged the same way, its socket a
//! `ServerResponse` written with the stream's text.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use napi::bindgen_prelude::{
    BufferSlice, FnArgs, Function, FunctionRef, JsObjectValue, Object, ToNapiValue, Unknown,
};
use napi::{Env, JsValue, Result, ValueType};
use bytes::BytesMut;
use switchyard_core::{ConnId, ConnectionRefusal, Frame, FrameKind, Relay};
use switchyard_server::bridge_outbox::BridgeOutbox;
use switchyard_server::event_stream::StreamText;

use crate::persistent_object::PersistentObject;

/// `ws`'s `readyState` of an open socket.
const OPEN: u32 = 1;

type SendFn = FunctionRef<FnArgs<(Unknown<'static>, Unknown<'static>)>, Unknown<'static>>;
type CloseFn = FunctionRef<FnArgs<(u16, String)>, Unknown<'static>>;
type NoArgsFn = FunctionRef<(), Unknown<'static>>;

/// The JS side of one bridge connection: its socket and the socket's bound methods.
pub struct BridgeSocket {
    outbox: Arc<BridgeOutbox>,
    socket: PersistentObject,
    /// The `net.Socket` under `ws` (its `_socket`), which counts the bytes on the wire.
    raw: Option<PersistentObject>,
    /// permessage-deflate was negotiated for this socket.
    compressed: bool,
    /// Payload bytes handed to `ws.send`, before any compression.
    sent: Cell<u64>,
    way: Way,
}

/// How frames reach the client.
enum Way {
    /// A `ws` WebSocket's own methods.
    WebSocket {
        send: SendFn,
        close: CloseFn,
        ping: NoArgsFn,
        /// `cork` and `uncork` of the `net.Socket` under `ws` (its `_socket`), when it has
        /// one: the frames of one flush then leave in one write.
        cork: Option<(NoArgsFn, NoArgsFn)>,
    },
    /// A `ServerResponse` the stream's text is written to; a ping that goes out is the
    /// member's sign of life.
    EventStream { write: WriteFn, end: NoArgsFn, text: RefCell<StreamText>, relay: Arc<Relay>, conn: ConnId },
}

type WriteFn = FunctionRef<Unknown<'static>, Unknown<'static>>;

/// Checks that `value` is a `ws` WebSocket (by its shape; `@fastify/websocket` hands out
/// the same class) and returns it as an object.
pub fn as_websocket<'env>(value: Unknown<'env>) -> std::result::Result<Object<'env>, &'static str> {
    if value.get_type().ok() != Some(ValueType::Object) {
        return Err("socket must be a WebSocket from the ws package");
    }
    // SAFETY: an object, checked above.
    let object: Object<'env> = unsafe { value.cast() }.map_err(|_| "socket must be a WebSocket")?;
    for method in ["send", "close", "ping", "terminate", "on"] {
        let kind = object
            .get_named_property_unchecked::<Unknown>(method)
            .and_then(|m| m.get_type())
            .unwrap_or(ValueType::Undefined);
        if kind != ValueType::Function {
            return Err("socket must be a WebSocket from the ws package (it has no send/close/ping/terminate/on methods)");
        }
    }
    match object.get_named_property_unchecked::<Unknown>("readyState").and_then(|s| s.get_type()) {
        Ok(ValueType::Number) => Ok(object),
        _ => Err("socket must be a WebSocket from the ws package (it has no readyState)"),
    }
}

pub fn is_open(socket: &Object) -> Result<bool> {
    Ok(socket.get_named_property_unchecked::<u32>("readyState")? == OPEN)
}

/// Closes a socket the relay never took (refused, or the manager is stopped), after the
/// refusal's notice if it has one.
pub fn refuse(socket: &Object, refusal: ConnectionRefusal) -> Result<()> {
    if let Some(notice) = refusal.notice(switchyard_server::now()) {
        let send: Function<String, Unknown> = socket.get_named_property_unchecked("send")?;
        send.bind(socket)?.call(String::from_utf8_lossy(&notice.payload).into_owned())?;
    }
    let close: Function<FnArgs<(u16, &str)>, Unknown> = socket.get_named_property_unchecked("close")?;
    close.bind(socket)?.call((refusal.close_code(), refusal.reason()).into())?;
    Ok(())
}

fn bound<Args: napi::bindgen_prelude::JsValuesTupleIntoVec, Ret: napi::bindgen_prelude::FromNapiValue>(
    socket: &Object,
    method: &str,
) -> Result<FunctionRef<Args, Ret>> {
    let function: Function<Args, Ret> = socket.get_named_property_unchecked(method)?;
    function.bind(socket)?.create_ref()
}

impl BridgeSocket {
    /// For a socket with permessage-deflate: the payload bytes sent, and the bytes that
    /// went on the wire for them (frame headers and the handshake included).
    pub fn compression(&self, env: &Env) -> Result<Option<(u64, u64)>> {
        let Some(raw) = self.raw.as_ref().filter(|_| self.compressed) else { return Ok(None) };
        let on_wire: f64 = raw.get(env)?.get_named_property_unchecked("bytesWritten").unwrap_or(0.0);
        Ok(Some((self.sent.get(), on_wire as u64)))
    }

    /// Drops the connection without a close handshake (a stop that ran out of time).
    pub fn terminate(&self, env: &Env) -> Result<()> {
        let method = match self.way {
            Way::WebSocket { .. } => "terminate",
            Way::EventStream { .. } => "destroy",
        };
        crate::js::call_method(&self.socket.get(env)?, method).map(drop)
    }

    /// An event stream's member, written to `response` (a `ServerResponse` whose head is
    /// sent).
    pub fn event_stream(env: &Env, response: &Object, outbox: Arc<BridgeOutbox>, text: StreamText, relay: Arc<Relay>, conn: ConnId) -> Result<Self> {
        Ok(Self {
            outbox,
            socket: PersistentObject::new(env, response)?,
            raw: None,
            compressed: false,
            sent: Cell::new(0),
            way: Way::EventStream { write: bound(response, "write")?, end: bound(response, "end")?, text: RefCell::new(text), relay, conn },
        })
    }

    pub fn new(env: &Env, socket: &Object, outbox: Arc<BridgeOutbox>) -> Result<Self> {
        let raw: Unknown = socket.get_named_property_unchecked("_socket")?;
        let (raw, cork) = match raw.get_type()? {
            ValueType::Object => {
                // SAFETY: an object, checked.
                let raw: Object = unsafe { raw.cast()? };
                let corks = raw.get_named_property_unchecked::<Unknown>("cork")?.get_type()? == ValueType::Function;
                let cork = if corks { Some((bound(&raw, "cork")?, bound(&raw, "uncork")?)) } else { None };
                (Some(PersistentObject::new(env, &raw)?), cork)
            }
            _ => (None, None),
        };
        let extensions: Unknown = socket.get_named_property_unchecked("extensions")?;
        let compressed = extensions.get_type()? == ValueType::String
            // SAFETY: a string, checked.
            && unsafe { extensions.cast::<String>()? }.contains("permessage-deflate");
        Ok(Self {
            outbox,
            socket: PersistentObject::new(env, socket)?,
            raw,
            compressed,
            sent: Cell::new(0),
            way: Way::WebSocket { send: bound(socket, "send")?, close: bound(socket, "close")?, ping: bound(socket, "ping")?, cork },
        })
    }
}

/// Writes bridge outboxes to their sockets. Frames of one message fanned out to many
/// sockets share one JS `Buffer`, as they share one `Bytes` in Rust.
pub struct Flusher<'env> {
    env: &'env Env,
    buffers: HashMap<(usize, usize), Unknown<'env>>,
    text: Option<Unknown<'env>>,
    binary: Option<Unknown<'env>>,
}

impl<'env> Flusher<'env> {
    pub fn new(env: &'env Env) -> Self {
        Self { env, buffers: HashMap::new(), text: None, binary: None }
    }

    fn buffer(&mut self, frame: &Frame) -> Result<Unknown<'static>> {
        let key = (frame.payload.as_ptr() as usize, frame.payload.len());
        if let Some(buffer) = self.buffers.get(&key) {
            return Ok(unsafe { Unknown::from_raw_unchecked(self.env.raw(), buffer.raw()) });
        }
        let slice = BufferSlice::copy_from(self.env, &frame.payload)?;
        // SAFETY: the value lives in the current handle scope, which outlasts this flush.
        let value = unsafe { Unknown::from_raw_unchecked(self.env.raw(), ToNapiValue::to_napi_value(self.env.raw(), &slice)?) };
        self.buffers.insert(key, value);
        Ok(unsafe { Unknown::from_raw_unchecked(self.env.raw(), value.raw()) })
    }

    /// `{ binary }`, the options of `ws.send` that choose the frame's opcode.
    fn send_options(&mut self, binary: bool) -> Result<Unknown<'static>> {
        let slot = if binary { &mut self.binary } else { &mut self.text };
        let value = match slot {
            Some(value) => *value,
            None => {
                let mut options = Object::new(self.env)?;
                options.set("binary", binary)?;
                let value = unsafe { Unknown::from_raw_unchecked(self.env.raw(), options.raw()) };
                *slot = Some(value);
                value
            }
        };
        Ok(unsafe { Unknown::from_raw_unchecked(self.env.raw(), value.raw()) })
    }

    /// Writes what the outbox holds, then the close it was asked for. A socket that
    /// throws (closed under us) loses those frames only; the `close` event that follows
    /// removes it. Returns how long the oldest frame written had waited.
    pub fn flush(&mut self, socket: &BridgeSocket) -> Result<Option<Duration>> {
        let (frames, close, waited) = socket.outbox.take();
        let backlog = match &socket.way {
            Way::WebSocket { send, close: close_fn, ping, cork } => {
                let cork = cork.as_ref().filter(|_| frames.len() > 1);
                if let Some((cork, _)) = cork {
                    cork.borrow_back(self.env)?.call(())?;
                }
                for frame in frames {
                    let sent = match frame.kind {
                        FrameKind::Ping => ping.borrow_back(self.env)?.call(()),
                        FrameKind::Text | FrameKind::Binary => {
                            socket.sent.set(socket.sent.get() + frame.len() as u64);
                            let buffer = self.buffer(&frame)?;
                            let options = self.send_options(frame.kind == FrameKind::Binary)?;
                            send.borrow_back(self.env)?.call((buffer, options).into())
                        }
                    };
                    if sent.is_err() {
                        break;
                    }
                }
                if let Some((_, uncork)) = cork {
                    uncork.borrow_back(self.env)?.call(())?;
                }
                if let Some((code, reason)) = close {
                    let _ = close_fn.borrow_back(self.env)?.call((code, reason).into());
                    return Ok(waited);
                }
                "bufferedAmount"
            }
            Way::EventStream { write, end, text, relay, conn } => {
                let mut out = BytesMut::new();
                for frame in &frames {
                    if frame.kind == FrameKind::Ping {
                        relay.pong(*conn, switchyard_server::now());
                    }
                    text.borrow_mut().frame(frame.kind, &frame.payload, &mut out);
                }
                if let Some((code, reason)) = &close {
                    StreamText::close(*code, reason, &mut out);
                }
                if !out.is_empty() {
                    let chunk = BufferSlice::copy_from(self.env, &out)?;
                    // SAFETY: the value lives in the current handle scope, which outlasts this call.
                    let chunk = unsafe { Unknown::from_raw_unchecked(self.env.raw(), ToNapiValue::to_napi_value(self.env.raw(), &chunk)?) };
                    let _ = write.borrow_back(self.env)?.call(chunk);
                }
                if close.is_some() {
                    let _ = end.borrow_back(self.env)?.call(());
                    return Ok(waited);
                }
                "writableLength"
            }
        };
        if socket.outbox.backlog_due() {
            let object = socket.socket.get(self.env)?;
            let held: f64 = object.get_named_property_unchecked(backlog).unwrap_or(0.0);
            socket.outbox.set_backlog(held as usize);
        }
        Ok(waited)
    }
}
