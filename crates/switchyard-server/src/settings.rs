//! The embedding's settings read from option objects: the relay's [`Config`] and what a
//! host applies beside it (token auth, a cluster's Redis, compression, threads), a
//! session's options and a connection's identity. Names and bounds are the option
//! schema's ([`switchyard_core::schema`]); the Node addon reads its calls' arguments with
//! these, through its JavaScript [`Source`].

use switchyard_core::schema::{self, Setting};
use switchyard_core::{
    close_code, AckPolicy, ChannelOptions, Config, ConflictResolution, Decides, TokenExpiry, HistoryConfig, Identity, Position, Rate, RateLimits, SessionOptions,
    SlowConsumerPolicy,
};
#[cfg(not(target_family = "wasm"))]
use switchyard_redis::RedisOptions;

use crate::admission::TokenAuth;
use crate::auth::{self, JwtConfig, Keys, Verifier};
use crate::deflate::CompressionConfig;
use crate::options::{Given, Options, Source};
#[cfg(not(target_family = "wasm"))]
use crate::proxy::ProxyOptions;
#[cfg(not(target_family = "wasm"))]
use crate::webhooks::WebhookOptions;

const SESSION_OPTIONS: [&str; 6] = ["sessionId", "expiresIn", "metadata", "maxClients", "conflictResolution", "history"];
const HISTORY_OPTIONS: [&str; 2] = ["size", "ttlMs"];
const RATE_OPTIONS: [&str; 2] = ["messagesPerSecond", "burst"];
/// The fields of an identity, as an app's `authenticate` returns it.
pub const IDENTITY_OPTIONS: [&str; 5] = ["userId", "organizationId", "clientId", "metadata", "rateLimit"];

/// Publications one history read returns unless asked for another number.
pub const HISTORY_PAGE: usize = 100;
/// The most publications one history read may ask for.
pub const MAX_HISTORY_PAGE: usize = 1000;
/// How long a stopping host waits for close handshakes unless told otherwise.
pub const STOP_TIMEOUT_MS: u64 = 5000;

/// Everything a host's config sets.
pub struct Settings {
    /// The relay's config, validated.
    pub config: Config,
    /// Token auth, when `auth` is given.
    pub auth: Option<TokenAuth>,
    /// The cluster's Redis, when `redis` is given; `None` for a node alone.
    #[cfg(not(target_family = "wasm"))]
    pub redis: Option<RedisOptions>,
    /// permessage-deflate in the native transport.
    pub compression: Option<CompressionConfig>,
    /// Threads of the native transport; `None`: one per CPU this process may use.
    pub native_threads: Option<usize>,
    /// The hooks the app gave (`hooks`): which questions it answers.
    pub hooks: Decides,
    /// Where lifecycle events are POSTed (`webhooks`).
    #[cfg(not(target_family = "wasm"))]
    pub webhooks: Option<WebhookOptions>,
    /// The app's backend, asked over HTTP (`proxy`).
    #[cfg(not(target_family = "wasm"))]
    pub proxy: Option<ProxyOptions>,
}

/// The config under `schema`'s names (`new RelaySessionManager(config)`).
pub fn read_settings<S: Source>(source: S, given: Option<Given<S::Object>>) -> Result<Settings, S::Error> {
    let options = Options::new(source, given, "config", &schema::js_names_under(""))?;
    let compression = read_compression(&options)?;
    let defaults = Config::default();
    let number = |setting: Setting, default: u64| -> Result<u64, S::Error> { Ok(options.setting(&setting)?.unwrap_or(default)) };
    let size = |setting: Setting, default: usize| -> Result<usize, S::Error> { Ok(options.setting(&setting)?.map_or(default, |n| n as usize)) };
    let auth = read_auth(&options)?;
    let channels = nested(&options, "channels")?;
    let hooks = nested(&options, "hooks")?;
    let hooks = Decides { join: hooks.function("joinChannel")?, publish: hooks.function("publish")? };
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
        channels: ChannelOptions { allow: channels.strings("allow")?, history: read_history(nested(&channels, "channels.history")?)? },
        max_channels_per_connection: size(schema::MAX_CHANNELS_PER_CONNECTION, defaults.max_channels_per_connection)?,
        request_timeout_ms: number(schema::REQUEST_TIMEOUT_MS, defaults.request_timeout_ms)?,
        hook_timeout_ms: number(schema::HOOK_TIMEOUT_MS, defaults.hook_timeout_ms)?,
        max_requests_per_connection: size(schema::MAX_REQUESTS_PER_CONNECTION, defaults.max_requests_per_connection)?,
        ack: options.choice("ack", &AckPolicy::NAMES)?.and_then(AckPolicy::from_name).unwrap_or(defaults.ack),
        enable_role_management: options.boolean("enableRoleManagement")?.unwrap_or(defaults.enable_role_management),
        default_conflict_resolution: read_conflict_resolution(&options, "defaultConflictResolution")?
            .unwrap_or(defaults.default_conflict_resolution),
        control_request_timeout_ms: number(schema::CONTROL_REQUEST_TIMEOUT_MS, defaults.control_request_timeout_ms)?,
        max_connections_per_user: size(schema::MAX_CONNECTIONS_PER_USER, defaults.max_connections_per_user)?,
        max_windows_per_user: size(schema::MAX_WINDOWS_PER_USER, defaults.max_windows_per_user)?,
        rate_limit: read_rate_limits(&options)?,
        connections_per_minute_per_ip: options.setting(&schema::CONNECTIONS_PER_MINUTE_PER_IP)?.map(|n| n as u32),
        verified_users_only: auth.is_some(),
        token_expiry: auth.as_ref().and_then(|auth| auth.expiry),
        history: read_history(nested(&options, "history")?)?,
        history_max_bytes: size(schema::HISTORY_MAX_BYTES, defaults.history_max_bytes)?,
    };
    config.validate().map_err(|err| options.refuse(err.to_string()))?;
    #[cfg(not(target_family = "wasm"))]
    let config_timeout = config.hook_timeout_ms;
    #[cfg(target_family = "wasm")]
    if options.has("redis")? {
        return Err(options.refuse(
            "Clusters (the redis option) are not available in the WebAssembly build of switchyard: they need a platform with a native package".into(),
        ));
    }
    #[cfg(target_family = "wasm")]
    if options.has("webhooks")? || options.has("proxy")? {
        return Err(options.refuse("Webhooks and the backend proxy are not available in the WebAssembly build of switchyard: they need a platform with a native package".into()));
    }
    Ok(Settings {
        #[cfg(not(target_family = "wasm"))]
        redis: read_redis(&options, &config)?,
        config,
        auth,
        compression,
        native_threads: options.setting(&schema::THREADS)?.map(|n| n as usize),
        hooks,
        #[cfg(not(target_family = "wasm"))]
        webhooks: read_webhooks(&options)?,
        #[cfg(not(target_family = "wasm"))]
        proxy: read_proxy(&options, hooks, config_timeout)?,
    })
}

/// `proxy: { joinUrl?, publishUrl?, requestUrl? }`: decisions asked of the app's backend
/// over HTTP, each within `hookTimeoutMs`; a decision a JavaScript hook makes cannot be.
#[cfg(not(target_family = "wasm"))]
fn read_proxy<S: Source>(options: &Options<S>, hooks: Decides, timeout_ms: u64) -> Result<Option<ProxyOptions>, S::Error> {
    if !options.has("proxy")? {
        return Ok(None);
    }
    let proxy = nested(options, "proxy")?;
    let url = |name: &'static str, js: &str| -> Result<Option<hyper::Uri>, S::Error> {
        proxy.string(js)?.map(|url| ProxyOptions::url(name, &url)).transpose().map_err(|err| options.refuse(err.to_string()))
    };
    let read = ProxyOptions {
        join: url("proxy.joinUrl", "joinUrl")?,
        publish: url("proxy.publishUrl", "publishUrl")?,
        request: url("proxy.requestUrl", "requestUrl")?,
        timeout: std::time::Duration::from_millis(timeout_ms),
        ..ProxyOptions::default()
    };
    if (read.join.is_some() && hooks.join) || (read.publish.is_some() && hooks.publish) {
        return Err(options.refuse("proxy: a decision is made by a hook or by the backend, not both (hooks.joinChannel with proxy.joinUrl, or hooks.publish with proxy.publishUrl)".into()));
    }
    Ok(read.is_on().then_some(read))
}

/// `webhooks: { url, secret, events?, maxAgeMs? }`.
#[cfg(not(target_family = "wasm"))]
fn read_webhooks<S: Source>(options: &Options<S>) -> Result<Option<WebhookOptions>, S::Error> {
    if !options.has("webhooks")? {
        return Ok(None);
    }
    let webhooks = nested(options, "webhooks")?;
    let url = webhooks.string("url")?.ok_or_else(|| options.refuse("webhooks.url is needed: the http:// endpoint events are POSTed to".into()))?;
    let max_age = webhooks.setting(&schema::WEBHOOK_MAX_AGE_MS)?.unwrap_or(schema::WEBHOOK_MAX_AGE_MS.default.number());
    WebhookOptions::new(&url, webhooks.string("secret")?, webhooks.strings("events")?, std::time::Duration::from_millis(max_age))
        .map(Some)
        .map_err(|err| options.refuse(err.to_string()))
}

/// The object at `path` of the config, with the names the schema has under it.
fn nested<S: Source>(options: &Options<S>, path: &str) -> Result<Options<S>, S::Error> {
    let name = path.rsplit('.').next().unwrap_or(path);
    options.nested(name, &schema::js_names_under(path))
}

/// `nativeCompression: true` or `{ threshold }`: the native transport negotiates
/// permessage-deflate with clients that offer it.
fn read_compression<S: Source>(options: &Options<S>) -> Result<Option<CompressionConfig>, S::Error> {
    match options.get("nativeCompression")? {
        None | Some(Given::Bool(false)) => Ok(None),
        Some(Given::Bool(true)) => Ok(Some(CompressionConfig::default())),
        Some(Given::Object(_)) => {
            let compression = nested(options, "nativeCompression")?;
            let threshold = compression.setting(&schema::COMPRESSION_THRESHOLD)?.map_or(CompressionConfig::DEFAULT_THRESHOLD, |n| n as usize);
            Ok(Some(CompressionConfig { threshold }))
        }
        Some(_) => Err(options.refuse("nativeCompression must be true, false or { threshold }, the fewest payload bytes worth compressing".into())),
    }
}

/// `redis: { url | cluster, keyPrefix, nodeId }`: this manager is a node of a cluster. A node
/// silent for `heartbeatTimeoutMs` is gone: its lease lasts half of it.
#[cfg(not(target_family = "wasm"))]
fn read_redis<S: Source>(options: &Options<S>, config: &Config) -> Result<Option<RedisOptions>, S::Error> {
    if !options.has("redis")? {
        return Ok(None);
    }
    let redis = nested(options, "redis")?;
    let urls = match (redis.string("url")?, redis.strings("cluster")?) {
        (Some(url), None) => vec![url],
        (None, Some(nodes)) if !nodes.is_empty() => nodes,
        (Some(_), Some(_)) => return Err(options.refuse("redis takes a url or a cluster, not both".into())),
        _ => {
            return Err(options.refuse(
                "redis needs a url, such as { url: 'redis://127.0.0.1:6379' }, or a cluster's nodes, such as { cluster: ['redis://127.0.0.1:7000', 'redis://127.0.0.1:7001'] }"
                    .into(),
            ))
        }
    };
    Ok(Some(RedisOptions {
        urls,
        prefix: redis.string("keyPrefix")?.unwrap_or_else(|| RedisOptions::DEFAULT_PREFIX.into()),
        node_id: redis.string("nodeId")?.unwrap_or_else(RedisOptions::default_node_id),
        lease_ms: config.heartbeat_timeout_ms / 2,
        timeout: std::time::Duration::from_millis(redis.setting(&schema::REDIS_TIMEOUT_MS)?.unwrap_or(schema::REDIS_TIMEOUT_MS.default.number())),
        max_queued: redis.setting(&schema::REDIS_MAX_QUEUED)?.unwrap_or(schema::REDIS_MAX_QUEUED.default.number()) as usize,
    }))
}

/// `{ size, ttlMs }`, both required: a stream's bounds.
fn read_history<S: Source>(history: Options<S>) -> Result<Option<HistoryConfig>, S::Error> {
    match (history.setting(&schema::HISTORY_SIZE)?, history.setting(&schema::HISTORY_TTL_MS)?) {
        (Some(size), Some(ttl_ms)) => Ok(Some(HistoryConfig { size: size as usize, ttl_ms })),
        (None, None) => Ok(None),
        _ => Err(history.refuse("history needs both size and ttlMs, such as { size: 100, ttlMs: 300000 }".into())),
    }
}

/// `{ messagesPerSecond, burst }`, both required.
fn read_rate<S: Source>(rate: Options<S>, what: &str) -> Result<Option<Rate>, S::Error> {
    match (rate.positive_number("messagesPerSecond")?, rate.positive_number("burst")?) {
        (Some(per_second), Some(burst)) => Ok(Some(Rate { per_second, burst })),
        (None, None) => Ok(None),
        _ => Err(rate.refuse(format!("{what} needs both messagesPerSecond and burst"))),
    }
}

fn read_rate_limits<S: Source>(options: &Options<S>) -> Result<Option<RateLimits>, S::Error> {
    if !options.has("rateLimit")? {
        return Ok(None);
    }
    let limits = nested(options, "rateLimit")?;
    let per_user = read_rate(nested(&limits, "rateLimit.perUser")?, "rateLimit.perUser")?;
    let max_violations = limits.setting(&schema::MAX_VIOLATIONS)?.unwrap_or(schema::MAX_VIOLATIONS.default.number()) as u32;
    let Some(per_connection) = read_rate(limits, "rateLimit")? else {
        return Err(options.refuse("rateLimit needs messagesPerSecond and burst".into()));
    };
    Ok(Some(RateLimits { per_connection, per_user, max_violations }))
}

/// `auth: { jwt: { secret | publicKey | jwks, ... }, required }`.
fn read_auth<S: Source>(options: &Options<S>) -> Result<Option<TokenAuth>, S::Error> {
    if !options.has("auth")? {
        return Ok(None);
    }
    let auth = nested(options, "auth")?;
    let jwt = nested(&auth, "auth.jwt")?;
    let refused = |message: String| options.refuse(format!("auth.jwt: {message}"));
    let keys = match (jwt.string("secret")?, jwt.string("publicKey")?, jwt.has("jwks")?) {
        (Some(secret), None, false) => Keys::Secret(secret.into_bytes()),
        (None, Some(pem), false) => Keys::PublicKeyPem(pem.into_bytes()),
        (None, None, true) => {
            let document = match jwt.get("jwks")? {
                Some(Given::Text(path)) => {
                    let text = std::fs::read_to_string(&path).map_err(|err| refused(format!("cannot read the JWKS file {path:?}: {err}")))?;
                    serde_json::from_str(&text).map_err(|err| refused(format!("{path:?} is not JSON: {err}")))?
                }
                _ => jwt.json("jwks")?.unwrap_or_default(),
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
        .collect::<Result<Vec<_>, _>>()
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
    let leeway_ms = config.leeway_seconds.saturating_mul(1000);
    let verifier = Verifier::new(config).map_err(refused)?;
    let required = auth.boolean("required")?.unwrap_or(schema::AUTH_REQUIRED.default.boolean());
    let enforce = jwt.boolean("enforceExpiry")?.unwrap_or(schema::JWT_ENFORCE_EXPIRY.default.boolean());
    let refresh_window_ms = jwt.setting(&schema::JWT_REFRESH_WINDOW_MS)?.unwrap_or(schema::JWT_REFRESH_WINDOW_MS.default.number());
    let expiry = enforce.then_some(TokenExpiry { refresh_window_ms, leeway_ms });
    Ok(Some(TokenAuth { verifier, required, expiry }))
}

fn read_conflict_resolution<S: Source>(options: &Options<S>, name: &str) -> Result<Option<ConflictResolution>, S::Error> {
    Ok(options.choice(name, &ConflictResolution::NAMES)?.and_then(ConflictResolution::from_name))
}

/// `createSession`'s options.
pub fn read_session_options<S: Source>(source: S, given: Option<Given<S::Object>>) -> Result<SessionOptions, S::Error> {
    let options = Options::new(source, given, "options", &SESSION_OPTIONS)?;
    Ok(SessionOptions {
        session_id: options.string("sessionId")?,
        // 0, as in the original, means `sessionTimeoutMs`.
        expires_in_ms: options.count("expiresIn", schema::MS.max)?,
        metadata: options.json("metadata")?,
        max_clients: options.positive_integer("maxClients", schema::COUNT.max)?.map(|n| n as usize),
        conflict_resolution: read_conflict_resolution(&options, "conflictResolution")?,
        history: read_history(options.nested("history", &HISTORY_OPTIONS)?)?,
    })
}

/// A connection's identity, from an object that has [`IDENTITY_OPTIONS`] (and maybe more).
pub fn read_identity<S: Source>(options: &Options<S>) -> Result<Identity, S::Error> {
    Ok(Identity {
        user_id: options.string("userId")?,
        organization_id: options.string("organizationId")?,
        client_id: options.string("clientId")?,
        metadata: options.json("metadata")?,
        rate_limit: read_rate(options.nested("rateLimit", &RATE_OPTIONS)?, "rateLimit")?,
        resume: Default::default(),
        expires_at: None,
    })
}

/// `{ since?, limit? }` of a history read: the position after which to read, and how many.
pub fn read_history_read<S: Source>(source: S, given: Option<Given<S::Object>>) -> Result<(Option<Position>, usize), S::Error> {
    let options = Options::new(source, given, "options", &["since", "limit"])?;
    let since = match options.string("since")? {
        Some(text) => Some(Position::parse(&text).ok_or_else(|| options.refuse(format!("since {text:?} is not <epoch>:<offset>")))?),
        None => None,
    };
    let limit = options.positive_integer("limit", MAX_HISTORY_PAGE as u64)?.map_or(HISTORY_PAGE, |n| n as usize);
    Ok((since, limit))
}

/// How a host is asked to stop: the close its connections get, and how long it waits for
/// their close handshakes before it drops what is left.
pub struct Stop {
    /// The close code the connections get.
    pub code: u16,
    /// The close reason they get, at most 123 bytes.
    pub reason: String,
    /// How long to wait for their close handshakes, in milliseconds.
    pub timeout_ms: u64,
}

/// `{ code, reason, timeoutMs }`: by default 1001 "Server shutting down" (1012 says
/// "Service restart"), within 5000 ms and at most `max_timeout_ms`.
pub fn read_stop<S: Source>(source: S, given: Option<Given<S::Object>>, max_timeout_ms: u64) -> Result<Stop, S::Error> {
    let options = Options::new(source, given, "options", &["code", "reason", "timeoutMs"])?;
    let code = match options.positive_integer("code", 4999)? {
        None => close_code::GOING_AWAY,
        Some(code) if close_code::may_be_sent(code as u16) => code as u16,
        Some(code) => return Err(options.refuse(format!("code {code} cannot be sent in a close frame"))),
    };
    let default_reason = match code {
        close_code::GOING_AWAY => "Server shutting down",
        1012 => "Service restart",
        _ => "",
    };
    let reason = options.string("reason")?.unwrap_or_else(|| default_reason.into());
    if reason.len() > 123 {
        return Err(options.refuse("reason must be at most 123 bytes of UTF-8".into()));
    }
    let timeout_ms = options.positive_integer("timeoutMs", max_timeout_ms)?.unwrap_or(STOP_TIMEOUT_MS);
    Ok(Stop { code, reason, timeout_ms })
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Map, Value};

    use super::*;

    /// JSON as a source of options, as a config file would be.
    #[derive(Clone, Copy)]
    struct Json;

    fn given(value: &Value) -> Given<Map<String, Value>> {
        match value {
            Value::Null => Given::Null,
            Value::Bool(b) => Given::Bool(*b),
            Value::Number(n) => Given::Number(n.as_f64().unwrap_or(f64::NAN)),
            Value::String(s) => Given::Text(s.clone()),
            Value::Array(items) => Given::List(items.iter().map(given).collect()),
            Value::Object(map) => Given::Object(map.clone()),
        }
    }

    impl Source for Json {
        type Object = Map<String, Value>;
        type Error = String;
        fn keys(&self, object: &Self::Object) -> Result<Vec<String>, String> {
            Ok(object.keys().cloned().collect())
        }
        fn get(&self, object: &Self::Object, name: &str) -> Result<Option<Given<Self::Object>>, String> {
            Ok(object.get(name).map(given))
        }
        fn json(&self, object: &Self::Object, name: &str) -> Result<Option<Value>, String> {
            Ok(object.get(name).cloned())
        }
        fn refuse(&self, message: String) -> String {
            message
        }
    }

    fn settings(config: Value) -> Result<Settings, String> {
        read_settings(Json, Some(given(&config)))
    }

    #[test]
    fn a_config_sets_the_relay_and_what_the_host_applies() {
        let read = settings(json!({
            "maxClientsPerSession": 5,
            "rateLimit": { "messagesPerSecond": 2.5, "burst": 10, "perUser": { "messagesPerSecond": 1, "burst": 2 } },
            "channels": { "allow": ["room:*"], "history": { "size": 10, "ttlMs": 1000 } },
            "nativeCompression": { "threshold": 64 },
            "slowConsumer": "drop",
        }))
        .unwrap();
        assert_eq!(read.config.max_clients_per_session, 5);
        let limits = read.config.rate_limit.unwrap();
        assert_eq!((limits.per_connection.per_second, limits.per_user.map(|r| r.burst)), (2.5, Some(2.0)));
        assert_eq!(read.config.channels.allow, Some(vec!["room:*".to_owned()]));
        assert_eq!(read.config.channels.history.map(|h| h.size), Some(10));
        assert_eq!(read.compression.map(|c| c.threshold), Some(64));
        assert_eq!(read.config.max_sessions, Config::default().max_sessions);
    }

    #[test]
    fn a_bad_option_is_refused_by_name() {
        let refused = |config| settings(config).err().unwrap();
        assert!(refused(json!({ "maxSesions": 1 })).starts_with("unknown option \"maxSesions\" in config; expected one of: "));
        assert_eq!(refused(json!({ "pingIntervalMs": "30000" })), "pingIntervalMs must be a whole number from 1 to 2147483647, got \"30000\" (a string)");
        assert_eq!(refused(json!({ "maxSessions": 1.5 })), "maxSessions must be a whole number from 1 to 4294967295, got 1.5");
        assert_eq!(refused(json!({ "history": { "size": 3 } })), "history needs both size and ttlMs, such as { size: 100, ttlMs: 300000 }");
        assert_eq!(refused(json!({ "channels": { "allow": ["a", 1] } })), "allow must be an array of strings, got an array");
        assert_eq!(refused(json!({ "ack": "sometimes" })), "ack must be one of \"requested\" or \"always\" or \"never\", got \"sometimes\"");
        assert_eq!(refused(json!([])), "config must be an object, got an array");
    }

    #[test]
    fn stop_defaults_to_going_away_and_refuses_what_a_close_frame_cannot_carry() {
        let stop = read_stop(Json, None, 10_000).unwrap();
        assert_eq!((stop.code, stop.reason.as_str(), stop.timeout_ms), (1001, "Server shutting down", STOP_TIMEOUT_MS));
        let stop = read_stop(Json, Some(given(&json!({ "code": 1012 }))), 10_000).unwrap();
        assert_eq!(stop.reason, "Service restart");
        assert_eq!(read_stop(Json, Some(given(&json!({ "code": 1005 }))), 10_000).err().unwrap(), "code 1005 cannot be sent in a close frame");
    }
}
