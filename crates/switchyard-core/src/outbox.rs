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

/// One per connection, implemented by its transport. Bounded in bytes: an outbox never
/// grows without limit, it answers [`Pushed::Full`] instead.
///
/// The relay may call these while it holds a lock on the connection's session, so an
/// implementation must only queue and wake its writer, never call back into the relay.
pub trait Outbox: Send + Sync {
    fn push(&self, frame: Frame) -> Pushed;
    /// Sends a close frame with this code and reason after what is already queued.
    fn close(&self, code: u16, reason: &str);
}
