//! The messages the relay itself writes (PROTOCOL.md), each serialized once however many
//! connections receive it.

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::error::Rejection;
use crate::frame::Frame;
use crate::ids::Millis;

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
}

/// Sent to a newcomer: it names the server, its own connection and the session.
pub fn welcome(connection_id: &str, session_id: &str, now: Millis) -> Frame {
    to_frame(&ClientConnected {
        kind: "client_connected",
        client_id: SERVER_CLIENT_ID,
        connection_id,
        session_id: Some(session_id),
        timestamp: now,
        protocol_version: PROTOCOL_VERSION,
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

#[derive(Serialize)]
struct ErrorPayload<'a> {
    code: &'static str,
    message: &'a str,
    #[serde(rename = "requestId", skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a RawValue>,
    #[serde(rename = "correlationId", skip_serializing_if = "Option::is_none")]
    correlation_id: Option<&'a str>,
}

#[derive(Serialize)]
struct ErrorMessage<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    payload: ErrorPayload<'a>,
    timestamp: Millis,
}

/// An `error`, carrying the `requestId` or the `correlationId` of the message it refuses.
pub fn error(rejection: &Rejection, request_id: Option<&RawValue>, correlation_id: Option<&str>, now: Millis) -> Frame {
    to_frame(&ErrorMessage {
        kind: "error",
        payload: ErrorPayload {
            code: rejection.code.as_str(),
            message: &rejection.message,
            request_id,
            correlation_id: if request_id.is_some() { None } else { correlation_id },
        },
        timestamp: now,
    })
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
}

pub fn channel_joined(channel: &str) -> Frame {
    to_frame(&ChannelAnswer { kind: "CHANNEL_JOINED", channel })
}

pub fn channel_left(channel: &str) -> Frame {
    to_frame(&ChannelAnswer { kind: "CHANNEL_LEFT", channel })
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
pub fn nack(correlation_id: &str, rejection: &Rejection, now: Millis) -> Frame {
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
}

/// A control-role message (`request_control`, `accept_control`, `decline_control`,
/// `role_changed`) from `client_id`, with `data` already JSON.
pub fn control(kind: &'static str, client_id: &str, data: &RawValue, now: Millis) -> Frame {
    to_frame(&Control { kind, client_id, data, timestamp: now })
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
