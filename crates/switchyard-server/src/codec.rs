//! WebSocket framing (RFC 6455), server side, with no I/O: decodes what clients send,
//! encodes the headers of what the server sends.
//!
//! tungstenite parses each frame header; this module adds what a relay needs on top and
//! tungstenite's own stream types would not give: no buffer is owned while a connection
//! is idle (the caller reads into a shared buffer and keeps only a partial frame), a
//! frame is refused as too large from its header, before its payload is buffered, and
//! outgoing payloads are never copied (the caller writes header and `Bytes` with one
//! vectored write).

use std::io::Cursor;

use bytes::{Bytes, BytesMut};
use switchyard_core::{close_code, Frame, FrameKind};
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use crate::deflate::{self, InflateError};

/// Control frames carry at most this many payload bytes (RFC 6455 section 5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;
const RSV1_UNEXPECTED: &str = "RSV1 is set outside a compressed message's first frame";
/// The longest header the server writes: 2 bytes, then a 64-bit length, never a mask.
pub const MAX_HEADER_LEN: usize = 10;

/// A complete thing a client sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A text (valid UTF-8) or binary message, reassembled if it was fragmented.
    Message(Frame),
    /// A ping, with the payload its pong must echo.
    Ping(Bytes),
    /// A pong: the client answered the server's ping.
    Pong,
    /// The client's close frame: 1005 when it carried no code.
    Close {
        /// The close code the client sent.
        code: u16,
        /// The close reason the client sent, possibly empty.
        reason: String,
    },
}

/// Why the connection must close; each maps to a close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The client broke RFC 6455, as the text says (1002).
    Protocol(&'static str),
    /// A text message or a close reason is not valid UTF-8 (1007).
    InvalidUtf8,
    /// A message is longer than [`Limits::max_message_bytes`], or inflates past it (1009).
    TooLarge,
}

impl DecodeError {
    /// The close code the server closes the connection with.
    pub fn close_code(self) -> u16 {
        match self {
            DecodeError::Protocol(_) => close_code::PROTOCOL_ERROR,
            DecodeError::InvalidUtf8 => close_code::INVALID_PAYLOAD,
            DecodeError::TooLarge => close_code::TOO_LARGE,
        }
    }

    /// The close reason the server sends with [`DecodeError::close_code`].
    pub fn reason(self) -> &'static str {
        match self {
            DecodeError::Protocol(reason) => reason,
            DecodeError::InvalidUtf8 => "Invalid UTF-8",
            DecodeError::TooLarge => "Message too large",
        }
    }
}

/// How far [`Decoder::decode`] got through its input.
#[derive(Debug, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of whole frames decoded; the rest is the start of a frame.
    pub consumed: usize,
    /// When the rest holds a complete header, the size of its whole frame, so the caller
    /// can reserve room for it once.
    pub frame_len: Option<usize>,
    /// A close frame was decoded; nothing after it is read.
    pub closed: bool,
}

/// A message being reassembled from fragments.
struct Fragments {
    kind: FrameKind,
    compressed: bool,
    bytes: BytesMut,
}

/// What a connection's frames may be. The same for all of them, so the connection
/// passes it in rather than each decoder keeping a copy.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The longest message, reassembled and inflated, in bytes (`maxMessageBytes`).
    pub max_message_bytes: usize,
    /// permessage-deflate was negotiated: a message's first frame may have RSV1 set.
    pub inflating: bool,
}

/// Per-connection decoding state: only a message being reassembled from fragments,
/// boxed, since every connection has a decoder and few are reassembling.
#[derive(Default)]
pub struct Decoder {
    fragments: Option<Box<Fragments>>,
}

impl Decoder {
    /// Decodes every whole frame at the start of `input`, unmasking payloads in place,
    /// and hands each complete thing to `emit`. Stops after a close frame.
    pub fn decode(&mut self, limits: Limits, input: &mut [u8], mut emit: impl FnMut(Decoded)) -> Result<Progress, DecodeError> {
        let mut consumed = 0;
        loop {
            let rest = &mut input[consumed..];
            let mut cursor = Cursor::new(&*rest);
            let parsed = FrameHeader::parse(&mut cursor).map_err(|_| DecodeError::Protocol("Invalid opcode"))?;
            let Some((header, length)) = parsed else {
                return Ok(Progress { consumed, frame_len: None, closed: false });
            };
            let header_len = cursor.position() as usize;
            let length = self.check(limits, &header, length)?;
            let frame_len = header_len + length;
            if rest.len() < frame_len {
                return Ok(Progress { consumed, frame_len: Some(frame_len), closed: false });
            }
            let payload = &mut rest[header_len..frame_len];
            if let Some(mask) = header.mask {
                unmask(payload, mask);
            }
            consumed += frame_len;
            if let Some(decoded) = self.complete(limits, &header, payload)? {
                let closed = matches!(decoded, Decoded::Close { .. });
                emit(decoded);
                if closed {
                    return Ok(Progress { consumed, frame_len: None, closed: true });
                }
            }
        }
    }

    /// Refuses what a frame's header alone shows to be wrong; returns its payload length.
    fn check(&self, limits: Limits, header: &FrameHeader, length: u64) -> Result<usize, DecodeError> {
        // RFC 6455 section 5.2: a 64-bit length's most significant bit must be 0. Breaking
        // that is a protocol error (1002), not a message that is merely too large (1009).
        if length > i64::MAX as u64 {
            return Err(DecodeError::Protocol("Payload length with its most significant bit set"));
        }
        if header.rsv2 || header.rsv3 || (header.rsv1 && !limits.inflating) {
            return Err(DecodeError::Protocol("Reserved bits are set"));
        }
        // RFC 7692 section 6: RSV1 marks a compressed message, on its first frame only.
        if header.rsv1 && !matches!(header.opcode, OpCode::Data(Data::Text | Data::Binary)) {
            return Err(DecodeError::Protocol(RSV1_UNEXPECTED));
        }
        if header.mask.is_none() {
            return Err(DecodeError::Protocol("Client frames must be masked"));
        }
        match header.opcode {
            OpCode::Control(_) if !header.is_final || length > MAX_CONTROL_PAYLOAD as u64 => {
                Err(DecodeError::Protocol("Control frames must be final and at most 125 bytes"))
            }
            OpCode::Control(_) => Ok(length as usize),
            OpCode::Data(Data::Continue) if self.fragments.is_none() => {
                Err(DecodeError::Protocol("Continuation frame without a message"))
            }
            OpCode::Data(Data::Text | Data::Binary) if self.fragments.is_some() => {
                Err(DecodeError::Protocol("New message inside a fragmented one"))
            }
            OpCode::Data(_) => {
                let buffered = self.fragments.as_ref().map_or(0, |fragments| fragments.bytes.len() as u64);
                match length.checked_add(buffered) {
                    Some(total) if total <= limits.max_message_bytes as u64 => Ok(length as usize),
                    _ => Err(DecodeError::TooLarge),
                }
            }
        }
    }

    fn complete(&mut self, limits: Limits, header: &FrameHeader, payload: &[u8]) -> Result<Option<Decoded>, DecodeError> {
        let kind = match header.opcode {
            OpCode::Control(Control::Ping) => return Ok(Some(Decoded::Ping(Bytes::copy_from_slice(payload)))),
            OpCode::Control(Control::Pong) => return Ok(Some(Decoded::Pong)),
            OpCode::Control(Control::Close) => return close_frame(payload).map(Some),
            OpCode::Control(Control::Reserved(_)) | OpCode::Data(Data::Reserved(_)) => {
                return Err(DecodeError::Protocol("Invalid opcode"))
            }
            OpCode::Data(Data::Text) => FrameKind::Text,
            OpCode::Data(Data::Binary) => FrameKind::Binary,
            OpCode::Data(Data::Continue) => {
                let fragments = self.fragments.as_mut().expect("checked: a message is being reassembled");
                fragments.bytes.extend_from_slice(payload);
                if !header.is_final {
                    return Ok(None);
                }
                let Fragments { kind, compressed, bytes } = *self.fragments.take().expect("checked above");
                return message(limits, kind, compressed, bytes.freeze()).map(Some);
            }
        };
        if !header.is_final {
            self.fragments = Some(Box::new(Fragments { kind, compressed: header.rsv1, bytes: BytesMut::from(payload) }));
            return Ok(None);
        }
        match header.rsv1 {
            true => inflate(limits, kind, payload).map(Some),
            false => text_or_binary(kind, Bytes::copy_from_slice(payload)).map(Some),
        }
    }
}

fn message(limits: Limits, kind: FrameKind, compressed: bool, payload: Bytes) -> Result<Decoded, DecodeError> {
    match compressed {
        true => inflate(limits, kind, &payload),
        false => text_or_binary(kind, payload),
    }
}

/// A compressed message: never inflated past `maxMessageBytes`.
fn inflate(limits: Limits, kind: FrameKind, payload: &[u8]) -> Result<Decoded, DecodeError> {
    match deflate::inflate(payload, limits.max_message_bytes) {
        Ok(inflated) => text_or_binary(kind, inflated.into()),
        Err(InflateError::TooLarge) => Err(DecodeError::TooLarge),
        Err(InflateError::Invalid) => Err(DecodeError::Protocol("Invalid compressed data")),
    }
}

fn text_or_binary(kind: FrameKind, payload: Bytes) -> Result<Decoded, DecodeError> {
    if kind == FrameKind::Text && std::str::from_utf8(&payload).is_err() {
        return Err(DecodeError::InvalidUtf8);
    }
    Ok(Decoded::Message(Frame { kind, payload }))
}

fn close_frame(payload: &[u8]) -> Result<Decoded, DecodeError> {
    match payload {
        [] => Ok(Decoded::Close { code: close_code::NO_STATUS, reason: String::new() }),
        [_] => Err(DecodeError::Protocol("Close frame with a one-byte payload")),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            if !close_code::may_be_sent(code) {
                return Err(DecodeError::Protocol("Invalid close code"));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| DecodeError::InvalidUtf8)?;
            Ok(Decoded::Close { code, reason: reason.to_owned() })
        }
    }
}

/// XORs a client payload with its mask, eight bytes at a time.
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let word = u64::from_ne_bytes([mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3]]);
    let mut chunks = payload.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let value = u64::from_ne_bytes(chunk.try_into().expect("chunks of eight")) ^ word;
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

/// The opcodes the server writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outgoing {
    /// A text message.
    Text = 0x1,
    /// A binary message.
    Binary = 0x2,
    /// A close frame.
    Close = 0x8,
    /// A ping, the relay's heartbeat.
    Ping = 0x9,
    /// A pong, answering a client's ping.
    Pong = 0xA,
}

impl From<FrameKind> for Outgoing {
    fn from(kind: FrameKind) -> Self {
        match kind {
            FrameKind::Text => Outgoing::Text,
            FrameKind::Binary => Outgoing::Binary,
            FrameKind::Ping => Outgoing::Ping,
        }
    }
}

/// The longest frame, header and payload, a connection sends: its writer keeps its
/// progress through a frame in 32 bits. Its outbox refuses a longer one.
pub const MAX_FRAME_LEN: usize = u32::MAX as usize;

/// The length of the header [`encode_header`] writes for a payload of `payload_len` bytes.
pub fn header_len(payload_len: usize) -> usize {
    match payload_len {
        0..=125 => 2,
        126..=0xFFFF => 4,
        _ => MAX_HEADER_LEN,
    }
}

/// Writes the header of an unmasked, final frame into `out`; returns its length.
/// `compressed` sets RSV1 (permessage-deflate).
pub fn encode_header(opcode: Outgoing, compressed: bool, payload_len: usize, out: &mut [u8; MAX_HEADER_LEN]) -> usize {
    out[0] = 0x80 | if compressed { 0x40 } else { 0 } | opcode as u8;
    if payload_len < 126 {
        out[1] = payload_len as u8;
        2
    } else if let Ok(short) = u16::try_from(payload_len) {
        out[1] = 126;
        out[2..4].copy_from_slice(&short.to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
        10
    }
}

/// The payload of a close frame: the code, then the reason cut to fit in 125 bytes.
pub fn close_payload(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    payload.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: masked, with the given first byte (FIN, RSV, opcode).
    fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    /// A decoder with its connection's limits.
    struct Reader {
        decoder: Decoder,
        limits: Limits,
    }

    fn reader(max_message_bytes: usize) -> Reader {
        Reader { decoder: Decoder::default(), limits: Limits { max_message_bytes, inflating: false } }
    }

    impl Reader {
        fn inflating(self) -> Self {
            Reader { limits: Limits { inflating: true, ..self.limits }, ..self }
        }
    }

    fn decode_all(reader: &mut Reader, input: &[u8]) -> (Result<Progress, DecodeError>, Vec<Decoded>) {
        let mut input = input.to_vec();
        let mut out = Vec::new();
        let progress = reader.decoder.decode(reader.limits, &mut input, |d| out.push(d));
        (progress, out)
    }

    #[test]
    fn decodes_text_binary_and_control_frames() {
        let mut decoder = reader(1 << 20);
        let mut input = client_frame(0x81, br#"{"type":"a"}"#);
        input.extend(client_frame(0x82, &[0, 1, 2, 255]));
        input.extend(client_frame(0x89, b"hi"));
        input.extend(client_frame(0x8A, b""));
        let (progress, out) = decode_all(&mut decoder, &input);
        assert_eq!(progress, Ok(Progress { consumed: input.len(), frame_len: None, closed: false }));
        assert_eq!(
            out,
            vec![
                Decoded::Message(Frame::text(&br#"{"type":"a"}"#[..])),
                Decoded::Message(Frame::binary(vec![0, 1, 2, 255])),
                Decoded::Ping(Bytes::from_static(b"hi")),
                Decoded::Pong,
            ]
        );
    }

    #[test]
    fn unmasks_payloads_of_every_length() {
        for len in 0..40 {
            let payload: Vec<u8> = (0..len as u8).collect();
            let (_, out) = decode_all(&mut reader(1024), &client_frame(0x82, &payload));
            assert_eq!(out, vec![Decoded::Message(Frame::binary(payload))]);
        }
    }

    #[test]
    fn stops_at_a_partial_frame_and_says_how_big_it_is() {
        let mut decoder = reader(1 << 20);
        let whole = client_frame(0x82, &[7; 300]);
        let (progress, out) = decode_all(&mut decoder, &whole[..1]);
        assert_eq!(progress, Ok(Progress { consumed: 0, frame_len: None, closed: false }));
        assert!(out.is_empty());
        let (progress, _) = decode_all(&mut decoder, &whole[..100]);
        assert_eq!(progress, Ok(Progress { consumed: 0, frame_len: Some(whole.len()), closed: false }));
        let (_, out) = decode_all(&mut decoder, &whole);
        assert_eq!(out, vec![Decoded::Message(Frame::binary(vec![7; 300]))]);
    }

    #[test]
    fn reassembles_fragments_with_control_frames_between() {
        let mut decoder = reader(1 << 20);
        let mut input = client_frame(0x01, b"{\"type\":");
        input.extend(client_frame(0x89, b"p"));
        input.extend(client_frame(0x00, b"\"x\""));
        input.extend(client_frame(0x80, b"}"));
        let (_, out) = decode_all(&mut decoder, &input);
        assert_eq!(out, vec![Decoded::Ping(Bytes::from_static(b"p")), Decoded::Message(Frame::text(&b"{\"type\":\"x\"}"[..]))]);
    }

    #[test]
    fn refuses_a_frame_too_large_from_its_header_alone() {
        let mut decoder = reader(1024);
        let length_header = |length: u64| {
            let mut header = vec![0x82, 0x80 | 127];
            header.extend_from_slice(&length.to_be_bytes());
            header.extend_from_slice(&[0, 0, 0, 0]);
            header
        };
        assert_eq!(decode_all(&mut decoder, &length_header(1 << 40)).0, Err(DecodeError::TooLarge));
        assert_eq!(
            decode_all(&mut decoder, &length_header(1 << 63)).0,
            Err(DecodeError::Protocol("Payload length with its most significant bit set")),
            "a length RFC 6455 forbids is a protocol error"
        );
        let mut decoder = reader(1024);
        let mut input = client_frame(0x02, &[0; 1000]);
        input.extend(client_frame(0x80, &[0; 25]));
        assert_eq!(decode_all(&mut decoder, &input).0, Err(DecodeError::TooLarge), "fragments count together");
        assert_eq!(decode_all(&mut reader(1024), &client_frame(0x82, &[0; 1024])).1.len(), 1);
    }

    #[test]
    fn refuses_protocol_violations() {
        let unmasked = vec![0x81, 0x01, b'a'];
        let cases: Vec<(Vec<u8>, DecodeError)> = vec![
            (unmasked, DecodeError::Protocol("Client frames must be masked")),
            (client_frame(0xA1, b"a"), DecodeError::Protocol("Reserved bits are set")),
            (client_frame(0xC1, b"a"), DecodeError::Protocol("Reserved bits are set")),
            (client_frame(0x83, b"a"), DecodeError::Protocol("Invalid opcode")),
            (client_frame(0x8B, b"a"), DecodeError::Protocol("Invalid opcode")),
            (client_frame(0x80, b"a"), DecodeError::Protocol("Continuation frame without a message")),
            (client_frame(0x09, b"a"), DecodeError::Protocol("Control frames must be final and at most 125 bytes")),
            (client_frame(0x89, &[0; 126]), DecodeError::Protocol("Control frames must be final and at most 125 bytes")),
            (client_frame(0x81, &[0xff, 0xfe]), DecodeError::InvalidUtf8),
            (client_frame(0x88, &[3]), DecodeError::Protocol("Close frame with a one-byte payload")),
            (client_frame(0x88, &1005u16.to_be_bytes()), DecodeError::Protocol("Invalid close code")),
            (client_frame(0x88, &1015u16.to_be_bytes()), DecodeError::Protocol("Invalid close code")),
            (client_frame(0x88, &2999u16.to_be_bytes()), DecodeError::Protocol("Invalid close code")),
        ];
        for (input, expected) in cases {
            assert_eq!(decode_all(&mut reader(1024), &input).0, Err(expected), "{input:02x?}");
        }
        for code in [1012u16, 1013, 1014, 3000, 4999] {
            let (result, out) = decode_all(&mut reader(1024), &client_frame(0x88, &code.to_be_bytes()));
            assert!(result.is_ok() && out == vec![Decoded::Close { code, reason: String::new() }], "{code} is a close code");
        }
        let mut interleaved = client_frame(0x01, b"a");
        interleaved.extend(client_frame(0x81, b"b"));
        assert_eq!(
            decode_all(&mut reader(1024), &interleaved).0,
            Err(DecodeError::Protocol("New message inside a fragmented one"))
        );
    }

    #[test]
    fn inflates_compressed_messages_whole_or_fragmented_within_the_limit() {
        let text = br#"{"type":"awareness_update","state":{"cursor":{"line":1,"column":2}}}"#.repeat(8);
        let compressed = {
            let deflate = crate::deflate::negotiate(Some("permessage-deflate"), &crate::deflate::CompressionConfig { threshold: 0 }).unwrap();
            let (compressed, yes) = deflate.encode(&Bytes::from(text.clone()));
            assert!(yes);
            compressed
        };
        let mut decoder = reader(1 << 20).inflating();
        let (split_at, mut input) = (compressed.len() / 2, client_frame(0xC1, &compressed));
        input.extend(client_frame(0x41, &compressed[..split_at]));
        input.extend(client_frame(0x80, &compressed[split_at..]));
        input.extend(client_frame(0x81, b"{}"));
        let (progress, out) = decode_all(&mut decoder, &input);
        assert!(progress.is_ok());
        let expected = || Decoded::Message(Frame::text(text.clone()));
        assert_eq!(out, vec![expected(), expected(), Decoded::Message(Frame::text(&b"{}"[..]))], "uncompressed messages still pass");
        let mut continuation_rsv1 = client_frame(0x41, &compressed[..split_at]);
        continuation_rsv1.extend(client_frame(0xC0, &compressed[split_at..]));
        assert_eq!(decode_all(&mut reader(1 << 20).inflating(), &continuation_rsv1).0, Err(DecodeError::Protocol(RSV1_UNEXPECTED)));
        assert_eq!(decode_all(&mut reader(1 << 20).inflating(), &client_frame(0xC9, b"")).0, Err(DecodeError::Protocol(RSV1_UNEXPECTED)));
        assert_eq!(decode_all(&mut reader(100).inflating(), &client_frame(0xC1, &compressed)).0, Err(DecodeError::TooLarge));
        assert_eq!(decode_all(&mut reader(1 << 20).inflating(), &client_frame(0xC1, &[0xff; 8])).0, Err(DecodeError::Protocol("Invalid compressed data")));
    }

    #[test]
    fn a_close_frame_ends_decoding() {
        let mut payload = 4000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        let mut input = client_frame(0x88, &payload);
        let close_len = input.len();
        input.extend(client_frame(0x81, b"ignored"));
        let (progress, out) = decode_all(&mut reader(1024), &input);
        assert_eq!(progress, Ok(Progress { consumed: close_len, frame_len: None, closed: true }));
        assert_eq!(out, vec![Decoded::Close { code: 4000, reason: "bye".into() }]);
        let (_, out) = decode_all(&mut reader(1024), &client_frame(0x88, b""));
        assert_eq!(out, vec![Decoded::Close { code: 1005, reason: String::new() }]);
    }

    #[test]
    fn encodes_headers_at_each_length_boundary() {
        let mut out = [0u8; MAX_HEADER_LEN];
        assert_eq!(encode_header(Outgoing::Text, false, 125, &mut out), 2);
        assert_eq!(&out[..2], &[0x81, 125]);
        assert_eq!(encode_header(Outgoing::Binary, true, 126, &mut out), 4);
        assert_eq!(&out[..4], &[0xC2, 126, 0, 126]);
        assert_eq!(encode_header(Outgoing::Ping, false, 65536, &mut out), 10);
        assert_eq!(&out[..10], &[0x89, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    #[test]
    fn close_payloads_fit_a_control_frame() {
        assert_eq!(&close_payload(1000, "ok")[..], &[3, 232, b'o', b'k']);
        let long = close_payload(1001, &"é".repeat(100));
        assert!(long.len() <= 125);
        assert!(std::str::from_utf8(&long[2..]).is_ok());
    }
}
