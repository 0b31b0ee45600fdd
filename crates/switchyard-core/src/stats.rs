//! Counters kept by the relay, read by `getStats()`, `/stats` and `/metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::outbox::Transport;

/// Counts of values by bucket, and their sum, kept in atomics: recording never locks,
/// so transports record on the relay path. A value goes in the first bucket whose upper
/// bound holds it; one more bucket holds the values above the last bound.
pub(crate) struct Histogram<const N: usize> {
    bounds: &'static [u64; N],
    counts: [AtomicU64; N],
    above: AtomicU64,
    sum: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    pub const fn new(bounds: &'static [u64; N]) -> Self {
        Self { bounds, counts: [const { AtomicU64::new(0) }; N], above: AtomicU64::new(0), sum: AtomicU64::new(0) }
    }

    pub fn record(&self, value: u64) {
        let bucket = self.bounds.iter().position(|&bound| value <= bound).map_or(&self.above, |i| &self.counts[i]);
        bucket.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    fn snapshot(&self) -> HistogramSnapshot {
        let counts = self.counts.iter().chain([&self.above]).map(|c| c.load(Ordering::Relaxed)).collect();
        HistogramSnapshot { bounds: self.bounds, counts, sum: self.sum.load(Ordering::Relaxed) }
    }
}

/// A histogram's state: `counts` has one entry per bound, then the count above the last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// The buckets' upper bounds, in the histogram's unit, smallest first.
    pub bounds: &'static [u64],
    /// Values recorded in each bucket; the last entry counts those above every bound.
    pub counts: Vec<u64>,
    /// The sum of every value recorded.
    pub sum: u64,
}

impl HistogramSnapshot {
    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The upper bound of the bucket holding the `q` quantile (0 to 1): an estimate no
    /// lower than the true value. `None` with no values, or when it is above every bound.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let rank = (q.clamp(0.0, 1.0) * self.count() as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        self.bounds.iter().zip(&self.counts).find_map(|(&bound, &n)| {
            seen += n;
            (seen >= rank).then_some(bound)
        })
    }
}

impl Default for HistogramSnapshot {
    fn default() -> Self {
        Self { bounds: &[], counts: vec![0], sum: 0 }
    }
}

/// The upper bounds of the relay latency buckets, in microseconds: 50 µs to 2.5 s.
pub const RELAY_LATENCY_MICROS: [u64; 15] =
    [50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000];

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
    pub hook_questions: AtomicU64,
    pub hook_refusals: AtomicU64,
    pub hook_failures: AtomicU64,
    /// How long the application took to answer, in microseconds (the relay's clock counts
    /// whole milliseconds; an answer given at once counts 0).
    pub hook_latency: Histogram<{ RELAY_LATENCY_MICROS.len() }>,
    /// Frames received, by size in bytes (see [`FRAME_SIZES`]).
    pub frame_sizes: Histogram<{ FRAME_SIZES.len() }>,
    /// How long relayed frames waited to be written (see [`crate::Relay::record_relay_latency`]).
    pub relay_latency: Histogram<{ RELAY_LATENCY_MICROS.len() }>,
    /// Connections let in, by transport (in [`Transport::ALL`]'s order).
    pub opened: [AtomicU64; Transport::ALL.len()],
    /// Connections ended, by transport and close code. Locked once per close, never on
    /// the relay path.
    pub closed: Mutex<BTreeMap<(Transport, u16), u64>>,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            messages_received: AtomicU64::new(0),
            messages_relayed: AtomicU64::new(0),
            messages_invalid: AtomicU64::new(0),
            messages_dropped: AtomicU64::new(0),
            passive_updates_dropped: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            slow_consumer_closes: AtomicU64::new(0),
            handshake_failures: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            acks: AtomicU64::new(0),
            nacks: AtomicU64::new(0),
            forbidden: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            hook_questions: AtomicU64::new(0),
            hook_refusals: AtomicU64::new(0),
            hook_failures: AtomicU64::new(0),
            hook_latency: Histogram::new(&RELAY_LATENCY_MICROS),
            frame_sizes: Histogram::new(&FRAME_SIZES),
            relay_latency: Histogram::new(&RELAY_LATENCY_MICROS),
            opened: [const { AtomicU64::new(0) }; Transport::ALL.len()],
            closed: Mutex::default(),
        }
    }
}

/// The upper bounds of the frame size buckets; one more bucket holds larger frames.
pub const FRAME_SIZES: [u64; 5] = [128, 1024, 16 * 1024, 128 * 1024, 1024 * 1024];

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn opened(&self, transport: Transport) {
        Self::add(&self.opened[transport as usize], 1);
    }

    pub fn closed(&self, transport: Transport, code: u16) {
        *self.closed.lock().entry((transport, code)).or_default() += 1;
    }

    pub fn relay_latency(&self, waited: Duration) {
        self.relay_latency.record(u64::try_from(waited.as_micros()).unwrap_or(u64::MAX));
    }
}

/// A snapshot of the relay's state and counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Sessions the relay holds; an expired one counts until the next cleanup removes it.
    pub active_sessions: usize,
    /// Open connections, in a session or not.
    pub active_connections: usize,
    /// Frames received from clients, text and binary, refused ones included.
    pub messages_received: u64,
    /// Deliveries: one message relayed to three members counts three.
    pub messages_relayed: u64,
    /// Text frames that were not a JSON object with a string `type`.
    pub messages_invalid: u64,
    /// Frames not delivered because a recipient's outbox was full.
    pub messages_dropped: u64,
    /// `state_update` messages from passive members, dropped as the original drops them.
    pub passive_updates_dropped: u64,
    /// Payload bytes of the frames received from clients.
    pub bytes_received: u64,
    /// Payload bytes of the frames queued to clients: relayed messages and the server's own.
    pub bytes_sent: u64,
    /// Connections closed with 1013 because their outbox stayed full.
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
    /// `ACK` answers sent for messages that were routed.
    pub acks: u64,
    /// `NACK` answers sent for messages that were refused.
    pub nacks: u64,
    /// Refusals for identity: `CHANNEL_FORBIDDEN` and `FORBIDDEN`.
    pub forbidden: u64,
    /// Messages dropped, and connections refused, for going over a rate limit.
    pub rate_limited: u64,
    /// Questions asked of the application's hooks (or its backend).
    pub hook_questions: u64,
    /// Joins and messages the application refused.
    pub hook_refusals: u64,
    /// Questions the application did not answer: its hook failed, timed out or was out of reach.
    pub hook_failures: u64,
    /// How long the application took to answer, in microseconds (whole milliseconds).
    pub hook_latency: HistogramSnapshot,
    /// Frames received by size in bytes: up to 128 B, 1 KiB, 16 KiB, 128 KiB, 1 MiB, and larger.
    pub frame_sizes: HistogramSnapshot,
    /// How long relayed frames waited to be written, in microseconds: per write, the
    /// oldest frame's wait from being routed to its connection's writer taking it.
    pub relay_latency: HistogramSnapshot,
    /// Bytes the session streams keep together (bounded by `history_max_bytes`).
    pub history_bytes: usize,
    /// Connections let in since start, by transport.
    pub opened: Vec<(Transport, u64)>,
    /// Connections ended since start, by transport and close code.
    pub closed: Vec<(Transport, u16, u64)>,
}

impl Stats {
    /// Connections of this transport open now: let in and not yet ended.
    pub fn open_connections(&self, transport: Transport) -> u64 {
        let opened: u64 = self.opened.iter().filter(|(t, _)| *t == transport).map(|(_, n)| n).sum();
        let closed: u64 = self.closed.iter().filter(|(t, ..)| *t == transport).map(|(.., n)| n).sum();
        opened.saturating_sub(closed)
    }
}

/// Connections by how they answer pings.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Health {
    /// Open connections.
    pub active_connections: usize,
    /// Connections with no ping waiting for its pong longer than half the ping interval.
    pub healthy_connections: usize,
    /// Connections whose ping has waited for its pong longer than half the ping interval.
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
            history_bytes: sizes.history_bytes,
            requests: get(&self.requests),
            acks: get(&self.acks),
            nacks: get(&self.nacks),
            forbidden: get(&self.forbidden),
            rate_limited: get(&self.rate_limited),
            hook_questions: get(&self.hook_questions),
            hook_refusals: get(&self.hook_refusals),
            hook_failures: get(&self.hook_failures),
            hook_latency: self.hook_latency.snapshot(),
            frame_sizes: self.frame_sizes.snapshot(),
            relay_latency: self.relay_latency.snapshot(),
            opened: Transport::ALL.iter().map(|&t| (t, get(&self.opened[t as usize]))).collect(),
            closed: self.closed.lock().iter().map(|(&(t, code), &n)| (t, code, n)).collect(),
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
    pub history_bytes: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_counts_by_bucket_and_estimates_quantiles_from_above() {
        static BOUNDS: [u64; 3] = [10, 100, 1000];
        let histogram = Histogram::new(&BOUNDS);
        for value in [1, 10, 11, 50, 99, 5000] {
            histogram.record(value);
        }
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.counts, [2, 3, 0, 1]);
        assert_eq!(snapshot.sum, 5171);
        assert_eq!(snapshot.quantile(0.0), Some(10));
        assert_eq!(snapshot.quantile(0.5), Some(100));
        assert_eq!(snapshot.quantile(0.99), None, "above every bound");
        assert_eq!(HistogramSnapshot::default().quantile(0.5), None);
    }
}
