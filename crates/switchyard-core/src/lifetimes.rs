//! Token lifetimes: the connections admitted with a token that expires, when each was
//! warned, and which are due to be warned or closed at a given time.

use dashmap::DashMap;

use crate::ids::{ConnId, Millis};

struct Lifetime {
    expires_at: Millis,
    warned: bool,
}

/// What a tick found due.
#[derive(Default)]
pub(crate) struct DueLifetimes {
    /// Connections to warn (`token_expiring`), with when their token expires.
    pub warn: Vec<(ConnId, Millis)>,
    /// Connections whose token has expired.
    pub expired: Vec<ConnId>,
}

#[derive(Default)]
pub(crate) struct Lifetimes {
    by_conn: DashMap<ConnId, Lifetime>,
}

impl Lifetimes {
    /// Starts (or, after a refresh, renews) the lifetime of `conn`'s token.
    pub fn set(&self, conn: ConnId, expires_at: Millis) {
        self.by_conn.insert(conn, Lifetime { expires_at, warned: false });
    }

    pub fn expires_at(&self, conn: ConnId) -> Option<Millis> {
        self.by_conn.get(&conn).map(|lifetime| lifetime.expires_at)
    }

    /// Who is due at `now`: warned from `window_ms` before expiry (once a token),
    /// expired `leeway_ms` after it (and forgotten here).
    pub fn due(&self, now: Millis, window_ms: u64, leeway_ms: u64) -> DueLifetimes {
        let mut due = DueLifetimes::default();
        self.by_conn.retain(|conn, lifetime| {
            if now >= lifetime.expires_at.saturating_add(leeway_ms) {
                due.expired.push(*conn);
                return false;
            }
            if !lifetime.warned && now >= lifetime.expires_at.saturating_sub(window_ms) {
                lifetime.warned = true;
                due.warn.push((*conn, lifetime.expires_at));
            }
            true
        });
        due
    }

    pub fn forget(&self, conn: ConnId) {
        self.by_conn.remove(&conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_once_ahead_then_expires_after_the_leeway_and_a_renewal_starts_over() {
        let lifetimes = Lifetimes::default();
        lifetimes.set(ConnId(1), 10_000);
        assert!(lifetimes.due(6_999, 3_000, 500).warn.is_empty());
        assert_eq!(lifetimes.due(7_000, 3_000, 500).warn, [(ConnId(1), 10_000)]);
        assert!(lifetimes.due(8_000, 3_000, 500).warn.is_empty(), "warned once");
        assert!(lifetimes.due(10_499, 3_000, 500).expired.is_empty());
        lifetimes.set(ConnId(1), 20_000);
        assert!(lifetimes.due(10_500, 3_000, 500).expired.is_empty(), "renewed");
        assert_eq!(lifetimes.due(17_000, 3_000, 500).warn, [(ConnId(1), 20_000)], "warned again for the new token");
        assert_eq!(lifetimes.due(20_500, 3_000, 500).expired, [ConnId(1)]);
        assert_eq!(lifetimes.expires_at(ConnId(1)), None);
    }
}
