//! The shapes the addon hands to JavaScript: sessions, stats and event payloads. Their
//! TypeScript interfaces in `index.d.ts` are generated from these structs.


use chrono::{DateTime, Utc};
use napi::bindgen_prelude::{Buffer, Either, Null, Undefined};
use napi_derive::napi;
use serde_json::Value;
use switchyard_core::{
    Config, ConnectionInfo, FrameKind, History, HistoryConfig, Identity, Millis, PresentMember, Rate, SessionInfo,
};
use switchyard_server::deflate::{CompressionConfig, CompressionCounts};

fn date(ms: Millis) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms as i64).unwrap_or_default()
}

/// The original's conflict resolution strategies (`defaultConflictResolution`,
/// `createSession({ conflictResolution })`), under the original's names.
#[napi(string_enum)]
#[allow(non_camel_case_types)]
pub enum ConflictResolution {
    /// Forward a request to the active member only when it joined after the requester.
    #[napi(value = "first-come-first-served")]
    FIRST_COME_FIRST_SERVED,
    /// Decline every request while a member is active.
    #[napi(value = "deny-both")]
    DENY_BOTH,
    /// Forward every request to the active member, who decides.
    #[napi(value = "user-choice")]
    USER_CHOICE,
    /// As `user-choice`, as in the original.
    #[napi(value = "active-wins")]
    ACTIVE_WINS,
    /// As `user-choice`, as in the original.
    #[napi(value = "timestamp-wins")]
    TIMESTAMP_WINS,
}

/// A member's control role, under the original's names.
#[napi(string_enum)]
#[allow(non_camel_case_types)]
pub enum ClientRole {
    /// Holds control: its `state_update` messages are relayed.
    #[napi(value = "active")]
    ACTIVE,
    /// Observes: its `state_update` messages are dropped.
    #[napi(value = "passive")]
    PASSIVE,
    /// Asking for control (the original client's own state; the server never sets it).
    #[napi(value = "requesting")]
    REQUESTING,
}

/// A session as `createSession`, `getSession` and `listSessions` return it. The dates
/// are `Date`s, so `res.json(session)` writes them as ISO strings.
#[napi(object, object_from_js = false)]
pub struct SessionData {
    pub session_id: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Connections in the session now.
    pub client_count: u32,
    /// The last time a member joined or relayed a message.
    pub last_activity: DateTime<Utc>,
    /// As `createSession` was given it; `undefined` when it was given none (typed as
    /// always there, as the original's users read it).
    #[napi(ts_type = "MetaData")]
    pub metadata: Either<Value, Undefined>,
    /// With role management, the `clientId` of the member holding control; `null` when none does.
    #[napi(ts_type = "string | null")]
    pub active_client_id: Either<String, Null>,
    /// How `request_control` is decided in this session.
    #[napi(ts_type = "ConflictResolution")]
    pub conflict_resolution: String,
}

impl From<SessionInfo> for SessionData {
    fn from(info: SessionInfo) -> Self {
        Self {
            session_id: info.session_id.to_string(),
            created_at: date(info.created_at),
            expires_at: date(info.expires_at),
            client_count: info.client_count as u32,
            last_activity: date(info.last_activity),
            metadata: info.metadata.map_or(Either::B(()), Either::A),
            active_client_id: or_null(info.active_client_id),
            conflict_resolution: info.conflict_resolution.as_str().into(),
        }
    }
}

/// The payload of `connection` events.
#[napi(object)]
pub struct ConnectionEvent {
    /// The relay's id for this connection (`c_...`), unique within the manager.
    pub connection_id: String,
    /// Absent for a sessionless connection.
    pub session_id: Option<String>,
    /// The app's `clientId`, else the first one the client sent, else `connectionId`.
    pub client_id: String,
    pub user_id: Option<String>,
    pub organization_id: Option<String>,
    #[napi(ts_type = "JsonValue")]
    pub metadata: Option<Value>,
}

impl From<ConnectionInfo> for ConnectionEvent {
    fn from(info: ConnectionInfo) -> Self {
        Self {
            connection_id: info.connection_id.to_string(),
            session_id: info.session_id.map(|s| s.to_string()),
            client_id: info.client_id,
            user_id: info.user_id,
            organization_id: info.organization_id,
            metadata: info.metadata,
        }
    }
}

/// The payload of `disconnect` events: who left, and the close code and reason.
#[napi(object)]
pub struct DisconnectEvent {
    pub connection_id: String,
    pub session_id: Option<String>,
    pub client_id: String,
    pub user_id: Option<String>,
    pub organization_id: Option<String>,
    #[napi(ts_type = "JsonValue")]
    pub metadata: Option<Value>,
    /// The WebSocket close code (1005 when the client sent none).
    pub code: u32,
    pub reason: String,
}

impl DisconnectEvent {
    pub fn new(info: ConnectionInfo, code: u16, reason: String) -> Self {
        let ConnectionEvent { connection_id, session_id, client_id, user_id, organization_id, metadata } = info.into();
        Self { connection_id, session_id, client_id, user_id, organization_id, metadata, code: code.into(), reason }
    }
}

/// Where `listen()` accepts connections.
#[napi(object, object_from_js = false)]
pub struct ListenAddress {
    /// The address bound, as `host` gave it or resolved it.
    pub host: String,
    /// The port, the one the system chose when `port` was 0.
    pub port: u32,
}

/// The payload of `sessionDeleted` and `sessionExpired` events.
#[napi(object)]
pub struct SessionEndedEvent {
    pub session_id: String,
}

/// The configuration in force, every default filled in.
#[napi(object)]
pub struct ResolvedConfig {
    pub session_timeout_ms: i64,
    pub max_sessions: u32,
    pub max_clients_per_session: u32,
    pub ping_interval_ms: i64,
    pub heartbeat_timeout_ms: i64,
    pub cleanup_interval_ms: i64,
    pub max_message_bytes: i64,
    pub max_queued_bytes: i64,
    #[napi(ts_type = "SlowConsumerPolicy")]
    pub slow_consumer: String,
    pub channels: ResolvedChannels,
    pub max_channels_per_connection: u32,
    pub request_timeout_ms: i64,
    pub max_requests_per_connection: u32,
    #[napi(ts_type = "AckPolicy")]
    pub ack: String,
    pub enable_role_management: bool,
    #[napi(ts_type = "ConflictResolution")]
    pub default_conflict_resolution: String,
    pub control_request_timeout_ms: i64,
    pub max_connections_per_user: u32,
    pub max_windows_per_user: u32,
    #[napi(ts_type = "ResolvedRateLimit | null")]
    pub rate_limit: Either<ResolvedRateLimit, Null>,
    #[napi(ts_type = "number | null")]
    pub connections_per_minute_per_ip: Either<u32, Null>,
    /// Whether token auth is on and requires a token; `null` without auth.
    #[napi(ts_type = "{ required: boolean } | null")]
    pub auth: Either<ResolvedAuth, Null>,
    /// permessage-deflate in the native transport; `null`: off.
    #[napi(ts_type = "{ threshold: number } | null")]
    pub native_compression: Either<ResolvedCompression, Null>,
    /// The native transport's threads; `null`: one per CPU the process may use.
    #[napi(ts_type = "number | null")]
    pub native_threads: Either<u32, Null>,
    /// The stream sessions keep unless created with their own; `null`: none.
    #[napi(ts_type = "ResolvedHistory | null")]
    pub history: Either<ResolvedHistory, Null>,
    pub history_max_bytes: i64,
}

#[napi(object)]
pub struct ResolvedHistory {
    pub size: u32,
    pub ttl_ms: i64,
}

impl From<HistoryConfig> for ResolvedHistory {
    fn from(history: HistoryConfig) -> Self {
        Self { size: history.size as u32, ttl_ms: history.ttl_ms as i64 }
    }
}

#[napi(object)]
pub struct ResolvedRate {
    pub messages_per_second: f64,
    pub burst: f64,
}

impl From<Rate> for ResolvedRate {
    fn from(rate: Rate) -> Self {
        Self { messages_per_second: rate.per_second, burst: rate.burst }
    }
}

#[napi(object)]
pub struct ResolvedRateLimit {
    pub messages_per_second: f64,
    pub burst: f64,
    #[napi(ts_type = "ResolvedRate | null")]
    pub per_user: Either<ResolvedRate, Null>,
    pub max_violations: u32,
}

#[napi(object)]
pub struct ResolvedAuth {
    pub required: bool,
}

fn or_null<T>(value: Option<T>) -> Either<T, Null> {
    value.map_or(Either::B(Null), Either::A)
}

#[napi(object)]
pub struct ResolvedChannels {
    /// Absent when any valid name may be joined.
    pub allow: Option<Vec<String>>,
    /// The stream each channel keeps; absent when channels keep none.
    pub history: Option<ResolvedHistory>,
}

/// `nativeCompression` as the manager applies it.
#[napi(object)]
pub struct ResolvedCompression {
    pub threshold: u32,
}

impl ResolvedConfig {
    /// `auth_required`: whether a token is required, when token auth is on.
    pub fn new(config: &Config, auth_required: Option<bool>, native: &NativeSettings) -> Self {
        Self {
            session_timeout_ms: config.session_timeout_ms as i64,
            max_sessions: config.max_sessions as u32,
            max_clients_per_session: config.max_clients_per_session as u32,
            ping_interval_ms: config.ping_interval_ms as i64,
            heartbeat_timeout_ms: config.heartbeat_timeout_ms as i64,
            cleanup_interval_ms: config.cleanup_interval_ms as i64,
            max_message_bytes: config.max_message_bytes as i64,
            max_queued_bytes: config.max_queued_bytes as i64,
            slow_consumer: config.slow_consumer.as_str().into(),
            channels: ResolvedChannels { allow: config.channel_allow.clone(), history: config.channel_history.map(ResolvedHistory::from) },
            max_channels_per_connection: config.max_channels_per_connection as u32,
            request_timeout_ms: config.request_timeout_ms as i64,
            max_requests_per_connection: config.max_requests_per_connection as u32,
            ack: config.ack.as_str().into(),
            enable_role_management: config.enable_role_management,
            default_conflict_resolution: config.default_conflict_resolution.as_str().into(),
            control_request_timeout_ms: config.control_request_timeout_ms as i64,
            max_connections_per_user: config.max_connections_per_user as u32,
            max_windows_per_user: config.max_windows_per_user as u32,
            rate_limit: or_null(config.rate_limit.as_ref().map(|limits| ResolvedRateLimit {
                messages_per_second: limits.per_connection.per_second,
                burst: limits.per_connection.burst,
                per_user: or_null(limits.per_user.map(Into::into)),
                max_violations: limits.max_violations,
            })),
            connections_per_minute_per_ip: or_null(config.connections_per_minute_per_ip),
            auth: or_null(auth_required.map(|required| ResolvedAuth { required })),
            native_compression: or_null(native.compression.map(|c| ResolvedCompression { threshold: c.threshold as u32 })),
            native_threads: or_null(native.threads.map(|n| n as u32)),
            history: or_null(config.history.map(ResolvedHistory::from)),
            history_max_bytes: config.history_max_bytes as i64,
        }
    }
}

/// What `history()` answers.
#[napi(object)]
pub struct SessionHistory {
    /// The stream's epoch; `null` when the session keeps no history.
    #[napi(ts_type = "string | null")]
    pub epoch: Either<String, Null>,
    /// The latest offset (0 before the first publication, or without history).
    pub offset: i64,
    /// Whether `publications` are every one after the position asked for.
    pub recovered: bool,
    pub publications: Vec<PublicationData>,
}

/// One kept publication: `data` is a text message parsed, `binary` a binary one's bytes.
#[napi(object)]
pub struct PublicationData {
    pub offset: i64,
    /// The publisher's connectionId, or `"server"`.
    pub from: String,
    pub timestamp: i64,
    #[napi(ts_type = "JsonValue")]
    pub data: Option<Value>,
    pub binary: Option<Buffer>,
}

impl From<History> for SessionHistory {
    fn from(history: History) -> Self {
        Self {
            epoch: or_null(history.position.as_ref().map(|p| p.epoch.to_string())),
            offset: history.position.map_or(0, |p| p.offset as i64),
            recovered: history.recovered,
            publications: history
                .publications
                .into_iter()
                .map(|p| {
                    let binary = p.frame.kind == FrameKind::Binary;
                    PublicationData {
                        offset: p.offset as i64,
                        from: p.from.to_string(),
                        timestamp: p.timestamp as i64,
                        data: (!binary).then(|| serde_json::from_slice(&p.frame.payload).ok()).flatten(),
                        binary: binary.then(|| p.frame.payload.to_vec().into()),
                    }
                })
                .collect(),
        }
    }
}

/// A member of a session, as `presence()` shows it.
#[napi(object)]
pub struct PresenceData {
    pub connection_id: String,
    pub client_id: String,
    pub user_id: Option<String>,
    pub organization_id: Option<String>,
    /// `"active"` for the member holding control, else `"passive"`.
    #[napi(ts_type = "'active' | 'passive'")]
    pub role: String,
    /// When it joined, in milliseconds since the Unix epoch.
    pub connected_at: i64,
}

impl From<PresentMember> for PresenceData {
    fn from(present: PresentMember) -> Self {
        Self {
            connection_id: present.connection_id.to_string(),
            client_id: present.client_id,
            user_id: present.user_id,
            organization_id: present.organization_id,
            role: present.role.into(),
            connected_at: present.connected_at as i64,
        }
    }
}

/// What `publish()` answers.
#[napi(object)]
pub struct Published {
    /// The publication's offset in the session's stream; absent without history.
    pub offset: Option<i64>,
    /// Members it reached.
    pub delivered: u32,
}



/// The native transport's options, as `getStats().config` shows them.
pub struct NativeSettings {
    pub compression: Option<CompressionConfig>,
    pub threads: Option<usize>,
}

/// permessage-deflate, negotiated by `ws` in bridge mode and by the native transport
/// with `nativeCompression`.
#[napi(object)]
pub struct CompressionStats {
    /// Connections open now with permessage-deflate.
    pub connections: u32,
    /// Payload bytes sent to such sockets (open and closed), before compression.
    pub bytes_before_compression: i64,
    /// The bytes that went on the wire for them: compressed payloads, frame headers, handshakes.
    pub bytes_on_wire: i64,
    /// `bytesOnWire / bytesBeforeCompression`; absent before anything was sent.
    pub ratio: Option<f64>,
}

impl From<CompressionCounts> for CompressionStats {
    fn from(counts: CompressionCounts) -> Self {
        Self {
            connections: counts.connections as u32,
            bytes_before_compression: counts.bytes_before_compression as i64,
            bytes_on_wire: counts.bytes_on_wire as i64,
            ratio: counts.ratio(),
        }
    }
}

/// An identity, as `authenticate` returns it.
#[napi(object)]
pub struct IdentityData {
    pub user_id: Option<String>,
    pub organization_id: Option<String>,
    pub client_id: Option<String>,
    #[napi(ts_type = "JsonValue")]
    pub metadata: Option<Value>,
}

impl From<Identity> for IdentityData {
    fn from(identity: Identity) -> Self {
        Self {
            user_id: identity.user_id,
            organization_id: identity.organization_id,
            client_id: identity.client_id,
            metadata: identity.metadata,
        }
    }
}


/// A report as JavaScript sees it: the JSON the binary serves for it, with a figure not
/// known yet left out (`undefined`, as the typings declare it) rather than `null`.
pub fn report_value(report: &impl serde::Serialize) -> Value {
    fn drop_nulls(value: &mut Value) {
        if let Value::Object(members) = value {
            members.retain(|_, member| !member.is_null());
            members.values_mut().for_each(drop_nulls);
        }
    }
    let mut value = serde_json::to_value(report).unwrap_or_default();
    drop_nulls(&mut value);
    value
}
