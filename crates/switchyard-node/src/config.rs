//! The options of each JavaScript call, read into the core's types: the manager's
//! config, `createSession`'s options, and a connection's identity and route. The
//! config's names and bounds are the option schema's (`switchyard_core::schema`).

use bytes::Bytes;
use napi::bindgen_prelude::Unknown;
use napi::{Env, Error, Result, Status, ValueType};
use switchyard_core::schema::{self, Setting};
use switchyard_core::{
    AckPolicy, ChannelOptions, Config, ConflictResolution, HistoryConfig, Identity, Rate, RateLimits, Route, SessionError, SessionOptions,
    SlowConsumerPolicy,
};
#[cfg(not(target_family = "wasm"))]
use switchyard_redis::RedisOptions;
use switchyard_server::admission::TokenAuth;
use switchyard_server::auth::{self, JwtConfig, Keys, Verifier};
use switchyard_server::deflate::CompressionConfig;

use crate::options::{json_value, type_error, OptionsReader};

/// Longest interval a JS timer accepts (2^31 - 1 ms); longer ones fire at once.
pub const MAX_TIMER_MS: u64 = schema::TIMER_MS.max;

const SESSION_OPTIONS: [&str; 6] = ["sessionId", "expiresIn", "metadata", "maxClients", "conflictResolution", "history"];
const HISTORY_OPTIONS: [&str; 2] = ["size", "ttlMs"];
const IDENTITY_OPTIONS: [&str; 5] = ["userId", "organizationId", "clientId", "metadata", "rateLimit"];
const UPGRADE_OPTIONS: [&str; 6] = ["userId", "organizationId", "clientId", "metadata", "rateLimit", "head"];
const RATE_OPTIONS: [&str; 2] = ["messagesPerSecond", "burst"];

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
    let compression = options.nested("nativeCompression", &schema::js_names_under("nativeCompression"))?;
    let threshold = compression.setting(&schema::COMPRESSION_THRESHOLD)?.map_or(CompressionConfig::DEFAULT_THRESHOLD, |n| n as usize);
    Ok(Some(CompressionConfig { threshold }))
}

/// `redis: { url, keyPrefix, nodeId }`: this manager is a node of a cluster. A node
/// silent for `heartbeatTimeoutMs` is gone: its lease lasts half of it.
#[cfg(not(target_family = "wasm"))]
fn read_redis(env: &Env, options: &OptionsReader, config: &Config) -> Result<Option<RedisOptions>> {
    if !options.has("redis")? {
        return Ok(None);
    }
    let redis = options.nested("redis", &schema::js_names_under("redis"))?;
    let Some(url) = redis.string("url")? else { return Err(type_error(env, "redis needs a url, such as { url: 'redis://127.0.0.1:6379' }")) };
    Ok(Some(RedisOptions {
        url,
        prefix: redis.string("keyPrefix")?.unwrap_or_else(|| RedisOptions::DEFAULT_PREFIX.into()),
        node_id: redis.string("nodeId")?.unwrap_or_else(RedisOptions::default_node_id),
        lease_ms: config.heartbeat_timeout_ms / 2,
        timeout: std::time::Duration::from_millis(redis.setting(&schema::REDIS_TIMEOUT_MS)?.unwrap_or(schema::REDIS_TIMEOUT_MS.default.number())),
        max_queued: redis.setting(&schema::REDIS_MAX_QUEUED)?.unwrap_or(schema::REDIS_MAX_QUEUED.default.number()) as usize,
    }))
}

/// `{ size, ttlMs }`, both required: a session stream's bounds.
fn read_history(env: &Env, reader: OptionsReader) -> Result<Option<HistoryConfig>> {
    match (reader.setting(&schema::HISTORY_SIZE)?, reader.setting(&schema::HISTORY_TTL_MS)?) {
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
    let limits = options.nested("rateLimit", &schema::js_names_under("rateLimit"))?;
    let per_user = read_rate(env, limits.nested("perUser", &schema::js_names_under("rateLimit.perUser"))?, "rateLimit.perUser")?;
    let max_violations = limits.setting(&schema::MAX_VIOLATIONS)?.unwrap_or(schema::MAX_VIOLATIONS.default.number()) as u32;
    let Some(per_connection) = read_rate(env, limits, "rateLimit")? else {
        return Err(type_error(env, "rateLimit needs messagesPerSecond and burst"));
    };
    Ok(Some(RateLimits { per_connection, per_user, max_violations }))
}

fn read_auth(env: &Env, options: &OptionsReader) -> Result<Option<TokenAuth>> {
    if !options.has("auth")? {
        return Ok(None);
    }
    let auth = options.nested("auth", &schema::js_names_under("auth"))?;
    let jwt = auth.nested("jwt", &schema::js_names_under("auth.jwt"))?;
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
        leeway_seconds: jwt.setting(&schema::JWT_LEEWAY_SECONDS)?.unwrap_or(schema::JWT_LEEWAY_SECONDS.default.number()),
    };
    let verifier = Verifier::new(config).map_err(refused)?;
    let required = auth.boolean("required")?.unwrap_or(schema::AUTH_REQUIRED.default.boolean());
    Ok(Some(TokenAuth { verifier, required }))
}

pub fn read_settings(env: &Env, value: Option<Unknown>) -> Result<Settings> {
    let options = OptionsReader::new(env, value, "config", &schema::js_names_under(""))?;
    let compression = read_compression(env, &options)?;
    let defaults = Config::default();
    let number = |setting: Setting, default: u64| -> Result<u64> { Ok(options.setting(&setting)?.unwrap_or(default)) };
    let size = |setting: Setting, default: usize| -> Result<usize> { Ok(options.setting(&setting)?.map_or(default, |n| n as usize)) };
    let auth = read_auth(env, &options)?;
    let channels = options.nested("channels", &schema::js_names_under("channels"))?;
    let config = Config {
        session_timeout_ms: number(schema::SESSION_TIMEOUT_MS, defaults.session_timeout_ms)?,
        max_sessions: size(schema::MAX_SESSIONS, defaults.max_sessions)?,
        max_clients_per_session: size(schema::MAX_CLIENTS_PER_SESSION, defaults.max_clients_per_session)?,
        ping_interval_ms: number(schema::PING_INTERVAL_MS, defaults.ping_interval_ms)?,
        heartbeat_timeout_ms: number(schema::HEARTBEAT_TIMEOUT_MS, defaults.heartbeat_timeout_ms)?,
        cleanup_interval_ms: number(schema::CLEANUP_INTERVAL_MS, defaults.cleanup_interval_ms)?,
        max_message_bytes: size(schema::MAX_MESSAGE_BYTES, defaults.max_message_bytes)?,
        max_queued_bytes: size(schema::MAX_QUEUED_BYTES, defaults.max_queued_bytes)?,
        slow_consumer: options
            .choice("slowConsumer", &SlowConsumerPolicy::NAMES)?
            .and_then(SlowConsumerPolicy::from_name)
            .unwrap_or(defaults.slow_consumer),
        channels: ChannelOptions {
            allow: channels.strings("allow")?,
            history: read_history(env, channels.nested("history", &schema::js_names_under("channels.history"))?)?,
        },
        max_channels_per_connection: size(schema::MAX_CHANNELS_PER_CONNECTION, defaults.max_channels_per_connection)?,
        request_timeout_ms: number(schema::REQUEST_TIMEOUT_MS, defaults.request_timeout_ms)?,
        max_requests_per_connection: size(schema::MAX_REQUESTS_PER_CONNECTION, defaults.max_requests_per_connection)?,
        ack: options.choice("ack", &AckPolicy::NAMES)?.and_then(AckPolicy::from_name).unwrap_or(defaults.ack),
        enable_role_management: options.boolean("enableRoleManagement")?.unwrap_or(defaults.enable_role_management),
        default_conflict_resolution: read_conflict_resolution(&options, "defaultConflictResolution")?
            .unwrap_or(defaults.default_conflict_resolution),
        control_request_timeout_ms: number(schema::CONTROL_REQUEST_TIMEOUT_MS, defaults.control_request_timeout_ms)?,
        max_connections_per_user: size(schema::MAX_CONNECTIONS_PER_USER, defaults.max_connections_per_user)?,
        max_windows_per_user: size(schema::MAX_WINDOWS_PER_USER, defaults.max_windows_per_user)?,
        rate_limit: read_rate_limits(env, &options)?,
        connections_per_minute_per_ip: options.setting(&schema::CONNECTIONS_PER_MINUTE_PER_IP)?.map(|n| n as u32),
        verified_users_only: auth.is_some(),
        history: read_history(env, options.nested("history", &schema::js_names_under("history"))?)?,
        history_max_bytes: size(schema::HISTORY_MAX_BYTES, defaults.history_max_bytes)?,
    };
    config.validate().map_err(|err| type_error(env, err.to_string()))?;
    let native_threads = options.setting(&schema::THREADS)?.map(|n| n as usize);
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
        expires_in_ms: options.count("expiresIn", schema::MS.max)?,
        metadata: options.json("metadata")?,
        max_clients: options.positive_integer("maxClients", schema::COUNT.max)?.map(|n| n as usize),
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
