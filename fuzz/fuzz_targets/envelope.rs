//! Fuzz target `envelope`: the relay core's message parsing and routing.
//!
//! A [`Relay`] with two sessions and eight connections of different users,
//! organizations and routes receives the input as a stream of messages from those
//! connections, while a fake clock moves on and the relay ticks; the app's side (pongs,
//! closes, server-side sends, answers to requests, session deletion) is driven from the
//! input too. Every outbox is drained after each step. Clients control every byte that
//! reaches [`Relay::receive`], so any panic is a bug, and so is a leak of state: after
//! the final shutdown no session, connection, channel, user or registration remains.
//!
//! Input layout (the seeds in `fuzz/corpus/envelope/` follow it):
//! - byte 0 picks the configuration, one option a bit: 0 role management, 1 rate
//!   limits (and per-address admission), 2 a `channels.allow` list, 3 `ack: always`,
//!   4 `defaultConflictResolution: deny-both` (else `user-choice`, which forwards every
//!   request), 5 the `drop` slow-consumer policy, 6 an app that
//!   answers requests and watches message types, 7 `ack: never`;
//! - the rest is split into lines at `\n`. A line's first byte is its control byte, the
//!   rest its argument. A control byte below 0x80 sends the argument as a message:
//!   bits 0-2 pick the sending connection, bit 3 sends it as binary (else as text, made
//!   valid UTF-8 as a transport would have checked it), bits 4-6 how far the clock moves
//!   first (`0`-`7` are text from connections 0-7 a quarter second later, `A`-`G` a
//!   second later). A control byte of 0x80 or more is an action of the transport or the
//!   app instead: bits 0-3 which one, bits 4-6 the connection it concerns.
#![no_main]

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use serde_json::json;
use serde_json::value::RawValue;
use switchyard_core::testing::{RecordingEvents, RecordingOutbox};
use switchyard_core::{
    server_message, AckPolicy, Config, ConflictResolution, ConnId, ErrorCode, Event, Frame, FrameKind, Identity, Millis,
    Rate, RateLimits, MessageRejection, Relay, Route, SessionOptions, SlowConsumerPolicy, Target,
};

const T0: Millis = 1_700_000_000_000;
/// Small enough for long lines to be refused with 1009.
const MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// How far the clock moves before a message, by bits 4-6 of its control byte; the last
/// one steps the clock back, as a wall clock may.
const STEPS: [i64; 8] = [0, 1, 20, 250, 1_000, 10_000, 31_000, -5_000];

/// Who a connection is and where it goes.
struct Spec {
    session: Option<&'static str>,
    user: Option<&'static str>,
    org: Option<&'static str>,
    client_id: Option<&'static str>,
    tier: Option<Rate>,
    /// Bytes its outbox holds before it answers `Full`: small ones are slow consumers.
    capacity: usize,
}

const fn spec(session: Option<&'static str>, user: Option<&'static str>, org: Option<&'static str>) -> Spec {
    Spec { session, user, org, client_id: None, tier: None, capacity: usize::MAX }
}

const SPECS: [Spec; 8] = [
    spec(Some("s1"), Some("alice"), Some("acme")),
    Spec { client_id: Some("bob-laptop"), ..spec(Some("s1"), Some("bob"), Some("acme")) },
    spec(Some("s2"), Some("alice"), Some("acme")),
    Spec { capacity: 2048, ..spec(None, None, None) },
    Spec { tier: Some(Rate { per_second: 5.0, burst: 3.0 }), ..spec(None, Some("carol"), Some("globex")) },
    Spec { capacity: 512, ..spec(Some("s1"), None, None) },
    spec(Some("s2"), Some("dave"), None),
    // The fourth member of s1, whose limit is four: a reopened connection may be refused.
    spec(Some("s1"), None, Some("acme")),
];

struct Slot {
    /// The last id the relay gave this slot; kept after it closes, so messages from a
    /// connection the relay already let go are tried too.
    id: Option<ConnId>,
    out: Arc<RecordingOutbox>,
    /// Closed by the transport (`Relay::close`), which does not close the outbox.
    closed_by_us: bool,
}

impl Slot {
    fn open(&self) -> bool {
        self.id.is_some() && !self.closed_by_us && self.out.closed().is_none()
    }
}

struct World {
    relay: Relay,
    events: Arc<RecordingEvents>,
    slots: Vec<Slot>,
    /// Requests handed to the app and not answered yet.
    requests: VecDeque<(ConnId, String)>,
    now: Millis,
}

fn config(flags: u8) -> Config {
    let bit = |n: u8| flags & (1 << n) != 0;
    Config {
        max_clients_per_session: 4,
        max_connections_per_user: 2,
        max_message_bytes: MAX_MESSAGE_BYTES,
        request_timeout_ms: 5_000,
        enable_role_management: bit(0),
        rate_limit: bit(1).then_some(RateLimits {
            per_connection: Rate { per_second: 20.0, burst: 10.0 },
            per_user: Some(Rate { per_second: 10.0, burst: 15.0 }),
            max_violations: 3,
        }),
        connections_per_minute_per_ip: bit(1).then_some(3),
        channel_allow: bit(2).then(|| {
            ["chat:*", "user:{userId}", "org:{organizationId}", "room:*:{userId}", "public"].map(String::from).to_vec()
        }),
        ack: match (bit(7), bit(3)) {
            (true, _) => AckPolicy::Never,
            (false, true) => AckPolicy::Always,
            (false, false) => AckPolicy::Requested,
        },
        default_conflict_resolution: if bit(4) { ConflictResolution::DenyBoth } else { ConflictResolution::UserChoice },
        control_request_timeout_ms: 2_000,
        slow_consumer: if bit(5) { SlowConsumerPolicy::Drop } else { SlowConsumerPolicy::Close },
        verified_users_only: bit(1) && bit(4),
        ..Config::default()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl World {
    fn new(flags: u8) -> Self {
        let config = config(flags);
        config.validate().expect("the fuzzed configurations are valid");
        let events = RecordingEvents::new();
        let relay = Relay::new(config, events.clone());
        if flags & (1 << 6) != 0 {
            relay.answer_requests(true);
            relay.watch("chat");
            relay.watch("cursor");
        }
        let mut world = Self { relay, events, slots: Vec::new(), requests: VecDeque::new(), now: T0 };
        world.create_sessions();
        for spec in &SPECS {
            let slot = world.connect(spec);
            world.slots.push(slot);
        }
        world
    }

    fn create_sessions(&self) {
        let s1 = SessionOptions { session_id: Some("s1".into()), metadata: Some(json!({"doc": 1})), ..Default::default() };
        let s2 = SessionOptions {
            session_id: Some("s2".into()),
            expires_in_ms: Some(120_000),
            conflict_resolution: Some(ConflictResolution::FirstComeFirstServed),
            ..Default::default()
        };
        let _ = self.relay.create_session(s1, self.now);
        let _ = self.relay.create_session(s2, self.now);
    }

    fn connect(&self, spec: &Spec) -> Slot {
        let out = RecordingOutbox::with_capacity(spec.capacity);
        let identity = Identity {
            user_id: spec.user.map(Into::into),
            organization_id: spec.org.map(Into::into),
            client_id: spec.client_id.map(Into::into),
            metadata: spec.user.map(|user| json!({ "sub": user, "roles": ["editor"] })),
            rate_limit: spec.tier,
            resume: Default::default(),
        };
        let route = match spec.session {
            Some(id) => Route::Session(id.into()),
            None => Route::Sessionless,
        };
        let id = self.relay.open(route, identity, out.clone(), self.now).ok();
        Slot { id, out, closed_by_us: false }
    }

    fn advance(&mut self, step: i64) {
        if step != 0 {
            self.now = self.now.saturating_add_signed(step);
            self.relay.tick(self.now);
        }
    }

    /// A message from connection `slot`; a closed one's id is tried all the same.
    fn message(&mut self, slot: usize, binary: bool, payload: &[u8]) {
        let Some(id) = self.slots[slot].id else { return };
        let frame = if binary { Frame::binary(payload.to_vec()) } else { Frame::text(text(payload)) };
        self.relay.receive(id, frame, self.now);
    }

    fn action(&mut self, action: u8, slot: usize, arg: &[u8]) {
        let id = self.slots[slot].id;
        let now = self.now;
        match action {
            0 => id.into_iter().for_each(|id| self.relay.pong(id, now)),
            1 => id.into_iter().for_each(|id| self.relay.alive(id, now)),
            // The transport saw the client's close frame, or a dead socket.
            2 => {
                if let Some(id) = id {
                    let code = match arg {
                        [high, low, ..] => u16::from_be_bytes([*high, *low]),
                        _ => 1005,
                    };
                    self.relay.connection_closed(id, code, &text(arg.get(2..).unwrap_or_default()), now);
                    self.slots[slot].closed_by_us = true;
                }
            }
            // The transport refused a frame it could not decode.
            3 => id.into_iter().for_each(|id| self.relay.end_connection(id, 1009, "Message too large", now)),
            4 => {
                if let Some(id) = id.filter(|_| self.slots[slot].open()) {
                    self.relay.connection_closed(id, 1000, "", now);
                }
                self.slots[slot] = self.connect(&SPECS[slot]);
            }
            5 => self.respond(arg),
            6 => self.server_send(id, arg),
            7 => {
                let session = if arg.first().is_some_and(|b| b & 1 == 1) { "s2" } else { "s1" };
                self.relay.delete_session(session, now);
                self.create_sessions();
                // An app-chosen id, checked by the relay.
                let options = SessionOptions {
                    session_id: Some(text(arg)),
                    expires_in_ms: arg.first().map(|b| u64::from(*b) * 1000),
                    max_clients: arg.get(1).map(|b| usize::from(*b)),
                    ..Default::default()
                };
                let _ = self.relay.create_session(options, now);
            }
            8 => {
                let _ = (self.relay.stats(), self.relay.health(now), self.relay.channel_breakdown(), self.relay.sessions());
                let _ = self.relay.session(&text(arg));
            }
            9 => self.relay.watch(&text(arg)),
            10 => {
                let mut octets = [0u8; 16];
                octets.iter_mut().zip(arg).for_each(|(o, b)| *o = *b);
                let _ = self.relay.admit(IpAddr::V6(Ipv6Addr::from(octets)).to_canonical(), now);
            }
            11 => self.relay.answer_requests(arg.first().is_none_or(|b| b & 1 == 1)),
            // A frame bigger than the relay takes: closed with 1009, never parsed.
            12 => {
                if let Some(id) = id {
                    self.relay.receive(id, Frame::text(vec![b' '; MAX_MESSAGE_BYTES + 1]), now);
                }
            }
            _ => self.relay.tick(now),
        }
    }

    /// Answers the oldest request: with the argument as its result when it is JSON, else
    /// as a failure; then an answer nobody waits for.
    fn respond(&mut self, arg: &[u8]) {
        let answer = text(arg);
        let raw: Option<Box<RawValue>> = serde_json::from_str(&answer).ok();
        let failed = MessageRejection::new(ErrorCode::RequestFailed, answer.clone());
        let outcome = match &raw {
            Some(raw) => Ok(&**raw),
            None => Err(&failed),
        };
        if let Some((conn, request_id)) = self.requests.pop_front() {
            self.relay.respond(conn, &request_id, outcome, self.now);
            assert!(!self.relay.respond(conn, &request_id, outcome, self.now), "a request is answered once");
        }
        if let Some(id) = self.slots[0].id {
            self.relay.respond(id, &answer, outcome, self.now);
        }
    }

    /// A server-side send: the argument's first byte picks the target's fields, the rest
    /// names the channel.
    fn server_send(&mut self, except: Option<ConnId>, arg: &[u8]) {
        let fields = arg.first().copied().unwrap_or(0);
        let bit = |n: u8| fields & (1 << n) != 0;
        let channel = text(arg.get(1..).unwrap_or_default());
        let target = Target {
            session_id: bit(0).then_some(if bit(5) { "s2" } else { "s1" }),
            channel: bit(1).then_some(channel.as_str()),
            user_id: bit(2).then_some(if bit(6) { "bob" } else { "alice" }),
            organization_id: bit(3).then_some("acme"),
            except: except.filter(|_| bit(4)),
        };
        let data = serde_json::value::to_raw_value(&json!({ "from": "server" })).expect("JSON values serialize");
        let frame = server_message("notice", target.channel, &data, self.now);
        self.relay.send(&target, frame, self.now);
    }

    /// Takes what the relay queued and emitted, checking what every client may rely on.
    fn drain(&mut self) {
        for slot in &self.slots {
            for frame in slot.out.take() {
                match frame.kind {
                    FrameKind::Text => {
                        let text = std::str::from_utf8(&frame.payload).expect("text frames are UTF-8");
                        let json: Result<&RawValue, _> = serde_json::from_str(text);
                        assert!(json.is_ok(), "text frames are JSON: {text:?}");
                    }
                    FrameKind::Binary => {}
                    FrameKind::Ping => assert!(frame.payload.is_empty()),
                }
            }
        }
        for event in self.events.take() {
            if let Event::Request { connection, request_id, .. } = event {
                if self.requests.len() < 64 {
                    self.requests.push_back((connection.connection_id, request_id));
                }
            }
        }
        let open = self.slots.iter().filter(|slot| slot.open()).count();
        assert_eq!(self.relay.stats().active_connections, open, "the relay holds the connections it has not closed");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let mut world = World::new(flags);
    world.drain();
    for line in rest.split(|&b| b == b'\n') {
        let Some((&control, arg)) = line.split_first() else { continue };
        let slot = usize::from((control >> 4) & 0x07);
        if control & 0x80 == 0 {
            world.advance(STEPS[slot]);
            world.message(usize::from(control & 0x07), control & 0x08 != 0, arg);
        } else {
            world.action(control & 0x0f, slot, arg);
        }
        world.drain();
    }
    world.relay.shutdown(1001, "Server shutting down", world.now);
    world.drain();
    let stats = world.relay.stats();
    assert_eq!(
        (stats.active_sessions, stats.active_connections, stats.channels, stats.users, stats.registrations),
        (0, 0, 0, 0, 0),
        "shutdown leaves nothing behind"
    );
});
