//! A WebSocket listener with no HTTP server in front, for the addon's `listen()`: each
//! connection it accepts must open with an upgrade request, read straight from the socket
//! (at most [`MAX_HEAD_BYTES`], within the [`Waiting`] deadline) and parsed with
//! `httparse`. No request or socket object exists beyond that buffer, so a connection
//! costs what the binary's does. What the request becomes is the [`Upgrades`]' call:
//! a connection, or an HTTP refusal written with [`answer`].

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::handshake::http_error;
use crate::socket::Socket;
use crate::tls::Tls;
use crate::waiting::{Slot, Waiting, MAX_HEAD_BYTES};
use crate::CLOSE_TIMEOUT;

/// Headers one request may have; more is answered 431, as a head too long is.
const MAX_HEADERS: usize = 64;

/// The headers of which Node's `IncomingMessage.headers` keeps only the first.
const SINGLE_HEADERS: [&str; 18] = [
    "age", "authorization", "content-length", "content-type", "etag", "expires", "from", "host", "if-modified-since",
    "if-unmodified-since", "last-modified", "location", "max-forwards", "proxy-authorization", "referer", "retry-after",
    "server", "user-agent",
];

/// An upgrade request as read from the socket.
#[derive(Clone)]
pub struct Request {
    /// The request's method, as sent (`GET` for an upgrade).
    pub method: String,
    /// The request target: its path and query.
    pub url: String,
    /// Names in lower case.
    headers: Vec<(String, String)>,
    /// The client's IP address.
    pub address: IpAddr,
}

impl Request {
    /// The first value of a header, by its lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The headers as Node's `IncomingMessage.headers` shows them, for a host that shows
    /// the request to JavaScript: of a repeated header, the first where Node keeps only one
    /// (`authorization`, `host`, `user-agent` and the like), `cookie` joined with `; `, any
    /// other with `, ` (a request carries no `set-cookie`).
    pub fn headers_as_node_folds_them(&self) -> Vec<(&str, String)> {
        let mut folded: Vec<(&str, String)> = Vec::new();
        for (name, value) in &self.headers {
            match folded.iter_mut().find(|(n, _)| n == name) {
                Some(_) if SINGLE_HEADERS.contains(&name.as_str()) => {}
                Some((_, values)) => {
                    values.push_str(if name == "cookie" { "; " } else { ", " });
                    values.push_str(value);
                }
                None => folded.push((name, value.clone())),
            }
        }
        folded
    }
}

/// What the listener hands its connections to.
pub trait Upgrades: Send + Sync + 'static {
    /// A whole request; `rest` is what the client sent after it. The connection keeps its
    /// place among the unfinished handshakes (`slot`) until this is done, or until it is
    /// dropped sooner (a connection that will carry no handshake).
    fn upgrade(&self, socket: Socket, request: Request, rest: Bytes, slot: Slot) -> impl Future<Output = ()> + Send;
    /// A connection closed before it sent a whole request: over a cap, too slow, too long
    /// or not HTTP.
    fn refused(&self);
}

/// Why no request came.
pub enum HeadError {
    /// The connection closed (or failed) first.
    Closed,
    /// 431: longer than [`MAX_HEAD_BYTES`], or more than 64 headers.
    TooLarge,
    /// 400: not an HTTP/1.1 request.
    Malformed,
}

/// Accepts connections until `stop` is cancelled; each reads its request in a task of its
/// own (after its TLS handshake, with `tls`), holding a place among the `waiting` until then.
pub async fn serve(listener: TcpListener, waiting: Arc<Waiting>, stop: CancellationToken, upgrades: Arc<impl Upgrades>, tls: Option<Arc<Tls>>) {
    loop {
        let (tcp, peer, slot) = tokio::select! {
            accepted = waiting.accept(&listener, || upgrades.refused()) => accepted,
            _ = stop.cancelled() => return,
        };
        let (upgrades, deadline, tls) = (upgrades.clone(), waiting.limits().deadline, tls.clone());
        tokio::spawn(async move {
            let read = tokio::time::timeout(deadline, async {
                let mut socket = match &tls {
                    Some(tls) => tls.accept(tcp).await?,
                    None => Socket::Plain(tcp),
                };
                let read = read_request(&mut socket, peer.ip()).await;
                Some((socket, read))
            })
            .await;
            match read {
                Ok(Some((socket, Ok((request, rest))))) => upgrades.upgrade(socket, request, rest, slot).await,
                Ok(Some((_, Err(HeadError::Closed)))) => {}
                // A failed TLS handshake (or plain HTTP to a TLS port, answered 400).
                Ok(None) => upgrades.refused(),
                Ok(Some((socket, Err(HeadError::TooLarge)))) => {
                    upgrades.refused();
                    answer(socket, http_error(431, "Request Header Fields Too Large", "The request head is too long", "")).await;
                }
                Ok(Some((socket, Err(HeadError::Malformed)))) => {
                    upgrades.refused();
                    answer(socket, http_error(400, "Bad Request", "Expected an HTTP/1.1 WebSocket upgrade request", "")).await;
                }
                Err(_elapsed) => upgrades.refused(),
            }
        });
    }
}

/// Reads until the request head is whole: the request, and the bytes after it.
pub async fn read_request(tcp: &mut (impl AsyncRead + Unpin), address: IpAddr) -> Result<(Request, Bytes), HeadError> {
    let mut buffer = vec![0; MAX_HEAD_BYTES];
    let mut filled = 0;
    loop {
        if filled == buffer.len() {
            return Err(HeadError::TooLarge);
        }
        match tcp.read(&mut buffer[filled..]).await {
            Ok(0) | Err(_) => return Err(HeadError::Closed),
            Ok(read) => filled += read,
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&buffer[..filled]) {
            Ok(httparse::Status::Complete(len)) => {
                let request = Request {
                    method: parsed.method.unwrap_or_default().to_owned(),
                    url: parsed.path.unwrap_or_default().to_owned(),
                    headers: parsed
                        .headers
                        .iter()
                        .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
                        .collect(),
                    address,
                };
                return Ok((request, Bytes::copy_from_slice(&buffer[len..filled])));
            }
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
            Err(_) => return Err(HeadError::Malformed),
        }
    }
}

/// Writes a whole HTTP response and closes, after the client has read it (its EOF) or
/// [`CLOSE_TIMEOUT`]: closing with its bytes unread would reset the connection, and the
/// client might never see the answer.
pub async fn answer(mut tcp: impl AsyncRead + AsyncWrite + Unpin, response: Vec<u8>) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        tcp.write_all(&response).await?;
        tcp.shutdown().await?;
        let mut sink = [0u8; 1024];
        while tcp.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
}
