//! Token lifetimes: a connection admitted with a token that expires is told
//! `token_expiring` ahead, may send `refresh` with a fresh token (checked by the
//! [`Hooks`](crate::Hooks): the host's token auth), and is closed 1008 "Token expired" when
//! its token runs out unrefreshed.

use crate::error::{close_code, ErrorCode, MessageRejection};
use crate::event::Event;
use crate::frame::Frame;
use crate::hooks::{Ask, Verdict};
use crate::ids::{ConnId, Millis};
use crate::protocol;
use crate::registry::Sender;

use super::{Outcome, Relay, SlowConsumers};

impl Relay {
    /// Starts watching the token of a connection just let in.
    pub(super) fn watch_token(&self, conn: ConnId, expires_at: Option<Millis>) {
        if let (Some(_), Some(expires_at)) = (self.config.token_expiry, expires_at) {
            self.lifetimes.set(conn, expires_at);
        }
    }

    /// Moves the connection's end to `expires_at`, when that is later than what it has.
    fn extend(&self, conn: ConnId, expires_at: Millis) -> bool {
        if self.lifetimes.expires_at(conn).is_some_and(|current| expires_at <= current) {
            return false;
        }
        self.watch_token(conn, Some(expires_at));
        true
    }

    /// `refresh`: the connection's fresh token, taken when the hooks renew it.
    pub(super) fn refresh(&self, sender: &Sender, token: String, frame: &Frame, verdict: Option<Verdict>, now: Millis) -> Outcome {
        let verdict = match verdict {
            Some(verdict) => verdict,
            None => match self.ask(sender, frame, Ask::Refresh { token }, now) {
                Ok(verdict) => verdict,
                Err(outcome) => return outcome,
            },
        };
        match verdict {
            Verdict::Renew(expires_at) if self.extend(sender.id, expires_at) => Outcome::Reply(protocol::token_lifetime("refreshed", expires_at, now)),
            Verdict::Renew(_) => Outcome::Rejected(MessageRejection::new(ErrorCode::InvalidToken, "The new token must expire later than the one it replaces")),
            Verdict::Refuse(reason) => self.refused(ErrorCode::InvalidToken, reason),
            Verdict::Unavailable => self.unanswered(),
            Verdict::Allow | Verdict::Replace(_) => {
                Outcome::Rejected(MessageRejection::new(ErrorCode::InvalidToken, "The application took the token without saying when it expires"))
            }
        }
    }

    /// The host renews a connection's lifetime (its backend said so): it lasts till
    /// `expires_at`, and is told `refreshed`. False when the connection is gone, or
    /// `expires_at` is no later than what it has.
    pub fn renew(&self, conn: ConnId, expires_at: Millis, now: Millis) -> bool {
        let Some(outbox) = self.registry.get(conn).map(|c| c.outbox.clone()) else { return false };
        if !self.extend(conn, expires_at) {
            return false;
        }
        let mut slow = SlowConsumers::new();
        self.push(conn, &*outbox, protocol::token_lifetime("refreshed", expires_at, now), &mut slow);
        self.close_slow_consumers(slow, now);
        true
    }

    /// Warns the connections whose token expires within the refresh window (and tells the
    /// host, which may renew them), and closes those whose token has expired.
    pub(super) fn expire_tokens(&self, now: Millis) {
        let Some(expiry) = self.config.token_expiry else { return };
        let due = self.lifetimes.due(now, expiry.refresh_window_ms, expiry.leeway_ms);
        let mut slow = SlowConsumers::new();
        for (conn, expires_at) in due.warn {
            if let Some(connection) = self.registry.get(conn) {
                let outbox = connection.outbox.clone();
                let info = connection.info(conn);
                drop(connection);
                self.push(conn, &*outbox, protocol::token_lifetime("token_expiring", expires_at, now), &mut slow);
                self.events.emit(Event::TokenExpiring { connection: info, expires_at });
            }
        }
        self.close_slow_consumers(slow, now);
        for conn in due.expired {
            self.end_connection(conn, close_code::POLICY, "Token expired", now);
        }
    }
}
