//! Fuzz target `handshake`: the native transport's side of a WebSocket upgrade, fed
//! arbitrary bytes in chunks as a server reads them from a socket.
//!
//! `switchyard-server` leaves the HTTP request's syntax to whoever received it (hyper in
//! the binary, Node's parser for a taken-over socket), so this target splits the request
//! with httparse, hyper's own parser, retrying as each chunk arrives, and then runs
//! everything of the server's that reads it: [`handshake::accept`] on the headers as
//! hyper (first value) and Node (repeated values joined with `, `) present them,
//! [`auth::find_token`] and [`auth::Verifier::verify`] on the URL and headers, the
//! permessage-deflate offers ([`deflate::negotiate`]), the
//! session id of `/session/{id}` routes, the `101` or `400` answer, and the codec on the
//! bytes that came after the request (the `head` a taken-over socket starts with). Any
//! panic is a bug: all of it happens before a client is authenticated.
//!
//! Input layout: byte 0 picks how the rest is cut into reads (see `chunks`); the rest
//! is what the client sends.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use switchyard_fuzz::chunks;
use switchyard_core::SessionId;
use switchyard_server::auth::{self, JwtConfig, Keys, Verifier};
use switchyard_server::codec::{Decoder, Limits};
use switchyard_server::deflate::{self, CompressionConfig};
use switchyard_server::handshake::{self, HandshakeError};

/// Node's default `--max-http-header-size`: a longer request is refused, not buffered.
const MAX_REQUEST_BYTES: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

static VERIFIER: OnceLock<Verifier> = OnceLock::new();

/// A parsed request, its header values as strings the way the servers give them.
struct Request<'a> {
    method: &'a str,
    url: &'a str,
    headers: Vec<(String, &'a str)>,
}

impl<'a> Request<'a> {
    /// hyper's `HeaderMap::get`: the first value of that name.
    fn first(&self, name: &str) -> Option<&'a str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    /// Node's `request.headers`: repeated values joined with `, `.
    fn joined(&self) -> Vec<(String, String)> {
        let mut joined: Vec<(String, String)> = Vec::new();
        for (name, value) in &self.headers {
            match joined.iter_mut().find(|(n, _)| n == name) {
                Some((_, all)) => {
                    all.push_str(", ");
                    all.push_str(value);
                }
                None => joined.push((name.clone(), (*value).to_owned())),
            }
        }
        joined
    }
}

fn lookup<'a>(headers: &'a [(String, String)]) -> impl Fn(&str) -> Option<&'a str> + Copy {
    move |name| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// What the server answers to an upgrade request: the `101` or the `400`.
fn answer<'a>(method: &str, header: impl Fn(&str) -> Option<&'a str> + Copy, verifier: &Verifier) -> Vec<u8> {
    let token = auth::find_token("/", header);
    if let Some((token, _)) = token {
        let _ = verifier.verify(token);
    }
    match handshake::accept(method, header) {
        Ok(accept) => {
            assert_eq!(accept.len(), 28, "an accept value is 20 bytes in base64");
            let protocol = token.is_some().then_some(auth::TOKEN_SUBPROTOCOL);
            let deflate = deflate::negotiate(header("sec-websocket-extensions"), &CompressionConfig::default());
            let extensions = deflate.map(|deflate| deflate.response());
            let response = handshake::switching_protocols(&accept, protocol, extensions.as_deref());
            assert!(response.starts_with(b"HTTP/1.1 101 ") && response.ends_with(b"\r\n\r\n"));
            response
        }
        Err(error) => {
            let response = handshake::bad_request(&error);
            assert!(response.starts_with(b"HTTP/1.1 400 "));
            if error == HandshakeError::UnsupportedVersion {
                assert!(response.windows(25).any(|w| w == b"Sec-WebSocket-Version: 13"));
            }
            response
        }
    }
}

fn serve(request: &Request, head: &[u8], verifier: &Verifier) {
    // The binary's routes, and token auth on the whole URL.
    if let Some(id) = request.url.strip_prefix("/session/") {
        let id = id.split(['?', '#']).next().unwrap_or_default();
        if let Ok(parsed) = SessionId::parse(id) {
            assert_eq!(parsed.as_str(), id);
        }
    }
    if let Some((token, _)) = auth::find_token(request.url, |name| request.first(name)) {
        let _ = verifier.verify(token);
    }
    answer(request.method, |name| request.first(name), verifier);
    let node = request.joined();
    let taken = answer(request.method, lookup(&node), verifier);
    // A taken-over socket starts with what the client sent after its request.
    if taken.starts_with(b"HTTP/1.1 101 ") && !head.is_empty() {
        let mut head = head.to_vec();
        let _ = Decoder::default().decode(Limits { max_message_bytes: 64 * 1024, inflating: false }, &mut head, |_| {});
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((sizes, stream)) = chunks(data) else { return };
    let verifier = VERIFIER.get_or_init(|| {
        Verifier::new(JwtConfig {
            keys: Keys::Secret(b"a secret long enough for HS256 tests".to_vec()),
            issuer: Some("https://issuer".into()),
            organization_claim: Some("org".into()),
            ..JwtConfig::default()
        })
        .expect("a valid verifier")
    });
    let mut buffer: Vec<u8> = Vec::new();
    let mut offset = 0;
    for size in sizes {
        buffer.extend_from_slice(&stream[offset..offset + size]);
        offset += size;
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&buffer) {
            Ok(httparse::Status::Partial) if buffer.len() <= MAX_REQUEST_BYTES => continue,
            // Too long, or not HTTP: refused before the handshake is looked at.
            Ok(httparse::Status::Partial) | Err(_) => return,
            Ok(httparse::Status::Complete(length)) => {
                let (Some(method), Some(url)) = (parsed.method, parsed.path) else { return };
                let headers = parsed
                    .headers
                    .iter()
                    .filter_map(|h| Some((h.name.to_ascii_lowercase(), std::str::from_utf8(h.value).ok()?)))
                    .collect();
                let request = Request { method, url, headers };
                serve(&request, &buffer[length..], verifier);
                return;
            }
        }
    }
});
