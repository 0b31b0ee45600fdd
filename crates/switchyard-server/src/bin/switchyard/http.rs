//! The binary's HTTP side: WebSocket upgrades at `/session/{id}` and `/`, health, stats
//! and Prometheus metrics, and the admin API for sessions and broadcasts.
//!
//! Errors are JSON: `{"error":{"code":"SESSION_NOT_FOUND","message":"..."}}`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use axum::body::{Body, Bytes};
use base64::Engine as _;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use hyper::upgrade::Parts;
use hyper_util::rt::TokioIo;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use switchyard_core::{ConnectionRefusal, 
    server_message, ChannelName, ConfigReport, ConflictResolution, Frame, FrameKind, History, HistoryConfig, HostSettings, Identity,
    Millis, Position, PublishError, Route, SessionError, SessionId, SessionInfo, SessionOptions, Target, Topic,
};
use switchyard_server::engine::{Engine, Held};
use switchyard_server::admission::{self, Refused, TokenAuth, Upgrade};
use switchyard_server::auth::{self, constant_time_eq};
use switchyard_server::metrics::{self, HostGauge};
use switchyard_server::event_stream::native::{self, EventStream};
use switchyard_server::event_stream::{self, Endpoint, SendError};
use switchyard_server::listener;
use switchyard_server::path_pattern::PathPattern;
use switchyard_server::waiting::Slot;
use switchyard_server::{handshake, now, Accepted, Spawner};
use switchyard_server::socket::Socket;
use switchyard_server::tls::Tls;
use tracing::error;

pub struct App {
    /// The relay and, with `--redis-url`, its link to the other nodes.
    pub engine: Arc<Engine>,
    /// What the binary applies of its flags beside the relay's config.
    pub settings: HostSettings,
    pub spawner: Spawner,
    pub admin_token: Option<String>,
    pub auth: Option<Arc<TokenAuth>>,
    pub started: Instant,
    /// Connections that have not finished their handshake.
    pub waiting: Arc<switchyard_server::waiting::Waiting>,
    /// Wakes history long polls.
    pub events: Arc<crate::log_events::LogEvents>,
    /// The backend proxy, when a `--proxy-*-url` is given.
    pub proxy: Option<Arc<switchyard_server::proxy::Proxy>>,
    /// The webhooks, when `--webhook-url` is given.
    pub webhooks: Option<Arc<switchyard_server::webhooks::Webhooks>>,
    /// The certificate and key, when the port serves TLS.
    pub tls: Option<Arc<Tls>>,
    /// Set once the server is stopping: not ready, and new connections are refused.
    pub draining: AtomicBool,
}

type AppState = State<Arc<App>>;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", any(upgrade_sessionless))
        .route("/session/{session_id}", any(upgrade_to_session))
        .route("/events", get(events_sessionless).options(preflight))
        .route("/session/{session_id}/events", get(events_to_session).options(preflight))
        .route("/send", post(send_sessionless).options(preflight))
        .route("/session/{session_id}/send", post(send_to_session).options(preflight))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/stats", get(stats))
        .route("/admin", get(|| async { axum::response::Redirect::permanent("/admin/") }))
        .route("/admin/", get(admin_page))
        .route("/admin/stats", get(admin_stats))
        .route("/metrics", get(metrics))
        .route("/v1/sessions", post(create_session).get(list_sessions))
        .route("/v1/sessions/{session_id}", get(get_session).delete(delete_session))
        .route("/v1/sessions/{session_id}/history", get(session_history))
        .route("/v1/sessions/{session_id}/messages", post(publish_message))
        .route("/v1/sessions/{session_id}/presence", get(session_presence))
        .route("/v1/channels/{channel}/history", get(channel_history))
        .route("/v1/channels/{channel}/presence", get(channel_presence))
        .route("/v1/broadcast", post(broadcast))
        .with_state(app)
}

/// An error answer: a status and `{"error":{"code","message"}}`.
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    fn session_not_found(id: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "SESSION_NOT_FOUND", format!("No session with id {id:?}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": { "code": self.code, "message": self.message } }));
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// A WebSocket upgrade at `/` is a sessionless connection; anything else there is most
/// likely someone finding out what this server is.
async fn upgrade_sessionless(State(app): AppState, ConnectInfo(peer): ConnectInfo<SocketAddr>, request: Request) -> Response {
    if request.method() == axum::http::Method::GET && !request.headers().contains_key(header::UPGRADE) {
        return ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], ABOUT).into_response();
    }
    upgrade(app, peer, Route::Sessionless, request, Held::default()).await
}

const ABOUT: &str = concat!(
    "Switchyard ",
    env!("CARGO_PKG_VERSION"),
    ": a WebSocket session relay.\n\n",
    "WebSocket:\n",
    "  /session/{id}             join a session (create one with POST /v1/sessions)\n",
    "  /                         a sessionless connection: channels and case awareness\n",
    "  Where the upgrade is refused: GET <either path>/events (Server-Sent Events), POST <path>/send\n\n",
    "HTTP:\n",
    "  POST   /v1/sessions       create a session; answers its sessionId and wsUrl\n",
    "  GET    /v1/sessions       list sessions (admin)\n",
    "  GET    /v1/sessions/{id}  one session (admin)\n",
    "  DELETE /v1/sessions/{id}  end a session (admin)\n",
    "  POST   /v1/broadcast      send to sessions, channels or users (admin)\n",
    "  GET    /health            liveness\n",
    "  GET    /ready             readiness (503 while draining, or with the cluster's link down)\n",
    "  GET    /stats             counters as JSON\n",
    "  GET    /metrics           Prometheus metrics\n",
    "  GET    /admin/            the admin view in a browser\n\n",
    "Admin endpoints take the --admin-token as a bearer token; without one, only loopback clients.\n",
    "The wire protocol: docs/protocol.md in the switchyard package.\n",
);

/// The admin view's page: static, so it holds nothing secret; what it shows comes from
/// `/admin/stats`, which takes the admin token.
async fn admin_page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], include_str!("../../../../../admin/index.html")).into_response()
}

async fn admin_stats(state: AppState, ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorize(&state.0, peer, &headers, Access::Admin)?;
    stats(state, ConnectInfo(peer), headers).await
}

async fn upgrade_to_session(
    State(app): AppState,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(session_id): Path<String>,
    request: Request,
) -> Response {
    let held = app.engine.hold_place(&session_id).await;
    upgrade(app, peer, Route::Session(session_id), request, held).await
}

/// Why a request to join was refused before the relay saw it.
struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    /// The refusal as the event-stream routes give their errors: JSON, with a code.
    fn api_error(self) -> ApiError {
        let code = match self.status {
            StatusCode::UNAUTHORIZED => "UNAUTHORIZED",
            StatusCode::TOO_MANY_REQUESTS => "RATE_LIMITED",
            StatusCode::FORBIDDEN => "FORBIDDEN",
            _ => "UNAVAILABLE",
        };
        ApiError::new(self.status, code, self.message)
    }
}

/// A WebSocket upgrade's refusal is plain text, as it always was.
impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.message).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Who a request to join is: admission's answer (429 for an address opening connections
/// too fast, 401 without a valid token when tokens are configured), then the backend
/// proxy's when it asks (403 when it says no, 503 when it does not answer).
async fn admit(app: &App, peer: SocketAddr, route: &Route, headers: &HeaderMap, url: &str) -> Result<(Identity, Option<&'static str>), Refusal> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let upgrade = Upgrade { url: Some(url), address: Some(peer.ip()), header };
    let refusal = |status, message: String| Refusal { status, message };
    if app.draining.load(Ordering::Relaxed) {
        return Err(refusal(StatusCode::SERVICE_UNAVAILABLE, ConnectionRefusal::ShuttingDown.reason().to_owned()));
    }
    let (identity, protocol) = match admission::admit(&app.engine.relay, app.auth.as_deref(), upgrade, Identity::default()) {
        Ok(admitted) => (admitted.identity, admitted.protocol),
        Err(refused @ Refused::TooManyConnections) => return Err(refusal(StatusCode::TOO_MANY_REQUESTS, refused.to_string())),
        Err(refused @ Refused::Unauthorized(_)) => return Err(refusal(StatusCode::UNAUTHORIZED, refused.to_string())),
    };
    let identity = match &app.proxy {
        Some(proxy) if proxy.asks_connect() => {
            let session = match route {
                Route::Session(id) => Some(id.as_str()),
                Route::Sessionless => None,
            };
            let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
            match proxy.connect(session, header, Some(peer.ip().to_string()), identity).await {
                Ok(Ok(identity)) => identity,
                Ok(Err(disconnect)) => return Err(refusal(StatusCode::FORBIDDEN, disconnect.reason)),
                Err(_) => return Err(refusal(StatusCode::SERVICE_UNAVAILABLE, "The application did not answer".to_owned())),
            }
        }
        _ => identity,
    };
    Ok((identity, protocol))
}

/// Answers a WebSocket handshake with 101 and hands the upgraded connection to the relay,
/// or refuses it as [`admit`] says, or 400 for a bad handshake.
async fn upgrade(app: Arc<App>, peer: SocketAddr, route: Route, request: Request, held: Held) -> Response {
    let (mut parts, _body) = request.into_parts();
    let url = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let (identity, protocol) = match admit(&app, peer, &route, &parts.headers, &url).await {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.into_response(),
    };
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let accept = match handshake::accept(parts.method.as_str(), header) {
        Ok(accept) => accept,
        Err(error) => {
            app.engine.relay.handshake_failed();
            let mut response = (StatusCode::BAD_REQUEST, error.to_string()).into_response();
            if error == handshake::HandshakeError::UnsupportedVersion {
                response.headers_mut().insert("sec-websocket-version", HeaderValue::from_static("13"));
            }
            return response;
        }
    };
    let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        app.engine.relay.handshake_failed();
        return (StatusCode::BAD_REQUEST, "This connection cannot be upgraded").into_response();
    };
    let deflate = app.spawner.negotiate(header("sec-websocket-extensions"));
    let spawner = app.spawner.clone();
    spawner.tasks.spawn(async move {
        // The socket itself, out of hyper's box, with what hyper read past the request:
        // a connection costs less and writes without a virtual call. (An upgrade that
        // fails is a client gone before it completed.)
        let Ok(upgraded) = on_upgrade.await else { return };
        match upgraded.downcast::<TokioIo<Socket>>() {
            Ok(Parts { io, read_buf, .. }) => {
                let accepted = Accepted { io: io.into_inner(), preface: Vec::new(), head: read_buf, route, identity, deflate };
                app.engine.join(&app.spawner, accepted, held);
            }
            // accept.rs serves every connection as a `Socket`; were that to change, this
            // says so rather than dropping connections unseen.
            Err(_) => error!("an upgraded connection is not a Socket; closed"),
        }
    });
    let mut response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept);
    if let Some(protocol) = protocol {
        response = response.header(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    if let Some(deflate) = deflate {
        response = response.header(header::SEC_WEBSOCKET_EXTENSIONS, deflate.response());
    }
    response.body(Body::empty()).expect("a valid response")
}

async fn events_sessionless(State(app): AppState, ConnectInfo(peer): ConnectInfo<SocketAddr>, request: Request) -> Response {
    with_cors(event_stream(app, peer, Route::Sessionless, request).await)
}

async fn events_to_session(
    State(app): AppState,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(session_id): Path<String>,
    request: Request,
) -> Response {
    with_cors(event_stream(app, peer, Route::Session(session_id), request).await)
}

/// A member over Server-Sent Events, for clients whose network refuses the upgrade:
/// admitted as an upgrade is, then its stream (`200 text/event-stream`), or the refusal as
/// the HTTP API's error (404 no such session, 409 full). Most streams are served by
/// [`raw_event_stream`] instead; this serves those whose request line came in pieces.
async fn event_stream(app: Arc<App>, peer: SocketAddr, route: Route, request: Request) -> Response {
    let (parts, _body) = request.into_parts();
    let url = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let last_event_id = parts.headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let url = event_stream::resume_url(url, last_event_id).into_owned();
    let identity = match admit(&app, peer, &route, &parts.headers, &url).await {
        Ok((identity, _)) => identity,
        Err(refusal) => return refusal.api_error().into_response(),
    };
    match EventStream::open(&app.engine, route, identity, event_stream::send_url(&url)).await {
        Ok(stream) => {
            let mut response = Response::new(Body::from_stream(Chunks(stream)));
            for (name, value) in event_stream::HEADERS {
                response.headers_mut().insert(name, HeaderValue::from_static(value));
            }
            response
        }
        Err(refusal) => {
            let (status, code) = event_stream::refusal_status(refusal);
            ApiError::new(StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN), code, refusal.to_string()).into_response()
        }
    }
}

/// An event stream on a connection that opened with its request (see accept.rs), served
/// without hyper: its place among the waiting handshakes is given up once it is open.
pub async fn raw_event_stream(app: Arc<App>, tcp: Socket, peer: SocketAddr, request: listener::Request, slot: Slot) {
    match open_raw_event_stream(&app, peer, &request).await {
        // A task of its own, so that the stream holds only what it needs, not this
        // connection's task (sized for an HTTP connection) nor its request.
        Ok(stream) => {
            drop(slot);
            app.spawner.tasks.spawn(native::serve(tcp, native::response_head(), stream));
        }
        Err(error) => listener::answer(tcp, native::http_answer(error.status.as_u16(), error.code, &error.message, false)).await,
    }
}

async fn open_raw_event_stream(app: &Arc<App>, peer: SocketAddr, request: &listener::Request) -> Result<EventStream, ApiError> {
    let route = match Endpoint::split(&request.url) {
        Some((base, Endpoint::Events)) if base.split('?').next() == Some("/") => Some(Route::Sessionless),
        Some((base, Endpoint::Events)) => SESSION_PATH.route(&base),
        _ => None,
    };
    let route = route.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "Event streams are at /session/<id>/events and /events"))?;
    let mut headers = HeaderMap::new();
    for (name, value) in request.headers_as_node_folds_them() {
        if let (Ok(name), Ok(value)) = (header::HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value)) {
            headers.insert(name, value);
        }
    }
    let url = event_stream::resume_url(&request.url, request.header("last-event-id")).into_owned();
    let (identity, _) = admit(app, peer, &route, &headers, &url).await.map_err(Refusal::api_error)?;
    EventStream::open(&app.engine, route, identity, event_stream::send_url(&url)).await.map_err(|refusal| {
        let (status, code) = event_stream::refusal_status(refusal);
        ApiError::new(StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN), code, refusal.to_string())
    })
}

/// The binary's WebSocket path for sessions, which event streams stand beside.
static SESSION_PATH: LazyLock<PathPattern> = LazyLock::new(|| PathPattern::parse("/session/:sessionId").expect("a valid pattern"));

/// A stream's text as a response body.
struct Chunks(EventStream);

impl futures_core::Stream for Chunks {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<Self::Item>> {
        std::pin::Pin::new(&mut self.0).poll_next(cx).map(|chunk| chunk.map(Ok))
    }
}

async fn send_sessionless(State(app): AppState, headers: HeaderMap, body: Body) -> Response {
    with_cors(send(&app, Route::Sessionless, &headers, body).await.into_response())
}

async fn send_to_session(State(app): AppState, Path(session_id): Path<String>, headers: HeaderMap, body: Body) -> Response {
    with_cors(send(&app, Route::Session(session_id), &headers, body).await.into_response())
}

/// An event-stream member's frames: 202 when taken, else the HTTP API's error.
async fn send(app: &App, route: Route, headers: &HeaderMap, body: Body) -> Result<StatusCode, ApiError> {
    let limit = event_stream::body_limit(&app.engine.relay);
    let too_large = || {
        let error = SendError::TooLarge(limit);
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, error.code(), error.to_string())
    };
    let body = axum::body::to_bytes(body, limit).await.map_err(|_| too_large())?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let content_type = header(header::CONTENT_TYPE.as_str());
    event_stream::send(&app.engine.relay, &app.engine.send_tokens, &route, header(event_stream::SEND_TOKEN_HEADER), content_type, body)
        .map(|_| StatusCode::ACCEPTED)
        .map_err(|error| ApiError::new(StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_REQUEST), error.code(), error.to_string()))
}

/// A browser's question before a send or stream from a page of another origin.
async fn preflight() -> Response {
    with_cors(StatusCode::NO_CONTENT.into_response())
}

fn with_cors(mut response: Response) -> Response {
    for (name, value) in event_stream::CORS {
        response.headers_mut().insert(name, HeaderValue::from_static(value));
    }
    response
}

/// 200 while the process serves: `"status":"degraded"` (still 200, since the node still
/// relays among its own clients) while the cluster's Redis is unreachable.
async fn health(State(app): AppState) -> Json<Value> {
    let cluster = app.engine.relay.cluster();
    let status = if cluster.as_ref().is_some_and(|c| !c.connected) { "degraded" } else { "ok" };
    let mut answer = json!({ "status": status, "uptimeMs": app.started.elapsed().as_millis() as u64 });
    if let Some(cluster) = cluster {
        answer["cluster"] = json!({ "nodeId": &*cluster.node_id, "connected": cluster.connected, "peers": cluster.peers });
    }
    Json(answer)
}

/// Readiness: whether new connections are welcome here. Not while draining, nor, in a
/// cluster, while the link to Redis is down (a member here would not reach the others).
async fn ready(State(app): AppState) -> (StatusCode, Json<Value>) {
    let not_ready = if app.draining.load(Ordering::Relaxed) {
        Some("draining")
    } else if app.engine.relay.cluster().is_some_and(|cluster| !cluster.connected) {
        Some("the link to the cluster is down")
    } else {
        None
    };
    match not_ready {
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "ready": false, "reason": reason }))),
        None => (StatusCode::OK, Json(json!({ "ready": true }))),
    }
}

async fn stats(State(app): AppState, ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorize(&app, peer, &headers, Access::Monitoring)?;
    let report = app.engine.relay.report(now());
    let uptime_ms = app.started.elapsed().as_millis() as u64;
    let mut answer = json!({
        "uptimeMs": uptime_ms,
        "pendingHandshakes": app.waiting.count(),
        // The awareness service's getStats() named these so; its clients still read them.
        "uptime": uptime_ms,
        "connections": report.active_connections,
        "sessions": report.active_sessions,
    });
    if let (Some(answer), Ok(Value::Object(report))) = (answer.as_object_mut(), serde_json::to_value(report)) {
        answer.extend(report);
    }
    answer["config"] = serde_json::to_value(ConfigReport::new(app.engine.relay.config(), app.settings.clone())).unwrap_or_default();
    answer["compression"] = serde_json::to_value(app.spawner.compression().counts()).unwrap_or_default();
    if let Some(webhooks) = &app.webhooks {
        answer["webhooks"] = serde_json::to_value(webhooks.counts()).unwrap_or_default();
    }
    if let Some(proxy) = &app.proxy {
        answer["proxy"] = json!({ "waiting": proxy.waiting(), "failures": proxy.failures() });
    }
    Ok(Json(answer))
}

async fn metrics(State(app): AppState, ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap) -> Result<impl IntoResponse, ApiError> {
    authorize(&app, peer, &headers, Access::Monitoring)?;
    let mut host = vec![
        HostGauge { name: "pending_handshakes", help: "Connections that have not finished their handshake.", value: app.waiting.count() as f64 },
        HostGauge { name: "uptime_seconds", help: "Seconds since the server started.", value: app.started.elapsed().as_secs_f64() },
    ];
    host.extend(app.webhooks.iter().flat_map(|webhooks| webhooks.gauges()));
    host.extend(app.proxy.iter().flat_map(|proxy| proxy.gauges()));
    let text = metrics::render(&app.engine.relay, app.engine.relay.health(now()), host);
    Ok(([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text))
}

/// Who may call an endpoint.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Changes state or shows session ids (which are what it takes to join a session):
    /// the admin token when one is set, else loopback clients only.
    Admin,
    /// Counters: the admin token when one is set, else anyone.
    Monitoring,
}

/// Checks the admin token when one is configured; without one, `Admin` endpoints take
/// only loopback peers.
fn authorize(app: &App, peer: SocketAddr, headers: &HeaderMap, access: Access) -> Result<(), ApiError> {
    match &app.admin_token {
        Some(token) => {
            let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(auth::bearer_token);
            match given {
                Some(given) if constant_time_eq(given.as_bytes(), token.as_bytes()) => Ok(()),
                _ => Err(ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "A valid Authorization: Bearer token is required")),
            }
        }
        None if access == Access::Monitoring || peer.ip().is_loopback() => Ok(()),
        None => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "Admin endpoints accept only loopback clients unless an admin token is set (--admin-token)",
        )),
    }
}


/// Parses a JSON body; an empty body reads as `{}`.
fn parse_body<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, ApiError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { body };
    serde_json::from_slice::<serde::de::IgnoredAny>(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "INVALID_JSON", format!("The body is not valid JSON: {e}")))?;
    serde_json::from_slice(body).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", e.to_string()))
}

fn iso(ms: Millis) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms as i64).unwrap_or_default().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// What a session id must escape to be one URL path segment: RFC 3986's path-segment set
/// leaves unreserved characters, sub-delimiters, `:` and `@` as they are.
const PATH_SEGMENT: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'#').add(b'%').add(b'/').add(b'<').add(b'>').add(b'?').add(b'[')
    .add(b'\\').add(b']').add(b'^').add(b'`').add(b'{').add(b'|').add(b'}');

/// `ws://<host>/session/<id>`, from the request's Host (and a proxy's `X-Forwarded-Proto`).
fn ws_url(headers: &HeaderMap, session_id: &str) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let secure = headers.get("x-forwarded-proto").is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"));
    let segment = utf8_percent_encode(session_id, PATH_SEGMENT);
    Some(format!("{}://{host}/session/{segment}", if secure { "wss" } else { "ws" }))
}

fn session_json(info: SessionInfo, headers: &HeaderMap) -> Value {
    json!({
        "sessionId": info.session_id.as_str(),
        "wsUrl": ws_url(headers, info.session_id.as_str()),
        "createdAt": iso(info.created_at),
        "expiresAt": iso(info.expires_at),
        "clientCount": info.client_count,
        "lastActivity": iso(info.last_activity),
        "metadata": info.metadata,
        "activeClientId": info.active_client_id,
        "conflictResolution": info.conflict_resolution.as_str(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CreateSession {
    session_id: Option<String>,
    expires_in: Option<u64>,
    metadata: Option<Value>,
    max_clients: Option<usize>,
    conflict_resolution: Option<String>,
    history: Option<HistoryBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct HistoryBody {
    size: usize,
    ttl_ms: u64,
}

async fn create_session(
    State(app): AppState,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    authorize(&app, peer, &headers, Access::Admin)?;
    let request: CreateSession = parse_body(&body)?;
    let conflict_resolution = match request.conflict_resolution.as_deref() {
        None => None,
        Some(name) => Some(ConflictResolution::from_name(name).ok_or_else(|| {
            let names = ConflictResolution::NAMES.join(", ");
            ApiError::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", format!("conflictResolution must be one of {names}, got {name:?}"))
        })?),
    };
    let options = SessionOptions {
        session_id: request.session_id,
        expires_in_ms: request.expires_in,
        metadata: request.metadata,
        max_clients: request.max_clients,
        conflict_resolution,
        history: request.history.map(|h| HistoryConfig { size: h.size, ttl_ms: h.ttl_ms }),
    };
    // An id given by the caller is claimed across the cluster first: two nodes creating
    // the same id at once cannot both succeed.
    if let (Some(cluster), Some(id)) = (&app.engine.cluster, options.session_id.as_deref().filter(|id| !id.is_empty())) {
        let id = SessionId::parse(id).map_err(|err| ApiError::new(StatusCode::BAD_REQUEST, "INVALID_SESSION_ID", err.to_string()))?;
        if app.engine.relay.session(id.as_str()).is_none() && !cluster.claim(id.clone()).await {
            return Err(ApiError::new(StatusCode::CONFLICT, "SESSION_EXISTS", format!("session {:?} already exists", id.as_str())));
        }
    }
    let info = app.engine.relay.create_session(options, now()).map_err(|err| match err {
        SessionError::AlreadyExists(_) => ApiError::new(StatusCode::CONFLICT, "SESSION_EXISTS", err.to_string()),
        SessionError::InvalidId(_) => ApiError::new(StatusCode::BAD_REQUEST, "INVALID_SESSION_ID", err.to_string()),
        SessionError::InvalidOption(_) => ApiError::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", err.to_string()),
        SessionError::TooMany(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "SESSION_LIMIT", err.to_string()),
        SessionError::Unavailable => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", err.to_string()),
    })?;
    if let Some(cluster) = &app.engine.cluster {
        cluster.settled().await;
    }
    Ok((StatusCode::CREATED, Json(session_json(info, &headers))))
}

/// `GET /v1/sessions?limit=&after=`: a page of sessions in order of id.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    limit: Option<usize>,
    after: Option<String>,
}

/// A query string that does not parse: 400 `INVALID_REQUEST`, saying why.
fn bad_query(err: QueryRejection) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", err.body_text())
}

/// Sessions per page unless `limit` says otherwise, and the most it may say.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

async fn list_sessions(
    State(app): AppState,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    page: Result<Query<Page>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&app, peer, &headers, Access::Admin)?;
    let Query(page) = page.map_err(bad_query)?;
    let limit = page.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", format!("limit must be from 1 to {MAX_PAGE}")));
    }
    let (sessions, more) = app.engine.relay.sessions_page(page.after.as_deref(), limit);
    let next = more.then(|| sessions.last().map(|s| s.session_id.to_string())).flatten();
    let sessions: Vec<Value> = sessions.into_iter().map(|s| session_json(s, &headers)).collect();
    Ok(Json(json!({ "sessions": sessions, "next": next })))
}

async fn get_session(
    State(app): AppState,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(session_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&app, peer, &headers, Access::Admin)?;
    app.engine.learn_session(&session_id).await;
    let info = app.engine.relay.session(&session_id).ok_or_else(|| ApiError::session_not_found(&session_id))?;
    Ok(Json(session_json(info, &headers)))
}

async fn delete_session(
    State(app): AppState,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(session_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&app, peer, &headers, Access::Admin)?;
    if !app.engine.relay.delete_session(&session_id, now()) {
        return Err(ApiError::session_not_found(&session_id));
    }
    Ok(Json(json!({ "deleted": true })))
}

/// What the HTTP fallback needs to read or publish: a session id is what it takes to join
/// a session, as over WebSocket, and with token auth the same token (as a bearer token or
/// `?token=`).
fn authorize_member(app: &App, request: &Request) -> Result<Identity, ApiError> {
    let Some(auth) = &app.auth else { return Ok(Identity::default()) };
    let url = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
    auth.identify(url, header)
        .map(|found| found.map(|(identity, _)| identity).unwrap_or_default())
        .map_err(|refused| ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", refused.to_string()))
}

/// What a history request asks: `since`, checked, and `limit`, within bounds.
fn history_request(query: &HistoryQuery) -> Result<(Option<Position>, usize), ApiError> {
    let since = match query.since.as_deref() {
        None => None,
        Some(text) => Some(Position::parse(text).ok_or_else(|| {
            ApiError::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", format!("since must be <epoch>:<offset>, got {text:?}"))
        })?),
    };
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", format!("limit must be from 1 to {MAX_PAGE}")));
    }
    Ok((since, limit))
}

/// A channel name that this identity may read, or why not (as `JOIN_CHANNEL` would refuse).
fn readable_channel(app: &App, channel: &str, identity: &Identity) -> Result<(), ApiError> {
    app.engine.relay.may_join(channel, identity).map_err(|refused| {
        let status = if refused.code == switchyard_core::ErrorCode::ChannelForbidden { StatusCode::FORBIDDEN } else { StatusCode::BAD_REQUEST };
        ApiError::new(status, refused.code.as_str(), refused.message.into_owned())
    })
}

/// `GET /v1/channels/{name}/history?since=&limit=`: a channel's kept publications.
async fn channel_history(
    State(app): AppState,
    Path(channel): Path<String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    let identity = authorize_member(&app, &request)?;
    readable_channel(&app, &channel, &identity)?;
    let Query(query) = query.map_err(bad_query)?;
    let (since, limit) = history_request(&query)?;
    let _watch = app.engine.watch(ChannelName::parse(&channel).ok().map(Topic::Channel)).await;
    let history = app.engine.relay.channel_history(&channel, since.as_ref(), limit, now()).map_err(|r| ApiError::new(StatusCode::BAD_REQUEST, r.code.as_str(), r.message.into_owned()))?;
    Ok(Json(history_json(history)))
}

/// `GET /v1/channels/{name}/presence`: a channel's members.
async fn channel_presence(State(app): AppState, Path(channel): Path<String>, request: Request) -> Result<Json<Value>, ApiError> {
    let identity = authorize_member(&app, &request)?;
    readable_channel(&app, &channel, &identity)?;
    let clients = app.engine.relay.channel_presence_of(&channel).map_err(|r| ApiError::new(StatusCode::BAD_REQUEST, r.code.as_str(), r.message.into_owned()))?;
    Ok(Json(json!({ "clients": clients.iter().map(|c| (**c).clone()).collect::<Vec<_>>() })))
}

/// A history request's query; other parameters (`token`, read from the URL by
/// [`authorize_member`]) are left alone.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HistoryQuery {
    since: Option<String>,
    limit: Option<usize>,
    wait_ms: Option<u64>,
}

/// How long a history long poll may wait at most.
const MAX_WAIT_MS: u64 = 60_000;

/// `GET /v1/sessions/{id}/history?since=&limit=&waitMs=`: the publications after `since`;
/// with `waitMs`, waits up to that long for one when there is none yet.
async fn session_history(
    State(app): AppState,
    Path(session_id): Path<String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    authorize_member(&app, &request)?;
    let Query(query) = query.map_err(bad_query)?;
    let (since, limit) = history_request(&query)?;
    app.engine.learn_session(&session_id).await;
    let _watch = app.engine.watch(SessionId::parse(&session_id).ok().map(Topic::Session)).await;
    let wait = std::time::Duration::from_millis(query.wait_ms.unwrap_or(0).min(MAX_WAIT_MS));
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        // Listening before looking, so a publication between the two is not missed.
        let published = app.events.published.notified();
        tokio::pin!(published);
        published.as_mut().enable();
        let history = app.engine.relay.history(&session_id, since.as_ref(), limit, now()).ok_or_else(|| ApiError::session_not_found(&session_id))?;
        let waiting = history.recovered && history.publications.is_empty() && history.position.is_some();
        if !waiting || tokio::time::timeout_at(deadline, published).await.is_err() {
            return Ok(Json(history_json(history)));
        }
    }
}

fn history_json(history: History) -> Value {
    let publications: Vec<Value> = history
        .publications
        .iter()
        .map(|p| {
            let mut entry = json!({ "offset": p.offset, "from": &*p.from, "timestamp": p.timestamp });
            match p.frame.kind {
                FrameKind::Binary => entry["binary"] = json!(base64::engine::general_purpose::STANDARD.encode(&p.frame.payload)),
                FrameKind::Text | FrameKind::Ping => entry["data"] = serde_json::from_slice(&p.frame.payload).unwrap_or(Value::Null),
            }
            entry
        })
        .collect();
    json!({
        "epoch": history.position.as_ref().map(|p| &*p.epoch),
        "offset": history.position.as_ref().map_or(0, |p| p.offset),
        "recovered": history.recovered,
        "publications": publications,
    })
}

/// `POST /v1/sessions/{id}/messages`: publishes the body (a message with a string `type`)
/// to the session, as the connected member its `clientId` names, else as the server.
async fn publish_message(State(app): AppState, Path(session_id): Path<String>, request: Request) -> Result<Json<Value>, ApiError> {
    authorize_member(&app, &request)?;
    let body = axum::body::to_bytes(request.into_body(), app.engine.relay.config().max_message_bytes)
        .await
        .map_err(|_| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "MESSAGE_TOO_LARGE", "The message is larger than --max-message-bytes"))?;
    #[derive(Deserialize)]
    struct Member {
        #[serde(rename = "clientId")]
        client_id: Option<String>,
    }
    let member: Member = serde_json::from_slice(&body).map_err(|err| ApiError::new(StatusCode::BAD_REQUEST, "INVALID_JSON", err.to_string()))?;
    match app.engine.relay.publish(&session_id, Frame::text(body), member.client_id.as_deref(), now()) {
        Ok((delivered, offset)) => Ok(Json(json!({ "offset": offset, "delivered": delivered }))),
        Err(PublishError::SessionNotFound) => Err(ApiError::session_not_found(&session_id)),
        Err(PublishError::Refused(refused)) => {
            let status = match refused.code {
                switchyard_core::ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
                switchyard_core::ErrorCode::NotActive => StatusCode::FORBIDDEN,
                _ => StatusCode::BAD_REQUEST,
            };
            Err(ApiError::new(status, refused.code.as_str(), refused.message.into_owned()))
        }
        Err(err) => Err(ApiError::new(StatusCode::BAD_REQUEST, "INVALID_MESSAGE", err.to_string())),
    }
}

/// `GET /v1/sessions/{id}/presence`: who is in the session now.
async fn session_presence(State(app): AppState, Path(session_id): Path<String>, request: Request) -> Result<Json<Value>, ApiError> {
    authorize_member(&app, &request)?;
    let clients = app.engine.relay.presence(&session_id).ok_or_else(|| ApiError::session_not_found(&session_id))?;
    let clients: Vec<Value> = clients
        .into_iter()
        .map(|c| {
            json!({
                "connectionId": c.connection_id.to_string(),
                "clientId": c.client_id,
                "userId": c.user_id,
                "organizationId": c.organization_id,
                "role": c.role,
                "connectedAt": c.connected_at,
            })
        })
        .collect();
    Ok(Json(json!({ "clients": clients })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Broadcast {
    session_id: Option<String>,
    channel: Option<String>,
    user_id: Option<String>,
    organization_id: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    data: Option<Box<RawValue>>,
}

/// Sends `{"type","channel","data","timestamp"}` to every connection matching all the
/// targets given (at least one), answering how many it reached.
async fn broadcast(
    State(app): AppState,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    authorize(&app, peer, &headers, Access::Admin)?;
    let request: Broadcast = parse_body(&body)?;
    if request.session_id.is_none() && request.channel.is_none() && request.user_id.is_none() && request.organization_id.is_none() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "Give at least one of sessionId, channel, userId, organizationId",
        ));
    }
    if let Some(session_id) = &request.session_id {
        if app.engine.relay.session(session_id).is_none() {
            return Err(ApiError::session_not_found(session_id));
        }
    }
    if let Some(channel) = &request.channel {
        ChannelName::parse(channel).map_err(|r| ApiError::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", r.message))?;
    }
    let data = request.data.as_deref().unwrap_or(RawValue::NULL);
    let message = server_message(&request.kind, request.channel.as_deref(), data, now());
    let target = Target {
        session_id: request.session_id.as_deref(),
        channel: request.channel.as_deref(),
        user_id: request.user_id.as_deref(),
        organization_id: request.organization_id.as_deref(),
        except: None,
    };
    Ok(Json(json!({ "delivered": app.engine.relay.send(&target, message, now()) })))
}
