//! What the relay tells the application: connections coming and going, sessions ending.

use crate::ids::{ConnId, SessionId};
use crate::session::SessionInfo;

/// Who a connection is, as shown to the app.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectionInfo {
    pub connection_id: ConnId,
    pub session_id: Option<SessionId>,
    pub client_id: String,
    pub user_id: Option<String>,
    pub organization_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Connected(ConnectionInfo),
    Disconnected { connection: ConnectionInfo, code: u16, reason: String },
    SessionCreated(SessionInfo),
    SessionDeleted { session_id: SessionId },
    SessionExpired { session_id: SessionId },
}

/// Receives events. Called from whichever thread routed the change, possibly while the
/// relay holds locks: an implementation queues the event and returns, and never calls
/// back into the relay.
pub trait EventSink: Send + Sync {
    fn emit(&self, event: Event);
}

/// For relays nobody listens to.
pub struct NoEvents;

impl EventSink for NoEvents {
    fn emit(&self, _event: Event) {}
}
