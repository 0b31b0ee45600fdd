//! Frames as the relay sees them: a kind and shared bytes.

use bytes::Bytes;

/// What a [`Frame`] is: a text or binary message, or a ping to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// A UTF-8 text message (JSON in this protocol).
    Text,
    /// A binary message, relayed verbatim and never parsed.
    Binary,
    /// A WebSocket ping the transport should send; the payload is empty.
    Ping,
}

/// One message. Cloning shares the bytes: fan-out never copies a payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Text, binary or ping.
    pub kind: FrameKind,
    /// The message's bytes, shared between every recipient.
    pub payload: Bytes,
}

impl Frame {
    /// A text frame carrying these UTF-8 bytes.
    pub fn text(payload: impl Into<Bytes>) -> Self {
        Self { kind: FrameKind::Text, payload: payload.into() }
    }

    /// A binary frame of these bytes.
    pub fn binary(payload: impl Into<Bytes>) -> Self {
        Self { kind: FrameKind::Binary, payload: payload.into() }
    }

    /// A ping for the transport to send, with no payload.
    pub fn ping() -> Self {
        Self { kind: FrameKind::Ping, payload: Bytes::new() }
    }

    /// The payload's length, in bytes.
    pub fn len(&self) -> usize {
        self.payload.len()
    }

    /// Whether the payload has no bytes.
    pub fn is_empty(&self) -> bool {
        self.payload.is_empty()
    }
}
