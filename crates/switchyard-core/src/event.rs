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
    /// The id the relay gave the connection.
    pub connection_id: ConnId,
    /// The session it is in; `None` for a sessionless connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<SessionId>,
    /// How it is named to others: the app's `clientId`, else the first one the client sent,
    /// else its connection id.
    pub client_id: String,
    /// The user its identity names, as the app or a verified token gave it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The organization its identity names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
    /// The app's own data about the connection, from its identity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

/// Something the app hears of through its [`EventSink`].
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A connection was let in (and joined its session, when it names one).
    Connected(ConnectionInfo),
    /// A connection closed, by either side.
    Disconnected {
        /// Who it was.
        connection: ConnectionInfo,
        /// The WebSocket close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// A session was created through this node's [`Relay::create_session`](crate::Relay::create_session).
    SessionCreated(SessionInfo),
    /// A session was deleted, here or by another node of the cluster; its members here
    /// were closed.
    SessionDeleted {
        /// The session deleted.
        session_id: SessionId,
        /// Deleted through this node (one node of a cluster says so).
        here: bool,
    },
    /// A session outlived its lifetime and was removed; its members were closed.
    SessionExpired {
        /// The session that expired.
        session_id: SessionId,
        /// Created through this node (one node of a cluster says so).
        here: bool,
    },
    /// A connection's token expires within the refresh window: it was sent
    /// `token_expiring`, and the host may renew it ([`Relay::renew`](crate::Relay::renew)).
    TokenExpiring {
        /// Whose token.
        connection: ConnectionInfo,
        /// When it expires.
        expires_at: crate::ids::Millis,
    },
    /// A channel has its first member on this node.
    ChannelOccupied {
        /// The channel's name.
        channel: String,
    },
    /// A channel's last member on this node left.
    ChannelVacated {
        /// The channel's name.
        channel: String,
    },
    /// A `request` for the app's handler; answer with [`Relay::respond`](crate::Relay::respond).
    /// `request_id` and `payload` are raw JSON.
    Request {
        /// Who sent it.
        connection: ConnectionInfo,
        /// Its `requestId`.
        request_id: String,
        /// Its `payload`; `null` when it had none.
        payload: String,
    },
    /// A message of a type the app watches ([`Relay::watch`](crate::Relay::watch)), as sent.
    Message {
        /// Who sent it.
        connection: ConnectionInfo,
        /// Its `type`.
        kind: String,
        /// The message's bytes, as the client sent them.
        message: Bytes,
    },
    /// A session that keeps a stream has a new publication: what long polls for its
    /// history wait for.
    Published {
        /// The session published to.
        session_id: SessionId,
        /// The publication's offset in the session's stream.
        offset: u64,
    },
}

/// Receives events. Called from whichever thread routed the change, possibly while the
/// relay holds locks: an implementation queues the event and returns, and never calls
/// back into the relay.
pub trait EventSink: Send + Sync {
    /// Takes one event, to be handled later.
    fn emit(&self, event: Event);
}

/// For relays nobody listens to.
pub struct NoEvents;

impl EventSink for NoEvents {
    fn emit(&self, _event: Event) {}
}
