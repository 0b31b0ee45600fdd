//! The command line: flags, their environment variables and defaults, as the awareness
//! service this binary replaces had them (`-p -h -t -c -m`), plus the relay's own options.

use std::net::IpAddr;

use clap::Parser;
use switchyard_core::{AckPolicy, Config, ConflictResolution, SlowConsumerPolicy};

/// A positive whole number of milliseconds or bytes.
type Positive = std::num::NonZeroU64;

#[derive(Parser, Debug)]
#[command(
    name = "switchyard",
    version,
    about = "Switchyard: a WebSocket session relay with an HTTP API",
    long_about = "Switchyard: a WebSocket session relay with an HTTP API.\n\n\
        WebSockets: /session/<id> joins a session (created with POST /v1/sessions); / is a\n\
        sessionless connection. HTTP: GET /health, GET /stats, GET /metrics (Prometheus),\n\
        POST /v1/sessions, GET /v1/sessions, GET|DELETE /v1/sessions/<id>, POST /v1/broadcast.\n\
        Every flag can also be set by the environment variable shown.",
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

    /// Connections one session admits.
    #[arg(long, env = "MAX_CLIENTS_PER_SESSION", default_value = "10", value_name = "N")]
    pub max_clients_per_session: Positive,

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

    /// Which messages get ACK or NACK: those with a string id and "ack":true, all with
    /// a string id, or none.
    #[arg(long, env = "ACK", default_value = "requested", value_parser = AckPolicy::NAMES)]
    pub ack: String,

    /// Control roles: one active member per session; state_update only from it.
    #[arg(long, env = "ENABLE_ROLE_MANAGEMENT")]
    pub enable_role_management: bool,

    /// With role management, what request_control does while another member is active.
    #[arg(long, env = "CONFLICT_RESOLUTION", default_value = "ask-active", value_parser = ConflictResolution::NAMES)]
    pub conflict_resolution: String,

    /// A pattern of channels clients may join ("chat:*", "user:{userId}"); repeat it,
    /// or separate patterns with commas. Without it any valid name may be joined.
    #[arg(long = "channel-allow", env = "CHANNEL_ALLOW", value_delimiter = ',', value_name = "PATTERN")]
    pub channel_allow: Vec<String>,

    /// Bearer token the admin endpoints (POST, DELETE) require. Without it they accept
    /// only loopback clients.
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub admin_token: Option<String>,

    /// Worker threads; the number of CPUs this process may use when absent.
    #[arg(long, env = "SWITCHYARD_THREADS", value_name = "N")]
    pub threads: Option<std::num::NonZeroUsize>,

    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
}

impl Args {
    pub fn relay_config(&self) -> Config {
        let ms = |value: Positive| value.get();
        let size = |value: Positive| usize::try_from(value.get()).unwrap_or(usize::MAX);
        Config {
            session_timeout_ms: ms(self.session_timeout),
            max_clients_per_session: size(self.max_clients_per_session),
            ping_interval_ms: ms(self.ping_interval),
            heartbeat_timeout_ms: ms(self.heartbeat_timeout),
            cleanup_interval_ms: ms(self.cleanup_interval),
            max_message_bytes: size(self.max_message_bytes),
            max_queued_bytes: size(self.max_queued_bytes),
            slow_consumer: SlowConsumerPolicy::from_name(&self.slow_consumer).unwrap_or_default(),
            channel_allow: (!self.channel_allow.is_empty()).then(|| self.channel_allow.clone()),
            request_timeout_ms: ms(self.request_timeout),
            ack: AckPolicy::from_name(&self.ack).unwrap_or_default(),
            enable_role_management: self.enable_role_management,
            conflict_resolution: ConflictResolution::from_name(&self.conflict_resolution).unwrap_or_default(),
            max_connections_per_user: size(self.max_connections),
        }
    }
}
