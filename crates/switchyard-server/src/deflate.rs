//! permessage-deflate (RFC 7692) for the native transport: the negotiation, compressing
//! what the server sends and inflating what clients send.
//!
//! The server always asks for `server_no_context_takeover` and
//! `client_no_context_takeover`: every message is compressed on its own, so one compressed
//! copy of a publication serves every recipient (compressed once per message, on the
//! thread that fans it out, not once per connection), and a connection keeps no deflate
//! state while idle. The compressor and the inflater are per thread.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use flate2::{Compress, Decompress, FlushCompress, FlushDecompress, Status};
use serde::ser::{Serialize, SerializeStruct, Serializer};

/// What the server lets a client send to turn compression on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompressionConfig {
    /// Payloads shorter than this go uncompressed: deflate gains little on them and costs
    /// as much as the write.
    pub threshold: usize,
}

impl CompressionConfig {
    /// The threshold when none is given, in bytes.
    pub const DEFAULT_THRESHOLD: usize = 256;
}

impl Default for CompressionConfig {
    fn default() -> Self {
        Self { threshold: Self::DEFAULT_THRESHOLD }
    }
}

/// zlib's default level. A message is compressed once whatever its fan-out, so the few
/// microseconds more than the fastest level cost buy about a fifth fewer bytes on every
/// recipient's wire (1 KiB of JSON: 351 bytes against 448 at level 1).
const LEVEL: u32 = 6;
/// The empty stored block RFC 7692 section 7.2.1 strips from each compressed message.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
const MAX_WINDOW_BITS: u8 = 15;

/// permessage-deflate as agreed with one client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deflate {
    /// The client's inflate window, when its offer bounded it (`server_max_window_bits`).
    server_max_window_bits: Option<u8>,
    threshold: usize,
}

impl Deflate {
    /// The `Sec-WebSocket-Extensions` value of the `101` answer.
    pub fn response(&self) -> String {
        let mut response = "permessage-deflate; server_no_context_takeover; client_no_context_takeover".to_owned();
        if let Some(bits) = self.server_max_window_bits {
            response.push_str(&format!("; server_max_window_bits={bits}"));
        }
        response
    }

    /// The payload to send for `payload`, and whether it is compressed. Without context
    /// takeover a message's back-references stay within it, so one shorter than the
    /// client's window fits any window; a longer one goes uncompressed to a client with a
    /// small window, as does one deflate would not shrink.
    pub fn encode(&self, payload: &Bytes) -> (Bytes, bool) {
        let fits = self.server_max_window_bits.is_none_or(|bits| payload.len() <= 1 << bits);
        if payload.len() < self.threshold || !fits {
            return (payload.clone(), false);
        }
        match compress_shared(payload) {
            Some(compressed) => (compressed, true),
            None => (payload.clone(), false),
        }
    }
}

/// Picks the first permessage-deflate offer in a `Sec-WebSocket-Extensions` value that the
/// server can accept; `None` declines them all (the connection goes uncompressed).
pub fn negotiate(offers: Option<&str>, config: &CompressionConfig) -> Option<Deflate> {
    offers?.split(',').find_map(|offer| accept_offer(offer, config))
}

fn accept_offer(offer: &str, config: &CompressionConfig) -> Option<Deflate> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case("permessage-deflate") {
        return None;
    }
    let mut seen: Vec<String> = Vec::new();
    let mut deflate = Deflate { server_max_window_bits: None, threshold: config.threshold };
    for parameter in parts {
        let (name, value) = match parameter.split_once('=') {
            Some((name, value)) => (name.trim().to_ascii_lowercase(), Some(value.trim().trim_matches('"'))),
            None => (parameter.to_ascii_lowercase(), None),
        };
        // RFC 7692 section 7: an offer naming a parameter twice is declined.
        if seen.contains(&name) {
            return None;
        }
        match (name.as_str(), value) {
            ("server_no_context_takeover" | "client_no_context_takeover", None) => {}
            ("server_max_window_bits", Some(value)) => deflate.server_max_window_bits = Some(window_bits(value)?),
            // The client may bound its own window; it inflates nothing of ours with it,
            // and the server inflates with the largest window in any case.
            ("client_max_window_bits", None) => {}
            ("client_max_window_bits", Some(value)) => {
                window_bits(value)?;
            }
            _ => return None,
        }
        seen.push(name);
    }
    Some(deflate)
}

/// A window size parameter: 8 to 15, with no leading zero.
fn window_bits(value: &str) -> Option<u8> {
    if value.starts_with('0') || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().filter(|bits| (8..=MAX_WINDOW_BITS).contains(bits))
}

thread_local! {
    static COMPRESSOR: RefCell<Compress> = RefCell::new(Compress::new(flate2::Compression::new(LEVEL), false));
    static INFLATER: RefCell<Decompress> = RefCell::new(Decompress::new(false));
    /// The payload compressed last on this thread and its result: a fan-out pushes one
    /// payload to each recipient in turn, so it is compressed for the first one only.
    /// Holding the payload keeps its address from being reused by another.
    static LAST: RefCell<Option<(Bytes, Option<Bytes>)>> = const { RefCell::new(None) };
}

fn compress_shared(payload: &Bytes) -> Option<Bytes> {
    LAST.with_borrow_mut(|last| {
        if let Some((original, compressed)) = last.as_ref() {
            if original.as_ptr() == payload.as_ptr() && original.len() == payload.len() {
                return compressed.clone();
            }
        }
        let compressed = compress(payload).filter(|compressed| compressed.len() < payload.len()).map(Bytes::from);
        *last = Some((payload.clone(), compressed.clone()));
        compressed
    })
}

/// Deflates one message with a fresh context; `None` when deflate would not shrink it.
fn compress(input: &[u8]) -> Option<Vec<u8>> {
    COMPRESSOR.with_borrow_mut(|compressor| {
        compressor.reset();
        let mut output = Vec::with_capacity(input.len() / 2 + 64);
        loop {
            if output.len() == output.capacity() {
                output.reserve(output.capacity());
            }
            let consumed = compressor.total_in() as usize;
            compressor.compress_vec(&input[consumed..], &mut output, FlushCompress::Sync).ok()?;
            if compressor.total_in() as usize == input.len() && output.len() < output.capacity() {
                break;
            }
        }
        output.truncate(output.len().saturating_sub(TAIL.len()));
        Some(output)
    })
}

/// Why a compressed message could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// Inflating it would pass `maxMessageBytes`.
    TooLarge,
    /// The data is not a valid deflate stream.
    Invalid,
}

/// Inflates one message a client compressed without context takeover, stopping as soon
/// as the output passes `limit` (a small frame that inflates to gigabytes costs no more
/// than `limit` bytes).
pub fn inflate(input: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
    INFLATER.with_borrow_mut(|inflater| {
        inflater.reset(false);
        let bound = limit.saturating_add(1);
        let mut output = Vec::with_capacity(input.len().saturating_mul(4).clamp(64, bound));
        for chunk in [input, &TAIL[..]] {
            let start = inflater.total_in();
            loop {
                if output.len() == output.capacity() {
                    output.reserve((output.capacity()).min(bound - output.len()));
                }
                let (read, wrote) = (inflater.total_in(), output.len());
                let consumed = (read - start) as usize;
                let status = inflater
                    .decompress_vec(&chunk[consumed..], &mut output, FlushDecompress::Sync)
                    .map_err(|_| InflateError::Invalid)?;
                if output.len() > limit {
                    return Err(InflateError::TooLarge);
                }
                if status == Status::StreamEnd {
                    return Ok(output);
                }
                let done = (inflater.total_in() - start) as usize == chunk.len() && output.len() < output.capacity();
                let stuck = inflater.total_in() == read && output.len() == wrote;
                if done || stuck {
                    break;
                }
            }
        }
        Ok(output)
    })
}

/// permessage-deflate totals over the native connections of one server.
#[derive(Default)]
pub struct CompressionTotals {
    connections: AtomicUsize,
    before: AtomicU64,
    on_wire: AtomicU64,
}

/// A reading of [`CompressionTotals`]: `compression` in `getStats()` and `GET /stats`,
/// with its ratio.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompressionCounts {
    /// Connections open now that negotiated permessage-deflate.
    pub connections: usize,
    /// Payload bytes queued for them, before compression.
    pub bytes_before_compression: u64,
    /// What went on the wire for those payloads: frame headers and (compressed) payloads.
    pub bytes_on_wire: u64,
}

impl Serialize for CompressionCounts {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut fields = serializer.serialize_struct("CompressionCounts", 4)?;
        fields.serialize_field("connections", &self.connections)?;
        fields.serialize_field("bytesBeforeCompression", &self.bytes_before_compression)?;
        fields.serialize_field("bytesOnWire", &self.bytes_on_wire)?;
        match self.ratio() {
            Some(ratio) => fields.serialize_field("ratio", &ratio)?,
            None => fields.skip_field("ratio")?,
        }
        fields.end()
    }
}

impl CompressionCounts {
    /// `bytes_on_wire / bytes_before_compression`; `None` before anything was sent.
    pub fn ratio(&self) -> Option<f64> {
        (self.bytes_before_compression > 0).then(|| self.bytes_on_wire as f64 / self.bytes_before_compression as f64)
    }
}

impl CompressionTotals {
    /// A connection that negotiated permessage-deflate opened.
    pub fn opened(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection that negotiated permessage-deflate closed.
    pub fn closed(&self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// A payload of `before` bytes was queued as `on_wire` bytes, its frame header included.
    pub fn sent(&self, before: usize, on_wire: usize) {
        self.before.fetch_add(before as u64, Ordering::Relaxed);
        self.on_wire.fetch_add(on_wire as u64, Ordering::Relaxed);
    }

    /// The totals as they stand now.
    pub fn counts(&self) -> CompressionCounts {
        CompressionCounts {
            connections: self.connections.load(Ordering::Relaxed),
            bytes_before_compression: self.before.load(Ordering::Relaxed),
            bytes_on_wire: self.on_wire.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: CompressionConfig = CompressionConfig { threshold: 16 };

    #[test]
    fn accepts_what_browsers_offer_and_declines_what_it_cannot_honour() {
        let chrome = negotiate(Some("permessage-deflate; client_max_window_bits"), &CONFIG).unwrap();
        assert_eq!(chrome.response(), "permessage-deflate; server_no_context_takeover; client_no_context_takeover");
        let bounded = negotiate(Some("permessage-deflate; server_max_window_bits=\"10\"; client_max_window_bits=12"), &CONFIG).unwrap();
        assert!(bounded.response().ends_with("; server_max_window_bits=10"));
        assert_eq!(negotiate(None, &CONFIG), None);
        assert_eq!(negotiate(Some("x-webkit-deflate-frame"), &CONFIG), None);
        assert_eq!(negotiate(Some("permessage-deflate; server_max_window_bits"), &CONFIG), None, "needs a value");
        assert_eq!(negotiate(Some("permessage-deflate; server_max_window_bits=16"), &CONFIG), None);
        assert_eq!(negotiate(Some("permessage-deflate; server_max_window_bits=09"), &CONFIG), None);
        assert_eq!(negotiate(Some("permessage-deflate; mystery"), &CONFIG), None);
        assert_eq!(negotiate(Some("permessage-deflate; client_no_context_takeover; client_no_context_takeover"), &CONFIG), None);
        let second = negotiate(Some("permessage-deflate; mystery, permessage-deflate; server_max_window_bits=9"), &CONFIG);
        assert_eq!(second.unwrap().server_max_window_bits, Some(9), "the first acceptable offer wins");
    }

    #[test]
    fn a_message_compresses_once_and_inflates_back() {
        let deflate = negotiate(Some("permessage-deflate"), &CONFIG).unwrap();
        let payload = Bytes::from(r#"{"type":"ydoc_update","update":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#.repeat(20));
        let (first, compressed) = deflate.encode(&payload);
        assert!(compressed && first.len() < payload.len() / 4);
        let (second, _) = deflate.encode(&payload);
        assert_eq!(first.as_ptr(), second.as_ptr(), "the second recipient shares the first's copy");
        assert_eq!(inflate(&first, payload.len()).unwrap(), payload);
        assert_eq!(inflate(&first, payload.len() - 1), Err(InflateError::TooLarge));
        assert_eq!(inflate(b"\xff\xff\xff", 100), Err(InflateError::Invalid));
    }

    #[test]
    fn what_deflate_cannot_help_or_a_small_window_cannot_take_goes_uncompressed() {
        let deflate = negotiate(Some("permessage-deflate"), &CONFIG).unwrap();
        let short = Bytes::from_static(b"aaaaaaaa");
        assert_eq!(deflate.encode(&short), (short.clone(), false));
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let noise: Bytes = (0..400)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 32) as u8
            })
            .collect::<Vec<_>>()
            .into();
        assert!(!deflate.encode(&noise).1);
        let small_window = negotiate(Some("permessage-deflate; server_max_window_bits=8"), &CONFIG).unwrap();
        let long = Bytes::from(vec![b'a'; 300]);
        assert!(!small_window.encode(&long).1);
        assert!(deflate.encode(&long).1);
    }

    #[test]
    fn a_bomb_is_refused_after_the_limit_not_after_inflating_it() {
        let bomb = compress(&vec![0u8; 20_000_000]).unwrap();
        assert!(bomb.len() < 20_000_000 / 50);
        assert_eq!(inflate(&bomb, 1 << 20), Err(InflateError::TooLarge));
    }
}
