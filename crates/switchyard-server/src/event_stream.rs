//! Members over HTTP, for networks that refuse the WebSocket upgrade: what the relay sends
//! a member goes down a Server-Sent Events stream, what the member sends comes in by POST
//! with the send token its stream's welcome gave it. Such a member is a member like any
//! other (the relay sees only its outbox), so this module is the transport alone: the
//! send tokens ([`SendTokens`]), a POST read into frames and handed to the relay
//! ([`send`]), and the stream's text ([`StreamText`]). Every host shares these; [`native`]
//! runs a stream on the native runtime (the binary, `listen()`, `attach()`), and the
//! addon's bridge writes one through Node's `ServerResponse`.

use std::borrow::Cow;

use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use dashmap::DashMap;
use rand::distr::{Alphanumeric, SampleString};
use serde_json::json;
use switchyard_core::{ConnId, ConnectionRefusal, FrameKind, Received, Relay, Route};

use crate::auth::constant_time_eq;

#[cfg(not(target_family = "wasm"))]
pub mod native;

/// The response headers of an event stream, besides its status (200). Proxies must not
/// buffer or transform it.
pub const HEADERS: [(&str, &str); 3] =
    [("content-type", "text/event-stream"), ("cache-control", "no-cache, no-transform"), ("x-accel-buffering", "no")];

/// What every answer of the two routes carries, and a preflight answers with, so a page
/// of another origin reaches them as it reaches the WebSocket: a stream and a send are
/// authorized by their tokens, never by cookies.
pub const CORS: [(&str, &str); 4] = [
    ("access-control-allow-origin", "*"),
    ("access-control-allow-methods", "GET, POST, OPTIONS"),
    ("access-control-allow-headers", "authorization, content-type, last-event-id, x-switchyard-send"),
    ("access-control-max-age", "600"),
];

/// The header a send carries its member's token in.
pub const SEND_TOKEN_HEADER: &str = "x-switchyard-send";

/// The content type of a send holding several frames, one a line, in order.
pub const NDJSON: &str = "application/x-ndjson";

/// The most a send's body may hold: one message of `maxMessageBytes`, or a batch of up to
/// this much.
pub fn body_limit(relay: &Relay) -> usize {
    relay.config().max_message_bytes.max(1 << 20)
}

/// Which of the two routes beside a WebSocket path a request is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET <path>/events`: open a member's stream.
    Events,
    /// `POST <path>/send`: a member's frames.
    Send,
}

impl Endpoint {
    /// Splits `/session/abc/events?positions=1` into the WebSocket path it stands beside,
    /// with its query (`/session/abc?positions=1`), and the endpoint; `None` for a path
    /// ending in neither.
    pub fn split(url: &str) -> Option<(String, Endpoint)> {
        let (path, query) = url.split_once('?').map_or((url, ""), |(path, query)| (path, query));
        let (base, last) = path.rsplit_once('/')?;
        let endpoint = match last {
            "events" => Endpoint::Events,
            "send" => Endpoint::Send,
            _ => return None,
        };
        let base = if base.is_empty() { "/" } else { base };
        Some((if query.is_empty() { base.to_owned() } else { format!("{base}?{query}") }, endpoint))
    }
}

/// The send URL a stream's welcome gives: the path it was reached at, with its last
/// segment (`events`) replaced by `send`, and no query.
pub fn send_url(events_url: &str) -> String {
    let path = events_url.split(['?', '#']).next().unwrap_or_default();
    match path.rsplit_once('/') {
        Some((base, _)) => format!("{base}/send"),
        None => "/send".to_owned(),
    }
}

/// The URL admission reads what a stream resumes from: a browser's `Last-Event-ID` on
/// its own reconnect means `since`, unless the query says otherwise.
pub fn resume_url<'a>(url: &'a str, last_event_id: Option<&str>) -> Cow<'a, str> {
    match last_event_id.filter(|id| !id.is_empty()) {
        Some(id) if !url.contains("since=") => {
            let id = percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC);
            let separator = if url.contains('?') { '&' } else { '?' };
            Cow::Owned(format!("{url}{separator}since={id}"))
        }
        _ => Cow::Borrowed(url),
    }
}

/// The HTTP answer to a stream the relay refused: status, error code and message.
pub fn refusal_status(refusal: ConnectionRefusal) -> (u16, &'static str) {
    match refusal {
        ConnectionRefusal::SessionNotFound => (404, "SESSION_NOT_FOUND"),
        ConnectionRefusal::SessionFull => (409, "SESSION_FULL"),
        ConnectionRefusal::ShuttingDown => (503, "UNAVAILABLE"),
        ConnectionRefusal::ConnectionLimit => (429, "CONNECTION_LIMIT"),
        ConnectionRefusal::TooManyConnections => (429, "RATE_LIMITED"),
        ConnectionRefusal::Unauthorized => (401, "UNAUTHORIZED"),
    }
}

/// The HTTP API's error body: `{"error":{"code","message"}}`.
pub fn error_body(code: &str, message: &str) -> String {
    json!({ "error": { "code": code, "message": message } }).to_string()
}

/// Why a send was not taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    /// 400: not UTF-8 JSON text, or empty.
    #[error("The body must be {0}")]
    Malformed(&'static str),
    /// 403: the token is not this member's.
    #[error("The send token is not a member's of this session")]
    Forbidden,
    /// 404: the session does not exist.
    #[error("No session with id {0:?}")]
    SessionNotFound(String),
    /// 404: the member's stream has ended.
    #[error("No open member holds this send token: its stream has ended")]
    MemberGone,
    /// 413: a frame longer than `maxMessageBytes`, or a body past [`body_limit`].
    #[error("The message is longer than the server takes ({0} bytes)")]
    TooLarge(usize),
    /// 429: past the member's message rate; the frames before it were taken.
    #[error("Rate limit exceeded")]
    RateLimited,
}

impl SendError {
    /// The HTTP status it is answered with.
    pub fn status(&self) -> u16 {
        match self {
            SendError::Malformed(_) => 400,
            SendError::Forbidden => 403,
            SendError::SessionNotFound(_) | SendError::MemberGone => 404,
            SendError::TooLarge(_) => 413,
            SendError::RateLimited => 429,
        }
    }

    /// The error code of its body.
    pub fn code(&self) -> &'static str {
        match self {
            SendError::Malformed(_) => "INVALID_REQUEST",
            SendError::Forbidden => "FORBIDDEN",
            SendError::SessionNotFound(_) => "SESSION_NOT_FOUND",
            SendError::MemberGone => "MEMBER_NOT_FOUND",
            SendError::TooLarge(_) => "MESSAGE_TOO_LARGE",
            SendError::RateLimited => "RATE_LIMITED",
        }
    }

    /// Its body: `{"error":{"code","message"}}`.
    pub fn body(&self) -> String {
        error_body(self.code(), &self.to_string())
    }
}

/// Random characters in a send token: about 190 bits.
const SECRET_LEN: usize = 32;

/// The send tokens of the streams open on this node: a token names its member (by its
/// connection id, so a closed member's token says so) and proves it holds the stream.
#[derive(Default)]
pub struct SendTokens {
    members: DashMap<ConnId, Member>,
}

struct Member {
    secret: Box<str>,
    session: Option<Box<str>>,
}

impl SendTokens {
    /// A new token for `conn`, a member of `route`'s session.
    pub fn issue(&self, conn: ConnId, route: &Route) -> String {
        let secret = Alphanumeric.sample_string(&mut rand::rng(), SECRET_LEN);
        let session = match route {
            Route::Session(id) => Some(id.as_str().into()),
            Route::Sessionless => None,
        };
        let token = format!("{}.{secret}", conn.0);
        self.members.insert(conn, Member { secret: secret.into(), session });
        token
    }

    /// The stream of `conn` has ended: its token is refused from now on.
    pub fn forget(&self, conn: ConnId) {
        self.members.remove(&conn);
    }

    /// The member `token` names, when it was sent to `route`'s send URL.
    fn member(&self, relay: &Relay, token: Option<&str>, route: &Route) -> Result<ConnId, SendError> {
        let session = match route {
            Route::Session(id) => Some(id.as_str()),
            Route::Sessionless => None,
        };
        let (conn, secret) = token.and_then(|token| token.split_once('.')).ok_or(SendError::Forbidden)?;
        let conn = ConnId(conn.parse().map_err(|_| SendError::Forbidden)?);
        let Some(member) = self.members.get(&conn) else {
            return match session {
                Some(id) if relay.session(id).is_none() => Err(SendError::SessionNotFound(id.to_owned())),
                _ => Err(SendError::MemberGone),
            };
        };
        if !constant_time_eq(member.secret.as_bytes(), secret.as_bytes()) || member.session.as_deref() != session {
            return Err(SendError::Forbidden);
        }
        Ok(conn)
    }
}

/// Hands a send's frames to the relay, in order, as its member's: `token` from the
/// [`SEND_TOKEN_HEADER`], `route` the session of the URL it was sent to. Every frame is
/// checked before any is taken, so a bad body changes nothing. Returns how many were taken.
pub fn send(relay: &Relay, tokens: &SendTokens, route: &Route, token: Option<&str>, content_type: Option<&str>, body: Bytes) -> Result<usize, SendError> {
    let conn = tokens.member(relay, token, route)?;
    if body.len() > body_limit(relay) {
        return Err(SendError::TooLarge(body_limit(relay)));
    }
    let text = std::str::from_utf8(&body).map_err(|_| SendError::Malformed("UTF-8 text"))?;
    let ndjson = content_type.is_some_and(|t| t.split(';').next().unwrap_or_default().trim().eq_ignore_ascii_case(NDJSON));
    let frames: Vec<&str> = match ndjson {
        true => text.split('\n').map(|line| line.strip_suffix('\r').unwrap_or(line)).filter(|line| !line.trim().is_empty()).collect(),
        false => vec![text],
    };
    let max = relay.config().max_message_bytes;
    if frames.is_empty() || frames.iter().any(|frame| frame.trim().is_empty()) {
        return Err(SendError::Malformed("a message (JSON text), or messages one a line with Content-Type: application/x-ndjson"));
    }
    for frame in &frames {
        if frame.len() > max {
            return Err(SendError::TooLarge(max));
        }
        serde_json::from_str::<serde::de::IgnoredAny>(frame).map_err(|_| SendError::Malformed("JSON text (one message a line for application/x-ndjson)"))?;
    }
    for frame in &frames {
        // Each frame shares the body's bytes, as a WebSocket frame shares its read.
        match relay.receive(conn, switchyard_core::Frame::text(body.slice_ref(frame.as_bytes())), switchyard_core::now()) {
            Received::Taken => {}
            Received::RateLimited => return Err(SendError::RateLimited),
            Received::Gone => return Err(SendError::MemberGone),
            Received::TooLarge => return Err(SendError::TooLarge(max)),
        }
    }
    Ok(frames.len())
}

/// The prefix of a session publication for a member with positions: its offset follows.
const PUBLICATION_PREFIX: &[u8] = br#"{"type":"publication","offset":"#;

/// One stream's text: each frame as an event, in the order the relay queued them. The
/// first frame is the welcome, which gains the member's send URL and token.
pub struct StreamText {
    /// The member asked for positions: publications carry `id: <epoch>:<offset>`.
    positions: bool,
    /// The session stream's epoch, from the welcome.
    epoch: Option<Box<str>>,
    /// The send URL and token, until the welcome has carried them.
    send: Option<Box<(String, String)>>,
}

impl StreamText {
    /// The text of a member's stream; `positions` when its URL asked for them.
    pub fn new(positions: bool, send_url: String, token: String) -> Self {
        Self { positions, epoch: None, send: Some(Box::new((send_url, token))) }
    }

    /// Appends one frame the relay sent the member.
    pub fn frame(&mut self, kind: FrameKind, payload: &[u8], out: &mut BytesMut) {
        match kind {
            FrameKind::Ping => out.put_slice(b": ping\n\n"),
            FrameKind::Text => match self.send.take() {
                Some(send) => self.welcome(payload, *send, out),
                None => {
                    if let Some(offset) = self.publication_offset(payload) {
                        self.id(offset, out);
                    }
                    data_lines(payload, out);
                }
            },
            FrameKind::Binary => {
                out.put_slice(b"event: binary\n");
                if let (true, Some(offset)) = (self.positions, payload.get(..8)) {
                    self.id(u64::from_be_bytes(offset.try_into().unwrap_or_default()), out);
                }
                out.put_slice(b"data: ");
                out.put_slice(base64::engine::general_purpose::STANDARD.encode(payload).as_bytes());
                out.put_slice(b"\n\n");
            }
        }
    }

    /// Appends the end of the stream: the close the relay asked for.
    pub fn close(code: u16, reason: &str, out: &mut BytesMut) {
        out.put_slice(b"event: close\ndata: ");
        out.put_slice(json!({ "code": code, "reason": reason }).to_string().as_bytes());
        out.put_slice(b"\n\n");
    }

    /// The welcome as the relay wrote it, with `send` as its last field.
    fn welcome(&mut self, payload: &[u8], (url, token): (String, String), out: &mut BytesMut) {
        #[derive(serde::Deserialize)]
        struct Welcome {
            epoch: Option<Box<str>>,
        }
        self.epoch = serde_json::from_slice::<Welcome>(payload).ok().and_then(|welcome| welcome.epoch);
        let open = payload.strip_suffix(b"}").unwrap_or(payload);
        let send = json!({ "url": url, "token": token });
        out.put_slice(b"event: welcome\n");
        data_lines(&[open, b",\"send\":", send.to_string().as_bytes(), b"}"].concat(), out);
    }

    fn publication_offset(&self, payload: &[u8]) -> Option<u64> {
        let digits = payload.strip_prefix(PUBLICATION_PREFIX).filter(|_| self.positions)?;
        let end = digits.iter().position(|b| !b.is_ascii_digit())?;
        std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
    }

    fn id(&self, offset: u64, out: &mut BytesMut) {
        if let Some(epoch) = &self.epoch {
            out.put_slice(format!("id: {epoch}:{offset}\n").as_bytes());
        }
    }
}

/// `data:` lines of an event, one a line of `payload` (SSE has no escape for a line break),
/// and the blank line that ends it.
fn data_lines(payload: &[u8], out: &mut BytesMut) {
    let mut rest = payload;
    loop {
        let end = rest.iter().position(|&b| b == b'\n' || b == b'\r').unwrap_or(rest.len());
        out.put_slice(b"data: ");
        out.put_slice(&rest[..end]);
        out.put_u8(b'\n');
        if end == rest.len() {
            break;
        }
        let skip = if rest[end..].starts_with(b"\r\n") { 2 } else { 1 };
        rest = &rest[end + skip..];
    }
    out.put_u8(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(stream: &mut StreamText, kind: FrameKind, payload: &[u8]) -> String {
        let mut out = BytesMut::new();
        stream.frame(kind, payload, &mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn the_welcome_gains_the_send_url_and_publications_their_position() {
        let mut stream = StreamText::new(true, "/session/s/send".into(), "7.abc".into());
        let welcome = text(&mut stream, FrameKind::Text, br#"{"type":"client_connected","epoch":"E1","offset":3}"#);
        assert_eq!(welcome, "event: welcome\ndata: {\"type\":\"client_connected\",\"epoch\":\"E1\",\"offset\":3,\"send\":{\"token\":\"7.abc\",\"url\":\"/session/s/send\"}}\n\n");
        let publication = br#"{"type":"publication","offset":4,"from":"c_1","data":{}}"#;
        assert_eq!(text(&mut stream, FrameKind::Text, publication), format!("id: E1:4\ndata: {}\n\n", std::str::from_utf8(publication).unwrap()));
        let channel = br#"{"type":"publication","channel":"n","offset":9}"#;
        assert!(!text(&mut stream, FrameKind::Text, channel).contains("id:"), "a channel's position is not the session's");
        let binary = [0, 0, 0, 0, 0, 0, 0, 5, 0xff];
        assert_eq!(text(&mut stream, FrameKind::Binary, &binary), "event: binary\nid: E1:5\ndata: AAAAAAAAAAX/\n\n");
        assert_eq!(text(&mut stream, FrameKind::Ping, b""), ": ping\n\n");
    }

    #[test]
    fn a_line_break_splits_data_lines() {
        let mut stream = StreamText::new(false, String::new(), String::new());
        text(&mut stream, FrameKind::Text, b"{}");
        assert_eq!(text(&mut stream, FrameKind::Text, b"a\nb\r\nc\rd"), "data: a\ndata: b\ndata: c\ndata: d\n\n");
        assert_eq!(text(&mut stream, FrameKind::Text, b"{\"type\":\"publication\",\"offset\":1}"), "data: {\"type\":\"publication\",\"offset\":1}\n\n");
    }

    #[test]
    fn endpoints_stand_beside_the_websocket_path() {
        assert_eq!(Endpoint::split("/session/a/events?positions=1"), Some(("/session/a?positions=1".into(), Endpoint::Events)));
        assert_eq!(Endpoint::split("/events"), Some(("/".into(), Endpoint::Events)));
        assert_eq!(Endpoint::split("/session/a/send"), Some(("/session/a".into(), Endpoint::Send)));
        assert_eq!(Endpoint::split("/session/a"), None);
        assert_eq!(send_url("/ws/session/a/events?since=E:1"), "/ws/session/a/send");
        assert_eq!(resume_url("/s/a/events?positions=1", Some("E:4")), "/s/a/events?positions=1&since=E%3A4");
        assert_eq!(resume_url("/s/a/events?since=E:2", Some("E:4")), "/s/a/events?since=E:2");
    }
}
