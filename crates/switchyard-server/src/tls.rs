//! TLS of a port of the relay's own (the binary's, and the addon's `listen()`): a
//! certificate chain and its key, read from PEM, that can be replaced while connections
//! are open. A connection keeps the pair it was accepted with; the next one gets the new
//! pair. A pair that cannot be read or does not match leaves the old one in place.

use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::socket::Socket;

/// Where a certificate chain or a key comes from.
#[derive(Clone, Debug)]
pub enum Pem {
    /// A file, read again by each [`Tls::reload`].
    File(PathBuf),
    /// PEM text given as it is.
    Given {
        /// What to call it in errors (`tls.cert`).
        name: &'static str,
        /// The PEM text.
        pem: Vec<u8>,
    },
}

impl Pem {
    fn read(&self) -> Result<(String, Vec<u8>), TlsError> {
        match self {
            Pem::File(path) => {
                let name = path.display().to_string();
                let bytes = std::fs::read(path).map_err(|err| TlsError::Unreadable { name: name.clone(), reason: err.to_string() })?;
                Ok((name, bytes))
            }
            Pem::Given { name, pem } => Ok(((*name).to_owned(), pem.clone())),
        }
    }
}

/// The certificate chain and the key of a TLS port, each a file or PEM text.
#[derive(Clone, Debug)]
pub struct TlsPair {
    /// The certificate, then the intermediates that lead to a root clients trust.
    pub cert: Pem,
    /// The certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Pem,
}

/// Why a pair cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read.
    #[error("cannot read {name}: {reason}")]
    Unreadable {
        /// Its path.
        name: String,
        /// What the system said.
        reason: String,
    },
    /// No certificate in it.
    #[error("{name} holds no PEM certificate")]
    NoCertificate {
        /// Its path, or the option's name.
        name: String,
    },
    /// No key in it, or one that cannot be read.
    #[error("{name} holds no PEM private key: {reason}")]
    NoKey {
        /// Its path, or the option's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The pair cannot serve: the key is not the certificate's, or of a kind TLS cannot use.
    #[error("{cert} and {key} cannot serve TLS: {reason}")]
    Mismatch {
        /// The certificate's path or name.
        cert: String,
        /// The key's path or name.
        key: String,
        /// What rustls said.
        reason: String,
    },
}

/// The pair a TLS port serves now, and where it came from.
pub struct Tls {
    pair: RwLock<TlsPair>,
    config: RwLock<Arc<ServerConfig>>,
}

/// The first byte of a TLS record carrying a handshake: what a TLS client opens with.
const HANDSHAKE_RECORD: u8 = 0x16;

impl Tls {
    /// Reads the pair and checks that it can serve.
    pub fn new(pair: TlsPair) -> Result<Self, TlsError> {
        let config = server_config(&pair)?;
        Ok(Self { pair: RwLock::new(pair), config: RwLock::new(config) })
    }

    /// Reads the pair again (the same files), and serves new connections with it.
    pub fn reload(&self) -> Result<(), TlsError> {
        let pair = self.pair.read().clone();
        *self.config.write() = server_config(&pair)?;
        Ok(())
    }

    /// Serves new connections with another pair, which later reloads read.
    pub fn replace(&self, pair: TlsPair) -> Result<(), TlsError> {
        let config = server_config(&pair)?;
        *self.pair.write() = pair;
        *self.config.write() = config;
        Ok(())
    }

    /// The TLS handshake of an accepted connection, with the pair served now. A client that
    /// speaks plain HTTP to this port is answered 400 saying so, and `None` returned, as
    /// for one that fails the handshake or goes away.
    pub async fn accept(&self, tcp: TcpStream) -> Option<Socket> {
        let mut first = [0u8; 1];
        match tcp.peek(&mut first).await {
            Ok(1) if first[0] == HANDSHAKE_RECORD => {}
            Ok(1) => {
                let body = "This port speaks TLS: connect with wss:// or https://\n";
                let answer = format!("HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                crate::listener::answer(Socket::Plain(tcp), answer.into_bytes()).await;
                return None;
            }
            _ => return None,
        }
        let config = self.config.read().clone();
        let mut stream = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await.ok()?;
        // Flushes what the handshake left buffered, so a client waiting on it sees it.
        stream.flush().await.ok()?;
        Some(Socket::Tls(Box::new(stream)))
    }
}

fn server_config(pair: &TlsPair) -> Result<Arc<ServerConfig>, TlsError> {
    let (cert_name, cert_pem) = pair.cert.read()?;
    let (key_name, key_pem) = pair.key.read()?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem).filter_map(Result::ok).collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { name: cert_name });
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|err| TlsError::NoKey { name: key_name.clone(), reason: err.to_string() })?;
    // ring, not aws-lc-rs: it builds with Zig for every platform package as it is. Its
    // provider has no post-quantum key exchange, hence the deprecation.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mismatch = |err: rustls::Error| TlsError::Mismatch { cert: cert_name.clone(), key: key_name.clone(), reason: err.to_string() };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(mismatch)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(mismatch)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
