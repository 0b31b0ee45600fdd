//! Relay configuration with the defaults of the original RelaySessionManager.

use thiserror::Error;

/// What the relay does when a recipient's outbox is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SlowConsumerPolicy {
    /// Close the slow connection with 1013 "Slow consumer"; everyone else keeps going.
    #[default]
    Close,
    /// Drop the frame for that recipient and count it.
    Drop,
}

impl SlowConsumerPolicy {
    /// The names users write, in `Close`, `Drop` order.
    pub const NAMES: [&'static str; 2] = ["close", "drop"];

    pub fn as_str(self) -> &'static str {
        match self {
            SlowConsumerPolicy::Close => Self::NAMES[0],
            SlowConsumerPolicy::Drop => Self::NAMES[1],
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "close" => Some(SlowConsumerPolicy::Close),
            "drop" => Some(SlowConsumerPolicy::Drop),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Lifetime of a session from its creation, unless created with its own `expiresIn`.
    pub session_timeout_ms: u64,
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
    pub slow_consumer: SlowConsumerPolicy,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            session_timeout_ms: 30 * 60 * 1000,
            max_clients_per_session: 10,
            ping_interval_ms: 30_000,
            heartbeat_timeout_ms: 60_000,
            cleanup_interval_ms: 60_000,
            max_message_bytes: 1024 * 1024,
            max_queued_bytes: 1024 * 1024,
            slow_consumer: SlowConsumerPolicy::Close,
        }
    }
}

/// A configuration value out of range; `option` is the name users write (camelCase).
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{option} {reason}")]
pub struct ConfigError {
    pub option: &'static str,
    pub reason: String,
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive: [(&'static str, u64); 7] = [
            ("sessionTimeoutMs", self.session_timeout_ms),
            ("maxClientsPerSession", self.max_clients_per_session as u64),
            ("pingIntervalMs", self.ping_interval_ms),
            ("heartbeatTimeoutMs", self.heartbeat_timeout_ms),
            ("cleanupIntervalMs", self.cleanup_interval_ms),
            ("maxMessageBytes", self.max_message_bytes as u64),
            ("maxQueuedBytes", self.max_queued_bytes as u64),
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
