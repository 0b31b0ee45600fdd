//! The relay's periodic work and liveness: expiring sessions, requests and transfers,
//! pinging connections and closing the silent ones, and what pongs tell of them.

use std::sync::atomic::Ordering;

use crate::broker::Topic;
use crate::error::close_code;
use crate::frame::Frame;
use crate::ids::{ConnId, Millis};
use crate::stats::Health;
use crate::timers::Intervals;

use super::{Relay, SlowConsumers};

impl Relay {
    /// Notes a pong from the client: it is alive, and the ping's round trip is known.
    pub fn pong(&self, conn: ConnId, now: Millis) {
        self.registry.pong(conn, now);
    }

    /// Notes a sign of life that is neither a message nor a pong (a client's ping).
    pub fn alive(&self, conn: ConnId, now: Millis) {
        self.registry.alive(conn, now);
    }

    /// Connections by how they answer pings: one whose ping has waited longer than half
    /// the ping interval is unhealthy.
    pub fn health(&self, now: Millis) -> Health {
        self.registry.health(now, (self.config.ping_interval_ms / 2).max(1))
    }

    /// Runs what is due: session expiry every cleanup interval; pings and heartbeat
    /// timeouts every ping interval; request and hook timeouts; token lifetimes. Call it every
    /// [`Config::tick_interval_ms`](crate::Config::tick_interval_ms).
    pub fn tick(&self, now: Millis) {
        let intervals = Intervals { cleanup_ms: self.config.cleanup_interval_ms, ping_ms: self.config.ping_interval_ms, stall_ms: self.stall_threshold_ms() };
        let due = self.timers.tick(now, &intervals);
        if due.cleanup {
            self.expire_sessions(now);
            // A channel's stream outlives its members (they may come back to recover),
            // but not once it holds nothing.
            self.streams.sweep(now, &|topic| matches!(topic, Topic::Channel(name) if self.channels.exists(name)));
        }
        if due.heartbeat {
            self.heartbeat(now);
        }
        self.expire_requests(now);
        self.expire_questions(now);
        self.expire_tokens(now);
        self.expire_transfers(now);
        self.forget_full_buckets(now);
        let mut slow = SlowConsumers::new();
        self.notify(self.awareness.expire(now, self.config.heartbeat_timeout_ms), now, &mut slow);
        self.close_slow_consumers(slow, now);
    }

    /// Ticks further apart than this mean the relay stood still (a late timer only
    /// postpones judging by a ping interval, so erring towards it costs nothing).
    fn stall_threshold_ms(&self) -> u64 {
        3 * self.config.tick_interval_ms()
    }

    fn heartbeat(&self, now: Millis) {
        let mut silent = Vec::new();
        let mut slow = SlowConsumers::new();
        let judging = self.timers.judging_silence(now);
        self.registry.for_each(|id, conn| {
            let heard = conn.last_seen.load(Ordering::Relaxed);
            if judging && now.saturating_sub(heard) >= self.config.heartbeat_timeout_ms {
                silent.push(id);
            } else if self.push(id, &*conn.outbox, Frame::ping(), &mut slow) {
                let _ = conn.ping_sent.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
            }
        });
        for conn in silent {
            self.end_connection(conn, close_code::GOING_AWAY, "Connection timeout", now);
        }
        self.close_slow_consumers(slow, now);
    }
}
