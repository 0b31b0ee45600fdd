//! The seam between the relay and a transport: where a connection's outgoing frames go.

use crate::frame::Frame;

/// What happened to a pushed frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
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
}

impl Transport {
    pub const ALL: [Transport; 2] = [Transport::Native, Transport::Bridge];

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Native => "native",
            Transport::Bridge => "bridge",
        }
    }
}

/// One per connection, implemented by its transport. Bounded in bytes: an outbox never
/// grows without limit, it answers [`Pushed::Full`] instead.
///
/// The relay may call these while it holds a lock on the connection's session, so an
/// implementation must only queue and wake its writer, never call back into the relay.
pub trait Outbox: Send + Sync {
    /// Which transport carries the connection, for the metrics labelled by it.
    fn transport(&self) -> Transport;
    fn push(&self, frame: Frame) -> Pushed;
    /// Queues a replayed publication past the byte bound: a replay is bounded by the
    /// history kept, and is not the client reading slowly.
    fn push_replay(&self, frame: Frame);
    /// Sends a close frame with this code and reason after what is already queued.
    fn close(&self, code: u16, reason: &str);
}
