//! The options of each JavaScript call, read into the core's types: the manager's
//! config, `createSession`'s options, and a connection's identity and route.

use bytes::Bytes;
use napi::bindgen_prelude::Unknown;
use napi::{Env, Error, Result, Status, ValueType};
use switchyard_core::{
    AckPolicy, Config, ConflictResolution, HistoryConfig, Identity, Rate, RateLimits, Route, SessionError, SessionOptions,
    SlowConsumerPolicy,
};
#[cfg(not(target_family = "wasm"))]
use switchyard_redis::RedisOptions;
use switchyard_server::admission::TokenAuth;
use switchyard_server::auth::{self, JwtConfig, Keys, Verifier};
use switchyard_server::deflate::CompressionConfig;

use crate::options::{json_value, type_error, OptionsReader};

/// Longest interval a JS timer accepts (2^31 - 1 ms); longer ones fire at once.
pub const MAX_TIMER_MS: u64 = i32::MAX as u64;
/// Bounds of the other numeric options: comfortably inside a JS number's exact range.
const MAX_MS: u64 = 1 << 50;
const MAX_BYTES: u64 = 1 << 40;
const MAX_COUNT: u64 = u32::MAX as u64;
const MAX_NATIVE_THREADS: u64 = 1024;

const CONFIG_OPTIONS: [&str; 24] = [
    "sessionTimeoutMs",
    "maxSessions",
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
    "defaultConflictResolution",
    "controlRequestTimeoutMs",
    "maxConnectionsPerUser",
    "rateLimit",
    "connectionsPerMinutePerIp",
    "auth",
    "nativeCompression",
    "history",
    "historyMaxBytes",
    "redis",
    "nativeThreads",
];
const SESSION_OPTIONS: [&str; 6] = ["sessionId", "expiresIn", "metadata", "maxClients", "conflictResolution", "history"];
const HISTORY_OPTIONS: [&str; 2] = ["size", "ttlMs"];
const IDENTITY_OPTIONS: [&str; 5] = ["userId", "organizationId", "clientId", "metadata", "rateLimit"];
const UPGRADE_OPTIONS: [&str; 6] = ["userId", "organizationId", "clientId", "metadata", "rateLimit", "head"];
const RATE_OPTIONS: [&str; 2] = ["messagesPerSecond", "burst"];
const JWT_OPTIONS: [&str; 9] =
    ["secret", "publicKey", "jwks", "algorithms", "issuer", "audience", "userClaim", "organizationClaim", "leewaySeconds"];

/// Everything the constructor's config sets.
pub struct Settings {
    pub config: Config,
    pub auth: Option<TokenAuth>,
    #[cfg(not(target_family = "wasm"))]
    pub redis: Option<RedisOptions>,
    /// permessage-deflate in the native transport.
    pub compression: Option<CompressionConfig>,
    /// Threads of the native transport; `None`: one per CPU this process may use.
    pub native_threads: Option<usize>,
}

/// `nativeCompression: true` or `{ threshold }`: the native transport negotiates
/// permessage-deflate with clients that offer it.
fn read_compression(env: &Env, options: &OptionsReader) -> Result<Option<CompressionConfig>> {
    let Some(value) = options.raw("nativeCompression")? else { return Ok(None) };
    if value.get_type()? == ValueType::Boolean {
        return Ok(options.boolean("nativeCompression")?.unwrap_or(false).then(CompressionConfig::default));
    }
    if value.get_type()? != ValueType::Object {
        return Err(type_error(env, "nativeCompression must be true, false or { threshold }, the fewest payload bytes worth compressing"));
    }
    let compression = options.nested("nativeCompression", &["threshold"])?;
    let threshold = compression.count("threshold", MAX_COUNT)?.map_or(CompressionConfig::DEFAULT_THRESHOLD, |n| n as usize);
    Ok(Some(CompressionConfig { threshold }))
}

/// `redis: { url, keyPrefix, nodeId }`: this manager is a node of a cluster. A node
/// silent for `heartbeatTimeoutMs` is gone: its lease lasts half of it.
#[cfg(not(target_family = "wasm"))]
fn read_redis(env: &Env, options: &OptionsReader, config: &Config) -> Result<Option<RedisOptions>> {
    if !options.has("redis")? {
        return Ok(None);
    }
    let redis = options.nested("redis", &["url", "keyPrefix", "nodeId"])?;
    let Some(url) = redis.string("url")? else { return Err(type_error(env, "redis needs a url, such as { url: 'redis://127.0.0.1:6379' }")) };
    Ok(Some(RedisOptions {
        url,
        prefix: redis.string("keyPrefix")?.unwrap_or_else(|| RedisOptions::DEFAULT_PREFIX.into()),
        node_id: redis.string("nodeId")?.unwrap_or_else(RedisOptions::default_node_id),
        lease_ms: config.heartbeat_timeout_ms / 2,
    }))
}

/// `{ size, ttlMs }`, both required: a session stream's bounds.
fn read_history(env: &Env, reader: OptionsReader) -> Result<Option<HistoryConfig>> {
    match (reader.positive_integer("size", HistoryConfig::MAX_SIZE as u64)?, reader.positive_integer("ttlMs", MAX_MS)?) {
        (Some(size), Some(ttl_ms)) => Ok(Some(HistoryConfig { size: size as usize, ttl_ms })),
        (None, None) => Ok(None),
        _ => Err(type_error(env, "history needs both size and ttlMs, such as { size: 100, ttlMs: 300000 }")),
    }
}

/// `{ messagesPerSecond, burst }`, both required.
fn read_rate(env: &Env, reader: OptionsReader, what: &str) -> Result<Option<Rate>> {
    match (reader.positive_number("messagesPerSecond")?, reader.positive_number("burst")?) {
        (Some(per_second), Some(burst)) => Ok(Some(Rate { per_second, burst })),
        (None, None) => Ok(None),
        _ => Err(type_error(env, format!("{what} needs both messagesPerSecond and burst"))),
    }
}

fn read_rate_limits(env: &Env, options: &OptionsReader) -> Result<Option<RateLimits>> {
    if !options.has("rateLimit")? {
        return Ok(None);
    }
    let limits = options.nested("rateLimit", &["messagesPerSecond", "burst", "perUser", "maxViolations"])?;
    let per_user = read_rate(env, limits.nested("perUser", &RATE_OPTIONS)?, "rateLimit.perUser")?;
    let max_violations = limits.count("maxViolations", u32::MAX.into())?.map_or(10, |n| n as u32);
    let Some(per_connection) = read_rate(env, limits, "rateLimit")? else {
        return Err(type_error(env, "rateLimit needs messagesPerSecond and burst"));
    };
    Ok(Some(RateLimits { per_connection, per_user, max_violations }))
}

fn read_auth(env: &Env, options: &OptionsReader) -> Result<Option<TokenAuth>> {
    if !options.has("auth")? {
        return Ok(None);
    }
    let auth = options.nested("auth", &["jwt", "required"])?;
    let jwt = auth.nested("jwt", &JWT_OPTIONS)?;
    let refused = |message: String| type_error(env, format!("auth.jwt: {message}"));
    let keys = match (jwt.string("secret")?, jwt.string("publicKey")?, jwt.raw("jwks")?) {
        (Some(secret), None, None) => Keys::Secret(secret.into_bytes()),
        (None, Some(pem), None) => Keys::PublicKeyPem(pem.into_bytes()),
        (None, None, Some(jwks)) => {
            let document = match jwks.get_type()? {
                // SAFETY: a string, checked: the path of a JWKS file.
                ValueType::String => {
                    let path = unsafe { jwks.cast::<String>()? };
                    let text = std::fs::read_to_string(&path).map_err(|err| refused(format!("cannot read the JWKS file {path:?}: {err}")))?;
                    serde_json::from_str(&text).map_err(|err| refused(format!("{path:?} is not JSON: {err}")))?
                }
                _ => json_value(env, jwks, "auth.jwt.jwks")?,
            };
            Keys::Jwks(serde_json::from_value(document).map_err(|err| refused(format!("jwks is not a JWKS document: {err}")))?)
        }
        _ => return Err(refused("give exactly one of secret, publicKey and jwks".into())),
    };
    let algorithms = jwt
        .strings("algorithms")?
        .unwrap_or_default()
        .iter()
        .map(|name| auth::algorithm(name))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(refused)?;
    let config = JwtConfig {
        keys,
        algorithms,
        issuer: jwt.string("issuer")?,
        audience: jwt.string("audience")?,
        user_claim: jwt.string("userClaim")?.unwrap_or_else(|| "sub".into()),
        organization_claim: jwt.string("organizationClaim")?,
        leeway_seconds: jwt.count("leewaySeconds", 86_400)?.unwrap_or(0),
    };
    let verifier = Verifier::new(config).map_err(refused)?;
    Ok(Some(TokenAuth { verifier, required: auth.boolean("required")?.unwrap_or(true) }))
}

pub fn read_settings(env: &Env, value: Option<Unknown>) -> Result<Settings> {
    let options = OptionsReader::new(env, value, "config", &CONFIG_OPTIONS)?;
    let compression = read_compression(env, &options)?;
    let defaults = Config::default();
    let size = |n: u64| n as usize;
    let auth = read_auth(env, &options)?;
    let config = Config {
        session_timeout_ms: options.positive_integer("sessionTimeoutMs", MAX_MS)?.unwrap_or(defaults.session_timeout_ms),
        max_sessions: options.positive_integer("maxSessions", MAX_COUNT)?.map_or(defaults.max_sessions, size),
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
        channel_allow: options.nested("channels", &["allow", "history"])?.strings("allow")?,
        channel_history: read_history(env, options.nested("channels", &["allow", "history"])?.nested("history", &HISTORY_OPTIONS)?)?,
        request_timeout_ms: options.positive_integer("requestTimeoutMs", MAX_TIMER_MS)?.unwrap_or(defaults.request_timeout_ms),
        ack: options.choice("ack", &AckPolicy::NAMES)?.and_then(AckPolicy::from_name).unwrap_or(defaults.ack),
        enable_role_management: options.boolean("enableRoleManagement")?.unwrap_or(defaults.enable_role_management),
        default_conflict_resolution: read_conflict_resolution(&options, "defaultConflictResolution")?
            .unwrap_or(defaults.default_conflict_resolution),
        control_request_timeout_ms: options
            .positive_integer("controlRequestTimeoutMs", MAX_TIMER_MS)?
            .unwrap_or(defaults.control_request_timeout_ms),
        max_connections_per_user: options
            .positive_integer("maxConnectionsPerUser", MAX_COUNT)?
            .map_or(defaults.max_connections_per_user, size),
        rate_limit: read_rate_limits(env, &options)?,
        connections_per_minute_per_ip: options.positive_integer("connectionsPerMinutePerIp", MAX_COUNT)?.map(|n| n as u32),
        verified_users_only: auth.is_some(),
        history: read_history(env, options.nested("history", &HISTORY_OPTIONS)?)?,
        history_max_bytes: options.positive_integer("historyMaxBytes", MAX_BYTES)?.map_or(defaults.history_max_bytes, size),
    };
    config.validate().map_err(|err| type_error(env, err.to_string()))?;
    let native_threads = options.positive_integer("nativeThreads", MAX_NATIVE_THREADS)?.map(size);
    #[cfg(not(target_family = "wasm"))]
    let redis = read_redis(env, &options, &config)?;
    #[cfg(target_family = "wasm")]
    if options.has("redis")? {
        return Err(type_error(env, "Clusters (the redis option) are not available in the WebAssembly build of switchyard: they need a platform with a native package"));
    }
    Ok(Settings {
        config,
        auth,
        #[cfg(not(target_family = "wasm"))]
        redis,
        compression,
        native_threads,
    })
}

fn read_conflict_resolution(options: &OptionsReader, name: &str) -> Result<Option<ConflictResolution>> {
    Ok(options.choice(name, &ConflictResolution::NAMES)?.and_then(ConflictResolution::from_name))
}

pub fn read_session_options(env: &Env, value: Option<Unknown>) -> Result<SessionOptions> {
    let options = OptionsReader::new(env, value, "options", &SESSION_OPTIONS)?;
    Ok(SessionOptions {
        session_id: options.string("sessionId")?,
        // 0, as in the original, means `sessionTimeoutMs`.
        expires_in_ms: options.count("expiresIn", MAX_MS)?,
        metadata: options.json("metadata")?,
        max_clients: options.positive_integer("maxClients", MAX_COUNT)?.map(|n| n as usize),
        conflict_resolution: read_conflict_resolution(&options, "conflictResolution")?,
        history: read_history(env, options.nested("history", &HISTORY_OPTIONS)?)?,
    })
}

fn identity_from(env: &Env, options: &OptionsReader) -> Result<Identity> {
    Ok(Identity {
        user_id: options.string("userId")?,
        organization_id: options.string("organizationId")?,
        client_id: options.string("clientId")?,
        metadata: options.json("metadata")?,
        rate_limit: read_rate(env, options.nested("rateLimit", &RATE_OPTIONS)?, "rateLimit")?,
        resume: Default::default(),
    })
}

/// An identity as `attach`'s `authenticate` returns it.
pub fn read_identity(env: &Env, value: Option<Unknown>) -> Result<Identity> {
    identity_from(env, &OptionsReader::new(env, value, "the identity", &IDENTITY_OPTIONS)?)
}

/// `handleUpgrade`'s options: the identity, and for a native socket the `head` bytes
/// of the `upgrade` event.
pub fn read_upgrade_options(env: &Env, value: Option<Unknown>) -> Result<(Identity, Bytes)> {
    let options = OptionsReader::new(env, value, "options", &UPGRADE_OPTIONS)?;
    let head = options.buffer("head")?.map(Bytes::from).unwrap_or_default();
    Ok((identity_from(env, &options)?, head))
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
