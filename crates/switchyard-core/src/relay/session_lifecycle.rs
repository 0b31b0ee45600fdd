//! Sessions from creation to end: creating them (with their options checked), looking
//! them up as the app sees them, members joining, and their end by deletion, expiry or
//! shutdown, which closes their members.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::broker::{Recovery, Remote, SessionRecord, Topic};
use crate::error::{close_code, ConnectionRefusal, SessionError};
use crate::event::Event;
use crate::ids::{ConnId, Millis, SessionId};
use crate::outbox::Outbox;
use crate::protocol::{self, WelcomePosition};
use crate::roles;
use crate::session::{ClientName, Member, Session, SessionInfo, SessionOptions};
use crate::streams::Resume;

use super::control_messages::Everyone;
use super::{Relay, SlowConsumers};

/// A session's member list grows one member at a time up to this many, by doubling
/// past it: most sessions are small, and doubling would leave up to half of a small
/// one's list empty, a cost every idle member shares.
const EXACT_GROWTH_UP_TO: usize = 16;

/// Longest lifetime a session may be given (about 35,000 years): its end stays a
/// date every client can write.
const MAX_SESSION_LIFETIME_MS: u64 = 1 << 50;

impl Relay {
    /// Creates a session with the app's options (checked here), or says why not.
    pub fn create_session(&self, options: SessionOptions, now: Millis) -> Result<SessionInfo, SessionError> {
        // An empty id asks for a generated one, as it did in the original.
        let id = match options.session_id.as_deref().filter(|id| !id.is_empty()) {
            Some(id) => SessionId::parse(id)?,
            None => SessionId::generate(),
        };
        if options.expires_in_ms.is_some_and(|ms| ms > MAX_SESSION_LIFETIME_MS) {
            return Err(SessionError::InvalidOption(format!("expiresIn must be at most {MAX_SESSION_LIFETIME_MS} ms")));
        }
        if options.max_clients == Some(0) {
            return Err(SessionError::InvalidOption("maxClients must be greater than 0".into()));
        }
        if let Some(history) = &options.history {
            history.validate().map_err(SessionError::InvalidOption)?;
        }
        if self.link.status().is_some_and(|cluster| cluster.joined && !cluster.connected) {
            return Err(SessionError::Unavailable);
        }
        let history = options.history.or(self.config.history);
        // 0 means the default, as it did in the original.
        let lifetime = options.expires_in_ms.filter(|ms| *ms > 0).unwrap_or(self.config.session_timeout_ms);
        let session = Session {
            created_here: true,
            ..Session::from_record(SessionRecord {
                id: id.clone(),
                created_at: now,
                expires_at: now.saturating_add(lifetime),
                max_clients: options.max_clients.unwrap_or(self.config.max_clients_per_session),
                metadata: options.metadata,
                conflict_resolution: options.conflict_resolution.unwrap_or(self.config.default_conflict_resolution),
                history,
            })
        };
        // Concurrent creators may pass this together: the cap holds within their number.
        if self.sessions.len() >= self.config.max_sessions {
            return Err(SessionError::TooMany(self.config.max_sessions));
        }
        let info = match self.sessions.entry(id) {
            dashmap::Entry::Occupied(taken) => return Err(SessionError::AlreadyExists(taken.key().to_string())),
            dashmap::Entry::Vacant(slot) => {
                if let Some(history) = history {
                    self.streams.open_stream(&Topic::Session(slot.key().clone()), history);
                }
                let session = slot.insert(session);
                self.link.forward(Remote::SessionCreated(session.record()));
                session.info()
            }
        };
        self.events.emit(Event::SessionCreated(info.clone()));
        Ok(info)
    }

    /// A session as the app sees it; `None` when there is none with this id.
    pub fn session(&self, id: &str) -> Option<SessionInfo> {
        let id = SessionId::parse(id).ok()?;
        self.sessions.get(&id).map(|s| self.info_of(&s))
    }

    /// Every session, as the app sees them, in no particular order.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.sessions.ids_where(|_| true).iter().filter_map(|id| self.sessions.get(id).map(|s| self.info_of(&s))).collect()
    }

    /// Up to `limit` sessions whose ids sort after `after`, in order of id, and whether
    /// more follow. Only the ids are gathered while the maps are walked, so a page costs
    /// relaying no more than a shared look at each shard.
    pub fn sessions_page(&self, after: Option<&str>, limit: usize) -> (Vec<SessionInfo>, bool) {
        let (ids, more) = self.sessions.page(after, limit);
        (ids.iter().filter_map(|id| self.sessions.get(id).map(|s| self.info_of(&s))).collect(), more)
    }

    /// How many members a session admits, on every node together.
    pub fn capacity(&self, id: &str) -> Option<usize> {
        self.sessions.get(&SessionId::parse(id).ok()?).map(|s| s.max_clients)
    }

    /// A session as the app sees it: its members counted on every node.
    fn info_of(&self, session: &Session) -> SessionInfo {
        let mut info = session.info();
        let elsewhere = self.sessions.elsewhere.members(&session.id);
        info.client_count += elsewhere.len();
        let everyone = Everyone { here: &session.members, elsewhere: &elsewhere, link: &*self.link, sender: None };
        info.active_client_id = session.control.active().map(|active| roles::Members::client_id(&everyone, active));
        info
    }

    /// Removes a session and closes its connections with 1000 "Session deleted", on
    /// every node of a cluster.
    pub fn delete_session(&self, id: &str, now: Millis) -> bool {
        let Ok(id) = SessionId::parse(id) else { return false };
        self.link.forward(Remote::SessionDeleted(id.clone()));
        self.end_session_here(&id, true, now)
    }

    /// Removes a session from this node, closing its members here; `deleted_here` when
    /// the app deleted it through this node.
    pub(super) fn end_session_here(&self, id: &SessionId, deleted_here: bool, now: Millis) -> bool {
        let Some(session) = self.sessions.remove(id) else {
            return false;
        };
        let session_id = session.id.clone();
        let slow = self.end_session(session, close_code::NORMAL, "Session deleted", now);
        self.close_slow_consumers(slow, now);
        self.events.emit(Event::SessionDeleted { session_id, here: deleted_here });
        true
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn join_session(
        &self,
        session_id: &SessionId,
        id: ConnId,
        name: Arc<ClientName>,
        outbox: Arc<dyn Outbox>,
        resume: &Resume,
        now: Millis,
        slow: &mut SlowConsumers,
    ) -> Result<(), ConnectionRefusal> {
        let mut session = self.sessions.get_mut(session_id).ok_or(ConnectionRefusal::SessionNotFound)?;
        if session.is_expired(now) {
            return Err(ConnectionRefusal::SessionNotFound);
        }
        let elsewhere = self.sessions.elsewhere.count(session_id);
        if session.members.len() + elsewhere >= session.max_clients {
            return Err(ConnectionRefusal::SessionFull);
        }
        let connection_id = id.to_string();
        // Membership and the replay happen under the session's lock, which every
        // publication takes: nothing published is missed or doubled around the replay.
        let topic = Topic::Session(session_id.clone());
        let position = session.order.as_ref().filter(|_| resume.positions).and_then(|_| self.streams.position(&topic));
        let positions = position.is_some();
        match position {
            Some(position) => {
                let missed = resume.since.as_ref().map(|since| match self.streams.recover(&topic, since, now) {
                    Some(Recovery::Recovered(missed)) => Some(missed),
                    Some(Recovery::Lost) | None => None,
                });
                let recovered = missed.as_ref().map(Option::is_some);
                let welcome = protocol::welcome(&connection_id, session_id.as_str(), Some(WelcomePosition { position: &position, recovered }), now);
                self.push(id, &*outbox, welcome, slow);
                for publication in missed.flatten().into_iter().flatten().filter(|p| !resume.published(&p.from)) {
                    outbox.push_replay(publication.wrapped(None));
                }
            }
            None => {
                self.push(id, &*outbox, protocol::welcome(&connection_id, session_id.as_str(), None, now), slow);
            }
        }
        let announcement = protocol::client_connected(&name.get(id), &connection_id, now);
        for member in &session.members {
            self.push(member.conn, &*member.outbox, announcement.clone(), slow);
        }
        session.joins += 1;
        let joined = session.joins;
        if session.members.len() < EXACT_GROWTH_UP_TO {
            session.members.reserve_exact(1);
        }
        session.members.push(Member { conn: id, outbox, name, joined, positions, joined_at: now });
        session.last_activity.store(now, Ordering::Relaxed);
        let first = session.members.len() == 1;
        let present = self.present(&session, session.members.last().expect("just joined"));
        drop(session);
        self.link.forward(Remote::MemberJoined { session: session_id.clone(), member: self.as_remote(present), announce: true });
        if first {
            self.link.subscribed(&topic);
        }
        Ok(())
    }

    /// Closes every member of a session that is already out of the map, so nobody is
    /// left to be told of the others leaving. Returns the connections elsewhere (a member
    /// user's other windows) whose outboxes overflowed with the news.
    pub(super) fn end_session(&self, session: Session, code: u16, reason: &str, now: Millis) -> SlowConsumers {
        if session.order.is_some() {
            self.streams.close_stream(&Topic::Session(session.id.clone()));
        }
        let mut slow = SlowConsumers::new();
        if !session.members.is_empty() {
            // Out of the map already, the session tells no one of its members leaving.
            for member in &session.members {
                self.link.forward(Remote::MemberLeft { session: session.id.clone(), conn: member.conn, was_active: false });
            }
            self.link.subscribed(&Topic::Session(session.id.clone()));
        }
        for member in session.members {
            slow.extend(self.remove_connection(member.conn, code, reason, true, now));
        }
        slow
    }

    pub(super) fn expire_sessions(&self, now: Millis) {
        let expired = self.sessions.ids_where(|s| s.is_expired(now));
        for id in expired {
            if let Some(session) = self.sessions.remove_if(&id, |s| s.is_expired(now)) {
                let here = session.created_here;
                let slow = self.end_session(session, close_code::NORMAL, "Session expired", now);
                self.close_slow_consumers(slow, now);
                self.events.emit(Event::SessionExpired { session_id: id, here });
            }
        }
    }
}
