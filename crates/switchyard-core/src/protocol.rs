//! The messages the relay itself writes (PROTOCOL.md), serialized once per event.

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::error::ErrorCode;
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

pub fn client_disconnected(client_id: &str, connection_id: &str, now: Millis) -> Frame {
    to_frame(&ClientDisconnected {
        kind: "client_disconnected",
        client_id,
        connection_id,
        data: RoleData { role: "passive" },
        timestamp: now,
        protocol_version: PROTOCOL_VERSION,
    })
}

#[derive(Serialize)]
struct ErrorPayload {
    code: &'static str,
    message: &'static str,
}

#[derive(Serialize)]
struct ErrorMessage {
    #[serde(rename = "type")]
    kind: &'static str,
    payload: ErrorPayload,
    timestamp: Millis,
}

pub fn error(code: ErrorCode, now: Millis) -> Frame {
    to_frame(&ErrorMessage {
        kind: "error",
        payload: ErrorPayload { code: code.as_str(), message: code.message() },
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
struct ServerMessage<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    data: &'a RawValue,
    timestamp: Millis,
}

/// A message the app sends through the server (`POST /v1/broadcast`, `broadcast*`):
/// `{"type":...,"channel":...,"data":...,"timestamp":...}`, serialized once for every
/// recipient. `data` is already JSON.
pub fn server_message(kind: &str, channel: Option<&str>, data: &RawValue, now: Millis) -> Frame {
    to_frame(&ServerMessage { kind, channel, data, timestamp: now })
}
