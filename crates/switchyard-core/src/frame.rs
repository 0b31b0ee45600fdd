//! Frames as the relay sees them: a kind and shared bytes.

use bytes::Bytes;

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
    pub kind: FrameKind,
    pub payload: Bytes,
}

impl Frame {
    pub fn text(payload: impl Into<Bytes>) -> Self {
        Self { kind: FrameKind::Text, payload: payload.into() }
    }

    pub fn binary(payload: impl Into<Bytes>) -> Self {
        Self { kind: FrameKind::Binary, payload: payload.into() }
    }

    pub fn ping() -> Self {
        Self { kind: FrameKind::Ping, payload: Bytes::new() }
    }

    pub fn len(&self) -> usize {
        self.payload.len()
    }

    pub fn is_empty(&self) -> bool {
        self.payload.is_empty()
    }
}
