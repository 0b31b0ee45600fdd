//! What `getStats()` and the binary's `GET /stats` answer: one type, serialized as JSON by
//! the binary and into a JavaScript object by the addon (which adds what only a manager
//! knows: its uptime and compression totals), and the configuration in force beside it,
//! [`ConfigReport`]. `/metrics` reads the same counters, [`Stats`], before they are
//! condensed here.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::broker::ClusterStatus;
use crate::config::Config;
use crate::hooks::Decides;
use crate::outbox::Transport;
use crate::stats::{Health, HistogramSnapshot, Stats, FRAME_SIZES};

/// A relay's stats as `getStats()` and `GET /stats` answer them, before the host adds what
/// only it knows (uptime, compression totals).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsReport {
    /// `"ok"`, or `"degraded"` while the cluster's Redis is unreachable.
    pub status: &'static str,
    /// Sessions the relay holds; an expired one counts until the next cleanup removes it.
    pub active_sessions: usize,
    /// Open connections, in a session or not.
    pub active_connections: usize,
    /// Messages received from clients, and what became of them.
    pub messages: MessageCounts,
    /// Payload bytes received from clients and queued to them.
    pub bytes: ByteCounts,
    /// Recipients closed with 1013 because their outbox stayed full.
    pub slow_consumer_closes: u64,
    /// Upgrades refused with 400 for a bad handshake.
    pub handshake_failures: u64,
    /// Channels that have members, and how many each has.
    pub channels: ChannelCounts,
    /// Distinct users with a connection.
    pub users: usize,
    /// Awareness registrations: windows with a case open.
    pub registrations: usize,
    /// `request` messages handed to the request handler.
    pub requests: u64,
    /// `ACK` answers sent for messages that were routed.
    pub acks: u64,
    /// `NACK` answers sent for messages that were refused.
    pub nacks: u64,
    /// Joins and messages refused for identity (`CHANNEL_FORBIDDEN`, `FORBIDDEN`).
    pub forbidden: u64,
    /// Messages dropped, and connections refused, for going over a rate limit.
    pub rate_limited: u64,
    /// What the application's hooks (or its backend) were asked, and how they answered.
    pub hooks: HookCounts,
    /// Frames received by size, each bucket named by its upper bound (`<=128` ... `>1048576`).
    pub frames: BTreeMap<String, u64>,
    /// How long relayed messages waited to be written to their sockets.
    pub relay_latency: Latency,
    /// Open connections by transport.
    pub connections_by_transport: TransportCounts,
    /// Bytes the streams keep together (at most `historyMaxBytes`).
    pub history_bytes: usize,
    /// Connections by how they answer pings, as `checkConnectionHealth()` returns them.
    pub health: HealthReport,
    /// This node's place in a cluster; absent for one process alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterReport>,
}

/// This node's place in its cluster: `cluster` in `getStats()` and `GET /stats`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterReport {
    /// This node's name, unique in the cluster (`nodeId`, `--node-id`).
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
    /// Redis round trips (pipelines) that carried what was sent.
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

/// Messages received from clients, and what became of them.
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

/// Payload bytes, without WebSocket framing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ByteCounts {
    /// Bytes of the frames received from clients, refused ones included.
    pub received: u64,
    /// Bytes of the frames queued to clients: relayed messages and the server's own.
    pub sent: u64,
}

/// Channels that have members, and how many each has.
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
    /// Writes sampled since the relay started.
    pub samples: u64,
    /// The median wait, in milliseconds.
    pub p50_ms: Option<f64>,
    /// The 90th percentile wait, in milliseconds.
    pub p90_ms: Option<f64>,
    /// The 99th percentile wait, in milliseconds.
    pub p99_ms: Option<f64>,
}

/// What the application's hooks were asked, and how they answered: `hooks` in `getStats()`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HookCounts {
    /// Questions asked.
    pub asked: u64,
    /// Joins and messages refused.
    pub refused: u64,
    /// Questions not answered: the hook failed, timed out or was out of reach (`UNAVAILABLE`).
    pub unavailable: u64,
    /// How long answers took (answers given at once count 0 ms).
    pub latency: Latency,
}

/// Open connections by transport.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TransportCounts {
    /// Sockets Rust owns: the binary's, and the addon's `attach()`.
    pub native: u64,
    /// The addon's `handleUpgrade()` connections, written through `ws`.
    pub bridge: u64,
    /// Members on a Server-Sent Events stream, sending with POST.
    pub sse: u64,
}

/// Connections by how they answer pings.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthReport {
    /// Open connections.
    pub active_connections: usize,
    /// No ping has waited for its pong longer than half the ping interval.
    pub healthy_connections: usize,
    /// Connections whose ping has waited for its pong longer than half the ping interval.
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
    /// Condenses `stats`, with the members of each channel (`breakdown`), the connections' health
    /// and, in a cluster, the node's status (`status` is `"degraded"` while Redis is unreachable).
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
            hooks: HookCounts {
                asked: stats.hook_questions,
                refused: stats.hook_refusals,
                unavailable: stats.hook_failures,
                latency: Latency::from(&stats.hook_latency),
            },
            frames: frame_buckets(&stats.frame_sizes),
            relay_latency: Latency::from(&stats.relay_latency),
            connections_by_transport: TransportCounts {
                native: stats.open_connections(Transport::Native),
                bridge: stats.open_connections(Transport::Bridge),
                sse: stats.open_connections(Transport::EventStream),
            },
            history_bytes: stats.history_bytes,
            health: health.into(),
        }
    }
}

/// What the process around a relay applies of the options, beside its [`Config`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostSettings {
    /// Whether a token is required, when token auth is on.
    pub auth_required: Option<bool>,
    /// permessage-deflate's threshold in the native transport, when it is on.
    pub compression_threshold: Option<usize>,
    /// The native transport's threads, when given.
    pub threads: Option<usize>,
    /// The hooks the app gave.
    pub hooks: Decides,
    /// The webhooks, when on.
    pub webhooks: Option<WebhooksReport>,
    /// The backend proxy, when on.
    pub proxy: Option<ProxyReport>,
}

/// The backend proxy as the report shows it: which decision goes where.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyReport {
    /// Asked who connects (the binary only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_url: Option<String>,
    /// Asked before joins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join_url: Option<String>,
    /// Asked before members' messages are relayed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish_url: Option<String>,
    /// Answers requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_url: Option<String>,
    /// Renews lifetimes (the binary only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_url: Option<String>,
}

/// The webhooks as the report shows them: never the secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhooksReport {
    /// Where events are POSTed.
    pub url: String,
    /// The events sent.
    pub events: Vec<String>,
    /// How long a batch is retried before it is dropped.
    pub max_age_ms: u64,
}

/// The configuration in force, every default filled in, by the addon's option names:
/// `getStats().config` and `config` in `GET /stats`. An option that is off is `null`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigReport<'a> {
    /// The relay's options, flattened into the report.
    #[serde(flatten)]
    pub config: &'a Config,
    /// Token auth; `null` when it is off.
    pub auth: Option<AuthReport>,
    /// permessage-deflate in the native transport; `null` when it is off.
    pub native_compression: Option<CompressionReport>,
    /// The native transport's threads; `null` when not given.
    pub native_threads: Option<usize>,
    /// Which hooks the app gave.
    pub hooks: Decides,
    /// The webhooks; `null` when off.
    pub webhooks: Option<WebhooksReport>,
    /// The backend proxy; `null` when off.
    pub proxy: Option<ProxyReport>,
}

/// Token auth as the report shows it: whether a token is required, never a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct AuthReport {
    /// Whether a connection without a token is refused.
    pub required: bool,
}

/// permessage-deflate as the report shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CompressionReport {
    /// Payloads shorter than this, in bytes, go uncompressed.
    pub threshold: usize,
}

impl<'a> ConfigReport<'a> {
    /// The report of `config`, with what the host applies beside it.
    pub fn new(config: &'a Config, host: HostSettings) -> Self {
        Self {
            config,
            auth: host.auth_required.map(|required| AuthReport { required }),
            native_compression: host.compression_threshold.map(|threshold| CompressionReport { threshold }),
            native_threads: host.threads,
            hooks: host.hooks,
            webhooks: host.webhooks,
            proxy: host.proxy,
        }
    }
}
