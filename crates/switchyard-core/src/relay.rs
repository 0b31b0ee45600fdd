//! The relay: who is connected to which session and channel, and where each frame goes.
//!
//! State lives in sharded maps so transport threads route concurrently. No method holds
//! a guard of one map while taking a guard of another, so lock order cannot deadlock;
//! outboxes are pushed under a session's or a channel's lock, which is why they only
//! queue.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use std::borrow::Cow;
use std::sync::OnceLock;

use parking_lot::{Mutex, RwLock};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::awareness::{Audience, Awareness, Notices, Registration};
use crate::channels::{AllowList, ChannelName, Channels, Joiner, Subscriber};
use crate::config::{AckPolicy, Config, SlowConsumerPolicy};
use crate::envelope::Envelope;
use crate::error::{close_code, ErrorCode, Refusal, Rejection, SessionError};
use crate::event::{ConnectionInfo, Event, EventSink};
use crate::frame::{Frame, FrameKind};
use crate::ids::{ConnId, Millis, SessionId};
use crate::limits::{Bucket, Rate, RateLimits};
use crate::outbox::{Outbox, Pushed};
use crate::protocol::{self, Offending};
use crate::requests::Requests;
use crate::roles::Send;
use crate::protocol::WelcomePosition;
use crate::session::{ClientName, Member, Session, SessionInfo, SessionOptions};
use crate::broker::{Broker, History, MemoryBroker, Recovery, Topic};
use crate::streams::{Position, Publication, Resume};
use crate::stats::{Counters, Health, Sizes, Stats};

/// A connection may be in this many channels at once; more joins are refused.
pub const MAX_CHANNELS_PER_CONNECTION: usize = 256;
/// Longest lifetime a session may be given (about 35,000 years): its end stays a
/// date every client can write.
pub const MAX_SESSION_LIFETIME_MS: u64 = 1 << 50;
/// Longest user, window and case id an awareness message may carry.
const MAX_AWARENESS_ID_LEN: usize = 256;

/// The payload of `register`, `deregister`, `heartbeat` and `focus`.
#[derive(Deserialize)]
struct FocusPayload<'a> {
    #[serde(rename = "userId", borrow)]
    user_id: Cow<'a, str>,
    #[serde(rename = "windowId", borrow)]
    window_id: Cow<'a, str>,
    #[serde(rename = "caseId", borrow, default)]
    case_id: Option<Cow<'a, str>>,
}

/// The `data` of `role_changed`: the role its sender announces.
#[derive(Deserialize)]
struct RoleAnnouncement<'a> {
    #[serde(borrow, default)]
    role: Option<Cow<'a, str>>,
}

/// Where a new connection goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Into the session with this id (as given in the URL; checked by the relay).
    Session(String),
    /// Into no session: channels, requests and awareness only.
    Sessionless,
}

/// Who a connection is, as the app or a verified token says.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Identity {
    pub user_id: Option<String>,
    pub organization_id: Option<String>,
    pub client_id: Option<String>,
    pub metadata: Option<Value>,
    /// This connection's own message rate (a tier), in place of `rateLimit`'s.
    pub rate_limit: Option<Rate>,
    /// What it asked of its session's stream (positions, recovery), from its upgrade URL.
    pub resume: Resume,
}

/// Which connections a server-side send reaches: all the given fields must match.
#[derive(Clone, Copy, Debug, Default)]
pub struct Target<'a> {
    pub session_id: Option<&'a str>,
    pub channel: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub organization_id: Option<&'a str>,
    pub except: Option<ConnId>,
}

struct Connection {
    session: Option<SessionId>,
    outbox: Arc<dyn Outbox>,
    name: Arc<ClientName>,
    identity: Arc<Identity>,
    /// The identity's user, or else the user of the connection's first `register`.
    user: OnceLock<Arc<str>>,
    channels: Mutex<Vec<ChannelName>>,
    /// Last time anything (a message or a pong) was heard from the client.
    last_seen: AtomicU64,
    /// When the ping now waiting for its pong was sent; 0 when none waits.
    ping_sent: AtomicU64,
    /// The last ping's round trip in milliseconds; `u64::MAX` before the first.
    round_trip: AtomicU64,
    /// Present when messages are rate limited.
    bucket: Option<Mutex<Bucket>>,
    /// Messages refused for the rate so far.
    violations: AtomicU32,
    /// Whether the last message with a readable type had an upper-case one: errors about
    /// messages with none follow its casing.
    upper_case: AtomicBool,
}

impl Connection {
    fn info(&self, id: ConnId) -> ConnectionInfo {
        connection_info(id, &self.session, &self.name, &self.identity)
    }
}

fn connection_info(id: ConnId, session: &Option<SessionId>, name: &ClientName, identity: &Identity) -> ConnectionInfo {
    ConnectionInfo {
        connection_id: id,
        session_id: session.clone(),
        client_id: name.get(id),
        user_id: identity.user_id.clone(),
        organization_id: identity.organization_id.clone(),
        metadata: identity.metadata.clone(),
    }
}

/// What routing a message needs of its sender, copied out of the connection map so that
/// no guard of it is held while routing.
struct Sender {
    id: ConnId,
    outbox: Arc<dyn Outbox>,
    session: Option<SessionId>,
    name: Arc<ClientName>,
    identity: Arc<Identity>,
    upper_case: bool,
}

impl Sender {
    fn info(&self) -> ConnectionInfo {
        connection_info(self.id, &self.session, &self.name, &self.identity)
    }

    fn joiner(&self) -> Joiner<'_> {
        Joiner { user_id: self.identity.user_id.as_deref(), organization_id: self.identity.organization_id.as_deref() }
    }
}

/// What `JOIN_CHANNEL` may ask besides its channel.
#[derive(Deserialize, Default)]
struct JoinOptions {
    #[serde(default)]
    positions: bool,
    #[serde(default)]
    presence: bool,
    since: Option<JoinSince>,
}

#[derive(Deserialize)]
struct JoinSince {
    epoch: String,
    offset: u64,
}

/// How a server-side publication is named in its `from`.
const SERVER_PUBLISHER: &str = "server";

/// A member of a session, as `presence` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Present {
    pub connection_id: ConnId,
    pub client_id: String,
    pub user_id: Option<String>,
    pub organization_id: Option<String>,
    /// `"active"` for the member holding control, else `"passive"`.
    pub role: &'static str,
    pub connected_at: Millis,
}

/// Why [`Relay::publish`] refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PublishError {
    #[error("Session not found")]
    SessionNotFound,
    #[error("A text message must be a JSON object with a string \"type\"")]
    Invalid,
}

/// What became of a message.
enum Outcome {
    /// An answer to the sender alone.
    Reply(Frame),
    /// Routed to this many connections.
    Routed(usize),
    /// Handled, with nothing to say now.
    Done,
    Rejected(Rejection),
    /// Dropped without an answer, unless the message asked for an acknowledgement,
    /// which gets a `NACK`.
    Dropped(Rejection),
}

/// Recipients whose outbox was full during a fan-out; dealt with once no lock is held.
type SlowConsumers = Vec<ConnId>;

const CONTROL_TYPES: [&str; 5] = ["request_control", "accept_control", "decline_control", "release_control", "role_changed"];

pub struct Relay {
    config: Config,
    events: Arc<dyn EventSink>,
    sessions: DashMap<SessionId, Session>,
    conns: DashMap<ConnId, Connection>,
    channels: Channels,
    allow: AllowList,
    requests: Requests,
    awareness: Awareness,
    /// Each user's connections.
    users: DashMap<Arc<str>, Vec<ConnId>>,
    user_buckets: DashMap<Arc<str>, Bucket>,
    address_buckets: DashMap<IpAddr, Bucket>,
    /// Message types the app watches; `watching` spares the lock while there are none.
    watched: RwLock<HashSet<Box<str>>>,
    watching: AtomicBool,
    answers_requests: AtomicBool,
    last_conn_id: AtomicU64,
    counters: Counters,
    next_cleanup: AtomicU64,
    next_heartbeat: AtomicU64,
    /// When `tick` last ran; 0 before it first did.
    last_tick: AtomicU64,
    /// No connection is judged silent before this: after the relay itself stood still,
    /// what its clients sent meanwhile must be read first.
    judge_silence_after: AtomicU64,
    /// Sessions whose forwarded `request_control` waits for an answer, with its deadline:
    /// one entry a session, so spamming requests grows nothing.
    transfers: DashMap<SessionId, Millis>,
    /// Where the streams of sessions live.
    broker: Arc<dyn Broker>,
}

impl Relay {
    /// `config` must have passed [`Config::validate`]. Streams are kept in this process.
    pub fn new(config: Config, events: Arc<dyn EventSink>) -> Self {
        let broker = Arc::new(MemoryBroker::new(config.history_max_bytes));
        Self::with_broker(config, events, broker)
    }

    /// A relay whose streams live in `broker`.
    pub fn with_broker(config: Config, events: Arc<dyn EventSink>, broker: Arc<dyn Broker>) -> Self {
        Self {
            broker,
            allow: AllowList::new(config.channel_allow.as_deref()),
            config,
            events,
            sessions: DashMap::new(),
            conns: DashMap::new(),
            channels: Channels::default(),
            requests: Requests::default(),
            awareness: Awareness::default(),
            users: DashMap::new(),
            user_buckets: DashMap::new(),
            address_buckets: DashMap::new(),
            watched: RwLock::default(),
            watching: AtomicBool::new(false),
            answers_requests: AtomicBool::new(false),
            last_conn_id: AtomicU64::new(0),
            counters: Counters::default(),
            next_cleanup: AtomicU64::new(0),
            next_heartbeat: AtomicU64::new(0),
            last_tick: AtomicU64::new(0),
            judge_silence_after: AtomicU64::new(0),
            transfers: DashMap::new(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

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
        let history = options.history.or(self.config.history);
        // 0 means the default, as it did in the original.
        let lifetime = options.expires_in_ms.filter(|ms| *ms > 0).unwrap_or(self.config.session_timeout_ms);
        let session = Session {
            id: id.clone(),
            created_at: now,
            expires_at: now.saturating_add(lifetime),
            max_clients: options.max_clients.unwrap_or(self.config.max_clients_per_session),
            metadata: options.metadata,
            last_activity: AtomicU64::new(now),
            members: Vec::new(),
            joins: 0,
            control: Default::default(),
            conflict_resolution: options.conflict_resolution.unwrap_or(self.config.default_conflict_resolution),
            order: history.map(|_| Mutex::new(())),
        };
        // Concurrent creators may pass this together: the cap holds within their number.
        if self.sessions.len() >= self.config.max_sessions {
            return Err(SessionError::TooMany(self.config.max_sessions));
        }
        let info = match self.sessions.entry(id) {
            dashmap::Entry::Occupied(taken) => return Err(SessionError::AlreadyExists(taken.key().to_string())),
            dashmap::Entry::Vacant(slot) => {
                if let Some(history) = history {
                    self.broker.open_stream(&Topic::Session(slot.key().clone()), history);
                }
                slot.insert(session).info()
            }
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

    /// Up to `limit` sessions whose ids sort after `after`, in order of id, and whether
    /// more follow. Only the ids are gathered while the maps are walked, so a page costs
    /// relaying no more than a shared look at each shard.
    pub fn sessions_page(&self, after: Option<&str>, limit: usize) -> (Vec<SessionInfo>, bool) {
        let mut ids: Vec<SessionId> =
            self.sessions.iter().map(|s| s.key().clone()).filter(|id| after.is_none_or(|after| id.as_str() > after)).collect();
        let more = ids.len() > limit;
        if more {
            ids.select_nth_unstable(limit);
            ids.truncate(limit);
        }
        ids.sort_unstable();
        (ids.iter().filter_map(|id| self.sessions.get(id).map(|s| s.info())).collect(), more)
    }

    /// Removes a session and closes its connections with 1000 "Session deleted".
    pub fn delete_session(&self, id: &str, now: Millis) -> bool {
        let Some((_, session)) = SessionId::parse(id).ok().and_then(|id| self.sessions.remove(&id)) else {
            return false;
        };
        let session_id = session.id.clone();
        let slow = self.end_session(session, close_code::NORMAL, "Session deleted", now);
        self.close_slow_consumers(slow, now);
        self.events.emit(Event::SessionDeleted { session_id });
        true
    }

    /// Lets a connection in, or says why not. The outbox receives the welcome at once.
    pub fn open(&self, route: Route, mut identity: Identity, outbox: Arc<dyn Outbox>, now: Millis) -> Result<ConnId, Refusal> {
        let id = ConnId(self.last_conn_id.fetch_add(1, Ordering::Relaxed) + 1);
        let session_id = match route {
            Route::Session(ref raw) => Some(SessionId::parse(raw).map_err(|_| Refusal::SessionNotFound)?),
            Route::Sessionless => None,
        };
        if let Some(session_id) = &session_id {
            for previous in &identity.resume.previous {
                self.replace_previous(session_id, previous, &identity, now);
            }
        }
        let user = identity.user_id.as_deref().map(Arc::<str>::from);
        if let Some(user) = &user {
            if !self.take_user_slot(user, id) {
                return Err(Refusal::ConnectionLimit);
            }
        }
        let name = Arc::new(ClientName { given: identity.client_id.take(), announced: Default::default() });
        let identity = Arc::new(identity);
        let connection = Connection {
            session: session_id.clone(),
            outbox: outbox.clone(),
            name: name.clone(),
            identity: identity.clone(),
            user: user.clone().map(OnceLock::from).unwrap_or_default(),
            channels: Mutex::default(),
            last_seen: AtomicU64::new(now),
            ping_sent: AtomicU64::new(0),
            round_trip: AtomicU64::new(u64::MAX),
            bucket: self.config.rate_limit.as_ref().map(|limits| {
                Mutex::new(Bucket::full(identity.rate_limit.unwrap_or(limits.per_connection), now))
            }),
            violations: AtomicU32::new(0),
            upper_case: AtomicBool::new(false),
        };
        let info = connection.info(id);
        let transport = outbox.transport();
        self.conns.insert(id, connection);

        let mut slow = SlowConsumers::new();
        if let Some(session_id) = &session_id {
            if let Err(refusal) = self.join_session(session_id, id, name, outbox, &identity.resume, now, &mut slow) {
                self.conns.remove(&id);
                if let Some(user) = &user {
                    self.release_user_slot(user, id);
                }
                return Err(refusal);
            }
        }
        self.counters.opened(transport);
        self.events.emit(Event::Connected(info));
        self.close_slow_consumers(slow, now);
        Ok(id)
    }

    /// Counts `conn` among the user's connections, unless the user has
    /// `maxConnectionsPerUser` already.
    fn take_user_slot(&self, user: &Arc<str>, conn: ConnId) -> bool {
        let mut conns = self.users.entry(user.clone()).or_default();
        if conns.len() >= self.config.max_connections_per_user {
            return false;
        }
        conns.push(conn);
        true
    }

    fn release_user_slot(&self, user: &str, conn: ConnId) {
        self.users.remove_if_mut(user, |_, conns| {
            conns.retain(|c| *c != conn);
            conns.is_empty()
        });
    }

    /// A reconnecting client names the connection it replaces: if that one is still open
    /// in the session (its socket not yet found dead) and is the same user's, it is closed
    /// with 1000, so a reconnect never finds the session full of its own past.
    fn replace_previous(&self, session_id: &SessionId, previous: &str, identity: &Identity, now: Millis) {
        let Some(previous) = ConnId::parse(previous) else { return };
        let same = self.conns.get(&previous).is_some_and(|conn| {
            conn.session.as_ref() == Some(session_id) && conn.identity.user_id == identity.user_id
        });
        if same {
            self.disconnect(previous, close_code::NORMAL, "Replaced by a reconnect", now);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn join_session(
        &self,
        session_id: &SessionId,
        id: ConnId,
        name: Arc<ClientName>,
        outbox: Arc<dyn Outbox>,
        resume: &Resume,
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
        // Membership and the replay happen under the session's lock, which every
        // publication takes: nothing published is missed or doubled around the replay.
        let topic = Topic::Session(session_id.clone());
        let position = session.order.as_ref().filter(|_| resume.positions).and_then(|_| self.broker.position(&topic));
        let positions = position.is_some();
        match position {
            Some(position) => {
                let missed = resume.since.as_ref().map(|since| match self.broker.recover(&topic, since, now) {
                    Some(Recovery::Recovered(missed)) => Some(missed),
                    Some(Recovery::Lost) | None => None,
                });
                let recovered = missed.as_ref().map(Option::is_some);
                let welcome = protocol::welcome(&connection_id, session_id.as_str(), Some(WelcomePosition { position: &position, recovered }), now);
                self.push(id, &*outbox, welcome, slow);
                let own = |p: &Publication| resume.previous.iter().any(|previous| **previous == *p.from);
                for publication in missed.flatten().into_iter().flatten().filter(|p| !own(p)) {
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
        session.members.push(Member { conn: id, outbox, name, joined, positions, joined_at: now });
        session.last_activity.store(now, Ordering::Relaxed);
        Ok(())
    }

    /// Routes one frame the transport read from `from`.
    pub fn receive(&self, from: ConnId, frame: Frame, now: Millis) {
        Counters::add(&self.counters.messages_received, 1);
        Counters::add(&self.counters.bytes_received, frame.len() as u64);
        self.counters.frame_sizes.record(frame.len() as u64);
        if frame.len() > self.config.max_message_bytes {
            self.disconnect(from, close_code::TOO_LARGE, "Message too large", now);
            return;
        }
        let Some(sender) = self.sender(from, now) else { return };
        if let Some(limits) = &self.config.rate_limit {
            if !self.within_rate(&sender, limits, now) {
                self.rate_limited(&sender, limits, &frame, now);
                return;
            }
        }
        let mut slow = SlowConsumers::new();
        if frame.kind == FrameKind::Text {
            self.receive_text(&sender, &frame, now, &mut slow);
        } else if let Outcome::Rejected(rejection) = self.relay_to_session(&sender, &frame, now, &mut slow) {
            let error = protocol::error(&rejection, Offending { upper_case: sender.upper_case, ..Default::default() }, now);
            self.push(from, &*sender.outbox, error, &mut slow);
        }
        self.close_slow_consumers(slow, now);
    }

    /// Takes a token from the connection's bucket, then from its user's: a message its
    /// own bucket refuses costs the user's other connections nothing.
    fn within_rate(&self, sender: &Sender, limits: &RateLimits, now: Millis) -> bool {
        let user = {
            let Some(conn) = self.conns.get(&sender.id) else { return false };
            let rate = conn.identity.rate_limit.unwrap_or(limits.per_connection);
            if !conn.bucket.as_ref().is_none_or(|bucket| bucket.lock().take(rate, now)) {
                return false;
            }
            conn.user.get().cloned()
        };
        match (limits.per_user, user) {
            (Some(rate), Some(user)) => self.user_buckets.entry(user).or_insert_with(|| Bucket::full(rate, now)).take(rate, now),
            _ => true,
        }
    }

    /// A message over the rate is dropped and refused; past `max_violations` of them the
    /// connection is closed with 1008.
    fn rate_limited(&self, sender: &Sender, limits: &RateLimits, frame: &Frame, now: Millis) {
        Counters::add(&self.counters.rate_limited, 1);
        let violations = self.conns.get(&sender.id).map_or(0, |c| c.violations.fetch_add(1, Ordering::Relaxed) + 1);
        if violations > limits.max_violations {
            self.disconnect(sender.id, close_code::POLICY, "Rate limit exceeded", now);
            return;
        }
        let rejection = Rejection::from(ErrorCode::RateLimited);
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
        let admitted = self.address_buckets.entry(address).or_insert_with(|| Bucket::full(rate, now)).take(rate, now);
        if !admitted {
            Counters::add(&self.counters.rate_limited, 1);
        }
        admitted
    }

    fn sender(&self, id: ConnId, now: Millis) -> Option<Sender> {
        let conn = self.conns.get(&id)?;
        conn.last_seen.store(now, Ordering::Relaxed);
        Some(Sender {
            id,
            outbox: conn.outbox.clone(),
            session: conn.session.clone(),
            name: conn.name.clone(),
            identity: conn.identity.clone(),
            upper_case: conn.upper_case.load(Ordering::Relaxed),
        })
    }

    fn receive_text(&self, sender: &Sender, frame: &Frame, now: Millis, slow: &mut SlowConsumers) {
        let envelope = match Envelope::parse(&frame.payload) {
            Ok(envelope) => envelope,
            Err(malformed) => {
                Counters::add(&self.counters.messages_invalid, 1);
                let offending = Offending { upper_case: sender.upper_case, original: Some(&frame.payload), ..Default::default() };
                let error = protocol::error(&malformed.into(), offending, now);
                self.push(sender.id, &*sender.outbox, error, slow);
                return;
            }
        };
        let upper_case = protocol::is_upper_case(&envelope.kind);
        if upper_case != sender.upper_case {
            if let Some(conn) = self.conns.get(&sender.id) {
                conn.upper_case.store(upper_case, Ordering::Relaxed);
            }
        }
        if sender.name.given.is_none() {
            if let Some(announced) = &envelope.client_id {
                sender.name.announced.get_or_init(|| announced.clone().into_owned());
            }
        }
        let answer = match self.dispatch(sender, &envelope, frame, now, slow) {
            Outcome::Reply(answer) => Some(answer),
            Outcome::Routed(delivered) => {
                self.report_watched(sender, &envelope, frame);
                self.ack_to(&envelope).map(|id| {
                    Counters::add(&self.counters.acks, 1);
                    protocol::ack(id, delivered, now)
                })
            }
            Outcome::Done => {
                self.report_watched(sender, &envelope, frame);
                None
            }
            Outcome::Rejected(rejection) => {
                if matches!(rejection.code, ErrorCode::ChannelForbidden | ErrorCode::Forbidden) {
                    Counters::add(&self.counters.forbidden, 1);
                }
                Some(self.refusal(&envelope, frame, &rejection, now))
            }
            Outcome::Dropped(rejection) => {
                self.ack_to(&envelope).is_some().then(|| self.refusal(&envelope, frame, &rejection, now))
            }
        };
        if let Some(answer) = answer {
            self.push(sender.id, &*sender.outbox, answer, slow);
        }
    }

    /// The id a message is acknowledged by, under the `ack` policy.
    fn ack_to<'e>(&self, envelope: &'e Envelope) -> Option<&'e str> {
        let id = envelope.correlation_id.as_deref();
        match self.config.ack {
            AckPolicy::Never => None,
            AckPolicy::Always => id,
            AckPolicy::Requested => id.filter(|_| envelope.ack),
        }
    }

    /// The answer to a refused message: a `NACK` when it is acknowledged, else an `error`.
    fn refusal(&self, envelope: &Envelope, frame: &Frame, rejection: &Rejection, now: Millis) -> Frame {
        match self.ack_to(envelope) {
            Some(id) => {
                Counters::add(&self.counters.nacks, 1);
                protocol::nack(id, rejection, now)
            }
            None => {
                let offending = Offending {
                    upper_case: protocol::is_upper_case(&envelope.kind),
                    request_id: envelope.request_id,
                    correlation_id: envelope.correlation_id.as_deref(),
                    original: Some(&frame.payload),
                };
                protocol::error(rejection, offending, now)
            }
        }
    }

    /// Decides what a message is for, from its envelope, and does it.
    fn dispatch(&self, sender: &Sender, envelope: &Envelope, frame: &Frame, now: Millis, slow: &mut SlowConsumers) -> Outcome {
        let kind = envelope.kind.as_ref();
        match kind {
            "ping" | "PING" => Outcome::Reply(protocol::pong(kind == "PING", envelope.id, now)),
            "JOIN_CHANNEL" => self.join_channel(sender, envelope, frame, now, slow),
            "LEAVE_CHANNEL" => self.leave_channel(sender, envelope, slow),
            "PRESENCE" => self.channel_presence(sender, envelope),
            "request" => self.request(sender, envelope, now),
            "register" | "deregister" | "heartbeat" | "focus" => self.awareness(sender, kind, envelope, now, slow),
            _ if self.config.enable_role_management && CONTROL_TYPES.contains(&kind) => {
                self.control(sender, kind, envelope, frame, now, slow)
            }
            "state_update" if self.config.enable_role_management && !self.is_active(sender) => {
                Counters::add(&self.counters.passive_updates_dropped, 1);
                Outcome::Dropped(ErrorCode::NotActive.into())
            }
            _ => match &envelope.channel {
                Some(channel) => self.publish_to_channel(sender, channel, frame, now, slow),
                None => self.relay_to_session(sender, frame, now, slow),
            },
        }
    }

    /// Delivers `frame` byte for byte to every member of the sender's session but itself.
    fn relay_to_session(&self, sender: &Sender, frame: &Frame, now: Millis, slow: &mut SlowConsumers) -> Outcome {
        let Some(session_id) = &sender.session else { return Outcome::Rejected(ErrorCode::NoSession.into()) };
        let delivered = match self.sessions.get(session_id) {
            Some(session) => self.publish_in_session(&session, Some(sender.id), Some(sender.id), frame, now, slow).0,
            None => 0,
        };
        Counters::add(&self.counters.messages_relayed, delivered as u64);
        Outcome::Routed(delivered)
    }

    /// Delivers `frame` byte for byte to every member of `session` but `skip`, as published
    /// by `from` (a member, or the server when `None`). In a session with a stream it is
    /// numbered and kept first, and members with positions get it wrapped. Returns how
    /// many members it reached, and its offset.
    #[allow(clippy::too_many_arguments)]
    fn publish_in_session(
        &self,
        session: &Session,
        from: Option<ConnId>,
        skip: Option<ConnId>,
        frame: &Frame,
        now: Millis,
        slow: &mut SlowConsumers,
    ) -> (usize, Option<u64>) {
        session.last_activity.store(now, Ordering::Relaxed);
        let others = session.members.iter().filter(|m| Some(m.conn) != skip);
        let mut delivered = 0;
        let Some(order) = &session.order else {
            for member in others {
                if self.push(member.conn, &*member.outbox, frame.clone(), slow) {
                    delivered += 1;
                }
            }
            return (delivered, None);
        };
        let _order = order.lock();
        let from: Arc<str> = from.map_or_else(|| SERVER_PUBLISHER.into(), |conn| conn.to_string().into());
        let topic = Topic::Session(session.id.clone());
        let Some(publication) = self.broker.publish(&topic, from, frame.clone(), now) else {
            return (delivered, None);
        };
        let wrapped = OnceLock::new();
        for member in others {
            let frame = if member.positions { wrapped.get_or_init(|| publication.wrapped(None)).clone() } else { frame.clone() };
            if self.push(member.conn, &*member.outbox, frame, slow) {
                delivered += 1;
            }
        }
        self.events.emit(Event::Published { session_id: session.id.clone(), offset: publication.offset });
        (delivered, Some(publication.offset))
    }

    /// A session's kept publications after `since` (all it keeps without one), oldest
    /// first, at most `limit`: the history clients read over HTTP. `None` for no session.
    pub fn history(&self, session_id: &str, since: Option<&Position>, limit: usize, now: Millis) -> Option<History> {
        let session = self.sessions.get(&SessionId::parse(session_id).ok()?)?;
        Some(self.broker.read(&Topic::Session(session.id.clone()), since, limit, now).unwrap_or_default())
    }

    /// Publishes a message to a session: the HTTP fallback for clients without a
    /// WebSocket, and server-side sends. When a connected member's `clientId` is
    /// `as_client`, it is published as that member (which does not receive it back);
    /// otherwise as the server. Answers the members reached and the offset.
    pub fn publish(&self, session_id: &str, frame: Frame, as_client: Option<&str>, now: Millis) -> Result<(usize, Option<u64>), PublishError> {
        let session_id = SessionId::parse(session_id).map_err(|_| PublishError::SessionNotFound)?;
        let mut slow = SlowConsumers::new();
        let outcome = {
            let session = self.sessions.get(&session_id).ok_or(PublishError::SessionNotFound)?;
            let publisher = as_client.and_then(|client_id| session.members.iter().find(|m| m.name.get(m.conn) == client_id)).map(|m| m.conn);
            if frame.kind == FrameKind::Text {
                Envelope::parse(&frame.payload).map_err(|_| PublishError::Invalid)?;
            }
            self.publish_in_session(&session, publisher, publisher, &frame, now, &mut slow)
        };
        Counters::add(&self.counters.messages_relayed, outcome.0 as u64);
        self.close_slow_consumers(slow, now);
        Ok(outcome)
    }

    /// Who is in a session now, in the order they joined; `None` for no session.
    pub fn presence(&self, session_id: &str) -> Option<Vec<Present>> {
        let session = self.sessions.get(&SessionId::parse(session_id).ok()?)?;
        let members = session.members.iter().map(|member| {
            let identity = self.conns.get(&member.conn).map(|conn| conn.identity.clone());
            Present {
                connection_id: member.conn,
                client_id: member.name.get(member.conn),
                user_id: identity.as_ref().and_then(|i| i.user_id.clone()),
                organization_id: identity.as_ref().and_then(|i| i.organization_id.clone()),
                role: if session.control.active == Some(member.conn) { "active" } else { "passive" },
                connected_at: member.joined_at,
            }
        });
        Some(members.collect())
    }

    fn channel_of(envelope: &Envelope) -> Result<ChannelName, Rejection> {
        let name = envelope
            .channel
            .as_deref()
            .ok_or_else(|| Rejection::new(ErrorCode::InvalidMessage, "A channel message needs a string channel"))?;
        ChannelName::parse(name)
    }

    fn join_channel(&self, sender: &Sender, envelope: &Envelope, frame: &Frame, now: Millis, slow: &mut SlowConsumers) -> Outcome {
        let name = match Self::channel_of(envelope) {
            Ok(name) => name,
            Err(rejection) => return Outcome::Rejected(rejection),
        };
        let Ok(options) = serde_json::from_slice::<JoinOptions>(&frame.payload) else {
            return Outcome::Rejected(Rejection::new(
                ErrorCode::InvalidMessage,
                "JOIN_CHANNEL's positions and presence are true or false, its since {\"epoch\":...,\"offset\":...}",
            ));
        };
        if let Err(rejection) = self.allow.check(&name, &sender.joiner()) {
            return Outcome::Rejected(rejection);
        }
        {
            let Some(conn) = self.conns.get(&sender.id) else { return Outcome::Done };
            let mut joined = conn.channels.lock();
            if !joined.contains(&name) {
                if joined.len() >= MAX_CHANNELS_PER_CONNECTION {
                    return Outcome::Rejected(Rejection::new(
                        ErrorCode::ChannelForbidden,
                        format!("A connection may be in at most {MAX_CHANNELS_PER_CONNECTION} channels"),
                    ));
                }
                joined.push(name.clone());
            }
        }
        let topic = Topic::Channel(name.clone());
        let since = options.since.map(|s| Position { epoch: s.epoch.into(), offset: s.offset });
        let stream = self.config.channel_history.filter(|_| options.positions || since.is_some());
        let client = Arc::new(serde_json::json!({
            "connectionId": sender.id.to_string(),
            "clientId": sender.name.get(sender.id),
            "userId": sender.identity.user_id,
            "organizationId": sender.identity.organization_id,
        }));
        // The answer, the replay and the membership happen under the channel's lock, which
        // a publication to a channel with a stream takes: nothing is missed or doubled.
        self.channels.with_members(&name, |members| {
            let position = stream.and_then(|history| {
                self.broker.open_stream(&topic, history);
                self.broker.position(&topic)
            });
            let mut replay = Vec::new();
            let recovered = match (&position, &since) {
                (Some(_), Some(since)) => match self.broker.recover(&topic, since, now) {
                    Some(Recovery::Recovered(missed)) => {
                        replay = missed;
                        Some(true)
                    }
                    Some(Recovery::Lost) | None => Some(false),
                },
                _ => None,
            };
            let stream_position = position.as_ref().map(|position| WelcomePosition { position, recovered });
            self.push(sender.id, &*sender.outbox, protocol::channel_joined(name.as_str(), stream_position), slow);
            for publication in replay.iter().filter(|p| *p.from != *sender.id.to_string()) {
                sender.outbox.push_replay(publication.wrapped(Some(name.as_str())));
            }
            match members.iter_mut().find(|m| m.conn == sender.id) {
                Some(member) => {
                    member.positions = position.is_some();
                    member.presence = options.presence;
                }
                None => {
                    let joined = protocol::channel_member(true, name.as_str(), &client);
                    for watcher in members.iter().filter(|m| m.presence) {
                        self.push(watcher.conn, &*watcher.outbox, joined.clone(), slow);
                    }
                    let outbox = sender.outbox.clone();
                    members.push(Subscriber { conn: sender.id, outbox, positions: position.is_some(), presence: options.presence, client });
                }
            }
        });
        // The connection may have closed meanwhile, after leaving its channels.
        if !self.conns.contains_key(&sender.id) {
            self.leave_channel_as(&name, sender.id, slow);
        }
        Outcome::Done
    }

    /// Takes a connection out of a channel, telling the members who asked.
    fn leave_channel_as(&self, name: &ChannelName, conn: ConnId, slow: &mut SlowConsumers) {
        if let Some((left, watchers)) = self.channels.leave(name, conn) {
            let notice = protocol::channel_member(false, name.as_str(), &left.client);
            for (watcher, outbox) in watchers {
                self.push(watcher, &*outbox, notice.clone(), slow);
            }
        }
    }

    fn leave_channel(&self, sender: &Sender, envelope: &Envelope, slow: &mut SlowConsumers) -> Outcome {
        let name = match Self::channel_of(envelope) {
            Ok(name) => name,
            Err(rejection) => return Outcome::Rejected(rejection),
        };
        if let Some(conn) = self.conns.get(&sender.id) {
            conn.channels.lock().retain(|joined| *joined != name);
        }
        self.leave_channel_as(&name, sender.id, slow);
        Outcome::Reply(protocol::channel_left(name.as_str()))
    }

    /// `PRESENCE`: a member asks who is in the channel.
    fn channel_presence(&self, sender: &Sender, envelope: &Envelope) -> Outcome {
        let name = match Self::channel_of(envelope) {
            Ok(name) => name,
            Err(rejection) => return Outcome::Rejected(rejection),
        };
        if !self.channels.is_member(&name, sender.id) {
            return Outcome::Rejected(ErrorCode::NotInChannel.into());
        }
        Outcome::Reply(protocol::presence(name.as_str(), &self.channels.clients(&name)))
    }

    /// Delivers `frame` byte for byte to the other members of a channel the sender is in.
    fn publish_to_channel(&self, sender: &Sender, channel: &str, frame: &Frame, now: Millis, slow: &mut SlowConsumers) -> Outcome {
        let name = match ChannelName::parse(channel) {
            Ok(name) => name,
            Err(rejection) => return Outcome::Rejected(rejection),
        };
        if !self.channels.is_member(&name, sender.id) {
            return Outcome::Rejected(ErrorCode::NotInChannel.into());
        }
        let delivered = self.publish_in_channel(&name, Some(sender.id), frame, now, slow);
        Counters::add(&self.counters.messages_relayed, delivered as u64);
        Outcome::Routed(delivered)
    }

    /// Delivers `frame` to every member of a channel but its publisher (`None`: the
    /// server). With channel history on it is numbered and kept first, under the
    /// channel's lock, and members with positions get it wrapped. Returns how many it reached.
    fn publish_in_channel(&self, name: &ChannelName, from: Option<ConnId>, frame: &Frame, now: Millis, slow: &mut SlowConsumers) -> usize {
        let mut delivered = 0;
        let Some(history) = self.config.channel_history else {
            self.channels.for_each_member(name, from, |member| {
                if self.push(member.conn, &*member.outbox, frame.clone(), slow) {
                    delivered += 1;
                }
            });
            return delivered;
        };
        let topic = Topic::Channel(name.clone());
        let publisher: Arc<str> = from.map_or_else(|| SERVER_PUBLISHER.into(), |conn| conn.to_string().into());
        let publish = || {
            let publication = self.broker.publish(&topic, publisher.clone(), frame.clone(), now);
            publication.or_else(|| {
                self.broker.open_stream(&topic, history);
                self.broker.publish(&topic, publisher.clone(), frame.clone(), now)
            })
        };
        let reached = self.channels.with_existing_members(name, |members| {
            let publication = publish();
            let wrapped = OnceLock::new();
            let mut reached = 0;
            for member in members.iter().filter(|m| Some(m.conn) != from) {
                let frame = match (&publication, member.positions) {
                    (Some(publication), true) => wrapped.get_or_init(|| publication.wrapped(Some(name.as_str()))).clone(),
                    _ => frame.clone(),
                };
                if self.push(member.conn, &*member.outbox, frame, slow) {
                    reached += 1;
                }
            }
            reached
        });
        // A channel with no members now still keeps the publication, for those who come back.
        reached.unwrap_or_else(|| {
            publish();
            0
        })
    }

    /// A channel's kept publications after `since` (all it keeps without one), at most
    /// `limit`; an empty history when the channel keeps none (channel history is off, or
    /// nothing was published to it lately).
    pub fn channel_history(&self, channel: &str, since: Option<&Position>, limit: usize, now: Millis) -> Result<History, Rejection> {
        let name = ChannelName::parse(channel)?;
        Ok(self.broker.read(&Topic::Channel(name), since, limit, now).unwrap_or_default())
    }

    /// Who is in a channel now, as `PRESENCE` answers.
    pub fn channel_presence_of(&self, channel: &str) -> Result<Vec<Arc<Value>>, Rejection> {
        Ok(self.channels.clients(&ChannelName::parse(channel)?))
    }

    /// Whether this identity may join (and so read) a channel: the rules `JOIN_CHANNEL`
    /// follows, for readers over HTTP.
    pub fn may_join(&self, channel: &str, identity: &Identity) -> Result<(), Rejection> {
        let joiner = Joiner { user_id: identity.user_id.as_deref(), organization_id: identity.organization_id.as_deref() };
        self.allow.check(&ChannelName::parse(channel)?, &joiner)
    }

    /// Whether the app has a request handler; without one, requests get `NO_HANDLER`.
    pub fn answer_requests(&self, answering: bool) {
        self.answers_requests.store(answering, Ordering::Relaxed);
    }

    fn request(&self, sender: &Sender, envelope: &Envelope, now: Millis) -> Outcome {
        let Some(request_id) = envelope.request_id else {
            return Outcome::Rejected(Rejection::new(ErrorCode::InvalidMessage, "A request needs a requestId"));
        };
        if !self.answers_requests.load(Ordering::Relaxed) {
            return Outcome::Rejected(ErrorCode::NoHandler.into());
        }
        let deadline = now.saturating_add(self.config.request_timeout_ms);
        if let Err(rejection) = self.requests.start(sender.id, request_id.get(), deadline) {
            return Outcome::Rejected(rejection);
        }
        Counters::add(&self.counters.requests, 1);
        self.events.emit(Event::Request {
            connection: sender.info(),
            request_id: request_id.get().to_owned(),
            payload: envelope.payload.map_or("null", RawValue::get).to_owned(),
        });
        Outcome::Done
    }

    /// Answers a request: `Ok` with the result as JSON, or `Err` with why it failed.
    /// Returns false when the request is no longer waiting (it timed out, or its
    /// connection left).
    pub fn respond(&self, conn: ConnId, request_id: &str, outcome: Result<&RawValue, &Rejection>, now: Millis) -> bool {
        if !self.requests.finish(conn, request_id) {
            return false;
        }
        let Some(outbox) = self.conns.get(&conn).map(|c| c.outbox.clone()) else { return false };
        let Ok(id) = RawValue::from_string(request_id.to_owned()) else { return false };
        let answer = match outcome {
            Ok(result) => protocol::response(&id, result, now),
            Err(rejection) => protocol::error(rejection, Offending { request_id: Some(&id), ..Default::default() }, now),
        };
        let mut slow = SlowConsumers::new();
        self.push(conn, &*outbox, answer, &mut slow);
        self.close_slow_consumers(slow, now);
        true
    }

    /// `register`, `deregister`, `heartbeat` and `focus` (docs/protocol.md, "Case awareness").
    fn awareness(&self, sender: &Sender, kind: &str, envelope: &Envelope, now: Millis, slow: &mut SlowConsumers) -> Outcome {
        let Some(payload) = envelope.payload.and_then(|raw| serde_json::from_str::<FocusPayload>(raw.get()).ok()) else {
            return Outcome::Rejected(Rejection::new(ErrorCode::InvalidMessage, "An awareness message needs a payload with userId and windowId"));
        };
        let ids_ok = |id: &str| !id.is_empty() && id.len() <= MAX_AWARENESS_ID_LEN;
        if !ids_ok(&payload.user_id) || !ids_ok(&payload.window_id) {
            return Outcome::Rejected(Rejection::new(ErrorCode::InvalidMessage, "userId and windowId are 1 to 256 characters"));
        }
        let user = match self.user_for(sender, &payload.user_id, kind == "register", now) {
            Ok(user) => user,
            Err(outcome) => return outcome,
        };
        let notices = match kind {
            "register" => {
                let Some(case_id) = payload.case_id.as_deref().filter(|c| ids_ok(c)) else {
                    return Outcome::Rejected(Rejection::new(ErrorCode::InvalidMessage, "register needs a caseId of 1 to 256 characters"));
                };
                let registration = Registration { user: &user, window_id: &payload.window_id, case_id };
                match self.awareness.register(registration, sender.id, now) {
                    Ok(notices) => notices,
                    Err(rejection) => return Outcome::Rejected(rejection),
                }
            }
            "deregister" => self.awareness.deregister(&user, &payload.window_id),
            "heartbeat" => {
                self.awareness.heartbeat(&user, &payload.window_id, now);
                Notices::new()
            }
            _ => {
                self.awareness.focus(&user, &payload.window_id);
                Notices::new()
            }
        };
        self.notify(notices, slow);
        Outcome::Done
    }

    /// The user an awareness message acts for: the connection's, which the payload's
    /// `userId` must match (`FORBIDDEN`). A connection without one takes it from its first
    /// `register`, within `maxConnectionsPerUser` (else `CONNECTION_LIMIT` and 1008).
    fn user_for(&self, sender: &Sender, claimed: &str, registering: bool, now: Millis) -> Result<Arc<str>, Outcome> {
        let Some(current) = self.conns.get(&sender.id).map(|c| c.user.get().cloned()) else { return Err(Outcome::Done) };
        if let Some(user) = current {
            return if *user == *claimed {
                Ok(user)
            } else {
                Err(Outcome::Rejected(Rejection::new(ErrorCode::Forbidden, "The payload's userId is not this connection's user")))
            };
        }
        if !registering {
            return Err(Outcome::Rejected(Rejection::new(ErrorCode::Forbidden, "Register before sending for a user")));
        }
        if self.config.verified_users_only {
            return Err(Outcome::Rejected(Rejection::new(ErrorCode::Forbidden, "With token auth, a connection is the user its token names")));
        }
        let user: Arc<str> = claimed.into();
        if !self.take_user_slot(&user, sender.id) {
            let refusal = Refusal::ConnectionLimit;
            if let Some(notice) = refusal.notice(now) {
                self.push(sender.id, &*sender.outbox, notice, &mut SlowConsumers::new());
            }
            self.disconnect(sender.id, refusal.close_code(), refusal.reason(), now);
            return Err(Outcome::Done);
        }
        // A connection's messages are routed one at a time, so nothing set its user meanwhile.
        let still_open = self.conns.get(&sender.id).map(|c| c.user.set(user.clone())).is_some();
        if !still_open {
            self.release_user_slot(&user, sender.id);
            return Err(Outcome::Done);
        }
        Ok(user)
    }

    /// Delivers awareness notices: to a connection, or to every connection of a user.
    fn notify(&self, notices: Notices, slow: &mut SlowConsumers) {
        for (audience, frame) in notices {
            let recipients = match audience {
                Audience::Conn(conn) => vec![conn],
                Audience::User(user) => self.users.get(&*user).map(|conns| conns.clone()).unwrap_or_default(),
            };
            for conn in recipients {
                if let Some(outbox) = self.conns.get(&conn).map(|c| c.outbox.clone()) {
                    self.push(conn, &*outbox, frame.clone(), slow);
                }
            }
        }
    }

    fn is_active(&self, sender: &Sender) -> bool {
        let Some(session_id) = &sender.session else { return false };
        self.sessions.get(session_id).is_some_and(|s| s.control.active == Some(sender.id))
    }

    /// A control-role message (docs/protocol.md, "Control roles"), handled by the session's
    /// [`Control`](crate::roles::Control).
    fn control(&self, sender: &Sender, kind: &str, envelope: &Envelope, frame: &Frame, now: Millis, slow: &mut SlowConsumers) -> Outcome {
        let Some(session_id) = &sender.session else { return Outcome::Rejected(ErrorCode::NoSession.into()) };
        let Some(mut session) = self.sessions.get_mut(session_id) else { return Outcome::Done };
        session.last_activity.store(now, Ordering::Relaxed);
        let Session { control, members, conflict_resolution, .. } = &mut *session;
        let sends = match kind {
            "request_control" => {
                let timeout = self.config.control_request_timeout_ms;
                let sends = control.request(sender.id, frame, *conflict_resolution, timeout, &*members, now);
                if let Some(transfer) = control.transfer.filter(|t| t.requester == sender.id) {
                    self.transfers.insert(session_id.clone(), transfer.deadline);
                }
                sends
            }
            "accept_control" => control.accept(sender.id, frame, &*members, now),
            "decline_control" => control.decline(sender.id, frame),
            "release_control" => control.release(sender.id, frame, now),
            _ => {
                let announced = envelope.data.and_then(|raw| serde_json::from_str::<RoleAnnouncement>(raw.get()).ok());
                control.role_changed(sender.id, announced.as_ref().and_then(|a| a.role.as_deref()), frame, now)
            }
        };
        self.deliver(members, sends, slow);
        Outcome::Done
    }

    fn deliver(&self, members: &[Member], sends: Vec<Send>, slow: &mut SlowConsumers) {
        for send in sends {
            match send {
                Send::To(conn, frame) => {
                    if let Some(member) = members.iter().find(|m| m.conn == conn) {
                        self.push(member.conn, &*member.outbox, frame, slow);
                    }
                }
                Send::AllBut(except, frame) => {
                    for member in members.iter().filter(|m| m.conn != except) {
                        self.push(member.conn, &*member.outbox, frame.clone(), slow);
                    }
                }
            }
        }
    }

    /// Has the app's `message` listeners see messages of `kind` (with the sender's ids).
    pub fn watch(&self, kind: &str) {
        self.watched.write().insert(kind.into());
        self.watching.store(true, Ordering::Release);
    }

    fn report_watched(&self, sender: &Sender, envelope: &Envelope, frame: &Frame) {
        if self.watching.load(Ordering::Acquire) && self.watched.read().contains(envelope.kind.as_ref()) {
            self.events.emit(Event::Message {
                connection: sender.info(),
                kind: envelope.kind.clone().into_owned(),
                message: frame.payload.clone(),
            });
        }
    }

    /// Sends `frame` from the server to every connection `target` matches. Returns how
    /// many it reached.
    pub fn send(&self, target: &Target, frame: Frame, now: Millis) -> usize {
        let channel = match target.channel.map(ChannelName::parse) {
            Some(Ok(name)) => Some(name),
            Some(Err(_)) => return 0,
            None => None,
        };
        let session = match target.session_id.map(SessionId::parse) {
            Some(Ok(id)) => Some(id),
            Some(Err(_)) => return 0,
            None => None,
        };
        if let (None, Some(name), None, None) = (&session, &channel, target.user_id, target.organization_id) {
            // To a whole channel: a publication, numbered and kept with channel history on.
            let mut slow = SlowConsumers::new();
            let delivered = self.publish_in_channel(name, target.except, &frame, now, &mut slow);
            self.close_slow_consumers(slow, now);
            return delivered;
        }
        if let (Some(id), None, None, None) = (&session, &channel, target.user_id, target.organization_id) {
            // To a whole session: a publication, numbered and kept when it has a stream.
            let mut slow = SlowConsumers::new();
            let delivered = match self.sessions.get(id) {
                Some(session) => self.publish_in_session(&session, None, target.except, &frame, now, &mut slow).0,
                None => 0,
            };
            self.close_slow_consumers(slow, now);
            return delivered;
        }
        let candidates: Vec<ConnId> = if let Some(name) = &channel {
            let mut members = Vec::new();
            self.channels.for_each_member(name, None, |m| members.push(m.conn));
            members
        } else if let Some(id) = &session {
            self.sessions.get(id).map(|s| s.members.iter().map(|m| m.conn).collect()).unwrap_or_default()
        } else if let Some(user) = target.user_id {
            self.users.get(user).map(|conns| conns.clone()).unwrap_or_default()
        } else {
            self.conns.iter().map(|c| *c.key()).collect()
        };
        let mut slow = SlowConsumers::new();
        let mut delivered = 0;
        for id in candidates.into_iter().filter(|id| Some(*id) != target.except) {
            let outbox = {
                let Some(conn) = self.conns.get(&id) else { continue };
                let matches = session.as_ref().is_none_or(|s| conn.session.as_ref() == Some(s))
                    && target.user_id.is_none_or(|u| conn.user.get().is_some_and(|user| **user == *u))
                    && target.organization_id.is_none_or(|o| conn.identity.organization_id.as_deref() == Some(o))
                    && channel.as_ref().is_none_or(|c| conn.channels.lock().contains(c));
                if !matches {
                    continue;
                }
                conn.outbox.clone()
            };
            if self.push(id, &*outbox, frame.clone(), &mut slow) {
                delivered += 1;
            }
        }
        self.close_slow_consumers(slow, now);
        delivered
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

    /// Notes a pong from the client: it is alive, and the ping's round trip is known.
    pub fn pong(&self, conn: ConnId, now: Millis) {
        if let Some(c) = self.conns.get(&conn) {
            c.last_seen.store(now, Ordering::Relaxed);
            let sent = c.ping_sent.swap(0, Ordering::Relaxed);
            if sent != 0 {
                c.round_trip.store(now.saturating_sub(sent), Ordering::Relaxed);
            }
        }
    }

    /// Notes a sign of life that is neither a message nor a pong (a client's ping).
    pub fn alive(&self, conn: ConnId, now: Millis) {
        if let Some(c) = self.conns.get(&conn) {
            c.last_seen.store(now, Ordering::Relaxed);
        }
    }

    /// Connections by how they answer pings: one whose ping has waited longer than half
    /// the ping interval is unhealthy.
    pub fn health(&self, now: Millis) -> Health {
        let patience = (self.config.ping_interval_ms / 2).max(1);
        let (mut unhealthy, mut round_trips, mut measured) = (0, 0u64, 0usize);
        for conn in self.conns.iter() {
            let sent = conn.ping_sent.load(Ordering::Relaxed);
            if sent != 0 && now.saturating_sub(sent) >= patience {
                unhealthy += 1;
            }
            let round_trip = conn.round_trip.load(Ordering::Relaxed);
            if round_trip != u64::MAX {
                round_trips += round_trip;
                measured += 1;
            }
        }
        let active = self.conns.len();
        Health {
            active_connections: active,
            healthy_connections: active.saturating_sub(unhealthy),
            unhealthy_connections: unhealthy,
            average_latency_ms: (measured > 0).then(|| round_trips as f64 / measured as f64),
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
        self.counters.closed(conn.outbox.transport(), code);
        if close_outbox {
            conn.outbox.close(code, reason);
        }
        self.requests.forget(id);
        for name in conn.channels.lock().drain(..).collect::<Vec<_>>() {
            self.leave_channel_as(&name, id, &mut slow);
        }
        if let Some(user) = conn.user.get() {
            self.release_user_slot(user, id);
            let notices = self.awareness.connection_closed(user, id);
            self.notify(notices, &mut slow);
        }
        let info = conn.info(id);
        if let Some(session_id) = &conn.session {
            if let Some(mut session) = self.sessions.get_mut(session_id) {
                let Session { control, members, .. } = &mut *session;
                let (was_active, sends) = control.left(id, now);
                members.retain(|m| m.conn != id);
                let farewell = protocol::client_disconnected(&info.client_id, &id.to_string(), was_active, now);
                for member in members.iter() {
                    self.push(member.conn, &*member.outbox, farewell.clone(), &mut slow);
                }
                self.deliver(members, sends, &mut slow);
            }
        }
        self.events.emit(Event::Disconnected { connection: info, code, reason: reason.to_owned() });
        slow
    }

    /// Closes every member of a session that is already out of the map, so nobody is
    /// left to be told of the others leaving. Returns the connections elsewhere (a member
    /// user's other windows) whose outboxes overflowed with the news.
    fn end_session(&self, session: Session, code: u16, reason: &str, now: Millis) -> SlowConsumers {
        if session.order.is_some() {
            self.broker.close_stream(&Topic::Session(session.id.clone()));
        }
        let mut slow = SlowConsumers::new();
        for member in session.members {
            slow.extend(self.remove_connection(member.conn, code, reason, true, now));
        }
        slow
    }

    /// Runs what is due: session expiry every cleanup interval; pings and heartbeat
    /// timeouts every ping interval; request timeouts. Call it every
    /// [`Config::tick_interval_ms`].
    pub fn tick(&self, now: Millis) {
        let previous = self.last_tick.swap(now, Ordering::Relaxed);
        if previous != 0 && now.saturating_sub(previous) > self.stall_threshold_ms() {
            // The relay was not running (the process was stopped, or starved of CPU):
            // every client looks silent, though its pongs may wait unread in a socket.
            // Give the transports a ping interval to read them before judging anyone.
            self.judge_silence_after.store(now.saturating_add(self.config.ping_interval_ms), Ordering::Relaxed);
        }
        if now >= self.next_cleanup.load(Ordering::Relaxed) {
            self.next_cleanup.store(now + self.config.cleanup_interval_ms, Ordering::Relaxed);
            self.expire_sessions(now);
            // A channel's stream outlives its members (they may come back to recover),
            // but not once it holds nothing.
            self.broker.sweep(now, &|topic| matches!(topic, Topic::Channel(name) if self.channels.exists(name)));
        }
        if now >= self.next_heartbeat.load(Ordering::Relaxed) {
            self.next_heartbeat.store(now + self.config.ping_interval_ms, Ordering::Relaxed);
            self.heartbeat(now);
        }
        self.expire_requests(now);
        self.expire_transfers(now);
        self.forget_full_buckets(now);
        let mut slow = SlowConsumers::new();
        self.notify(self.awareness.expire(now, self.config.heartbeat_timeout_ms), &mut slow);
        self.close_slow_consumers(slow, now);
    }

    fn expire_sessions(&self, now: Millis) {
        let expired: Vec<SessionId> = self.sessions.iter().filter(|s| s.is_expired(now)).map(|s| s.id.clone()).collect();
        for id in expired {
            if let Some((_, session)) = self.sessions.remove_if(&id, |_, s| s.is_expired(now)) {
                let slow = self.end_session(session, close_code::NORMAL, "Session expired", now);
                self.close_slow_consumers(slow, now);
                self.events.emit(Event::SessionExpired { session_id: id });
            }
        }
    }

    /// Declines the forwarded control requests nobody answered in time.
    fn expire_transfers(&self, now: Millis) {
        let due: Vec<SessionId> = self.transfers.iter().filter(|entry| *entry.value() <= now).map(|entry| entry.key().clone()).collect();
        let mut slow = SlowConsumers::new();
        for id in due {
            self.transfers.remove_if(&id, |_, deadline| *deadline <= now);
            if let Some(mut session) = self.sessions.get_mut(&id) {
                let Session { control, members, .. } = &mut *session;
                let sends = control.expire(now);
                self.deliver(members, sends, &mut slow);
            }
        }
        self.close_slow_consumers(slow, now);
    }

    /// A full bucket says nothing a new one would not: dropping them bounds the maps.
    fn forget_full_buckets(&self, now: Millis) {
        if let Some(rate) = self.config.address_rate() {
            self.address_buckets.retain(|_, bucket| !bucket.is_full(rate, now));
        }
        if let Some(rate) = self.config.rate_limit.as_ref().and_then(|limits| limits.per_user) {
            self.user_buckets.retain(|_, bucket| !bucket.is_full(rate, now));
        }
    }

    fn expire_requests(&self, now: Millis) {
        let mut slow = SlowConsumers::new();
        for (conn, request_id) in self.requests.expire(now) {
            let Some(outbox) = self.conns.get(&conn).map(|c| c.outbox.clone()) else { continue };
            let Ok(id) = RawValue::from_string(request_id.into()) else { continue };
            let timeout = protocol::error(&ErrorCode::RequestTimeout.into(), Offending { request_id: Some(&id), ..Default::default() }, now);
            self.push(conn, &*outbox, timeout, &mut slow);
        }
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
        let judging = now >= self.judge_silence_after.load(Ordering::Relaxed);
        for conn in self.conns.iter() {
            let heard = conn.last_seen.load(Ordering::Relaxed);
            if judging && now.saturating_sub(heard) >= self.config.heartbeat_timeout_ms {
                silent.push(*conn.key());
            } else if self.push(*conn.key(), &*conn.outbox, Frame::ping(), &mut slow) {
                let _ = conn.ping_sent.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
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
            // Every connection closes with `code` here: none is singled out as slow.
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

    /// A transport's writer took frames that had waited this long since the first of them
    /// was routed to its connection: the relay latency in [`Stats::relay_latency`].
    pub fn record_relay_latency(&self, waited: std::time::Duration) {
        self.counters.relay_latency(waited);
    }

    pub fn stats(&self) -> Stats {
        self.counters.snapshot(Sizes {
            sessions: self.sessions.len(),
            connections: self.conns.len(),
            channels: self.channels.count(),
            users: self.users.len(),
            registrations: self.awareness.registrations(),
            history_bytes: self.broker.kept_bytes(),
        })
    }

    /// Each channel's name and how many members it has, by name.
    pub fn channel_breakdown(&self) -> Vec<(String, usize)> {
        self.channels.breakdown()
    }
}
