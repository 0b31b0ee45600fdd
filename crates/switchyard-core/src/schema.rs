//! The option schema: every setting of the relay, the `switchyard` binary and the Node
//! addon, declared once, in [`SETTINGS`].
//!
//! Each entry names the setting as each surface spells it (the addon's JS option path,
//! the binary's flags and environment variable), its kind, default, bounds and meaning.
//! [`Config::default`](crate::Config) takes its defaults from here, the addon reads its
//! bounds from here, and `docs/configuration.md` is rendered from here
//! ([`reference_page`]). What cannot come from here is checked against it by a test: the
//! binary's clap flags (in the binary), the typings of the addon's config
//! (`__test__/options.test.js`) and the rendered page (`tests/reference_page.rs`).

mod page;

pub use page::reference_page;

use crate::policies::{AckPolicy, ConflictResolution, SlowConsumerPolicy};

/// A setting's value when it is not given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultValue {
    /// Absent: what it turns on stays off, what it names stays unnamed.
    Unset,
    /// A whole number, in the setting's [`Kind`] (ms, seconds, bytes or a count).
    Number(u64),
    /// A flag's state.
    Bool(bool),
    /// A string: a name, an address or one of a [`Kind::Choice`]'s names.
    Text(&'static str),
    /// Worked out when the process starts, as these words say.
    Said(&'static str),
}

impl DefaultValue {
    /// The number of a [`DefaultValue::Number`]; asking it of another default is a mistake in
    /// the schema, which the tests that build a default config catch.
    pub const fn number(self) -> u64 {
        match self {
            DefaultValue::Number(n) => n,
            _ => panic!("this default is not a number"),
        }
    }

    /// The value of a [`DefaultValue::Bool`], as [`DefaultValue::number`].
    pub const fn boolean(self) -> bool {
        match self {
            DefaultValue::Bool(b) => b,
            _ => panic!("this default is not a boolean"),
        }
    }
}

/// What a setting's value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// On or off.
    Bool,
    /// Whole milliseconds.
    Millis,
    /// Whole seconds.
    Seconds,
    /// Whole bytes.
    Bytes,
    /// A whole number of things.
    Count,
    /// A number greater than 0, fractions allowed: a rate per second or a burst.
    Rate,
    /// Any string.
    Text,
    /// One of these names.
    Choice(&'static [&'static str]),
    /// Some strings: an array in JS; a repeated flag, or one separated by commas.
    List,
    /// A JavaScript function (the addon's hooks).
    Function,
}

/// The whole numbers a setting accepts, both ends included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// The smallest value accepted.
    pub min: u64,
    /// The largest value accepted.
    pub max: u64,
}

/// Durations JS could hold: far past any useful one, inside a JS number's exact range.
pub const MS: Range = Range { min: 1, max: 1 << 50 };
/// Intervals the addon hands to a JS timer, which fires at once past 2^31 - 1 ms.
pub const TIMER_MS: Range = Range { min: 1, max: i32::MAX as u64 };
/// Sizes in bytes: up to 1 TiB.
pub const BYTES: Range = Range { min: 1, max: 1 << 40 };
/// Counts of things: whatever fits a `u32`, from 1.
pub const COUNT: Range = Range { min: 1, max: u32::MAX as u64 };
/// What the binary's whole-number flags accept unless they say otherwise.
pub const POSITIVE: Range = Range { min: 1, max: u64::MAX };

/// How the `switchyard` binary takes a setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flag {
    /// Without its `--`.
    pub long: &'static str,
    /// The one-letter flag, without its `-`; `None` when it has none.
    pub short: Option<char>,
    /// The environment variable that sets it when the flag is not given.
    pub env: &'static str,
    /// The binary's default, where it is not the setting's.
    pub default: Option<DefaultValue>,
    /// The binary's bounds, where they are not the setting's.
    pub range: Option<Range>,
}

impl Flag {
    const fn new(long: &'static str, env: &'static str) -> Self {
        Self { long, short: None, env, default: None, range: None }
    }

    const fn short(self, short: char) -> Self {
        Self { short: Some(short), ..self }
    }

    /// The binary's numbers are 64-bit and need no JS bound.
    const fn unbounded(self) -> Self {
        Self { range: Some(POSITIVE), ..self }
    }

    const fn range(self, range: Range) -> Self {
        Self { range: Some(range), ..self }
    }

    const fn default(self, default: DefaultValue) -> Self {
        Self { default: Some(default), ..self }
    }
}

/// One setting, as every surface that has it spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setting {
    /// The path of the addon's option in `new RelaySessionManager(config)`
    /// (`rateLimit.perUser.burst`); `None` when only the binary has it.
    pub js: Option<&'static str>,
    /// `None` when only the addon has it.
    pub flag: Option<Flag>,
    /// What its value is.
    pub kind: Kind,
    /// Its value when not given (the addon's, and the binary's unless its flag says otherwise).
    pub default: DefaultValue,
    /// For whole numbers: what the addon (and the binary, unless its flag says otherwise)
    /// accepts.
    pub range: Option<Range>,
    /// What it does, in one line.
    pub doc: &'static str,
}

impl Setting {
    const fn new(js: &'static str, flag: Flag, kind: Kind, default: DefaultValue, doc: &'static str) -> Self {
        Self { js: Some(js), flag: Some(flag), kind, default, range: None, doc }
    }

    const fn binary(flag: Flag, kind: Kind, default: DefaultValue, doc: &'static str) -> Self {
        Self { js: None, flag: Some(flag), kind, default, range: None, doc }
    }

    const fn addon(js: &'static str, kind: Kind, default: DefaultValue, doc: &'static str) -> Self {
        Self { js: Some(js), flag: None, kind, default, range: None, doc }
    }

    const fn range(self, range: Range) -> Self {
        Self { range: Some(range), ..self }
    }

    /// The last part of the JS path: the name the addon's errors use.
    pub fn js_name(&self) -> Option<&'static str> {
        self.js.map(|path| path.rsplit('.').next().unwrap_or(path))
    }

    /// The binary's default: the flag's own, or the setting's.
    pub fn binary_default(&self) -> Option<DefaultValue> {
        self.flag.map(|flag| flag.default.unwrap_or(self.default))
    }

    /// The binary's bounds: the flag's own, or the setting's.
    pub fn binary_range(&self) -> Option<Range> {
        self.flag.and_then(|flag| flag.range.or(self.range))
    }
}

/// The names directly under `parent` in the addon's config (`""` for its top level,
/// `"rateLimit"` for `{ messagesPerSecond, burst, perUser, maxViolations }`), in the
/// schema's order: what the addon's reader accepts there.
pub fn js_names_under(parent: &str) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Vec::new();
    for path in SETTINGS.iter().filter_map(|s| s.js) {
        let rest = if parent.is_empty() { Some(path) } else { path.strip_prefix(parent).and_then(|r| r.strip_prefix('.')) };
        if let Some(name) = rest.and_then(|r| r.split('.').next()) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

use DefaultValue::{Bool, Number, Said, Text, Unset};

/// `--port`, `-p`: the port the binary listens on.
pub const PORT: Setting = Setting::binary(Flag::new("port", "PORT").short('p'), Kind::Count, Number(8765), "Port to listen on.")
    .range(Range { min: 0, max: u16::MAX as u64 });
/// `--host`, `-h`: the address the binary binds to.
pub const HOST: Setting =
    Setting::binary(Flag::new("host", "HOST").short('h'), Kind::Text, Text("0.0.0.0"), "Address to bind to (help is --help).");
/// `--handshake-timeout`: how long a connection may take to send its HTTP request, in ms.
pub const HANDSHAKE_TIMEOUT_MS: Setting = Setting::binary(
    Flag::new("handshake-timeout", "HANDSHAKE_TIMEOUT"),
    Kind::Millis,
    Number(10_000),
    "How long a connection may take to send its HTTP request (a WebSocket handshake or an API call); a slower one is closed.",
)
.range(POSITIVE);
/// `--max-pending-handshakes`: connections that may wait for their handshake at once.
pub const MAX_PENDING_HANDSHAKES: Setting = Setting::binary(
    Flag::new("max-pending-handshakes", "MAX_PENDING_HANDSHAKES"),
    Kind::Count,
    Number(4096),
    "Connections that may wait for their handshake at once; more are closed at once.",
)
.range(POSITIVE);
/// `--max-pending-handshakes-per-ip`: handshakes one address may have waiting at once.
pub const MAX_PENDING_HANDSHAKES_PER_IP: Setting = Setting::binary(
    Flag::new("max-pending-handshakes-per-ip", "MAX_PENDING_HANDSHAKES_PER_IP"),
    Kind::Count,
    Number(256),
    "Connections one address may have waiting for their handshake at once.",
)
.range(POSITIVE);
/// `--listen-backlog`: the listen backlog asked of the kernel.
pub const LISTEN_BACKLOG: Setting = Setting::binary(
    Flag::new("listen-backlog", "LISTEN_BACKLOG"),
    Kind::Count,
    Number(4096),
    "Connections the kernel may hold for the server to accept (the listen backlog; the kernel may cap it).",
)
.range(COUNT);
/// `--shutdown-timeout`: how long a stopping server waits for its connections to close, in ms.
pub const SHUTDOWN_TIMEOUT_MS: Setting = Setting::binary(
    Flag::new("shutdown-timeout", "SHUTDOWN_TIMEOUT"),
    Kind::Millis,
    Number(4_500),
    "How long a stopping server waits for its connections to finish closing before it drops them.",
)
.range(POSITIVE);
/// `--shutdown-grace`: how long a stopping server drains, in ms.
pub const SHUTDOWN_GRACE_MS: Setting = Setting::binary(
    Flag::new("shutdown-grace", "SHUTDOWN_GRACE"),
    Kind::Millis,
    Number(0),
    "How long a stopping server drains: /ready answers 503 and new connections are refused at once, and open ones are closed with 1012 spread over this time, so that they reconnect to other nodes a few at a time.",
)
.range(Range { min: 0, max: u64::MAX });
/// `--tls-cert`: the PEM certificate chain the binary serves TLS with.
pub const TLS_CERT: Setting = Setting::binary(
    Flag::new("tls-cert", "TLS_CERT"),
    Kind::Text,
    Unset,
    "PEM file of the certificate chain to serve TLS with (wss://, https://), with --tls-key; SIGHUP reads both again.",
);
/// `--tls-key`: the PEM private key of `--tls-cert`.
pub const TLS_KEY: Setting =
    Setting::binary(Flag::new("tls-key", "TLS_KEY"), Kind::Text, Unset, "PEM file of the certificate's private key (PKCS#8, PKCS#1 or SEC1).");
/// `--config`: the TOML file the binary's settings are read from.
pub const CONFIG_FILE: Setting = Setting::binary(
    Flag::new("config", "SWITCHYARD_CONFIG"),
    Kind::Text,
    Unset,
    "TOML file of settings: every flag a key, with _ for -; the environment and flags override it.",
);
/// `--strict`: unknown keys of the config file stop the server.
pub const STRICT: Setting = Setting::binary(
    Flag::new("strict", "SWITCHYARD_STRICT"),
    Kind::Bool,
    Bool(false),
    "An unknown key in the config file stops the server (exit 2) instead of a warning.",
);
/// `--admin-token`, `SWITCHYARD_ADMIN_TOKEN`: the bearer token of the admin endpoints.
pub const ADMIN_TOKEN: Setting = Setting::binary(
    Flag::new("admin-token", "SWITCHYARD_ADMIN_TOKEN"),
    Kind::Text,
    Unset,
    "Bearer token the admin endpoints require; without it they accept only loopback clients.",
);
/// `sessionTimeoutMs`, `--session-timeout`: a session's lifetime, in ms.
pub const SESSION_TIMEOUT_MS: Setting = Setting::new(
    "sessionTimeoutMs",
    Flag::new("session-timeout", "SESSION_TIMEOUT").unbounded(),
    Kind::Millis,
    Number(30 * 60 * 1000),
    "Lifetime of a session from its creation, unless created with its own expiresIn.",
)
.range(MS);
/// `maxSessions`, `--max-sessions`: sessions that may exist at once.
pub const MAX_SESSIONS: Setting = Setting::new(
    "maxSessions",
    Flag::new("max-sessions", "MAX_SESSIONS").unbounded(),
    Kind::Count,
    Number(100_000),
    "Sessions that may exist at once; creating more fails (HTTP 503) until some end.",
)
.range(COUNT);
/// `maxClientsPerSession`, `--max-clients-per-session`: connections one session admits.
pub const MAX_CLIENTS_PER_SESSION: Setting = Setting::new(
    "maxClientsPerSession",
    Flag::new("max-clients-per-session", "MAX_CLIENTS_PER_SESSION").unbounded(),
    Kind::Count,
    Number(2),
    "Connections one session admits; the next is closed with 1008 \"Session full\".",
)
.range(COUNT);
/// `pingIntervalMs`, `--ping-interval`: how often connections are pinged, in ms.
pub const PING_INTERVAL_MS: Setting = Setting::new(
    "pingIntervalMs",
    Flag::new("ping-interval", "PING_INTERVAL").unbounded(),
    Kind::Millis,
    Number(30_000),
    "How often every connection is sent a WebSocket ping.",
)
.range(TIMER_MS);
/// `heartbeatTimeoutMs`, `--heartbeat-timeout`: how long a connection may stay silent, in ms.
pub const HEARTBEAT_TIMEOUT_MS: Setting = Setting::new(
    "heartbeatTimeoutMs",
    Flag::new("heartbeat-timeout", "HEARTBEAT_TIMEOUT").short('t').unbounded(),
    Kind::Millis,
    Number(60_000),
    "A connection silent this long (no pong, no message) is closed with 1001.",
)
.range(MS);
/// `cleanupIntervalMs`, `--cleanup-interval`: how often expired sessions are removed, in ms.
pub const CLEANUP_INTERVAL_MS: Setting = Setting::new(
    "cleanupIntervalMs",
    Flag::new("cleanup-interval", "CLEANUP_INTERVAL").short('c').unbounded().default(Number(30_000)),
    Kind::Millis,
    Number(60_000),
    "How often expired sessions are removed.",
)
.range(TIMER_MS);
/// `maxMessageBytes`, `--max-message-bytes`: the largest message a connection may send.
pub const MAX_MESSAGE_BYTES: Setting = Setting::new(
    "maxMessageBytes",
    Flag::new("max-message-bytes", "MAX_MESSAGE_BYTES").unbounded(),
    Kind::Bytes,
    Number(1024 * 1024),
    "A larger message closes its connection with 1009.",
)
.range(BYTES);
/// `maxQueuedBytes`, `--max-queued-bytes`: the bound of each connection's outgoing queue.
pub const MAX_QUEUED_BYTES: Setting = Setting::new(
    "maxQueuedBytes",
    Flag::new("max-queued-bytes", "MAX_QUEUED_BYTES").unbounded(),
    Kind::Bytes,
    Number(1024 * 1024),
    "Bound of each connection's outgoing queue.",
)
.range(BYTES);
/// `slowConsumer`, `--slow-consumer`: what happens to a connection whose queue is full.
pub const SLOW_CONSUMER: Setting = Setting::new(
    "slowConsumer",
    Flag::new("slow-consumer", "SLOW_CONSUMER"),
    Kind::Choice(&SlowConsumerPolicy::NAMES),
    Text("close"),
    "What happens to a connection whose queue is full: closed with 1013, or messages for it dropped.",
);
/// `channels.allow`, `--channel-allow`: patterns of the channels clients may join.
pub const CHANNEL_ALLOW: Setting = Setting::new(
    "channels.allow",
    Flag::new("channel-allow", "CHANNEL_ALLOW"),
    Kind::List,
    Said("any valid name"),
    "Patterns of the channels clients may join (\"chat:*\", \"user:{userId}\").",
);
/// `channels.history.size`, `--channel-history-size`: publications each channel keeps.
pub const CHANNEL_HISTORY_SIZE: Setting = Setting::new(
    "channels.history.size",
    Flag::new("channel-history-size", "CHANNEL_HISTORY_SIZE").default(Number(0)).range(Range { min: 0, max: 100_000 }),
    Kind::Count,
    Unset,
    "Publications each channel's stream keeps, for members joining with positions or since (the binary: 0 keeps none).",
)
.range(Range { min: 1, max: 100_000 });
/// `channels.history.ttlMs`, `--channel-history-ttl`: how long a kept channel publication lasts.
pub const CHANNEL_HISTORY_TTL_MS: Setting = Setting::new(
    "channels.history.ttlMs",
    Flag::new("channel-history-ttl", "CHANNEL_HISTORY_TTL").unbounded().default(Number(300_000)),
    Kind::Millis,
    Unset,
    "How long each kept channel publication is kept (the addon: required with size).",
)
.range(MS);
/// `maxChannelsPerConnection`, `--max-channels-per-connection`: channels one connection may be in.
pub const MAX_CHANNELS_PER_CONNECTION: Setting = Setting::new(
    "maxChannelsPerConnection",
    Flag::new("max-channels-per-connection", "MAX_CHANNELS_PER_CONNECTION").unbounded(),
    Kind::Count,
    Number(256),
    "Channels one connection may be in at once; more joins are refused with CHANNEL_FORBIDDEN.",
)
.range(COUNT);
/// `requestTimeoutMs`, `--request-timeout`: how long a request may wait for its answer, in ms.
pub const REQUEST_TIMEOUT_MS: Setting = Setting::new(
    "requestTimeoutMs",
    Flag::new("request-timeout", "REQUEST_TIMEOUT").unbounded(),
    Kind::Millis,
    Number(30_000),
    "A request not answered in this time gets REQUEST_TIMEOUT (the binary answers requests through --proxy-request-url; without it they get NO_HANDLER).",
)
.range(TIMER_MS);
/// `hookTimeoutMs`, `--proxy-timeout`: how long the application (or its backend) has to answer a hook.
pub const HOOK_TIMEOUT_MS: Setting = Setting::new(
    "hookTimeoutMs",
    Flag::new("proxy-timeout", "PROXY_TIMEOUT").unbounded().default(Number(3_000)),
    Kind::Millis,
    Number(5_000),
    "A hook (or backend call) not answered in this time, or one that fails, refuses its join or message with UNAVAILABLE.",
)
.range(TIMER_MS);
/// `hooks.joinChannel`: the app decides who joins a channel.
pub const HOOKS_JOIN_CHANNEL: Setting = Setting::addon(
    "hooks.joinChannel",
    Kind::Function,
    Unset,
    "Asked before a join the channel rules allow, and for every private: channel without a token: ({ channel, connectionId, sessionId, identity }) => true, false, { allow: false, reason } or a Promise of one.",
);
/// `hooks.publish`: the app checks or rewrites what members send.
pub const HOOKS_PUBLISH: Setting = Setting::addon(
    "hooks.publish",
    Kind::Function,
    Unset,
    "Asked before a member's message is relayed to its session or a channel: ({ channel, sessionId, connectionId, identity, message }) => true, false, { allow: false, reason }, { message } (a replacement) or a Promise of one.",
);
/// `--proxy-connect-url`: the backend asked who each upgrading connection is.
pub const PROXY_CONNECT_URL: Setting = Setting::binary(
    Flag::new("proxy-connect-url", "PROXY_CONNECT_URL"),
    Kind::Text,
    Unset,
    "POSTed {sessionId, headers, remoteAddress} at each upgrade; answers {result: {userId, organizationId, clientId, metadata, expiresAt}} or {disconnect: {code, reason}} (403).",
);
/// `--proxy-join-url`: the backend asked before each join.
pub const PROXY_JOIN_URL: Setting = Setting::new(
    "proxy.joinUrl",
    Flag::new("proxy-join-url", "PROXY_JOIN_URL"),
    Kind::Text,
    Unset,
    "POSTed {connectionId, userId, channel} before each join the channel rules allow (and private: ones without a token); answers {result: {}} or {error: {code, message}}.",
);
/// `--proxy-publish-url`: the backend asked before each member's message is relayed.
pub const PROXY_PUBLISH_URL: Setting = Setting::new(
    "proxy.publishUrl",
    Flag::new("proxy-publish-url", "PROXY_PUBLISH_URL"),
    Kind::Text,
    Unset,
    "POSTed {connectionId, userId, sessionId or channel, message} before a member's message is relayed; answers {result: {}}, {result: {message}} (a replacement) or {error}.",
);
/// `--proxy-request-url`: the backend that answers `request` messages.
pub const PROXY_REQUEST_URL: Setting = Setting::new(
    "proxy.requestUrl",
    Flag::new("proxy-request-url", "PROXY_REQUEST_URL"),
    Kind::Text,
    Unset,
    "POSTed {connectionId, userId, requestId, payload} for each request; answers {result: {payload}} (the response) or {error} (REQUEST_FAILED).",
);
/// `--proxy-refresh-url`: the backend asked to renew a connection's lifetime.
pub const PROXY_REFRESH_URL: Setting = Setting::binary(
    Flag::new("proxy-refresh-url", "PROXY_REFRESH_URL"),
    Kind::Text,
    Unset,
    "POSTed {connectionId, userId} when a connection's lifetime (a token's exp, or connect's expiresAt) is within the refresh window; answers {result: {expiresAt}} to renew it.",
);
/// `--proxy-headers`: the upgrade's headers passed to the connect call.
pub const PROXY_HEADERS: Setting = Setting::binary(
    Flag::new("proxy-headers", "PROXY_HEADERS").default(Text("cookie,authorization")),
    Kind::List,
    Text("cookie,authorization"),
    "Headers of the upgrade request passed to --proxy-connect-url.",
);
/// `webhooks.url`, `--webhook-url`: where lifecycle events are POSTed.
pub const WEBHOOK_URL: Setting = Setting::new(
    "webhooks.url",
    Flag::new("webhook-url", "WEBHOOK_URL"),
    Kind::Text,
    Unset,
    "The http:// endpoint lifecycle events are POSTed to in signed batches: {events: [{name, timestamp, sessionId or channel, connectionId, clientId, userId, organizationId, reason}]}.",
);
/// `webhooks.secret`, `--webhook-secret`: the HMAC-SHA256 key of the signature.
pub const WEBHOOK_SECRET: Setting = Setting::new(
    "webhooks.secret",
    Flag::new("webhook-secret", "WEBHOOK_SECRET"),
    Kind::Text,
    Unset,
    "Signs each batch: X-Switchyard-Signature: sha256=<hex HMAC-SHA256 of the body>. Needed with the URL.",
);
/// `webhooks.events`, `--webhook-events`: which events are sent.
pub const WEBHOOK_EVENTS: Setting = Setting::new(
    "webhooks.events",
    Flag::new("webhook-events", "WEBHOOK_EVENTS"),
    Kind::List,
    Said("all six"),
    "Which of session_created, session_ended, member_joined, member_left, channel_occupied and channel_vacated are sent.",
);
/// `webhooks.maxAgeMs`, `--webhook-max-age`: how long an undelivered batch is retried.
pub const WEBHOOK_MAX_AGE_MS: Setting = Setting::new(
    "webhooks.maxAgeMs",
    Flag::new("webhook-max-age", "WEBHOOK_MAX_AGE").unbounded(),
    Kind::Millis,
    Number(600_000),
    "A batch the endpoint has not acknowledged (2xx) is retried with backoff for this long, then dropped and counted.",
)
.range(MS);
/// `maxRequestsPerConnection`, `--max-requests-per-connection`: requests one connection may await.
pub const MAX_REQUESTS_PER_CONNECTION: Setting = Setting::new(
    "maxRequestsPerConnection",
    Flag::new("max-requests-per-connection", "MAX_REQUESTS_PER_CONNECTION").unbounded(),
    Kind::Count,
    Number(256),
    "Requests one connection may have waiting for an answer at once; more get REQUEST_FAILED.",
)
.range(COUNT);
/// `ack`, `--ack`: which messages get ACK or NACK.
pub const ACK: Setting = Setting::new(
    "ack",
    Flag::new("ack", "ACK"),
    Kind::Choice(&AckPolicy::NAMES),
    Text("requested"),
    "Which messages get ACK or NACK: those with a string id and \"ack\": true, all with a string id, or none.",
);
/// `enableRoleManagement`, `--enable-role-management`: whether sessions have control roles.
pub const ENABLE_ROLE_MANAGEMENT: Setting = Setting::new(
    "enableRoleManagement",
    Flag::new("enable-role-management", "ENABLE_ROLE_MANAGEMENT"),
    Kind::Bool,
    Bool(true),
    "Control roles: one active member per session; state_update only from it.",
);
/// `defaultConflictResolution`, `--default-conflict-resolution`: request_control's default rule.
pub const DEFAULT_CONFLICT_RESOLUTION: Setting = Setting::new(
    "defaultConflictResolution",
    Flag::new("default-conflict-resolution", "DEFAULT_CONFLICT_RESOLUTION"),
    Kind::Choice(&ConflictResolution::NAMES),
    Text("first-come-first-served"),
    "What request_control does while a member is active, in sessions created without their own.",
);
/// `controlRequestTimeoutMs`, `--control-request-timeout`: the active member's time to answer.
pub const CONTROL_REQUEST_TIMEOUT_MS: Setting = Setting::new(
    "controlRequestTimeoutMs",
    Flag::new("control-request-timeout", "CONTROL_REQUEST_TIMEOUT").unbounded(),
    Kind::Millis,
    Number(5_000),
    "How long the active member has to answer a forwarded request_control before the requester is declined.",
)
.range(TIMER_MS);
/// `maxConnectionsPerUser`, `--max-connections`: connections one user may hold.
pub const MAX_CONNECTIONS_PER_USER: Setting = Setting::new(
    "maxConnectionsPerUser",
    Flag::new("max-connections", "MAX_CONNECTIONS").short('m').unbounded(),
    Kind::Count,
    Number(10),
    "Connections one user may hold; the next gets CONNECTION_LIMIT and is closed with 1008.",
)
.range(COUNT);
/// `maxWindowsPerUser`, `--max-windows-per-user`: awareness windows one user may hold.
pub const MAX_WINDOWS_PER_USER: Setting = Setting::new(
    "maxWindowsPerUser",
    Flag::new("max-windows-per-user", "MAX_WINDOWS_PER_USER").unbounded(),
    Kind::Count,
    Number(64),
    "Awareness registrations (windows) one user may hold; a new one past it gets WINDOW_LIMIT.",
)
.range(COUNT);
/// `rateLimit.messagesPerSecond`, `--rate-limit`: each connection's message rate.
pub const RATE_LIMIT: Setting = Setting::new(
    "rateLimit.messagesPerSecond",
    Flag::new("rate-limit", "RATE_LIMIT"),
    Kind::Rate,
    Unset,
    "Messages per second each connection may send; over it they get RATE_LIMITED.",
);
/// `rateLimit.burst`, `--rate-burst`: the burst a connection may send above its rate.
pub const RATE_BURST: Setting = Setting::new(
    "rateLimit.burst",
    Flag::new("rate-burst", "RATE_BURST"),
    Kind::Rate,
    Unset,
    "Messages a connection may send in a burst above its rate.",
);
/// `rateLimit.perUser.messagesPerSecond`, `--user-rate-limit`: each user's message rate.
pub const USER_RATE_LIMIT: Setting = Setting::new(
    "rateLimit.perUser.messagesPerSecond",
    Flag::new("user-rate-limit", "USER_RATE_LIMIT"),
    Kind::Rate,
    Unset,
    "Messages per second one user may send over all its connections (with a connection rate).",
);
/// `rateLimit.perUser.burst`, `--user-rate-burst`: the burst a user may send above its rate.
pub const USER_RATE_BURST: Setting = Setting::new(
    "rateLimit.perUser.burst",
    Flag::new("user-rate-burst", "USER_RATE_BURST"),
    Kind::Rate,
    Unset,
    "The burst above a user's rate.",
);
/// `rateLimit.maxViolations`, `--max-violations`: refused messages tolerated before closing.
pub const MAX_VIOLATIONS: Setting = Setting::new(
    "rateLimit.maxViolations",
    Flag::new("max-violations", "MAX_VIOLATIONS"),
    Kind::Count,
    Number(10),
    "Refused messages tolerated before the connection is closed with 1008 \"Rate limit exceeded\".",
)
.range(Range { min: 0, max: u32::MAX as u64 });
/// `connectionsPerMinutePerIp`, `--connections-per-minute-per-ip`: new connections per address.
pub const CONNECTIONS_PER_MINUTE_PER_IP: Setting = Setting::new(
    "connectionsPerMinutePerIp",
    Flag::new("connections-per-minute-per-ip", "CONNECTIONS_PER_MINUTE_PER_IP"),
    Kind::Count,
    Unset,
    "New connections one address may open per minute; more get HTTP 429 (1008 over the bridge).",
)
.range(COUNT);
/// `auth.jwt.secret`, `--jwt-secret`: the HMAC secret of the JWTs.
pub const JWT_SECRET: Setting = Setting::new(
    "auth.jwt.secret",
    Flag::new("jwt-secret", "JWT_SECRET"),
    Kind::Text,
    Unset,
    "HMAC secret of the JWTs clients present (HS256 unless the algorithms say otherwise).",
);
/// `auth.jwt.publicKey`, `--jwt-public-key`: the PEM public key that verifies the JWTs.
pub const JWT_PUBLIC_KEY: Setting = Setting::new(
    "auth.jwt.publicKey",
    Flag::new("jwt-public-key", "JWT_PUBLIC_KEY_FILE"),
    Kind::Text,
    Unset,
    "The PEM public key (RSA, EC or Ed25519) that verifies the JWTs; the binary takes the file holding it.",
);
/// `auth.jwt.jwks`, `--jwks`: the JWKS whose keys verify the JWTs.
pub const JWKS: Setting = Setting::new(
    "auth.jwt.jwks",
    Flag::new("jwks", "JWKS_FILE"),
    Kind::Text,
    Unset,
    "JWKS whose keys verify the JWTs, chosen by the token's kid: a file (the addon also takes the document).",
);
/// `auth.jwt.algorithms`, `--jwt-algorithms`: the JWT algorithms accepted.
pub const JWT_ALGORITHMS: Setting = Setting::new(
    "auth.jwt.algorithms",
    Flag::new("jwt-algorithms", "JWT_ALGORITHMS"),
    Kind::List,
    Said("HS256 with a secret, RS256 otherwise"),
    "JWT algorithms accepted (HS256, RS256, ES256, EdDSA, ...).",
);
/// `auth.jwt.issuer`, `--jwt-issuer`: the issuer tokens must have.
pub const JWT_ISSUER: Setting =
    Setting::new("auth.jwt.issuer", Flag::new("jwt-issuer", "JWT_ISSUER"), Kind::Text, Unset, "The issuer (iss) tokens must have.");
/// `auth.jwt.audience`, `--jwt-audience`: the audience tokens must be for.
pub const JWT_AUDIENCE: Setting =
    Setting::new("auth.jwt.audience", Flag::new("jwt-audience", "JWT_AUDIENCE"), Kind::Text, Unset, "The audience (aud) tokens must be for.");
/// `auth.jwt.userClaim`, `--jwt-user-claim`: the claim naming the user.
pub const JWT_USER_CLAIM: Setting =
    Setting::new("auth.jwt.userClaim", Flag::new("jwt-user-claim", "JWT_USER_CLAIM"), Kind::Text, Text("sub"), "The claim naming the user.");
/// `auth.jwt.organizationClaim`, `--jwt-organization-claim`: the claim naming the organization.
pub const JWT_ORGANIZATION_CLAIM: Setting = Setting::new(
    "auth.jwt.organizationClaim",
    Flag::new("jwt-organization-claim", "JWT_ORGANIZATION_CLAIM"),
    Kind::Text,
    Unset,
    "The claim naming the organization.",
);
/// `auth.jwt.leewaySeconds`, `--jwt-leeway`: clock skew allowed on exp and nbf, in seconds.
pub const JWT_LEEWAY_SECONDS: Setting = Setting::new(
    "auth.jwt.leewaySeconds",
    Flag::new("jwt-leeway", "JWT_LEEWAY").range(Range { min: 0, max: u64::MAX }),
    Kind::Seconds,
    Number(0),
    "Clock skew allowed on exp and nbf.",
)
.range(Range { min: 0, max: 86_400 });
/// `auth.jwt.refreshWindowMs`, `--jwt-refresh-window`: how long before its token expires a connection is told.
pub const JWT_REFRESH_WINDOW_MS: Setting = Setting::new(
    "auth.jwt.refreshWindowMs",
    Flag::new("jwt-refresh-window", "JWT_REFRESH_WINDOW").unbounded(),
    Kind::Millis,
    Number(30_000),
    "A connection whose token has exp is sent token_expiring this long before it, to send refresh with a fresh token.",
)
.range(MS);
/// `auth.jwt.enforceExpiry`, `--jwt-enforce-expiry`: whether a connection ends with its token.
pub const JWT_ENFORCE_EXPIRY: Setting = Setting::new(
    "auth.jwt.enforceExpiry",
    Flag::new("jwt-enforce-expiry", "JWT_ENFORCE_EXPIRY"),
    Kind::Bool,
    Bool(true),
    "Close a connection with 1008 \"Token expired\" when its token expires unrefreshed (false: tokens are checked at the upgrade only).",
);
/// `auth.required` (the addon only): with a JWT key, whether connections without a token are refused.
pub const AUTH_REQUIRED: Setting =
    Setting::addon("auth.required", Kind::Bool, Bool(true), "With a JWT key, refuse connections without a token.");
/// `--auth-optional` (the binary only): lets clients without a token in despite a JWT key.
pub const AUTH_OPTIONAL: Setting = Setting::binary(
    Flag::new("auth-optional", "AUTH_OPTIONAL"),
    Kind::Bool,
    Bool(false),
    "With a JWT key, let clients without a token in too (those with one must still present a valid one).",
);
/// `nativeCompression`, `--compression`: whether to negotiate permessage-deflate.
pub const COMPRESSION: Setting = Setting::new(
    "nativeCompression",
    Flag::new("compression", "COMPRESSION"),
    Kind::Bool,
    Bool(false),
    "Negotiate permessage-deflate with clients that offer it (the addon: in the native transport; also { threshold }).",
);
/// `nativeCompression.threshold`, `--compression-threshold`: bytes below which payloads go uncompressed.
pub const COMPRESSION_THRESHOLD: Setting = Setting::new(
    "nativeCompression.threshold",
    Flag::new("compression-threshold", "COMPRESSION_THRESHOLD").range(Range { min: 0, max: u64::MAX }),
    Kind::Bytes,
    Number(256),
    "With compression, payloads shorter than this go uncompressed.",
)
.range(Range { min: 0, max: u32::MAX as u64 });
/// `history.size`, `--history-size`: publications each session's stream keeps.
pub const HISTORY_SIZE: Setting = Setting::new(
    "history.size",
    Flag::new("history-size", "HISTORY_SIZE").default(Number(0)).range(Range { min: 0, max: 100_000 }),
    Kind::Count,
    Unset,
    "Publications each session's stream keeps, for clients recovering after a reconnect (the binary: 0 keeps none).",
)
.range(Range { min: 1, max: 100_000 });
/// `history.ttlMs`, `--history-ttl`: how long a kept session publication lasts.
pub const HISTORY_TTL_MS: Setting = Setting::new(
    "history.ttlMs",
    Flag::new("history-ttl", "HISTORY_TTL").unbounded().default(Number(300_000)),
    Kind::Millis,
    Unset,
    "How long each kept publication is kept (the addon: required with size).",
)
.range(MS);
/// `historyMaxBytes`, `--history-max-bytes`: the bytes all streams may keep together.
pub const HISTORY_MAX_BYTES: Setting = Setting::new(
    "historyMaxBytes",
    Flag::new("history-max-bytes", "HISTORY_MAX_BYTES").unbounded(),
    Kind::Bytes,
    Number(64 * 1024 * 1024),
    "The bytes all streams may keep together; the oldest publications go first past it.",
)
.range(BYTES);
/// `redis.url`, `--redis-url`: the Redis shared by the nodes of a cluster.
pub const REDIS_URL: Setting = Setting::new(
    "redis.url",
    Flag::new("redis-url", "REDIS_URL"),
    Kind::Text,
    Unset,
    "Redis (or Valkey) shared by the nodes of a cluster, e.g. redis://127.0.0.1:6379, or a Redis Cluster, redis+cluster://host:port,host:port (the flag: or repeated, once for each of its nodes); without it, one process alone.",
);
/// `redis.cluster`: the nodes of a Redis Cluster, instead of `redis.url`.
pub const REDIS_CLUSTER: Setting = Setting::addon(
    "redis.cluster",
    Kind::List,
    Unset,
    "The nodes of a Redis (or Valkey) Cluster, each redis://host:port, instead of url: any of them is enough to find the rest.",
);
/// `redis.keyPrefix`, `--redis-prefix`: the prefix of every Redis key and channel.
pub const REDIS_PREFIX: Setting = Setting::new(
    "redis.keyPrefix",
    Flag::new("redis-prefix", "REDIS_PREFIX"),
    Kind::Text,
    Text("switchyard:"),
    "Put before every Redis key and channel, so clusters can share one Redis.",
);
/// `redis.nodeId`, `--node-id`: this node's name in the cluster.
pub const NODE_ID: Setting = Setting::new(
    "redis.nodeId",
    Flag::new("node-id", "NODE_ID"),
    Kind::Text,
    Said("host, process id and a random suffix"),
    "This node's name in the cluster.",
);
/// `redis.timeoutMs`, `--redis-timeout`: how long Redis may take to connect or answer, in ms.
pub const REDIS_TIMEOUT_MS: Setting = Setting::new(
    "redis.timeoutMs",
    Flag::new("redis-timeout", "REDIS_TIMEOUT").unbounded(),
    Kind::Millis,
    Number(2_000),
    "How long connecting to Redis, or an answer from it, may take before the link counts it lost and reconnects.",
)
.range(MS);
/// `redis.maxQueued`, `--redis-max-queued`: messages for other nodes that may wait for Redis.
pub const REDIS_MAX_QUEUED: Setting = Setting::new(
    "redis.maxQueued",
    Flag::new("redis-max-queued", "REDIS_MAX_QUEUED").unbounded(),
    Kind::Count,
    Number(65_536),
    "Messages for other nodes that may wait for the link to Redis; more are dropped (counted in the cluster's dropped).",
)
.range(COUNT);
/// `nativeThreads`, `--threads`: the threads serving connections.
pub const THREADS: Setting = Setting::new(
    "nativeThreads",
    Flag::new("threads", "SWITCHYARD_THREADS").unbounded(),
    Kind::Count,
    Said("one per CPU this process may use"),
    "Threads serving connections (the addon: native ones); with one, a single-threaded runtime.",
)
.range(Range { min: 1, max: 1024 });

/// Every setting, in the order the reference page and the addon's error messages list them.
pub const SETTINGS: &[Setting] = &[
    PORT,
    HOST,
    HANDSHAKE_TIMEOUT_MS,
    MAX_PENDING_HANDSHAKES,
    MAX_PENDING_HANDSHAKES_PER_IP,
    LISTEN_BACKLOG,
    SHUTDOWN_TIMEOUT_MS,
    SHUTDOWN_GRACE_MS,
    TLS_CERT,
    TLS_KEY,
    CONFIG_FILE,
    STRICT,
    ADMIN_TOKEN,
    SESSION_TIMEOUT_MS,
    MAX_SESSIONS,
    MAX_CLIENTS_PER_SESSION,
    PING_INTERVAL_MS,
    HEARTBEAT_TIMEOUT_MS,
    CLEANUP_INTERVAL_MS,
    MAX_MESSAGE_BYTES,
    MAX_QUEUED_BYTES,
    SLOW_CONSUMER,
    CHANNEL_ALLOW,
    CHANNEL_HISTORY_SIZE,
    CHANNEL_HISTORY_TTL_MS,
    MAX_CHANNELS_PER_CONNECTION,
    REQUEST_TIMEOUT_MS,
    HOOK_TIMEOUT_MS,
    HOOKS_JOIN_CHANNEL,
    HOOKS_PUBLISH,
    PROXY_CONNECT_URL,
    PROXY_JOIN_URL,
    PROXY_PUBLISH_URL,
    PROXY_REQUEST_URL,
    PROXY_REFRESH_URL,
    PROXY_HEADERS,
    WEBHOOK_URL,
    WEBHOOK_SECRET,
    WEBHOOK_EVENTS,
    WEBHOOK_MAX_AGE_MS,
    MAX_REQUESTS_PER_CONNECTION,
    ACK,
    ENABLE_ROLE_MANAGEMENT,
    DEFAULT_CONFLICT_RESOLUTION,
    CONTROL_REQUEST_TIMEOUT_MS,
    MAX_CONNECTIONS_PER_USER,
    MAX_WINDOWS_PER_USER,
    RATE_LIMIT,
    RATE_BURST,
    USER_RATE_LIMIT,
    USER_RATE_BURST,
    MAX_VIOLATIONS,
    CONNECTIONS_PER_MINUTE_PER_IP,
    JWT_SECRET,
    JWT_PUBLIC_KEY,
    JWKS,
    JWT_ALGORITHMS,
    JWT_ISSUER,
    JWT_AUDIENCE,
    JWT_USER_CLAIM,
    JWT_ORGANIZATION_CLAIM,
    JWT_LEEWAY_SECONDS,
    JWT_REFRESH_WINDOW_MS,
    JWT_ENFORCE_EXPIRY,
    AUTH_REQUIRED,
    AUTH_OPTIONAL,
    COMPRESSION,
    COMPRESSION_THRESHOLD,
    HISTORY_SIZE,
    HISTORY_TTL_MS,
    HISTORY_MAX_BYTES,
    REDIS_URL,
    REDIS_CLUSTER,
    REDIS_PREFIX,
    NODE_ID,
    REDIS_TIMEOUT_MS,
    REDIS_MAX_QUEUED,
    THREADS,
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    #[test]
    fn names_are_unique() {
        let mut js: Vec<_> = SETTINGS.iter().filter_map(|s| s.js).collect();
        let mut flags: Vec<_> = SETTINGS.iter().filter_map(|s| s.flag.map(|f| f.long)).collect();
        let mut envs: Vec<_> = SETTINGS.iter().filter_map(|s| s.flag.map(|f| f.env)).collect();
        for names in [&mut js, &mut flags, &mut envs] {
            let count = names.len();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), count, "a name is used twice: {names:?}");
        }
    }

    #[test]
    fn whole_numbers_have_bounds_and_defaults_within_them() {
        for setting in SETTINGS {
            let whole = matches!(setting.kind, Kind::Millis | Kind::Seconds | Kind::Bytes | Kind::Count);
            assert_eq!(setting.range.is_some(), whole, "{setting:?}: a range exactly when a whole number");
            for (default, range) in [(Some(setting.default), setting.range), (setting.binary_default(), setting.binary_range())] {
                if let (Some(Number(n)), Some(range)) = (default, range) {
                    assert!((range.min..=range.max).contains(&n), "{setting:?}: default {n} out of bounds");
                }
            }
        }
    }

    #[test]
    fn the_config_defaults_are_the_schema_defaults() {
        let config = Config::default();
        assert_eq!(config.slow_consumer.as_str(), text(SLOW_CONSUMER.default));
        assert_eq!(config.ack.as_str(), text(ACK.default));
        assert_eq!(config.default_conflict_resolution.as_str(), text(DEFAULT_CONFLICT_RESOLUTION.default));
        assert_eq!(config.channels, crate::config::ChannelOptions::default());
        assert_eq!((config.rate_limit, config.connections_per_minute_per_ip), (None, None));
        assert_eq!(config.history, None);
    }

    fn text(default: DefaultValue) -> &'static str {
        match default {
            Text(text) => text,
            other => panic!("{other:?} is not a name"),
        }
    }

    #[test]
    fn js_names_under_a_parent_are_its_direct_children_in_order() {
        assert_eq!(js_names_under("rateLimit"), ["messagesPerSecond", "burst", "perUser", "maxViolations"]);
        assert_eq!(js_names_under("channels"), ["allow", "history"]);
        assert_eq!(js_names_under("auth"), ["jwt", "required"]);
        let top = js_names_under("");
        assert_eq!(top[..3], ["sessionTimeoutMs", "maxSessions", "maxClientsPerSession"]);
        assert!(!top.contains(&"port"), "binary-only settings have no JS name");
    }
}
