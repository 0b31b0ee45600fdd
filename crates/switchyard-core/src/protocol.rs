//! The messages the relay itself writes (docs/protocol.md), each serialized once however many
//! connections receive it.

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::error::{ErrorCode, ConnectionRefusal, MessageRejection};
use crate::frame::Frame;
use crate::ids::Millis;
use crate::streams::Position;

pub const PROTOCOL_VERSION: u32 = 1;
/// The `clientId` the server uses for itself.
pub const SERVER_CLIENT_ID: &str = "relay-server";

fn to_frame(message: &impl Serialize) -> Frame {
    Frame::text(Bytes::from(serde_json::to_vec(message).expect("protocol messages serialize")))
}

#[derive(Serialize)]
struct ClientConnected<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "clientId")]
    client_id: &'a str,
    #[serde(rename = "connectionId")]
    connection_id: &'a str,
    #[serde(rename = "sessionId", skip_serializing_if = "Option::is_none")]
    session_id: Option<&'a str>,
    timestamp: Millis,
    protocol_version: u32,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    stream: Option<StreamPlace<'a>>,
}

/// What a welcome or `CHANNEL_JOINED` says of the stream, to a connection that asked for
/// positions: its latest position, and whether what the connection missed follows.
pub struct WelcomePosition<'a> {
    pub position: &'a Position,
    /// `None` when it did not ask to recover.
    pub recovered: Option<bool>,
}

#[derive(Serialize)]
struct StreamPlace<'a> {
    epoch: &'a str,
    offset: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    recovered: Option<bool>,
}

impl<'a> From<WelcomePosition<'a>> for StreamPlace<'a> {
    fn from(place: WelcomePosition<'a>) -> Self {
        Self { epoch: &place.position.epoch, offset: place.position.offset, recovered: place.recovered }
    }
}

/// Sent to a newcomer: it names the server, its own connection and the session, and with
/// positions the stream's latest.
pub fn welcome(connection_id: &str, session_id: &str, stream: Option<WelcomePosition>, now: Millis) -> Frame {
    to_frame(&ClientConnected {
        kind: "client_connected",
        client_id: SERVER_CLIENT_ID,
        connection_id,
        session_id: Some(session_id),
        timestamp: now,
        protocol_version: PROTOCOL_VERSION,
        stream: stream.map(StreamPlace::from),
    })
}

/// Sent to the other members when someone joins.
pub fn client_connected(client_id: &str, connection_id: &str, now: Millis) -> Frame {
    to_frame(&ClientConnected {
        kind: "client_connected",
        client_id,
        connection_id,
        session_id: None,
        timestamp: now,
        protocol_version: PROTOCOL_VERSION,
        stream: None,
    })
}

#[derive(Serialize)]
struct RoleData {
    role: &'static str,
}

#[derive(Serialize)]
struct ClientDisconnected<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "clientId")]
    client_id: &'a str,
    #[serde(rename = "connectionId")]
    connection_id: &'a str,
    data: RoleData,
    timestamp: Millis,
    protocol_version: u32,
}

/// Sent to the other members when someone leaves; `was_active` when it held control.
pub fn client_disconnected(client_id: &str, connection_id: &str, was_active: bool, now: Millis) -> Frame {
    to_frame(&ClientDisconnected {
        kind: "client_disconnected",
        client_id,
        connection_id,
        data: RoleData { role: if was_active { "active" } else { "passive" } },
        timestamp: now,
        protocol_version: PROTOCOL_VERSION,
    })
}

/// What an `error` answers, so that the client that caused it can read it: its casing
/// and ids, and the offending message itself.
#[derive(Clone, Copy, Debug, Default)]
pub struct Offending<'a> {
    /// The channel manager's clients speak upper-case types; they get `ERROR`, with
    /// `"channel":"error"` and `data.originalMessage`.
    pub upper_case: bool,
    pub request_id: Option<&'a RawValue>,
    pub correlation_id: Option<&'a str>,
    /// The offending message's bytes, for `originalMessage`.
    pub original: Option<&'a [u8]>,
}

/// The most of a message that is not JSON that `originalMessage` repeats.
const MAX_ORIGINAL_TEXT: usize = 1024;

/// The offending message as `originalMessage` shows it: as sent when it is JSON, else as
/// a string of (at most 1 KiB of) its text.
enum Original<'a> {
    Json(&'a RawValue),
    Text(String),
}

impl Serialize for Original<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Original::Json(raw) => raw.serialize(serializer),
            Original::Text(text) => serializer.serialize_str(text),
        }
    }
}

impl<'a> Original<'a> {
    fn of(bytes: &'a [u8]) -> Self {
        if let Some(raw) = std::str::from_utf8(bytes).ok().and_then(|text| serde_json::from_str::<&RawValue>(text).ok()) {
            return Original::Json(raw);
        }
        let mut end = bytes.len().min(MAX_ORIGINAL_TEXT);
        while end > 0 && end < bytes.len() && (bytes[end] & 0b1100_0000) == 0b1000_0000 {
            end -= 1;
        }
        Original::Text(String::from_utf8_lossy(&bytes[..end]).into_owned())
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'static str,
    message: &'a str,
    #[serde(rename = "requestId", skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a RawValue>,
    #[serde(rename = "correlationId", skip_serializing_if = "Option::is_none")]
    correlation_id: Option<&'a str>,
    #[serde(rename = "originalMessage", skip_serializing_if = "Option::is_none")]
    original_message: Option<Original<'a>>,
}

#[derive(Serialize)]
struct ErrorMessage<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'static str>,
    #[serde(rename = "clientId")]
    client_id: &'static str,
    data: ErrorBody<'a>,
    payload: ErrorBody<'a>,
    timestamp: Millis,
    protocol_version: u32,
}

/// An `error` that every kind of client reads (docs/protocol.md, "Errors"): the original
/// relay client reads `data.message`, awareness clients `payload.code`, channel-manager
/// clients `ERROR` with `data.message`.
pub fn error(rejection: &MessageRejection, offending: Offending, now: Millis) -> Frame {
    let correlation_id = if offending.request_id.is_some() { None } else { offending.correlation_id };
    let body = |original_message| ErrorBody {
        code: rejection.code.as_str(),
        message: &rejection.message,
        request_id: offending.request_id,
        correlation_id,
        original_message,
    };
    let original = offending.original.filter(|_| offending.upper_case).map(Original::of);
    to_frame(&ErrorMessage {
        kind: if offending.upper_case { "ERROR" } else { "error" },
        channel: offending.upper_case.then_some("error"),
        client_id: SERVER_CLIENT_ID,
        data: body(original),
        payload: body(None),
        timestamp: now,
        protocol_version: PROTOCOL_VERSION,
    })
}

impl ConnectionRefusal {
    /// The message a refused client reads before the close frame, when there is one.
    pub fn notice(self, now: Millis) -> Option<Frame> {
        match self {
            ConnectionRefusal::ConnectionLimit => Some(error(&ErrorCode::ConnectionLimit.into(), Offending::default(), now)),
            _ => None,
        }
    }
}

/// Whether a message type is written in upper case (`JOIN_CHANNEL`, `PING`), as the
/// channel manager's clients write theirs.
pub fn is_upper_case(kind: &str) -> bool {
    kind.bytes().any(|b| b.is_ascii_uppercase()) && !kind.bytes().any(|b| b.is_ascii_lowercase())
}

#[derive(Serialize)]
struct Pong<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a RawValue>,
    timestamp: Millis,
}

/// The answer to an application-level `ping` (or `PING`, answered in the same case).
pub fn pong(upper_case: bool, id: Option<&RawValue>, now: Millis) -> Frame {
    to_frame(&Pong { kind: if upper_case { "PONG" } else { "pong" }, id, timestamp: now })
}

#[derive(Serialize)]
struct ChannelAnswer<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    channel: &'a str,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    stream: Option<StreamPlace<'a>>,
}

/// `CHANNEL_JOINED`, with the channel stream's latest position when positions were asked for.
pub fn channel_joined(channel: &str, stream: Option<WelcomePosition>) -> Frame {
    to_frame(&ChannelAnswer {
        kind: "CHANNEL_JOINED",
        channel,
        stream: stream.map(StreamPlace::from),
    })
}

#[derive(Serialize)]
struct ChannelMember<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    channel: &'a str,
    client: &'a serde_json::Value,
}

/// To the members that joined with `presence`: someone joined (`CHANNEL_MEMBER_JOINED`)
/// or left (`CHANNEL_MEMBER_LEFT`).
pub fn channel_member(joined: bool, channel: &str, client: &serde_json::Value) -> Frame {
    let kind = if joined { "CHANNEL_MEMBER_JOINED" } else { "CHANNEL_MEMBER_LEFT" };
    to_frame(&ChannelMember { kind, channel, client })
}

#[derive(Serialize)]
struct Presence<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    channel: &'a str,
    clients: Vec<&'a serde_json::Value>,
}

/// The answer to `PRESENCE`: the channel's members, in the order they joined.
pub fn presence(channel: &str, clients: &[std::sync::Arc<serde_json::Value>]) -> Frame {
    to_frame(&Presence { kind: "PRESENCE", channel, clients: clients.iter().map(|c| &**c).collect() })
}

pub fn channel_left(channel: &str) -> Frame {
    to_frame(&ChannelAnswer { kind: "CHANNEL_LEFT", channel, stream: None })
}

#[derive(Serialize)]
struct Ack<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "correlationId")]
    correlation_id: &'a str,
    delivered: usize,
    timestamp: Millis,
}

/// A routed message was delivered to `delivered` connections.
pub fn ack(correlation_id: &str, delivered: usize, now: Millis) -> Frame {
    to_frame(&Ack { kind: "ACK", correlation_id, delivered, timestamp: now })
}

#[derive(Serialize)]
struct NackPayload<'a> {
    code: &'static str,
    message: &'a str,
}

#[derive(Serialize)]
struct Nack<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "correlationId")]
    correlation_id: &'a str,
    payload: NackPayload<'a>,
    timestamp: Millis,
}

/// A message that asked for an acknowledgement was refused: this replaces its `error`.
pub fn nack(correlation_id: &str, rejection: &MessageRejection, now: Millis) -> Frame {
    to_frame(&Nack {
        kind: "NACK",
        correlation_id,
        payload: NackPayload { code: rejection.code.as_str(), message: &rejection.message },
        timestamp: now,
    })
}

#[derive(Serialize)]
struct Response<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "requestId")]
    request_id: &'a RawValue,
    payload: &'a RawValue,
    timestamp: Millis,
}

/// The app's answer to a `request`.
pub fn response(request_id: &RawValue, payload: &RawValue, now: Millis) -> Frame {
    to_frame(&Response { kind: "response", request_id, payload, timestamp: now })
}

#[derive(Serialize)]
struct Control<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "clientId")]
    client_id: &'a str,
    data: &'a RawValue,
    timestamp: Millis,
    protocol_version: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Expiry {
    expires_at: Millis,
}

/// `token_expiring` (the connection's token expires at `expires_at`; send `refresh`) or
/// `refreshed` (a `refresh` was taken: the connection now lasts till `expires_at`).
pub fn token_lifetime(kind: &'static str, expires_at: Millis, now: Millis) -> Frame {
    #[derive(Serialize)]
    struct Lifetime {
        #[serde(rename = "type")]
        kind: &'static str,
        #[serde(rename = "clientId")]
        client_id: &'static str,
        data: Expiry,
        timestamp: Millis,
        protocol_version: u32,
    }
    to_frame(&Lifetime { kind, client_id: SERVER_CLIENT_ID, data: Expiry { expires_at }, timestamp: now, protocol_version: PROTOCOL_VERSION })
}

/// A control-role message the server writes (`accept_control`, `decline_control`,
/// `confirm_transfer`) in the name of `client_id`, with `data` already JSON.
pub fn control(kind: &'static str, client_id: &str, data: &RawValue, now: Millis) -> Frame {
    to_frame(&Control { kind, client_id, data, timestamp: now, protocol_version: PROTOCOL_VERSION })
}

#[derive(Serialize)]
struct ServerMessage<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    data: &'a RawValue,
    timestamp: Millis,
}

/// A message the app sends through the server (`POST /v1/broadcast`):
/// `{"type":...,"channel":...,"data":...,"timestamp":...}`, serialized once for every
/// recipient. `data` is already JSON.
pub fn server_message(kind: &str, channel: Option<&str>, data: &RawValue, now: Millis) -> Frame {
    to_frame(&ServerMessage { kind, channel, data, timestamp: now })
}
