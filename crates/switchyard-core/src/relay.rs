//! The relay: who is connected to which session and channel, and where each frame goes.
//! Each kind of reserved message is handled in a module of its own below this one
//! (channels, publications, control roles, requests, awareness), as are rates and user
//! slots, and server-side send targeting.
//!
//! State lives in sharded maps so transport threads route concurrently. Where a guard is
//! taken under another, it is a session's or a channel's first and then the broker's (a
//! publication is numbered under its topic's lock), never the other way round, so lock
//! order cannot deadlock; outboxes are pushed under a session's or a channel's lock,
//! which is why they only queue.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use std::sync::OnceLock;

use parking_lot::Mutex;
use serde_json::Value;
use thin_vec::ThinVec;

mod awareness_messages;
mod channel_messages;
mod control_messages;
mod fan_out;
mod publications;
mod rates;
mod remote;
mod request_messages;
mod targeting;

pub use publications::PublishError;
pub use targeting::Target;
use fan_out::Reach;

use crate::awareness::{Audience, Awareness, Notices};
use crate::channels::{AllowList, ChannelName, Channels, Joiner};
use crate::config::{AckPolicy, Config, SlowConsumerPolicy};
use crate::envelope::Envelope;
use crate::error::{close_code, ErrorCode, ConnectionRefusal, MessageRejection, SessionError};
use crate::event::{ConnectionInfo, Event, EventSink};
use crate::frame::{Frame, FrameKind};
use crate::ids::{ConnId, Millis, SessionId};
use crate::limiter::Limiter;
use crate::limits::{Bucket, Rate};
use crate::message::ClientMessage;
use crate::outbox::{Outbox, Pushed};
use crate::protocol::{self, Offending};
use crate::requests::Requests;
use crate::roles;
use crate::protocol::WelcomePosition;
use crate::session::{ClientName, Member, Session, SessionInfo, SessionOptions};
use crate::elsewhere::Elsewhere;
use crate::broker::{Alone, AwarenessStep, ClusterLink, ClusterStatus, Delivery, Filter, MemoryStreams, Recovery, Remote, SessionRecord, Streams, Topic};
use crate::streams::Resume;
use crate::report::StatsReport;
use crate::stats::{Counters, Health, Sizes, Stats};
use crate::timers::{Intervals, Timers};
use crate::watched::WatchedTypes;

/// A session's member list grows one member at a time up to this many, by doubling
/// past it: most sessions are small, and doubling would leave up to half of a small
/// one's list empty, a cost every idle member shares.
const EXACT_GROWTH_UP_TO: usize = 16;

/// A connection may be in this many channels at once; more joins are refused.
pub const MAX_CHANNELS_PER_CONNECTION: usize = 256;
/// Longest lifetime a session may be given (about 35,000 years): its end stays a
/// date every client can write.
pub const MAX_SESSION_LIFETIME_MS: u64 = 1 << 50;
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

/// The identity with nothing in it: what every connection without one of its own shares.
static ANONYMOUS: Identity = Identity {
    user_id: None,
    organization_id: None,
    client_id: None,
    metadata: None,
    rate_limit: None,
    resume: Resume { positions: false, since: None, previous: Vec::new() },
};

/// A connection's identity, shared with what routes its messages. A connection that has
/// none of its own (no token, no tier, nothing asked of its stream) allocates nothing
/// for it: most of them, and idle ones must stay small.
#[derive(Clone)]
struct SharedIdentity(Option<Arc<Identity>>);

impl SharedIdentity {
    fn new(identity: Identity) -> Self {
        Self((identity != ANONYMOUS).then(|| Arc::new(identity)))
    }
}

impl std::ops::Deref for SharedIdentity {
    type Target = Identity;

    fn deref(&self) -> &Identity {
        self.0.as_deref().unwrap_or(&ANONYMOUS)
    }
}

struct Connection {
    session: Option<SessionId>,
    outbox: Arc<dyn Outbox>,
    name: Arc<ClientName>,
    identity: SharedIdentity,
    /// The identity's user, or else the user of the connection's first `register`.
    user: OnceLock<Arc<str>>,
    /// A pointer wide, and no allocation while the connection is in no channel.
    channels: Mutex<ThinVec<ChannelName>>,
    /// Last time anything (a message or a pong) was heard from the client.
    last_seen: AtomicU64,
    /// When the ping now waiting for its pong was sent; 0 when none waits.
    ping_sent: AtomicU64,
    /// The last ping's round trip in milliseconds; `u32::MAX` before the first.
    round_trip: AtomicU32,
    /// Present when messages are rate limited; boxed, so that a connection without one
    /// costs the connection map eight bytes for it.
    bucket: Option<Box<Mutex<Bucket>>>,
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
    identity: SharedIdentity,
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

/// What became of a message.
enum Outcome {
    /// An answer to the sender alone.
    Reply(Frame),
    /// Routed to this many connections.
    Routed(usize),
    /// Handled, with nothing to say now.
    Done,
    /// Answered already, in order with what followed the answer (a replay).
    Answered,
    Rejected(MessageRejection),
    /// Dropped without an answer, unless the message asked for an acknowledgement,
    /// which gets a `NACK`.
    Dropped(MessageRejection),
}

/// Recipients whose outbox was full during a fan-out; dealt with once no lock is held.
type SlowConsumers = Vec<ConnId>;

pub struct Relay {
    config: Config,
    events: Arc<dyn EventSink>,
    sessions: DashMap<SessionId, Session>,
    /// Boxed: the map's spare room (up to half its slots) then costs a pointer a slot,
    /// not a whole connection.
    conns: DashMap<ConnId, Box<Connection>>,
    channels: Channels,
    requests: Requests,
    awareness: Awareness,
    /// The buckets of users and addresses, and each user's connections.
    limiter: Limiter,
    /// Message types the app watches.
    watched: WatchedTypes,
    last_conn_id: AtomicU64,
    counters: Counters,
    timers: Timers,
    /// Sessions whose forwarded `request_control` waits for an answer, with its deadline:
    /// one entry a session, so spamming requests grows nothing.
    transfers: DashMap<SessionId, Millis>,
    /// Where the streams of sessions and channels are numbered and kept.
    streams: Arc<dyn Streams>,
    /// What crosses to the cluster's other nodes; nothing, alone.
    link: Arc<dyn ClusterLink>,
    /// Members of this node's sessions connected to other nodes.
    elsewhere: Elsewhere,
}

impl Relay {
    /// `config` must have passed [`Config::validate`]. A node alone: streams are kept in
    /// this process.
    pub fn new(config: Config, events: Arc<dyn EventSink>) -> Self {
        let streams = Arc::new(MemoryStreams::new(config.history_max_bytes));
        Self::with_seams(config, events, streams, Arc::new(Alone))
    }

    /// A relay with these streams and this link to the cluster's other nodes ([`Alone`]
    /// for a node by itself).
    pub fn with_seams(config: Config, events: Arc<dyn EventSink>, streams: Arc<dyn Streams>, link: Arc<dyn ClusterLink>) -> Self {
        Self {
            elsewhere: Elsewhere::new(link.status().map_or_else(|| "".into(), |cluster| cluster.node_id)),
            last_conn_id: AtomicU64::new(link.connection_id_base()),
            streams,
            link,
            channels: Channels::new(AllowList::new(config.channel_allow.as_deref())),
            config,
            events,
            sessions: DashMap::new(),
            conns: DashMap::new(),
            requests: Requests::default(),
            awareness: Awareness::default(),
            limiter: Limiter::default(),
            watched: WatchedTypes::default(),
            counters: Counters::default(),
            timers: Timers::default(),
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
        if self.link.status().is_some_and(|cluster| cluster.joined && !cluster.connected) {
            return Err(SessionError::Unavailable);
        }
        let history = options.history.or(self.config.history);
        // 0 means the default, as it did in the original.
        let lifetime = options.expires_in_ms.filter(|ms| *ms > 0).unwrap_or(self.config.session_timeout_ms);
        let session = Session::from_record(SessionRecord {
            id: id.clone(),
            created_at: now,
            expires_at: now.saturating_add(lifetime),
            max_clients: options.max_clients.unwrap_or(self.config.max_clients_per_session),
            metadata: options.metadata,
            conflict_resolution: options.conflict_resolution.unwrap_or(self.config.default_conflict_resolution),
            history,
        });
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

    pub fn session(&self, id: &str) -> Option<SessionInfo> {
        let id = SessionId::parse(id).ok()?;
        self.sessions.get(&id).map(|s| self.info_of(&s))
    }

    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.sessions.iter().map(|s| self.info_of(&s)).collect()
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
        (ids.iter().filter_map(|id| self.sessions.get(id).map(|s| self.info_of(&s))).collect(), more)
    }

    /// How many members a session admits, on every node together.
    pub fn capacity(&self, id: &str) -> Option<usize> {
        self.sessions.get(&SessionId::parse(id).ok()?).map(|s| s.max_clients)
    }

    /// A session as the app sees it: its members counted on every node.
    fn info_of(&self, session: &Session) -> SessionInfo {
        let mut info = session.info();
        self.elsewhere.with(&session.id, |elsewhere| {
            info.client_count += elsewhere.len();
            let everyone = control_messages::Everyone { here: &session.members, elsewhere, link: &*self.link, sender: None };
            info.active_client_id = session.control.active().map(|active| roles::Members::client_id(&everyone, active));
        });
        info
    }

    /// Removes a session and closes its connections with 1000 "Session deleted", on
    /// every node of a cluster.
    pub fn delete_session(&self, id: &str, now: Millis) -> bool {
        let Ok(id) = SessionId::parse(id) else { return false };
        self.link.forward(Remote::SessionDeleted(id.clone()));
        self.end_session_here(&id, now)
    }

    /// Removes a session from this node, closing its members here.
    fn end_session_here(&self, id: &SessionId, now: Millis) -> bool {
        self.elsewhere.forget_session(id);
        let Some((_, session)) = self.sessions.remove(id) else {
            return false;
        };
        let session_id = session.id.clone();
        let slow = self.end_session(session, close_code::NORMAL, "Session deleted", now);
        self.close_slow_consumers(slow, now);
        self.events.emit(Event::SessionDeleted { session_id });
        true
    }

    /// Lets a connection in, or says why not. The outbox receives the welcome at once.
    pub fn open(&self, route: Route, mut identity: Identity, outbox: Arc<dyn Outbox>, now: Millis) -> Result<ConnId, ConnectionRefusal> {
        let id = ConnId(self.last_conn_id.fetch_add(1, Ordering::Relaxed) + 1);
        let session_id = match route {
            Route::Session(ref raw) => Some(SessionId::parse(raw).map_err(|_| ConnectionRefusal::SessionNotFound)?),
            Route::Sessionless => None,
        };
        if let Some(session_id) = &session_id {
            for previous in &identity.resume.previous {
                self.replace_previous(session_id, previous, &identity, now);
            }
        }
        // The session's own id, not the one just parsed: every connection of a session
        // shares its allocation.
        let session_id = session_id.map(|parsed| self.sessions.get(&parsed).map_or(parsed, |entry| entry.key().clone()));
        let user = identity.user_id.as_deref().map(Arc::<str>::from);
        if let Some(user) = &user {
            if !self.take_user_slot(user, id) {
                return Err(ConnectionRefusal::ConnectionLimit);
            }
        }
        let name = Arc::new(ClientName::new(identity.client_id.take()));
        let identity = SharedIdentity::new(identity);
        let connection = Connection {
            session: session_id.clone(),
            outbox: outbox.clone(),
            name: name.clone(),
            identity: identity.clone(),
            user: user.clone().map(OnceLock::from).unwrap_or_default(),
            channels: Mutex::default(),
            last_seen: AtomicU64::new(now),
            ping_sent: AtomicU64::new(0),
            round_trip: AtomicU32::new(u32::MAX),
            bucket: self.config.rate_limit.as_ref().map(|limits| {
                Box::new(Mutex::new(Bucket::full(identity.rate_limit.unwrap_or(limits.per_connection), now)))
            }),
            violations: AtomicU32::new(0),
            upper_case: AtomicBool::new(false),
        };
        let info = connection.info(id);
        let transport = outbox.transport();
        self.conns.insert(id, Box::new(connection));

        let mut slow = SlowConsumers::new();
        if let Some(session_id) = &session_id {
            if let Err(refusal) = self.join_session(session_id, id, name, outbox, &identity.resume, now, &mut slow) {
                self.conns.remove(&id);
                if let Some(user) = &user {
                    self.limiter.release_user_slot(user, id);
                }
                return Err(refusal);
            }
        }
        self.counters.opened(transport);
        self.events.emit(Event::Connected(info));
        self.close_slow_consumers(slow, now);
        Ok(id)
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
    ) -> Result<(), ConnectionRefusal> {
        let mut session = self.sessions.get_mut(session_id).ok_or(ConnectionRefusal::SessionNotFound)?;
        if session.is_expired(now) {
            return Err(ConnectionRefusal::SessionNotFound);
        }
        let elsewhere = self.elsewhere.count(session_id);
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

    /// Routes one frame the transport read from `from`.
    pub fn receive(&self, from: ConnId, frame: Frame, now: Millis) {
        Counters::add(&self.counters.messages_received, 1);
        Counters::add(&self.counters.bytes_received, frame.len() as u64);
        self.counters.frame_sizes.record(frame.len() as u64);
        if frame.len() > self.config.max_message_bytes {
            self.end_connection(from, close_code::TOO_LARGE, "Message too large", now);
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
        if let Some(announced) = &envelope.client_id {
            sender.name.announce(announced);
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
            Outcome::Answered => None,
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
    fn refusal(&self, envelope: &Envelope, frame: &Frame, rejection: &MessageRejection, now: Millis) -> Frame {
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
        let message = match ClientMessage::read(envelope, &frame.payload, self.config.enable_role_management) {
            Ok(message) => message,
            Err(rejection) => return Outcome::Rejected(rejection),
        };
        match message {
            ClientMessage::Ping { upper_case } => Outcome::Reply(protocol::pong(upper_case, envelope.id, now)),
            ClientMessage::JoinChannel(join) => self.join_channel(sender, join, now, slow),
            ClientMessage::LeaveChannel(name) => self.leave_channel(sender, name, slow),
            ClientMessage::ChannelPresence(name) => self.channel_presence(sender, &name),
            ClientMessage::Request { request_id, payload } => self.request(sender, request_id, payload, now),
            ClientMessage::Awareness(message) => self.awareness(sender, message, frame, now, slow),
            ClientMessage::Control(step) => self.control(sender, step, frame, now, slow),
            ClientMessage::StateUpdate if !self.is_active(sender) => {
                Counters::add(&self.counters.passive_updates_dropped, 1);
                Outcome::Dropped(ErrorCode::NotActive.into())
            }
            ClientMessage::StateUpdate | ClientMessage::Publish => match &envelope.channel {
                Some(channel) => self.publish_to_channel(sender, channel, frame, now, slow),
                None => self.relay_to_session(sender, frame, now, slow),
            },
        }
    }

    /// Delivers awareness notices: to a connection, or to every connection of a user.
    fn notify(&self, notices: Notices, now: Millis, slow: &mut SlowConsumers) {
        for (audience, frame) in notices {
            let topic = match audience {
                Audience::Conn(conn) => Topic::Connection(conn),
                Audience::User(user) => Topic::User(user),
            };
            let delivery = Delivery { topic, frame, from: None, except: None, publication: false, filter: Filter::default() };
            self.fan_out(delivery, Reach::Here, now, slow);
        }
    }

    /// Has the app's `message` listeners see messages of `kind` (with the sender's ids).
    pub fn watch(&self, kind: &str) {
        self.watched.watch(kind);
    }

    fn report_watched(&self, sender: &Sender, envelope: &Envelope, frame: &Frame) {
        if self.watched.contains(envelope.kind.as_ref()) {
            self.events.emit(Event::Message {
                connection: sender.info(),
                kind: envelope.kind.clone().into_owned(),
                message: frame.payload.clone(),
            });
        }
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
                let round_trip = u32::try_from(now.saturating_sub(sent)).unwrap_or(u32::MAX - 1);
                c.round_trip.store(round_trip, Ordering::Relaxed);
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
            if round_trip != u32::MAX {
                round_trips += u64::from(round_trip);
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
    pub fn connection_closed(&self, conn: ConnId, code: u16, reason: &str, now: Millis) {
        let slow = self.remove_connection(conn, code, reason, false, now);
        self.close_slow_consumers(slow, now);
    }

    /// The server ends a connection: its outbox gets a close frame with `code`, the other
    /// members are told. Transports call it for frames they refuse before reading them
    /// whole (1009) or cannot decode (1002, 1007).
    pub fn end_connection(&self, conn: ConnId, code: u16, reason: &str, now: Millis) {
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
            self.limiter.release_user_slot(user, id);
            if self.link.orders_steps() {
                self.link.forward(Remote::Awareness { user: user.clone(), conn: id, step: AwarenessStep::Closed, frame: Frame::text(Vec::new()) });
            } else {
                let _ = self.apply_awareness(user, id, &AwarenessStep::Closed, now, &mut slow);
            }
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
                let last = members.is_empty();
                drop(session);
                self.link.forward(Remote::MemberLeft { session: session_id.clone(), conn: id, was_active });
                if last {
                    self.link.subscribed(&Topic::Session(session_id.clone()));
                }
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

    /// Runs what is due: session expiry every cleanup interval; pings and heartbeat
    /// timeouts every ping interval; request timeouts. Call it every
    /// [`Config::tick_interval_ms`].
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
        self.expire_transfers(now);
        self.forget_full_buckets(now);
        let mut slow = SlowConsumers::new();
        self.notify(self.awareness.expire(now, self.config.heartbeat_timeout_ms), now, &mut slow);
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

    /// Ticks further apart than this mean the relay stood still (a late timer only
    /// postpones judging by a ping interval, so erring towards it costs nothing).
    fn stall_threshold_ms(&self) -> u64 {
        3 * self.config.tick_interval_ms()
    }

    fn heartbeat(&self, now: Millis) {
        let mut silent = Vec::new();
        let mut slow = SlowConsumers::new();
        let judging = self.timers.judging_silence(now);
        for conn in self.conns.iter() {
            let heard = conn.last_seen.load(Ordering::Relaxed);
            if judging && now.saturating_sub(heard) >= self.config.heartbeat_timeout_ms {
                silent.push(*conn.key());
            } else if self.push(*conn.key(), &*conn.outbox, Frame::ping(), &mut slow) {
                let _ = conn.ping_sent.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
            }
        }
        for conn in silent {
            self.end_connection(conn, close_code::GOING_AWAY, "Connection timeout", now);
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

#[cfg(test)]
mod tests {
    /// Every open connection has one, boxed in the connection map: at 128 bytes it takes
    /// the allocator's 128-byte class, not the next one up.
    #[test]
    fn a_connection_fits_128_bytes() {
        let size = std::mem::size_of::<super::Connection>();
        assert!(size <= 128, "{size} bytes");
    }
}
