//! The relay: who is connected to which session, and where each frame goes.
//!
//! State lives in sharded maps so transport threads route concurrently. No method holds
//! a guard of one map while taking a guard of the other, so lock order cannot deadlock;
//! outboxes are pushed under a session's lock, which is why they only queue.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use dashmap::DashMap;
use serde_json::Value;

use crate::config::{Config, SlowConsumerPolicy};
use crate::envelope::Envelope;
use crate::error::{close_code, ErrorCode, Refusal, SessionError};
use crate::event::{ConnectionInfo, Event, EventSink};
use crate::frame::{Frame, FrameKind};
use crate::ids::{ConnId, Millis, SessionId};
use crate::outbox::{Outbox, Pushed};
use crate::protocol;
use crate::session::{Member, Session, SessionInfo, SessionOptions};
use crate::stats::{Counters, Stats};

/// Where a new connection goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Into the session with this id (as given in the URL; checked by the relay).
    Session(String),
    /// Into no session: awareness and channels only.
    Sessionless,
}

/// Who a connection is, as the app or a verified token says.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Identity {
    pub user_id: Option<String>,
    pub organization_id: Option<String>,
    pub client_id: Option<String>,
    pub metadata: Option<Value>,
}

struct Connection {
    session: Option<SessionId>,
    outbox: Arc<dyn Outbox>,
    identity: Identity,
    /// The first `clientId` the client sent, when the app gave none.
    announced_client_id: OnceLock<String>,
    /// Last time anything (a message or a pong) was heard from the client.
    last_seen: AtomicU64,
}

impl Connection {
    fn client_id(&self, id: ConnId) -> String {
        self.identity
            .client_id
            .clone()
            .or_else(|| self.announced_client_id.get().cloned())
            .unwrap_or_else(|| id.to_string())
    }

    fn info(&self, id: ConnId) -> ConnectionInfo {
        ConnectionInfo {
            connection_id: id,
            session_id: self.session.clone(),
            client_id: self.client_id(id),
            user_id: self.identity.user_id.clone(),
            organization_id: self.identity.organization_id.clone(),
        }
    }
}

/// What a received frame is for.
enum Routed {
    /// An answer to the sender alone (a pong, an error).
    Reply(Frame),
    /// A relay message for the other members of this session.
    ToSession(SessionId),
}

/// Recipients whose outbox was full during a fan-out; dealt with once no lock is held.
type SlowConsumers = Vec<ConnId>;

pub struct Relay {
    config: Config,
    events: Arc<dyn EventSink>,
    sessions: DashMap<SessionId, Session>,
    conns: DashMap<ConnId, Connection>,
    last_conn_id: AtomicU64,
    counters: Counters,
    next_cleanup: AtomicU64,
    next_heartbeat: AtomicU64,
}

impl Relay {
    /// `config` must have passed [`Config::validate`].
    pub fn new(config: Config, events: Arc<dyn EventSink>) -> Self {
        Self {
            config,
            events,
            sessions: DashMap::new(),
            conns: DashMap::new(),
            last_conn_id: AtomicU64::new(0),
            counters: Counters::default(),
            next_cleanup: AtomicU64::new(0),
            next_heartbeat: AtomicU64::new(0),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn create_session(&self, options: SessionOptions, now: Millis) -> Result<SessionInfo, SessionError> {
        let id = match options.session_id.as_deref() {
            Some(id) => SessionId::parse(id)?,
            None => SessionId::generate(),
        };
        if options.expires_in_ms == Some(0) {
            return Err(SessionError::InvalidOption("expiresIn must be greater than 0".into()));
        }
        if options.max_clients == Some(0) {
            return Err(SessionError::InvalidOption("maxClients must be greater than 0".into()));
        }
        let lifetime = options.expires_in_ms.unwrap_or(self.config.session_timeout_ms);
        let session = Session {
            id: id.clone(),
            created_at: now,
            expires_at: now.saturating_add(lifetime),
            max_clients: options.max_clients.unwrap_or(self.config.max_clients_per_session),
            metadata: options.metadata.unwrap_or(Value::Null),
            last_activity: AtomicU64::new(now),
            members: Vec::new(),
        };
        let info = match self.sessions.entry(id) {
            dashmap::Entry::Occupied(taken) => {
                return Err(SessionError::AlreadyExists(taken.key().to_string()))
            }
            dashmap::Entry::Vacant(slot) => slot.insert(session).info(),
        };
        self.events.emit(Event::SessionCreated(info.clone()));
        Ok(info)
    }

    pub fn session(&self, id: &str) -> Option<SessionInfo> {
        let id = SessionId::parse(id).ok()?;
        self.sessions.get(&id).map(|s| s.info())
    }

    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.sessions.iter().map(|s| s.info()).collect()
    }

    /// Removes a session and closes its connections with 1000 "Session deleted".
    pub fn delete_session(&self, id: &str, now: Millis) -> bool {
        let Some((_, session)) = SessionId::parse(id).ok().and_then(|id| self.sessions.remove(&id)) else {
            return false;
        };
        let session_id = session.id.clone();
        self.end_session(session, close_code::NORMAL, "Session deleted", now);
        self.events.emit(Event::SessionDeleted { session_id });
        true
    }

    /// Lets a connection in, or says why not. The outbox receives the welcome at once.
    pub fn open(&self, route: Route, identity: Identity, outbox: Arc<dyn Outbox>, now: Millis) -> Result<ConnId, Refusal> {
        let id = ConnId(self.last_conn_id.fetch_add(1, Ordering::Relaxed) + 1);
        let session_id = match route {
            Route::Session(ref raw) => Some(SessionId::parse(raw).map_err(|_| Refusal::SessionNotFound)?),
            Route::Sessionless => None,
        };
        let connection = Connection {
            session: session_id.clone(),
            outbox: outbox.clone(),
            identity,
            announced_client_id: OnceLock::new(),
            last_seen: AtomicU64::new(now),
        };
        let info = connection.info(id);
        self.conns.insert(id, connection);

        let mut slow = SlowConsumers::new();
        if let Some(session_id) = &session_id {
            let admitted = self.join_session(session_id, id, &info.client_id, outbox, now, &mut slow);
            if let Err(refusal) = admitted {
                self.conns.remove(&id);
                return Err(refusal);
            }
        }
        self.events.emit(Event::Connected(info));
        self.close_slow_consumers(slow, now);
        Ok(id)
    }

    fn join_session(
        &self,
        session_id: &SessionId,
        id: ConnId,
        client_id: &str,
        outbox: Arc<dyn Outbox>,
        now: Millis,
        slow: &mut SlowConsumers,
    ) -> Result<(), Refusal> {
        let mut session = self.sessions.get_mut(session_id).ok_or(Refusal::SessionNotFound)?;
        if session.is_expired(now) {
            return Err(Refusal::SessionNotFound);
        }
        if session.members.len() >= session.max_clients {
            return Err(Refusal::SessionFull);
        }
        let connection_id = id.to_string();
        self.push(id, &*outbox, protocol::welcome(&connection_id, session_id.as_str(), now), slow);
        let announcement = protocol::client_connected(client_id, &connection_id, now);
        for member in &session.members {
            self.push(member.conn, &*member.outbox, announcement.clone(), slow);
        }
        session.members.push(Member { conn: id, outbox });
        session.last_activity.store(now, Ordering::Relaxed);
        Ok(())
    }

    /// Routes one frame the transport read from `from`.
    pub fn receive(&self, from: ConnId, frame: Frame, now: Millis) {
        Counters::add(&self.counters.messages_received, 1);
        Counters::add(&self.counters.bytes_received, frame.len() as u64);
        if frame.len() > self.config.max_message_bytes {
            self.disconnect(from, close_code::TOO_LARGE, "Message too large", now);
            return;
        }
        let (sender, route) = {
            let Some(conn) = self.conns.get(&from) else { return };
            conn.last_seen.store(now, Ordering::Relaxed);
            (conn.outbox.clone(), self.route(&conn, &frame, now))
        };
        match route {
            Routed::Reply(answer) => {
                let mut slow = SlowConsumers::new();
                self.push(from, &*sender, answer, &mut slow);
                self.close_slow_consumers(slow, now);
            }
            Routed::ToSession(session) => self.relay_to_session(from, &session, frame, now),
        }
    }

    /// Decides what a frame is for, reading only its envelope.
    fn route(&self, conn: &Connection, frame: &Frame, now: Millis) -> Routed {
        if frame.kind == FrameKind::Text {
            let Ok(envelope) = Envelope::parse(&frame.payload) else {
                Counters::add(&self.counters.messages_invalid, 1);
                return Routed::Reply(protocol::error(ErrorCode::InvalidMessage, now));
            };
            if conn.identity.client_id.is_none() {
                if let Some(announced) = envelope.client_id {
                    conn.announced_client_id.get_or_init(|| announced.into_owned());
                }
            }
            if envelope.kind == "ping" || envelope.kind == "PING" {
                return Routed::Reply(protocol::pong(envelope.kind == "PING", envelope.id, now));
            }
        }
        match &conn.session {
            Some(session) => Routed::ToSession(session.clone()),
            None => Routed::Reply(protocol::error(ErrorCode::NoSession, now)),
        }
    }

    /// Delivers `frame` byte for byte to every member of the session but its sender.
    fn relay_to_session(&self, from: ConnId, session_id: &SessionId, frame: Frame, now: Millis) {
        let mut slow = SlowConsumers::new();
        if let Some(session) = self.sessions.get(session_id) {
            session.last_activity.store(now, Ordering::Relaxed);
            for member in session.members.iter().filter(|m| m.conn != from) {
                if self.push(member.conn, &*member.outbox, frame.clone(), &mut slow) {
                    Counters::add(&self.counters.messages_relayed, 1);
                }
            }
        }
        self.close_slow_consumers(slow, now);
    }

    /// Pushes one frame, noting a full outbox. Returns whether the frame was queued.
    fn push(&self, to: ConnId, outbox: &dyn Outbox, frame: Frame, slow: &mut SlowConsumers) -> bool {
        let len = frame.len() as u64;
        match outbox.push(frame) {
            Pushed::Queued => {
                Counters::add(&self.counters.bytes_sent, len);
                true
            }
            Pushed::Full => {
                Counters::add(&self.counters.messages_dropped, 1);
                if self.config.slow_consumer == SlowConsumerPolicy::Close {
                    slow.push(to);
                }
                false
            }
            Pushed::Closed => false,
        }
    }

    fn close_slow_consumers(&self, mut slow: SlowConsumers, now: Millis) {
        while let Some(conn) = slow.pop() {
            if self.conns.contains_key(&conn) {
                Counters::add(&self.counters.slow_consumer_closes, 1);
                slow.extend(self.remove_connection(conn, close_code::TRY_AGAIN_LATER, "Slow consumer", true, now));
            }
        }
    }

    /// Sends `frame` from the server to every member of a session but `except`. Returns
    /// how many connections it reached, or `None` when there is no such session.
    pub fn broadcast(&self, session_id: &str, frame: Frame, except: Option<ConnId>, now: Millis) -> Option<usize> {
        let session_id = SessionId::parse(session_id).ok()?;
        let mut slow = SlowConsumers::new();
        let delivered = {
            let session = self.sessions.get(&session_id)?;
            let mut delivered = 0;
            for member in session.members.iter().filter(|m| Some(m.conn) != except) {
                if self.push(member.conn, &*member.outbox, frame.clone(), &mut slow) {
                    delivered += 1;
                }
            }
            delivered
        };
        self.close_slow_consumers(slow, now);
        Some(delivered)
    }

    /// Notes a pong (or any sign of life that is not a message) from the client.
    pub fn pong(&self, conn: ConnId, now: Millis) {
        if let Some(c) = self.conns.get(&conn) {
            c.last_seen.store(now, Ordering::Relaxed);
        }
    }

    /// The transport saw the connection close (the client's close frame, or a dead socket).
    pub fn close(&self, conn: ConnId, code: u16, reason: &str, now: Millis) {
        let slow = self.remove_connection(conn, code, reason, false, now);
        self.close_slow_consumers(slow, now);
    }

    /// The server ends a connection: its outbox gets a close frame with `code`, the other
    /// members are told. Transports call it for frames they refuse before reading them
    /// whole (1009) or cannot decode (1002, 1007).
    pub fn disconnect(&self, conn: ConnId, code: u16, reason: &str, now: Millis) {
        let slow = self.remove_connection(conn, code, reason, true, now);
        self.close_slow_consumers(slow, now);
    }

    fn remove_connection(&self, id: ConnId, code: u16, reason: &str, close_outbox: bool, now: Millis) -> SlowConsumers {
        let mut slow = SlowConsumers::new();
        let Some((_, conn)) = self.conns.remove(&id) else { return slow };
        if close_outbox {
            conn.outbox.close(code, reason);
        }
        let info = conn.info(id);
        if let Some(session_id) = &conn.session {
            if let Some(mut session) = self.sessions.get_mut(session_id) {
                session.members.retain(|m| m.conn != id);
                let farewell = protocol::client_disconnected(&info.client_id, &id.to_string(), now);
                for member in &session.members {
                    self.push(member.conn, &*member.outbox, farewell.clone(), &mut slow);
                }
            }
        }
        self.events.emit(Event::Disconnected { connection: info, code, reason: reason.to_owned() });
        slow
    }

    /// Closes every member of a session that is already out of the map, so nobody is
    /// left to be told of the others leaving.
    fn end_session(&self, session: Session, code: u16, reason: &str, now: Millis) {
        for member in session.members {
            self.remove_connection(member.conn, code, reason, true, now);
        }
    }

    /// Runs what is due: session expiry every cleanup interval; pings and heartbeat
    /// timeouts every ping interval. Call it at least as often as the shorter of the two.
    pub fn tick(&self, now: Millis) {
        if now >= self.next_cleanup.load(Ordering::Relaxed) {
            self.next_cleanup.store(now + self.config.cleanup_interval_ms, Ordering::Relaxed);
            self.expire_sessions(now);
        }
        if now >= self.next_heartbeat.load(Ordering::Relaxed) {
            self.next_heartbeat.store(now + self.config.ping_interval_ms, Ordering::Relaxed);
            self.heartbeat(now);
        }
    }

    fn expire_sessions(&self, now: Millis) {
        let expired: Vec<SessionId> =
            self.sessions.iter().filter(|s| s.is_expired(now)).map(|s| s.id.clone()).collect();
        for id in expired {
            if let Some((_, session)) = self.sessions.remove_if(&id, |_, s| s.is_expired(now)) {
                self.end_session(session, close_code::NORMAL, "Session expired", now);
                self.events.emit(Event::SessionExpired { session_id: id });
            }
        }
    }

    fn heartbeat(&self, now: Millis) {
        let mut silent = Vec::new();
        let mut slow = SlowConsumers::new();
        for conn in self.conns.iter() {
            let heard = conn.last_seen.load(Ordering::Relaxed);
            if now.saturating_sub(heard) >= self.config.heartbeat_timeout_ms {
                silent.push(*conn.key());
            } else {
                self.push(*conn.key(), &*conn.outbox, Frame::ping(), &mut slow);
            }
        }
        for conn in silent {
            self.disconnect(conn, close_code::GOING_AWAY, "Connection timeout", now);
        }
        self.close_slow_consumers(slow, now);
    }

    /// Closes every connection with `code` and forgets every session.
    pub fn shutdown(&self, code: u16, reason: &str, now: Millis) {
        let sessions: Vec<SessionId> = self.sessions.iter().map(|s| s.id.clone()).collect();
        for id in sessions {
            if let Some((_, session)) = self.sessions.remove(&id) {
                self.end_session(session, code, reason, now);
            }
        }
        let sessionless: Vec<ConnId> = self.conns.iter().map(|c| *c.key()).collect();
        for id in sessionless {
            self.remove_connection(id, code, reason, true, now);
        }
    }

    /// A transport refused an upgrade request before any connection existed.
    pub fn handshake_failed(&self) {
        Counters::add(&self.counters.handshake_failures, 1);
    }

    pub fn stats(&self) -> Stats {
        self.counters.snapshot(self.sessions.len(), self.conns.len())
    }
}
