//! The broker seam: where the streams of topics live, Centrifugo's Broker in a core with
//! no I/O. The relay keeps membership (who on this node is subscribed to what) and hands
//! each publication to its own connections; a broker numbers publications, keeps them,
//! and says what a reconnecting client missed. [`MemoryBroker`] keeps them in this
//! process; a broker shared by several nodes implements the same trait.
//!
//! The relay calls [`Broker::publish`] under the topic's own order (a session's lock, a
//! channel's), so the offsets a broker gives reach every subscriber in order.

use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::Mutex;

use crate::channels::ChannelName;
use crate::frame::Frame;
use crate::ids::{ConnId, Millis, SessionId};
use crate::streams::{Budget, HistoryConfig, Position, Publication, Stream};

/// What a delivery is addressed to. Sessions and channels may keep a stream; the others
/// only ever deliver.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    Session(SessionId),
    Channel(ChannelName),
    /// Every connection of a user.
    User(Arc<str>),
    /// Every connection of an organization.
    Organization(Arc<str>),
    Connection(ConnId),
    /// Every connection.
    Everyone,
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
    pub publications: Vec<Publication>,
}

pub trait Broker: Send + Sync {
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
}

/// Streams kept in this process: a bounded ring per topic, all of them within one budget
/// of bytes.
pub struct MemoryBroker {
    streams: DashMap<Topic, Mutex<Stream>>,
    budget: Arc<Budget>,
}

impl MemoryBroker {
    pub fn new(max_bytes: usize) -> Self {
        Self { streams: DashMap::new(), budget: Arc::new(Budget::new(max_bytes)) }
    }
}

impl Broker for MemoryBroker {
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
}
