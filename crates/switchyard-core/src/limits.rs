//! Rate limits as token buckets, with time passed in: how fast a connection and a user
//! may send, and how fast one address may open connections.

use serde::Serialize;

use crate::ids::Millis;

/// A sustained rate and the burst allowed above it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Rate {
    /// Tokens added per second: messages (or, for an address, connections) per second.
    #[serde(rename = "messagesPerSecond")]
    pub per_second: f64,
    /// Tokens a full bucket holds: how many may go at once after a quiet spell.
    pub burst: f64,
}

impl Rate {
    /// Checks the rate and the burst are finite and greater than 0, naming `option` if not.
    pub fn check(&self, option: &'static str) -> Result<(), crate::ConfigError> {
        let ok = |v: f64| v.is_finite() && v > 0.0;
        if ok(self.per_second) && ok(self.burst) {
            return Ok(());
        }
        Err(crate::ConfigError { option, reason: "needs a rate and a burst greater than 0".into() })
    }
}

/// The message limits of `rateLimit`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimits {
    /// Each connection's own bucket (unless its identity brings a tier).
    #[serde(flatten)]
    pub per_connection: Rate,
    /// One bucket shared by all of a user's connections.
    pub per_user: Option<Rate>,
    /// Refused messages tolerated before the connection is closed with 1008.
    pub max_violations: u32,
}

/// A token bucket: full at `burst`, refilled at `per_second`, one token per message.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    tokens: f64,
    updated: Millis,
}

impl Bucket {
    pub fn full(rate: Rate, now: Millis) -> Self {
        Self { tokens: rate.burst, updated: now }
    }

    fn refill(&mut self, rate: Rate, now: Millis) {
        let elapsed = now.saturating_sub(self.updated) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * rate.per_second).min(rate.burst);
        self.updated = self.updated.max(now);
    }

    /// Takes a token if there is one.
    pub fn take(&mut self, rate: Rate, now: Millis) -> bool {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the bucket has refilled to its burst (and can be forgotten).
    pub fn is_full(&mut self, rate: Rate, now: Millis) -> bool {
        self.refill(rate, now);
        self.tokens >= rate.burst
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN_A_SECOND: Rate = Rate { per_second: 10.0, burst: 3.0 };

    #[test]
    fn allows_the_burst_then_the_rate() {
        let mut bucket = Bucket::full(TEN_A_SECOND, 0);
        assert!((0..3).all(|_| bucket.take(TEN_A_SECOND, 0)));
        assert!(!bucket.take(TEN_A_SECOND, 0), "the burst is spent");
        assert!(!bucket.take(TEN_A_SECOND, 99));
        assert!(bucket.take(TEN_A_SECOND, 100), "one token every 100 ms");
        assert!(!bucket.take(TEN_A_SECOND, 150));
    }

    #[test]
    fn never_holds_more_than_the_burst() {
        let mut bucket = Bucket::full(TEN_A_SECOND, 0);
        assert!(bucket.take(TEN_A_SECOND, 0));
        assert!(bucket.is_full(TEN_A_SECOND, 1_000_000));
        assert!((0..3).all(|_| bucket.take(TEN_A_SECOND, 1_000_000)));
        assert!(!bucket.take(TEN_A_SECOND, 1_000_000));
    }

    #[test]
    fn time_going_backwards_adds_nothing() {
        let mut bucket = Bucket::full(TEN_A_SECOND, 1000);
        (0..3).for_each(|_| assert!(bucket.take(TEN_A_SECOND, 1000)));
        assert!(!bucket.take(TEN_A_SECOND, 0));
    }
}
