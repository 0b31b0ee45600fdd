//! What the relay tells of itself: counters and sizes, the per-channel breakdown, this
//! node's place in a cluster, and the report `getStats()` and `GET /stats` answer.

use crate::broker::ClusterStatus;
use crate::ids::Millis;
use crate::report::StatsReport;
use crate::stats::{Counters, Sizes, Stats};

use super::Relay;

impl Relay {
    /// A transport refused an upgrade request before any connection existed.
    pub fn handshake_failed(&self) {
        Counters::add(&self.counters.handshake_failures, 1);
    }

    /// A transport's writer took frames that had waited this long since the first of them
    /// was routed to its connection: the relay latency in [`Stats::relay_latency`].
    pub fn record_relay_latency(&self, waited: std::time::Duration) {
        self.counters.relay_latency(waited);
    }

    /// The counters and sizes as they are now.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot(Sizes {
            sessions: self.sessions.len(),
            connections: self.registry.len(),
            channels: self.channels.count(),
            users: self.limiter.users(),
            registrations: self.awareness.registrations(),
            history_bytes: self.streams.kept_bytes(),
        })
    }

    /// This node's place in a cluster; `None` alone.
    pub fn cluster(&self) -> Option<ClusterStatus> {
        self.link.status()
    }

    /// The counters and sizes as `getStats()` and `GET /stats` answer them.
    pub fn report(&self, now: Millis) -> StatsReport {
        StatsReport::new(&self.stats(), self.channels.breakdown(), self.health(now), self.link.status())
    }

    /// Each channel's name and how many members it has, by name.
    pub fn channel_breakdown(&self) -> Vec<(String, usize)> {
        self.channels.breakdown()
    }
}
