//! The benchmark's message: JSON of an exact size with fixed-width fields, so a receiver
//! checks it by reading digits at known offsets instead of parsing JSON, and the load
//! generator spends its core on sockets, not on parsing.
//!
//! `{"type":"b","s":"SSSSSSSS","n":"NNNNNNNNNN","t":"TTTTTTTTTTTTTTTT","p":"xxx..."}`:
//! the sender's global index, its sequence number, and its send time in microseconds
//! since the load generator started (strings, as JSON numbers may not have leading zeros).

const PREFIX: &[u8] = br#"{"type":"b","s":""#;
const SEPARATOR: usize = 7;
const S_AT: usize = PREFIX.len();
const S_LEN: usize = 8;
const N_AT: usize = S_AT + S_LEN + SEPARATOR;
const N_LEN: usize = 10;
const T_AT: usize = N_AT + N_LEN + SEPARATOR;
const T_LEN: usize = 16;
const P_AT: usize = T_AT + T_LEN + SEPARATOR;
/// The smallest message: every field, no padding.
pub const MIN_LEN: usize = P_AT + 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub sender: u64,
    pub seq: u64,
    pub sent_us: u64,
}

fn write_digits(out: &mut [u8], mut value: u64) {
    for byte in out.iter_mut().rev() {
        *byte = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

fn read_digits(bytes: &[u8]) -> Option<u64> {
    bytes.iter().try_fold(0u64, |acc, b| b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0')))
}

/// A message of exactly `len` bytes (at least [`MIN_LEN`]).
pub fn encode(stamp: Stamp, len: usize) -> String {
    let mut out = vec![b'x'; len.max(MIN_LEN)];
    out[..PREFIX.len()].copy_from_slice(PREFIX);
    write_digits(&mut out[S_AT..S_AT + S_LEN], stamp.sender);
    out[S_AT + S_LEN..N_AT].copy_from_slice(br#"","n":""#);
    write_digits(&mut out[N_AT..N_AT + N_LEN], stamp.seq);
    out[N_AT + N_LEN..T_AT].copy_from_slice(br#"","t":""#);
    write_digits(&mut out[T_AT..T_AT + T_LEN], stamp.sent_us);
    out[T_AT + T_LEN..P_AT].copy_from_slice(br#"","p":""#);
    let end = out.len();
    out[end - 2..].copy_from_slice(br#""}"#);
    String::from_utf8(out).expect("ASCII")
}

/// The stamp of a benchmark message, as sent or wrapped (in a publication's `data`, or
/// as a Socket.IO event's argument); `None` for anything else (the server's own
/// messages, such as `client_connected`).
pub fn decode(text: &[u8]) -> Option<Stamp> {
    if !text.starts_with(PREFIX) {
        let at = text.windows(PREFIX.len()).position(|w| w == PREFIX)?;
        return decode(&text[at..]);
    }
    if text.len() < MIN_LEN {
        return None;
    }
    Some(Stamp {
        sender: read_digits(&text[S_AT..S_AT + S_LEN])?,
        seq: read_digits(&text[N_AT..N_AT + N_LEN])?,
        sent_us: read_digits(&text[T_AT..T_AT + T_LEN])?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_at_the_requested_size() {
        let stamp = Stamp { sender: 123, seq: 4_567_890, sent_us: 98_765_432_101 };
        for len in [MIN_LEN, 100, 1000] {
            let text = encode(stamp, len);
            assert_eq!(text.len(), len);
            assert_eq!(decode(text.as_bytes()), Some(stamp));
            let json: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
            assert_eq!(json["type"], "b");
        }
        assert_eq!(decode(br#"{"type":"client_connected"}"#), None);
        let published = format!(r#"{{"type":"publication","offset":7,"from":"c1","data":{}}}"#, encode(stamp, 100));
        assert_eq!(decode(published.as_bytes()), Some(stamp));
        let event = format!(r#"42["m",{}]"#, encode(stamp, 100));
        assert_eq!(decode(event.as_bytes()), Some(stamp));
    }
}
