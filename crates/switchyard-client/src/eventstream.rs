//! The HTTP fallback's decisions, in plain Rust: which transports to try, where a
//! WebSocket URL's event stream is, how Server-Sent Events are read from bytes that come
//! split anywhere, what an HTTP refusal means for reconnecting, and how sends are batched
//! into POSTs, one at a time and in order.

use std::collections::VecDeque;

use serde::Deserialize;

/// How a connection reaches the relay.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Deserialize)]
pub enum Transport {
    /// A WebSocket: both ways on one connection.
    #[serde(rename = "websocket")]
    WebSocket,
    /// Server-Sent Events down (`GET <path>/events`) and POSTs up.
    #[serde(rename = "sse")]
    Sse,
}

impl Transport {
    /// The transport as JavaScript names it (`Transport`).
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::WebSocket => "websocket",
            Transport::Sse => "sse",
        }
    }
}

/// The transports tried when none are given: a WebSocket, then the event stream.
pub const DEFAULT_TRANSPORTS: [Transport; 2] = [Transport::WebSocket, Transport::Sse];

/// How long a transport may take to open before the next one is tried, when not given.
pub const DEFAULT_FALLBACK_AFTER_MS: f64 = 3000.0;

/// What is wrong with these transport settings, if anything.
pub fn check_transports(transports: &[Transport], fallback_after_ms: f64) -> Result<(), String> {
    if transports.is_empty() {
        return Err("transports must name at least one of 'websocket' and 'sse'".into());
    }
    if transports.len() == 2 && transports[0] == transports[1] || transports.len() > 2 {
        return Err("transports must name each of 'websocket' and 'sse' at most once".into());
    }
    if !fallback_after_ms.is_finite() || fallback_after_ms <= 0.0 {
        return Err("fallbackAfterMs must be a positive number of milliseconds".into());
    }
    Ok(())
}

/// The event stream of a WebSocket URL: `ws(s)://host/<path>?<query>` gives
/// `http(s)://host/<path>/events?<query>` (`/events` for a path of `/`). `None` for a URL
/// that is not an absolute `ws:`, `wss:`, `http:` or `https:` one.
pub fn events_url(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "ws" | "http" => "http",
        "wss" | "https" => "https",
        _ => return None,
    };
    let rest = rest.split('#').next().unwrap_or_default();
    let (before, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    let (host, path) = before.find('/').map_or((before, ""), |at| before.split_at(at));
    if host.is_empty() {
        return None;
    }
    let path = path.trim_end_matches('/');
    Some(match query {
        Some(query) => format!("{scheme}://{host}{path}/events?{query}"),
        None => format!("{scheme}://{host}{path}/events"),
    })
}

/// One Server-Sent Event.
#[derive(Debug, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field; `"message"` when there was none.
    pub kind: String,
    /// The `data:` lines, joined by `\n`.
    pub data: String,
    /// The `id:` field of this event, if it had one.
    pub id: Option<String>,
}

/// Reads Server-Sent Events from a stream's bytes, however they are split: lines end at
/// `\n`, `\r\n` or `\r`; `:` lines are comments; an event ends at a blank line; a
/// leading byte order mark is skipped; an event without `data:` is not dispatched.
#[derive(Default)]
pub struct EventParser {
    line: Vec<u8>,
    /// The last byte was `\r`: a `\n` right after it ends no second line.
    after_cr: bool,
    /// Bytes seen so far, up to 3: for the byte order mark.
    started: usize,
    kind: String,
    data: String,
    has_data: bool,
    id: Option<String>,
    comments: u64,
}

impl EventParser {
    /// Reads `bytes`, the stream's next chunk, and gives the events it completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Event> {
        let mut events = Vec::new();
        let mut bytes = bytes;
        while self.started < 3 && !bytes.is_empty() {
            // Skips "\u{FEFF}" (EF BB BF) if the stream starts with it.
            const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];
            if bytes[0] == BOM[self.started] {
                self.line.push(bytes[0]);
                self.started += 1;
                bytes = &bytes[1..];
                if self.started == 3 {
                    self.line.clear();
                }
            } else {
                self.started = 3;
            }
        }
        let mut start = 0;
        for (at, &byte) in bytes.iter().enumerate() {
            if byte != b'\n' && byte != b'\r' {
                continue;
            }
            let skip = byte == b'\n' && self.after_cr && at == start && self.line.is_empty();
            self.after_cr = byte == b'\r';
            if skip {
                start = at + 1;
                continue;
            }
            self.line.extend_from_slice(&bytes[start..at]);
            start = at + 1;
            let line = std::mem::take(&mut self.line);
            if let Some(event) = self.line_ended(&line) {
                events.push(event);
            }
        }
        if start < bytes.len() {
            self.after_cr = false;
            self.line.extend_from_slice(&bytes[start..]);
        }
        events
    }

    /// Comment lines read so far (the relay's `: ping`): signs that the stream is alive.
    pub fn comments(&self) -> u64 {
        self.comments
    }

    fn line_ended(&mut self, line: &[u8]) -> Option<Event> {
        if line.is_empty() {
            let kind = std::mem::take(&mut self.kind);
            let id = self.id.take();
            if !std::mem::take(&mut self.has_data) {
                return None;
            }
            let mut data = std::mem::take(&mut self.data);
            data.pop();
            let kind = if kind.is_empty() { "message".into() } else { kind };
            return Some(Event { kind, data, id });
        }
        if line[0] == b':' {
            self.comments += 1;
            return None;
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (&*line, ""),
        };
        match field {
            "event" => self.kind = value.to_owned(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            _ => {}
        }
        None
    }
}

/// What an answer other than an event stream means.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not the relay's refusal (a proxy, a server without the fallback, a network
    /// failure): as a WebSocket that could not open, the next transport is tried, else
    /// the connection is retried after its backoff.
    Lost,
    /// The relay refused: the connection is retried after its backoff when `retry`, else
    /// it is over, as after a WebSocket closed 1008.
    Refused {
        /// Whether trying again may help.
        retry: bool,
    },
}

/// What `GET .../events` answered with `status` and, when the relay wrote the answer, the
/// `error.code` of its JSON body (`relay_code`) means. As over WebSocket: a session that
/// does not exist (404 `SESSION_NOT_FOUND`, 1008 "Session not found") or is full (409,
/// 1008 "Session full") is not retried; a refused token (401) is retried only with
/// `getToken` to give a fresh one (`fresh_tokens`, as 1008 "Token expired"); too many
/// connections (429) and a failing server (5xx) are retried.
pub fn refusal(status: u16, relay_code: Option<&str>, fresh_tokens: bool) -> Refusal {
    let Some(code) = relay_code else { return Refusal::Lost };
    match status {
        404 if code == "SESSION_NOT_FOUND" => Refusal::Refused { retry: false },
        404 => Refusal::Lost,
        401 => Refusal::Refused { retry: fresh_tokens },
        408 | 425 | 429 | 500..=599 => Refusal::Refused { retry: true },
        400..=499 => Refusal::Refused { retry: false },
        _ => Refusal::Lost,
    }
}

/// What a `POST` of frames answered means.
#[derive(Debug, PartialEq, Eq)]
pub enum Posted {
    /// Taken (202): the next batch may go.
    Taken,
    /// The member is gone, or whether the frames were taken is unknown (a network error,
    /// 401, 403, 404, 5xx): reconnect, and send them again.
    Gone,
    /// The body was too large for a batch of several frames (413): send them again, one
    /// frame a POST.
    OneByOne,
    /// The relay refused these frames (400, 413 for a single frame, 429): they are
    /// dropped and answered with an `error`, as over WebSocket.
    Refused,
}

/// What `POST <send url>` answered with `status` (`None`: a network error) means for a
/// batch of `frames` frames.
pub fn posted(status: Option<u16>, frames: usize) -> Posted {
    match status {
        Some(200..=299) => Posted::Taken,
        Some(413) if frames > 1 => Posted::OneByOne,
        Some(400 | 413 | 429) => Posted::Refused,
        _ => Posted::Gone,
    }
}

/// A batch's body, at most this many bytes unless its first frame alone is larger.
pub const MAX_BATCH_BYTES: usize = 64 * 1024;

/// Frames waiting to be POSTed: at most one POST is in flight, and what is sent meanwhile
/// goes in the next one, in order.
#[derive(Default)]
pub struct Posts {
    waiting: VecDeque<String>,
    in_flight: bool,
    /// Frames to send one per POST (after a 413 for a batch).
    singly: usize,
    /// Held back until `uncork`: many frames are about to be sent at once.
    corked: bool,
}

impl Posts {
    /// Adds a frame behind those waiting; gives the batch to POST now, if none is in flight.
    pub fn push(&mut self, frame: String) -> Option<Vec<String>> {
        self.waiting.push_back(frame);
        self.next()
    }

    /// Holds frames back until `uncork`, so that those sent at once go in one POST.
    pub fn cork(&mut self) {
        self.corked = true;
    }

    /// Stops holding frames back; gives the batch to POST now, if any.
    pub fn uncork(&mut self) -> Option<Vec<String>> {
        self.corked = false;
        self.next()
    }

    /// The POST in flight was answered: gives the next batch, if any.
    pub fn answered(&mut self) -> Option<Vec<String>> {
        self.in_flight = false;
        self.next()
    }

    /// The POST in flight was too large: its `frames` go again, first, one per POST.
    pub fn one_by_one(&mut self, frames: Vec<String>) -> Option<Vec<String>> {
        self.singly = frames.len();
        for frame in frames.into_iter().rev() {
            self.waiting.push_front(frame);
        }
        self.answered()
    }

    /// Whether a POST is in flight.
    pub fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// Takes the frames not yet POSTed, oldest first (the stream ended).
    pub fn take_waiting(&mut self) -> Vec<String> {
        self.singly = 0;
        self.waiting.drain(..).collect()
    }

    fn next(&mut self) -> Option<Vec<String>> {
        if self.in_flight || self.corked || self.waiting.is_empty() {
            return None;
        }
        let mut batch = vec![self.waiting.pop_front()?];
        if self.singly > 0 {
            self.singly -= 1;
        } else {
            let mut bytes = batch[0].len();
            while let Some(frame) = self.waiting.front() {
                if bytes + 1 + frame.len() > MAX_BATCH_BYTES {
                    break;
                }
                bytes += 1 + frame.len();
                batch.extend(self.waiting.pop_front());
            }
        }
        self.in_flight = true;
        Some(batch)
    }
}

/// The body and `Content-Type` of a POST of `frames`: one frame as it is (`text/plain`),
/// several one a line (`application/x-ndjson`).
pub fn post_body(frames: &[String]) -> (String, &'static str) {
    match frames {
        [one] => (one.clone(), "text/plain"),
        _ => (frames.join("\n"), "application/x-ndjson"),
    }
}

/// Decodes standard base64 (with or without padding); `None` if it is not base64.
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    fn value(byte: u8) -> Option<u32> {
        Some(match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let text = text.trim_end_matches('=').as_bytes();
    if text.len() % 4 == 1 {
        return None;
    }
    let mut bytes = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.chunks(4) {
        let mut group = 0u32;
        for (i, &byte) in chunk.iter().enumerate() {
            group |= value(byte)? << (18 - 6 * i);
        }
        let group = group.to_be_bytes();
        bytes.extend_from_slice(&group[1..chunk.len()]);
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, data: &str, id: Option<&str>) -> Event {
        Event { kind: kind.into(), data: data.into(), id: id.map(Into::into) }
    }

    #[test]
    fn finds_the_event_stream_of_a_websocket_url() {
        assert_eq!(
            events_url("ws://h/session/abc?positions=1&since=E:4&previous=c_1&token=T").as_deref(),
            Some("http://h/session/abc/events?positions=1&since=E:4&previous=c_1&token=T")
        );
        assert_eq!(events_url("wss://h:8443/").as_deref(), Some("https://h:8443/events"));
        assert_eq!(events_url("ws://h").as_deref(), Some("http://h/events"));
        assert_eq!(events_url("ws://h?token=T").as_deref(), Some("http://h/events?token=T"));
        assert_eq!(events_url("WSS://h/a/b/#frag").as_deref(), Some("https://h/a/b/events"));
        assert_eq!(events_url("https://h/session/x").as_deref(), Some("https://h/session/x/events"));
        assert_eq!(events_url("/session/x"), None);
        assert_eq!(events_url("ftp://h/x"), None);
        assert_eq!(events_url("ws:///x"), None);
    }

    #[test]
    fn reads_events_split_anywhere_with_any_line_ending() {
        let stream = concat!(
            "\u{FEFF}: ping\r\nevent: welcome\r\ndata: {\"a\":1}\r\n\r\n",
            "id: E:1\ndata: one\ndata:two\n\n",
            ": ping\r\r\ndata: x\r\rdata\n\n",
            "event: close\ndata: {\"code\":1000}\n\n",
        );
        let whole = EventParser::default().push(stream.as_bytes());
        let expected = vec![
            event("welcome", "{\"a\":1}", None),
            event("message", "one\ntwo", Some("E:1")),
            event("message", "x", None),
            event("message", "", None),
            event("close", "{\"code\":1000}", None),
        ];
        assert_eq!(whole, expected);
        // The same bytes in every possible pair of chunks, and one byte at a time.
        let bytes = stream.as_bytes();
        for split in 0..=bytes.len() {
            let mut parser = EventParser::default();
            let mut got = parser.push(&bytes[..split]);
            got.extend(parser.push(&bytes[split..]));
            assert_eq!(got, expected, "split at {split}");
            assert_eq!(parser.comments(), 2);
        }
        let mut parser = EventParser::default();
        let got: Vec<Event> = bytes.iter().flat_map(|b| parser.push(std::slice::from_ref(b))).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn keeps_text_whole_across_chunks_and_drops_an_unfinished_event() {
        let text = "data: héllo wörld ✓\n\ndata: unfinished";
        let bytes = text.as_bytes();
        for split in 0..bytes.len() {
            let mut parser = EventParser::default();
            let mut got = parser.push(&bytes[..split]);
            got.extend(parser.push(&bytes[split..]));
            assert_eq!(got, [event("message", "héllo wörld ✓", None)], "split at {split}");
        }
        let mut parser = EventParser::default();
        assert_eq!(parser.push(b"event: x\n\n"), [], "no data, no event");
        assert_eq!(parser.push(b"data: y\n\n"), [event("message", "y", None)], "the kind is reset after each blank line");
        assert_eq!(parser.push(b"retry: 10\nunknown\ndata:  two spaces\n\n"), [event("message", " two spaces", None)]);
        assert_eq!(EventParser::default().push(b"\xEF\xBBdata: a\n\n"), [], "a broken byte order mark is not skipped: the line is not data");
    }

    #[test]
    fn refusals_mirror_the_websocket_close_codes() {
        assert_eq!(refusal(404, Some("SESSION_NOT_FOUND"), true), Refusal::Refused { retry: false });
        assert_eq!(refusal(404, None, true), Refusal::Lost, "a 404 not from the relay: no event stream there");
        assert_eq!(refusal(404, Some("NOT_FOUND"), true), Refusal::Lost);
        assert_eq!(refusal(409, Some("SESSION_FULL"), true), Refusal::Refused { retry: false });
        assert_eq!(refusal(401, Some("UNAUTHORIZED"), true), Refusal::Refused { retry: true });
        assert_eq!(refusal(401, Some("UNAUTHORIZED"), false), Refusal::Refused { retry: false });
        assert_eq!(refusal(429, Some("TOO_MANY_CONNECTIONS"), false), Refusal::Refused { retry: true });
        assert_eq!(refusal(503, Some("UNAVAILABLE"), false), Refusal::Refused { retry: true });
        assert_eq!(refusal(403, Some("FORBIDDEN"), true), Refusal::Refused { retry: false });
        assert_eq!(refusal(502, None, false), Refusal::Lost);
        assert_eq!(refusal(200, None, false), Refusal::Lost, "a 200 that is not an event stream");
    }

    #[test]
    fn reads_what_a_post_answered() {
        assert_eq!(posted(Some(202), 3), Posted::Taken);
        assert_eq!(posted(None, 1), Posted::Gone);
        assert_eq!(posted(Some(404), 1), Posted::Gone);
        assert_eq!(posted(Some(403), 1), Posted::Gone);
        assert_eq!(posted(Some(502), 1), Posted::Gone);
        assert_eq!(posted(Some(413), 2), Posted::OneByOne);
        assert_eq!(posted(Some(413), 1), Posted::Refused);
        assert_eq!(posted(Some(429), 5), Posted::Refused);
        assert_eq!(posted(Some(400), 5), Posted::Refused);
    }

    #[test]
    fn posts_one_batch_at_a_time_in_order() {
        let mut posts = Posts::default();
        assert_eq!(posts.push("a".into()), Some(vec!["a".to_string()]));
        assert!(posts.in_flight());
        assert_eq!(posts.push("b".into()), None);
        assert_eq!(posts.push("c".into()), None);
        assert_eq!(posts.answered(), Some(vec!["b".to_string(), "c".to_string()]));
        assert_eq!(posts.one_by_one(vec!["b".into(), "c".into()]), Some(vec!["b".to_string()]));
        assert_eq!(posts.push("d".into()), None);
        assert_eq!(posts.answered(), Some(vec!["c".to_string()]));
        assert_eq!(posts.answered(), Some(vec!["d".to_string()]));
        assert_eq!(posts.answered(), None);
        assert!(!posts.in_flight());

        posts.cork();
        assert_eq!(posts.push("e".into()), None);
        assert_eq!(posts.push("f".into()), None);
        assert_eq!(posts.uncork(), Some(vec!["e".to_string(), "f".to_string()]));
        assert_eq!(posts.push("g".into()), None);
        assert_eq!(posts.take_waiting(), ["g"]);
    }

    #[test]
    fn keeps_a_batch_within_its_size() {
        let mut posts = Posts::default();
        posts.cork();
        let big = "x".repeat(MAX_BATCH_BYTES / 2);
        for _ in 0..3 {
            posts.push(big.clone());
        }
        assert_eq!(posts.uncork().map(|b| b.len()), Some(1), "two halves and a newline are over the limit");
        assert_eq!(posts.answered().map(|b| b.len()), Some(1));
        let huge = "y".repeat(MAX_BATCH_BYTES * 2);
        posts.push(huge.clone());
        posts.push("z".into());
        assert_eq!(posts.answered(), Some(vec![big]));
        assert_eq!(posts.answered(), Some(vec![huge]), "a frame larger than a batch still goes, alone");
        assert_eq!(posts.answered(), Some(vec!["z".to_string()]));
    }

    #[test]
    fn bodies_are_one_frame_or_ndjson() {
        assert_eq!(post_body(&["{\"type\":\"a\"}".into()]), ("{\"type\":\"a\"}".to_string(), "text/plain"));
        assert_eq!(post_body(&["1".into(), "2".into()]), ("1\n2".to_string(), "application/x-ndjson"));
    }

    #[test]
    fn decodes_base64() {
        assert_eq!(decode_base64("BwgJ").as_deref(), Some(&[7u8, 8, 9][..]));
        assert_eq!(decode_base64("AAAAAAAAAAUBAg==").as_deref(), Some(&[0u8, 0, 0, 0, 0, 0, 0, 5, 1, 2][..]));
        assert_eq!(decode_base64("AQ").as_deref(), Some(&[1u8][..]));
        assert_eq!(decode_base64("").as_deref(), Some(&[][..]));
        assert_eq!(decode_base64("A"), None);
        assert_eq!(decode_base64("A*=="), None);
    }

    #[test]
    fn checks_transports() {
        assert!(check_transports(&DEFAULT_TRANSPORTS, DEFAULT_FALLBACK_AFTER_MS).is_ok());
        assert!(check_transports(&[Transport::Sse], 1.0).is_ok());
        assert!(check_transports(&[], 1.0).is_err());
        assert!(check_transports(&[Transport::Sse, Transport::Sse], 1.0).is_err());
        assert!(check_transports(&[Transport::Sse], 0.0).is_err());
        assert!(check_transports(&[Transport::Sse], f64::NAN).is_err());
    }
}
