//! The bridge transport: connections whose socket is a `ws` WebSocket the app already
//! accepted (from `ws`'s `WebSocketServer` or `@fastify/websocket`).
//!
//! The relay pushes into a [`BridgeOutbox`], which only queues; the JS thread then
//! flushes it through the socket's own `send`, `ping` and `close`. The outbox counts what
//! `ws` has buffered but not yet written (`bufferedAmount`) against its bound, so a client
//! that stops reading fills it and meets the slow-consumer policy instead of growing
//! `ws`'s buffer without limit. It is full as the core's slow-consumer rule says
//! ([`switchyard_core::refuses`]), as a native connection's is.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, LazyLock, OnceLock, Weak};
use std::time::{Duration, Instant};

use napi::bindgen_prelude::{
    BufferSlice, FnArgs, Function, FunctionRef, JsObjectValue, Object, ToNapiValue, Unknown,
};
use napi::{Env, JsValue, Result, ValueType};
use parking_lot::Mutex;
use switchyard_core::{refuses, ConnId, ConnectionRefusal, Frame, FrameKind, Outbox, Pushed, Transport, STALL_GRACE_MS};
use switchyard_server::LatencySample;

use crate::persistent_object::PersistentObject;
use crate::js_queue::JsQueue;

/// `ws`'s `readyState` of an open socket.
const OPEN: u32 = 1;

#[derive(Default)]
struct Queue {
    frames: VecDeque<Frame>,
    latency: LatencySample,
    queued_bytes: usize,
    /// Bytes `ws` still held unwritten when last asked.
    backlog: usize,
    /// Bytes flushed since `ws` was last asked for its backlog.
    unchecked: usize,
    close: Option<(u16, String)>,
    closed: bool,
    /// Already waiting in [`JsQueue`] for a flush.
    scheduled: bool,
    /// When `backlog` was read, in ms since [`EPOCH`].
    read_ms: u64,
    /// Since when the readings have shown bytes waiting in `ws` and none written.
    stalled_since_ms: Option<u64>,
}

/// What outboxes time the socket's progress from.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn elapsed_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64
}

pub struct BridgeOutbox {
    me: Weak<BridgeOutbox>,
    pending: Arc<JsQueue<BridgeOutbox>>,
    capacity: usize,
    /// Set once the relay has given the connection its id.
    conn: OnceLock<ConnId>,
    queue: Mutex<Queue>,
}

impl BridgeOutbox {
    pub fn new(pending: Arc<JsQueue<BridgeOutbox>>, capacity: usize) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            pending,
            capacity,
            conn: OnceLock::new(),
            queue: Mutex::default(),
        })
    }

    pub fn set_conn(&self, conn: ConnId) {
        let _ = self.conn.set(conn);
    }

    pub fn conn(&self) -> Option<ConnId> {
        self.conn.get().copied()
    }

    fn schedule(&self, queue: &mut Queue) {
        if !queue.scheduled {
            if let Some(me) = self.me.upgrade() {
                queue.scheduled = true;
                self.pending.outbox_ready(me);
            }
        }
    }

    /// Takes what is to be written: the frames, then a close if one was asked for, and how
    /// long the oldest frame waited.
    fn take(&self) -> (VecDeque<Frame>, Option<(u16, String)>, Option<Duration>) {
        let mut queue = self.queue.lock();
        queue.scheduled = false;
        queue.unchecked += queue.queued_bytes;
        queue.queued_bytes = 0;
        let close = queue.close.take();
        if close.is_some() {
            queue.closed = true;
        }
        let waited = queue.latency.taken();
        (std::mem::take(&mut queue.frames), close, waited)
    }

    /// Whether to ask `ws` for its backlog now. Asking costs a call into JavaScript, so
    /// it is done once per eighth of the bound flushed, and while a backlog remains.
    fn backlog_due(&self) -> bool {
        let queue = self.queue.lock();
        queue.backlog > 0 || queue.unchecked >= self.capacity / 8
    }

    /// What `ws` still holds. What it held before and was given since, less this, it
    /// wrote; a socket that wrote nothing with bytes waiting has stalled since then.
    fn set_backlog(&self, bytes: usize) {
        let mut queue = self.queue.lock();
        let now = elapsed_ms();
        if bytes == 0 || queue.backlog + queue.unchecked > bytes {
            queue.stalled_since_ms = None;
        } else if queue.stalled_since_ms.is_none() {
            queue.stalled_since_ms = Some(now);
        }
        queue.backlog = bytes;
        queue.read_ms = now;
        queue.unchecked = 0;
    }
}

impl BridgeOutbox {
    /// Whether a queue past its bound refuses `len` more bytes. `ws`'s backlog is read only
    /// when frames are flushed: a reading older than the grace may be of a socket that has
    /// drained since, so it is left out (the frame queued will bring a fresh one).
    fn full(&self, queue: &Queue, len: usize) -> bool {
        let now = elapsed_ms();
        let fresh = now.saturating_sub(queue.read_ms) < STALL_GRACE_MS;
        let held = queue.queued_bytes + if fresh { queue.backlog } else { 0 };
        let stalled_ms = queue.stalled_since_ms.filter(|_| fresh).map_or(0, |since| now.saturating_sub(since));
        refuses(self.capacity, held, len, || stalled_ms)
    }

    /// Queues a frame for the next flush; `bounded` refuses it past the bound (a replay
    /// is not).
    fn enqueue(&self, frame: Frame, bounded: bool) -> Pushed {
        let mut queue = self.queue.lock();
        if queue.closed || queue.close.is_some() {
            return Pushed::Closed;
        }
        let held = queue.queued_bytes + queue.backlog;
        if bounded && held + frame.len() > self.capacity && self.full(&queue, frame.len()) {
            return Pushed::Full;
        }
        queue.queued_bytes += frame.len();
        queue.frames.push_back(frame);
        if queue.frames.len() == 1 {
            queue.latency.started();
        }
        self.schedule(&mut queue);
        Pushed::Queued
    }
}

impl Outbox for BridgeOutbox {
    fn transport(&self) -> Transport {
        Transport::Bridge
    }

    fn push(&self, frame: Frame) -> Pushed {
        self.enqueue(frame, true)
    }

    fn push_replay(&self, frame: Frame) {
        self.enqueue(frame, false);
    }

    fn close(&self, code: u16, reason: &str) {
        let mut queue = self.queue.lock();
        if !queue.closed && queue.close.is_none() {
            queue.close = Some((code, reason.to_owned()));
            self.schedule(&mut queue);
        }
    }
}

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
    send: SendFn,
    close: CloseFn,
    ping: NoArgsFn,
    /// `cork` and `uncork` of the `net.Socket` under `ws` (its `_socket`), when it has
    /// one: the frames of one flush then leave in one write.
    cork: Option<(NoArgsFn, NoArgsFn)>,
}

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
        crate::js::call_method(&self.socket.get(env)?, "terminate").map(drop)
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
            send: bound(socket, "send")?,
            close: bound(socket, "close")?,
            ping: bound(socket, "ping")?,
            cork,
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
        let cork = socket.cork.as_ref().filter(|_| frames.len() > 1);
        if let Some((cork, _)) = cork {
            cork.borrow_back(self.env)?.call(())?;
        }
        for frame in frames {
            let sent = match frame.kind {
                FrameKind::Ping => socket.ping.borrow_back(self.env)?.call(()),
                FrameKind::Text | FrameKind::Binary => {
                    socket.sent.set(socket.sent.get() + frame.len() as u64);
                    let buffer = self.buffer(&frame)?;
                    let options = self.send_options(frame.kind == FrameKind::Binary)?;
                    socket.send.borrow_back(self.env)?.call((buffer, options).into())
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
            let _ = socket.close.borrow_back(self.env)?.call((code, reason).into());
        } else if socket.outbox.backlog_due() {
            let object = socket.socket.get(self.env)?;
            let backlog: f64 = object.get_named_property_unchecked("bufferedAmount").unwrap_or(0.0);
            socket.outbox.set_backlog(backlog as usize);
        }
        Ok(waited)
    }
}
