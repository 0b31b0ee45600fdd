//! Switchyard's Redis broker: the nodes of a cluster relay to each other through Redis
//! (or Valkey), so that any node serves any session and no load balancer needs sticky
//! sessions.
//!
//! [`RedisBroker`] is the core's [`ClusterLink`] for a cluster, beside this node's copies
//! of the streams (both handed to the relay by [`RedisBroker::seams`]): it queues what the
//! relay hands to [`ClusterLink::forward`]; its link task
//! (`link`) drains the queue into Redis in pipelined batches, keeps a dedicated
//! subscriber connection for the topics this node has subscribers to, holds the session
//! directory, members and node leases, and hands what other nodes publish to
//! [`Relay::handle_remote`]. While Redis is unreachable the relay goes on among its own
//! clients, what would have gone to other nodes is dropped and counted (nothing is
//! buffered), and the link reconnects, resubscribes and registers its members again by
//! itself.

#![warn(missing_docs)]

mod connection;
mod link;
mod wire;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::sync::Mutex;

use dashmap::DashMap;
use switchyard_core::{
    ClusterLink, ClusterStatus, HistoryConfig, Hooks, MemoryPresence, MemoryStreams, Millis, Position, Publication, Relay, Remote, Seams, SessionId, Streams,
    Topic,
};
use tokio::sync::{mpsc, oneshot, watch};

/// How a node joins a cluster.
#[derive(Clone, Debug)]
pub struct RedisOptions {
    /// One Redis server, `redis://[user:password@]host:port[/db]`, or a Redis Cluster:
    /// `redis+cluster://[user:password@]host:port,host:port,...`, or several `redis://`
    /// URLs, each a seed node of it. `rediss://` (TLS to Redis) is refused at start, this
    /// build has none.
    pub urls: Vec<String>,
    /// Put before every key and channel name, so clusters can share one Redis.
    pub prefix: String,
    /// This node's name, unique in the cluster.
    pub node_id: String,
    /// How long a node's lease lasts unrenewed: a node silent this long is gone, and its
    /// members leave every session.
    pub lease_ms: u64,
    /// How long connecting to Redis, or an answer from it, may take before the link
    /// counts it lost and reconnects.
    pub timeout: Duration,
    /// Messages for other nodes that may wait for the link; more are dropped and counted.
    pub max_queued: usize,
}

impl RedisOptions {
    /// The key prefix when none is given.
    pub const DEFAULT_PREFIX: &'static str = "switchyard:";

    /// A node name from the host, the process and a random suffix.
    pub fn default_node_id() -> String {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "node".into());
        format!("{host}-{}-{:04x}", std::process::id(), rand::random::<u16>())
    }
}

/// Why a Redis broker could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RedisConfigError {
    /// A Redis URL could not be parsed.
    #[error("redis url: {0}")]
    Url(redis::RedisError),
    /// No Redis URL was given, or a cluster URL named no node.
    #[error("redis url: name a Redis, such as redis://127.0.0.1:6379, or a cluster's nodes, such as redis+cluster://127.0.0.1:7000,127.0.0.1:7001")]
    NoUrl,
    /// The node id is empty, longer than 128 characters, or has whitespace.
    #[error("the node id must be 1 to 128 characters with no whitespace")]
    NodeId,
}

/// What the relay hands to the link.
pub(crate) enum Outgoing {
    Remote(Remote),
    /// A topic gained its first subscriber here or lost its last: the link checks which.
    Subscription(Topic),
    /// Learn the cluster's sessions and members again (the relay forgot them).
    Resync,
    /// Read one session from the directory into the relay, then answer whether it exists.
    Lookup(SessionId, oneshot::Sender<bool>),
    /// Copy a topic's stream from Redis into this node's, then answer.
    LoadStream(Topic, oneshot::Sender<()>),
    /// Claim a session id in the directory, atomically: whether it was free.
    Claim(SessionId, oneshot::Sender<bool>),
    /// Answer once everything queued before it is in Redis.
    Settle(oneshot::Sender<()>),
    /// Hold one of a session's places (of `max`) for a client about to join, or let go of
    /// a hold (`None`): whether the place was free.
    Reserve { session: SessionId, hold: String, max: Option<usize>, answer: oneshot::Sender<bool> },
    /// Note that this node has members of a channel, or none any more, and answer how
    /// many nodes have some now.
    Occupancy { channel: String, here: bool, answer: oneshot::Sender<usize> },
}

/// What the link tells the broker (and so the relay) about itself.
#[derive(Default)]
pub(crate) struct LinkState {
    pub connected: AtomicBool,
    pub joined: AtomicBool,
    pub peers: AtomicUsize,
    pub dropped: AtomicU64,
    pub sent: AtomicU64,
    pub round_trips: AtomicU64,
}

impl LinkState {
    pub fn dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }
}

/// A session's place held for a joining client ([`RedisBroker::reserve`]).
pub struct Reservation {
    broker: Arc<RedisBroker>,
    session: SessionId,
    hold: String,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // Queued after the member's own entry, so the place is never free in between.
        let (answer, _) = oneshot::channel();
        let _ = self.broker.outgoing.try_send(Outgoing::Reserve { session: self.session.clone(), hold: std::mem::take(&mut self.hold), max: None, answer });
    }
}

/// While it lives, the node keeps a topic's stream current ([`RedisBroker::watch`]).
pub struct Watch {
    broker: Arc<RedisBroker>,
    topic: Topic,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.broker.watchers.remove_if_mut(&self.topic, |_, count| {
            *count -= 1;
            *count == 0
        });
        self.broker.subscribed(&self.topic);
    }
}

/// This node's side of a cluster: the relay's link to the other nodes through Redis, and
/// its copies of the streams.
pub struct RedisBroker {
    /// This node's copies of the streams, numbered in Redis.
    streams: Arc<MemoryStreams>,
    watchers: DashMap<Topic, usize>,
    /// Streams some of whose publications never reached Redis (see [`RedisBroker::lost`]).
    lost: Mutex<HashSet<Topic>>,
    node_id: Arc<str>,
    id_base: u64,
    outgoing: mpsc::Sender<Outgoing>,
    state: Arc<LinkState>,
    /// Taken by [`RedisBroker::start`].
    waiting: Mutex<Option<(connection::Target, mpsc::Receiver<Outgoing>)>>,
    options: RedisOptions,
    stop: watch::Sender<bool>,
}

impl RedisBroker {
    /// A broker for this node; nothing connects before [`RedisBroker::start`].
    pub fn new(options: RedisOptions, history_max_bytes: usize) -> Result<Arc<Self>, RedisConfigError> {
        if options.node_id.is_empty() || options.node_id.len() > 128 || options.node_id.chars().any(char::is_whitespace) {
            return Err(RedisConfigError::NodeId);
        }
        let target = connection::Target::parse(&options.urls)?;
        let (outgoing, incoming) = mpsc::channel(options.max_queued.max(1));
        // 24 random bits above 38 of counter: connection ids unique across nodes.
        let id_base = u64::from(rand::random::<u32>() & 0xFF_FFFF).max(1) << 38;
        Ok(Arc::new(Self {
            streams: Arc::new(MemoryStreams::new(history_max_bytes)),
            watchers: DashMap::new(),
            lost: Mutex::default(),
            node_id: options.node_id.as_str().into(),
            id_base,
            outgoing,
            state: Arc::default(),
            waiting: Mutex::new(Some((target, incoming))),
            options,
            stop: watch::channel(false).0,
        }))
    }

    /// Starts the link to Redis for `relay` (which must have been made with this broker)
    /// on the current tokio runtime. Returns at once: the link connects, and reconnects,
    /// by itself. Returns `None` when it was started already.
    pub fn start(self: &Arc<Self>, relay: Arc<Relay>) -> Option<tokio::task::JoinHandle<()>> {
        let (target, incoming) = self.waiting.lock().ok()?.take()?;
        let link = link::Link {
            target,
            relay,
            broker: self.clone(),
            node_id: self.node_id.clone(),
            prefix: self.options.prefix.clone(),
            lease_ms: self.options.lease_ms.max(100),
            timeout: self.options.timeout,
            state: self.state.clone(),
        };
        Some(tokio::spawn(link.run(incoming, self.stop.subscribe())))
    }

    /// Leaves the cluster: the link tells the other nodes this node's members are gone,
    /// gives up its lease and ends.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Has the link load the cluster's sessions and members again: after the relay forgot
    /// its sessions (a stopped manager started again). Done on connecting anyway.
    pub fn resync(&self) {
        let _ = self.outgoing.try_send(Outgoing::Resync);
    }

    /// Whether the directory has a session this node does not know yet (created on
    /// another node a moment ago, its news still on the way): if so the relay learns it
    /// first. `false` too while Redis is unreachable.
    pub async fn lookup(&self, id: SessionId) -> bool {
        self.ask(|answer| Outgoing::Lookup(id, answer)).await.unwrap_or(false)
    }

    /// Keeps this node's copy of a topic's stream current while the answer lives, as a
    /// subscriber here would: for reading (and long polling) a session's or channel's
    /// history over HTTP on a node where it has no member. Resolves once the copy is
    /// loaded, or at once while Redis is unreachable.
    pub async fn watch(self: &Arc<Self>, topic: Topic) -> Watch {
        *self.watchers.entry(topic.clone()).or_default() += 1;
        let (answer, answered) = oneshot::channel();
        if self.state.connected.load(Ordering::Relaxed) && self.outgoing.try_send(Outgoing::LoadStream(topic.clone(), answer)).is_ok() {
            let _ = answered.await;
        }
        Watch { broker: self.clone(), topic }
    }

    /// Claims a session id across the cluster before creating it: `false` when another
    /// node has (or is creating) a session of that id. `true` while Redis is unreachable
    /// (creating is refused then anyway).
    pub async fn claim(&self, id: SessionId) -> bool {
        self.ask(|answer| Outgoing::Claim(id, answer)).await.unwrap_or(true)
    }

    /// Resolves once what this node queued for Redis before the call is there (at once
    /// while Redis is unreachable): so a session created here is in the directory, and its
    /// stream's epoch with it, before its creator hears it was created and sends clients to
    /// other nodes.
    pub async fn settled(&self) {
        self.ask(Outgoing::Settle).await;
    }

    /// Holds one of a session's `max` places on every node for a client about to join
    /// it, atomically in Redis: `None` when all are taken. The hold is let go when the
    /// [`Reservation`] is dropped (the member, once joined, counts itself), and ends by itself
    /// ten seconds on should this node die first. Always a place while Redis is
    /// unreachable: the node then counts what it knows.
    pub async fn reserve(self: &Arc<Self>, session: SessionId, max: usize) -> Option<Reservation> {
        let hold = format!("r:{}:{:016x}", self.node_id, rand::random::<u64>());
        let (s, h) = (session.clone(), hold.clone());
        let free = self.ask(move |answer| Outgoing::Reserve { session: s, hold: h, max: Some(max), answer }).await.unwrap_or(true);
        free.then(|| Reservation { broker: self.clone(), session, hold })
    }

    /// Notes in Redis, atomically, that this node has members of `channel` (`here`) or has
    /// none any more, and answers how many nodes have some now: so that one node of the
    /// cluster tells of a channel's first member anywhere and of its last one gone
    /// everywhere. Queued at once, in order with what the link sends, and answered later;
    /// `None` while Redis is unreachable.
    pub fn occupancy(&self, channel: String, here: bool) -> Option<oneshot::Receiver<usize>> {
        let (answer, answered) = oneshot::channel();
        if !self.state.connected.load(Ordering::Relaxed) || self.outgoing.try_send(Outgoing::Occupancy { channel, here, answer }).is_err() {
            return None;
        }
        Some(answered)
    }

    /// Queues a question for the link and waits for its answer; `None` while Redis is
    /// unreachable.
    async fn ask<T>(&self, question: impl FnOnce(oneshot::Sender<T>) -> Outgoing) -> Option<T> {
        let (answer, answered) = oneshot::channel();
        if !self.state.connected.load(Ordering::Relaxed) || self.outgoing.try_send(question(answer)).is_err() {
            return None;
        }
        answered.await.ok()
    }

    /// What a relay of this node is built on ([`Relay::with_seams`]): this node's copies of
    /// the streams, this broker as its link, and the members elsewhere in this process,
    /// which the link fills from what the other nodes tell and from the members it loads
    /// from Redis when it learns a session; the application decides through `hooks`.
    pub fn seams(self: &Arc<Self>, hooks: Arc<dyn Hooks>) -> Seams {
        Seams { streams: self.streams.clone(), link: self.clone(), presence: Arc::new(MemoryPresence::default()), hooks }
    }

    /// The latest position of this node's copy of `topic`'s stream.
    pub(crate) fn position(&self, topic: &Topic) -> Option<Position> {
        self.streams.position(topic)
    }

    /// Whether something here reads `topic`'s stream without subscribing to it.
    pub(crate) fn watched(&self, topic: &Topic) -> bool {
        self.watchers.contains_key(topic)
    }

    /// The bounds of `topic`'s stream, when it keeps one.
    pub(crate) fn stream_config(&self, topic: &Topic) -> Option<HistoryConfig> {
        self.streams.stream_config(topic)
    }

    /// Makes this node's copy of a stream what Redis keeps.
    pub(crate) fn load_copy(&self, topic: &Topic, epoch: Arc<str>, last: u64, publications: Vec<Publication>, now: Millis) {
        self.streams.load(topic, epoch, last, publications, now)
    }

    /// The stream a delivery is numbered in, in Redis: a publication to a session or
    /// channel that keeps one.
    pub(crate) fn numbered_stream<'r>(&self, remote: &'r Remote) -> Option<(&'r Topic, HistoryConfig)> {
        match remote {
            Remote::Delivery(d) if d.publication && matches!(d.topic, Topic::Session(_) | Topic::Channel(_)) => Some((&d.topic, self.stream_config(&d.topic)?)),
            _ => None,
        }
    }

    /// Counts a message for the other nodes that never reached Redis. A publication to a
    /// stream makes the stream start again in a new epoch once Redis is reached again.
    pub(crate) fn drop_remote(&self, remote: &Remote) {
        self.state.dropped(1);
        if let Some((topic, _)) = self.numbered_stream(remote) {
            self.lost([topic.clone()]);
        }
    }

    /// Notes streams some of whose publications never reached Redis.
    pub(crate) fn lost(&self, topics: impl IntoIterator<Item = Topic>) {
        self.lost.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(topics);
    }

    /// The streams noted as [`RedisBroker::lost`], forgotten here.
    pub(crate) fn take_lost(&self) -> Vec<Topic> {
        self.lost.lock().unwrap_or_else(std::sync::PoisonError::into_inner).drain().collect()
    }

}

impl ClusterLink for RedisBroker {
    fn status(&self) -> Option<ClusterStatus> {
        Some(ClusterStatus {
            node_id: self.node_id.clone(),
            connected: self.state.connected.load(Ordering::Relaxed),
            joined: self.state.joined.load(Ordering::Relaxed),
            peers: self.state.peers.load(Ordering::Relaxed),
            dropped: self.state.dropped.load(Ordering::Relaxed),
            sent: self.state.sent.load(Ordering::Relaxed),
            round_trips: self.state.round_trips.load(Ordering::Relaxed),
        })
    }

    fn forward(&self, remote: Remote) {
        if !self.state.connected.load(Ordering::Relaxed) {
            return self.drop_remote(&remote);
        }
        if let Err(Outgoing::Remote(remote)) = self.outgoing.try_send(Outgoing::Remote(remote)).map_err(mpsc::error::TrySendError::into_inner) {
            self.drop_remote(&remote);
        }
    }

    fn subscribed(&self, topic: &Topic) {
        // Lost while disconnected, a hint costs nothing: the link reconciles every
        // subscription when it connects, and on every lease tick.
        let _ = self.outgoing.try_send(Outgoing::Subscription(topic.clone()));
    }

    fn connection_id_base(&self) -> u64 {
        self.id_base
    }

    fn orders_steps(&self) -> bool {
        self.state.connected.load(Ordering::Relaxed)
    }

    fn numbers_remotely(&self, topic: &Topic) -> bool {
        self.state.connected.load(Ordering::Relaxed) && self.streams.stream_config(topic).is_some()
    }

}
