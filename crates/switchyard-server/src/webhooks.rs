//! Webhooks: the relay's lifecycle events (sessions created and ended, members joining and
//! leaving, channels occupied and vacated) POSTed to the app in batches, signed with
//! HMAC-SHA256 (`X-Switchyard-Signature: sha256=<hex>` of the exact body).
//!
//! In a cluster each event is told by one node: a session's creation and end by the node
//! that created or deleted it (an expiry by the node that created it), a member's coming
//! and going by its node, and a channel's first member anywhere and last one gone
//! everywhere by the node where that happened, which Redis counts ([`RedisBroker::occupancy`]).
//!
//! One task sends one batch at a time, so events go in the order they happened. A 2xx
//! acknowledges a batch; anything else is retried with backoff (100 ms doubling to 30 s)
//! until its oldest event is older than `maxAgeMs`, when the batch is dropped and counted.
//! The queue holds at most [`MAX_QUEUED`] events: past it the oldest is dropped and
//! counted, so an endpoint that stays down never grows memory.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use serde::Serialize;
use sha2::Sha256;
use switchyard_core::{ConnectionInfo, Event, EventSink, Millis, WebhooksReport};
use switchyard_redis::RedisBroker;
use tokio::sync::{oneshot, Notify};
use tracing::warn;

use crate::metrics::HostGauge;
use crate::now;
use crate::proxy::http_url;

/// Events the queue holds at most; past it the oldest is dropped.
pub const MAX_QUEUED: usize = 10_000;
/// Events one POST carries at most.
const MAX_BATCH: usize = 100;
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(30);
/// How long one POST may take.
const POST_TIMEOUT: Duration = Duration::from_secs(10);

/// The names of the events, as the app filters them (`events`).
pub const EVENT_NAMES: [&str; 6] = ["session_created", "session_ended", "member_joined", "member_left", "channel_occupied", "channel_vacated"];

/// Where the events go.
#[derive(Clone, Debug)]
pub struct WebhookOptions {
    /// The endpoint (http://).
    pub url: Uri,
    /// The HMAC-SHA256 key of the signature.
    pub secret: String,
    /// The events sent; all of [`EVENT_NAMES`] when `None`.
    pub events: Option<Vec<String>>,
    /// A batch undelivered for this long is dropped.
    pub max_age: Duration,
}

/// One event as the endpoint receives it.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
struct Hooked {
    name: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connection_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    organization_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    timestamp: Millis,
}

impl Hooked {
    fn new(name: &'static str, timestamp: Millis) -> Self {
        Self { name, session_id: None, channel: None, connection_id: None, client_id: None, user_id: None, organization_id: None, reason: None, timestamp }
    }

    fn member(name: &'static str, connection: ConnectionInfo, timestamp: Millis) -> Option<Self> {
        Some(Self {
            session_id: Some(connection.session_id?.to_string()),
            connection_id: Some(connection.connection_id.to_string()),
            client_id: Some(connection.client_id),
            user_id: connection.user_id,
            organization_id: connection.organization_id,
            ..Self::new(name, timestamp)
        })
    }

    /// The webhook event of a relay event; `None` for what no webhook tells, and for what
    /// another node of a cluster tells (a session deleted or created elsewhere).
    fn of(event: &Event, timestamp: Millis) -> Option<Self> {
        let session = |name, id: &dyn ToString, reason| Self { session_id: Some(id.to_string()), reason, ..Self::new(name, timestamp) };
        let channel = |name, channel: &str| Self { channel: Some(channel.to_owned()), ..Self::new(name, timestamp) };
        Some(match event {
            Event::SessionCreated(info) => session("session_created", &info.session_id, None),
            Event::SessionDeleted { session_id, here: true } => session("session_ended", session_id, Some("deleted")),
            Event::SessionExpired { session_id, here: true } => session("session_ended", session_id, Some("expired")),
            Event::Connected(connection) => return Self::member("member_joined", connection.clone(), timestamp),
            Event::Disconnected { connection, .. } => return Self::member("member_left", connection.clone(), timestamp),
            Event::ChannelOccupied { channel: name } => channel("channel_occupied", name),
            Event::ChannelVacated { channel: name } => channel("channel_vacated", name),
            _ => return None,
        })
    }
}

/// An event waiting to be sent: when it was queued and, for a channel's in a cluster,
/// Redis's count of the nodes with members once this node's change was noted.
struct Queued {
    hooked: Hooked,
    at: Millis,
    nodes: Option<oneshot::Receiver<usize>>,
}

/// What became of the events, for `/stats` and `/metrics`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookCounts {
    /// Events waiting to be sent now.
    pub queued: u64,
    /// Events the endpoint acknowledged.
    pub delivered: u64,
    /// POSTs tried again after a failure.
    pub retries: u64,
    /// Events dropped: the queue was full, or their batch outlived `maxAgeMs`.
    pub dropped: u64,
}

/// The webhook sender of one node.
pub struct Webhooks {
    options: WebhookOptions,
    client: Client<HttpConnector, Full<Bytes>>,
    queue: Mutex<VecDeque<Queued>>,
    wake: Notify,
    delivered: AtomicU64,
    retries: AtomicU64,
    dropped: AtomicU64,
    started: AtomicBool,
    /// The cluster that counts which nodes have members of each channel.
    cluster: OnceLock<Arc<RedisBroker>>,
}

/// Webhook options that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebhookConfigError {
    /// The URL is not an absolute `http://` one.
    #[error("webhooks.url (--webhook-url) must be an absolute http:// URL, got {0:?}")]
    Url(String),
    /// No secret to sign with.
    #[error("webhooks.secret (--webhook-secret) is needed with the URL: every batch is signed")]
    NoSecret,
    /// An event name no webhook has.
    #[error("webhooks.events (--webhook-events): {0:?} is not one of session_created, session_ended, member_joined, member_left, channel_occupied, channel_vacated")]
    UnknownEvent(String),
}

impl WebhookOptions {
    /// The options, checked: `url` http://, a non-empty `secret`, known event names.
    pub fn new(url: &str, secret: Option<String>, events: Option<Vec<String>>, max_age: Duration) -> Result<Self, WebhookConfigError> {
        let parsed = http_url(url).ok_or_else(|| WebhookConfigError::Url(url.into()))?;
        let secret = secret.filter(|s| !s.is_empty()).ok_or(WebhookConfigError::NoSecret)?;
        if let Some(unknown) = events.iter().flatten().find(|name| !EVENT_NAMES.contains(&name.as_str())) {
            return Err(WebhookConfigError::UnknownEvent(unknown.clone()));
        }
        Ok(Self { url: parsed, secret, events, max_age })
    }
}

impl Webhooks {
    /// Webhooks that queue events until [`Webhooks::start`] sends them.
    pub fn new(options: WebhookOptions) -> Arc<Self> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
        Arc::new(Self {
            options,
            client,
            queue: Mutex::default(),
            wake: Notify::new(),
            delivered: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            started: AtomicBool::new(false),
            cluster: OnceLock::new(),
        })
    }

    /// Tells a channel's first member and last one gone cluster-wide, as `cluster` counts them.
    pub fn follow_cluster(&self, cluster: Arc<RedisBroker>) {
        let _ = self.cluster.set(cluster);
    }

    /// Starts sending on `runtime` (once: later calls do nothing).
    pub fn start(self: &Arc<Self>, runtime: &tokio::runtime::Handle) {
        if !self.started.swap(true, Ordering::AcqRel) {
            runtime.spawn(self.clone().send_forever());
        }
    }

    /// What the report of the configuration shows: never the secret.
    pub fn report(&self) -> WebhooksReport {
        WebhooksReport {
            url: self.options.url.to_string(),
            events: self.options.events.clone().unwrap_or_else(|| EVENT_NAMES.iter().map(|name| (*name).to_owned()).collect()),
            max_age_ms: u64::try_from(self.options.max_age.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// What became of the events so far.
    pub fn counts(&self) -> WebhookCounts {
        WebhookCounts {
            queued: self.queue.lock().len() as u64,
            delivered: self.delivered.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }

    /// The counts as `/metrics` gauges.
    pub fn gauges(&self) -> [HostGauge; 4] {
        let counts = self.counts();
        [
            HostGauge { name: "webhook_queued", help: "Webhook events waiting to be sent.", value: counts.queued as f64 },
            HostGauge { name: "webhook_delivered", help: "Webhook events the endpoint acknowledged, since start.", value: counts.delivered as f64 },
            HostGauge { name: "webhook_retries", help: "Webhook POSTs tried again after a failure, since start.", value: counts.retries as f64 },
            HostGauge { name: "webhook_dropped", help: "Webhook events dropped (queue full, or past the max age), since start.", value: counts.dropped as f64 },
        ]
    }

    fn note(&self, event: &Event) {
        let now = now();
        let Some(hooked) = Hooked::of(event, now) else { return };
        if self.options.events.as_ref().is_some_and(|names| !names.iter().any(|name| name == hooked.name)) {
            return;
        }
        // Noted in Redis now, in the order the members came and went, not when it is sent.
        let nodes = match (hooked.name, &hooked.channel, self.cluster.get()) {
            ("channel_occupied" | "channel_vacated", Some(channel), Some(cluster)) => cluster.occupancy(channel.clone(), hooked.name == "channel_occupied"),
            _ => None,
        };
        {
            let mut queue = self.queue.lock();
            if queue.len() >= MAX_QUEUED {
                queue.pop_front();
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            queue.push_back(Queued { hooked, at: now, nodes });
        }
        self.wake.notify_one();
    }

    async fn send_forever(self: Arc<Self>) {
        loop {
            let batch: Vec<Queued> = {
                let mut queue = self.queue.lock();
                let take = queue.len().min(MAX_BATCH);
                queue.drain(..take).collect()
            };
            if batch.is_empty() {
                self.wake.notified().await;
                continue;
            }
            let batch = self.told_here(batch).await;
            if !batch.is_empty() {
                self.deliver(batch).await;
            }
        }
    }

    /// The events of `batch` this node tells: in a cluster, a channel's occupation only
    /// when it was the first node with members, its vacation only when it was the last
    /// (and both, as a node alone would, while Redis is unreachable).
    async fn told_here(&self, batch: Vec<Queued>) -> Vec<(Hooked, Millis)> {
        let mut told = Vec::with_capacity(batch.len());
        for Queued { hooked, at, nodes } in batch {
            let occupied = hooked.name == "channel_occupied";
            let counted = match nodes {
                Some(nodes) => nodes.await.ok(),
                None => None,
            };
            if counted.is_none_or(|nodes| nodes == usize::from(occupied)) {
                told.push((hooked, at));
            }
        }
        told
    }

    async fn deliver(&self, batch: Vec<(Hooked, Millis)>) {
        let oldest = batch[0].1;
        let events: Vec<&Hooked> = batch.iter().map(|(hooked, _)| hooked).collect();
        let body = Bytes::from(serde_json::json!({ "events": events }).to_string());
        let signature = sign(&self.options.secret, &body);
        let mut wait = FIRST_RETRY;
        loop {
            match self.post(body.clone(), &signature).await {
                Ok(()) => {
                    self.delivered.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    return;
                }
                Err(why) => {
                    let age = Duration::from_millis(now().saturating_sub(oldest));
                    if age + wait > self.options.max_age {
                        self.dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
                        warn!(url = %self.options.url, events = batch.len(), "webhook: {why}; dropped a batch undelivered for {} s", age.as_secs());
                        return;
                    }
                    if wait == FIRST_RETRY {
                        warn!(url = %self.options.url, "webhook: {why}; retrying with backoff");
                    }
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(LAST_RETRY);
                }
            }
        }
    }

    async fn post(&self, body: Bytes, signature: &str) -> Result<(), String> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(&self.options.url)
            .header(CONTENT_TYPE, "application/json")
            .header("x-switchyard-signature", signature)
            .body(Full::new(body))
            .map_err(|err| err.to_string())?;
        let response = tokio::time::timeout(POST_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| "the endpoint did not answer in time".to_owned())?
            .map_err(|_| "the endpoint is unreachable".to_owned())?;
        match response.status() {
            status if status.is_success() => Ok(()),
            status => Err(format!("the endpoint answered HTTP {}", status.as_u16())),
        }
    }
}

/// `sha256=<hex HMAC-SHA256 of body with secret>`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("sha256={hex}")
}

/// An event sink that hands each event to the webhooks too.
pub struct WithWebhooks {
    /// Where events went before.
    pub inner: Arc<dyn EventSink>,
    /// Where they go as well.
    pub webhooks: Arc<Webhooks>,
}

impl EventSink for WithWebhooks {
    fn emit(&self, event: Event) {
        self.webhooks.note(&event);
        self.inner.emit(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_at_most_max_queued_events_dropping_the_oldest() {
        let options = WebhookOptions::new("http://127.0.0.1:9/hooks", Some("s".into()), None, Duration::from_secs(600)).unwrap();
        let webhooks = Webhooks::new(options);
        for n in 0..MAX_QUEUED + 50 {
            webhooks.note(&Event::ChannelOccupied { channel: format!("c{n}") });
        }
        assert_eq!(webhooks.counts(), WebhookCounts { queued: MAX_QUEUED as u64, delivered: 0, retries: 0, dropped: 50 });
        assert_eq!(webhooks.queue.lock().front().unwrap().hooked.channel.as_deref(), Some("c50"), "the oldest went first");
    }

    #[test]
    fn signs_as_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(sign("Jefe", b"what do ya want for nothing?"), "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }
}
