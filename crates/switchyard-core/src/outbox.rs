//! The seam between the relay and a transport: where a connection's outgoing frames go.

use crate::frame::Frame;

/// What happened to a pushed frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// The frame waits in the outbox for its socket.
    Queued,
    /// The outbox is at its byte bound; the relay applies the slow-consumer policy.
    Full,
    /// The connection is already closing; the frame is dropped.
    Closed,
}

/// How a connection reaches the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Transport {
    /// Switchyard's own WebSocket server owns the socket: `attach()` or the binary.
    Native,
    /// A `ws` socket in Node.js, handed over with `handleUpgrade()`.
    Bridge,
    /// A Server-Sent Events stream with POST for sending, where a WebSocket cannot get
    /// through (written by Rust, or by Node through `eventStreamHandler()`).
    EventStream,
}

impl Transport {
    /// Every transport, in the order the counters by transport keep them.
    pub const ALL: [Transport; 3] = [Transport::Native, Transport::Bridge, Transport::EventStream];

    /// The name the metrics label it by.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Native => "native",
            Transport::Bridge => "bridge",
            Transport::EventStream => "sse",
        }
    }
}

/// How long a queue past its bound may go without its socket taking anything before its
/// client counts as slow.
pub const STALL_GRACE_MS: u64 = 1000;

/// The slow-consumer rule every outbox follows: whether `len` more bytes must be refused
/// when `held` bytes wait unsent against a bound of `capacity`, the socket having taken
/// nothing for the last `stalled_ms()` milliseconds (asked only past the bound).
///
/// A queue is full when its client is slow, not when the writer is late: past the bound,
/// a frame is still queued, up to twice the bound, as long as the socket took something
/// within [`STALL_GRACE_MS`]. On a busy machine the writer (a tokio task, or the
/// JavaScript thread for a bridge socket) can fall behind for milliseconds, and a client
/// reading at full speed must not be closed as a slow consumer for it. One frame larger
/// than the bound still goes out when nothing else waits.
pub fn refuses(capacity: usize, held: usize, len: usize, stalled_ms: impl FnOnce() -> u64) -> bool {
    if held == 0 || held + len <= capacity {
        return false;
    }
    held + len > capacity.saturating_mul(2) || stalled_ms() >= STALL_GRACE_MS
}

/// One per connection, implemented by its transport. Bounded in bytes: an outbox never
/// grows without limit, it answers [`Pushed::Full`] instead, as [`refuses`] decides.
///
/// The relay may call these while it holds a lock on the connection's session, so an
/// implementation must only queue and wake its writer, never call back into the relay.
pub trait Outbox: Send + Sync {
    /// Which transport carries the connection, for the metrics labelled by it.
    fn transport(&self) -> Transport;
    /// Queues a frame within the byte bound, or says why it could not.
    fn push(&self, frame: Frame) -> Pushed;
    /// Queues a replayed publication past the byte bound: a replay is bounded by the
    /// history kept, and is not the client reading slowly.
    fn push_replay(&self, frame: Frame);
    /// Sends a close frame with this code and reason after what is already queued.
    fn close(&self, code: u16, reason: &str);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_past_its_bound_is_full_once_stalled_or_at_twice_the_bound() {
        assert!(!refuses(10, 0, 50, || u64::MAX), "one frame larger than the bound goes out alone");
        assert!(!refuses(10, 6, 4, || u64::MAX), "within the bound");
        assert!(!refuses(10, 6, 6, || 0), "a socket that took something lately may go past it");
        assert!(refuses(10, 6, 6, || STALL_GRACE_MS), "a stalled one may not");
        assert!(refuses(10, 18, 6, || 0), "nor past twice the bound");
    }
}
