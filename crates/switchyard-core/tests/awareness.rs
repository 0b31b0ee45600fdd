//! Focus awareness through the relay, as the old awareness service's clients use it:
//! sessionless connections registering windows, with a fake clock for staleness.

use std::sync::Arc;

use serde_json::{json, Value};
use switchyard_core::testing::RecordingOutbox;
use switchyard_core::{Config, ConnId, Frame, Identity, NoEvents, ConnectionRefusal, Relay, Route, SessionOptions};

const T0: u64 = 1_700_000_000_000;

struct Page {
    id: ConnId,
    out: Arc<RecordingOutbox>,
}

impl Page {
    fn messages(&self) -> Vec<Value> {
        self.out.take_texts().iter().map(|t| serde_json::from_str(t).unwrap()).collect()
    }

    fn kinds(&self) -> Vec<String> {
        self.messages()
            .iter()
            .map(|m| match m["payload"]["type"].as_str() {
                Some(kind) if m["type"] == "warning" => format!("warning {kind}"),
                _ if m["type"] == "error" => format!("error {}", m["payload"]["code"].as_str().unwrap()),
                _ => m["type"].as_str().unwrap().to_owned(),
            })
            .collect()
    }
}

fn relay(config: Config) -> Relay {
    Relay::new(config, Arc::new(NoEvents))
}

fn open(relay: &Relay, identity: Identity) -> Page {
    let out = RecordingOutbox::new();
    let id = relay.open(Route::Sessionless, identity, out.clone(), T0).unwrap();
    Page { id, out }
}

fn say(relay: &Relay, page: &Page, kind: &str, payload: Value, now: u64) {
    relay.receive(page.id, Frame::text(json!({ "type": kind, "payload": payload }).to_string()), now);
}

fn register(relay: &Relay, page: &Page, user: &str, window: &str, case: &str) {
    let payload = json!({"userId":user,"windowId":window,"caseId":case,"slideId":"S-1","timestamp":"2024-01-15T10:30:00Z"});
    say(relay, page, "register", payload, T0);
}

#[test]
fn two_pages_with_different_cases_both_warned_then_cleared_when_one_closes() {
    let relay = relay(Config::default());
    let first = open(&relay, Identity::default());
    let second = open(&relay, Identity::default());
    register(&relay, &first, "user-1", "window-a", "CASE-001");
    assert_eq!(first.messages(), vec![json!({"type":"registered","payload":{"caseId":"CASE-001","windowId":"window-a"}})]);
    register(&relay, &second, "user-1", "window-b", "CASE-002");
    assert_eq!(first.kinds(), ["warning multi-case", "warning case-mismatch"]);
    assert_eq!(second.kinds(), ["registered", "warning multi-case"]);
    assert_eq!(relay.stats().registrations, 2);
    assert_eq!(relay.stats().users, 1);

    relay.connection_closed(second.id, 1001, "", T0);
    let cleared = first.messages();
    assert_eq!(cleared, vec![json!({"type":"warning_cleared","payload":{"cases":[{"caseId":"CASE-001","windowId":"window-a"}]}})]);
    assert_eq!(relay.stats().registrations, 1);
}

#[test]
fn focus_heartbeat_and_deregister_are_not_answered_and_stale_windows_expire() {
    let config = Config { heartbeat_timeout_ms: 1000, ..Config::default() };
    let relay = relay(config);
    let page = open(&relay, Identity::default());
    register(&relay, &page, "u", "w1", "CASE-1");
    register(&relay, &page, "u", "w2", "CASE-2");
    page.messages();
    say(&relay, &page, "focus", json!({"userId":"u","windowId":"w1"}), T0 + 10);
    say(&relay, &page, "heartbeat", json!({"userId":"u","windowId":"w1"}), T0 + 600);
    assert!(page.messages().is_empty());
    relay.tick(T0 + 999);
    relay.pong(page.id, T0 + 999);
    assert_eq!(relay.stats().registrations, 2);
    relay.tick(T0 + 1000);
    relay.pong(page.id, T0 + 1000);
    assert_eq!(page.kinds(), ["warning_cleared"], "w2's heartbeat is stale");
    assert_eq!(relay.stats().registrations, 1);
    say(&relay, &page, "deregister", json!({"userId":"u","windowId":"w1"}), T0 + 1001);
    assert_eq!(relay.stats().registrations, 0);
}

#[test]
fn the_payload_user_must_be_the_connection_user() {
    let relay = relay(Config::default());
    let known = open(&relay, Identity { user_id: Some("alice".into()), ..Default::default() });
    register(&relay, &known, "mallory", "w", "C");
    assert_eq!(known.kinds(), ["error FORBIDDEN"]);
    register(&relay, &known, "alice", "w", "C");
    assert_eq!(known.kinds(), ["registered"]);

    let anonymous = open(&relay, Identity::default());
    say(&relay, &anonymous, "heartbeat", json!({"userId":"bob","windowId":"w"}), T0);
    assert_eq!(anonymous.kinds(), ["error FORBIDDEN"], "register first");
    register(&relay, &anonymous, "bob", "w", "C");
    register(&relay, &anonymous, "carol", "w2", "C");
    assert_eq!(anonymous.kinds(), ["registered", "error FORBIDDEN"], "the first register named the connection's user");
    assert_eq!(relay.stats().forbidden, 3);
}

#[test]
fn malformed_awareness_messages_are_invalid() {
    let relay = relay(Config::default());
    let page = open(&relay, Identity::default());
    for payload in [json!(null), json!({"userId":"u"}), json!({"userId":"","windowId":"w","caseId":"C"}), json!({"userId":"u","windowId":"w"}), json!({"userId":5,"windowId":"w","caseId":"C"})] {
        say(&relay, &page, "register", payload.clone(), T0);
        assert_eq!(page.kinds(), ["error INVALID_MESSAGE"], "{payload}");
    }
}

#[test]
fn a_user_holds_at_most_max_connections() {
    let relay = relay(Config { max_connections_per_user: 2, ..Config::default() });
    let alice = || Identity { user_id: Some("alice".into()), ..Default::default() };
    let _a = open(&relay, alice());
    let _b = open(&relay, alice());
    let refused = relay.open(Route::Sessionless, alice(), RecordingOutbox::new(), T0).unwrap_err();
    assert_eq!((refused, refused.close_code(), refused.reason()), (ConnectionRefusal::ConnectionLimit, 1008, "Connection limit"));
    let notice: Value = serde_json::from_slice(&refused.notice(T0).unwrap().payload).unwrap();
    assert_eq!(notice["payload"], json!({"code":"CONNECTION_LIMIT","message":"Maximum connections per user exceeded"}));

    let pages: Vec<Page> = (0..3).map(|_| open(&relay, Identity::default())).collect();
    register(&relay, &pages[0], "bob", "w0", "C");
    register(&relay, &pages[1], "bob", "w1", "C");
    register(&relay, &pages[2], "bob", "w2", "C");
    assert_eq!(pages[2].kinds(), ["error CONNECTION_LIMIT"]);
    assert_eq!(pages[2].out.closed(), Some((1008, "Connection limit".into())));
    assert_eq!(relay.stats().active_connections, 4);
}

#[test]
fn with_token_auth_only_the_verified_user_may_register() {
    let relay = relay(Config { verified_users_only: true, ..Config::default() });
    let anonymous = open(&relay, Identity::default());
    register(&relay, &anonymous, "alice", "w1", "C");
    assert_eq!(anonymous.kinds(), vec!["error FORBIDDEN"], "an unverified connection cannot become alice");
    let alice = open(&relay, Identity { user_id: Some("alice".into()), ..Identity::default() });
    register(&relay, &alice, "alice", "w2", "C");
    assert_eq!(alice.kinds(), vec!["registered"]);
    let to_alice = switchyard_core::Target { user_id: Some("alice"), ..Default::default() };
    assert_eq!(relay.send(&to_alice, Frame::text("{}"), T0), 1, "server sends to alice reach her only");
}

#[test]
fn a_window_too_slow_for_the_news_of_a_deleted_session_is_closed_as_a_slow_consumer() {
    let relay = relay(Config::default());
    relay.create_session(SessionOptions { session_id: Some("room".into()), ..Default::default() }, T0).unwrap();
    let out = RecordingOutbox::new();
    let id = relay.open(Route::Session("room".into()), Identity::default(), out.clone(), T0).unwrap();
    let in_room = Page { id, out };
    // Room for its `registered` and its multi-case warning (266 bytes), not for more.
    let out = RecordingOutbox::with_capacity(300);
    let id = relay.open(Route::Sessionless, Identity::default(), out.clone(), T0).unwrap();
    let elsewhere = Page { id, out };
    register(&relay, &in_room, "u", "w-room", "CASE-1");
    register(&relay, &elsewhere, "u", "w-elsewhere", "CASE-2");
    assert_eq!(elsewhere.out.closed(), None, "its warnings fit");

    // The warnings still fill its outbox, so the warning_cleared that deleting the room
    // causes does not fit.
    assert!(relay.delete_session("room", T0));
    assert_eq!(in_room.out.closed(), Some((1000, "Session deleted".into())));
    assert_eq!(elsewhere.out.closed(), Some((1013, "Slow consumer".into())));
    assert_eq!(relay.stats().slow_consumer_closes, 1);
}
