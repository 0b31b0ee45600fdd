//! The command line: flags, their environment variables and defaults, as the awareness
//! service this binary replaces had them (`-p -h -t -c -m`), plus the relay's own options.
//! Each flag is a setting of the option schema (`switchyard_core::schema`), and a test
//! below checks them against it: names, environment variables, defaults and bounds.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use switchyard_core::{AckPolicy, ChannelOptions, Config, ConflictResolution, HistoryConfig, Rate, RateLimits, SlowConsumerPolicy, TokenExpiry};
use switchyard_redis::RedisOptions;
use switchyard_server::admission::TokenAuth;
use switchyard_server::auth::{self, JwtConfig, Keys, Verifier};
use switchyard_server::deflate::CompressionConfig;
use switchyard_server::proxy::{ProxyConfigError, ProxyOptions};
use switchyard_server::webhooks::{WebhookConfigError, WebhookOptions};

/// A positive whole number of milliseconds or bytes.
type Positive = std::num::NonZeroU64;

#[derive(Parser, Debug)]
#[command(
    name = "switchyard",
    version,
    about = "Switchyard: a WebSocket session relay with an HTTP API",
    long_about = "Switchyard: a WebSocket session relay with an HTTP API.\n\n\
        WebSockets: /session/<id> joins a session (created with POST /v1/sessions); / is a\n\
        sessionless connection. HTTP: GET /health, GET /ready, GET /stats, GET /metrics\n\
        (Prometheus), POST /v1/sessions, GET /v1/sessions, GET|DELETE /v1/sessions/<id>,\n\
        POST /v1/broadcast.\n\n\
        Every flag can also be set by the environment variable shown, and by a key of the\n\
        --config file (the flag's name with _ for -): flags first, then the environment,\n\
        then the file. `switchyard config --help` and `switchyard token --help` for the\n\
        subcommands.",
    disable_help_flag = true
)]
pub struct Args {
    /// Port to listen on.
    #[arg(short, long, env = "PORT", default_value_t = 8765)]
    pub port: u16,

    /// Address to bind to (-h, as the awareness service had it; help is --help).
    #[arg(short = 'h', long, env = "HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,

    /// Milliseconds of silence (no pong, no message) after which a connection is closed
    /// with 1001.
    #[arg(short = 't', long, env = "HEARTBEAT_TIMEOUT", default_value = "60000", value_name = "MS")]
    pub heartbeat_timeout: Positive,

    /// Milliseconds between removals of expired sessions.
    #[arg(short = 'c', long, env = "CLEANUP_INTERVAL", default_value = "30000", value_name = "MS")]
    pub cleanup_interval: Positive,

    /// Connections one user may hold; the next gets CONNECTION_LIMIT and is closed with 1008.
    #[arg(short = 'm', long = "max-connections", env = "MAX_CONNECTIONS", default_value = "10", value_name = "N")]
    pub max_connections: Positive,

    /// Milliseconds between WebSocket pings to each connection.
    #[arg(long, env = "PING_INTERVAL", default_value = "30000", value_name = "MS")]
    pub ping_interval: Positive,

    /// Lifetime of a session, in milliseconds, unless created with its own expiresIn.
    #[arg(long, env = "SESSION_TIMEOUT", default_value = "1800000", value_name = "MS")]
    pub session_timeout: Positive,

    /// How long a connection may take to send its HTTP request (a WebSocket handshake or
    /// an API call); a slower one is closed.
    #[arg(long, env = "HANDSHAKE_TIMEOUT", default_value = "10000", value_name = "MS")]
    pub handshake_timeout: Positive,

    /// Connections that may wait for their handshake at once; more are closed at once.
    #[arg(long, env = "MAX_PENDING_HANDSHAKES", default_value = "4096", value_name = "N")]
    pub max_pending_handshakes: Positive,

    /// Connections one address may have waiting for their handshake at once.
    #[arg(long, env = "MAX_PENDING_HANDSHAKES_PER_IP", default_value = "256", value_name = "N")]
    pub max_pending_handshakes_per_ip: Positive,

    /// Milliseconds a stopping server waits for its connections to finish closing before it
    /// drops them.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "4500", value_name = "MS")]
    pub shutdown_timeout: Positive,

    /// Milliseconds a stopping server drains: /ready answers 503 and new connections are
    /// refused at once, and open ones are closed with 1012 spread over this time, so that
    /// they reconnect to other nodes a few at a time. A second signal ends it early.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value_t = 0, value_name = "MS")]
    pub shutdown_grace: u64,

    /// PEM file of the certificate chain to serve TLS with (wss://, https://), with
    /// --tls-key; SIGHUP reads both again.
    #[arg(long, env = "TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM file of the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// TOML file of settings: every flag a key, with _ for - (`switchyard config init`
    /// writes one); the environment and flags override it.
    #[arg(long, env = "SWITCHYARD_CONFIG", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,

    /// An unknown key in the config file stops the server (exit 2) instead of a warning.
    #[arg(long, env = "SWITCHYARD_STRICT")]
    pub strict: bool,

    /// Connections the kernel may hold for the server to accept (the listen backlog; the
    /// kernel caps it at net.core.somaxconn).
    #[arg(long, env = "LISTEN_BACKLOG", default_value = "4096", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub listen_backlog: u32,

    /// Sessions that may exist at once; POST /v1/sessions answers 503 past it.
    #[arg(long, env = "MAX_SESSIONS", default_value = "100000", value_name = "N")]
    pub max_sessions: Positive,

    /// Publications each session's stream keeps, for clients recovering after a reconnect
    /// and for GET /v1/sessions/{id}/history; 0 keeps none.
    #[arg(long, env = "HISTORY_SIZE", default_value = "0", value_name = "N", value_parser = clap::value_parser!(u64).range(0..=100_000))]
    pub history_size: u64,

    /// Milliseconds each kept publication is kept.
    #[arg(long, env = "HISTORY_TTL", default_value = "300000", value_name = "MS")]
    pub history_ttl: Positive,

    /// Bytes all session streams may keep together; the oldest publications go first past it.
    #[arg(long, env = "HISTORY_MAX_BYTES", default_value = "67108864", value_name = "BYTES")]
    pub history_max_bytes: Positive,

    /// Publications each channel's stream keeps, for members joining with positions or
    /// since and for GET /v1/channels/{name}/history; 0 keeps none.
    #[arg(long, env = "CHANNEL_HISTORY_SIZE", default_value = "0", value_name = "N", value_parser = clap::value_parser!(u64).range(0..=100_000))]
    pub channel_history_size: u64,

    /// Milliseconds each kept channel publication is kept.
    #[arg(long, env = "CHANNEL_HISTORY_TTL", default_value = "300000", value_name = "MS")]
    pub channel_history_ttl: Positive,

    /// Connections one session admits.
    #[arg(long, env = "MAX_CLIENTS_PER_SESSION", default_value = "2", value_name = "N")]
    pub max_clients_per_session: Positive,

    /// Redis (or Valkey) shared by the nodes of a cluster, e.g. redis://127.0.0.1:6379:
    /// any node then serves any session. A Redis Cluster as
    /// redis+cluster://host:port,host:port,..., or this flag once for each of its nodes.
    /// Without it the server is one process alone.
    #[arg(long, env = "REDIS_URL", value_name = "URL")]
    pub redis_url: Vec<String>,

    /// Put before every Redis key and channel, so clusters can share one Redis.
    #[arg(long, env = "REDIS_PREFIX", default_value = "switchyard:", value_name = "PREFIX")]
    pub redis_prefix: String,

    /// This node's name in the cluster (default: host, process id and a random suffix).
    #[arg(long, env = "NODE_ID", value_name = "ID")]
    pub node_id: Option<String>,

    /// Milliseconds connecting to Redis, or an answer from it, may take before the link
    /// counts it lost and reconnects.
    #[arg(long, env = "REDIS_TIMEOUT", default_value = "2000", value_name = "MS")]
    pub redis_timeout: Positive,

    /// Messages for other nodes that may wait for the link to Redis; more are dropped.
    #[arg(long, env = "REDIS_MAX_QUEUED", default_value = "65536", value_name = "N")]
    pub redis_max_queued: Positive,

    /// Largest message accepted; a larger one closes its connection with 1009.
    #[arg(long, env = "MAX_MESSAGE_BYTES", default_value = "1048576", value_name = "BYTES")]
    pub max_message_bytes: Positive,

    /// Bound of each connection's outgoing queue.
    #[arg(long, env = "MAX_QUEUED_BYTES", default_value = "1048576", value_name = "BYTES")]
    pub max_queued_bytes: Positive,

    /// What to do with a connection whose queue is full: close it with 1013, or drop
    /// messages for it.
    #[arg(long, env = "SLOW_CONSUMER", default_value = "close", value_parser = SlowConsumerPolicy::NAMES)]
    pub slow_consumer: String,

    /// Milliseconds a `request` waits for an answer before REQUEST_TIMEOUT (the server
    /// has no request handler: requests are answered NO_HANDLER).
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "30000", value_name = "MS")]
    pub request_timeout: Positive,

    /// Milliseconds a backend proxy call may take before its join or message is refused
    /// UNAVAILABLE.
    #[arg(long, env = "PROXY_TIMEOUT", default_value = "3000", value_name = "MS")]
    pub proxy_timeout: Positive,

    /// The backend asked who each upgrading connection is (POST of JSON; http://).
    #[arg(long, env = "PROXY_CONNECT_URL", value_name = "URL")]
    pub proxy_connect_url: Option<String>,

    /// The backend asked before each channel join the channel rules allow.
    #[arg(long, env = "PROXY_JOIN_URL", value_name = "URL")]
    pub proxy_join_url: Option<String>,

    /// The backend asked before each member's message is relayed (allow, refuse, replace).
    #[arg(long, env = "PROXY_PUBLISH_URL", value_name = "URL")]
    pub proxy_publish_url: Option<String>,

    /// The backend that answers `request` messages.
    #[arg(long, env = "PROXY_REQUEST_URL", value_name = "URL")]
    pub proxy_request_url: Option<String>,

    /// The backend asked to renew a connection's lifetime within its refresh window.
    #[arg(long, env = "PROXY_REFRESH_URL", value_name = "URL")]
    pub proxy_refresh_url: Option<String>,

    /// Headers of the upgrade request passed to the connect call; repeat it, or separate
    /// names with commas.
    #[arg(long, env = "PROXY_HEADERS", value_delimiter = ',', default_value = "cookie,authorization", value_name = "NAME")]
    pub proxy_headers: Vec<String>,

    /// Where lifecycle events are POSTed in signed batches (http://).
    #[arg(long, env = "WEBHOOK_URL", value_name = "URL")]
    pub webhook_url: Option<String>,

    /// The HMAC-SHA256 key each batch is signed with (X-Switchyard-Signature).
    #[arg(long, env = "WEBHOOK_SECRET", value_name = "SECRET")]
    pub webhook_secret: Option<String>,

    /// Which events are sent (all six without it); repeat it, or separate names with commas.
    #[arg(long, env = "WEBHOOK_EVENTS", value_delimiter = ',', value_name = "NAME")]
    pub webhook_events: Vec<String>,

    /// Milliseconds an unacknowledged batch is retried before it is dropped and counted.
    #[arg(long, env = "WEBHOOK_MAX_AGE", default_value = "600000", value_name = "MS")]
    pub webhook_max_age: Positive,

    /// Which messages get ACK or NACK: those with a string id and "ack":true, all with
    /// a string id, or none.
    #[arg(long, env = "ACK", default_value = "requested", value_parser = AckPolicy::NAMES)]
    pub ack: String,

    /// Control roles: one active member per session; state_update only from it. On by
    /// default, as in the original RelaySessionManager.
    #[arg(
        long,
        env = "ENABLE_ROLE_MANAGEMENT",
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true",
        value_name = "BOOL"
    )]
    pub enable_role_management: bool,

    /// With role management, what request_control does while another member is active;
    /// a session created with its own conflictResolution uses that instead.
    #[arg(
        long,
        env = "DEFAULT_CONFLICT_RESOLUTION",
        default_value = "first-come-first-served",
        value_parser = ConflictResolution::NAMES
    )]
    pub default_conflict_resolution: String,

    /// How long the active member has to answer a forwarded request_control before the
    /// requester is declined with "timeout".
    #[arg(long, env = "CONTROL_REQUEST_TIMEOUT", default_value = "5000", value_name = "MS")]
    pub control_request_timeout: Positive,

    /// A pattern of channels clients may join ("chat:*", "user:{userId}"); repeat it,
    /// or separate patterns with commas. Without it any valid name may be joined.
    #[arg(long = "channel-allow", env = "CHANNEL_ALLOW", value_delimiter = ',', value_name = "PATTERN")]
    pub channel_allow: Vec<String>,

    /// Channels one connection may be in at once; more joins get CHANNEL_FORBIDDEN.
    #[arg(long, env = "MAX_CHANNELS_PER_CONNECTION", default_value = "256", value_name = "N")]
    pub max_channels_per_connection: Positive,

    /// Requests one connection may have waiting for an answer at once; more get REQUEST_FAILED.
    #[arg(long, env = "MAX_REQUESTS_PER_CONNECTION", default_value = "256", value_name = "N")]
    pub max_requests_per_connection: Positive,

    /// Awareness registrations (windows) one user may hold; a new one past it gets WINDOW_LIMIT.
    #[arg(long, env = "MAX_WINDOWS_PER_USER", default_value = "64", value_name = "N")]
    pub max_windows_per_user: Positive,

    /// Messages per second each connection may send (with --rate-burst); over it messages
    /// are refused with RATE_LIMITED. Off when absent.
    #[arg(long, env = "RATE_LIMIT", value_name = "PER_SECOND", requires = "rate_burst")]
    pub rate_limit: Option<f64>,

    /// Messages a connection may send in a burst above --rate-limit.
    #[arg(long, env = "RATE_BURST", value_name = "N", requires = "rate_limit")]
    pub rate_burst: Option<f64>,

    /// Messages per second one user may send over all its connections (with --user-rate-burst).
    #[arg(long, env = "USER_RATE_LIMIT", value_name = "PER_SECOND", requires_all = ["user_rate_burst", "rate_limit"])]
    pub user_rate_limit: Option<f64>,

    /// The burst above --user-rate-limit.
    #[arg(long, env = "USER_RATE_BURST", value_name = "N", requires = "user_rate_limit")]
    pub user_rate_burst: Option<f64>,

    /// Refused messages tolerated before the connection is closed with 1008.
    #[arg(long, env = "MAX_VIOLATIONS", default_value_t = 10, value_name = "N")]
    pub max_violations: u32,

    /// New connections one address may open per minute; more get HTTP 429.
    #[arg(long, env = "CONNECTIONS_PER_MINUTE_PER_IP", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub connections_per_minute_per_ip: Option<u32>,

    /// HMAC secret of the JWTs clients present (HS256 unless --jwt-algorithms says otherwise).
    #[arg(long, env = "JWT_SECRET", hide_env_values = true, value_name = "SECRET", group = "jwt_key")]
    pub jwt_secret: Option<String>,

    /// PEM file of the public key (RSA, EC or Ed25519) that verifies the JWTs.
    #[arg(long, env = "JWT_PUBLIC_KEY_FILE", value_name = "FILE", group = "jwt_key")]
    pub jwt_public_key: Option<PathBuf>,

    /// JWKS file whose keys verify the JWTs (chosen by the token's kid).
    #[arg(long, env = "JWKS_FILE", value_name = "FILE", group = "jwt_key")]
    pub jwks: Option<PathBuf>,

    /// JWT algorithms accepted (HS256, RS256, ES256, EdDSA, ...), comma-separated.
    #[arg(long, env = "JWT_ALGORITHMS", value_delimiter = ',', value_name = "ALG", value_parser = auth::algorithm)]
    pub jwt_algorithms: Vec<jsonwebtoken::Algorithm>,

    /// The issuer (iss) tokens must have.
    #[arg(long, env = "JWT_ISSUER", value_name = "ISS")]
    pub jwt_issuer: Option<String>,

    /// The audience (aud) tokens must be for.
    #[arg(long, env = "JWT_AUDIENCE", value_name = "AUD")]
    pub jwt_audience: Option<String>,

    /// The claim naming the user.
    #[arg(long, env = "JWT_USER_CLAIM", default_value = "sub", value_name = "CLAIM")]
    pub jwt_user_claim: String,

    /// The claim naming the organization.
    #[arg(long, env = "JWT_ORGANIZATION_CLAIM", value_name = "CLAIM")]
    pub jwt_organization_claim: Option<String>,

    /// Seconds of clock skew allowed on exp and nbf.
    #[arg(long, env = "JWT_LEEWAY", default_value_t = 0, value_name = "SECONDS")]
    pub jwt_leeway: u64,

    /// Milliseconds before its token's exp a connection is sent token_expiring.
    #[arg(long, env = "JWT_REFRESH_WINDOW", default_value = "30000", value_name = "MS")]
    pub jwt_refresh_window: Positive,

    /// Close a connection with 1008 "Token expired" when its token expires unrefreshed
    /// (false: tokens are checked at the upgrade only).
    #[arg(
        long,
        env = "JWT_ENFORCE_EXPIRY",
        default_value = "true",
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true",
        value_name = "BOOL"
    )]
    pub jwt_enforce_expiry: bool,

    /// With a JWT key, let clients without a token in too (those with one must still
    /// present a valid one).
    #[arg(long, env = "AUTH_OPTIONAL")]
    pub auth_optional: bool,

    /// Negotiate permessage-deflate with clients that offer it (browsers do). Each
    /// message is compressed once, whatever its number of recipients.
    #[arg(long, env = "COMPRESSION")]
    pub compression: bool,

    /// With --compression, payloads shorter than this go uncompressed.
    #[arg(long, env = "COMPRESSION_THRESHOLD", default_value_t = CompressionConfig::DEFAULT_THRESHOLD, value_name = "BYTES")]
    pub compression_threshold: usize,

    /// Bearer token the admin endpoints (POST, DELETE) require. Without it they accept
    /// only loopback clients.
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub admin_token: Option<String>,

    /// Worker threads; the number of CPUs this process may use when absent. With one,
    /// a single-threaded runtime: faster on one core than one worker, and fair.
    #[arg(long, env = "SWITCHYARD_THREADS", value_name = "N")]
    pub threads: Option<std::num::NonZeroUsize>,

    /// Print help.
    #[arg(long, action = clap::ArgAction::Help, global = true)]
    pub help: Option<bool>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What the binary does instead of serving.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Write a config file with every setting, or check one.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Make a token signed with the configured key, or check one as the server would.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print a config file holding every setting, each commented out at its default with
    /// what it does.
    Init {
        /// Write it to this file instead (an existing file is left alone).
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Check a config file: its keys, their values and the server they make (TLS files
    /// and JWT keys read); prints what is wrong and exits 2, or says it is fine.
    Check {
        /// The file to check.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Print a JWT for a user, signed with the key configured (--jwt-secret, or --key for a
    /// private key), carrying the issuer, audience and claim names configured.
    Create(TokenCreate),
    /// Verify a token as the server would: prints its claims and who it admits, or why it
    /// is refused (exit 1).
    Check {
        /// The token.
        #[arg(value_name = "TOKEN")]
        token: String,
    },
}

#[derive(clap::Args, Debug)]
pub struct TokenCreate {
    /// The user (the claim --jwt-user-claim names, `sub` by default).
    #[arg(long, value_name = "USER")]
    pub sub: String,
    /// The organization (the claim --jwt-organization-claim names, `org` when unset).
    #[arg(long, value_name = "ORG")]
    pub org: Option<String>,
    /// Make a subscription token for this private channel (its `channel` claim).
    #[arg(long, value_name = "CHANNEL")]
    pub channel: Option<String>,
    /// How long it is valid: 90s, 30m, 1h, 7d.
    #[arg(long, default_value = "1h", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// PEM file of the private key to sign with (RSA, EC or Ed25519), where the server
    /// holds the public key; the algorithm is the first of --jwt-algorithms (RS256 without).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Another claim, NAME=VALUE (VALUE as JSON, or else a string); repeat it.
    #[arg(long = "claim", value_name = "NAME=VALUE")]
    pub claims: Vec<String>,
}

impl Args {
    /// How this node joins a cluster, when `--redis-url` names one. A node silent for the
    /// heartbeat timeout is gone: its lease lasts half of it, renewed every quarter lease.
    pub fn redis_options(&self) -> Option<RedisOptions> {
        if self.redis_url.is_empty() {
            return None;
        }
        Some(RedisOptions {
            urls: self.redis_url.clone(),
            prefix: self.redis_prefix.clone(),
            node_id: self.node_id.clone().unwrap_or_else(RedisOptions::default_node_id),
            lease_ms: self.heartbeat_timeout.get() / 2,
            timeout: Duration::from_millis(self.redis_timeout.get()),
            max_queued: usize::try_from(self.redis_max_queued.get()).unwrap_or(usize::MAX),
        })
    }

    /// permessage-deflate, when `--compression` asks for it.
    pub fn compression(&self) -> Option<CompressionConfig> {
        self.compression.then_some(CompressionConfig { threshold: self.compression_threshold })
    }

    /// The backend proxy's URLs, each checked.
    pub fn proxy_options(&self) -> Result<ProxyOptions, ProxyConfigError> {
        let url = |flag: &'static str, value: &Option<String>| value.as_deref().map(|url| ProxyOptions::url(flag, url)).transpose();
        Ok(ProxyOptions {
            connect: url("--proxy-connect-url", &self.proxy_connect_url)?,
            join: url("--proxy-join-url", &self.proxy_join_url)?,
            publish: url("--proxy-publish-url", &self.proxy_publish_url)?,
            request: url("--proxy-request-url", &self.proxy_request_url)?,
            refresh: url("--proxy-refresh-url", &self.proxy_refresh_url)?,
            timeout: Duration::from_millis(self.proxy_timeout.get()),
            headers: self.proxy_headers.iter().map(|name| name.trim().to_ascii_lowercase()).filter(|name| !name.is_empty()).collect(),
        })
    }

    /// The webhooks, when `--webhook-url` is given.
    pub fn webhook_options(&self) -> Result<Option<WebhookOptions>, WebhookConfigError> {
        let Some(url) = &self.webhook_url else { return Ok(None) };
        let events = (!self.webhook_events.is_empty()).then(|| self.webhook_events.clone());
        WebhookOptions::new(url, self.webhook_secret.clone(), events, Duration::from_millis(self.webhook_max_age.get())).map(Some)
    }

    fn has_jwt_key(&self) -> bool {
        self.jwt_secret.is_some() || self.jwt_public_key.is_some() || self.jwks.is_some()
    }

    /// How tokens' expiry ends connections, unless `--jwt-enforce-expiry false`.
    fn token_expiry(&self) -> Option<TokenExpiry> {
        self.jwt_enforce_expiry.then_some(TokenExpiry { refresh_window_ms: self.jwt_refresh_window.get(), leeway_ms: self.jwt_leeway.saturating_mul(1000) })
    }

    pub fn relay_config(&self) -> Config {
        let ms = |value: Positive| value.get();
        let size = |value: Positive| usize::try_from(value.get()).unwrap_or(usize::MAX);
        Config {
            session_timeout_ms: ms(self.session_timeout),
            max_sessions: size(self.max_sessions),
            max_clients_per_session: size(self.max_clients_per_session),
            ping_interval_ms: ms(self.ping_interval),
            heartbeat_timeout_ms: ms(self.heartbeat_timeout),
            cleanup_interval_ms: ms(self.cleanup_interval),
            max_message_bytes: size(self.max_message_bytes),
            max_queued_bytes: size(self.max_queued_bytes),
            slow_consumer: SlowConsumerPolicy::from_name(&self.slow_consumer).unwrap_or_default(),
            channels: ChannelOptions {
                allow: (!self.channel_allow.is_empty()).then(|| self.channel_allow.clone()),
                history: (self.channel_history_size > 0)
                    .then(|| HistoryConfig { size: self.channel_history_size as usize, ttl_ms: ms(self.channel_history_ttl) }),
            },
            max_channels_per_connection: size(self.max_channels_per_connection),
            request_timeout_ms: ms(self.request_timeout),
            hook_timeout_ms: ms(self.proxy_timeout),
            max_requests_per_connection: size(self.max_requests_per_connection),
            ack: AckPolicy::from_name(&self.ack).unwrap_or_default(),
            enable_role_management: self.enable_role_management,
            default_conflict_resolution: ConflictResolution::from_name(&self.default_conflict_resolution).unwrap_or_default(),
            control_request_timeout_ms: ms(self.control_request_timeout),
            max_connections_per_user: size(self.max_connections),
            max_windows_per_user: size(self.max_windows_per_user),
            rate_limit: self.rate_limit.zip(self.rate_burst).map(|(per_second, burst)| RateLimits {
                per_connection: Rate { per_second, burst },
                per_user: self.user_rate_limit.zip(self.user_rate_burst).map(|(per_second, burst)| Rate { per_second, burst }),
                max_violations: self.max_violations,
            }),
            connections_per_minute_per_ip: self.connections_per_minute_per_ip,
            // Users are whom a token or the backend's connect answer names, never a claim.
            verified_users_only: self.has_jwt_key() || self.proxy_connect_url.is_some(),
            // Lifetimes come from tokens, or from the backend's connect answer.
            token_expiry: (self.has_jwt_key() || self.proxy_connect_url.is_some()).then(|| self.token_expiry()).flatten(),
            history: (self.history_size > 0).then(|| HistoryConfig { size: self.history_size as usize, ttl_ms: ms(self.history_ttl) }),
            history_max_bytes: size(self.history_max_bytes),
        }
    }

    /// The certificate and key to serve TLS with, when both are given.
    pub fn tls_pair(&self) -> Option<switchyard_server::tls::TlsPair> {
        use switchyard_server::tls::{Pem, TlsPair};
        let (cert, key) = (self.tls_cert.clone()?, self.tls_key.clone()?);
        Some(TlsPair { cert: Pem::File(cert), key: Pem::File(key) })
    }

    pub fn handshake_limits(&self) -> switchyard_server::waiting::Limits {
        let count = |value: Positive| usize::try_from(value.get()).unwrap_or(usize::MAX);
        switchyard_server::waiting::Limits {
            deadline: std::time::Duration::from_millis(self.handshake_timeout.get()),
            total: count(self.max_pending_handshakes),
            per_address: count(self.max_pending_handshakes_per_ip),
        }
    }

    /// The token verifier, when a JWT key is given, and whether tokens are required.
    pub fn verifier(&self) -> Result<Option<TokenAuth>, String> {
        let read = |path: &PathBuf| std::fs::read(path).map_err(|err| format!("cannot read {}: {err}", path.display()));
        let keys = if let Some(secret) = &self.jwt_secret {
            Keys::Secret(secret.clone().into_bytes())
        } else if let Some(path) = &self.jwt_public_key {
            Keys::PublicKeyPem(read(path)?)
        } else if let Some(path) = &self.jwks {
            let set = serde_json::from_slice(&read(path)?).map_err(|err| format!("{} is not a JWKS document: {err}", path.display()))?;
            Keys::Jwks(set)
        } else {
            return Ok(None);
        };
        let config = JwtConfig {
            keys,
            algorithms: self.jwt_algorithms.clone(),
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
            user_claim: self.jwt_user_claim.clone(),
            organization_claim: self.jwt_organization_claim.clone(),
            leeway_seconds: self.jwt_leeway,
        };
        Ok(Some(TokenAuth { verifier: Verifier::new(config)?, required: !self.auth_optional, expiry: self.token_expiry() }))
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use clap::{CommandFactory, Parser};
    use switchyard_core::schema::{DefaultValue, Kind, Setting, SETTINGS};

    use super::Args;

    /// Arguments of clap's own, which set nothing.
    const META: [&str; 2] = ["help", "version"];

    fn setting(long: &str) -> &'static Setting {
        SETTINGS
            .iter()
            .find(|s| s.flag.is_some_and(|f| f.long == long))
            .unwrap_or_else(|| panic!("--{long} is not in switchyard_core::schema::SETTINGS"))
    }

    /// The default as clap holds it: the text it parses when the flag is absent.
    fn clap_default(default: DefaultValue) -> Vec<String> {
        match default {
            DefaultValue::Number(n) => vec![n.to_string()],
            DefaultValue::Bool(b) => vec![b.to_string()],
            DefaultValue::Text(text) => vec![text.into()],
            DefaultValue::Unset | DefaultValue::Said(_) => vec![],
        }
    }

    #[test]
    fn every_flag_is_a_setting_with_its_names_and_default() {
        let mut command = Args::command();
        // Building gives each flag the defaults clap adds by itself (`false` for a switch).
        command.build();
        for arg in command.get_arguments().filter(|a| !META.contains(&a.get_id().as_str())) {
            let long = arg.get_long().unwrap_or_else(|| panic!("{} has no long flag", arg.get_id()));
            let setting = setting(long);
            let flag = setting.flag.expect("found by its flag");
            assert_eq!(arg.get_short(), flag.short, "--{long}'s short flag");
            assert_eq!(arg.get_env(), Some(OsStr::new(flag.env)), "--{long}'s environment variable");
            let default: Vec<String> = arg.get_default_values().iter().map(|v| v.to_string_lossy().into_owned()).collect();
            assert_eq!(default, clap_default(setting.binary_default().expect("a flag")), "--{long}'s default");
            if let Kind::Choice(names) = setting.kind {
                let choices: Vec<String> = arg.get_possible_values().iter().map(|v| v.get_name().to_owned()).collect();
                assert_eq!(choices, names, "--{long}'s choices");
            }
        }
    }

    #[test]
    fn every_setting_with_a_flag_is_a_flag() {
        let command = Args::command();
        for flag in SETTINGS.iter().filter_map(|s| s.flag) {
            assert!(command.get_arguments().any(|a| a.get_long() == Some(flag.long)), "--{} is in the schema, not in the binary", flag.long);
        }
    }

    #[test]
    fn whole_number_flags_take_the_bounds_of_the_schema() {
        assert!(Args::try_parse_from(["switchyard"]).is_ok(), "the environment sets a flag to a value it refuses");
        for setting in SETTINGS {
            let (Some(flag), Some(range)) = (setting.flag, setting.binary_range()) else { continue };
            let parses = |n: u128| Args::try_parse_from(["switchyard".into(), format!("--{}", flag.long), n.to_string()]).is_ok();
            assert!(parses(range.min.into()) && parses(range.max.into()), "--{} takes {range:?}", flag.long);
            assert!(range.min == 0 || !parses(u128::from(range.min) - 1), "--{} refuses less than {}", flag.long, range.min);
            assert!(!parses(u128::from(range.max) + 1), "--{} refuses more than {}", flag.long, range.max);
        }
    }
}
