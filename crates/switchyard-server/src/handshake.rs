//! The server's half of the WebSocket opening handshake (RFC 6455 section 4.2): checks
//! an upgrade request's headers and writes the `101` answer, or the `400` refusal.
//!
//! The request itself is parsed by whoever received it (hyper in the binary, Node's
//! HTTP parser for a taken-over socket); this only reads header values.

use std::fmt;

use tungstenite::handshake::derive_accept_key;

/// Why an upgrade request is refused with HTTP 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// The request's method is not GET.
    NotGet,
    /// `Upgrade: websocket` or `Connection: Upgrade` is missing.
    NotWebSocketUpgrade,
    /// No `Sec-WebSocket-Key` header.
    MissingKey,
    /// The `Sec-WebSocket-Key` is not 16 bytes in base64.
    InvalidKey,
    /// `Sec-WebSocket-Version` is missing or not 13.
    UnsupportedVersion,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HandshakeError::NotGet => "A WebSocket upgrade must be a GET request",
            HandshakeError::NotWebSocketUpgrade => "Expected \"Upgrade: websocket\" and \"Connection: Upgrade\"",
            HandshakeError::MissingKey => "Missing Sec-WebSocket-Key",
            HandshakeError::InvalidKey => "Sec-WebSocket-Key must be 16 bytes in base64",
            HandshakeError::UnsupportedVersion => "Only Sec-WebSocket-Version 13 is supported",
        })
    }
}

impl std::error::Error for HandshakeError {}

/// Whether a comma-separated header value holds `token`, ignoring case.
fn has_token(value: Option<&str>, token: &str) -> bool {
    value.is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// A base64 key of 16 bytes is 24 characters ending in `==`.
fn is_valid_key(key: &str) -> bool {
    key.len() == 24
        && key.ends_with("==")
        && key[..22].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// Checks the request and returns its `Sec-WebSocket-Accept` value. `header` looks a
/// header up by its lower-case name.
pub fn accept<'a>(method: &str, header: impl Fn(&str) -> Option<&'a str>) -> Result<String, HandshakeError> {
    if !method.eq_ignore_ascii_case("GET") {
        return Err(HandshakeError::NotGet);
    }
    if !has_token(header("upgrade"), "websocket") || !has_token(header("connection"), "upgrade") {
        return Err(HandshakeError::NotWebSocketUpgrade);
    }
    if header("sec-websocket-version").map(str::trim) != Some("13") {
        return Err(HandshakeError::UnsupportedVersion);
    }
    let key = header("sec-websocket-key").map(str::trim).ok_or(HandshakeError::MissingKey)?;
    if !is_valid_key(key) {
        return Err(HandshakeError::InvalidKey);
    }
    Ok(derive_accept_key(key.as_bytes()))
}

/// The whole `101 Switching Protocols` response, naming the chosen subprotocol and the
/// agreed extensions, if any.
pub fn switching_protocols(accept: &str, protocol: Option<&str>, extensions: Option<&str>) -> Vec<u8> {
    let protocol = protocol.map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n")).unwrap_or_default();
    let extensions = extensions.map(|e| format!("Sec-WebSocket-Extensions: {e}\r\n")).unwrap_or_default();
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{protocol}{extensions}\r\n"
    )
    .into_bytes()
}

/// A whole HTTP error response that closes the connection, with a plain-text body.
pub fn http_error(status: u16, reason: &str, body: &str, extra_headers: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n{extra_headers}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The `400 Bad Request` answer to a refused handshake. A wrong version also names the
/// version the server speaks, as RFC 6455 asks.
pub fn bad_request(error: &HandshakeError) -> Vec<u8> {
    let extra = match error {
        HandshakeError::UnsupportedVersion => "Sec-WebSocket-Version: 13\r\n",
        _ => "",
    };
    http_error(400, "Bad Request", &error.to_string(), extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(headers: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
        move |name| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    const GOOD: [(&str, &str); 4] = [
        ("upgrade", "websocket"),
        ("connection", "keep-alive, Upgrade"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn accepts_the_rfc_example() {
        assert_eq!(accept("GET", request(&GOOD)).unwrap(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn refuses_what_is_not_a_version_13_upgrade() {
        let without = |name: &str| GOOD.iter().copied().filter(|(n, _)| *n != name).collect::<Vec<_>>();
        let with = |name: &str, value: &'static str| {
            let mut headers = without(name);
            headers.push((if name == "sec-websocket-key" { "sec-websocket-key" } else { "sec-websocket-version" }, value));
            headers
        };
        assert_eq!(accept("POST", request(&GOOD)), Err(HandshakeError::NotGet));
        assert_eq!(accept("GET", request(&without("upgrade"))), Err(HandshakeError::NotWebSocketUpgrade));
        assert_eq!(accept("GET", request(&without("connection"))), Err(HandshakeError::NotWebSocketUpgrade));
        assert_eq!(accept("GET", request(&without("sec-websocket-key"))), Err(HandshakeError::MissingKey));
        assert_eq!(accept("GET", request(&with("sec-websocket-key", "short"))), Err(HandshakeError::InvalidKey));
        assert_eq!(accept("GET", request(&with("sec-websocket-version", "12"))), Err(HandshakeError::UnsupportedVersion));
        assert_eq!(accept("GET", request(&without("sec-websocket-version"))), Err(HandshakeError::UnsupportedVersion));
    }

    #[test]
    fn a_version_refusal_names_the_version_spoken() {
        let answer = String::from_utf8(bad_request(&HandshakeError::UnsupportedVersion)).unwrap();
        assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(answer.contains("Sec-WebSocket-Version: 13\r\n"));
        assert!(answer.ends_with("\r\n\r\nOnly Sec-WebSocket-Version 13 is supported"));
    }
}
