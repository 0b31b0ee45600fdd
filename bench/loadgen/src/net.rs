//! The load generator's connections: plain TCP, or TLS over it (rustls with ring, as the
//! server's own TLS) to a server whose certificate the CA given by `--ca` signed. Every
//! kind of member (WebSocket, event stream, POST sender) and the session creation dial
//! through a [`Dialer`], so a TLS run has all its connections over TLS.
//!
//! A [`Conn`] is an enum, not a box of a trait object: a plain connection costs one match
//! per read or write over the bare `TcpStream` (as tokio-tungstenite's `MaybeTlsStream`
//! did), and its code is the same as before TLS was added.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::crypto::ring as provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{lookup_host, TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A connection to the server under test.
pub enum Conn {
    Plain(TcpStream),
    /// Boxed: rustls's state is large, and the plain variant should stay a `TcpStream`'s size.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Conn::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Conn::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Conn::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(tcp) => tcp.is_write_vectored(),
            Conn::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Conn::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Conn::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Opens connections to the servers under test: TCP without Nagle's delay, and TLS over
/// it when the run has a CA.
pub struct Dialer {
    tls: Option<TlsConnector>,
    /// What the first TLS connection to each server (`host:port`) negotiated: every later
    /// one must match it. Servers may differ: `listen()`'s sessions are created on a Node
    /// `https` server, whose OpenSSL chooses by its own order.
    negotiated: RefCell<HashMap<String, Negotiated>>,
}

/// The protocol, cipher suite and ALPN protocol of a TLS connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub version: String,
    pub cipher_suite: String,
    pub alpn: Option<String>,
}

impl Dialer {
    /// A dialer of plain connections, or of TLS ones trusting the certificates in the PEM
    /// file `ca`. It offers the TLS 1.3 suites in the order browsers do (AES-128-GCM
    /// first; rustls's own order starts with AES-256-GCM), so a server that follows the
    /// client's order settles on what it would with browsers, and ALPN `http/1.1`, as a
    /// browser's WebSocket does.
    pub fn new(ca: Option<&Path>) -> Result<Self, String> {
        let tls = match ca {
            None => None,
            Some(ca) => {
                let bad = |e: &dyn std::fmt::Display| format!("--ca {}: {e}", ca.display());
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(ca).map_err(|e| bad(&e))? {
                    roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
                }
                if roots.is_empty() {
                    return Err(bad(&"no certificate in it"));
                }
                let mut suites = provider::DEFAULT_CIPHER_SUITES.to_vec();
                suites.sort_by_key(|suite| suite.suite() != provider::cipher_suite::TLS13_AES_128_GCM_SHA256.suite());
                // Deprecated since rustls 0.23.48 for lacking post-quantum key exchange, which
                // only the handshake would use; ring is what the server's TLS is built on.
                #[allow(deprecated)]
                let provider = rustls::crypto::CryptoProvider { cipher_suites: suites, ..provider::default_provider() };
                let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
                    .with_safe_default_protocol_versions()
                    .map_err(|e| e.to_string())?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                Some(TlsConnector::from(Arc::new(config)))
            }
        };
        Ok(Self { tls, negotiated: RefCell::new(HashMap::new()) })
    }

    /// `wss` or `ws`.
    pub fn ws_scheme(&self) -> &'static str {
        if self.tls.is_some() { "wss" } else { "ws" }
    }

    /// What the TLS connections to `server` negotiated.
    pub fn negotiated(&self, server: &str) -> Option<Negotiated> {
        self.negotiated.borrow().get(server).cloned()
    }

    /// Connects to `server` (`host:port`), from `source` when given; over TLS, the
    /// certificate must be valid for its host (an IP address or a name).
    pub async fn connect(&self, server: &str, source: Option<IpAddr>) -> Result<Conn, String> {
        let tcp = tcp(server, source).await?;
        let Some(connector) = &self.tls else { return Ok(Conn::Plain(tcp)) };
        let host = server.rsplit_once(':').map_or(server, |(host, _)| host);
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        let name = ServerName::try_from(host.to_owned()).map_err(|e| format!("{host}: {e}"))?;
        let tls = connector.connect(name, tcp).await.map_err(|e| format!("TLS handshake with {server}: {e}"))?;
        let connection = tls.get_ref().1;
        let negotiated = Negotiated {
            version: connection.protocol_version().map_or_else(|| "?".into(), |v| format!("{v:?}")),
            cipher_suite: connection.negotiated_cipher_suite().map_or_else(|| "?".into(), |s| format!("{:?}", s.suite())),
            alpn: connection.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned()),
        };
        let mut seen = self.negotiated.borrow_mut();
        match seen.get(server) {
            None => drop(seen.insert(server.to_owned(), negotiated)),
            Some(first) if *first != negotiated => return Err(format!("{server} negotiated {negotiated:?}, an earlier connection {first:?}")),
            Some(_) => {}
        }
        Ok(Conn::Tls(Box::new(tls)))
    }
}

/// A TCP connection to `server`, from the local address `source` when given, without
/// Nagle's delay.
async fn tcp(server: &str, source: Option<IpAddr>) -> Result<TcpStream, String> {
    let tcp = match source {
        None => TcpStream::connect(server).await.map_err(|e| e.to_string())?,
        Some(source) => {
            let address: SocketAddr = lookup_host(server).await.map_err(|e| e.to_string())?.next().ok_or("no address")?;
            let socket = if address.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.map_err(|e| e.to_string())?;
            socket.bind(SocketAddr::new(source, 0)).map_err(|e| format!("binding {source}: {e}"))?;
            socket.connect(address).await.map_err(|e| e.to_string())?
        }
    };
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(tcp)
}
