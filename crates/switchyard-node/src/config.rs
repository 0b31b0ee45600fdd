//! The options of each JavaScript call, read into the core's types: the manager's
//! config, `createSession`'s options, and a connection's identity and route.

use bytes::Bytes;
use napi::bindgen_prelude::Unknown;
use napi::{Env, Error, Result, Status, ValueType};
use switchyard_core::{AckPolicy, Config, ConflictResolution, Identity, Route, SessionError, SessionOptions, SlowConsumerPolicy};

use crate::options::{type_error, OptionsReader};

/// Longest interval a JS timer accepts (2^31 - 1 ms); longer ones fire at once.
pub const MAX_TIMER_MS: u64 = i32::MAX as u64;
/// Bounds of the other numeric options: comfortably inside a JS number's exact range.
const MAX_MS: u64 = 1 << 50;
const MAX_BYTES: u64 = 1 << 40;
const MAX_COUNT: u64 = u32::MAX as u64;

const CONFIG_OPTIONS: [&str; 14] = [
    "sessionTimeoutMs",
    "maxClientsPerSession",
    "pingIntervalMs",
    "heartbeatTimeoutMs",
    "cleanupIntervalMs",
    "maxMessageBytes",
    "maxQueuedBytes",
    "slowConsumer",
    "channels",
    "requestTimeoutMs",
    "ack",
    "enableRoleManagement",
    "conflictResolution",
    "maxConnectionsPerUser",
];
const SESSION_OPTIONS: [&str; 4] = ["sessionId", "expiresIn", "metadata", "maxClients"];
const IDENTITY_OPTIONS: [&str; 4] = ["userId", "organizationId", "clientId", "metadata"];
const UPGRADE_OPTIONS: [&str; 5] = ["userId", "organizationId", "clientId", "metadata", "head"];

pub fn read_config(env: &Env, value: Option<Unknown>) -> Result<Config> {
    let options = OptionsReader::new(env, value, "config", &CONFIG_OPTIONS)?;
    let defaults = Config::default();
    let size = |n: u64| n as usize;
    let config = Config {
        session_timeout_ms: options.positive_integer("sessionTimeoutMs", MAX_MS)?.unwrap_or(defaults.session_timeout_ms),
        max_clients_per_session: options
            .positive_integer("maxClientsPerSession", MAX_COUNT)?
            .map_or(defaults.max_clients_per_session, size),
        ping_interval_ms: options.positive_integer("pingIntervalMs", MAX_TIMER_MS)?.unwrap_or(defaults.ping_interval_ms),
        heartbeat_timeout_ms: options.positive_integer("heartbeatTimeoutMs", MAX_MS)?.unwrap_or(defaults.heartbeat_timeout_ms),
        cleanup_interval_ms: options.positive_integer("cleanupIntervalMs", MAX_TIMER_MS)?.unwrap_or(defaults.cleanup_interval_ms),
        max_message_bytes: options.positive_integer("maxMessageBytes", MAX_BYTES)?.map_or(defaults.max_message_bytes, size),
        max_queued_bytes: options.positive_integer("maxQueuedBytes", MAX_BYTES)?.map_or(defaults.max_queued_bytes, size),
        slow_consumer: options
            .choice("slowConsumer", &SlowConsumerPolicy::NAMES)?
            .and_then(SlowConsumerPolicy::from_name)
            .unwrap_or(defaults.slow_consumer),
        channel_allow: options.nested("channels", &["allow"])?.strings("allow")?,
        request_timeout_ms: options.positive_integer("requestTimeoutMs", MAX_TIMER_MS)?.unwrap_or(defaults.request_timeout_ms),
        ack: options.choice("ack", &AckPolicy::NAMES)?.and_then(AckPolicy::from_name).unwrap_or(defaults.ack),
        enable_role_management: options.boolean("enableRoleManagement")?.unwrap_or(defaults.enable_role_management),
        conflict_resolution: options
            .choice("conflictResolution", &ConflictResolution::NAMES)?
            .and_then(ConflictResolution::from_name)
            .unwrap_or(defaults.conflict_resolution),
        max_connections_per_user: options
            .positive_integer("maxConnectionsPerUser", MAX_COUNT)?
            .map_or(defaults.max_connections_per_user, size),
    };
    config.validate().map_err(|err| type_error(env, err.to_string()))?;
    Ok(config)
}

pub fn read_session_options(env: &Env, value: Option<Unknown>) -> Result<SessionOptions> {
    let options = OptionsReader::new(env, value, "options", &SESSION_OPTIONS)?;
    Ok(SessionOptions {
        session_id: options.string("sessionId")?,
        expires_in_ms: options.positive_integer("expiresIn", MAX_MS)?,
        metadata: options.json("metadata")?,
        max_clients: options.positive_integer("maxClients", MAX_COUNT)?.map(|n| n as usize),
    })
}

fn identity_from(options: &OptionsReader) -> Result<Identity> {
    Ok(Identity {
        user_id: options.string("userId")?,
        organization_id: options.string("organizationId")?,
        client_id: options.string("clientId")?,
        metadata: options.json("metadata")?,
    })
}

/// An identity as `attach`'s `authenticate` returns it.
pub fn read_identity(env: &Env, value: Option<Unknown>) -> Result<Identity> {
    identity_from(&OptionsReader::new(env, value, "the identity", &IDENTITY_OPTIONS)?)
}

/// `handleUpgrade`'s options: the identity, and for a native socket the `head` bytes
/// of the `upgrade` event.
pub fn read_upgrade_options(env: &Env, value: Option<Unknown>) -> Result<(Identity, Bytes)> {
    let options = OptionsReader::new(env, value, "options", &UPGRADE_OPTIONS)?;
    let head = options.buffer("head")?.map(Bytes::from).unwrap_or_default();
    Ok((identity_from(&options)?, head))
}

/// `sessionId` as given to `handleUpgrade`: a string, or `null` for a sessionless
/// connection.
pub fn read_route(env: &Env, value: Unknown) -> Result<Route> {
    match value.get_type()? {
        ValueType::Null | ValueType::Undefined => Ok(Route::Sessionless),
        // SAFETY: a string, checked.
        ValueType::String => Ok(Route::Session(unsafe { value.cast::<String>()? })),
        _ => Err(type_error(env, "sessionId must be a string, or null for a sessionless connection")),
    }
}

pub fn session_error(env: &Env, err: SessionError) -> Error {
    match err {
        SessionError::InvalidOption(message) => type_error(env, message),
        other => Error::new(Status::InvalidArg, other.to_string()),
    }
}
