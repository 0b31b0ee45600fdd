//! What `getStats()` and the binary's `GET /stats` answer: one type, serialized as JSON by
//! the binary and into a JavaScript object by the addon (which adds what only a manager
//! knows: its uptime and compression totals), and the configuration in force beside it,
//! [`ConfigReport`]. `/metrics` reads the same counters, [`Stats`], before they are
//! condensed here.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::broker::ClusterStatus;
use crate::config::Config;
use crate::limits::Rate;
use crate::outbox::Transport;
use crate::stats::{Health, HistogramSnapshot, Stats, FRAME_SIZES};
use crate::streams::HistoryConfig;

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsReport {
    /// `"ok"`, or `"degraded"` while the cluster's Redis is unreachable.
    pub status: &'static str,
    pub active_sessions: usize,
    pub active_connections: usize,
    pub messages: MessageCounts,
    pub bytes: ByteCounts,
    /// Recipients closed with 1013 because their outbox stayed full.
    pub slow_consumer_closes: u64,
    /// Upgrades refused with 400 for a bad handshake.
    pub handshake_failures: u64,
    pub channels: ChannelCounts,
    /// Distinct users with a connection.
    pub users: usize,
    /// Awareness registrations: windows with a case open.
    pub registrations: usize,
    /// `request` messages handed to the request handler.
    pub requests: u64,
    pub acks: u64,
    pub nacks: u64,
    /// Joins and messages refused for identity (`CHANNEL_FORBIDDEN`, `FORBIDDEN`).
    pub forbidden: u64,
    /// Messages dropped, and connections refused, for going over a rate limit.
    pub rate_limited: u64,
    /// Frames received by size, each bucket named by its upper bound (`<=128` ... `>1048576`).
    pub frames: BTreeMap<String, u64>,
    pub relay_latency: Latency,
    pub connections_by_transport: TransportCounts,
    /// Bytes the streams keep together (at most `historyMaxBytes`).
    pub history_bytes: usize,
    pub health: HealthReport,
    /// This node's place in a cluster; absent for one process alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterReport>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterReport {
    pub node_id: String,
    /// Whether Redis is reachable: while it is not, the node relays among its own clients.
    pub connected: bool,
    /// Other nodes whose lease is current.
    pub peers: usize,
    /// Messages for other nodes dropped while Redis was unreachable or the queue full.
    pub dropped: u64,
    /// Messages sent to the other nodes, and the Redis round trips that carried them
    /// (one pipeline carries all that queued meanwhile).
    pub sent: u64,
    pub round_trips: u64,
}

impl From<ClusterStatus> for ClusterReport {
    fn from(status: ClusterStatus) -> Self {
        Self {
            node_id: status.node_id.to_string(),
            connected: status.connected,
            peers: status.peers,
            dropped: status.dropped,
            sent: status.sent,
            round_trips: status.round_trips,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageCounts {
    /// Frames received from clients.
    pub received: u64,
    /// Deliveries: one message relayed to three members counts three.
    pub relayed: u64,
    /// Text frames that were not a JSON object with a string `type`.
    pub invalid: u64,
    /// Deliveries not made because the recipient's outbox was full.
    pub dropped: u64,
    /// `state_update` messages from passive members, dropped as the original drops them.
    pub passive_updates_dropped: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ByteCounts {
    pub received: u64,
    pub sent: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChannelCounts {
    /// Channels that have members.
    pub total: usize,
    /// Members by channel name.
    pub breakdown: BTreeMap<String, usize>,
}

/// Relay latency: for one write to a socket in 16, how long its oldest message had waited
/// since it was routed. Each figure is the upper bound of its histogram bucket (50 µs to
/// 2.5 s), so never below the true value; absent before any sample or above 2.5 s.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Latency {
    pub samples: u64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// Open connections by transport.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TransportCounts {
    /// Sockets Rust owns: the binary's, and the addon's `attach()`.
    pub native: u64,
    /// The addon's `handleUpgrade()` connections, written through `ws`.
    pub bridge: u64,
}

/// Connections by how they answer pings.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthReport {
    pub active_connections: usize,
    /// No ping has waited for its pong longer than half the ping interval.
    pub healthy_connections: usize,
    pub unhealthy_connections: usize,
    /// The mean of each connection's last ping round trip; absent before any.
    pub average_latency_ms: Option<f64>,
}

impl From<&HistogramSnapshot> for Latency {
    fn from(latency: &HistogramSnapshot) -> Self {
        let ms = |q| latency.quantile(q).map(|micros| micros as f64 / 1000.0);
        Self { samples: latency.count(), p50_ms: ms(0.5), p90_ms: ms(0.9), p99_ms: ms(0.99) }
    }
}

impl From<Health> for HealthReport {
    fn from(health: Health) -> Self {
        Self {
            active_connections: health.active_connections,
            healthy_connections: health.healthy_connections,
            unhealthy_connections: health.unhealthy_connections,
            average_latency_ms: health.average_latency_ms,
        }
    }
}

/// Frames by size, each bucket named by its upper bound.
fn frame_buckets(sizes: &HistogramSnapshot) -> BTreeMap<String, u64> {
    let names = FRAME_SIZES.iter().map(|bound| format!("<={bound}")).chain([format!(">{}", FRAME_SIZES[FRAME_SIZES.len() - 1])]);
    names.zip(sizes.counts.iter().copied()).collect()
}

impl StatsReport {
    pub fn new(stats: &Stats, breakdown: Vec<(String, usize)>, health: Health, cluster: Option<ClusterStatus>) -> Self {
        Self {
            status: if cluster.as_ref().is_some_and(|c| !c.connected) { "degraded" } else { "ok" },
            cluster: cluster.map(ClusterReport::from),
            active_sessions: stats.active_sessions,
            active_connections: stats.active_connections,
            messages: MessageCounts {
                received: stats.messages_received,
                relayed: stats.messages_relayed,
                invalid: stats.messages_invalid,
                dropped: stats.messages_dropped,
                passive_updates_dropped: stats.passive_updates_dropped,
            },
            bytes: ByteCounts { received: stats.bytes_received, sent: stats.bytes_sent },
            slow_consumer_closes: stats.slow_consumer_closes,
            handshake_failures: stats.handshake_failures,
            channels: ChannelCounts { total: stats.channels, breakdown: breakdown.into_iter().collect() },
            users: stats.users,
            registrations: stats.registrations,
            requests: stats.requests,
            acks: stats.acks,
            nacks: stats.nacks,
            forbidden: stats.forbidden,
            rate_limited: stats.rate_limited,
            frames: frame_buckets(&stats.frame_sizes),
            relay_latency: Latency::from(&stats.relay_latency),
            connections_by_transport: TransportCounts {
                native: stats.open_connections(Transport::Native),
                bridge: stats.open_connections(Transport::Bridge),
            },
            history_bytes: stats.history_bytes,
            health: health.into(),
        }
    }
}

/// What the process around a relay applies of the options, beside its [`Config`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostSettings {
    /// Whether a token is required, when token auth is on.
    pub auth_required: Option<bool>,
    /// permessage-deflate's threshold in the native transport, when it is on.
    pub compression_threshold: Option<usize>,
    /// The native transport's threads, when given.
    pub threads: Option<usize>,
}

/// The configuration in force, every default filled in, by the addon's option names:
/// `getStats().config` and `config` in `GET /stats`. An option that is off is `null`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigReport {
    pub session_timeout_ms: u64,
    pub max_sessions: usize,
    pub max_clients_per_session: usize,
    pub ping_interval_ms: u64,
    pub heartbeat_timeout_ms: u64,
    pub cleanup_interval_ms: u64,
    pub max_message_bytes: usize,
    pub max_queued_bytes: usize,
    pub slow_consumer: &'static str,
    pub channels: ChannelsReport,
    pub max_channels_per_connection: usize,
    pub request_timeout_ms: u64,
    pub max_requests_per_connection: usize,
    pub ack: &'static str,
    pub enable_role_management: bool,
    pub default_conflict_resolution: &'static str,
    pub control_request_timeout_ms: u64,
    pub max_connections_per_user: usize,
    pub max_windows_per_user: usize,
    pub rate_limit: Option<RateLimitReport>,
    pub connections_per_minute_per_ip: Option<u32>,
    pub auth: Option<AuthReport>,
    pub native_compression: Option<CompressionReport>,
    pub native_threads: Option<usize>,
    pub history: Option<HistoryReport>,
    pub history_max_bytes: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChannelsReport {
    /// Absent when any valid name may be joined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
    /// Absent when channels keep no stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<HistoryReport>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryReport {
    pub size: usize,
    pub ttl_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RateReport {
    pub messages_per_second: f64,
    pub burst: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitReport {
    #[serde(flatten)]
    pub per_connection: RateReport,
    pub per_user: Option<RateReport>,
    pub max_violations: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct AuthReport {
    pub required: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CompressionReport {
    pub threshold: usize,
}

impl From<HistoryConfig> for HistoryReport {
    fn from(history: HistoryConfig) -> Self {
        Self { size: history.size, ttl_ms: history.ttl_ms }
    }
}

impl From<Rate> for RateReport {
    fn from(rate: Rate) -> Self {
        Self { messages_per_second: rate.per_second, burst: rate.burst }
    }
}

impl ConfigReport {
    pub fn new(config: &Config, host: HostSettings) -> Self {
        Self {
            session_timeout_ms: config.session_timeout_ms,
            max_sessions: config.max_sessions,
            max_clients_per_session: config.max_clients_per_session,
            ping_interval_ms: config.ping_interval_ms,
            heartbeat_timeout_ms: config.heartbeat_timeout_ms,
            cleanup_interval_ms: config.cleanup_interval_ms,
            max_message_bytes: config.max_message_bytes,
            max_queued_bytes: config.max_queued_bytes,
            slow_consumer: config.slow_consumer.as_str(),
            channels: ChannelsReport { allow: config.channel_allow.clone(), history: config.channel_history.map(Into::into) },
            max_channels_per_connection: config.max_channels_per_connection,
            request_timeout_ms: config.request_timeout_ms,
            max_requests_per_connection: config.max_requests_per_connection,
            ack: config.ack.as_str(),
            enable_role_management: config.enable_role_management,
            default_conflict_resolution: config.default_conflict_resolution.as_str(),
            control_request_timeout_ms: config.control_request_timeout_ms,
            max_connections_per_user: config.max_connections_per_user,
            max_windows_per_user: config.max_windows_per_user,
            rate_limit: config.rate_limit.as_ref().map(|limits| RateLimitReport {
                per_connection: limits.per_connection.into(),
                per_user: limits.per_user.map(Into::into),
                max_violations: limits.max_violations,
            }),
            connections_per_minute_per_ip: config.connections_per_minute_per_ip,
            auth: host.auth_required.map(|required| AuthReport { required }),
            native_compression: host.compression_threshold.map(|threshold| CompressionReport { threshold }),
            native_threads: host.threads,
            history: config.history.map(Into::into),
            history_max_bytes: config.history_max_bytes,
        }
    }
}
