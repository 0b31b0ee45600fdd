//! The shapes the addon hands to JavaScript that napi makes: sessions (with their
//! `Date`s), the enums the original exported, and small answers. Their TypeScript
//! interfaces are generated from these structs; the shapes serialized from the core's own
//! types (stats, event payloads, presence, history) are declared in `types.d.ts`.

use chrono::{DateTime, Utc};
use napi::bindgen_prelude::{Either, Null, Undefined};
use napi_derive::napi;
use serde_json::Value;
use switchyard_core::{Millis, SessionInfo};

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
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
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

/// Where `listen()` accepts connections.
#[napi(object, object_from_js = false)]
pub struct ListenAddress {
    /// The address bound, as `host` gave it or resolved it.
    pub host: String,
    /// The port, the one the system chose when `port` was 0.
    pub port: u32,
}

fn or_null<T>(value: Option<T>) -> Either<T, Null> {
    value.map_or(Either::B(Null), Either::A)
}

/// What `publish()` answers.
#[napi(object)]
pub struct Published {
    /// The publication's offset in the session's stream; absent without history.
    pub offset: Option<i64>,
    /// Members it reached.
    pub delivered: u32,
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
