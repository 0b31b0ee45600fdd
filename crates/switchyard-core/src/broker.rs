//! The broker seams, Centrifugo's Broker in a core with no I/O, as two jobs apart. The
//! relay keeps membership (who on this node is subscribed to what) and hands each
//! publication to its own connections; [`Streams`] number publications, keep them, and
//! say what a reconnecting client missed; a [`ClusterLink`] carries what the nodes of a
//! cluster tell each other, as [`Remote`]s, and orders the steps they must apply alike.
//! Nothing here does I/O: a cluster's link queues, and its own task talks to the other
//! nodes.

use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::Mutex;
use serde::ser::{Serialize, SerializeStruct, Serializer};

use crate::channels::ChannelName;
use crate::policies::ConflictResolution;
use crate::present_member::PresentMember;
use crate::frame::Frame;
use crate::hooks::Hooks;
use crate::message::ControlStep;
use crate::ids::{ConnId, Millis, SessionId};
use crate::streams::{Budget, HistoryConfig, Position, Publication, Stream};

/// What a delivery is addressed to. Sessions and channels may keep a stream; the others
/// only ever deliver.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    /// The members of a session.
    Session(SessionId),
    /// The members of a channel.
    Channel(ChannelName),
    /// Every connection of a user.
    User(Arc<str>),
    /// Every connection of an organization.
    Organization(Arc<str>),
    /// One connection.
    Connection(ConnId),
    /// Every connection.
    Everyone,
}

/// A delivery to a topic's subscribers.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// Whose subscribers get it.
    pub topic: Topic,
    /// The message, as subscribers without positions receive it.
    pub frame: Frame,
    /// The member that published it, which does not get it back; `None` for the server.
    pub from: Option<ConnId>,
    /// A subscriber that does not get it either.
    pub except: Option<ConnId>,
    /// A publication is numbered and kept where the topic has a stream; a notice is only
    /// delivered.
    pub publication: bool,
    /// What a subscriber must also match (a filtered send).
    pub filter: Filter,
}

/// Fields a connection must match, beyond subscribing to the topic: all that are given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// The session the connection must be in.
    pub session: Option<SessionId>,
    /// A channel the connection must be a member of.
    pub channel: Option<ChannelName>,
    /// The user the connection must be.
    pub user: Option<Arc<str>>,
    /// The organization the connection's identity must name.
    pub organization: Option<Arc<str>>,
}

impl Delivery {
    /// Who a publication of it is from, as streams and `from` name it: a connection id,
    /// or `"server"`.
    pub fn publisher(&self) -> Arc<str> {
        self.from.map_or_else(|| SERVER_PUBLISHER.into(), |conn| conn.to_string().into())
    }
}

/// How a server-side publication is named in its `from`.
const SERVER_PUBLISHER: &str = "server";

impl Filter {
    /// Whether it asks nothing: every subscriber matches.
    pub fn is_empty(&self) -> bool {
        self.session.is_none() && self.channel.is_none() && self.user.is_none() && self.organization.is_none()
    }
}

/// A session as every node of a cluster knows it.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionRecord {
    /// The session's id.
    pub id: SessionId,
    /// When it was created.
    pub created_at: Millis,
    /// When it expires.
    pub expires_at: Millis,
    /// How many members it admits, on every node together.
    pub max_clients: usize,
    /// As the app gave it; `None` when it gave none.
    pub metadata: Option<serde_json::Value>,
    /// How its requests for control are settled.
    pub conflict_resolution: ConflictResolution,
    /// The bounds of its stream; `None` when it keeps none.
    pub history: Option<HistoryConfig>,
}

/// A member of a session connected to another node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteMember {
    /// The id of the node it is connected to.
    pub node: Arc<str>,
    /// The member, as `presence` shows it.
    pub present: PresentMember,
}

/// What one node of a cluster tells the others.
#[derive(Clone, Debug)]
pub enum Remote {
    /// A delivery made on the sending node, for the subscribers here.
    Delivery(Delivery),
    /// A publication the shared broker numbered in the topic's stream, for the
    /// subscribers on every node, the publisher's too.
    Numbered {
        /// The delivery, as made on the publishing node.
        delivery: Delivery,
        /// The epoch of the stream that numbered it.
        epoch: Arc<str>,
        /// Its offset in that stream.
        offset: u64,
        /// When it was published, as the shared broker kept it.
        timestamp: Millis,
    },
    /// A control-role step from a member, with its message. Every node applies it, the
    /// sender's own too, in the order the shared broker gives, so all agree on who is
    /// active. `joined_at` is when the sender joined: where its join has not arrived
    /// yet, the rules still see it in its place.
    Control {
        /// The session whose control it is.
        session: SessionId,
        /// The member that sent it.
        from: ConnId,
        /// When the sender joined the session.
        joined_at: Millis,
        /// What the message asks.
        step: ControlStep,
        /// The message, as the member sent it.
        frame: Frame,
    },
    /// A step of a user's awareness windows (the focus declaration protocol) from one of
    /// its connections, with the message that made it (`frame`, empty when the connection
    /// closed). Every node applies it in the order the shared broker gives, the sender's
    /// too, so a user's windows are one set wherever its connections are.
    Awareness {
        /// The user whose windows change.
        user: Arc<str>,
        /// The connection it came from.
        conn: ConnId,
        /// What it does to the windows.
        step: AwarenessStep,
        /// The message that made it; empty when the connection closed.
        frame: Frame,
    },
    /// A session was created on the sending node.
    SessionCreated(SessionRecord),
    /// A session was deleted on the sending node: it ends on every node.
    SessionDeleted(SessionId),
    /// A member joined on its node, or (known already) its record changed; `announce`
    /// tells the session's members here (`client_connected`), as a join does, where a
    /// resync after reconnecting or a change of role does not.
    MemberJoined {
        /// The session it joined.
        session: SessionId,
        /// Its record.
        member: RemoteMember,
        /// Whether the members here are told (`client_connected`).
        announce: bool,
    },
    /// A member left on its node; the session's members here are told.
    MemberLeft {
        /// The session it left.
        session: SessionId,
        /// Its connection id.
        conn: ConnId,
        /// Whether it held control when it left.
        was_active: bool,
    },
    /// A node is gone (its lease ran out, or it stopped): its members left.
    NodeGone(Arc<str>),
}

/// What an awareness message does to its user's windows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AwarenessStep {
    /// `register`: the window shows `case`.
    Register {
        /// The window's id.
        window: String,
        /// The id of the case it shows.
        case: String,
    },
    /// `deregister`: the window's registration ends.
    Deregister {
        /// The window's id.
        window: String,
    },
    /// `heartbeat`: the window's registration is still alive.
    Heartbeat {
        /// The window's id.
        window: String,
    },
    /// `focus`: the window becomes the user's focused one.
    Focus {
        /// The window's id.
        window: String,
    },
    /// The connection closed: its windows go.
    Closed,
}

/// What a relay is built on ([`Relay::with_seams`](crate::Relay::with_seams)): where its
/// streams are kept, its link to the cluster's other nodes, who it knows is in its
/// sessions there, and where the application decides.
pub struct Seams {
    /// Where the streams of sessions and channels are numbered and kept.
    pub streams: Arc<dyn Streams>,
    /// What crosses to the cluster's other nodes; [`Alone`] for a node by itself.
    pub link: Arc<dyn ClusterLink>,
    /// The members of its sessions on the other nodes.
    pub presence: Arc<dyn Presence>,
    /// Where the application decides joins and messages; [`NoHooks`](crate::NoHooks) for none.
    pub hooks: Arc<dyn Hooks>,
}

impl Seams {
    /// A node by itself: streams kept in this process (`history_max_bytes` of them at
    /// most), no link, no members elsewhere, no hooks.
    pub fn alone(history_max_bytes: usize) -> Self {
        Self {
            streams: Arc::new(crate::MemoryStreams::new(history_max_bytes)),
            link: Arc::new(Alone),
            presence: Arc::new(crate::MemoryPresence::default()),
            hooks: Arc::new(crate::NoHooks),
        }
    }
}

/// Who is in this node's sessions on the cluster's other nodes: Centrifugo's
/// PresenceManager as the relay uses it. The link tells of members joining and leaving
/// elsewhere ([`Remote::MemberJoined`], [`Remote::MemberLeft`], [`Remote::NodeGone`]); the
/// relay notes them here, and asks here when it counts a session's members, names its
/// active one or answers `presence`. A node alone has none.
pub trait Presence: Send + Sync {
    /// Notes a member's record: `true` when it is new, `false` when it replaced the one known.
    fn add(&self, session: &SessionId, member: RemoteMember) -> bool;
    /// Takes out the members of a session that `gone` picks.
    fn remove(&self, session: &SessionId, gone: &dyn Fn(&RemoteMember) -> bool) -> Vec<RemoteMember>;
    /// The members of a session on other nodes.
    fn members(&self, session: &SessionId) -> Vec<RemoteMember>;
    /// How many members a session has on other nodes.
    fn count(&self, session: &SessionId) -> usize;
    /// The sessions with members elsewhere.
    fn sessions(&self) -> Vec<SessionId>;
    /// Forgets a session's members: the session ended.
    fn forget(&self, session: &SessionId);
    /// Forgets every member: the node lost the cluster and will learn them again.
    fn forget_all(&self);
}

/// How a cluster broker's link to the other nodes is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterStatus {
    /// This node's id in the cluster.
    pub node_id: Arc<str>,
    /// False while the shared broker is unreachable: the node relays among its own
    /// clients only.
    pub connected: bool,
    /// Whether it has been connected since the node started: sessions created before
    /// that are registered when it connects; after it, while unreachable, creating one
    /// is refused (`UNAVAILABLE`).
    pub joined: bool,
    /// Other nodes whose lease is current.
    pub peers: usize,
    /// Messages for other nodes dropped because the link was down or its queue full.
    pub dropped: u64,
    /// Messages sent to the other nodes, and the Redis round trips (pipelines) that
    /// carried them.
    pub sent: u64,
    /// The round trips to Redis that carried `sent`.
    pub round_trips: u64,
}

/// What a topic's stream holds after a position.
#[derive(Debug, PartialEq)]
pub enum Recovery {
    /// Every publication after it, oldest first.
    Recovered(Vec<Publication>),
    /// Some are gone, or the position is of another epoch: nothing is replayed.
    Lost,
}

/// A topic's history, as read over HTTP.
#[derive(Debug, Default)]
pub struct History {
    /// The stream's latest position; `None` when the topic keeps no stream.
    pub position: Option<Position>,
    /// Whether `publications` are every one after the position asked for.
    pub recovered: bool,
    /// The publications read, oldest first.
    pub publications: Vec<Publication>,
}

/// As the app reads it (the addon's `SessionHistory`): `epoch` (`null` without a stream),
/// the latest `offset` (0 then, and an `i64`, as in [`Publication`]'s), `recovered` and
/// the `publications`.
impl Serialize for History {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut history = serializer.serialize_struct("History", 4)?;
        history.serialize_field("epoch", &self.position.as_ref().map(|p| &*p.epoch))?;
        history.serialize_field("offset", &self.position.as_ref().map_or(0, |p| p.offset as i64))?;
        history.serialize_field("recovered", &self.recovered)?;
        history.serialize_field("publications", &self.publications)?;
        history.end()
    }
}

/// Where the streams of topics are numbered and kept: [`MemoryStreams`] in this process.
/// In a cluster each node keeps its copies here, which the shared broker numbers and
/// the node keeps current ([`Streams::keep`]).
///
/// The relay calls [`Streams::publish`] under the topic's own order (a session's lock, a
/// channel's), so the offsets it gives reach every subscriber in order.
pub trait Streams: Send + Sync {
    /// Starts keeping a stream for `topic`, unless it keeps one already.
    fn open_stream(&self, topic: &Topic, config: HistoryConfig);
    /// Forgets a topic's stream: its session ended.
    fn close_stream(&self, topic: &Topic);
    /// Numbers a publication and keeps it; `None` when the topic keeps no stream.
    fn publish(&self, topic: &Topic, from: Arc<str>, frame: Frame, now: Millis) -> Option<Publication>;
    /// The topic's latest position; `None` when it keeps no stream.
    fn position(&self, topic: &Topic) -> Option<Position>;
    /// The publications after `since`, if the stream still has all of them.
    fn recover(&self, topic: &Topic, since: &Position, now: Millis) -> Option<Recovery>;
    /// Up to `limit` publications after `since` (after the first without it).
    fn read(&self, topic: &Topic, since: Option<&Position>, limit: usize, now: Millis) -> Option<History>;
    /// The bytes every stream keeps together.
    fn kept_bytes(&self) -> usize;
    /// Forgets the streams of channels that hold nothing (all expired) and that
    /// `in_use` says nobody is subscribed to. Sessions' streams end with their sessions.
    fn sweep(&self, now: Millis, in_use: &dyn Fn(&Topic) -> bool);
    /// Keeps a publication the shared broker numbered, in this node's copy of the stream.
    fn keep(&self, topic: &Topic, epoch: &Arc<str>, publication: Publication, now: Millis);
}

/// What crosses between the nodes of a cluster: the relay hands each delivery made here
/// and each change of its sessions and members to [`ClusterLink::forward`], says which
/// topics have subscribers here, and takes what other nodes sent through one entry
/// point, [`crate::Relay::handle_remote`]. A node alone has [`Alone`], which carries
/// nothing, so the relay never asks whether it is in a cluster.
pub trait ClusterLink: Send + Sync {
    /// The link's state; `None` for a node alone.
    fn status(&self) -> Option<ClusterStatus>;
    /// Hands what happened here to the other nodes.
    fn forward(&self, remote: Remote);
    /// This node has its first subscriber to `topic`, or lost its last: the link asks
    /// the relay which ([`crate::Relay::has_subscribers`]) when it acts on it.
    fn subscribed(&self, topic: &Topic);
    /// Whether the steps every node must apply alike (control roles, awareness windows)
    /// go through the shared broker now, to come back in one order: not alone, nor while
    /// it is unreachable, when this node applies them at once.
    fn orders_steps(&self) -> bool;
    /// Whether publications to `topic` are numbered by the shared broker: the relay then
    /// only forwards them, and delivers them on every node, its own too, when they come
    /// back numbered (`Remote::Numbered`).
    fn numbers_remotely(&self, topic: &Topic) -> bool;
    /// Where this node's connection ids start, so that they are unique in a cluster.
    fn connection_id_base(&self) -> u64;
    /// A member's place in the order of joining its session, which every node must
    /// compute alike: by when it joined (`joined_at`), then by connection id. Alone, the
    /// session's own count of joins (`count`) is exact and needs no clock.
    fn join_order(&self, joined_at: Millis, conn: ConnId, _count: u64) -> u64 {
        (joined_at << 20) | (conn.0 & 0xF_FFFF)
    }
}

/// The link of a node alone: nothing crosses, and the relay applies every step at once.
pub struct Alone;

impl ClusterLink for Alone {
    fn status(&self) -> Option<ClusterStatus> {
        None
    }
    fn forward(&self, _remote: Remote) {}
    fn subscribed(&self, _topic: &Topic) {}
    fn orders_steps(&self) -> bool {
        false
    }
    fn numbers_remotely(&self, _topic: &Topic) -> bool {
        false
    }
    fn connection_id_base(&self) -> u64 {
        0
    }
    fn join_order(&self, _joined_at: Millis, _conn: ConnId, count: u64) -> u64 {
        count
    }
}

/// Streams kept in this process: a bounded ring per topic, all of them within one budget
/// of bytes.
pub struct MemoryStreams {
    streams: DashMap<Topic, Mutex<Stream>>,
    budget: Arc<Budget>,
}

impl MemoryStreams {
    /// Streams that keep at most `max_bytes` together.
    pub fn new(max_bytes: usize) -> Self {
        Self { streams: DashMap::new(), budget: Arc::new(Budget::new(max_bytes)) }
    }

    /// The bounds of `topic`'s stream, when it keeps one.
    pub fn stream_config(&self, topic: &Topic) -> Option<HistoryConfig> {
        self.streams.get(topic).map(|stream| stream.lock().config())
    }

    /// Makes a topic's stream a copy of one kept elsewhere.
    pub fn load(&self, topic: &Topic, epoch: Arc<str>, last: u64, publications: Vec<Publication>, now: Millis) {
        if let Some(stream) = self.streams.get(topic) {
            stream.lock().load(epoch, last, publications, now);
        }
    }
}

impl Streams for MemoryStreams {
    fn open_stream(&self, topic: &Topic, config: HistoryConfig) {
        self.streams.entry(topic.clone()).or_insert_with(|| Mutex::new(Stream::new(config, self.budget.clone())));
    }

    fn close_stream(&self, topic: &Topic) {
        self.streams.remove(topic);
    }

    fn publish(&self, topic: &Topic, from: Arc<str>, frame: Frame, now: Millis) -> Option<Publication> {
        Some(self.streams.get(topic)?.lock().append(from, frame, now))
    }

    fn position(&self, topic: &Topic) -> Option<Position> {
        Some(self.streams.get(topic)?.lock().position())
    }

    fn recover(&self, topic: &Topic, since: &Position, now: Millis) -> Option<Recovery> {
        let stream = self.streams.get(topic)?;
        let mut stream = stream.lock();
        Some(match stream.holds_after(since, now) {
            true => Recovery::Recovered(stream.read(since.offset, usize::MAX, now)),
            false => Recovery::Lost,
        })
    }

    fn read(&self, topic: &Topic, since: Option<&Position>, limit: usize, now: Millis) -> Option<History> {
        let stream = self.streams.get(topic)?;
        let mut stream = stream.lock();
        let position = stream.position();
        let since = since.cloned().unwrap_or(Position { epoch: position.epoch.clone(), offset: 0 });
        let recovered = stream.holds_after(&since, now);
        let publications = if recovered { stream.read(since.offset, limit, now) } else { Vec::new() };
        Some(History { position: Some(position), recovered, publications })
    }

    fn kept_bytes(&self) -> usize {
        self.budget.used()
    }

    fn sweep(&self, now: Millis, in_use: &dyn Fn(&Topic) -> bool) {
        let idle: Vec<Topic> = self
            .streams
            .iter()
            .filter(|entry| matches!(entry.key(), Topic::Channel(_)) && entry.value().lock().holds_nothing(now))
            .map(|entry| entry.key().clone())
            .collect();
        // Asked without a stream locked: the relay takes its channel locks before ours.
        for topic in idle.into_iter().filter(|topic| !in_use(topic)) {
            self.streams.remove_if(&topic, |_, stream| stream.lock().holds_nothing(now));
        }
    }

    /// Keeps a publication numbered elsewhere, in order with those kept before.
    fn keep(&self, topic: &Topic, epoch: &Arc<str>, publication: Publication, now: Millis) {
        if let Some(stream) = self.streams.get(topic) {
            stream.lock().keep(epoch, publication, now);
        }
    }
}
