//! Channels, requests, acknowledgements, control roles and server-side sends, driven as a
//! transport would drive the relay, with recording outboxes and a fake clock.

use std::sync::Arc;

use serde_json::{json, Value};
use serde_json::value::RawValue;
use switchyard_core::testing::{RecordingEvents, RecordingOutbox};
use switchyard_core::{
    AckPolicy, ChannelOptions, Config, ConflictResolution, ConnId, ErrorCode, Event, Frame, Identity, MessageRejection, Relay, Route, SessionOptions,
    Target,
};

const T0: u64 = 1_700_000_000_000;

struct Client {
    id: ConnId,
    out: Arc<RecordingOutbox>,
}

impl Client {
    /// The JSON messages received since last asked, the relay's welcomes and announcements left out.
    fn messages(&self) -> Vec<Value> {
        self.out
            .take_texts()
            .iter()
            .map(|t| serde_json::from_str::<Value>(t).unwrap())
            .filter(|m| !matches!(m["type"].as_str(), Some("client_connected" | "client_disconnected")))
            .collect()
    }
}

struct World {
    relay: Relay,
    events: Arc<RecordingEvents>,
}

impl World {
    fn new(config: Config) -> Self {
        let events = RecordingEvents::new();
        let relay = Relay::new(config, events.clone());
        // Room for every member a test adds: capacity is tested on its own.
        for id in ["s1", "s2"] {
            relay.create_session(SessionOptions { session_id: Some(id.into()), max_clients: Some(10), ..Default::default() }, T0).unwrap();
        }
        Self { relay, events }
    }

    fn connect(&self, route: Route, user: Option<&str>, org: Option<&str>) -> Client {
        let out = RecordingOutbox::new();
        let identity = Identity { user_id: user.map(Into::into), organization_id: org.map(Into::into), ..Default::default() };
        let id = self.relay.open(route, identity, out.clone(), T0).unwrap();
        out.take();
        Client { id, out }
    }

    fn in_session(&self, session: &str) -> Client {
        self.connect(Route::Session(session.into()), None, None)
    }

    fn send(&self, client: &Client, message: Value) {
        self.relay.receive(client.id, Frame::text(message.to_string()), T0);
    }
}

fn error_code(message: &Value) -> &str {
    message["payload"]["code"].as_str().unwrap_or_default()
}

#[test]
fn channels_deliver_to_their_other_members_byte_for_byte() {
    let world = World::new(Config::default());
    let a = world.in_session("s1");
    let b = world.in_session("s2");
    let c = world.connect(Route::Sessionless, None, None);
    let outsider = world.in_session("s1");
    for client in [&a, &b, &c] {
        world.send(client, json!({"type":"JOIN_CHANNEL","channel":"news"}));
        assert_eq!(client.messages(), vec![json!({"type":"CHANNEL_JOINED","channel":"news"})]);
    }
    let text = r#"{"type":"headline", "channel":"news", "x":1.50}"#;
    world.relay.receive(a.id, Frame::text(text), T0);
    assert_eq!(b.out.take_texts(), vec![text]);
    assert_eq!(c.out.take_texts(), vec![text], "sessionless connections use channels too");
    assert!(a.out.take().is_empty(), "never back to the sender");
    assert!(outsider.out.take().is_empty(), "not to the session, not to non-members");

    world.send(&outsider, json!({"type":"headline","channel":"news"}));
    assert_eq!(error_code(&outsider.messages()[0]), "NOT_IN_CHANNEL");
    world.send(&c, json!({"type":"LEAVE_CHANNEL","channel":"news"}));
    assert_eq!(c.messages(), vec![json!({"type":"CHANNEL_LEFT","channel":"news"})]);
    world.send(&a, json!({"type":"headline","channel":"news"}));
    assert_eq!(b.messages().len(), 1);
    assert!(c.messages().is_empty());
}

#[test]
fn closed_connections_leave_their_channels_and_empty_channels_go() {
    let world = World::new(Config::default());
    let a = world.in_session("s1");
    let b = world.in_session("s1");
    for client in [&a, &b] {
        world.send(client, json!({"type":"JOIN_CHANNEL","channel":"room"}));
    }
    world.send(&a, json!({"type":"JOIN_CHANNEL","channel":"solo"}));
    assert_eq!(world.relay.channel_breakdown(), vec![("room".into(), 2), ("solo".into(), 1)]);
    world.relay.connection_closed(a.id, 1000, "", T0);
    assert_eq!(world.relay.channel_breakdown(), vec![("room".into(), 1)]);
    assert_eq!(world.relay.stats().channels, 1);
}

#[test]
fn joins_are_checked_for_names_reserved_prefixes_and_allow_patterns() {
    let config = Config { channels: ChannelOptions { allow: Some(vec!["chat:*".into(), "user:{userId}".into()]), ..Default::default() }, ..Config::default() };
    let world = World::new(config);
    let alice = world.connect(Route::Sessionless, Some("alice"), Some("acme"));
    let cases = [
        (json!("chat:lobby"), "CHANNEL_JOINED"),
        (json!("user:alice"), "CHANNEL_JOINED"),
        (json!("user:bob"), "CHANNEL_FORBIDDEN"),
        (json!("org:acme"), "CHANNEL_FORBIDDEN"),
        (json!("news"), "CHANNEL_FORBIDDEN"),
        (json!("bad name"), "INVALID_MESSAGE"),
        (json!(7), "INVALID_MESSAGE"),
    ];
    for (channel, expected) in cases {
        world.send(&alice, json!({"type":"JOIN_CHANNEL","channel":channel,"id":"j1"}));
        let answer = &alice.messages()[0];
        let got = if answer["type"] == "ERROR" { error_code(answer) } else { answer["type"].as_str().unwrap() };
        assert_eq!(got, expected, "{channel}");
        if expected != "CHANNEL_JOINED" && expected != "INVALID_MESSAGE" || channel == json!("bad name") {
            assert_eq!(answer["payload"]["correlationId"], "j1");
        }
    }
    assert_eq!(world.relay.stats().forbidden, 3);
}

#[test]
fn requests_go_to_the_app_and_answers_come_back_matched() {
    let world = World::new(Config { request_timeout_ms: 1000, ..Config::default() });
    let a = world.in_session("s1");
    world.send(&a, json!({"type":"request","requestId":"r0","payload":{}}));
    assert_eq!(
        a.messages()[0]["payload"],
        json!({"code":"NO_HANDLER","message":"No request handler is registered","requestId":"r0"})
    );

    world.relay.answer_requests(true);
    world.events.take();
    world.send(&a, json!({"type":"request","requestId":"r1","payload":{"action":"getData"}}));
    world.send(&a, json!({"type":"request","requestId":2,"payload":[1]}));
    world.send(&a, json!({"type":"request","requestId":"r3"}));
    let requests: Vec<(String, String)> = world
        .events
        .take()
        .into_iter()
        .filter_map(|e| match e {
            Event::Request { connection, request_id, payload } => {
                assert_eq!(connection.connection_id, a.id);
                Some((request_id, payload))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        requests,
        vec![
            ("\"r1\"".into(), r#"{"action":"getData"}"#.into()),
            ("2".into(), "[1]".into()),
            ("\"r3\"".into(), "null".into())
        ]
    );
    let result = RawValue::from_string(r#"{"rows":3}"#.into()).unwrap();
    assert!(world.relay.respond(a.id, "2", Ok(&result), T0 + 1), "answered out of order");
    assert!(world.relay.respond(a.id, "\"r1\"", Err(&MessageRejection::new(ErrorCode::RequestFailed, "database is down")), T0 + 2));
    assert!(!world.relay.respond(a.id, "\"r1\"", Ok(&result), T0 + 3), "answered once");
    let answers = a.messages();
    assert_eq!(answers[0]["type"], "response");
    assert_eq!((answers[0]["requestId"].clone(), answers[0]["payload"].clone()), (json!(2), json!({"rows":3})));
    assert_eq!(answers[1]["payload"], json!({"code":"REQUEST_FAILED","message":"database is down","requestId":"r1"}));

    world.relay.tick(T0 + 999);
    assert!(a.messages().is_empty());
    world.relay.tick(T0 + 1000);
    assert_eq!(a.messages()[0]["payload"]["code"], "REQUEST_TIMEOUT");
    assert_eq!(a.messages(), Vec::<Value>::new());
    assert!(!world.relay.respond(a.id, "\"r3\"", Ok(&result), T0 + 1001), "a late answer is dropped");
    assert_eq!(world.relay.stats().requests, 3);

    world.send(&a, json!({"type":"request","payload":{}}));
    assert_eq!(error_code(&a.messages()[0]), "INVALID_MESSAGE");
}

#[test]
fn acknowledgements_follow_the_policy() {
    let world = World::new(Config::default());
    let a = world.in_session("s1");
    let _b = world.in_session("s1");
    let _c = world.in_session("s1");
    let sessionless = world.connect(Route::Sessionless, None, None);
    world.send(&a, json!({"type":"move","id":"m1","ack":true}));
    let ack = &a.messages()[0];
    assert_eq!((ack["type"].as_str(), ack["correlationId"].as_str(), ack["delivered"].as_u64()), (Some("ACK"), Some("m1"), Some(2)));
    world.send(&a, json!({"type":"move","id":"m2"}));
    assert!(a.messages().is_empty(), "not asked for");
    world.send(&sessionless, json!({"type":"move","id":"m3","ack":true}));
    let nack = &sessionless.messages()[0];
    assert_eq!(nack["type"], "NACK");
    assert_eq!(nack["correlationId"], "m3");
    assert_eq!(nack["payload"]["code"], "NO_SESSION");

    let always = World::new(Config { ack: AckPolicy::Always, ..Config::default() });
    let a = always.in_session("s1");
    always.send(&a, json!({"type":"move","id":"m4"}));
    assert_eq!(a.messages()[0]["type"], "ACK");
    always.send(&a, json!({"type":"move","id":5}));
    assert!(a.messages().is_empty(), "only a string id correlates");

    let never = World::new(Config { ack: AckPolicy::Never, ..Config::default() });
    let a = never.in_session("s1");
    never.send(&a, json!({"type":"move","id":"m6","ack":true}));
    assert!(a.messages().is_empty());
    assert_eq!(world.relay.stats().acks, 1);
    assert_eq!(world.relay.stats().nacks, 1);
}

/// The messages `client` received since last asked, as sent (welcomes and announcements left out).
fn texts(client: &Client) -> Vec<String> {
    client.out.take_texts().into_iter().filter(|t| !t.contains("\"client_")).collect()
}

#[test]
fn a_passive_members_state_update_is_dropped_without_an_answer_unless_it_asked_for_one() {
    let world = World::new(Config::default());
    let [a, b] = [world.in_session("s1"), world.in_session("s1")];
    world.send(&b, json!({"type":"state_update","clientId":"b","data":{"step":1}}));
    assert!(texts(&a).is_empty() && texts(&b).is_empty());
    world.send(&b, json!({"type":"state_update","id":"u1","ack":true}));
    let nack = &b.messages()[0];
    assert_eq!((nack["type"].as_str(), nack["payload"]["code"].as_str()), (Some("NACK"), Some("NOT_ACTIVE")));
    assert_eq!(world.relay.stats().passive_updates_dropped, 2);
}

#[test]
fn control_moves_as_the_original_moves_it() {
    let world = World::new(Config::default());
    let [a, b, c] = [world.in_session("s1"), world.in_session("s1"), world.in_session("s1")];

    // Nobody holds control: the server grants it.
    world.send(&c, json!({"type":"request_control","clientId":"c","data":{}}));
    let granted = &c.messages()[0];
    assert_eq!((granted["type"].as_str(), granted["clientId"].as_str()), (Some("accept_control"), Some("relay-server")));
    assert_eq!(granted["data"]["granted"], true);
    assert_eq!(granted["protocol_version"], 1);
    assert!(texts(&a).is_empty() && texts(&b).is_empty(), "the grant is the requester's alone");
    assert_eq!(world.relay.session("s1").unwrap().active_client_id.as_deref(), Some("c"));
    world.send(&c, json!({"type":"state_update","data":{"step":2}}));
    assert_eq!((texts(&a).len(), texts(&b).len()), (1, 1));

    // `a` joined before the active `c`: first come, first served forwards its request,
    // byte for byte; a second requester waits its turn.
    let request = r#"{"type":"request_control","clientId":"a","data":{"reason":"mine"}}"#;
    world.relay.receive(a.id, Frame::text(request), T0);
    assert_eq!(texts(&c), [request]);
    world.send(&b, json!({"type":"request_control","clientId":"b","data":{}}));
    assert_eq!(b.messages()[0]["data"], json!({"reason":"transfer_in_progress"}));

    // Only the active member answers; its accept reaches the requester, who now holds control.
    world.send(&b, json!({"type":"accept_control","clientId":"b","data":{}}));
    assert!(texts(&a).is_empty());
    let accept = r#"{"type":"accept_control","clientId":"c","data":{"fromClientId":"a"}}"#;
    world.relay.receive(c.id, Frame::text(accept), T0);
    let a_saw = texts(&a);
    assert_eq!(a_saw[0], accept);
    let confirm = &b.messages()[0];
    assert_eq!((confirm["type"].as_str(), confirm["clientId"].as_str()), (Some("confirm_transfer"), Some("c")));
    assert_eq!(confirm["data"], json!({"newActiveClient":"a"}));
    assert_eq!(serde_json::from_str::<Value>(&a_saw[1]).unwrap(), *confirm, "every member but the accepter is told");
    assert!(texts(&c).is_empty(), "the accepter is not told of its own accept");
    assert_eq!(world.relay.session("s1").unwrap().active_client_id.as_deref(), Some("a"));

    // An offer from the active member is relayed and taken by an accept, which goes to
    // the offerer alone (the original client turns passive on it); the taker's
    // announcement that follows is relayed and takes nothing more.
    world.send(&a, json!({"type":"offer_control","clientId":"a","data":{}}));
    assert_eq!((texts(&b).len(), texts(&c).len()), (1, 1));
    let accept = r#"{"type":"accept_control","clientId":"b","data":{"fromClientId":"a"}}"#;
    world.relay.receive(b.id, Frame::text(accept), T0);
    assert_eq!((texts(&a), texts(&c)), (vec![accept.to_owned()], vec![]));
    assert_eq!(world.relay.session("s1").unwrap().active_client_id.as_deref(), Some("b"));
    let announcement = r#"{"type":"role_changed","clientId":"b","data":{"role":"active"}}"#;
    world.relay.receive(b.id, Frame::text(announcement), T0);
    assert_eq!((texts(&a), texts(&c)), (vec![announcement.to_owned()], vec![announcement.to_owned()]));
    world.send(&b, json!({"type":"state_update","data":{"step":3}}));
    assert_eq!((texts(&a).len(), texts(&c).len()), (1, 1), "the new active member's updates arrive");
    world.send(&a, json!({"type":"state_update","data":{"step":4}}));
    assert!(texts(&b).is_empty(), "the old one's are dropped");

    // A release is relayed and frees control; from a passive member it does nothing.
    world.send(&a, json!({"type":"release_control","clientId":"a","data":{}}));
    assert!(texts(&b).is_empty());
    world.send(&b, json!({"type":"release_control","clientId":"b","data":{}}));
    assert_eq!((texts(&a).len(), texts(&c).len()), (1, 1));
    assert_eq!(world.relay.session("s1").unwrap().active_client_id, None);
}

#[test]
fn an_unanswered_request_is_declined_in_time_and_a_departure_hands_control_on() {
    let world = World::new(Config { control_request_timeout_ms: 5000, ..Config::default() });
    let [a, b, c] = [world.in_session("s1"), world.in_session("s1"), world.in_session("s1")];
    world.send(&c, json!({"type":"request_control","data":{}}));
    world.send(&a, json!({"type":"request_control","data":{}}));
    c.messages();
    world.relay.tick(T0 + 4999);
    assert!(texts(&a).iter().all(|t| !t.contains("decline_control")));
    world.relay.tick(T0 + 5000);
    let declined: Vec<Value> = a.messages().into_iter().filter(|m| m["type"] == "decline_control").collect();
    assert_eq!(declined[0]["data"], json!({"reason":"timeout"}));
    assert_eq!(world.relay.session("s1").unwrap().active_client_id, Some(c.id.to_string()), "roles stay");

    // The active member leaves while a request waits: the requester gets control.
    world.send(&b, json!({"type":"request_control","data":{}}));
    world.relay.connection_closed(c.id, 1000, "", T0);
    let b_saw: Vec<Value> = b.out.take_texts().iter().map(|t| serde_json::from_str(t).unwrap()).collect();
    let gone = b_saw.iter().find(|m| m["type"] == "client_disconnected").unwrap();
    assert_eq!(gone["data"], json!({"role":"active"}));
    assert!(b_saw.iter().any(|m| m["type"] == "accept_control" && m["data"]["granted"] == true));
    assert_eq!(world.relay.session("s1").unwrap().active_client_id, Some(b.id.to_string()));
}

#[test]
fn a_session_can_have_its_own_conflict_resolution() {
    let world = World::new(Config::default());
    let options = SessionOptions {
        session_id: Some("strict".into()),
        conflict_resolution: Some(ConflictResolution::DenyBoth),
        ..Default::default()
    };
    assert_eq!(world.relay.create_session(options, T0).unwrap().conflict_resolution, ConflictResolution::DenyBoth);
    let [a, b] = [world.in_session("strict"), world.in_session("strict")];
    world.send(&b, json!({"type":"request_control","data":{}}));
    b.messages();
    world.send(&a, json!({"type":"request_control","data":{}}));
    assert_eq!(a.messages()[0]["data"], json!({"reason":"conflict_resolution_denied"}));
    assert!(texts(&b).is_empty());
}

#[test]
fn without_role_management_control_messages_are_relayed() {
    let world = World::new(Config { enable_role_management: false, ..Config::default() });
    let [a, b] = [world.in_session("s1"), world.in_session("s1")];
    world.send(&a, json!({"type":"request_control"}));
    world.send(&a, json!({"type":"state_update"}));
    assert_eq!(b.messages().len(), 2);
}

#[test]
fn server_sends_reach_exactly_the_matching_connections() {
    let world = World::new(Config::default());
    let alice_laptop = world.connect(Route::Session("s1".into()), Some("alice"), Some("acme"));
    let alice_phone = world.connect(Route::Sessionless, Some("alice"), Some("acme"));
    let bob = world.connect(Route::Session("s1".into()), Some("bob"), Some("acme"));
    let carol = world.connect(Route::Session("s2".into()), Some("carol"), Some("globex"));
    for client in [&alice_phone, &carol] {
        world.send(client, json!({"type":"JOIN_CHANNEL","channel":"alerts"}));
        client.messages();
    }
    let reached = |target: Target| {
        let count = world.relay.send(&target, Frame::text("{\"type\":\"n\"}"), T0);
        let who: Vec<&str> = [("alice_laptop", &alice_laptop), ("alice_phone", &alice_phone), ("bob", &bob), ("carol", &carol)]
            .into_iter()
            .filter(|(_, client)| !client.out.take().is_empty())
            .map(|(name, _)| name)
            .collect();
        assert_eq!(count, who.len());
        who
    };
    assert_eq!(reached(Target { user_id: Some("alice"), ..Default::default() }), ["alice_laptop", "alice_phone"]);
    assert_eq!(reached(Target { organization_id: Some("acme"), ..Default::default() }), ["alice_laptop", "alice_phone", "bob"]);
    assert_eq!(reached(Target { organization_id: Some("globex"), ..Default::default() }), ["carol"]);
    assert_eq!(reached(Target { channel: Some("alerts"), ..Default::default() }), ["alice_phone", "carol"]);
    assert_eq!(
        reached(Target { channel: Some("alerts"), organization_id: Some("acme"), ..Default::default() }),
        ["alice_phone"]
    );
    assert_eq!(reached(Target { session_id: Some("s1"), user_id: Some("bob"), ..Default::default() }), ["bob"]);
    assert_eq!(reached(Target { user_id: Some("nobody"), ..Default::default() }), Vec::<&str>::new());
    assert_eq!(world.relay.stats().users, 3);
    world.relay.connection_closed(alice_laptop.id, 1000, "", T0);
    world.relay.connection_closed(alice_phone.id, 1000, "", T0);
    assert_eq!(world.relay.stats().users, 2);
}

#[test]
fn watched_message_types_reach_the_app_and_others_do_not() {
    let world = World::new(Config::default());
    let [a, b] = [world.in_session("s1"), world.in_session("s1")];
    world.relay.watch("JOB_UPDATE");
    world.events.take();
    world.send(&a, json!({"type":"JOB_UPDATE","progress":50}));
    world.send(&a, json!({"type":"cursor"}));
    let watched: Vec<(ConnId, String, String)> = world
        .events
        .take()
        .into_iter()
        .filter_map(|e| match e {
            Event::Message { connection, kind, message } => {
                Some((connection.connection_id, kind, String::from_utf8(message.to_vec()).unwrap()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(watched, vec![(a.id, "JOB_UPDATE".into(), r#"{"progress":50,"type":"JOB_UPDATE"}"#.into())]);
    assert_eq!(b.messages().len(), 2, "watched messages are still relayed");
}
