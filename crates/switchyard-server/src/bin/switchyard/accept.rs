//! Accepts TCP connections for the HTTP server and bounds the ones that have not become
//! WebSockets: each must send its request head within a deadline and in at most
//! [`MAX_HEAD_BYTES`], and only so many may wait at once, overall and from one address.
//! A connection over a cap is closed as soon as it is accepted, so silent or trickling
//! sockets can use up neither the process's file descriptors nor its memory, and
//! `/health` and real handshakes keep being answered.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tower_service::Service;
use tracing::debug;

/// The most a request head may take; hyper answers 431 past it. Its own minimum.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;

/// The bounds on connections that have not finished their handshake.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// How long a connection may take to send its request head.
    pub deadline: Duration,
    /// Connections waiting at once, from everywhere.
    pub total: usize,
    /// Connections waiting at once from one address.
    pub per_address: usize,
}

#[derive(Default)]
struct Counts {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// The connections waiting for their handshake, counted overall and by address.
pub struct Waiting {
    limits: Limits,
    counts: Mutex<Counts>,
}

impl Waiting {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self { limits, counts: Mutex::default() })
    }

    /// A place among the waiting for a connection from `address`, unless a cap is reached.
    fn admit(self: &Arc<Self>, address: IpAddr) -> Option<Slot> {
        let mut counts = self.counts.lock();
        let from_address = counts.by_address.get(&address).copied().unwrap_or(0);
        if counts.total >= self.limits.total || from_address >= self.limits.per_address {
            return None;
        }
        counts.total += 1;
        counts.by_address.insert(address, from_address + 1);
        Some(Slot { waiting: self.clone(), address })
    }

    /// Connections waiting now.
    pub fn count(&self) -> usize {
        self.counts.lock().total
    }
}

/// A connection's place among the waiting, given up when the HTTP connection ends: at
/// its upgrade to a WebSocket, or when it closes.
struct Slot {
    waiting: Arc<Waiting>,
    address: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.waiting.counts.lock();
        counts.total -= 1;
        if let Some(n) = counts.by_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                counts.by_address.remove(&self.address);
            }
        }
    }
}

/// Serves `router` on `listener` until `stop` resolves, each request carrying the peer's
/// `ConnectInfo`. `refused` is called for each connection closed for a cap.
pub async fn serve(listener: TcpListener, router: Router, waiting: Arc<Waiting>, refused: impl Fn(), stop: impl std::future::Future) {
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of file descriptors, or a connection reset before it was accepted:
                // what is open goes on, and the next accept may succeed.
                Err(err) => {
                    debug!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = &mut stop => return,
        };
        let Some(slot) = waiting.admit(peer.ip()) else {
            debug!(%peer, "too many connections waiting for their handshake; closed");
            refused();
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            // The service lives as long as the HTTP connection, and the slot with it.
            let _held = &slot;
            request.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            let mut router = router.clone();
            // A Router is always ready: `call` needs no `poll_ready` first.
            async move { router.call(request.map(axum::body::Body::new)).await }
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(waiting.limits.deadline)
            .max_buf_size(MAX_HEAD_BYTES)
            .serve_connection(TokioIo::new(tcp), service)
            .with_upgrades();
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                debug!(%peer, %err, "HTTP connection ended");
            }
        });
    }
}
