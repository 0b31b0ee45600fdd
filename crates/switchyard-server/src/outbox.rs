//! The native transport's [`Outbox`]: a bounded queue the relay pushes into from any
//! thread, drained by the connection's task. It is full as the core's slow-consumer rule
//! says ([`switchyard_core::refuses`]), counting what the socket has not taken yet.

use std::collections::VecDeque;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::Waker;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use switchyard_core::{refuses, Frame, FrameKind, Outbox, Pushed, Transport};

use crate::codec::{header_len, Outgoing, MAX_FRAME_LEN};
use crate::deflate::{CompressionTotals, Deflate};

/// Times how long frames wait in an outbox, for the relay latency histogram: the oldest
/// frame of one batch in [`LatencySample::EVERY`], so that the clock is read rarely on
/// the relay path however many recipients a message has. 16 bytes: the instant is kept
/// as nanoseconds since one instant all outboxes share.
#[derive(Default)]
pub struct LatencySample {
    batches: u32,
    oldest: Option<NonZeroU64>,
}

impl LatencySample {
    /// One batch in this many is timed.
    pub const EVERY: u32 = 16;

    /// The outbox went from empty to holding a frame.
    pub fn started(&mut self) {
        self.batches = self.batches.wrapping_add(1);
        if self.batches.is_multiple_of(Self::EVERY) {
            self.oldest = Some(NonZeroU64::new(EPOCH.elapsed().as_nanos() as u64).unwrap_or(NonZeroU64::MIN));
        }
    }

    /// The writer took what was queued: how long the sampled oldest frame waited.
    pub fn taken(&mut self) -> Option<Duration> {
        self.oldest.take().map(|oldest| EPOCH.elapsed().saturating_sub(Duration::from_nanos(oldest.get())))
    }
}

/// A frame waiting to be written.
pub struct Out {
    pub opcode: Outgoing,
    pub payload: Bytes,
    /// Counted in the outbox's unsent bytes (it came through the outbox).
    pub counted: bool,
    /// permessage-deflate compressed the payload (RSV1 goes on the frame).
    pub compressed: bool,
}

impl Out {
    /// A frame of the connection's own (a pong, a close), not counted in the outbox.
    pub fn control(opcode: Outgoing, payload: Bytes) -> Self {
        Self { opcode, payload, counted: false, compressed: false }
    }
}

/// permessage-deflate on one connection, and the server's totals it adds to.
pub struct Compression {
    pub deflate: Deflate,
    pub totals: Arc<CompressionTotals>,
}

/// What the relay and the connection's task share, under one lock: the task's waker is
/// here rather than in an `AtomicWaker` of its own, since a push takes the lock anyway.
struct Queue {
    frames: VecDeque<Out>,
    latency: LatencySample,
    /// Taken to wake the task; it registers again each time it runs.
    waker: Option<Waker>,
    /// Boxed: only a closing connection has one.
    close: Option<Box<(u16, String)>>,
    /// The bound on unsent bytes, in 32 bits (4 GiB is past any sensible one).
    capacity: u32,
    /// The close has been handed to the writer; nothing more is accepted.
    closed: bool,
}

/// What outboxes time their progress from: one instant for all, rather than one each.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Milliseconds since [`EPOCH`]: what outboxes time a socket's progress in.
pub(crate) fn elapsed_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64
}

/// What [`NativeOutbox::take`] found besides the frames.
pub struct Taken {
    /// How long the oldest frame taken had waited, when this batch was sampled.
    pub waited: Option<Duration>,
    pub close: Option<(u16, String)>,
}

/// Every connection has one, so it is kept to the allocator's 128-byte class (see the
/// test below).
pub struct NativeOutbox {
    queue: Mutex<Queue>,
    /// Bytes pushed and not yet written to the socket, the writer's own backlog included,
    /// so a client that stops reading fills the outbox however the writer batches.
    unsent: AtomicUsize,
    /// When the socket last took bytes (or the outbox was made), in ms since [`EPOCH`].
    last_progress_ms: AtomicU64,
    /// Boxed: most connections have none.
    compression: Option<Box<Compression>>,
}

impl NativeOutbox {
    /// An empty outbox bounded to `capacity` unsent bytes; `compression` when the connection
    /// negotiated permessage-deflate.
    pub fn new(capacity: usize, compression: Option<Compression>) -> Self {
        let queue = Queue {
            frames: VecDeque::new(),
            latency: LatencySample::default(),
            waker: None,
            close: None,
            capacity: u32::try_from(capacity).unwrap_or(u32::MAX),
            closed: false,
        };
        Self {
            compression: compression.map(Box::new),
            queue: Mutex::new(queue),
            unsent: AtomicUsize::new(0),
            last_progress_ms: AtomicU64::new(elapsed_ms()),
        }
    }

    /// permessage-deflate, when the connection negotiated it.
    pub fn compression(&self) -> Option<&Compression> {
        self.compression.as_deref()
    }

    /// Registers the connection task's waker, woken when there is something to write;
    /// returns whether a close has been asked for (taken or not), read under the same lock.
    pub fn register(&self, waker: &Waker) -> bool {
        let mut queue = self.queue.lock();
        if !queue.waker.as_ref().is_some_and(|registered| registered.will_wake(waker)) {
            queue.waker = Some(waker.clone());
        }
        queue.closed || queue.close.is_some()
    }

    /// Moves every queued frame to the end of `writing`, in order, and returns the close
    /// that was asked for, if any: it goes out after those frames, and nothing after it.
    /// An empty `writing` takes the queue's buffer whole, and the queue starts again with
    /// none, so an idle connection holds no buffer on either side.
    pub fn take(&self, writing: &mut VecDeque<Out>) -> Taken {
        let mut queue = self.queue.lock();
        match writing.is_empty() {
            true => *writing = std::mem::take(&mut queue.frames),
            false => writing.append(&mut queue.frames),
        }
        let close = queue.close.take().map(|close| *close);
        if close.is_some() {
            queue.closed = true;
        }
        Taken { waited: queue.latency.taken(), close }
    }

    /// Whether frames wait that the socket has not taken.
    pub fn has_unsent(&self) -> bool {
        self.unsent.load(Ordering::Relaxed) > 0
    }

    /// The writer wrote these payload bytes to the socket.
    pub fn sent(&self, bytes: usize) {
        self.unsent.fetch_sub(bytes, Ordering::Relaxed);
        self.last_progress_ms.store(elapsed_ms(), Ordering::Relaxed);
    }
    /// Queues a frame and wakes the writer if it was idle; `bounded` refuses it past the
    /// bound (a replay is not).
    fn enqueue(&self, frame: Frame, bounded: bool) -> Pushed {
        let original_len = frame.len();
        let queued = self.encode(frame);
        let len = queued.payload.len();
        if header_len(len) + len > MAX_FRAME_LEN {
            return Pushed::Full;
        }
        let waker = {
            let mut queue = self.queue.lock();
            if queue.closed || queue.close.is_some() {
                return Pushed::Closed;
            }
            let stalled_ms = || elapsed_ms().saturating_sub(self.last_progress_ms.load(Ordering::Relaxed));
            if bounded && refuses(queue.capacity as usize, self.unsent.load(Ordering::Relaxed), len, stalled_ms) {
                return Pushed::Full;
            }
            self.unsent.fetch_add(len, Ordering::Relaxed);
            queue.frames.push_back(queued);
            match queue.frames.len() == 1 {
                true => {
                    queue.latency.started();
                    queue.waker.take()
                }
                false => None,
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        if let Some(compression) = &self.compression {
            compression.totals.sent(original_len, len + header_len(len));
        }
        Pushed::Queued
    }

    /// Compresses a message's payload when the connection negotiated permessage-deflate.
    fn encode(&self, frame: Frame) -> Out {
        let opcode = frame.kind.into();
        match &self.compression {
            Some(compression) if frame.kind != FrameKind::Ping => {
                let (payload, compressed) = compression.deflate.encode(&frame.payload);
                Out { opcode, payload, counted: true, compressed }
            }
            _ => Out { opcode, payload: frame.payload, counted: true, compressed: false },
        }
    }
}

impl Outbox for NativeOutbox {
    fn transport(&self) -> Transport {
        Transport::Native
    }

    fn push(&self, frame: Frame) -> Pushed {
        self.enqueue(frame, true)
    }

    fn push_replay(&self, frame: Frame) {
        self.enqueue(frame, false);
    }

    fn close(&self, code: u16, reason: &str) {
        let waker = {
            let mut queue = self.queue.lock();
            if queue.closed || queue.close.is_some() {
                return;
            }
            queue.close = Some(Box::new((code, reason.to_owned())));
            queue.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stalled_socket_is_bounded_by_unsent_bytes() {
        let outbox = NativeOutbox::new(10, None);
        std::thread::sleep(Duration::from_millis(switchyard_core::STALL_GRACE_MS));
        assert_eq!(outbox.push(Frame::binary(vec![0; 6])), Pushed::Queued);
        assert_eq!(outbox.push(Frame::binary(vec![0; 6])), Pushed::Full);
        outbox.take(&mut VecDeque::new());
        assert_eq!(outbox.push(Frame::binary(vec![0; 6])), Pushed::Full, "taken but unsent still counts");
        outbox.sent(6);
        assert_eq!(outbox.push(Frame::binary(vec![0; 6])), Pushed::Queued);
    }

    #[test]
    fn a_socket_that_took_something_lately_may_hold_twice_the_bound() {
        let outbox = NativeOutbox::new(10, None);
        for _ in 0..3 {
            assert_eq!(outbox.push(Frame::binary(vec![0; 6])), Pushed::Queued, "a late writer is not a slow client");
        }
        assert_eq!(outbox.push(Frame::binary(vec![0; 6])), Pushed::Full, "past twice the bound");
    }

    #[test]
    fn an_outbox_fits_the_allocators_128_byte_class() {
        // An `Arc` adds its two counts.
        let size = std::mem::size_of::<NativeOutbox>() + 16;
        assert!(size <= 128, "{size} bytes");
    }

    #[test]
    fn a_lone_frame_larger_than_the_bound_goes_out() {
        let outbox = NativeOutbox::new(10, None);
        assert_eq!(outbox.push(Frame::binary(vec![0; 50])), Pushed::Queued);
    }

    #[test]
    fn close_comes_after_queued_frames_and_nothing_after_it() {
        let outbox = NativeOutbox::new(100, None);
        outbox.push(Frame::text("a"));
        outbox.close(1000, "bye");
        assert_eq!(outbox.push(Frame::text("b")), Pushed::Closed);
        let mut taken = VecDeque::new();
        assert_eq!(outbox.take(&mut taken).close, Some((1000, "bye".to_owned())));
        assert_eq!(taken.iter().map(|out| &out.payload[..]).collect::<Vec<_>>(), vec![b"a"]);
        outbox.close(1001, "again");
        assert_eq!(outbox.take(&mut taken).close, None);
    }
}
