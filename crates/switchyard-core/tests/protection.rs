//! Rate limits, connection admission, ping health and frame sizes, with a fake clock.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use serde_json::{json, Value};
use switchyard_core::testing::RecordingOutbox;
use switchyard_core::{AckPolicy, Config, ConnId, Frame, Identity, NoEvents, Rate, RateLimits, Relay, Route, SessionOptions};

const T0: u64 = 1_700_000_000_000;

fn relay(config: Config) -> Relay {
    let relay = Relay::new(config, Arc::new(NoEvents));
    relay.create_session(SessionOptions { session_id: Some("s".into()), max_clients: Some(10), ..Default::default() }, T0).unwrap();
    relay
}

fn join(relay: &Relay, identity: Identity) -> (ConnId, Arc<RecordingOutbox>) {
    let out = RecordingOutbox::new();
    let id = relay.open(Route::Session("s".into()), identity, out.clone(), T0).unwrap();
    out.take();
    (id, out)
}

fn texts(out: &RecordingOutbox) -> Vec<Value> {
    out.take_texts().iter().map(|t| serde_json::from_str(t).unwrap()).collect()
}

fn limited(per_second: f64, burst: f64, per_user: Option<Rate>) -> Config {
    Config {
        rate_limit: Some(RateLimits { per_connection: Rate { per_second, burst }, per_user, max_violations: 3 }),
        ..Config::default()
    }
}

#[test]
fn a_connection_over_its_rate_is_refused_then_closed() {
    let relay = relay(limited(10.0, 2.0, None));
    let (a, a_out) = join(&relay, Identity::default());
    let (_, b_out) = join(&relay, Identity::default());
    a_out.take();
    for i in 0..4 {
        relay.receive(a, Frame::text(format!(r#"{{"type":"m","i":{i},"id":"x{i}"}}"#)), T0);
    }
    assert_eq!(b_out.take_texts().len(), 2, "the burst got through");
    let refused = texts(&a_out);
    assert_eq!(refused.len(), 2);
    assert_eq!(refused[0]["payload"], json!({"code":"RATE_LIMITED","message":"Too many messages; this one was dropped","correlationId":"x2"}));
    relay.receive(a, Frame::text(r#"{"type":"m","id":"y","ack":true}"#), T0 + 100);
    assert_eq!(b_out.take_texts().len(), 1, "a token came back after 100 ms");
    assert_eq!(texts(&a_out)[0]["type"], "ACK");
    relay.receive(a, Frame::text(r#"{"type":"m","id":"z","ack":true}"#), T0 + 100);
    assert_eq!(texts(&a_out)[0]["type"], "NACK", "refused with NACK when an ack was asked");
    assert_eq!(a_out.closed(), None, "three violations are tolerated");
    relay.receive(a, Frame::text(r#"{"type":"m"}"#), T0 + 100);
    assert_eq!(a_out.closed(), Some((1008, "Rate limit exceeded".into())), "the fourth closes");
    assert_eq!(relay.stats().rate_limited, 4);
}

#[test]
fn a_tier_in_the_identity_replaces_the_connection_rate() {
    let relay = relay(limited(1.0, 1.0, None));
    let tier = Identity { rate_limit: Some(Rate { per_second: 1.0, burst: 5.0 }), ..Default::default() };
    let (fast, fast_out) = join(&relay, tier);
    let (_, other) = join(&relay, Identity::default());
    fast_out.take();
    for _ in 0..5 {
        relay.receive(fast, Frame::text(r#"{"type":"m"}"#), T0);
    }
    assert_eq!(other.take_texts().len(), 5);
    assert!(fast_out.take().is_empty());
}

#[test]
fn a_user_shares_one_bucket_across_connections() {
    let relay = relay(limited(100.0, 100.0, Some(Rate { per_second: 1.0, burst: 3.0 })));
    let alice = || Identity { user_id: Some("alice".into()), ..Default::default() };
    let (laptop, laptop_out) = join(&relay, alice());
    let (phone, phone_out) = join(&relay, alice());
    let (_, bob) = join(&relay, Identity::default());
    laptop_out.take();
    phone_out.take();
    for conn in [laptop, phone, laptop, phone] {
        relay.receive(conn, Frame::text(r#"{"type":"m"}"#), T0);
    }
    assert_eq!(bob.take_texts().len(), 3, "three of alice's four got through");
    let refused = texts(&phone_out).into_iter().filter(|m| m["type"] == "error").count();
    assert_eq!(refused, 1, "the fourth, from the phone, was refused");
}

#[test]
fn an_address_may_open_so_many_connections_a_minute() {
    let relay = relay(Config { connections_per_minute_per_ip: Some(3), ..Config::default() });
    let (one, two) = (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)));
    assert!((0..3).all(|_| relay.admit(one, T0)));
    assert!(!relay.admit(one, T0));
    assert!(relay.admit(two, T0), "each address has its own budget");
    assert!(relay.admit(one, T0 + 20_000), "one more every 20 s");
    assert!(!relay.admit(one, T0 + 20_000));
    assert!(Relay::new(Config::default(), Arc::new(NoEvents)).admit(one, T0), "no limit by default");
}

#[test]
fn health_follows_ping_round_trips() {
    let relay = relay(Config { ping_interval_ms: 1000, heartbeat_timeout_ms: 10_000, ..Config::default() });
    let (a, _) = join(&relay, Identity::default());
    let (_b, _) = join(&relay, Identity::default());
    relay.tick(T0);
    let health = relay.health(T0 + 100);
    assert_eq!((health.healthy_connections, health.unhealthy_connections, health.average_latency_ms), (2, 0, None));
    relay.pong(a, T0 + 40);
    let health = relay.health(T0 + 600);
    assert_eq!((health.active_connections, health.healthy_connections, health.unhealthy_connections), (2, 1, 1));
    assert_eq!(health.average_latency_ms, Some(40.0));
    relay.alive(_b, T0 + 700);
    assert_eq!(relay.health(T0 + 700).unhealthy_connections, 1, "only a pong answers a ping");
}

#[test]
fn frames_are_counted_by_size() {
    let relay = relay(Config::default());
    let (a, _) = join(&relay, Identity::default());
    for len in [10, 128, 129, 5000, 20_000, 200_000] {
        relay.receive(a, Frame::binary(vec![0; len]), T0);
    }
    assert_eq!(relay.stats().frame_sizes.counts, [2, 1, 1, 1, 1, 0]);
}

#[test]
fn deeply_nested_json_is_refused_without_harm() {
    let relay = relay(Config::default());
    let (a, a_out) = join(&relay, Identity::default());
    let (_, b_out) = join(&relay, Identity::default());
    a_out.take();
    b_out.take();
    let nested = |depth: usize| format!(r#"{{"type":"m","id":"deep","payload":{}{}}}"#, "[".repeat(depth), "]".repeat(depth));
    relay.receive(a, Frame::text(nested(200)), T0);
    let refused = texts(&a_out);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["payload"]["code"], "INVALID_MESSAGE");
    assert_eq!(refused[0]["payload"]["message"], "JSON nested deeper than 100 levels");
    assert!(b_out.take_texts().is_empty(), "nothing reached the peer");
    relay.receive(a, Frame::text(nested(20)), T0);
    assert_eq!(b_out.take_texts().len(), 1, "reasonable nesting still relays");
    assert_eq!(a_out.closed(), None);
}

#[test]
fn under_ack_always_a_rate_limited_message_with_an_id_gets_a_nack() {
    let relay = relay(Config { ack: AckPolicy::Always, ..limited(1.0, 1.0, None) });
    let (a, a_out) = join(&relay, Identity::default());
    relay.receive(a, Frame::text(r#"{"type":"m","id":"first"}"#), T0);
    relay.receive(a, Frame::text(r#"{"type":"m","id":"second"}"#), T0);
    let answers = texts(&a_out);
    assert_eq!((answers[0]["type"].as_str(), answers[1]["type"].as_str()), (Some("ACK"), Some("NACK")), "{answers:?}");
    assert_eq!(answers[1]["payload"]["code"], "RATE_LIMITED");
}

#[test]
fn a_message_its_own_bucket_refuses_costs_the_users_other_connections_nothing() {
    let relay = relay(limited(1.0, 1.0, Some(Rate { per_second: 1.0, burst: 3.0 })));
    let alice = || Identity { user_id: Some("alice".into()), ..Identity::default() };
    let (laptop, laptop_out) = join(&relay, alice());
    let (phone, phone_out) = join(&relay, alice());
    for _ in 0..4 {
        relay.receive(laptop, Frame::text(r#"{"type":"m"}"#), T0);
    }
    assert_eq!(texts(&laptop_out).iter().filter(|m| m["type"] == "error").count(), 3, "the laptop's own burst is 1");
    relay.receive(phone, Frame::text(r#"{"type":"m"}"#), T0);
    assert!(texts(&phone_out).iter().all(|m| m["type"] != "error"), "the user's bucket lost one token, not four");
}
