//! Event-stream members for the load generator, over raw HTTP/1.1 on a [`Conn`] (TCP, or
//! TLS over it): a member's `GET <session>/events` read as Server-Sent Events ([`EventStream`]), and a
//! sender's keep-alive connection to the send URL its welcome gave ([`Poster`]). No HTTP
//! client crate: the load generator's core should go to sockets, as it does for its
//! WebSockets, and a server may answer the stream chunked (the binary, `attach()`, the
//! bridge) or close-delimited (`listen()`), which a few lines here read alike.

use std::net::IpAddr;
use std::rc::Rc;

use memchr::memchr;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::net::{Conn, Dialer};

/// What a member reads into at a time: as the WebSocket clients' read buffer.
const READ_BUFFER: usize = 8 * 1024;
/// The most a response head may take before the answer is taken as broken.
const MAX_HEAD: usize = 16 * 1024;

/// Where a member's sends go, from its stream's welcome (`send: {url, token}`).
pub struct Welcome {
    pub url: String,
    pub token: String,
}

/// An open member's stream, past its response head.
pub struct EventStream {
    conn: Conn,
    buffer: Box<[u8]>,
    body: Body,
    events: Events,
}

/// How the response body is delimited.
enum Body {
    Chunked(Chunked),
    /// By the server closing the connection.
    UntilClose,
}

impl EventStream {
    /// Opens `path` on `server` (`host:port`), from `source` when given, and reads its
    /// events up to the welcome; what comes before or with it is presence, since nobody
    /// sends until every member is in.
    pub async fn open(dialer: &Dialer, server: &str, source: Option<IpAddr>, path: &str) -> Result<(Self, Welcome), String> {
        let mut conn = dialer.connect(server, source).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {server}\r\nAccept: text/event-stream\r\n\r\n");
        conn.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
        let (head, rest) = read_head(&mut conn, Vec::new()).await?;
        if head.status != 200 {
            return Err(format!("GET {path}: HTTP {} {}", head.status, String::from_utf8_lossy(&rest)));
        }
        let body = if head.chunked { Body::Chunked(Chunked::default()) } else { Body::UntilClose };
        let mut stream = Self { conn, buffer: vec![0; READ_BUFFER].into_boxed_slice(), body, events: Events::default() };
        let mut welcome = None;
        let mut open = stream.feed(&rest, &mut welcome_into(&mut welcome));
        while open && welcome.is_none() {
            open = stream.read(&mut welcome_into(&mut welcome)).await;
        }
        let welcome = welcome.ok_or_else(|| format!("GET {path}: the stream ended before its welcome"))?;
        let json: serde_json::Value = serde_json::from_slice(&welcome).map_err(|e| format!("the welcome: {e}"))?;
        let field = |name: &str| json["send"][name].as_str().map(str::to_owned).ok_or_else(|| format!("no send.{name} in the welcome"));
        Ok((stream, Welcome { url: field("url")?, token: field("token")? }))
    }

    /// Reads what the socket holds and hands each whole event to `on_event` (its name,
    /// empty for a message, and its data); false once the stream has ended.
    pub async fn read(&mut self, on_event: &mut impl FnMut(&[u8], &[u8])) -> bool {
        let read = match self.conn.read(&mut self.buffer).await {
            Ok(0) | Err(_) => return false,
            Ok(read) => read,
        };
        let Self { buffer, body, events, .. } = self;
        Self::feed_body(body, events, &buffer[..read], on_event)
    }

    fn feed(&mut self, bytes: &[u8], on_event: &mut impl FnMut(&[u8], &[u8])) -> bool {
        Self::feed_body(&mut self.body, &mut self.events, bytes, on_event)
    }

    fn feed_body(body: &mut Body, events: &mut Events, bytes: &[u8], on_event: &mut impl FnMut(&[u8], &[u8])) -> bool {
        match body {
            Body::UntilClose => {
                events.feed(bytes, on_event);
                true
            }
            Body::Chunked(chunked) => chunked.feed(bytes, &mut |part| events.feed(part, on_event)),
        }
    }
}

/// An event handler that keeps the welcome's data in `slot`.
fn welcome_into(slot: &mut Option<Vec<u8>>) -> impl FnMut(&[u8], &[u8]) + '_ {
    |name, data| {
        if name == b"welcome" {
            *slot = Some(data.to_vec());
        }
    }
}

/// A chunked body's framing, taken off as it arrives.
#[derive(Default)]
struct Chunked {
    state: ChunkState,
    /// A chunk-size line split across reads.
    size_line: Vec<u8>,
}

#[derive(Default, Clone, Copy)]
enum ChunkState {
    #[default]
    Size,
    Data(usize),
    /// The line break after a chunk's data.
    DataEnd,
    /// The last chunk came, or the framing was broken: either way the stream is over.
    Ended,
}

impl Chunked {
    /// Hands the data of `bytes` to `out`; false once the body has ended.
    fn feed(&mut self, mut bytes: &[u8], out: &mut impl FnMut(&[u8])) -> bool {
        while !bytes.is_empty() {
            match self.state {
                ChunkState::Size => {
                    let Some(end) = memchr(b'\n', bytes) else {
                        self.size_line.extend_from_slice(bytes);
                        return true;
                    };
                    self.size_line.extend_from_slice(&bytes[..end]);
                    bytes = &bytes[end + 1..];
                    let size = std::str::from_utf8(&self.size_line)
                        .ok()
                        .and_then(|line| usize::from_str_radix(line.split(';').next().unwrap_or_default().trim(), 16).ok());
                    self.size_line.clear();
                    self.state = match size {
                        Some(0) | None => ChunkState::Ended,
                        Some(size) => ChunkState::Data(size),
                    };
                }
                ChunkState::Data(left) => {
                    let taken = left.min(bytes.len());
                    out(&bytes[..taken]);
                    bytes = &bytes[taken..];
                    self.state = if taken == left { ChunkState::DataEnd } else { ChunkState::Data(left - taken) };
                }
                ChunkState::DataEnd => match memchr(b'\n', bytes) {
                    Some(end) => {
                        bytes = &bytes[end + 1..];
                        self.state = ChunkState::Size;
                    }
                    None => return true,
                },
                ChunkState::Ended => return false,
            }
        }
        !matches!(self.state, ChunkState::Ended)
    }
}

/// Server-Sent Events, line by line. Lines end with `\n` (a `\r` before it is dropped):
/// every server under test writes them so; a lone `\r` ending, which SSE also allows, is not read.
#[derive(Default)]
struct Events {
    /// A line split across reads.
    partial: Vec<u8>,
    name: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
}

impl Events {
    fn feed(&mut self, mut bytes: &[u8], on_event: &mut impl FnMut(&[u8], &[u8])) {
        while let Some(end) = memchr(b'\n', bytes) {
            if self.partial.is_empty() {
                self.line(&bytes[..end], on_event);
            } else {
                self.partial.extend_from_slice(&bytes[..end]);
                let line = std::mem::take(&mut self.partial);
                self.line(&line, on_event);
                self.partial = line;
                self.partial.clear();
            }
            bytes = &bytes[end + 1..];
        }
        self.partial.extend_from_slice(bytes);
    }

    fn line(&mut self, line: &[u8], on_event: &mut impl FnMut(&[u8], &[u8])) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if self.has_data {
                on_event(&self.name, &self.data);
            }
            self.name.clear();
            self.data.clear();
            self.has_data = false;
            return;
        }
        // A comment: the server's `: ping`.
        if line[0] == b':' {
            return;
        }
        let (field, value) = match memchr(b':', line) {
            Some(colon) => (&line[..colon], line[colon + 1..].strip_prefix(b" ").unwrap_or(&line[colon + 1..])),
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => {
                self.name.clear();
                self.name.extend_from_slice(value);
            }
            // `id:` (positions) and `retry:` change nothing the load generator checks.
            _ => {}
        }
    }
}

/// The parts of a response head the load generator acts on.
pub struct Head {
    pub status: u16,
    pub chunked: bool,
    pub content_length: Option<usize>,
    pub close: bool,
}

/// Reads until a response head is whole (`buffer` may hold its start already): the head,
/// and the bytes after it.
pub async fn read_head(conn: &mut (impl AsyncRead + Unpin), mut buffer: Vec<u8>) -> Result<(Head, Vec<u8>), String> {
    let mut chunk = [0u8; 1024];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buffer).map_err(|e| format!("a response head: {e}"))? {
            httparse::Status::Complete(length) => {
                let has = |name: &str, value: &str| {
                    response.headers.iter().any(|h| {
                        h.name.eq_ignore_ascii_case(name) && String::from_utf8_lossy(h.value).to_ascii_lowercase().contains(value)
                    })
                };
                let content_length = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok());
                let head = Head {
                    status: response.code.unwrap_or(0),
                    chunked: has("transfer-encoding", "chunked"),
                    content_length,
                    close: has("connection", "close"),
                };
                return Ok((head, buffer.split_off(length)));
            }
            httparse::Status::Partial if buffer.len() > MAX_HEAD => return Err("a response head past 16 KiB".into()),
            httparse::Status::Partial => {}
        }
        match conn.read(&mut chunk).await {
            Ok(0) => return Err("the connection closed before a response".into()),
            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
            Err(err) => return Err(err.to_string()),
        }
    }
}

/// A member's sends: frames one a line (application/x-ndjson), each POST waiting for its
/// answer, on one keep-alive connection (a new one after a server that closes it).
pub struct Poster {
    dialer: Rc<Dialer>,
    server: String,
    source: Option<IpAddr>,
    /// The request up to its `Content-Length` value.
    head: Vec<u8>,
    request: Vec<u8>,
    conn: Option<Conn>,
}

impl Poster {
    pub fn new(dialer: Rc<Dialer>, server: &str, source: Option<IpAddr>, welcome: &Welcome) -> Self {
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {server}\r\nX-Switchyard-Send: {}\r\nContent-Type: application/x-ndjson\r\nContent-Length: ",
            welcome.url, welcome.token
        );
        Self { dialer, server: server.to_owned(), source, head: head.into_bytes(), request: Vec::new(), conn: None }
    }

    /// POSTs `body` and returns the answer's status once its body is read.
    pub async fn post(&mut self, body: &[u8]) -> Result<u16, String> {
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => self.dialer.connect(&self.server, self.source).await?,
        };
        self.request.clear();
        self.request.extend_from_slice(&self.head);
        self.request.extend_from_slice(format!("{}\r\n\r\n", body.len()).as_bytes());
        self.request.extend_from_slice(body);
        conn.write_all(&self.request).await.map_err(|e| e.to_string())?;
        let (head, mut rest) = read_head(&mut conn, Vec::new()).await?;
        if head.chunked {
            return Err(format!("HTTP {}: a chunked answer to a send", head.status));
        }
        // Without a length the body runs to the close.
        let length = head.content_length.unwrap_or(usize::MAX);
        let mut chunk = [0u8; 1024];
        while rest.len() < length {
            match conn.read(&mut chunk).await {
                Ok(0) if head.content_length.is_none() => break,
                Ok(0) => return Err("the connection closed inside an answer".into()),
                Ok(read) => rest.extend_from_slice(&chunk[..read]),
                Err(err) => return Err(err.to_string()),
            }
        }
        match head.close {
            // Read to the server's close before closing: the side that closes first keeps
            // the connection in TIME_WAIT, and with a new socket for each POST the load
            // generator's ephemeral ports would run out within seconds.
            true => while matches!(conn.read(&mut chunk).await, Ok(read) if read > 0) {},
            false if head.content_length.is_some() => self.conn = Some(conn),
            false => {}
        }
        if head.status != 202 {
            return Err(format!("HTTP {}: {}", head.status, String::from_utf8_lossy(&rest)));
        }
        Ok(head.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events_of(body: &mut Body, events: &mut Events, pieces: &[&[u8]]) -> (Vec<(String, String)>, bool) {
        let mut seen = Vec::new();
        let mut open = true;
        for piece in pieces {
            open = EventStream::feed_body(body, events, piece, &mut |name, data| {
                seen.push((String::from_utf8_lossy(name).into_owned(), String::from_utf8_lossy(data).into_owned()))
            });
        }
        (seen, open)
    }

    #[test]
    fn reads_events_across_any_split_of_a_chunked_body() {
        let text = b"event: welcome\ndata: {\"send\":{}}\n\n: ping\n\nid: E:1\ndata: a\ndata: b\n\ndata: {\"x\":1}\r\n\r\n";
        let mut chunked = Vec::new();
        for part in text.chunks(7) {
            chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            chunked.extend_from_slice(part);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let expected = vec![("welcome".into(), "{\"send\":{}}".into()), (String::new(), "a\nb".into()), (String::new(), "{\"x\":1}".into())];
        for split in [1, 2, 3, 5, 64, chunked.len()] {
            let pieces: Vec<&[u8]> = chunked.chunks(split).collect();
            let (seen, open) = events_of(&mut Body::Chunked(Chunked::default()), &mut Events::default(), &pieces);
            assert_eq!(seen, expected, "split every {split} bytes");
            assert!(!open, "the last chunk ends the stream");
        }
        let (seen, open) = events_of(&mut Body::UntilClose, &mut Events::default(), &text.chunks(4).collect::<Vec<_>>());
        assert_eq!(seen, expected);
        assert!(open, "a close-delimited body ends with the connection only");
    }
}
