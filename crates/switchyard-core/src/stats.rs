//! Counters kept by the relay, read by `getStats()`, `/stats` and `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub(crate) struct Counters {
    pub messages_received: AtomicU64,
    pub messages_relayed: AtomicU64,
    pub messages_invalid: AtomicU64,
    pub messages_dropped: AtomicU64,
    pub passive_updates_dropped: AtomicU64,
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub slow_consumer_closes: AtomicU64,
    pub handshake_failures: AtomicU64,
    pub requests: AtomicU64,
    pub acks: AtomicU64,
    pub nacks: AtomicU64,
    pub forbidden: AtomicU64,
    pub rate_limited: AtomicU64,
    /// Frames received, by size (see [`FRAME_SIZES`]).
    pub frame_sizes: [AtomicU64; FRAME_SIZES.len() + 1],
}

/// The upper bounds of the frame size buckets; one more bucket holds larger frames.
pub const FRAME_SIZES: [u64; 5] = [128, 1024, 16 * 1024, 128 * 1024, 1024 * 1024];

impl Counters {
    pub fn frame_received(&self, len: u64) {
        let bucket = FRAME_SIZES.iter().position(|&bound| len <= bound).unwrap_or(FRAME_SIZES.len());
        Self::add(&self.frame_sizes[bucket], 1);
    }
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// A snapshot of the relay's state and counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub active_sessions: usize,
    pub active_connections: usize,
    pub messages_received: u64,
    /// Deliveries: one message relayed to three members counts three.
    pub messages_relayed: u64,
    pub messages_invalid: u64,
    /// Frames not delivered because a recipient's outbox was full.
    pub messages_dropped: u64,
    /// `state_update` messages from passive members, dropped as the original drops them.
    pub passive_updates_dropped: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub slow_consumer_closes: u64,
    /// Upgrade requests a transport refused before a connection existed (bad handshake).
    pub handshake_failures: u64,
    /// Channels that have members.
    pub channels: usize,
    /// Distinct users with a connection.
    pub users: usize,
    /// Awareness registrations: windows with a case open.
    pub registrations: usize,
    /// `request` messages handed to the app.
    pub requests: u64,
    pub acks: u64,
    pub nacks: u64,
    /// Refusals for identity: `CHANNEL_FORBIDDEN` and `FORBIDDEN`.
    pub forbidden: u64,
    /// Messages dropped for going over a rate limit.
    pub rate_limited: u64,
    /// Frames received by size: up to 128 B, 1 KiB, 16 KiB, 128 KiB, 1 MiB, and larger.
    pub frame_sizes: [u64; FRAME_SIZES.len() + 1],
}

/// Connections by how they answer pings.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Health {
    pub active_connections: usize,
    /// Connections with no ping waiting for its pong longer than half the ping interval.
    pub healthy_connections: usize,
    pub unhealthy_connections: usize,
    /// The mean of each connection's last ping round trip, among those that have one.
    pub average_latency_ms: Option<f64>,
}

impl Counters {
    /// The counters, with the sizes only the relay's maps know.
    pub fn snapshot(&self, sizes: Sizes) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            active_sessions: sizes.sessions,
            active_connections: sizes.connections,
            channels: sizes.channels,
            users: sizes.users,
            registrations: sizes.registrations,
            requests: get(&self.requests),
            acks: get(&self.acks),
            nacks: get(&self.nacks),
            forbidden: get(&self.forbidden),
            rate_limited: get(&self.rate_limited),
            frame_sizes: self.frame_sizes.each_ref().map(get),
            messages_received: get(&self.messages_received),
            messages_relayed: get(&self.messages_relayed),
            messages_invalid: get(&self.messages_invalid),
            messages_dropped: get(&self.messages_dropped),
            passive_updates_dropped: get(&self.passive_updates_dropped),
            bytes_received: get(&self.bytes_received),
            bytes_sent: get(&self.bytes_sent),
            slow_consumer_closes: get(&self.slow_consumer_closes),
            handshake_failures: get(&self.handshake_failures),
        }
    }
}

/// How many of each thing the relay holds now.
pub(crate) struct Sizes {
    pub sessions: usize,
    pub connections: usize,
    pub channels: usize,
    pub users: usize,
    pub registrations: usize,
}
