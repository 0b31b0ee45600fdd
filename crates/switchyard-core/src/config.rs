//! Relay configuration with the defaults of the original RelaySessionManager, which the
//! option schema ([`crate::schema`]) declares.

use serde::Serialize;
use thiserror::Error;

use crate::limits::RateLimits;
use crate::policies::{AckPolicy, ConflictResolution, SlowConsumerPolicy};
use crate::schema;
use crate::streams::HistoryConfig;

/// Serialized, the configuration in force by the addon's option names (`getStats().config`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    /// Lifetime of a session from its creation, unless created with its own `expiresIn`.
    pub session_timeout_ms: u64,
    /// Sessions that may exist at once; creating more fails until some end.
    pub max_sessions: usize,
    /// Connections one session admits, unless created with its own `maxClients`.
    pub max_clients_per_session: usize,
    /// How often every connection is pinged.
    pub ping_interval_ms: u64,
    /// A connection silent (no pong, no message) for this long is closed with 1001.
    pub heartbeat_timeout_ms: u64,
    /// How often expired sessions are removed.
    pub cleanup_interval_ms: u64,
    /// Larger frames close the connection with 1009.
    pub max_message_bytes: usize,
    /// Bound of each connection's outbox.
    pub max_queued_bytes: usize,
    /// What happens to a connection whose outbox is full.
    pub slow_consumer: SlowConsumerPolicy,
    /// Which channels connections may join, and the stream each keeps.
    pub channels: ChannelOptions,
    /// Channels one connection may be in at once; more joins are refused.
    pub max_channels_per_connection: usize,
    /// A request the app has not answered within this is answered `REQUEST_TIMEOUT`.
    pub request_timeout_ms: u64,
    /// Requests one connection may have waiting at once; more are refused.
    pub max_requests_per_connection: usize,
    /// A hook not answered within this refuses its join or message with `UNAVAILABLE`.
    pub hook_timeout_ms: u64,
    /// Which messages are answered with `ACK` or `NACK`.
    pub ack: AckPolicy,
    /// Whether sessions have control roles: one active member, whose `state_update`s alone go on.
    pub enable_role_management: bool,
    /// Sessions created without a strategy of their own use this one.
    pub default_conflict_resolution: ConflictResolution,
    /// How long the active member has to answer a forwarded `request_control`; then the
    /// requester is declined, so an unanswered request never blocks the session.
    pub control_request_timeout_ms: u64,
    /// Connections one user may hold; the next is refused with `CONNECTION_LIMIT` and 1008.
    pub max_connections_per_user: usize,
    /// Awareness registrations one user may hold: every warning lists them all and goes
    /// to all the user's connections, so without a cap each `register` would cost more.
    pub max_windows_per_user: usize,
    /// How fast connections and users may send; `None` for no limit.
    pub rate_limit: Option<RateLimits>,
    /// New connections one address may open per minute; `None` for no limit.
    pub connections_per_minute_per_ip: Option<u32>,
    /// Whether only users the transport verified count (with token auth): a connection
    /// without one may not claim a user by `register`, so it can neither receive that
    /// user's messages nor use up the user's connections and rate.
    #[serde(skip)]
    pub verified_users_only: bool,
    /// Whether connections admitted with a token that expires are warned and closed
    /// (`auth.jwt.enforceExpiry`); `None`: a token is checked at the upgrade only.
    #[serde(skip)]
    pub token_expiry: Option<TokenExpiry>,
    /// The stream each session keeps, unless created with its own; `None`: none.
    pub history: Option<HistoryConfig>,
    /// The bytes every stream together may keep: history memory is bounded whatever
    /// the sessions ask for.
    pub history_max_bytes: usize,
}

/// How tokens' lifetimes are enforced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenExpiry {
    /// A connection is sent `token_expiring` this long before its token expires.
    pub refresh_window_ms: u64,
    /// An expired token's connection is closed this long after `exp` (the verifier's leeway).
    pub leeway_ms: u64,
}

/// Who may join which channels, and what each keeps.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ChannelOptions {
    /// Patterns of the channels connections may join (`"chat:*"`, `"user:{userId}"`);
    /// `None` allows any valid name. `user:` and `org:` channels need a matching identity
    /// either way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
    /// The stream every channel keeps, for members that join with `positions` or
    /// `since`; `None`: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<HistoryConfig>,
}

impl Default for Config {
    fn default() -> Self {
        let number = |setting: schema::Setting| setting.default.number();
        let size = |setting: schema::Setting| usize::try_from(number(setting)).unwrap_or(usize::MAX);
        Self {
            session_timeout_ms: number(schema::SESSION_TIMEOUT_MS),
            max_sessions: size(schema::MAX_SESSIONS),
            max_clients_per_session: size(schema::MAX_CLIENTS_PER_SESSION),
            ping_interval_ms: number(schema::PING_INTERVAL_MS),
            heartbeat_timeout_ms: number(schema::HEARTBEAT_TIMEOUT_MS),
            cleanup_interval_ms: number(schema::CLEANUP_INTERVAL_MS),
            max_message_bytes: size(schema::MAX_MESSAGE_BYTES),
            max_queued_bytes: size(schema::MAX_QUEUED_BYTES),
            slow_consumer: SlowConsumerPolicy::Close,
            channels: ChannelOptions::default(),
            max_channels_per_connection: size(schema::MAX_CHANNELS_PER_CONNECTION),
            request_timeout_ms: number(schema::REQUEST_TIMEOUT_MS),
            max_requests_per_connection: size(schema::MAX_REQUESTS_PER_CONNECTION),
            hook_timeout_ms: number(schema::HOOK_TIMEOUT_MS),
            ack: AckPolicy::Requested,
            enable_role_management: schema::ENABLE_ROLE_MANAGEMENT.default.boolean(),
            default_conflict_resolution: ConflictResolution::FirstComeFirstServed,
            control_request_timeout_ms: number(schema::CONTROL_REQUEST_TIMEOUT_MS),
            max_connections_per_user: size(schema::MAX_CONNECTIONS_PER_USER),
            max_windows_per_user: size(schema::MAX_WINDOWS_PER_USER),
            rate_limit: None,
            connections_per_minute_per_ip: None,
            verified_users_only: false,
            token_expiry: None,
            history: None,
            history_max_bytes: size(schema::HISTORY_MAX_BYTES),
        }
    }
}

/// A configuration value out of range; `option` is the name users write (camelCase).
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{option} {reason}")]
pub struct ConfigError {
    /// The option's name, as the addon spells it (`pingIntervalMs`, `channels.allow`).
    pub option: &'static str,
    /// What is wrong with its value (`must be greater than 0`).
    pub reason: String,
}

/// The relay's timers need no finer grain than this.
const MAX_TICK_MS: u64 = 1000;

impl Config {
    /// `connectionsPerMinutePerIp` as a token bucket's rate: a minute's worth as the burst.
    pub fn address_rate(&self) -> Option<crate::Rate> {
        let per_minute = f64::from(self.connections_per_minute_per_ip?);
        Some(crate::Rate { per_second: per_minute / 60.0, burst: per_minute })
    }

    /// How often [`Relay::tick`](crate::Relay::tick) should run: often enough for pings,
    /// expiry, request and hook timeouts to be on time.
    pub fn tick_interval_ms(&self) -> u64 {
        [self.ping_interval_ms, self.cleanup_interval_ms, self.request_timeout_ms, self.hook_timeout_ms, self.control_request_timeout_ms, MAX_TICK_MS]
            .into_iter()
            .min()
            .unwrap_or(MAX_TICK_MS)
    }

    /// Checks every value is in range, naming the first option that is not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(patterns) = &self.channels.allow {
            for pattern in patterns {
                crate::channels::AllowPattern::parse(pattern)
                    .map_err(|reason| ConfigError { option: "channels.allow", reason })?;
            }
        }
        if let Some(limits) = &self.rate_limit {
            limits.per_connection.check("rateLimit")?;
            if let Some(per_user) = &limits.per_user {
                per_user.check("rateLimit.perUser")?;
            }
        }
        if self.connections_per_minute_per_ip == Some(0) {
            return Err(ConfigError { option: "connectionsPerMinutePerIp", reason: "must be greater than 0".into() });
        }
        if let Some(history) = &self.history {
            history.validate().map_err(|reason| ConfigError { option: "history", reason })?;
        }
        if let Some(history) = &self.channels.history {
            history.validate().map_err(|reason| ConfigError { option: "channels.history", reason })?;
        }
        let positive: [(&'static str, u64); 16] = [
            ("sessionTimeoutMs", self.session_timeout_ms),
            ("maxSessions", self.max_sessions as u64),
            ("maxClientsPerSession", self.max_clients_per_session as u64),
            ("pingIntervalMs", self.ping_interval_ms),
            ("heartbeatTimeoutMs", self.heartbeat_timeout_ms),
            ("cleanupIntervalMs", self.cleanup_interval_ms),
            ("maxMessageBytes", self.max_message_bytes as u64),
            ("maxQueuedBytes", self.max_queued_bytes as u64),
            ("requestTimeoutMs", self.request_timeout_ms),
            ("hookTimeoutMs", self.hook_timeout_ms),
            ("controlRequestTimeoutMs", self.control_request_timeout_ms),
            ("maxConnectionsPerUser", self.max_connections_per_user as u64),
            ("maxChannelsPerConnection", self.max_channels_per_connection as u64),
            ("maxRequestsPerConnection", self.max_requests_per_connection as u64),
            ("maxWindowsPerUser", self.max_windows_per_user as u64),
            ("historyMaxBytes", self.history_max_bytes as u64),
        ];
        match positive.iter().find(|(_, value)| *value == 0) {
            Some((option, _)) => Err(ConfigError { option, reason: "must be greater than 0".into() }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Config::default().validate(), Ok(()));
    }

    #[test]
    fn zero_is_refused_by_name() {
        let config = Config { ping_interval_ms: 0, ..Config::default() };
        let err = config.validate().unwrap_err();
        assert_eq!(err.option, "pingIntervalMs");
        assert_eq!(err.to_string(), "pingIntervalMs must be greater than 0");
    }
}
