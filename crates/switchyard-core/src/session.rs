//! A session: the group of connections that relay to each other, and its lifetime.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::Value;

use crate::broker::SessionRecord;
use crate::policies::ConflictResolution;
use crate::ids::{ConnId, Millis, SessionId};
use crate::outbox::Outbox;
use crate::roles::{Control, Members};
use crate::streams::HistoryConfig;

/// What the app asks for in `createSession`.
#[derive(Clone, Debug, Default)]
pub struct SessionOptions {
    /// The id the app chose, checked by [`SessionId::parse`]; `None` (or empty) for a generated one.
    pub session_id: Option<String>,
    /// Lifetime in milliseconds; the relay's `session_timeout_ms` when absent.
    pub expires_in_ms: Option<u64>,
    /// The app's own data for the session, handed back in its [`SessionInfo`].
    pub metadata: Option<Value>,
    /// Overrides the relay's `max_clients_per_session` for this session.
    pub max_clients: Option<usize>,
    /// Overrides the relay's `default_conflict_resolution` for this session.
    pub conflict_resolution: Option<ConflictResolution>,
    /// Overrides the relay's `history` for this session's stream.
    pub history: Option<HistoryConfig>,
}

/// A snapshot of a session, as returned to the app.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionInfo {
    /// The session's id.
    pub session_id: SessionId,
    /// When it was created, in ms since the Unix epoch.
    pub created_at: Millis,
    /// When it ends, in ms since the Unix epoch.
    pub expires_at: Millis,
    /// Connections in it now, on every node of the cluster.
    pub client_count: usize,
    /// When it last had a member join, a message or a control step, in ms since the Unix epoch.
    pub last_activity: Millis,
    /// As the app gave it; `None` when it gave none.
    pub metadata: Option<Value>,
    /// The `clientId` of the member holding control, with role management on.
    pub active_client_id: Option<String>,
    /// What `request_control` does in it while a member is active.
    pub conflict_resolution: ConflictResolution,
}

/// How a connection is named to others: the app's `clientId`, else the first one the
/// client sent, else its connection id. Shared by the connection and its membership.
/// One slot holds both names: the app's is set from the start, so none sent replaces it.
pub(crate) struct ClientName(std::sync::OnceLock<Box<str>>);

impl ClientName {
    pub fn new(given: Option<String>) -> Self {
        Self(given.map(|given| std::sync::OnceLock::from(given.into_boxed_str())).unwrap_or_default())
    }

    /// The client named itself: the first name it sends stands, unless the app gave one.
    pub fn announce(&self, announced: &str) {
        self.0.get_or_init(|| announced.into());
    }

    pub fn get(&self, conn: ConnId) -> String {
        self.0.get().map_or_else(|| conn.to_string(), |name| name.to_string())
    }
}

pub(crate) struct Member {
    pub conn: ConnId,
    pub outbox: Arc<dyn Outbox>,
    pub name: Arc<ClientName>,
    /// The member's place in the order of joining (the session's `joins` when it came).
    pub joined: u64,
    /// Whether it receives publications with their positions.
    pub positions: bool,
    pub joined_at: Millis,
}

impl Members for Vec<Member> {
    fn client_id(&self, conn: ConnId) -> String {
        self.iter().find(|m| m.conn == conn).map_or_else(|| conn.to_string(), |m| m.name.get(conn))
    }

    fn joined(&self, conn: ConnId) -> u64 {
        self.iter().find(|m| m.conn == conn).map_or(u64::MAX, |m| m.joined)
    }
}

pub(crate) struct Session {
    pub id: SessionId,
    pub created_at: Millis,
    pub expires_at: Millis,
    pub max_clients: usize,
    pub metadata: Option<Value>,
    /// Written on every relayed message under a shared lock, hence atomic.
    pub last_activity: AtomicU64,
    pub members: Vec<Member>,
    /// How many connections have joined so far: orders joins without a clock, so that
    /// `first-come-first-served` never meets a tie.
    pub joins: u64,
    pub control: Control,
    pub conflict_resolution: ConflictResolution,
    /// Present when the session keeps a stream (in the relay's streams): held from
    /// numbering a publication to handing it to every member, so members see offsets in
    /// order.
    pub order: Option<Mutex<()>>,
    pub history: Option<HistoryConfig>,
    /// Created through this node (not learnt from another): this node tells of its end.
    pub created_here: bool,
}

impl Session {
    pub fn is_expired(&self, now: Millis) -> bool {
        now >= self.expires_at
    }

    /// The session as the other nodes of a cluster are told of it.
    pub fn record(&self) -> SessionRecord {
        SessionRecord {
            id: self.id.clone(),
            created_at: self.created_at,
            expires_at: self.expires_at,
            max_clients: self.max_clients,
            metadata: self.metadata.clone(),
            conflict_resolution: self.conflict_resolution,
            history: self.history,
        }
    }

    /// A session another node created, as this node keeps it.
    pub fn from_record(record: SessionRecord) -> Self {
        Session {
            id: record.id,
            created_at: record.created_at,
            expires_at: record.expires_at,
            max_clients: record.max_clients,
            metadata: record.metadata,
            last_activity: AtomicU64::new(record.created_at),
            members: Vec::new(),
            joins: 0,
            control: Default::default(),
            conflict_resolution: record.conflict_resolution,
            order: record.history.map(|_| Mutex::new(())),
            created_here: false,
            history: record.history,
        }
    }

    pub fn info(&self) -> SessionInfo {
        SessionInfo {
            session_id: self.id.clone(),
            created_at: self.created_at,
            expires_at: self.expires_at,
            client_count: self.members.len(),
            last_activity: self.last_activity.load(Ordering::Relaxed),
            metadata: self.metadata.clone(),
            active_client_id: self.control.active().map(|active| self.members.client_id(active)),
            conflict_resolution: self.conflict_resolution,

        }
    }
}
