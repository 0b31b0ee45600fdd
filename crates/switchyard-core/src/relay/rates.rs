//! Rates and slots: the token buckets of connections, users and addresses, and the
//! connections each user may hold.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::envelope::Envelope;
use crate::error::{close_code, ErrorCode, MessageRejection};
use crate::frame::{Frame, FrameKind};
use crate::ids::{ConnId, Millis};
use crate::limits::RateLimits;
use crate::protocol;
use crate::protocol::Offending;
use crate::stats::Counters;
use crate::registry::{Sender};

use super::{Relay, SlowConsumers};

impl Relay {
    /// Takes a token from the connection's bucket, then from its user's: a message its
    /// own bucket refuses costs the user's other connections nothing.
    pub(super) fn within_rate(&self, sender: &Sender, limits: &RateLimits, now: Millis) -> bool {
        let user = {
            let Some(conn) = self.registry.get(sender.id) else { return false };
            let rate = conn.identity.rate_limit.unwrap_or(limits.per_connection);
            if !conn.bucket.as_ref().is_none_or(|bucket| bucket.lock().take(rate, now)) {
                return false;
            }
            conn.user.get().cloned()
        };
        match (limits.per_user, user) {
            (Some(rate), Some(user)) => self.limiter.take_user_token(user, rate, now),
            _ => true,
        }
    }

    /// A message over the rate is dropped and refused; past `max_violations` of them the
    /// connection is closed with 1008.
    pub(super) fn rate_limited(&self, sender: &Sender, limits: &RateLimits, frame: &Frame, now: Millis) {
        Counters::add(&self.counters.rate_limited, 1);
        let violations = self.registry.get(sender.id).map_or(0, |c| c.violations.fetch_add(1, Ordering::Relaxed) + 1);
        if violations > limits.max_violations {
            self.end_connection(sender.id, close_code::POLICY, "Rate limit exceeded", now);
            return;
        }
        let rejection = MessageRejection::from(ErrorCode::RateLimited);
        let answer = match (frame.kind == FrameKind::Text).then(|| Envelope::parse(&frame.payload).ok()).flatten() {
            Some(envelope) => self.refusal(&envelope, frame, &rejection, now),
            None => protocol::error(&rejection, Offending { upper_case: sender.upper_case, ..Default::default() }, now),
        };
        let mut slow = SlowConsumers::new();
        self.push(sender.id, &*sender.outbox, answer, &mut slow);
        self.close_slow_consumers(slow, now);
    }

    /// Whether `address` may open another connection now (`connectionsPerMinutePerIp`).
    /// Transports ask before upgrading, and refuse with HTTP 429 when it may not.
    pub fn admit(&self, address: IpAddr, now: Millis) -> bool {
        let Some(rate) = self.config.address_rate() else { return true };
        let admitted = self.limiter.take_address_token(address, rate, now);
        if !admitted {
            Counters::add(&self.counters.rate_limited, 1);
        }
        admitted
    }

    pub(super) fn forget_full_buckets(&self, now: Millis) {
        let user_rate = self.config.rate_limit.as_ref().and_then(|limits| limits.per_user);
        self.limiter.forget_full_buckets(self.config.address_rate(), user_rate, now);
    }

    /// Counts `conn` among the user's connections, unless the user has
    /// `maxConnectionsPerUser` already.
    pub(super) fn take_user_slot(&self, user: &Arc<str>, conn: ConnId) -> bool {
        self.limiter.take_user_slot(user, conn, self.config.max_connections_per_user)
    }
}
