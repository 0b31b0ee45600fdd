//! The connections that have not become WebSockets yet, bounded: each must send its
//! request head within a deadline and in at most [`MAX_HEAD_BYTES`], and only so many may
//! wait at once, overall and from one address. A connection over a cap is closed as soon
//! as it is accepted, so silent or trickling sockets can use up neither the process's file
//! descriptors nor its memory, and real handshakes keep being answered. The binary's
//! HTTP server and the addon's own listener share it.

use std::collections::HashMap;
use std::net::IpAddr;
#[cfg(not(target_family = "wasm"))]
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use switchyard_core::schema;
#[cfg(not(target_family = "wasm"))]
use tokio::net::{TcpListener, TcpStream};

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

/// The binary's defaults (`--handshake-timeout`, `--max-pending-handshakes` and
/// `--max-pending-handshakes-per-ip`), and the addon's listener's.
impl Default for Limits {
    fn default() -> Self {
        let count = |setting: schema::Setting| usize::try_from(setting.default.number()).unwrap_or(usize::MAX);
        Self {
            deadline: Duration::from_millis(schema::HANDSHAKE_TIMEOUT_MS.default.number()),
            total: count(schema::MAX_PENDING_HANDSHAKES),
            per_address: count(schema::MAX_PENDING_HANDSHAKES_PER_IP),
        }
    }
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
    /// None waiting yet, within `limits`.
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self { limits, counts: Mutex::default() })
    }

    /// A place among the waiting for a connection from `address`, unless a cap is reached.
    #[cfg(not(target_family = "wasm"))]
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

    /// The next connection `listener` accepts that gets a place, with its nodelay set.
    /// One over a cap is closed at once, and `refused` called for it.
    #[cfg(not(target_family = "wasm"))]
    pub async fn accept(self: &Arc<Self>, listener: &TcpListener, refused: impl Fn()) -> (TcpStream, SocketAddr, Slot) {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                // Out of file descriptors, or a connection reset before it was accepted:
                // what is open goes on, and the next accept may succeed.
                Err(err) => {
                    tracing::debug!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let Some(slot) = self.admit(peer.ip()) else {
                tracing::debug!(%peer, "too many connections waiting for their handshake; closed");
                refused();
                continue;
            };
            let _ = tcp.set_nodelay(true);
            return (tcp, peer, slot);
        }
    }

    /// The bounds it keeps.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Connections waiting now.
    pub fn count(&self) -> usize {
        self.counts.lock().total
    }
}

/// A connection's place among the waiting, given up when it is dropped: once the
/// connection is a WebSocket, or closed.
pub struct Slot {
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
