//! The relay: the one entry point of the protocol machine. A frame read from a connection
//! comes in through [`Relay::receive`], is parsed once into a [`ClientMessage`], and is
//! dispatched by one match to the module below this one that handles its kind (channels,
//! publications, control roles, requests, awareness). The state lives in owned parts: the
//! connections ([`Registry`]), the sessions ([`Sessions`]), the channels, the requests,
//! awareness, rate limits and user slots ([`Limiter`]), timers, counters, the app's events,
//! the questions for the app's hooks ([`Questions`]), and the broker's seams ([`Streams`],
//! [`ClusterLink`]).
//!
//! The parts are sharded maps so transport threads route concurrently. Where a guard is
//! taken under another, it is a session's or a channel's first and then the streams' (a
//! publication is numbered under its topic's lock), never the other way round, so lock
//! order cannot deadlock; outboxes are pushed under a session's or a channel's lock,
//! which is why they only queue.

use std::sync::atomic::Ordering;
use std::sync::Arc;

mod answers;
mod awareness_messages;
mod channel_messages;
mod control_messages;
mod fan_out;
mod hook_questions;
mod publications;
mod rates;
mod remote;
mod reports;
mod request_messages;
mod session_lifecycle;
mod targeting;
mod token_lifetimes;
mod upkeep;

pub use publications::PublishError;
pub use targeting::Target;

use crate::app_events::AppEvents;
use crate::awareness::{Audience, Awareness, Notices};
use crate::broker::{AwarenessStep, ClusterLink, Delivery, Filter, Remote, Seams, Streams, Topic};
use crate::channels::{AllowList, Channels};
use crate::config::Config;
use crate::envelope::Envelope;
use crate::error::{close_code, ConnectionRefusal, ErrorCode, MessageRejection};
use crate::event::{Event, EventSink};
use crate::frame::{Frame, FrameKind};
use crate::hooks::Verdict;
use crate::ids::{ConnId, Millis, SessionId};
use crate::lifetimes::Lifetimes;
use crate::limiter::Limiter;
use crate::limits::Bucket;
use crate::message::ClientMessage;
use crate::outbox::{Outbox, Pushed};
use crate::policies::SlowConsumerPolicy;
use crate::protocol::{self, Offending};
use crate::questions::{Arrival, Questions};
use crate::registry::{Connection, Identity, Registry, Route, Sender, SharedIdentity};
use crate::requests::Requests;
use crate::session::{ClientName, Session};
use crate::sessions::Sessions;
use crate::stats::Counters;
use crate::timers::Timers;
use fan_out::Reach;

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
    /// Held until the application answers the question it raised.
    Asked,
    Rejected(MessageRejection),
    /// Dropped without an answer, unless the message asked for an acknowledgement,
    /// which gets a `NACK`.
    Dropped(MessageRejection),
}

/// Recipients whose outbox was full during a fan-out; dealt with once no lock is held.
type SlowConsumers = Vec<ConnId>;

/// What became of a frame a transport handed to [`Relay::receive`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// Routed, answered or held for the application's answer.
    Taken,
    /// Longer than `maxMessageBytes`: the connection was closed 1009.
    TooLarge,
    /// Past the connection's rate (or its queue behind a pending hook): refused with
    /// `RATE_LIMITED`.
    RateLimited,
    /// The connection is no longer open.
    Gone,
}

/// The protocol machine of one node: its connections, sessions and channels, and where
/// each frame they send goes.
pub struct Relay {
    config: Config,
    events: AppEvents,
    sessions: Sessions,
    registry: Registry,
    channels: Channels,
    requests: Requests,
    awareness: Awareness,
    /// The buckets of users and addresses, and each user's connections.
    limiter: Limiter,
    counters: Counters,
    timers: Timers,
    /// Where the streams of sessions and channels are numbered and kept.
    streams: Arc<dyn Streams>,
    /// What crosses to the cluster's other nodes; nothing, alone.
    link: Arc<dyn ClusterLink>,
    questions: Questions,
    /// When the connections' tokens expire.
    lifetimes: Lifetimes,
}

impl Relay {
    /// `config` must have passed [`Config::validate`]. A node alone: streams are kept in
    /// this process.
    pub fn new(config: Config, events: Arc<dyn EventSink>) -> Self {
        let seams = Seams::alone(config.history_max_bytes);
        Self::with_seams(config, events, seams)
    }

    /// A relay on these seams: a node by itself has [`Seams::alone`]'s.
    pub fn with_seams(config: Config, events: Arc<dyn EventSink>, seams: Seams) -> Self {
        let Seams { streams, link, presence, hooks } = seams;
        Self {
            questions: Questions::new(hooks),
            lifetimes: Lifetimes::default(),
            sessions: Sessions::new(presence),
            registry: Registry::new(link.connection_id_base()),
            streams,
            link,
            channels: Channels::new(AllowList::new(config.channels.allow.as_deref())),
            requests: Requests::new(config.max_requests_per_connection),
            awareness: Awareness::new(config.max_windows_per_user),
            config,
            events: AppEvents::new(events),
            limiter: Limiter::default(),
            counters: Counters::default(),
            timers: Timers::default(),
        }
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Lets a connection in, or says why not. The outbox receives the welcome at once.
    pub fn open(&self, route: Route, mut identity: Identity, outbox: Arc<dyn Outbox>, now: Millis) -> Result<ConnId, ConnectionRefusal> {
        let id = self.registry.next_id();
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
        let expires_at = identity.expires_at;
        let identity = SharedIdentity::new(identity);
        let bucket = self.config.rate_limit.as_ref().map(|limits| Bucket::full(identity.rate_limit.unwrap_or(limits.per_connection), now));
        let connection = Connection::new(session_id.clone(), outbox.clone(), name.clone(), identity.clone(), user.clone(), bucket, now);
        let info = connection.info(id);
        let transport = outbox.transport();
        self.registry.insert(id, connection);

        let mut slow = SlowConsumers::new();
        if let Some(session_id) = &session_id {
            if let Err(refusal) = self.join_session(session_id, id, name, outbox, &identity.resume, now, &mut slow) {
                self.registry.remove(id);
                if let Some(user) = &user {
                    self.limiter.release_user_slot(user, id);
                }
                return Err(refusal);
            }
        }
        self.watch_token(id, expires_at);
        self.counters.opened(transport);
        self.events.emit(Event::Connected(info));
        self.close_slow_consumers(slow, now);
        Ok(id)
    }

    /// Routes one frame the transport read from `from`, and says what became of it (a
    /// transport that answers each send, as POST does, tells its client).
    pub fn receive(&self, from: ConnId, frame: Frame, now: Millis) -> Received {
        Counters::add(&self.counters.messages_received, 1);
        Counters::add(&self.counters.bytes_received, frame.len() as u64);
        self.counters.frame_sizes.record(frame.len() as u64);
        if frame.len() > self.config.max_message_bytes {
            self.end_connection(from, close_code::TOO_LARGE, "Message too large", now);
            return Received::TooLarge;
        }
        let Some(sender) = self.registry.sender(from, now) else { return Received::Gone };
        if let Some(limits) = &self.config.rate_limit {
            if !self.within_rate(&sender, limits, now) {
                self.rate_limited(&sender, limits, &frame, now);
                return Received::RateLimited;
            }
        }
        let mut slow = SlowConsumers::new();
        let mut received = Received::Taken;
        if !self.questions.holding {
            self.handle(&sender, &frame, None, now, &mut slow);
        } else {
            match self.questions.held.arrive(from, frame) {
                Arrival::Handle(frame) => {
                    self.handle(&sender, &frame, None, now, &mut slow);
                    self.handle_held(from, now, &mut slow);
                }
                Arrival::Queued => {}
                Arrival::Full => {
                    received = Received::RateLimited;
                    Counters::add(&self.counters.rate_limited, 1);
                    let error = protocol::error(&ErrorCode::RateLimited.into(), Offending { upper_case: sender.upper_case, ..Default::default() }, now);
                    self.push(from, &*sender.outbox, error, &mut slow);
                }
            }
        }
        self.close_slow_consumers(slow, now);
        received
    }

    /// Handles one message; `verdict` is the application's answer to the question it raised.
    fn handle(&self, sender: &Sender, frame: &Frame, verdict: Option<Verdict>, now: Millis, slow: &mut SlowConsumers) {
        if frame.kind == FrameKind::Text {
            self.receive_text(sender, frame, verdict, now, slow);
        } else if let Outcome::Rejected(rejection) = self.relay_to_session(sender, frame, now, slow) {
            let error = protocol::error(&rejection, Offending { upper_case: sender.upper_case, ..Default::default() }, now);
            self.push(sender.id, &*sender.outbox, error, slow);
        }
    }

    fn receive_text(&self, sender: &Sender, frame: &Frame, verdict: Option<Verdict>, now: Millis, slow: &mut SlowConsumers) {
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
            if let Some(conn) = self.registry.get(sender.id) {
                conn.upper_case.store(upper_case, Ordering::Relaxed);
            }
        }
        if let Some(announced) = &envelope.client_id {
            sender.name.announce(announced);
        }
        let answer = match self.dispatch(sender, &envelope, frame, verdict, now, slow) {
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
            Outcome::Answered | Outcome::Asked => None,
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

    /// Decides what a message is for, from its envelope, and does it.
    fn dispatch(&self, sender: &Sender, envelope: &Envelope, frame: &Frame, verdict: Option<Verdict>, now: Millis, slow: &mut SlowConsumers) -> Outcome {
        let message = match ClientMessage::read(envelope, &frame.payload, self.config.enable_role_management) {
            Ok(message) => message,
            Err(rejection) => return Outcome::Rejected(rejection),
        };
        match message {
            ClientMessage::Ping { upper_case } => Outcome::Reply(protocol::pong(upper_case, envelope.id, now)),
            ClientMessage::JoinChannel(join) => self.join_channel(sender, join, frame, verdict, now, slow),
            ClientMessage::LeaveChannel(name) => self.leave_channel(sender, name, slow),
            ClientMessage::ChannelPresence(name) => self.channel_presence(sender, &name),
            ClientMessage::Request { request_id, payload } => self.request(sender, request_id, payload, now),
            ClientMessage::Awareness(message) => self.awareness(sender, message, frame, now, slow),
            ClientMessage::Control(step) => self.control(sender, step, frame, now, slow),
            ClientMessage::Refresh { token } => self.refresh(sender, token, frame, verdict, now),
            ClientMessage::StateUpdate if !self.is_active(sender) => {
                Counters::add(&self.counters.passive_updates_dropped, 1);
                Outcome::Dropped(ErrorCode::NotActive.into())
            }
            ClientMessage::StateUpdate | ClientMessage::Publish => {
                let channel = envelope.channel.as_deref();
                let replacement = match self.publish_verdict(sender, channel, frame, verdict, now) {
                    Ok(replacement) => replacement,
                    Err(outcome) => return outcome,
                };
                let frame = replacement.as_ref().unwrap_or(frame);
                match channel {
                    Some(channel) => self.publish_to_channel(sender, channel, frame, now, slow),
                    None => self.relay_to_session(sender, frame, now, slow),
                }
            }
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
        self.events.watch(kind);
    }

    fn report_watched(&self, sender: &Sender, envelope: &Envelope, frame: &Frame) {
        if self.events.watches(envelope.kind.as_ref()) {
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
            if self.registry.contains(conn) {
                Counters::add(&self.counters.slow_consumer_closes, 1);
                slow.extend(self.remove_connection(conn, close_code::TRY_AGAIN_LATER, "Slow consumer", true, now));
            }
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
        let Some(conn) = self.registry.remove(id) else { return slow };
        self.counters.closed(conn.outbox.transport(), code);
        if close_outbox {
            conn.outbox.close(code, reason);
        }
        self.requests.forget(id);
        self.questions.held.forget(id);
        self.lifetimes.forget(id);
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

    /// Every open connection, for a host that ends them a few at a time (a drain).
    pub fn connection_ids(&self) -> Vec<ConnId> {
        self.registry.ids_where(|_| true)
    }

    /// Closes every connection with `code` and forgets every session.
    pub fn shutdown(&self, code: u16, reason: &str, now: Millis) {
        for id in self.sessions.ids_where(|_| true) {
            // Every connection closes with `code` here: none is singled out as slow.
            if let Some(session) = self.sessions.remove(&id) {
                self.end_session(session, code, reason, now);
            }
        }
        for id in self.registry.ids_where(|_| true) {
            self.remove_connection(id, code, reason, true, now);
        }
    }

}
