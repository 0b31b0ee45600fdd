//! Fuzz target `codec`: the native transport's WebSocket frame decoder
//! ([`switchyard_server::codec::Decoder`]) fed arbitrary client bytes in arbitrary reads.
//!
//! The reads are buffered as the connection task buffers them: each read is decoded in
//! place, and only the start of a frame not yet whole is kept, with room reserved for
//! the frame once its header says how big it is. The largest message is 64 KiB, so a
//! header claiming more must be refused before anything is buffered for it; the script
//! runs libFuzzer with `-malloc_limit_mb=128` and `-rss_limit_mb=512` to catch any
//! allocation that follows a length the client wrote. Also checked: what is kept never
//! exceeds one frame, messages fit the limit, text is UTF-8, control payloads fit 125
//! bytes, and each message survives the server's own header encoding. The decoder is
//! one that negotiated permessage-deflate, so RSV1 frames are inflated, never past the
//! limit, and plain frames still decode.
//!
//! Input layout: byte 0 picks how the rest is cut into reads (its low three bits give
//! the largest read, 1 byte to 64 KiB; its other bits seed the sizes); the rest is the
//! byte stream a client sends after its upgrade request.
#![no_main]

use bytes::{Buf, BytesMut};
use libfuzzer_sys::fuzz_target;
use switchyard_fuzz::chunks;
use switchyard_core::{Frame, FrameKind};
use switchyard_server::codec::{close_payload, encode_header, Decoded, Decoder, Limits, Outgoing, Progress, MAX_HEADER_LEN};

const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// The longest client frame header: 2 bytes, a 64-bit length and the mask.
const MAX_CLIENT_HEADER: usize = 14;
/// What the connection reserves at a time for a frame of unknown size.
const PARTIAL_CHUNK: usize = 4 * 1024;

/// Checks one thing the decoder produced.
fn check(decoded: &Decoded) {
    match decoded {
        Decoded::Message(frame) => {
            assert!(frame.len() <= MAX_MESSAGE_BYTES, "a message over the limit: {} bytes", frame.len());
            assert_ne!(frame.kind, FrameKind::Ping);
            if frame.kind == FrameKind::Text {
                assert!(std::str::from_utf8(&frame.payload).is_ok(), "text messages are UTF-8");
            }
            round_trip(frame);
        }
        Decoded::Ping(payload) => assert!(payload.len() <= 125),
        Decoded::Pong => {}
        Decoded::Close { code, reason } => {
            assert!(reason.len() <= 123);
            let echo = close_payload(*code, reason);
            assert!(echo.len() <= 125 && echo[..2] == code.to_be_bytes());
        }
    }
}

/// The header the server writes for a message, masked with a zero key as a client's
/// would be, decodes back to the same message.
fn round_trip(frame: &Frame) {
    let mut header = [0u8; MAX_HEADER_LEN];
    let header_len = encode_header(Outgoing::from(frame.kind), false, frame.len(), &mut header);
    let mut client = header[..header_len].to_vec();
    client[1] |= 0x80;
    client.extend_from_slice(&[0; 4]);
    client.extend_from_slice(&frame.payload);
    let mut again = Vec::new();
    let limits = Limits { max_message_bytes: MAX_MESSAGE_BYTES, inflating: false };
    let progress = Decoder::default().decode(limits, &mut client, |d| again.push(d));
    let whole = client.len();
    assert_eq!(progress, Ok(Progress { consumed: whole, frame_len: None, closed: false }));
    assert_eq!(again, vec![Decoded::Message(frame.clone())]);
}

/// Decodes `buffer`; returns how much of it was consumed, the size of the trailing
/// frame when known, and whether reading is over (a close frame or an error).
fn decode(decoder: &mut Decoder, buffer: &mut [u8]) -> (usize, Option<usize>, bool) {
    let len = buffer.len();
    let limits = Limits { max_message_bytes: MAX_MESSAGE_BYTES, inflating: true };
    match decoder.decode(limits, buffer, |decoded| check(&decoded)) {
        Ok(Progress { consumed, frame_len, closed }) => {
            assert!(consumed <= len);
            if let Some(frame_len) = frame_len {
                assert!(frame_len <= MAX_MESSAGE_BYTES + MAX_CLIENT_HEADER, "a frame of {frame_len} bytes is awaited");
                assert!(frame_len > len - consumed, "a whole frame was left undecoded");
            } else if !closed {
                assert!(len - consumed < MAX_CLIENT_HEADER, "a whole header was left unread");
            }
            (consumed, frame_len, closed)
        }
        Err(error) => {
            let _ = (error.close_code(), error.reason());
            (len, None, true)
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((sizes, stream)) = chunks(data) else { return };
    let mut decoder = Decoder::default();
    let mut partial = BytesMut::new();
    let mut offset = 0;
    for size in sizes {
        let read = &stream[offset..offset + size];
        offset += size;
        let done = if partial.is_empty() {
            // Decoded where it was read; a trailing half frame is kept.
            let mut shared = read.to_vec();
            let (consumed, frame_len, done) = decode(&mut decoder, &mut shared);
            if !done && consumed < shared.len() {
                let rest = &shared[consumed..];
                partial.reserve(frame_len.unwrap_or(0).max(rest.len() + PARTIAL_CHUNK));
                partial.extend_from_slice(rest);
            }
            done
        } else {
            partial.extend_from_slice(read);
            let (consumed, frame_len, done) = decode(&mut decoder, &mut partial);
            partial.advance(consumed);
            if let (false, Some(frame_len)) = (done, frame_len) {
                partial.reserve(frame_len.saturating_sub(partial.len()));
            }
            done
        };
        if done {
            return;
        }
        assert!(
            partial.len() < MAX_MESSAGE_BYTES + MAX_CLIENT_HEADER,
            "{} bytes kept for a half-read frame",
            partial.len()
        );
    }
});
