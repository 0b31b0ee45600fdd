//! Session streams driven as a transport would: positions, recovery after a reconnect (all
//! or nothing), the previous connection replaced, and history read and published over HTTP.

use std::sync::Arc;

use serde_json::{json, Value};
use switchyard_core::testing::{RecordingEvents, RecordingOutbox};
use switchyard_core::{
    ChannelOptions, Config, ConnId, Frame, HistoryConfig, Identity, Position, PublishError, Relay, Resume, Route, SessionOptions,
};

const T0: u64 = 1_700_000_000_000;

fn relay(history: HistoryConfig) -> Relay {
    let relay = Relay::new(Config { history: Some(history), ..Config::default() }, RecordingEvents::new());
    relay.create_session(SessionOptions { session_id: Some("s".into()), max_clients: Some(10), ..Default::default() }, T0).unwrap();
    relay
}

fn join(relay: &Relay, url: &str, now: u64) -> (ConnId, Arc<RecordingOutbox>) {
    let outbox = RecordingOutbox::new();
    let identity = Identity { resume: Resume::from_url(url), ..Default::default() };
    (relay.open(Route::Session("s".into()), identity, outbox.clone(), now).unwrap(), outbox)
}

fn texts(outbox: &RecordingOutbox) -> Vec<Value> {
    outbox.take_texts().iter().map(|t| serde_json::from_str(t).unwrap()).collect()
}

fn send(relay: &Relay, from: ConnId, i: u64, now: u64) {
    relay.receive(from, Frame::text(format!(r#"{{"type":"m","i":{i}}}"#)), now);
}

fn position(welcome: &Value) -> Position {
    Position { epoch: welcome["epoch"].as_str().unwrap().into(), offset: welcome["offset"].as_u64().unwrap() }
}

#[test]
fn positions_wrap_publications_and_plain_members_keep_the_bytes() {
    let relay = relay(HistoryConfig { size: 100, ttl_ms: 60_000 });
    let (a, a_out) = join(&relay, "/session/s?positions=1", T0);
    let (b, b_out) = join(&relay, "/session/s", T0);
    let welcome = &texts(&a_out)[0];
    assert_eq!(welcome["offset"], 0);
    assert!(welcome["epoch"].as_str().is_some_and(|e| !e.is_empty()));
    assert!(texts(&b_out)[0].get("epoch").is_none(), "no positions asked for, none given");

    send(&relay, b, 1, T0);
    let publication = a_out.take_texts().pop().unwrap();
    assert_eq!(publication, format!(r#"{{"type":"publication","offset":1,"from":"{b}","data":{{"type":"m","i":1}}}}"#));
    send(&relay, a, 2, T0);
    assert_eq!(b_out.take_texts(), [r#"{"type":"m","i":2}"#], "byte for byte, numbered but not wrapped");
    relay.receive(b, Frame::binary(vec![9, 9]), T0);
    assert_eq!(&a_out.take()[0].payload[..], &[0, 0, 0, 0, 0, 0, 0, 3, 9, 9]);
}

#[test]
fn a_reconnect_gets_what_it_missed_in_order_before_anything_live_and_replaces_its_past() {
    let relay = relay(HistoryConfig { size: 100, ttl_ms: 60_000 });
    let (a, a_out) = join(&relay, "/session/s?positions=1", T0);
    let (b, _) = join(&relay, "/session/s", T0);
    let seen = position(&texts(&a_out)[0]);
    send(&relay, b, 1, T0);
    send(&relay, a, 2, T0);
    let last = Position { offset: 1, ..seen.clone() };
    a_out.take();
    // a's socket is half dead: the relay does not know yet, and b keeps sending.
    send(&relay, b, 3, T0);
    send(&relay, b, 4, T0);
    let (a2, a2_out) = join(&relay, &format!("/session/s?since={}&previous={a}", last), T0 + 1);
    assert_eq!(a_out.closed(), Some((1000, "Replaced by a reconnect".into())));
    send(&relay, b, 5, T0 + 2);
    let frames = texts(&a2_out);
    assert_eq!(frames[0]["recovered"], true);
    assert_eq!(frames[0]["offset"], 4);
    let offsets: Vec<_> = frames[1..].iter().filter(|f| f["type"] == "publication").map(|f| f["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, [3, 4, 5], "2 was its own, 1 it had seen; the live 5 after the replay");
    assert_ne!(a2, a);
}

#[test]
fn a_gap_past_the_kept_history_recovers_nothing() {
    let relay = relay(HistoryConfig { size: 2, ttl_ms: 60_000 });
    let (a, a_out) = join(&relay, "/session/s?positions=1", T0);
    let seen = position(&texts(&a_out)[0]);
    let (_, _) = join(&relay, "/session/s", T0);
    relay.connection_closed(a, 1006, "gone", T0);
    for i in 1..=3 {
        send(&relay, ConnId::parse("c_2").unwrap(), i, T0);
    }
    let (_, back) = join(&relay, &format!("/session/s?since={seen}"), T0);
    let frames = texts(&back);
    assert_eq!((frames[0]["recovered"].clone(), frames[0]["offset"].clone()), (json!(false), json!(3)));
    assert_eq!(frames.len(), 1, "nothing replayed");
    let (_, other_epoch) = join(&relay, "/session/s?since=nope:1", T0);
    assert_eq!(texts(&other_epoch)[0]["recovered"], false);
}

#[test]
fn history_is_read_and_published_over_http() {
    let relay = relay(HistoryConfig { size: 100, ttl_ms: 1_000 });
    let (a, a_out) = join(&relay, "/session/s?positions=1&clientId=x", T0);
    a_out.take();
    assert_eq!(relay.publish("s", Frame::text(r#"{"type":"note"}"#), None, T0), Ok((1, Some(1))));
    assert_eq!(&texts(&a_out)[0]["from"], "server");
    assert_eq!(relay.publish("s", Frame::text("nope"), None, T0), Err(PublishError::Invalid));
    assert_eq!(relay.publish("s", Frame::text(r#"{"type":"x"}"#), Some("ghost"), T0), Ok((1, Some(2))), "no such member: as the server");
    assert_eq!(relay.publish("s", Frame::text(r#"{"type":"mine"}"#), Some(&a.to_string()), T0), Ok((0, Some(3))), "not echoed to its publisher");
    assert_eq!(relay.publish("missing", Frame::text(r#"{"type":"x"}"#), None, T0), Err(PublishError::SessionNotFound));

    let history = relay.history("s", None, 10, T0).unwrap();
    assert!(history.recovered);
    assert_eq!(history.publications.iter().map(|p| p.offset).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(history.publications.iter().map(|p| &*p.from).collect::<Vec<_>>(), ["server", "server", &*a.to_string()]);
    let after_one = Position { offset: 1, ..history.position.clone().unwrap() };
    assert_eq!(relay.history("s", Some(&after_one), 10, T0).unwrap().publications.len(), 2);
    let expired = relay.history("s", Some(&Position { offset: 0, ..after_one }), 10, T0 + 1_000).unwrap();
    assert_eq!((expired.recovered, expired.publications.len()), (false, 0), "past the time to live");
    assert!(relay.history("missing", None, 10, T0).is_none());
}

#[test]
fn memory_for_history_is_bounded_whatever_the_sessions_ask() {
    let relay = Relay::new(
        Config { history: Some(HistoryConfig { size: 100_000, ttl_ms: 60_000 }), history_max_bytes: 64 * 1024, ..Config::default() },
        RecordingEvents::new(),
    );
    for s in 0..4 {
        relay.create_session(SessionOptions { session_id: Some(format!("s{s}")), ..Default::default() }, T0).unwrap();
        for _ in 0..200 {
            relay.publish(&format!("s{s}"), Frame::text(format!(r#"{{"type":"big","pad":"{}"}}"#, "x".repeat(1000))), None, T0).unwrap();
        }
    }
    assert!(relay.stats().history_bytes <= 64 * 1024, "{} bytes kept", relay.stats().history_bytes);
}

fn sessionless(relay: &Relay, user: &str) -> (ConnId, Arc<RecordingOutbox>) {
    let outbox = RecordingOutbox::new();
    let identity = Identity { user_id: Some(user.into()), ..Default::default() };
    (relay.open(Route::Sessionless, identity, outbox.clone(), T0).unwrap(), outbox)
}

#[test]
fn channels_keep_streams_recover_and_tell_presence() {
    let history = HistoryConfig { size: 100, ttl_ms: 60_000 };
    let relay = Relay::new(Config { channels: ChannelOptions { history: Some(history), ..Default::default() }, ..Config::default() }, RecordingEvents::new());
    let (b, b_out) = sessionless(&relay, "bob");
    relay.receive(b, Frame::text(r#"{"type":"JOIN_CHANNEL","channel":"news","presence":true}"#), T0);
    assert_eq!(texts(&b_out), [json!({"type":"CHANNEL_JOINED","channel":"news"})]);
    let (a, a_out) = sessionless(&relay, "alice");
    relay.receive(a, Frame::text(r#"{"type":"JOIN_CHANNEL","channel":"news","positions":true}"#), T0);
    let joined = texts(&a_out).remove(0);
    assert_eq!((joined["type"].clone(), joined["offset"].clone()), (json!("CHANNEL_JOINED"), json!(0)));
    let epoch = joined["epoch"].as_str().unwrap().to_owned();
    let alice = json!({"connectionId": a.to_string(), "clientId": a.to_string(), "userId": "alice", "organizationId": null});
    assert_eq!(texts(&b_out), [json!({"type":"CHANNEL_MEMBER_JOINED","channel":"news","client":alice})]);

    relay.receive(b, Frame::text(r#"{"type":"x","channel":"news"}"#), T0);
    assert_eq!(a_out.take_texts(), [format!(r#"{{"type":"publication","channel":"news","offset":1,"from":"{b}","data":{{"type":"x","channel":"news"}}}}"#)]);
    relay.send(&switchyard_core::Target { channel: Some("news"), ..Default::default() }, Frame::text(r#"{"type":"s"}"#), T0);
    assert_eq!(texts(&a_out)[0]["offset"], 2);
    assert_eq!(b_out.take_texts(), [r#"{"type":"s"}"#], "without positions, the bytes as sent");

    relay.connection_closed(a, 1006, "gone", T0);
    assert_eq!(texts(&b_out), [json!({"type":"CHANNEL_MEMBER_LEFT","channel":"news","client":alice})]);
    relay.receive(b, Frame::text(r#"{"type":"y","channel":"news"}"#), T0);
    let (a2, a2_out) = sessionless(&relay, "alice");
    relay.receive(a2, Frame::text(format!(r#"{{"type":"JOIN_CHANNEL","channel":"news","since":{{"epoch":"{epoch}","offset":1}}}}"#)), T0);
    let frames = texts(&a2_out);
    assert_eq!((frames[0]["recovered"].clone(), frames[0]["offset"].clone()), (json!(true), json!(3)));
    assert_eq!(frames[1..].iter().map(|f| f["offset"].as_u64().unwrap()).collect::<Vec<_>>(), [2, 3]);

    relay.receive(a2, Frame::text(r#"{"type":"PRESENCE","channel":"news"}"#), T0);
    let presence = texts(&a2_out).remove(0);
    assert_eq!(presence["clients"].as_array().unwrap().iter().map(|c| c["userId"].clone()).collect::<Vec<_>>(), [json!("bob"), json!("alice")]);
    let (stranger, stranger_out) = sessionless(&relay, "carol");
    relay.receive(stranger, Frame::text(r#"{"type":"PRESENCE","channel":"news"}"#), T0);
    assert_eq!(texts(&stranger_out)[0]["payload"]["code"], "NOT_IN_CHANNEL");
    relay.receive(stranger, Frame::text(r#"{"type":"JOIN_CHANNEL","channel":"news","positions":"yes"}"#), T0);
    assert_eq!(texts(&stranger_out)[0]["data"]["code"], "INVALID_MESSAGE");

    assert_eq!(relay.channel_history("news", None, 10, T0).unwrap().publications.len(), 3);
    for conn in [b, a2, stranger] {
        relay.connection_closed(conn, 1000, "bye", T0);
    }
    relay.tick(T0 + 60_000);
    assert_eq!(relay.channel_history("news", None, 10, T0 + 60_000).unwrap().position, None, "the stream went with its last publication and member");
}

#[test]
fn publishing_as_a_member_obeys_its_roles_and_rate() {
    let rate = switchyard_core::RateLimits { per_connection: switchyard_core::Rate { per_second: 0.001, burst: 4.0 }, per_user: None, max_violations: 10 };
    let relay = Relay::new(
        Config { history: Some(HistoryConfig { size: 100, ttl_ms: 60_000 }), rate_limit: Some(rate), ..Config::default() },
        RecordingEvents::new(),
    );
    relay.create_session(SessionOptions { session_id: Some("s".into()), ..Default::default() }, T0).unwrap();
    let (a, _) = join(&relay, "/session/s", T0);
    let (_, b_out) = join(&relay, "/session/s", T0);
    let name = a.to_string();
    let update = || Frame::text(r#"{"type":"state_update","data":{}}"#);
    let refused = relay.publish("s", update(), Some(&name), T0).unwrap_err();
    assert!(matches!(&refused, PublishError::Refused(r) if r.code.as_str() == "NOT_ACTIVE"), "{refused:?}: a passive member's update");
    let control = relay.publish("s", Frame::text(r#"{"type":"request_control"}"#), Some(&name), T0).unwrap_err();
    assert!(matches!(control, PublishError::Refused(_)), "control goes over the socket");
    relay.receive(a, Frame::text(r#"{"type":"request_control","clientId":"x","data":{},"timestamp":0,"protocol_version":1}"#), T0);
    b_out.take();
    // Its request_control named it "x"; every try above took a token of its burst of 4.
    assert_eq!(relay.publish("s", update(), Some("x"), T0).map(|(delivered, _)| delivered), Ok(1), "in control now");
    let over = relay.publish("s", update(), Some("x"), T0).unwrap_err();
    assert!(matches!(&over, PublishError::Refused(r) if r.code.as_str() == "RATE_LIMITED"), "{over:?}: the burst is spent");
    assert!(relay.publish("s", update(), None, T0).is_ok(), "the server has no rate");
}
