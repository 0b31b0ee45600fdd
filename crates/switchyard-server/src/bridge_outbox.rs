//! The bridge transport's [`Outbox`]: frames for a socket the host writes itself, on
//! its own event loop (the Node addon's `ws` sockets).
//!
//! The relay pushes into it from any thread, and it only queues, putting itself once in
//! the [`HostQueue`]; the host's loop then takes the frames and writes them. The host
//! reports what its socket still holds unwritten (`ws`'s `bufferedAmount`), which counts
//! against the bound, so a client that stops reading fills the outbox and meets the
//! slow-consumer policy instead of growing the socket's buffer without limit. It is full
//! as the core's slow-consumer rule says ([`switchyard_core::refuses`]), as a native
//! connection's is.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use switchyard_core::{refuses, ConnId, Frame, Outbox, Pushed, Transport, STALL_GRACE_MS};

use crate::host_queue::HostQueue;
use crate::outbox::elapsed_ms;
use crate::LatencySample;

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
    /// Already waiting in the [`HostQueue`] for a flush.
    scheduled: bool,
    /// When `backlog` was read, in ms since [`crate::outbox`]'s epoch.
    read_ms: u64,
    /// Since when the readings have shown bytes waiting in `ws` and none written.
    stalled_since_ms: Option<u64>,
}

/// The bridge transport's outbox: frames for a socket the host writes on its own loop.
pub struct BridgeOutbox {
    me: Weak<BridgeOutbox>,
    pending: Arc<HostQueue<BridgeOutbox>>,
    capacity: usize,
    /// A `ws` socket's, or an event stream's written through Node.
    transport: Transport,
    /// Set once the relay has given the connection its id.
    conn: OnceLock<ConnId>,
    queue: Mutex<Queue>,
}

impl BridgeOutbox {
    /// An empty outbox bounded to `capacity` bytes, which puts itself in `pending` when it
    /// has something to flush; `transport` is what its stats count it as.
    pub fn new(pending: Arc<HostQueue<BridgeOutbox>>, capacity: usize, transport: Transport) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            pending,
            capacity,
            transport,
            conn: OnceLock::new(),
            queue: Mutex::default(),
        })
    }

    /// Records the id the relay gave the connection; only the first call counts.
    pub fn set_conn(&self, conn: ConnId) {
        let _ = self.conn.set(conn);
    }

    /// The connection's id; `None` until the relay has let it in.
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
    pub fn take(&self) -> (VecDeque<Frame>, Option<(u16, String)>, Option<Duration>) {
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
    pub fn backlog_due(&self) -> bool {
        let queue = self.queue.lock();
        queue.backlog > 0 || queue.unchecked >= self.capacity / 8
    }

    /// What `ws` still holds. What it held before and was given since, less this, it
    /// wrote; a socket that wrote nothing with bytes waiting has stalled since then.
    pub fn set_backlog(&self, bytes: usize) {
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
        self.transport
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

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox(capacity: usize) -> Arc<BridgeOutbox> {
        BridgeOutbox::new(Arc::new(HostQueue::default()), capacity, Transport::Bridge)
    }

    #[test]
    fn what_the_socket_holds_unwritten_counts_against_the_bound() {
        let outbox = outbox(10);
        assert_eq!(outbox.push(Frame::binary(vec![0; 6])), Pushed::Queued);
        outbox.take();
        outbox.set_backlog(6);
        std::thread::sleep(Duration::from_millis(STALL_GRACE_MS));
        outbox.set_backlog(6);
        assert_eq!(outbox.push(Frame::binary(vec![0; 6])), Pushed::Full, "a socket that wrote nothing for the grace");
        outbox.set_backlog(0);
        assert_eq!(outbox.push(Frame::binary(vec![0; 6])), Pushed::Queued, "the socket drained");
    }

    #[test]
    fn a_socket_that_wrote_lately_may_hold_twice_the_bound() {
        let outbox = outbox(10);
        for _ in 0..3 {
            assert_eq!(outbox.push(Frame::binary(vec![0; 6])), Pushed::Queued);
        }
        assert_eq!(outbox.push(Frame::binary(vec![0; 6])), Pushed::Full, "past twice the bound");
    }

    #[test]
    fn each_outbox_is_queued_for_the_host_once_until_taken() {
        let queue = Arc::new(HostQueue::default());
        let outbox = BridgeOutbox::new(queue.clone(), 100, Transport::Bridge);
        outbox.push(Frame::text("a"));
        outbox.push(Frame::text("b"));
        assert_eq!(queue.take().outboxes.len(), 1);
        let (frames, close, _) = outbox.take();
        assert_eq!((frames.len(), close), (2, None));
        outbox.close(1000, "bye");
        assert_eq!(queue.take().outboxes.len(), 1);
        assert_eq!(outbox.take().1, Some((1000, "bye".to_owned())));
        assert_eq!(outbox.push(Frame::text("c")), Pushed::Closed);
    }
}
