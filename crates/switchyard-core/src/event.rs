//! What the relay tells the application: connections coming and going, sessions ending,
//! requests to answer, and messages of the types the app watches.

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use crate::ids::{ConnId, SessionId};
use crate::session::SessionInfo;

/// Who a connection is, as shown to the app (serialized as the addon's `ConnectionEvent`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionInfo {
    pub connection_id: ConnId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<SessionId>,
    pub client_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Connected(ConnectionInfo),
    Disconnected { connection: ConnectionInfo, code: u16, reason: String },
    SessionCreated(SessionInfo),
    SessionDeleted { session_id: SessionId },
    SessionExpired { session_id: SessionId },
    /// A `request` for the app's handler; answer with [`Relay::respond`](crate::Relay::respond).
    /// `request_id` and `payload` are raw JSON.
    Request { connection: ConnectionInfo, request_id: String, payload: String },
    /// A message of a type the app watches ([`Relay::watch`](crate::Relay::watch)), as sent.
    Message { connection: ConnectionInfo, kind: String, message: Bytes },
    /// A session that keeps a stream has a new publication: what long polls for its
    /// history wait for.
    Published { session_id: SessionId, offset: u64 },
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
