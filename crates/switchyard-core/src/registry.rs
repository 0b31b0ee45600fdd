//! Who is connected: each connection's identity, outbox and liveness, under the id the
//! relay gave it. A connection's entry is the only state kept per connection here; its
//! memberships live with the sessions and channels it is in.
//!
//! Lock order: a connection's entry is read briefly and never held while a session's or a
//! channel's guard is taken, except for its own channel list, which is taken last.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use dashmap::mapref::one::Ref;
use dashmap::DashMap;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;
use thin_vec::ThinVec;

use crate::channels::{ChannelName, Joiner};
use crate::event::ConnectionInfo;
use crate::ids::{ConnId, Millis, SessionId};
use crate::limits::{Bucket, Rate};
use crate::outbox::Outbox;
use crate::session::ClientName;
use crate::stats::Health;
use crate::streams::Resume;

/// Where a new connection goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Into the session with this id (as given in the URL; checked by the relay).
    Session(String),
    /// Into no session: channels, requests and awareness only.
    Sessionless,
}

/// Who a connection is, as the app or a verified token says. It serializes as the app
/// reads it back (the addon's `IdentityData`): who, not the rate or the positions.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    /// The user it acts for: its `user:` channels, per-user limits and messages to the user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The organization it belongs to: its `org:` channels and messages to the organization.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
    /// The `clientId` others know it by; `None`: the first one it sends, else its connection id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The app's own data about it, passed along in its connection events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// This connection's own message rate (a tier), in place of `rateLimit`'s.
    #[serde(skip)]
    pub rate_limit: Option<Rate>,
    /// What it asked of its session's stream (positions, recovery), from its upgrade URL.
    #[serde(skip)]
    pub resume: Resume,
    /// When its token expires (the `exp` claim, in ms): it is warned ahead and closed then,
    /// unless it sends a fresh token (`Config::token_expiry`).
    #[serde(skip)]
    pub expires_at: Option<Millis>,
}

/// The identity with nothing in it: what every connection without one of its own shares.
static ANONYMOUS: Identity = Identity {
    user_id: None,
    organization_id: None,
    client_id: None,
    metadata: None,
    rate_limit: None,
    resume: Resume { positions: false, since: None, previous: Vec::new() },
    expires_at: None,
};

/// A connection's identity, shared with what routes its messages. A connection that has
/// none of its own (no token, no tier, nothing asked of its stream) allocates nothing
/// for it: most of them, and idle ones must stay small.
#[derive(Clone)]
pub(crate) struct SharedIdentity(Option<Arc<Identity>>);

impl SharedIdentity {
    pub fn new(identity: Identity) -> Self {
        Self((identity != ANONYMOUS).then(|| Arc::new(identity)))
    }
}

impl std::ops::Deref for SharedIdentity {
    type Target = Identity;

    fn deref(&self) -> &Identity {
        self.0.as_deref().unwrap_or(&ANONYMOUS)
    }
}

pub(crate) struct Connection {
    pub session: Option<SessionId>,
    pub outbox: Arc<dyn Outbox>,
    pub name: Arc<ClientName>,
    pub identity: SharedIdentity,
    /// The identity's user, or else the user of the connection's first `register`.
    pub user: OnceLock<Arc<str>>,
    /// A pointer wide, and no allocation while the connection is in no channel.
    pub channels: Mutex<ThinVec<ChannelName>>,
    /// Last time anything (a message or a pong) was heard from the client.
    pub last_seen: AtomicU64,
    /// When the ping now waiting for its pong was sent; 0 when none waits.
    pub ping_sent: AtomicU64,
    /// The last ping's round trip in milliseconds; `u32::MAX` before the first.
    pub round_trip: AtomicU32,
    /// Present when messages are rate limited; boxed, so that a connection without one
    /// costs the connection map eight bytes for it.
    pub bucket: Option<Box<Mutex<Bucket>>>,
    /// Messages refused for the rate so far.
    pub violations: AtomicU32,
    /// Whether the last message with a readable type had an upper-case one: errors about
    /// messages with none follow its casing.
    pub upper_case: AtomicBool,
}

impl Connection {
    pub fn new(
        session: Option<SessionId>,
        outbox: Arc<dyn Outbox>,
        name: Arc<ClientName>,
        identity: SharedIdentity,
        user: Option<Arc<str>>,
        bucket: Option<Bucket>,
        now: Millis,
    ) -> Self {
        Self {
            session,
            outbox,
            name,
            identity,
            user: user.map(OnceLock::from).unwrap_or_default(),
            channels: Mutex::default(),
            last_seen: AtomicU64::new(now),
            ping_sent: AtomicU64::new(0),
            round_trip: AtomicU32::new(u32::MAX),
            bucket: bucket.map(|bucket| Box::new(Mutex::new(bucket))),
            violations: AtomicU32::new(0),
            upper_case: AtomicBool::new(false),
        }
    }

    pub fn info(&self, id: ConnId) -> ConnectionInfo {
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
pub(crate) struct Sender {
    pub id: ConnId,
    pub outbox: Arc<dyn Outbox>,
    pub session: Option<SessionId>,
    pub name: Arc<ClientName>,
    pub identity: SharedIdentity,
    pub upper_case: bool,
}

impl Sender {
    pub fn info(&self) -> ConnectionInfo {
        connection_info(self.id, &self.session, &self.name, &self.identity)
    }

    pub fn joiner(&self) -> Joiner<'_> {
        Joiner { user_id: self.identity.user_id.as_deref(), organization_id: self.identity.organization_id.as_deref() }
    }
}

/// The open connections of this node, by id.
pub(crate) struct Registry {
    /// Boxed: the map's spare room (up to half its slots) then costs a pointer a slot,
    /// not a whole connection.
    conns: DashMap<ConnId, Box<Connection>>,
    last_id: AtomicU64,
}

impl Registry {
    /// Ids are given from `first_id` up: a cluster gives each node a range of its own.
    pub fn new(first_id: u64) -> Self {
        Self { conns: DashMap::new(), last_id: AtomicU64::new(first_id) }
    }

    pub fn next_id(&self) -> ConnId {
        ConnId(self.last_id.fetch_add(1, Ordering::Relaxed) + 1)
    }

    pub fn insert(&self, id: ConnId, connection: Connection) {
        self.conns.insert(id, Box::new(connection));
    }

    pub fn remove(&self, id: ConnId) -> Option<Box<Connection>> {
        self.conns.remove(&id).map(|(_, connection)| connection)
    }

    pub fn get(&self, id: ConnId) -> Option<Ref<'_, ConnId, Box<Connection>>> {
        self.conns.get(&id)
    }

    pub fn contains(&self, id: ConnId) -> bool {
        self.conns.contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// The connections `keep` picks.
    pub fn ids_where(&self, keep: impl Fn(&Connection) -> bool) -> Vec<ConnId> {
        self.conns.iter().filter(|c| keep(c)).map(|c| *c.key()).collect()
    }

    /// Calls `each` with every connection, a shard at a time.
    pub fn for_each(&self, mut each: impl FnMut(ConnId, &Connection)) {
        for entry in self.conns.iter() {
            each(*entry.key(), entry.value());
        }
    }

    /// What routing a message from `id` needs, noting that it was heard from at `now`.
    pub fn sender(&self, id: ConnId, now: Millis) -> Option<Sender> {
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

    /// Notes a pong from the client: it is alive, and the ping's round trip is known.
    pub fn pong(&self, id: ConnId, now: Millis) {
        if let Some(c) = self.conns.get(&id) {
            c.last_seen.store(now, Ordering::Relaxed);
            let sent = c.ping_sent.swap(0, Ordering::Relaxed);
            if sent != 0 {
                let round_trip = u32::try_from(now.saturating_sub(sent)).unwrap_or(u32::MAX - 1);
                c.round_trip.store(round_trip, Ordering::Relaxed);
            }
        }
    }

    /// Notes a sign of life that is neither a message nor a pong (a client's ping).
    pub fn alive(&self, id: ConnId, now: Millis) {
        if let Some(c) = self.conns.get(&id) {
            c.last_seen.store(now, Ordering::Relaxed);
        }
    }

    /// Connections by how they answer pings: one whose ping has waited `patience` or
    /// longer is unhealthy.
    pub fn health(&self, now: Millis, patience: Millis) -> Health {
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
