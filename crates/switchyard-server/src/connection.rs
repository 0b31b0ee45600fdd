//! One native WebSocket connection: a single task that reads frames into the relay and
//! writes the connection's outbox to its socket.
//!
//! Reads go into a buffer shared by every connection on the thread; a connection keeps
//! bytes of its own only while a frame is half-read, so an idle connection holds no
//! buffer at all. Writes are coalesced: everything queued goes out in one vectored write.
//! Headers and short payloads are copied end to end into a buffer shared by the thread's
//! connections, so the kernel gathers a few long slices rather than two short ones a frame;
//! long payloads are written from their shared `Bytes`, never copied.
//!
//! Closing follows RFC 6455: a close asked for by the relay goes out after what was
//! queued before it, then the task waits for the client's close (or gives up after
//! [`CLOSE_TIMEOUT`]); a client's close is answered with its own code.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use switchyard_core::{close_code, ConnId, Identity, Outbox, ConnectionRefusal, Relay, Route};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::runtime::Handle;
use tokio::time::{sleep, Sleep};
use parking_lot::Mutex;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;

use crate::codec::{close_payload, encode_header, header_len, Decoded, Decoder, Limits, Outgoing, MAX_HEADER_LEN};
use crate::deflate::{CompressionConfig, CompressionTotals, Deflate};
use crate::now;
use crate::outbox::{Compression, NativeOutbox, Out};

/// The per-thread read buffer: one read takes at most this much.
const READ_BUFFER_LEN: usize = 64 * 1024;
/// Room reserved at a time for a half-read frame whose size is not yet known.
const PARTIAL_CHUNK: usize = 4 * 1024;
/// Frames per vectored write (two slices each, well under `IOV_MAX`).
const WRITE_BATCH: usize = 64;
/// How long a closing connection waits for its close frame to go out and the client's
/// to come back, before the socket is dropped.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Payloads up to this long are copied next to their frame headers for a write: the
/// kernel copies one long slice much faster than many short ones (a header and a payload
/// a frame), and for these the copy costs less than the slice. Longer ones are written
/// from their shared buffer.
const COPY_UP_TO: usize = 1024;
/// The most bytes copied for one write.
const STAGING_LEN: usize = 64 * 1024;

thread_local! {
    static READ_BUFFER: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_BUFFER_LEN].into_boxed_slice());
    /// Headers and short payloads of the write being made, end to end.
    static STAGING: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(STAGING_LEN));
}

/// Where one slice of a vectored write comes from.
#[derive(Clone, Copy)]
enum Source {
    /// `start..end` of the staging buffer.
    Staged,
    /// From `start` of this frame's payload to its end (`end` is unused).
    Payload(usize),
}

/// The slices of one vectored write of the front of the write queue.
struct Pieces {
    pieces: [(Source, usize, usize); 2 * WRITE_BATCH],
    len: usize,
}

impl Default for Pieces {
    fn default() -> Self {
        Self { pieces: [(Source::Staged, 0, 0); 2 * WRITE_BATCH], len: 0 }
    }
}

impl Pieces {
    /// Lays out up to [`WRITE_BATCH`] frames of `writing`, skipping the `skip` bytes of
    /// the first already written: headers and short payloads are copied into `staging`,
    /// end to end, the rest referenced.
    fn gather(&mut self, writing: &VecDeque<Out>, mut skip: usize, staging: &mut Vec<u8>) {
        staging.clear();
        for (index, out) in writing.iter().take(WRITE_BATCH).enumerate() {
            let mut header = [0u8; MAX_HEADER_LEN];
            let header_len = encode_header(out.opcode, out.compressed, out.payload.len(), &mut header);
            let copied = out.payload.len() <= COPY_UP_TO;
            let staged_len = header_len + if copied { out.payload.len() } else { 0 };
            if index > 0 && staging.len() + staged_len > STAGING_LEN {
                break;
            }
            for (part, is_payload) in [(&header[..header_len], false), (&out.payload[..], true)] {
                if skip >= part.len() {
                    skip -= part.len();
                    continue;
                }
                if is_payload && !copied {
                    self.push((Source::Payload(index), skip, 0));
                } else {
                    let start = staging.len();
                    staging.extend_from_slice(&part[skip..]);
                    match self.len.checked_sub(1).map(|last| &mut self.pieces[last]) {
                        Some((Source::Staged, _, end)) if *end == start => *end = staging.len(),
                        _ => self.push((Source::Staged, start, staging.len())),
                    }
                }
                skip = 0;
            }
        }
    }

    fn push(&mut self, piece: (Source, usize, usize)) {
        self.pieces[self.len] = piece;
        self.len += 1;
    }

    /// Fills `slices` with the pieces; returns how many.
    fn slices<'a>(&self, writing: &'a VecDeque<Out>, staging: &'a [u8], slices: &mut [IoSlice<'a>]) -> usize {
        for (slice, &(source, start, end)) in slices.iter_mut().zip(&self.pieces[..self.len]) {
            *slice = match source {
                Source::Staged => IoSlice::new(&staging[start..end]),
                Source::Payload(index) => IoSlice::new(&writing[index].payload[start..]),
            };
        }
        self.len
    }
}

/// How the read side ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ReadEnd {
    /// The client sent a close frame, or a frame that forced one: a close is queued.
    Closing,
    /// EOF or an error before any close handshake.
    Lost,
}

/// One connection's task: a future of its own, so that an idle connection costs its
/// fields and the task's header, and nothing of an `async` state machine. What only a
/// starting, half-read or closing connection needs is boxed, so that the task fits
/// tokio's 256-byte cell (see the test at the end).
struct Connection<IO> {
    io: IO,
    relay: Arc<Relay>,
    conn: ConnId,
    outbox: Arc<NativeOutbox>,
    decoder: Decoder,
    /// The `101` answer, when the caller left it to be written: before anything else.
    preface: Option<Box<Bytes>>,
    /// The start of a frame not yet wholly read (and, at first, bytes read with the
    /// request); never empty.
    partial: Option<Box<BytesMut>>,
    writing: VecDeque<Out>,
    /// Bytes of the first frame in `writing` already written: 32 bits, as no frame the
    /// outbox takes is longer ([`crate::codec::MAX_FRAME_LEN`]).
    written: u32,
    /// The bytes that came with the request have been routed.
    started: bool,
    read_done: bool,
    close_frame: CloseFrame,
    /// The task put itself at the back of the run queue before writing what it found.
    write_deferred: bool,
    /// Cancelled when a stop runs out of time: the connection is dropped at once.
    abort: CancellationToken,
    /// Set once the connection is closing: when it gives up waiting, and the abort it
    /// listens for meanwhile (an open connection is closed by the stop before that).
    closing: Option<Box<Closing>>,
}

/// Where the connection's own close frame is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CloseFrame {
    NotQueued,
    /// In `writing`: nothing is taken from the outbox any more.
    Queued,
    /// On the wire.
    Written,
}

struct Closing {
    deadline: Pin<Box<Sleep>>,
    aborted: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl<IO> Drop for Connection<IO> {
    fn drop(&mut self) {
        // A no-op when the relay already let the connection go.
        self.relay.connection_closed(self.conn, close_code::ABNORMAL, "Connection lost", now());
        if let Some(compression) = self.outbox.compression() {
            compression.totals.closed();
        }
    }
}

/// Serves the connection until it closes, or until its abort (a stop that ran out of time)
/// drops it.
impl<IO: AsyncRead + AsyncWrite + Unpin> Future for Connection<IO> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.get_mut().serve(cx)
    }
}

/// What one decoding pass asks of the connection besides routing.
#[derive(Default)]
struct Effects {
    pongs: Vec<Bytes>,
    end: Option<ReadEnd>,
}

/// What [`Connection::new`] takes besides the socket and the relay.
struct Parts {
    conn: ConnId,
    outbox: Arc<NativeOutbox>,
    preface: Vec<u8>,
    head: Bytes,
    abort: CancellationToken,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Connection<IO> {
    fn new(io: IO, relay: Arc<Relay>, parts: Parts) -> Self {
        let Parts { conn, outbox, preface, head, abort } = parts;
        Self {
            io,
            relay,
            conn,
            outbox,
            decoder: Decoder::default(),
            preface: (!preface.is_empty()).then(|| Box::new(preface.into())),
            partial: (!head.is_empty()).then(|| Box::new(BytesMut::from(&head[..]))),
            writing: VecDeque::new(),
            written: 0,
            started: false,
            read_done: false,
            close_frame: CloseFrame::NotQueued,
            write_deferred: false,
            abort,
            closing: None,
        }
    }

    /// Starts the wait for the close handshake, once.
    fn start_closing(&mut self) {
        if self.closing.is_none() {
            let aborted = Box::pin(self.abort.clone().cancelled_owned());
            self.closing = Some(Box::new(Closing { deadline: Box::pin(sleep(CLOSE_TIMEOUT)), aborted }));
        }
    }

    /// Routes the bytes that came with the request; true when the connection was lost
    /// while doing so (a close from the client only stops reading, so it is false).
    fn consume_head(&mut self) -> bool {
        let Some(head) = self.partial.take() else { return false };
        match self.consume(head) {
            Some(ReadEnd::Lost) => true,
            Some(ReadEnd::Closing) => {
                self.read_done = true;
                false
            }
            None => false,
        }
    }

    fn serve(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.started {
            self.started = true;
            if self.consume_head() {
                return Poll::Ready(());
            }
        }
        if !self.read_done {
            if let Poll::Ready(end) = self.poll_read(cx) {
                self.read_done = true;
                if end == ReadEnd::Lost {
                    return Poll::Ready(());
                }
            }
        }
        // A close the relay asked for waits behind what was queued before it; a client
        // that reads nothing (a slow consumer) would hold its socket and backlog forever.
        if self.outbox.register(cx.waker()) {
            self.start_closing();
        }
        // Frames that other connections queue while the scheduler works through its round
        // wait for the round's end, so that one send carries them all (uWS corks a socket
        // for a loop iteration alike): finding frames to write, the task first goes once
        // to the back of the run queue.
        if !self.write_deferred && self.closing.is_none() && self.writing.is_empty() && self.outbox.has_unsent() {
            self.write_deferred = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.write_deferred = false;
        if let Poll::Ready(Err(_)) = self.poll_write(cx) {
            return Poll::Ready(());
        }
        if self.close_frame == CloseFrame::Written {
            // The client has its close frame; the FIN tells it nothing more follows.
            let _ = Pin::new(&mut self.io).poll_shutdown(cx);
            if self.read_done {
                return Poll::Ready(());
            }
        }
        let Some(Closing { deadline, aborted }) = self.closing.as_deref_mut() else { return Poll::Pending };
        match deadline.as_mut().poll(cx).is_ready() || aborted.as_mut().poll(cx).is_ready() {
            true => Poll::Ready(()),
            false => Poll::Pending,
        }
    }

    /// Reads and routes until the socket has nothing more, or the read side ends. After
    /// [`READ_BUFFER_LEN`] bytes it yields, so the writers of the connections it routed
    /// to get to drain their outboxes before a fast sender fills them.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<ReadEnd> {
        let mut budget = READ_BUFFER_LEN;
        loop {
            let read = if self.partial.is_none() {
                READ_BUFFER.with_borrow_mut(|buffer| {
                    let mut read_buf = ReadBuf::new(buffer);
                    match Pin::new(&mut self.io).poll_read(cx, &mut read_buf) {
                        Poll::Ready(Ok(())) if read_buf.filled().is_empty() => Poll::Ready((0, Some(ReadEnd::Lost))),
                        Poll::Ready(Ok(())) => {
                            let filled = read_buf.filled().len();
                            Poll::Ready((filled, self.consume_shared(&mut buffer[..filled])))
                        }
                        Poll::Ready(Err(_)) => Poll::Ready((0, Some(ReadEnd::Lost))),
                        Poll::Pending => Poll::Pending,
                    }
                })
            } else {
                self.poll_read_partial(cx)
            };
            match read {
                Poll::Pending => return Poll::Pending,
                Poll::Ready((_, Some(ReadEnd::Lost))) => {
                    self.relay.connection_closed(self.conn, close_code::ABNORMAL, "Connection lost", now());
                    return Poll::Ready(ReadEnd::Lost);
                }
                Poll::Ready((_, Some(end))) => return Poll::Ready(end),
                Poll::Ready((read, None)) => {
                    budget = budget.saturating_sub(read);
                    if budget == 0 {
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                }
            }
        }
    }

    /// Reads more of a half-read frame straight into the connection's own buffer.
    fn poll_read_partial(&mut self, cx: &mut Context<'_>) -> Poll<(usize, Option<ReadEnd>)> {
        let partial = self.partial.as_mut().expect("called with a half-read frame");
        if partial.capacity() == partial.len() {
            partial.reserve(PARTIAL_CHUNK);
        }
        let mut read_buf = ReadBuf::uninit(partial.spare_capacity_mut());
        match ready!(Pin::new(&mut self.io).poll_read(cx, &mut read_buf)) {
            Ok(()) if read_buf.filled().is_empty() => Poll::Ready((0, Some(ReadEnd::Lost))),
            Ok(()) => {
                let filled = read_buf.filled().len();
                let mut partial = self.partial.take().expect("still there");
                // SAFETY: `ReadBuf` initialized these many bytes of the spare capacity.
                unsafe { partial.advance_mut(filled) };
                let end = self.consume(partial);
                Poll::Ready((filled, end))
            }
            Err(_) => Poll::Ready((0, Some(ReadEnd::Lost))),
        }
    }

    /// Decodes bytes read into the shared buffer; keeps a trailing half frame.
    fn consume_shared(&mut self, data: &mut [u8]) -> Option<ReadEnd> {
        let (consumed, frame_len, end) = self.decode(data);
        if end.is_none() && consumed < data.len() {
            let rest = &data[consumed..];
            let mut partial = BytesMut::with_capacity(frame_len.unwrap_or(0).max(rest.len() + PARTIAL_CHUNK));
            partial.extend_from_slice(rest);
            self.partial = Some(Box::new(partial));
        }
        end
    }

    /// Decodes the connection's own buffer, keeping what is left of it in `partial`.
    fn consume(&mut self, mut buffer: Box<BytesMut>) -> Option<ReadEnd> {
        let (consumed, frame_len, end) = self.decode(&mut buffer);
        buffer.advance(consumed);
        if !buffer.is_empty() && end.is_none() {
            if let Some(frame_len) = frame_len {
                buffer.reserve(frame_len.saturating_sub(buffer.len()));
            }
            self.partial = Some(buffer);
        }
        end
    }

    /// Decodes whole frames: messages go to the relay, pings are answered. Returns bytes
    /// consumed, the size of a trailing frame when known, and how reading ended, if it did.
    fn decode(&mut self, data: &mut [u8]) -> (usize, Option<usize>, Option<ReadEnd>) {
        let (relay, conn, outbox) = (&self.relay, self.conn, &self.outbox);
        let mut effects = Effects::default();
        let limits = Limits { max_message_bytes: relay.config().max_message_bytes, inflating: outbox.compression().is_some() };
        let decoded = self.decoder.decode(limits, data, |decoded| match decoded {
            Decoded::Message(frame) => {
                relay.receive(conn, frame, now());
            }
            Decoded::Ping(payload) => {
                relay.alive(conn, now());
                effects.pongs.push(payload);
            }
            Decoded::Pong => relay.pong(conn, now()),
            Decoded::Close { code, reason } => {
                relay.connection_closed(conn, code, &reason, now());
                outbox.close(code, "");
                effects.end = Some(ReadEnd::Closing);
            }
        });
        // Only the latest ping needs its pong (RFC 6455 section 5.5.3): a ping flood from a
        // client that does not read grows nothing.
        if let (Some(payload), CloseFrame::NotQueued) = (effects.pongs.pop(), self.close_frame) {
            let waiting = self.writing.iter().skip(usize::from(self.written > 0)).position(|out| out.opcode == Outgoing::Pong);
            match waiting {
                Some(index) => self.writing[index + usize::from(self.written > 0)].payload = payload,
                None => self.writing.push_back(Out::control(Outgoing::Pong, payload)),
            }
        }
        match decoded {
            Ok(progress) => (progress.consumed, progress.frame_len, effects.end),
            Err(error) => {
                self.relay.end_connection(self.conn, error.close_code(), error.reason(), now());
                (data.len(), None, Some(ReadEnd::Closing))
            }
        }
    }

    /// Moves what the outbox holds into the write queue, the close last.
    fn refill(&mut self) {
        let taken = self.outbox.take(&mut self.writing);
        if let Some(waited) = taken.waited {
            self.relay.record_relay_latency(waited);
        }
        if let Some((code, reason)) = taken.close {
            // 1005 means the client's close had no code: the echo has none either.
            let payload = if code == close_code::NO_STATUS { Bytes::new() } else { close_payload(code, &reason) };
            self.writing.push_back(Out::control(Outgoing::Close, payload));
            self.close_frame = CloseFrame::Queued;
            self.start_closing();
        }
    }

    /// Writes until the queue and the outbox are empty (`Ready(Ok)`) or the socket is full.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(preface) = self.preface.as_mut() {
            while !preface.is_empty() {
                let written = ready!(Pin::new(&mut self.io).poll_write(cx, preface))?;
                if written == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                preface.advance(written);
            }
            self.preface = None;
        }
        loop {
            if self.writing.is_empty() && self.close_frame == CloseFrame::NotQueued {
                self.refill();
            }
            if self.writing.is_empty() {
                // What a TLS stream holds back (its records, when the socket was full) goes
                // out too; a plain socket holds nothing.
                return Pin::new(&mut self.io).poll_flush(cx);
            }
            let (io, writing, skip) = (&mut self.io, &self.writing, self.written as usize);
            let written = ready!(STAGING.with_borrow_mut(|staging| {
                let mut pieces = Pieces::default();
                pieces.gather(writing, skip, staging);
                let mut slices = [IoSlice::new(&[]); 2 * WRITE_BATCH];
                // One slice (the usual case, with short frames) goes out with send(2),
                // which costs the kernel less than writev(2).
                match pieces.slices(writing, staging, &mut slices) {
                    1 => Pin::new(io).poll_write(cx, &slices[0]),
                    used => Pin::new(io).poll_write_vectored(cx, &slices[..used]),
                }
            }))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(written);
        }
    }

    /// Drops the frames `written` more bytes completed, and tells the outbox once.
    fn advance(&mut self, written: usize) {
        let mut offset = self.written as usize + written;
        let mut sent = 0;
        while let Some(front) = self.writing.front() {
            let total = header_len(front.payload.len()) + front.payload.len();
            if offset < total {
                break;
            }
            offset -= total;
            let done = self.writing.pop_front().expect("front exists");
            if done.counted {
                sent += done.payload.len();
            }
            if done.opcode == Outgoing::Close {
                self.close_frame = CloseFrame::Written;
            }
        }
        self.written = u32::try_from(offset).expect("within a frame, at most MAX_FRAME_LEN");
        // One clock read a write, not one a frame: the outbox notes when it last moved.
        if sent > 0 {
            self.outbox.sent(sent);
        }
        // Written out: the buffer goes, so an idle connection holds none.
        if self.writing.is_empty() {
            self.writing = VecDeque::new();
        }
    }
}

/// Writes the handshake answer, the refusal's notice if it has one, then a close frame,
/// for a connection the relay refused.
async fn write_refusal<IO: AsyncWrite + Unpin>(mut io: IO, preface: Vec<u8>, refusal: ConnectionRefusal) {
    let mut answer = preface;
    let mut frame = |opcode: Outgoing, payload: &[u8]| {
        let mut header = [0u8; MAX_HEADER_LEN];
        let header_len = encode_header(opcode, false, payload.len(), &mut header);
        answer.extend_from_slice(&header[..header_len]);
        answer.extend_from_slice(payload);
    };
    if let Some(notice) = refusal.notice(now()) {
        frame(Outgoing::Text, &notice.payload);
    }
    frame(Outgoing::Close, &close_payload(refusal.close_code(), refusal.reason()));
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        io.write_all(&answer).await?;
        io.shutdown().await
    })
    .await;
}

/// Where a new connection's task runs, what tracks it for a graceful stop, and what
/// ends it when the stop runs out of time.
#[derive(Clone)]
pub struct Spawner {
    /// The tokio runtime the connections' tasks run on.
    pub runtime: Handle,
    /// Tracks the connections' tasks, so a graceful stop can wait for them.
    pub tasks: TaskTracker,
    abort: Arc<Mutex<CancellationToken>>,
    /// permessage-deflate, when the server offers it.
    compression: Option<CompressionConfig>,
    compression_totals: Arc<CompressionTotals>,
}

/// A connection that has passed its handshake.
pub struct Accepted<IO> {
    /// The upgraded socket.
    pub io: IO,
    /// Written before anything else: the `101` answer, when the caller has not sent it.
    pub preface: Vec<u8>,
    /// Bytes the client sent after its request, already read by whoever parsed it.
    pub head: Bytes,
    /// Where the connection goes: into a session, or into none.
    pub route: Route,
    /// Who the connection is, as admission found it.
    pub identity: Identity,
    /// permessage-deflate as the `101` answer agreed it.
    pub deflate: Option<Deflate>,
}

impl Spawner {
    /// Spawns on `runtime`; `compression` is the permessage-deflate the server offers
    /// (`None`: connections go uncompressed).
    pub fn new(runtime: Handle, compression: Option<CompressionConfig>) -> Self {
        Self { runtime, tasks: TaskTracker::new(), abort: Arc::default(), compression, compression_totals: Arc::default() }
    }

    /// The permessage-deflate a request's `Sec-WebSocket-Extensions` offers get, if any:
    /// its [`Deflate::response`] goes in the `101` answer and the connection into
    /// [`Accepted::deflate`].
    pub fn negotiate(&self, offers: Option<&str>) -> Option<Deflate> {
        crate::deflate::negotiate(offers, self.compression.as_ref()?)
    }

    /// permessage-deflate over this spawner's connections.
    pub fn compression(&self) -> &CompressionTotals {
        &self.compression_totals
    }

    /// Drops every connection task at once (after a graceful stop ran out of time).
    /// Connections spawned afterwards are not affected.
    pub fn abort_all(&self) {
        std::mem::take(&mut *self.abort.lock()).cancel();
    }

    /// Lets the connection into the relay and starts its task. A refused connection gets
    /// the handshake answer and then a close frame with the refusal's code and reason,
    /// as a browser needs to see them.
    pub fn spawn<IO>(&self, relay: &Arc<Relay>, accepted: Accepted<IO>) -> Result<ConnId, ConnectionRefusal>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Accepted { io, preface, head, route, identity, deflate } = accepted;
        let totals = &self.compression_totals;
        let compression = deflate.map(|deflate| Compression { deflate, totals: totals.clone() });
        let outbox = Arc::new(NativeOutbox::new(relay.config().max_queued_bytes, compression));
        match relay.open(route, identity, outbox.clone(), now()) {
            Ok(conn) => {
                if outbox.compression().is_some() {
                    totals.opened();
                }
                let abort = self.abort.lock().clone();
                let parts = Parts { conn, outbox, preface, head, abort };
                self.tasks.spawn_on(Connection::new(io, relay.clone(), parts), &self.runtime);
                Ok(conn)
            }
            Err(refusal) => {
                self.tasks.spawn_on(write_refusal(io, preface, refusal), &self.runtime);
                Err(refusal)
            }
        }
    }

    /// Answers the handshake, then closes at once with the refusal's code and reason,
    /// without asking the relay (it is shutting down).
    pub fn refuse<IO>(&self, accepted: Accepted<IO>, refusal: ConnectionRefusal)
    where
        IO: AsyncWrite + Unpin + Send + 'static,
    {
        self.tasks.spawn_on(write_refusal(accepted.io, accepted.preface, refusal), &self.runtime);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize, fill: u8) -> Out {
        Out { opcode: Outgoing::Binary, payload: Bytes::from(vec![fill; len]), counted: true, compressed: false }
    }

    /// The bytes a vectored write of `writing` sends, from `skip` on.
    fn gathered(writing: &VecDeque<Out>, skip: usize) -> Vec<u8> {
        let mut staging = Vec::new();
        let mut pieces = Pieces::default();
        pieces.gather(writing, skip, &mut staging);
        let mut slices = [IoSlice::new(&[]); 2 * WRITE_BATCH];
        let used = pieces.slices(writing, &staging, &mut slices);
        slices[..used].iter().flat_map(|slice| slice.iter().copied()).collect()
    }

    fn encoded(writing: &VecDeque<Out>) -> Vec<u8> {
        let mut bytes = Vec::new();
        for out in writing {
            let mut header = [0u8; MAX_HEADER_LEN];
            let len = encode_header(out.opcode, out.compressed, out.payload.len(), &mut header);
            bytes.extend_from_slice(&header[..len]);
            bytes.extend_from_slice(&out.payload);
        }
        bytes
    }

    #[test]
    fn a_write_sends_the_frames_in_order_from_wherever_the_last_one_stopped() {
        let writing: VecDeque<Out> = [frame(100, 1), frame(5000, 2), frame(10, 3), frame(COPY_UP_TO, 4), frame(COPY_UP_TO + 1, 5)].into();
        let whole = encoded(&writing);
        let first_len = header_len(100) + 100;
        for skip in [0, 1, 2, 50, first_len - 1] {
            assert_eq!(gathered(&writing, skip), whole[skip..], "skipping {skip}");
        }
        let rest: VecDeque<Out> = writing.into_iter().skip(1).collect();
        let whole = encoded(&rest);
        for skip in [0, 3, 4, 1000, 5003] {
            assert_eq!(gathered(&rest, skip), whole[skip..], "skipping {skip} into a long payload");
        }
    }

    /// tokio keeps a task in one cell, aligned to 128 bytes: a header, the scheduler and
    /// task id, the stage's tag and the future (ours in a task tracker's wrapper, 8 bytes
    /// more), and a trailer. 144 bytes of connection keep the cell at 256, not 384: with
    /// the socket's own 256, most of what an idle connection costs.
    #[test]
    fn an_idle_connection_fits_a_256_byte_task() {
        assert!(std::mem::size_of::<Connection<tokio::net::TcpStream>>() <= 144, "{} bytes", std::mem::size_of::<Connection<tokio::net::TcpStream>>());
    }

    #[test]
    fn a_write_copies_at_most_its_staging_and_sends_at_least_one_frame() {
        let many: VecDeque<Out> = (0..WRITE_BATCH).map(|i| frame(COPY_UP_TO, i as u8)).collect();
        let sent = gathered(&many, 0);
        let per_frame = header_len(COPY_UP_TO) + COPY_UP_TO;
        assert_eq!(sent.len(), STAGING_LEN / per_frame * per_frame);
        assert_eq!(sent, encoded(&many)[..sent.len()]);
        let huge: VecDeque<Out> = [frame(STAGING_LEN * 2, 9)].into();
        assert_eq!(gathered(&huge, 0), encoded(&huge));
    }
}
