//! Errors as types: each maps to a protocol error code or a WebSocket close code.

use thiserror::Error;

/// WebSocket close codes used by the relay (docs/reference/close-codes.md).
pub mod close_code {
    /// Sent when the session was deleted or expired, or a reconnect named this connection as its
    /// `previous`.
    pub const NORMAL: u16 = 1000;
    /// Sent when the server is stopping, or nothing was heard from the client for
    /// `heartbeatTimeoutMs`.
    pub const GOING_AWAY: u16 = 1001;
    /// Sent for a frame that breaks RFC 6455 (unmasked, reserved bits, bad opcode).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// Set by a transport when the peer sent none; never sent on the wire.
    pub const NO_STATUS: u16 = 1005;
    /// Set by a transport when the connection dropped without a close frame; never sent.
    pub const ABNORMAL: u16 = 1006;
    /// Sent for a text frame that is not valid UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// Sent when a connection is refused (session not found or full, connection limit,
    /// unauthorized), goes over its message rate, or its token expired unrefreshed.
    pub const POLICY: u16 = 1008;
    /// Sent for a message over `maxMessageBytes`.
    pub const TOO_LARGE: u16 = 1009;
    /// Reserved for the server's own failures; no path sends it today.
    pub const INTERNAL: u16 = 1011;
    /// Sent by a server draining before it stops (the binary's `--shutdown-grace`): the
    /// client should reconnect, and will reach another node.
    pub const SERVICE_RESTART: u16 = 1012;
    /// Sent to a slow consumer, whose outgoing queue stayed full.
    pub const TRY_AGAIN_LATER: u16 = 1013;

    /// Whether a close frame may carry `code` (RFC 6455 section 7.4 and IANA's registry):
    /// 1000 to 1003 and 1007 to 1014, or 3000 to 4999 for libraries and applications.
    /// 1004 is reserved, 1005, 1006 and 1015 only ever stand for what was not sent.
    pub fn may_be_sent(code: u16) -> bool {
        matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

/// Why a session could not be created.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SessionError {
    /// The id is empty, longer than 128 characters, or has `/`, `?`, `#`, whitespace or a
    /// control character.
    #[error("invalid session id: {0}")]
    InvalidId(String),
    /// A session of this id exists already.
    #[error("session {0:?} already exists")]
    AlreadyExists(String),
    /// An option is out of range: `expiresIn` too long, `maxClients` of 0, or bad history
    /// bounds.
    #[error("invalid session option: {0}")]
    InvalidOption(String),
    /// `maxSessions` sessions exist already.
    #[error("there are {0} sessions, the most allowed (maxSessions); delete some or let them expire")]
    TooMany(usize),
    /// In a cluster whose Redis is unreachable: the id could not be checked as unique,
    /// nor the other nodes told.
    #[error("UNAVAILABLE: the cluster's Redis is unreachable; try again")]
    Unavailable,
}

/// Why a connection was not let into the relay; the transport closes it with
/// [`ConnectionRefusal::close_code`] and [`ConnectionRefusal::reason`].
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionRefusal {
    /// No such session, or it has expired (close 1008).
    #[error("Session not found")]
    SessionNotFound,
    /// The session already has its `maxClients` members (close 1008).
    #[error("Session full")]
    SessionFull,
    /// The server is stopping, or stopped (close 1001).
    #[error("Server shutting down")]
    ShuttingDown,
    /// The user already holds `maxConnectionsPerUser` connections (close 1008).
    #[error("Connection limit")]
    ConnectionLimit,
    /// Too many new connections from one address; refused before the upgrade (HTTP 429).
    #[error("Too many connections")]
    TooManyConnections,
    /// No valid token; refused before the upgrade (HTTP 401) where the transport can.
    #[error("Unauthorized")]
    Unauthorized,
}

impl ConnectionRefusal {
    /// The close code the connection is refused with.
    pub fn close_code(self) -> u16 {
        match self {
            ConnectionRefusal::SessionNotFound
            | ConnectionRefusal::SessionFull
            | ConnectionRefusal::ConnectionLimit
            | ConnectionRefusal::TooManyConnections
            | ConnectionRefusal::Unauthorized => close_code::POLICY,
            ConnectionRefusal::ShuttingDown => close_code::GOING_AWAY,
        }
    }

    /// The close frame's reason.
    pub fn reason(self) -> &'static str {
        match self {
            ConnectionRefusal::SessionNotFound => "Session not found",
            ConnectionRefusal::SessionFull => "Session full",
            ConnectionRefusal::ShuttingDown => "Server shutting down",
            ConnectionRefusal::ConnectionLimit => "Connection limit",
            ConnectionRefusal::TooManyConnections => "Rate limit exceeded",
            ConnectionRefusal::Unauthorized => "Unauthorized",
        }
    }
}

/// Codes of `error` messages sent to a client (docs/protocol.md, "Errors"). The message
/// is refused; the connection stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Not a JSON object with a string `type`, or a field of the wrong shape (`INVALID_MESSAGE`).
    InvalidMessage,
    /// A relay or control message from a connection that is not in a session (`NO_SESSION`).
    NoSession,
    /// A message to a channel its sender has not joined (`NOT_IN_CHANNEL`).
    NotInChannel,
    /// A join the channel rules refuse, or one channel too many (`CHANNEL_FORBIDDEN`).
    ChannelForbidden,
    /// An awareness message for a user other than the connection's own (`FORBIDDEN`).
    Forbidden,
    /// A `state_update` from a passive member that asked for an acknowledgement (`NOT_ACTIVE`).
    NotActive,
    /// The user already holds `maxConnectionsPerUser` connections; the connection is then
    /// closed (`CONNECTION_LIMIT`).
    ConnectionLimit,
    /// A `register` of a window past the most one user may have (`WINDOW_LIMIT`).
    WindowLimit,
    /// The connection, or its user, is over its message rate; the message was dropped
    /// (`RATE_LIMITED`).
    RateLimited,
    /// A `request` when the application has no request handler (`NO_HANDLER`).
    NoHandler,
    /// The request handler failed, or too many requests already wait on the connection
    /// (`REQUEST_FAILED`).
    RequestFailed,
    /// The request handler did not answer within `requestTimeoutMs` (`REQUEST_TIMEOUT`).
    RequestTimeout,
    /// The application refused a member's message (`PUBLISH_REFUSED`).
    PublishRefused,
    /// A `refresh` whose token is bad, expired, for another user or no later (`INVALID_TOKEN`).
    InvalidToken,
    /// What the message needs is out of reach (`UNAVAILABLE`): the cluster's Redis, or the
    /// application, whose hook failed or did not answer within `hookTimeoutMs`.
    Unavailable,
}

impl ErrorCode {
    /// The code as the wire carries it, such as `"INVALID_MESSAGE"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidMessage => "INVALID_MESSAGE",
            ErrorCode::NoSession => "NO_SESSION",
            ErrorCode::NotInChannel => "NOT_IN_CHANNEL",
            ErrorCode::ChannelForbidden => "CHANNEL_FORBIDDEN",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::NotActive => "NOT_ACTIVE",
            ErrorCode::ConnectionLimit => "CONNECTION_LIMIT",
            ErrorCode::WindowLimit => "WINDOW_LIMIT",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::NoHandler => "NO_HANDLER",
            ErrorCode::RequestFailed => "REQUEST_FAILED",
            ErrorCode::RequestTimeout => "REQUEST_TIMEOUT",
            ErrorCode::PublishRefused => "PUBLISH_REFUSED",
            ErrorCode::InvalidToken => "INVALID_TOKEN",
            ErrorCode::Unavailable => "UNAVAILABLE",
        }
    }

    /// The message sent when nothing more specific is known.
    pub fn message(self) -> &'static str {
        match self {
            ErrorCode::InvalidMessage => r#"Invalid message format: expected a JSON object with a string "type", such as {"type":"chat","text":"hello"}"#,
            ErrorCode::NoSession => "This connection is not in a session",
            ErrorCode::NotInChannel => "Join the channel before publishing to it",
            ErrorCode::ChannelForbidden => "This channel may not be joined",
            ErrorCode::Forbidden => "Identity mismatch",
            ErrorCode::NotActive => "Only the active member may do this",
            ErrorCode::ConnectionLimit => "Maximum connections per user exceeded",
            ErrorCode::WindowLimit => "Maximum windows per user exceeded; deregister one first",
            ErrorCode::RateLimited => "Too many messages; this one was dropped",
            ErrorCode::NoHandler => "No request handler is registered",
            ErrorCode::RequestFailed => "The request failed",
            ErrorCode::RequestTimeout => "The request was not answered in time",
            ErrorCode::PublishRefused => "The application refused this message",
            ErrorCode::InvalidToken => "The token was refused; nothing changed",
            ErrorCode::Unavailable => "The cluster's Redis is unreachable; try again",
        }
    }
}

/// Why the relay refused one message: a code and what to tell the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRejection {
    /// What kind of refusal it is.
    pub code: ErrorCode,
    /// The error's `message`, for people to read.
    pub message: std::borrow::Cow<'static, str>,
}

impl From<ErrorCode> for MessageRejection {
    fn from(code: ErrorCode) -> Self {
        Self { code, message: code.message().into() }
    }
}

impl MessageRejection {
    /// A refusal with a message more specific than the code's default.
    pub fn new(code: ErrorCode, message: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        Self { code, message: message.into() }
    }
}
