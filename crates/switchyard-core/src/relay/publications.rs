//! Publications to a session: relayed messages and server sends, numbered and kept when
//! the session has a stream; reading its history and members; and the reconnect that
//! replaces its own past.

use crate::broker::{Delivery, Filter, History, Topic};
use crate::envelope::Envelope;
use crate::error::{close_code, ErrorCode, MessageRejection};
use crate::frame::{Frame, FrameKind};
use crate::ids::{ConnId, Millis, SessionId};
use crate::message::ControlStep;
use crate::present_member::PresentMember;
use crate::session::{Member, Session};
use crate::stats::Counters;
use crate::streams::Position;
use crate::registry::{Identity, Sender};

use super::{Outcome, Relay, SlowConsumers};
use super::fan_out::{FanOut, Reach};

/// Why [`Relay::publish`] refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PublishError {
    /// No session has the id given (or the id cannot be one).
    #[error("Session not found")]
    SessionNotFound,
    /// A text message that is not a JSON object with a string `type`.
    #[error("A text message must be a JSON object with a string \"type\"")]
    Invalid,
    /// Refused as the member's own message would be: over its rate, or a `state_update`
    /// from a member not in control; control-role messages go over its WebSocket.
    #[error("{}: {}", .0.code.as_str(), .0.message)]
    Refused(MessageRejection),
}

impl Relay {
    /// Delivers `frame` byte for byte to every member of the sender's session but itself.
    pub(super) fn relay_to_session(&self, sender: &Sender, frame: &Frame, now: Millis, slow: &mut SlowConsumers) -> Outcome {
        let Some(session_id) = &sender.session else { return Outcome::Rejected(ErrorCode::NoSession.into()) };
        let delivered = self.publish_in_session(session_id, Some(sender.id), frame, now, slow).delivered;
        Counters::add(&self.counters.messages_relayed, delivered as u64);
        Outcome::Routed(delivered)
    }

    /// Publishes `frame` to a session as `from` (a member, or the server when `None`).
    fn publish_in_session(&self, session_id: &SessionId, from: Option<ConnId>, frame: &Frame, now: Millis, slow: &mut SlowConsumers) -> FanOut {
        let delivery = Delivery { topic: Topic::Session(session_id.clone()), frame: frame.clone(), from, except: None, publication: true, filter: Filter::default() };
        self.fan_out(delivery, Reach::Everywhere, now, slow)
    }

    /// A session's kept publications after `since` (all it keeps without one), oldest
    /// first, at most `limit`: the history clients read over HTTP. `None` for no session.
    pub fn history(&self, session_id: &str, since: Option<&Position>, limit: usize, now: Millis) -> Option<History> {
        let session = self.sessions.get(&SessionId::parse(session_id).ok()?)?;
        Some(self.streams.read(&Topic::Session(session.id.clone()), since, limit, now).unwrap_or_default())
    }

    /// Publishes a message to a session: the HTTP fallback for clients without a
    /// WebSocket, and server-side sends. When a connected member's `clientId` is
    /// `as_client`, it is published as that member (which does not receive it back);
    /// otherwise as the server. Answers the members reached and the offset.
    pub fn publish(&self, session_id: &str, frame: Frame, as_client: Option<&str>, now: Millis) -> Result<(usize, Option<u64>), PublishError> {
        let session_id = SessionId::parse(session_id).map_err(|_| PublishError::SessionNotFound)?;
        let kind = match frame.kind {
            FrameKind::Text => Some(Envelope::parse(&frame.payload).map_err(|_| PublishError::Invalid)?.kind.into_owned()),
            FrameKind::Binary | FrameKind::Ping => None,
        };
        let publisher = {
            let session = self.sessions.get(&session_id).ok_or(PublishError::SessionNotFound)?;
            as_client.and_then(|client_id| session.members.iter().find(|m| m.name.get(m.conn) == client_id)).map(|m| m.conn)
        };
        // A member's publication obeys what its own messages obey (checked with no
        // session guard held, as for a message from its socket).
        if let Some(sender) = publisher.and_then(|conn| self.registry.sender(conn, now)) {
            self.may_publish_as(&sender, kind.as_deref(), now).map_err(PublishError::Refused)?;
        }
        if !self.sessions.contains(&session_id) {
            return Err(PublishError::SessionNotFound);
        }
        let mut slow = SlowConsumers::new();
        let outcome = self.publish_in_session(&session_id, publisher, &frame, now, &mut slow);
        Counters::add(&self.counters.messages_relayed, outcome.delivered as u64);
        self.close_slow_consumers(slow, now);
        Ok((outcome.delivered, outcome.offset))
    }

    /// Whether a member may publish a message of this type over HTTP: within its rate,
    /// and, with control roles, no `state_update` unless it holds control and no
    /// control-role message at all (those are answered on its socket).
    fn may_publish_as(&self, sender: &Sender, kind: Option<&str>, now: Millis) -> Result<(), MessageRejection> {
        if let Some(limits) = &self.config.rate_limit {
            if !self.within_rate(sender, limits, now) {
                Counters::add(&self.counters.rate_limited, 1);
                return Err(ErrorCode::RateLimited.into());
            }
        }
        if !self.config.enable_role_management {
            return Ok(());
        }
        match kind {
            Some(kind) if ControlStep::from_type(kind, None).is_some() => {
                Err(MessageRejection::new(ErrorCode::InvalidMessage, "Control-role messages go over the member's WebSocket"))
            }
            Some("state_update") if !self.is_active(sender) => {
                Counters::add(&self.counters.passive_updates_dropped, 1);
                Err(ErrorCode::NotActive.into())
            }
            _ => Ok(()),
        }
    }

    /// Who is in a session now: its members here in the order they joined, then those on
    /// the cluster's other nodes. `None` for no session.
    pub fn presence(&self, session_id: &str) -> Option<Vec<PresentMember>> {
        let session = self.sessions.get(&SessionId::parse(session_id).ok()?)?;
        let mut present: Vec<PresentMember> = session.members.iter().map(|member| self.present(&session, member)).collect();
        let role = |conn| if session.control.active() == Some(conn) { "active" } else { "passive" };
        let elsewhere = self.sessions.elsewhere.members(&session.id);
        present.extend(elsewhere.into_iter().map(|member| PresentMember { role: role(member.present.connection_id), ..member.present }));
        Some(present)
    }

    pub(super) fn present(&self, session: &Session, member: &Member) -> PresentMember {
        let identity = self.registry.get(member.conn).map(|conn| conn.identity.clone());
        PresentMember {
            connection_id: member.conn,
            client_id: member.name.get(member.conn),
            user_id: identity.as_ref().and_then(|i| i.user_id.clone()),
            organization_id: identity.as_ref().and_then(|i| i.organization_id.clone()),
            role: if session.control.active() == Some(member.conn) { "active" } else { "passive" },
            connected_at: member.joined_at,
        }
    }

    /// A reconnecting client names the connection it replaces: if that one is still open
    /// in the session (its socket not yet found dead) and is the same user's, it is closed
    /// with 1000, so a reconnect never finds the session full of its own past.
    pub(super) fn replace_previous(&self, session_id: &SessionId, previous: &str, identity: &Identity, now: Millis) {
        let Some(previous) = ConnId::parse(previous) else { return };
        let same = self.registry.get(previous).is_some_and(|conn| {
            conn.session.as_ref() == Some(session_id) && conn.identity.user_id == identity.user_id
        });
        if same {
            self.end_connection(previous, close_code::NORMAL, "Replaced by a reconnect", now);
        }
    }
}
