//! A member's event stream on the native runtime: the relay queues into an
//! [`EventStreamOutbox`] (the native transport's outbox, labelled as this transport), and
//! an [`EventStream`] turns what it holds into the stream's text as the socket takes it:
//! a response body for the binary's HTTP server, or written by [`serve`] to a socket
//! taken whole (`listen()`, `attach()`). The slow-consumer rule is the outbox's: what the
//! socket has not taken counts against the bound.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use switchyard_core::{close_code, ConnId, ConnectionRefusal, Frame, FrameKind, Identity, Outbox, Pushed, Route, Transport};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::{SendError, StreamText, CORS, HEADERS};
use crate::listener::{self, read_request, Request};
use crate::CLOSE_TIMEOUT;
use crate::codec::Outgoing;
use crate::engine::Engine;
use crate::now;
use crate::outbox::{NativeOutbox, Out};

/// A stream member's outbox: the native transport's, counted as its own transport.
pub struct EventStreamOutbox(NativeOutbox);

impl Outbox for EventStreamOutbox {
    fn transport(&self) -> Transport {
        Transport::EventStream
    }

    fn push(&self, frame: Frame) -> Pushed {
        self.0.push(frame)
    }

    fn push_replay(&self, frame: Frame) {
        self.0.push_replay(frame)
    }

    fn close(&self, code: u16, reason: &str) {
        self.0.close(code, reason)
    }
}

/// An open member's stream: each poll yields what its outbox holds, as text. Dropped (the
/// client went away, or the stream ended), the member leaves the relay.
pub struct EventStream {
    engine: Arc<Engine>,
    conn: ConnId,
    outbox: Arc<EventStreamOutbox>,
    text: StreamText,
    writing: VecDeque<Out>,
    ended: bool,
}

impl EventStream {
    /// Lets a member in on `route` as `identity`, or says why not. `send_url` is where its
    /// sends go. In a cluster, a member of a session joins once this node holds one of the
    /// session's places, as a native WebSocket does.
    pub async fn open(engine: &Arc<Engine>, route: Route, identity: Identity, send_url: String) -> Result<Self, ConnectionRefusal> {
        let held = match &route {
            Route::Session(id) => engine.hold_place(id).await,
            Route::Sessionless => Default::default(),
        };
        if held.full {
            return Err(ConnectionRefusal::SessionFull);
        }
        let positions = identity.resume.positions;
        let outbox = Arc::new(EventStreamOutbox(NativeOutbox::new(engine.relay.config().max_queued_bytes, None)));
        let conn = engine.relay.open(route.clone(), identity, outbox.clone(), now())?;
        drop(held);
        let token = engine.send_tokens.issue(conn, &route);
        Ok(Self { engine: engine.clone(), conn, outbox, text: StreamText::new(positions, send_url, token), writing: VecDeque::new(), ended: false })
    }
}

impl Stream for EventStream {
    type Item = Bytes;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        this.outbox.0.register(cx.waker());
        let taken = this.outbox.0.take(&mut this.writing);
        let mut out = BytesMut::new();
        let mut sent = 0;
        for frame in this.writing.drain(..) {
            let kind = match frame.opcode {
                Outgoing::Text => FrameKind::Text,
                Outgoing::Binary => FrameKind::Binary,
                Outgoing::Ping => {
                    // Written, or at least taken by the socket's side: the stream lives.
                    this.engine.relay.pong(this.conn, now());
                    FrameKind::Ping
                }
                Outgoing::Pong | Outgoing::Close => continue,
            };
            if frame.counted {
                sent += frame.payload.len();
            }
            this.text.frame(kind, &frame.payload, &mut out);
        }
        if sent > 0 {
            this.outbox.0.sent(sent);
        }
        if let Some((code, reason)) = taken.close {
            StreamText::close(code, &reason, &mut out);
            this.engine.relay.connection_closed(this.conn, code, &reason, now());
            this.ended = true;
        }
        match out.is_empty() {
            false => Poll::Ready(Some(out.freeze())),
            true if this.ended => Poll::Ready(None),
            true => Poll::Pending,
        }
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.engine.send_tokens.forget(self.conn);
        // A no-op when the relay already let the member go.
        self.engine.relay.connection_closed(self.conn, close_code::ABNORMAL, "Stream closed", now());
    }
}

/// The head of a stream's response on a socket written whole: the connection ends with
/// the stream.
pub fn response_head() -> Vec<u8> {
    let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
    for (name, value) in HEADERS.iter().chain(&CORS) {
        head.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    head.extend_from_slice(b"connection: close\r\n\r\n");
    head
}

/// A whole answer of the event-stream routes on a socket written by hand: `code` and
/// `message` as the HTTP API's error body (none when `code` is empty), the CORS headers,
/// and `keep_alive` or the connection's end.
pub fn http_answer(status: u16, code: &str, message: &str, keep_alive: bool) -> Vec<u8> {
    let reason = hyper::StatusCode::from_u16(status).ok().and_then(|status| status.canonical_reason()).unwrap_or("Error");
    let cors: String = CORS.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
    let body = if code.is_empty() { String::new() } else { super::error_body(code, message) };
    let connection = if keep_alive { "keep-alive" } else { "close" };
    format!("HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: {connection}\r\n{cors}\r\n{body}", body.len()).into_bytes()
}

/// How long a connection of sends may sit idle before the next.
const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// What a send on a socket written by hand is answered, and whether the connection stays
/// open for the next.
pub struct SendAnswer {
    answer: Vec<u8>,
    keep_alive: bool,
}

impl SendAnswer {
    /// The answer to a send already read: `sent` is what became of it.
    pub fn of(sent: Result<usize, SendError>, keep_alive: bool) -> Self {
        let answer = match sent {
            Ok(_) => http_answer(202, "", "", keep_alive),
            Err(error) => http_answer(error.status(), error.code(), &error.to_string(), keep_alive),
        };
        Self { answer, keep_alive }
    }
}

/// Reads a send's body (`content-length` bytes, `rest` its start) and hands it to the
/// relay; `None` when the client went away first.
pub async fn read_send(engine: &Engine, tcp: &mut (impl AsyncRead + Unpin), request: &Request, rest: &[u8], route: &Route) -> Option<SendAnswer> {
    let limit = super::body_limit(&engine.relay);
    let length = request.header("content-length").and_then(|length| length.trim().parse::<usize>().ok());
    let body = match length {
        None => Err(SendError::Malformed("sent with a Content-Length")),
        Some(length) if length > limit => Err(SendError::TooLarge(limit)),
        Some(length) if rest.len() > length => Err(SendError::Malformed("one request at a time: wait for each answer")),
        Some(length) => {
            let mut body = rest.to_vec();
            body.resize(length, 0);
            tokio::time::timeout(CLOSE_TIMEOUT, tcp.read_exact(&mut body[rest.len()..])).await.ok()?.ok()?;
            Ok(body)
        }
    };
    let keep_alive = body.is_ok() && !request.header("connection").is_some_and(|c| c.eq_ignore_ascii_case("close"));
    let sent = body.and_then(|body| {
        let token = request.header(super::SEND_TOKEN_HEADER);
        super::send(&engine.relay, &engine.send_tokens, route, token, request.header("content-type"), body.into())
    });
    Some(SendAnswer::of(sent, keep_alive))
}

/// Writes `first`, then serves the sends that follow on the same connection (keep-alive,
/// as a browser's `fetch` sends them) until the client closes it, asks to, or sits idle.
/// A request that is not a send (`route_of` says where a URL's send goes) is given back,
/// for the caller to serve.
pub async fn serve_sends<IO: AsyncRead + AsyncWrite + Unpin>(
    engine: &Engine,
    mut tcp: IO,
    address: IpAddr,
    first: SendAnswer,
    route_of: impl Fn(&str) -> Option<Route>,
) -> Option<(IO, Request, bytes::Bytes)> {
    let mut answer = first;
    loop {
        if !answer.keep_alive {
            listener::answer(tcp, answer.answer).await;
            return None;
        }
        tcp.write_all(&answer.answer).await.ok()?;
        tcp.flush().await.ok()?;
        let (request, rest) = tokio::time::timeout(KEEP_ALIVE, read_request(&mut tcp, address)).await.ok()?.ok()?;
        let Some(route) = route_of(&request.url).filter(|_| request.method == "POST") else { return Some((tcp, request, rest)) };
        answer = read_send(engine, &mut tcp, &request, &rest, &route).await?;
    }
}

/// Writes a stream to a socket taken whole, after `preface` (the response head, unless
/// already written), until the stream ends or the client goes away.
pub async fn serve(mut io: impl AsyncRead + AsyncWrite + Unpin, preface: Vec<u8>, mut stream: EventStream) {
    /// What the stream or its socket did next.
    enum Next {
        Chunk(Bytes),
        End,
        Gone,
    }
    if io.write_all(&preface).await.is_err() || io.flush().await.is_err() {
        return;
    }
    let mut sink = [0u8; 256];
    loop {
        let next = std::future::poll_fn(|cx| {
            if let Poll::Ready(chunk) = Pin::new(&mut stream).poll_next(cx) {
                return Poll::Ready(chunk.map_or(Next::End, Next::Chunk));
            }
            // A client says nothing on its stream: a read ends only when it goes away.
            loop {
                let mut read = ReadBuf::new(&mut sink);
                match Pin::new(&mut io).poll_read(cx, &mut read) {
                    Poll::Ready(Ok(())) if !read.filled().is_empty() => continue,
                    Poll::Ready(_) => return Poll::Ready(Next::Gone),
                    Poll::Pending => return Poll::Pending,
                }
            }
        })
        .await;
        match next {
            Next::Chunk(chunk) => {
                // Flushed, so that a TLS stream sends its last records without waiting for
                // the next chunk.
                if io.write_all(&chunk).await.is_err() || io.flush().await.is_err() {
                    return;
                }
            }
            Next::End => break,
            Next::Gone => return,
        }
    }
    let _ = io.shutdown().await;
}
