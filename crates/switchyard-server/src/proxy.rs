//! The backend proxy: the app's decisions asked of its backend over HTTP, for those who run
//! the binary and write no JavaScript (docs/operations/backend-proxy.md), and for the addon
//! configured with URLs. Each decision is a
//! POST of JSON to the URL configured for it (connect, join, publish, request, refresh), answered
//! `{"result":...}`, `{"error":{"code","message"}}` or, for connect,
//! `{"disconnect":{"code","reason"}}`.
//!
//! A backend that is down, slow (past `--proxy-timeout`) or answers anything else gets
//! `UNAVAILABLE`; each kind of failure is logged the first time for each endpoint, and
//! counted. At most [`MAX_WAITING`] calls are out at once; more are refused at once, so a
//! stalled backend never grows memory. Calls reuse their connections (hyper's pooled client).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use switchyard_core::{Ask, ConnId, ConnectionInfo, Decides, ErrorCode, Hooks, Identity, MessageRejection, ProxyReport, Question, Relay, Verdict};
use thiserror::Error;
use tracing::warn;

use crate::metrics::HostGauge;
use crate::now;

/// Calls that may be out at once; more are refused `UNAVAILABLE` without a call.
pub const MAX_WAITING: usize = 1024;

/// Where each decision is asked, and how long an answer may take.
#[derive(Clone, Debug, Default)]
pub struct ProxyOptions {
    /// Asked at each upgrade, who the connection is (`--proxy-connect-url`).
    pub connect: Option<Uri>,
    /// Asked before each join the channel rules allow (`--proxy-join-url`).
    pub join: Option<Uri>,
    /// Asked before each member's message is relayed (`--proxy-publish-url`).
    pub publish: Option<Uri>,
    /// Answers `request` messages (`--proxy-request-url`).
    pub request: Option<Uri>,
    /// Renews a connection's lifetime before it ends (`--proxy-refresh-url`).
    pub refresh: Option<Uri>,
    /// How long a call may take.
    pub timeout: Duration,
    /// The upgrade request's headers passed to connect (lower case).
    pub headers: Vec<String>,
}

/// A proxy URL that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProxyConfigError {
    /// Not an absolute `http://` URL.
    #[error("{flag} must be an absolute http:// URL, got {url:?} (https backends are not supported yet: reach the backend over the private network)")]
    NotHttp {
        /// The flag that gave it.
        flag: &'static str,
        /// What it gave.
        url: String,
    },
}

impl ProxyOptions {
    /// Parses one URL flag's value.
    pub fn url(flag: &'static str, url: &str) -> Result<Uri, ProxyConfigError> {
        http_url(url).ok_or_else(|| ProxyConfigError::NotHttp { flag, url: url.into() })
    }

    /// Whether any decision is asked of the backend.
    pub fn is_on(&self) -> bool {
        self.connect.is_some() || self.join.is_some() || self.publish.is_some() || self.request.is_some() || self.refresh.is_some()
    }
}

/// `url` as an absolute `http://` URL, the only kind the backend's calls (the proxy's and
/// the webhooks') are made to.
pub fn http_url(url: &str) -> Option<Uri> {
    let parsed: Uri = url.parse().ok()?;
    (parsed.scheme_str() == Some("http") && parsed.host().is_some()).then_some(parsed)
}

/// Why a call gave no answer.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyFailure {
    /// [`MAX_WAITING`] calls were out already.
    #[error("too many calls are waiting for the backend")]
    Busy,
    /// The backend could not be reached.
    #[error("the backend is unreachable")]
    Unreachable,
    /// No answer within the timeout.
    #[error("the backend did not answer in time")]
    Timeout,
    /// An answer other than 2xx.
    #[error("the backend answered HTTP {0}")]
    Status(u16),
    /// A 2xx whose body is not the JSON the protocol names.
    #[error("the backend's answer is not {{\"result\"}}, {{\"error\"}} or {{\"disconnect\"}} JSON")]
    Garbage,
}

/// What the backend said.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
enum Answer {
    Result(Box<RawValue>),
    Error(Refusal),
    Disconnect(Disconnect),
}

#[derive(Deserialize)]
struct Refusal {
    #[serde(default)]
    message: Option<String>,
}

/// A connect the backend refuses: the upgrade is answered 403 with `reason`.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// The code the backend gave (4000 to 4999; 4403 when it gave none).
    #[serde(default = "forbidden")]
    pub code: u16,
    /// Why.
    #[serde(default)]
    pub reason: String,
}

fn forbidden() -> u16 {
    4403
}

/// A `result` with a replacement message (publish) or a response's payload (request).
#[derive(Deserialize)]
struct Replacement<'a> {
    #[serde(borrow, default)]
    message: Option<&'a RawValue>,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
}

/// A refresh's `result`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Renewal {
    expires_at: u64,
}

/// Who the backend says a connection is.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Connected {
    user_id: Option<String>,
    organization_id: Option<String>,
    client_id: Option<String>,
    metadata: Option<Value>,
    expires_at: Option<u64>,
}

/// The backend proxy of one node.
pub struct Proxy {
    /// Itself, for the calls it spawns.
    me: Weak<Proxy>,
    options: ProxyOptions,
    client: Client<HttpConnector, Full<Bytes>>,
    /// Where calls run, once the host has a runtime.
    runtime: OnceLock<tokio::runtime::Handle>,
    /// The relay it answers, set once the relay is built (the relay is built with it).
    relay: OnceLock<Weak<Relay>>,
    waiting: AtomicUsize,
    /// Calls that gave no answer, of every kind.
    failures: AtomicU64,
    /// Which failures were logged already, by endpoint.
    logged: Mutex<HashSet<(&'static str, ProxyFailure)>>,
}

impl Proxy {
    /// A proxy that calls the backend once [`Proxy::start`] gave it a runtime.
    pub fn new(options: ProxyOptions) -> Arc<Self> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(options.timeout));
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            options,
            client,
            runtime: OnceLock::new(),
            relay: OnceLock::new(),
            waiting: AtomicUsize::new(0),
            failures: AtomicU64::new(0),
            logged: Mutex::default(),
        })
    }

    /// Answers this relay's questions from now on, calling the backend on `runtime`.
    pub fn start(&self, relay: &Arc<Relay>, runtime: tokio::runtime::Handle) {
        let _ = self.runtime.set(runtime);
        let _ = self.relay.set(Arc::downgrade(relay));
        relay.answer_requests(self.answers_requests());
    }

    /// Which decision goes where, for the report of the configuration.
    pub fn report(&self) -> ProxyReport {
        let url = |uri: &Option<Uri>| uri.as_ref().map(Uri::to_string);
        ProxyReport {
            connect_url: url(&self.options.connect),
            join_url: url(&self.options.join),
            publish_url: url(&self.options.publish),
            request_url: url(&self.options.request),
            refresh_url: url(&self.options.refresh),
        }
    }

    /// Whether `request` messages go to the backend.
    pub fn answers_requests(&self) -> bool {
        self.options.request.is_some()
    }

    fn spawn(&self, call: impl std::future::Future<Output = ()> + Send + 'static) -> bool {
        match self.runtime.get() {
            Some(runtime) => {
                runtime.spawn(call);
                true
            }
            None => false,
        }
    }

    /// Whether connects are asked of the backend.
    pub fn asks_connect(&self) -> bool {
        self.options.connect.is_some()
    }

    /// Calls that gave no answer since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Calls out now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Its counts as `/metrics` gauges.
    pub fn gauges(&self) -> [HostGauge; 2] {
        [
            HostGauge { name: "proxy_waiting", help: "Backend proxy calls out now.", value: self.waiting() as f64 },
            HostGauge { name: "proxy_failures", help: "Backend proxy calls that gave no answer, since start.", value: self.failures() as f64 },
        ]
    }

    async fn call(&self, endpoint: &'static str, uri: &Uri, body: Value) -> Result<Answer, ProxyFailure> {
        let answer = self.try_call(uri, body).await;
        match answer {
            // Only a connect may be answered with a disconnect.
            Ok(Answer::Disconnect(_)) if endpoint != "connect" => {
                self.failed(endpoint, uri, ProxyFailure::Garbage);
                Err(ProxyFailure::Garbage)
            }
            Err(failure) => {
                self.failed(endpoint, uri, failure);
                Err(failure)
            }
            answer => answer,
        }
    }

    /// Counts a call that gave no usable answer, logging the first of its kind for its
    /// endpoint: the question is refused `UNAVAILABLE`.
    fn failed(&self, endpoint: &'static str, uri: &Uri, failure: ProxyFailure) -> Verdict {
        self.failures.fetch_add(1, Ordering::Relaxed);
        if self.logged.lock().insert((endpoint, failure)) {
            warn!(endpoint, url = %uri, "backend proxy: {failure}; refused UNAVAILABLE (logged once for this endpoint and failure)");
        }
        Verdict::Unavailable
    }

    async fn try_call(&self, uri: &Uri, body: Value) -> Result<Answer, ProxyFailure> {
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= MAX_WAITING {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(ProxyFailure::Busy);
        }
        let answer = tokio::time::timeout(self.options.timeout, self.post(uri, body)).await.unwrap_or(Err(ProxyFailure::Timeout));
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        answer
    }

    async fn post(&self, uri: &Uri, body: Value) -> Result<Answer, ProxyFailure> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|_| ProxyFailure::Unreachable)?;
        let response = self.client.request(request).await.map_err(|_| ProxyFailure::Unreachable)?;
        let status = response.status();
        let bytes = response.into_body().collect().await.map_err(|_| ProxyFailure::Unreachable)?.to_bytes();
        if !status.is_success() {
            return Err(ProxyFailure::Status(status.as_u16()));
        }
        serde_json::from_slice(&bytes).map_err(|_| ProxyFailure::Garbage)
    }

    /// Asks the backend who an upgrading connection is: `Ok(Ok(identity))` to let it in
    /// (the backend's fields over `given`'s), `Ok(Err(disconnect))` to refuse it.
    pub async fn connect(&self, session_id: Option<&str>, header: impl Fn(&str) -> Option<String>, remote: Option<String>, given: Identity) -> Result<Result<Identity, Disconnect>, ProxyFailure> {
        let Some(uri) = &self.options.connect else { return Ok(Ok(given)) };
        let headers: Map<String, Value> = self.options.headers.iter().filter_map(|name| Some((name.clone(), Value::String(header(name)?)))).collect();
        let body = json!({ "sessionId": session_id, "headers": headers, "remoteAddress": remote });
        match self.call("connect", uri, body).await? {
            Answer::Disconnect(disconnect) => Ok(Err(disconnect)),
            Answer::Error(refusal) => Ok(Err(Disconnect { code: 4403, reason: refusal.message.unwrap_or_else(|| "Forbidden".into()) })),
            Answer::Result(result) => {
                let connected: Connected = serde_json::from_str(result.get()).map_err(|_| ProxyFailure::Garbage)?;
                Ok(Ok(Identity {
                    user_id: connected.user_id.or(given.user_id),
                    organization_id: connected.organization_id.or(given.organization_id),
                    client_id: connected.client_id.or(given.client_id),
                    metadata: connected.metadata.or(given.metadata),
                    expires_at: connected.expires_at.or(given.expires_at),
                    ..given
                }))
            }
        }
    }

    /// The verdict the backend gives on `question`.
    async fn verdict(&self, connection: &ConnectionInfo, ask: &Ask) -> Verdict {
        let (endpoint, uri, mut body) = match ask {
            Ask::Join { channel, .. } => ("join", &self.options.join, json!({ "channel": channel })),
            Ask::Publish { channel, message } => {
                let Ok(message) = serde_json::from_slice::<&RawValue>(message) else {
                    return Verdict::Refuse(Some("A message the application checks must be JSON".into()));
                };
                let mut body = json!({ "message": message });
                match channel {
                    Some(channel) => body["channel"] = json!(channel),
                    None => body["sessionId"] = json!(connection.session_id),
                }
                ("publish", &self.options.publish, body)
            }
            Ask::Refresh { .. } => return Verdict::Refuse(None),
        };
        let Some(uri) = uri else { return Verdict::Refuse(None) };
        body["connectionId"] = json!(connection.connection_id);
        body["userId"] = json!(connection.user_id);
        match self.call(endpoint, uri, body).await {
            // The replacement goes on as the backend wrote it.
            Ok(Answer::Result(result)) => match serde_json::from_str::<Replacement>(result.get()) {
                Ok(Replacement { message: Some(replacement), .. }) if endpoint == "publish" => Verdict::Replace(Bytes::copy_from_slice(replacement.get().as_bytes())),
                Ok(_) => Verdict::Allow,
                Err(_) => self.failed(endpoint, uri, ProxyFailure::Garbage),
            },
            Ok(Answer::Error(refusal)) => Verdict::Refuse(refusal.message),
            Ok(Answer::Disconnect(_)) | Err(_) => Verdict::Unavailable,
        }
    }

    /// Answers a `request` through the backend.
    pub fn request(self: &Arc<Self>, connection: ConnectionInfo, request_id: String, payload: String) {
        let proxy = self.clone();
        self.spawn(async move {
            let Some(uri) = proxy.options.request.clone() else { return };
            let body = json!({
                "connectionId": connection.connection_id,
                "userId": connection.user_id,
                "requestId": RawValue::from_string(request_id.clone()).ok(),
                "payload": RawValue::from_string(payload).ok(),
            });

            let outcome = match proxy.call("request", &uri, body).await {
                Ok(Answer::Result(result)) => match serde_json::from_str::<Replacement>(result.get()) {
                    Ok(Replacement { payload, .. }) => Ok(payload.map_or_else(|| RawValue::from_string("null".into()).expect("JSON"), |p| p.to_owned())),
                    Err(_) => Err(MessageRejection::new(ErrorCode::Unavailable, "The application did not answer")),
                },
                Ok(Answer::Error(refusal)) => Err(MessageRejection::new(ErrorCode::RequestFailed, refusal.message.unwrap_or_else(|| "The request failed".into()))),
                Ok(Answer::Disconnect(_)) | Err(_) => Err(MessageRejection::new(ErrorCode::Unavailable, "The application did not answer")),
            };
            if let Some(relay) = proxy.relay() {
                relay.respond(connection.connection_id, &request_id, outcome.as_deref(), now());
            }
        });
    }

    /// Asks the backend for a longer lifetime of a connection whose end is near; its answer's
    /// `expiresAt` renews it (and the client is told `refreshed`). Without an answer, the
    /// connection ends when its lifetime does.
    pub fn refresh(self: &Arc<Self>, connection: ConnectionInfo) {
        let Some(uri) = self.options.refresh.clone() else { return };
        let proxy = self.clone();
        self.spawn(async move {
            let body = json!({ "connectionId": connection.connection_id, "userId": connection.user_id });
            let Ok(Answer::Result(result)) = proxy.call("refresh", &uri, body).await else { return };
            match (serde_json::from_str::<Renewal>(result.get()), proxy.relay()) {
                (Ok(Renewal { expires_at }), Some(relay)) => {
                    relay.renew(connection.connection_id, expires_at, now());
                }
                (Err(_), _) => {
                    proxy.failed("refresh", &uri, ProxyFailure::Garbage);
                }
                (_, None) => {}
            }
        });
    }

    fn relay(&self) -> Option<Arc<Relay>> {
        self.relay.get().and_then(Weak::upgrade)
    }

    fn decide(&self, conn: ConnId, question: u64, verdict: Verdict) {
        if let Some(relay) = self.relay() {
            relay.decide(conn, question, verdict, now());
        }
    }
}

impl Hooks for Proxy {
    fn decides(&self) -> Decides {
        Decides { join: self.options.join.is_some(), publish: self.options.publish.is_some() }
    }

    fn ask(&self, question: Question) -> Option<Verdict> {
        let Some(proxy) = self.me.upgrade() else { return Some(Verdict::Unavailable) };
        let asked = self.spawn(async move {
            let verdict = proxy.verdict(&question.connection, &question.ask).await;
            proxy.decide(question.connection.connection_id, question.id, verdict);
        });
        if asked { None } else { Some(Verdict::Unavailable) }
    }
}
