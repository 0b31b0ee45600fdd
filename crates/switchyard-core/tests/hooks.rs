//! The hooks seam with a fake clock: questions answered later through `decide`, the order
//! of a connection's messages meanwhile, `hookTimeoutMs` through `tick`, and an answer
//! that arrives before the asking thread is done; token lifetimes.

use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::Value;
use switchyard_core::testing::RecordingOutbox;
use switchyard_core::{
    Ask, Config, ConnId, Decides, Frame, Hooks, Identity, NoEvents, Question, Relay, Route, Seams, SessionOptions, TokenExpiry, Verdict,
};

const T0: u64 = 1_700_000_000_000;

/// Hooks that keep every question for the test to answer, or answer them at once.
#[derive(Default)]
struct Kept {
    questions: Mutex<Vec<Question>>,
    at_once: Option<Verdict>,
}

impl Hooks for Kept {
    fn decides(&self) -> Decides {
        Decides { join: true, publish: true }
    }

    fn ask(&self, question: Question) -> Option<Verdict> {
        if self.at_once.is_some() {
            return self.at_once.clone();
        }
        self.questions.lock().push(question);
        None
    }
}

fn relay(hooks: Arc<Kept>) -> Relay {
    let config = Config { hook_timeout_ms: 500, max_clients_per_session: 10, ..Config::default() };
    let relay = Relay::with_seams(config, Arc::new(NoEvents), Seams { hooks, ..Seams::alone(1 << 20) });
    relay.create_session(SessionOptions { session_id: Some("s".into()), ..Default::default() }, T0).unwrap();
    relay
}

fn join(relay: &Relay) -> (ConnId, Arc<RecordingOutbox>) {
    let out = RecordingOutbox::new();
    let id = relay.open(Route::Session("s".into()), Identity::default(), out.clone(), T0).unwrap();
    out.take();
    (id, out)
}

fn types(out: &RecordingOutbox) -> Vec<String> {
    out.take_texts().iter().map(|t| serde_json::from_str::<Value>(t).unwrap()["type"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn a_connection_waits_for_its_answer_in_order_and_others_do_not() {
    let hooks = Arc::new(Kept::default());
    let relay = relay(hooks.clone());
    let (a, a_out) = join(&relay);
    let (b, b_out) = join(&relay);
    a_out.take();
    relay.receive(a, Frame::text(r#"{"type":"one"}"#), T0);
    relay.receive(a, Frame::text(r#"{"type":"ping"}"#), T0);
    relay.receive(a, Frame::text(r#"{"type":"two"}"#), T0);
    relay.receive(b, Frame::text(r#"{"type":"ping"}"#), T0);
    assert_eq!(types(&b_out), ["pong"], "b is not held behind a's question");
    assert!(types(&a_out).is_empty(), "a's ping waits behind its first message");
    let first = hooks.questions.lock().remove(0);
    assert!(matches!(&first.ask, Ask::Publish { channel: None, message } if message.as_ref() == br#"{"type":"one"}"#));
    assert!(hooks.questions.lock().is_empty(), "the second message is asked about once the first is answered");
    assert!(relay.decide(a, first.id, Verdict::Replace(r#"{"type":"uno"}"#.into()), T0 + 5));
    assert!(!relay.decide(a, first.id, Verdict::Allow, T0 + 5), "answered once");
    assert_eq!(types(&b_out), ["uno"]);
    assert_eq!(types(&a_out), ["pong"]);
    let second = hooks.questions.lock().remove(0);
    assert!(relay.decide(a, second.id, Verdict::Refuse(Some("not two".into())), T0 + 6));
    let refusal: Value = serde_json::from_str(&a_out.take_texts()[0]).unwrap();
    assert_eq!(refusal["payload"], serde_json::json!({ "code": "PUBLISH_REFUSED", "message": "not two" }));
    assert!(b_out.take().is_empty());
    let stats = relay.stats();
    assert_eq!((stats.hook_questions, stats.hook_refusals, stats.hook_failures), (2, 1, 0));
    assert_eq!(stats.hook_latency.count(), 2);
}

#[test]
fn an_unanswered_question_is_given_up_after_hook_timeout_ms() {
    let hooks = Arc::new(Kept::default());
    let relay = relay(hooks.clone());
    let (a, a_out) = join(&relay);
    let (_, b_out) = join(&relay);
    a_out.take();
    relay.receive(a, Frame::text(r#"{"type":"JOIN_CHANNEL","channel":"news"}"#), T0);
    relay.receive(a, Frame::text(r#"{"type":"chat"}"#), T0);
    relay.tick(T0 + 499);
    assert!(types(&a_out).is_empty());
    relay.tick(T0 + 500);
    let refusal: Value = serde_json::from_str(&a_out.take_texts()[0]).unwrap();
    assert_eq!(refusal["payload"], serde_json::json!({ "code": "UNAVAILABLE", "message": "The application did not answer" }));
    let late = hooks.questions.lock().remove(0);
    assert!(!relay.decide(a, late.id, Verdict::Allow, T0 + 501), "a late answer finds nothing");
    let chat = hooks.questions.lock().remove(0);
    assert!(matches!(chat.ask, Ask::Publish { .. }), "the next message is asked about after the timeout");
    assert!(relay.decide(a, chat.id, Verdict::Allow, T0 + 502));
    assert_eq!(types(&b_out), ["chat"]);
    assert_eq!(relay.stats().hook_failures, 1);
}

#[test]
fn an_answer_given_at_once_holds_nothing() {
    let hooks = Arc::new(Kept { at_once: Some(Verdict::Refuse(None)), ..Kept::default() });
    let relay = relay(hooks);
    let (a, a_out) = join(&relay);
    a_out.take();
    relay.receive(a, Frame::text(r#"{"type":"JOIN_CHANNEL","channel":"news"}"#), T0);
    relay.receive(a, Frame::text(r#"{"type":"ping"}"#), T0);
    assert_eq!(types(&a_out), ["ERROR", "pong"]);
}

#[test]
fn a_token_expiry_is_enforced_only_when_configured() {
    for enforced in [true, false] {
        let token_expiry = enforced.then_some(TokenExpiry { refresh_window_ms: 1_000, leeway_ms: 100 });
        let relay = Relay::new(Config { token_expiry, ..Config::default() }, Arc::new(NoEvents));
        relay.create_session(SessionOptions { session_id: Some("s".into()), ..Default::default() }, T0).unwrap();
        let out = RecordingOutbox::new();
        let identity = Identity { expires_at: Some(T0 + 5_000), ..Identity::default() };
        relay.open(Route::Session("s".into()), identity, out.clone(), T0).unwrap();
        out.take();
        relay.tick(T0 + 3_999);
        assert!(types(&out).is_empty());
        relay.tick(T0 + 4_000);
        assert_eq!(types(&out), if enforced { vec!["token_expiring"] } else { vec![] });
        relay.tick(T0 + 5_099);
        assert_eq!(out.closed(), None);
        relay.tick(T0 + 5_100);
        assert_eq!(out.closed(), enforced.then(|| (1008, "Token expired".to_owned())), "enforced: {enforced}");
    }
}
