//! The relay driven as a transport would drive it, with recording outboxes and a fake clock.

use std::sync::Arc;

use serde_json::{json, Value};
use switchyard_core::testing::{RecordingEvents, RecordingOutbox};
use switchyard_core::{
    Config, ConnId, ErrorCode, Event, Frame, FrameKind, Identity, ConnectionRefusal, Relay, Route, SessionError, SessionOptions,
    SlowConsumerPolicy, Target,
};

const T0: u64 = 1_700_000_000_000;

fn relay_with(config: Config) -> (Relay, Arc<RecordingEvents>) {
    let events = RecordingEvents::new();
    (Relay::new(config, events.clone()), events)
}

fn relay() -> (Relay, Arc<RecordingEvents>) {
    relay_with(Config::default())
}

/// A session with room for every member a test adds: capacity is tested on its own.
fn session(relay: &Relay, id: &str) {
    relay
        .create_session(SessionOptions { session_id: Some(id.into()), max_clients: Some(10), ..Default::default() }, T0)
        .unwrap();
}

fn join(relay: &Relay, session: &str) -> (ConnId, Arc<RecordingOutbox>) {
    let outbox = RecordingOutbox::new();
    let id = relay.open(Route::Session(session.into()), Identity::default(), outbox.clone(), T0).unwrap();
    (id, outbox)
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

#[test]
fn newcomer_is_welcomed_and_others_are_told() {
    let (relay, _) = relay();
    session(&relay, "s1");
    let (a, a_out) = join(&relay, "s1");
    let welcome = json_of(&a_out.take_texts()[0]);
    assert_eq!(
        welcome,
        json!({"type":"client_connected","clientId":"relay-server","connectionId":a.to_string(),
               "sessionId":"s1","timestamp":T0,"protocol_version":1})
    );
    let (b, _) = join(&relay, "s1");
    let told = json_of(&a_out.take_texts()[0]);
    assert_eq!(told["type"], "client_connected");
    assert_eq!(told["clientId"], b.to_string());
    assert_eq!(told["connectionId"], b.to_string());
    assert!(told.get("sessionId").is_none());
}

#[test]
fn relays_the_same_bytes_to_the_others_only() {
    let (relay, _) = relay();
    session(&relay, "s1");
    session(&relay, "s2");
    let (a, a_out) = join(&relay, "s1");
    let (_, b_out) = join(&relay, "s1");
    let (_, c_out) = join(&relay, "s2");
    a_out.take();
    b_out.take();
    c_out.take();
    let text = Frame::text(&br#"{"type":"cursor","x":1}"#[..]);
    let binary = Frame::binary(vec![0u8, 159, 146, 150]);
    relay.receive(a, text.clone(), T0 + 1);
    relay.receive(a, binary.clone(), T0 + 2);
    let got = b_out.take();
    assert_eq!(got, vec![text.clone(), binary.clone()]);
    assert_eq!(got[0].payload.as_ptr(), text.payload.as_ptr(), "fan-out shares the bytes");
    assert!(a_out.take().is_empty(), "never back to the sender");
    assert!(c_out.take().is_empty(), "never to another session");
    let stats = relay.stats();
    assert_eq!((stats.messages_received, stats.messages_relayed), (2, 2));
}

#[test]
fn invalid_messages_get_an_error_and_the_connection_stays() {
    let (relay, _) = relay();
    session(&relay, "s1");
    let (a, a_out) = join(&relay, "s1");
    let (_, b_out) = join(&relay, "s1");
    a_out.take();
    b_out.take();
    for bad in ["not json", "[1]", r#"{"no":"type"}"#, r#"{"type":3}"#] {
        relay.receive(a, Frame::text(bad.as_bytes().to_vec()), T0);
    }
    let errors = a_out.take_texts();
    assert_eq!(errors.len(), 4);
    let body = json!({"code":"INVALID_MESSAGE","message":ErrorCode::InvalidMessage.message()});
    for e in errors {
        // One frame every kind of client reads: the original relay client `data.message`,
        // awareness clients `payload.code`.
        assert_eq!(
            json_of(&e),
            json!({"type":"error","clientId":"relay-server","data":body,"payload":body,"timestamp":T0,"protocol_version":1})
        );
    }
    assert!(b_out.take().is_empty());
    assert!(a_out.closed().is_none());
    relay.receive(a, Frame::text(&br#"{"type":"ok"}"#[..]), T0);
    assert_eq!(b_out.take().len(), 1);
    assert_eq!(relay.stats().messages_invalid, 4);
}

#[test]
fn errors_follow_the_casing_of_what_they_answer() {
    let (relay, _) = relay();
    let out = RecordingOutbox::new();
    let c = relay.open(Route::Sessionless, Identity::default(), out.clone(), T0).unwrap();
    out.take();

    // A channel-manager client's refused message: `ERROR`, with the message it refuses.
    relay.receive(c, Frame::text(&br#"{"type":"JOIN_CHANNEL","channel":"bad name!"}"#[..]), T0);
    let error = json_of(&out.take_texts()[0]);
    assert_eq!((error["type"].as_str(), error["channel"].as_str()), (Some("ERROR"), Some("error")));
    assert_eq!(error["data"]["originalMessage"], json!({"type":"JOIN_CHANNEL","channel":"bad name!"}));
    assert!(error["data"]["message"].is_string());
    assert_eq!(error["payload"]["code"], error["data"]["code"]);
    assert!(error["payload"].get("originalMessage").is_none());

    // What has no readable type follows the last type the connection used.
    relay.receive(c, Frame::text(&b"not json"[..]), T0);
    let error = json_of(&out.take_texts()[0]);
    assert_eq!((error["type"].as_str(), error["data"]["originalMessage"].as_str()), (Some("ERROR"), Some("not json")));
    relay.receive(c, Frame::text(&br#"{"type":"ping"}"#[..]), T0);
    out.take();
    relay.receive(c, Frame::text(&b"not json"[..]), T0);
    let error = json_of(&out.take_texts()[0]);
    assert_eq!(error["type"], "error");
    assert!(error.get("channel").is_none() && error["data"].get("originalMessage").is_none());
}

#[test]
fn ping_is_answered_in_kind_with_its_id() {
    let (relay, _) = relay();
    session(&relay, "s1");
    let (a, a_out) = join(&relay, "s1");
    let (_, b_out) = join(&relay, "s1");
    a_out.take();
    b_out.take();
    relay.receive(a, Frame::text(&br#"{"type":"ping","id":"p1"}"#[..]), T0 + 5);
    relay.receive(a, Frame::text(&br#"{"type":"PING"}"#[..]), T0 + 6);
    let answers: Vec<Value> = a_out.take_texts().iter().map(|t| json_of(t)).collect();
    assert_eq!(answers, vec![json!({"type":"pong","id":"p1","timestamp":T0+5}), json!({"type":"PONG","timestamp":T0+6})]);
    assert!(b_out.take().is_empty());
}

#[test]
fn unknown_full_and_expired_sessions_are_refused() {
    let (relay, _) = relay();
    let out = RecordingOutbox::new();
    assert_eq!(relay.open(Route::Session("nope".into()), Identity::default(), out.clone(), T0), Err(ConnectionRefusal::SessionNotFound));
    assert_eq!(relay.open(Route::Session("../x".into()), Identity::default(), out.clone(), T0), Err(ConnectionRefusal::SessionNotFound));
    relay
        .create_session(SessionOptions { session_id: Some("small".into()), max_clients: Some(2), ..Default::default() }, T0)
        .unwrap();
    join(&relay, "small");
    join(&relay, "small");
    let err = relay.open(Route::Session("small".into()), Identity::default(), out.clone(), T0).unwrap_err();
    assert_eq!((err.close_code(), err.reason()), (1008, "Session full"));
    assert_eq!(relay.stats().active_connections, 2);

    relay
        .create_session(SessionOptions { session_id: Some("brief".into()), expires_in_ms: Some(10), ..Default::default() }, T0)
        .unwrap();
    assert_eq!(relay.open(Route::Session("brief".into()), Identity::default(), out, T0 + 10), Err(ConnectionRefusal::SessionNotFound));
}

#[test]
fn session_ids_are_checked_and_unique() {
    let (relay, _) = relay();
    session(&relay, "taken");
    let again = relay.create_session(SessionOptions { session_id: Some("taken".into()), ..Default::default() }, T0);
    assert_eq!(again.unwrap_err(), SessionError::AlreadyExists("taken".into()));
    for bad in ["has space", "slash/", &"x".repeat(129)] {
        let result = relay.create_session(SessionOptions { session_id: Some(bad.into()), ..Default::default() }, T0);
        assert!(matches!(result, Err(SessionError::InvalidId(_))), "{bad:?}");
    }
    let generated = relay.create_session(SessionOptions::default(), T0).unwrap();
    assert_eq!(generated.session_id.as_str().len(), 22);
    assert_eq!(generated.expires_at, T0 + Config::default().session_timeout_ms);
    assert_eq!(generated.metadata, None);
    let empty = SessionOptions { session_id: Some(String::new()), ..Default::default() };
    assert_eq!(relay.create_session(empty, T0).unwrap().session_id.as_str().len(), 22, "an empty id asks for one");
    let default_life = SessionOptions { expires_in_ms: Some(0), ..Default::default() };
    assert_eq!(relay.create_session(default_life, T0).unwrap().expires_at, T0 + Config::default().session_timeout_ms, "0 is the default");
    let forever = SessionOptions { expires_in_ms: Some(u64::MAX), ..Default::default() };
    assert!(matches!(relay.create_session(forever, T0), Err(SessionError::InvalidOption(_))));
}

#[test]
fn deleting_a_session_closes_its_clients_with_1000() {
    let (relay, events) = relay();
    session(&relay, "s1");
    let (_, a_out) = join(&relay, "s1");
    let (_, b_out) = join(&relay, "s1");
    events.take();
    assert!(relay.delete_session("s1", T0));
    assert!(!relay.delete_session("s1", T0));
    assert_eq!(a_out.closed(), Some((1000, "Session deleted".into())));
    assert_eq!(b_out.closed(), Some((1000, "Session deleted".into())));
    assert!(relay.session("s1").is_none());
    assert_eq!(relay.stats().active_connections, 0);
    let events = events.take();
    assert_eq!(events.iter().filter(|e| matches!(e, Event::Disconnected { code: 1000, .. })).count(), 2);
    assert!(matches!(events.last(), Some(Event::SessionDeleted { .. })));
}

#[test]
fn empty_sessions_live_until_they_expire_then_close_their_clients() {
    let config = Config { session_timeout_ms: 1_000, cleanup_interval_ms: 100, ..Config::default() };
    let (relay, events) = relay_with(config);
    session(&relay, "empty");
    session(&relay, "busy");
    let (_, out) = join(&relay, "busy");
    relay.tick(T0 + 500);
    assert!(relay.session("empty").is_some(), "an empty session waits for its first client");
    relay.tick(T0 + 999);
    assert_eq!(relay.sessions().len(), 2);
    relay.tick(T0 + 1_000);
    assert_eq!(relay.sessions().len(), 2, "expired, but removed at the next cleanup");
    assert!(relay.open(Route::Session("empty".into()), Identity::default(), RecordingOutbox::new(), T0 + 1_000).is_err());
    relay.tick(T0 + 1_099);
    assert!(relay.sessions().is_empty());
    assert_eq!(out.closed(), Some((1000, "Session expired".into())));
    let expired = events.take().into_iter().filter(|e| matches!(e, Event::SessionExpired { .. })).count();
    assert_eq!(expired, 2);
}

#[test]
fn silent_connections_are_pinged_then_closed_with_1001() {
    let config = Config { ping_interval_ms: 100, heartbeat_timeout_ms: 300, ..Config::default() };
    let (relay, _) = relay_with(config);
    session(&relay, "s1");
    let (alive, alive_out) = join(&relay, "s1");
    let (_, silent_out) = join(&relay, "s1");
    alive_out.take();
    silent_out.take();
    relay.tick(T0 + 100);
    assert!(silent_out.take().iter().any(|f| f.kind == FrameKind::Ping));
    relay.pong(alive, T0 + 150);
    relay.tick(T0 + 250);
    assert!(silent_out.closed().is_none());
    relay.tick(T0 + 350);
    assert_eq!(silent_out.closed(), Some((1001, "Connection timeout".into())));
    assert!(alive_out.closed().is_none());
    let left = alive_out.take_texts().into_iter().map(|t| json_of(&t)).find(|m| m["type"] == "client_disconnected");
    assert_eq!(left.unwrap()["data"], json!({"role":"passive"}));
}

#[test]
fn after_the_relay_stood_still_nobody_is_judged_silent_before_their_pongs_can_be_read() {
    let config = Config { ping_interval_ms: 1000, heartbeat_timeout_ms: 3000, ..Config::default() };
    let (relay, _) = relay_with(config);
    session(&relay, "s1");
    let (a, a_out) = join(&relay, "s1");
    let (_, b_out) = join(&relay, "s1");
    relay.tick(T0);
    relay.tick(T0 + 1000);
    // Stopped for five seconds: both clients' pongs wait in their sockets.
    relay.tick(T0 + 6000);
    assert!(a_out.closed().is_none() && b_out.closed().is_none(), "not judged on the first tick back");
    relay.pong(a, T0 + 6010);
    relay.tick(T0 + 7000);
    assert!(a_out.closed().is_none(), "its pong, read after the stop, counts");
    assert_eq!(b_out.closed(), Some((1001, "Connection timeout".into())), "a ping interval on, a client that really is silent is closed");
}

#[test]
fn oversized_frames_close_with_1009() {
    let (relay, _) = relay_with(Config { max_message_bytes: 8, ..Config::default() });
    session(&relay, "s1");
    let (a, a_out) = join(&relay, "s1");
    let (_, b_out) = join(&relay, "s1");
    b_out.take();
    relay.receive(a, Frame::binary(vec![0u8; 8]), T0);
    assert!(a_out.closed().is_none());
    relay.receive(a, Frame::binary(vec![0u8; 9]), T0);
    assert_eq!(a_out.closed(), Some((1009, "Message too large".into())));
    let got = b_out.take();
    assert_eq!(got.len(), 2, "the 8-byte frame, then client_disconnected");
}

#[test]
fn a_slow_consumer_is_closed_or_skipped_per_policy() {
    for policy in [SlowConsumerPolicy::Close, SlowConsumerPolicy::Drop] {
        let (relay, _) = relay_with(Config { slow_consumer: policy, ..Config::default() });
        session(&relay, "s1");
        let (a, _) = join(&relay, "s1");
        let (_, fast) = join(&relay, "s1");
        let slow = RecordingOutbox::with_capacity(400);
        relay.open(Route::Session("s1".into()), Identity::default(), slow.clone(), T0).unwrap();
        fast.take();
        for _ in 0..10 {
            relay.receive(a, Frame::binary(vec![1u8; 100]), T0);
        }
        let relayed = fast.take().into_iter().filter(|f| f.kind == FrameKind::Binary).count();
        assert_eq!(relayed, 10, "the others keep receiving");
        match policy {
            SlowConsumerPolicy::Close => {
                assert_eq!(slow.closed(), Some((1013, "Slow consumer".into())));
                assert_eq!(relay.stats().slow_consumer_closes, 1);
            }
            SlowConsumerPolicy::Drop => {
                assert!(slow.closed().is_none());
                assert!(relay.stats().messages_dropped >= 7);
            }
        }
    }
}

#[test]
fn client_ids_come_from_the_app_else_the_first_one_sent() {
    let (relay, events) = relay();
    session(&relay, "s1");
    let given = Identity { client_id: Some("given".into()), user_id: Some("u1".into()), ..Default::default() };
    let a_out = RecordingOutbox::new();
    let a = relay.open(Route::Session("s1".into()), given, a_out.clone(), T0).unwrap();
    let (b, _) = join(&relay, "s1");
    relay.receive(b, Frame::text(&br#"{"type":"hello","clientId":"bob"}"#[..]), T0);
    relay.receive(b, Frame::text(&br#"{"type":"hello","clientId":"mallory"}"#[..]), T0);
    relay.connection_closed(b, 1000, "bye", T0);
    relay.receive(a, Frame::text(&br#"{"type":"hello","clientId":"other"}"#[..]), T0);
    let farewell = a_out.take_texts().into_iter().map(|t| json_of(&t)).find(|m| m["type"] == "client_disconnected");
    assert_eq!(farewell.unwrap()["clientId"], "bob");
    let disconnects: Vec<_> = events
        .take()
        .into_iter()
        .filter_map(|e| match e {
            Event::Disconnected { connection, code, reason } => Some((connection.client_id, code, reason)),
            _ => None,
        })
        .collect();
    assert_eq!(disconnects, vec![("bob".to_string(), 1000, "bye".to_string())]);
    relay.connection_closed(a, 1001, "gone", T0);
    assert_eq!(relay.stats().active_connections, 0);
}

#[test]
fn sessionless_connections_cannot_relay() {
    let (relay, _) = relay();
    let out = RecordingOutbox::new();
    let a = relay.open(Route::Sessionless, Identity::default(), out.clone(), T0).unwrap();
    relay.receive(a, Frame::text(&br#"{"type":"hello"}"#[..]), T0);
    assert_eq!(json_of(&out.take_texts()[0])["payload"]["code"], "NO_SESSION");
}

#[test]
fn shutdown_closes_everyone_and_forgets_sessions() {
    let (relay, _) = relay();
    session(&relay, "s1");
    let (_, a_out) = join(&relay, "s1");
    let lone = RecordingOutbox::new();
    relay.open(Route::Sessionless, Identity::default(), lone.clone(), T0).unwrap();
    relay.shutdown(1001, "Server shutting down", T0);
    assert_eq!(a_out.closed(), Some((1001, "Server shutting down".into())));
    assert_eq!(lone.closed(), Some((1001, "Server shutting down".into())));
    let stats = relay.stats();
    assert_eq!((stats.active_sessions, stats.active_connections), (0, 0));
}

#[test]
fn a_server_send_to_a_session_reaches_it_but_the_excepted_connection() {
    let (relay, _) = relay();
    session(&relay, "s1");
    session(&relay, "s2");
    let (a, a_out) = join(&relay, "s1");
    let (_, b_out) = join(&relay, "s1");
    let (_, c_out) = join(&relay, "s2");
    for out in [&a_out, &b_out, &c_out] {
        out.take();
    }
    let frame = Frame::text(&br#"{"type":"NOTICE","data":1}"#[..]);
    let to_s1 = Target { session_id: Some("s1"), ..Default::default() };
    assert_eq!(relay.send(&to_s1, frame.clone(), T0), 2);
    assert_eq!(relay.send(&Target { except: Some(a), ..to_s1 }, frame.clone(), T0), 1);
    assert_eq!(relay.send(&Target { session_id: Some("nope"), ..to_s1 }, frame.clone(), T0), 0);
    assert_eq!(a_out.take(), vec![frame.clone()]);
    assert_eq!(b_out.take(), vec![frame.clone(), frame]);
    assert!(c_out.take().is_empty());
}
