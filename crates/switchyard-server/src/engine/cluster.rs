//! An engine in a cluster: building its relay over the Redis broker's seams, and what a
//! native connection to a session waits for before it joins.

use std::sync::Arc;
use std::time::Duration;

use switchyard_core::{Config, ConnectionRefusal, EventSink, Hooks, Route, SessionId, Topic};
use switchyard_redis::{RedisBroker, RedisConfigError, RedisOptions, Reservation, Watch};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinHandle;

use super::Engine;
use crate::{Accepted, Spawner};

/// What an upgrade to a session holds in a cluster until its client has joined: the
/// session's stream kept current, and one of its places.
#[derive(Default)]
pub struct Held {
    _watch: Option<Watch>,
    _place: Option<Reservation>,
    /// Every place is taken on some node: the client is refused "Session full".
    pub full: bool,
}

impl Engine {
    /// A node alone, or with `redis` a node of a cluster, whose app decides through
    /// `hooks`; a bad `redis` option is an error.
    pub fn new(config: Config, events: Arc<dyn EventSink>, hooks: Arc<dyn Hooks>, redis: Option<RedisOptions>) -> Result<Self, RedisConfigError> {
        let Some(options) = redis else { return Ok(Self::alone(config, events, hooks)) };
        let broker = RedisBroker::new(options, config.history_max_bytes)?;
        let relay = switchyard_core::Relay::with_seams(config, events, broker.seams(hooks));
        Ok(Self { relay: Arc::new(relay), cluster: Some(broker), send_tokens: Default::default() })
    }

    /// Starts the link to the cluster on the current tokio runtime; nothing alone.
    pub fn join_cluster(&self) -> Option<JoinHandle<()>> {
        self.cluster.as_ref().and_then(|broker| broker.start(self.relay.clone()))
    }

    /// Stops the link, waiting up to a second for it to say goodbye to the other nodes.
    pub async fn leave_cluster(&self, link: Option<JoinHandle<()>>) {
        if let (Some(broker), Some(link)) = (&self.cluster, link) {
            broker.stop();
            let _ = tokio::time::timeout(Duration::from_secs(1), link).await;
        }
    }

    /// Readies this node for a client of `session_id`. In a cluster, this node first learns
    /// the session (created on another node a moment ago, perhaps), keeps its stream current
    /// for positions and recovery, and holds one of its places in Redis, so two nodes never
    /// fill the last place together; once joined, the client keeps all of it current as a
    /// subscriber. Alone, there is nothing to hold.
    pub async fn hold_place(&self, session_id: &str) -> Held {
        let (Some(cluster), Ok(id)) = (&self.cluster, SessionId::parse(session_id)) else { return Held::default() };
        self.learn_session(session_id).await;
        let mut held = Held { _watch: self.watch(Some(Topic::Session(id.clone()))).await, _place: None, full: false };
        if let Some(max) = self.relay.capacity(session_id) {
            match cluster.reserve(id, max).await {
                Some(place) => held._place = Some(place),
                None => held.full = true,
            }
        }
        held
    }

    /// In a cluster, a session created on another node a moment ago may not have reached
    /// this one yet: the directory is asked before it is called unknown.
    pub async fn learn_session(&self, session_id: &str) {
        if let (Some(cluster), None) = (&self.cluster, self.relay.session(session_id)) {
            if let Ok(id) = SessionId::parse(session_id) {
                cluster.lookup(id).await;
            }
        }
    }

    /// In a cluster, keeps this node's copy of a topic's stream current while the answer
    /// is held, so history reads the same on every node.
    pub async fn watch(&self, topic: Option<Topic>) -> Option<Watch> {
        match (&self.cluster, topic) {
            (Some(cluster), Some(topic)) => Some(cluster.watch(topic).await),
            _ => None,
        }
    }

    /// Lets an upgraded connection in, or refuses it "Session full" when `held` says so.
    /// Returns whether it joined.
    pub fn join<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static>(&self, spawner: &Spawner, accepted: Accepted<IO>, held: Held) -> bool {
        if held.full {
            spawner.refuse(accepted, ConnectionRefusal::SessionFull);
            return false;
        }
        // `held` lets its place go only now, after the member's own entry has been queued,
        // so the place is never free in between.
        spawner.spawn(&self.relay, accepted).is_ok()
    }

    /// Lets a connection whose handshake is answered in: at once, or, to a session in a
    /// cluster, once [`Engine::hold_place`] has held a place for it. Returns whether it
    /// joined (or is joining).
    pub fn admit<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static>(self: &Arc<Self>, spawner: &Spawner, accepted: Accepted<IO>) -> bool {
        let session_id = match (&accepted.route, &self.cluster) {
            (Route::Session(session_id), Some(_)) => session_id.clone(),
            _ => return self.join(spawner, accepted, Held::default()),
        };
        let (engine, joining) = (self.clone(), spawner.clone());
        spawner.tasks.spawn_on(
            async move {
                let held = engine.hold_place(&session_id).await;
                engine.join(&joining, accepted, held);
            },
            &spawner.runtime,
        );
        true
    }
}
