//! Property tests of the core in a cluster: several relays joined by a broker that hands
//! what each forwards to the others (as the Redis broker does, in one order), in random
//! interleavings with their clients' sends and the server's. Every client sees each
//! message of every other member of its session exactly once, in its sender's order,
//! never its own, never another session's, whichever node each member is on. The server
//! on each node is a publisher of its own: sends from two nodes at once have no order.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use proptest::prelude::*;
use serde_json::Value;
use switchyard_core::testing::RecordingOutbox;
use switchyard_core::{
    NoHooks,
    ClusterLink, ClusterStatus, Config, ConnId, Frame, Identity, MemoryPresence, MemoryStreams, NoEvents, Relay, Remote, Route, Seams, SessionOptions, Target,
    Topic,
};

const NODES: usize = 3;
const SESSIONS: usize = 2;
const CLIENTS: usize = 3;

/// What every node forwarded, in the one order the shared broker gives it.
type Wire = Arc<Mutex<VecDeque<(usize, Remote)>>>;

/// A node's end of an in-process cluster.
struct Linked {
    node: usize,
    wire: Wire,
}

impl ClusterLink for Linked {
    fn status(&self) -> Option<ClusterStatus> {
        Some(ClusterStatus { node_id: format!("n{}", self.node).into(), connected: true, joined: true, peers: NODES - 1, dropped: 0, sent: 0, round_trips: 0 })
    }
    fn forward(&self, remote: Remote) {
        self.wire.lock().push_back((self.node, remote));
    }
    fn subscribed(&self, _topic: &Topic) {}
    fn orders_steps(&self) -> bool {
        true
    }
    fn numbers_remotely(&self, _topic: &Topic) -> bool {
        false
    }
    fn connection_id_base(&self) -> u64 {
        (self.node as u64 + 1) << 38
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// Client `who` of a session sends its next message.
    Send { session: usize, who: usize },
    /// The server publishes to a session from a node.
    Server { session: usize, node: usize },
    /// The shared broker hands on up to this many of what is waiting.
    Deliver(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..SESSIONS, 0..CLIENTS).prop_map(|(session, who)| Op::Send { session, who }),
        1 => (0..SESSIONS, 0..NODES).prop_map(|(session, node)| Op::Server { session, node }),
        3 => (1..8usize).prop_map(Op::Deliver),
    ]
}

/// Hands on up to `n` waiting messages: to every other node, and a step (control,
/// awareness) to the sender's node too, as Redis's order brings it back.
fn deliver(relays: &[Relay], wire: &Wire, n: usize) {
    for _ in 0..n {
        let Some((from, remote)) = wire.lock().pop_front() else { return };
        let step = matches!(remote, Remote::Control { .. } | Remote::Awareness { .. });
        for (node, relay) in relays.iter().enumerate() {
            if node != from || step {
                relay.handle_remote(remote.clone(), 0);
            }
        }
    }
}

fn config() -> Config {
    Config { max_clients_per_session: CLIENTS, enable_role_management: false, ..Config::default() }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_member_on_every_node_gets_each_message_once_in_order(ops in proptest::collection::vec(op(), 1..120)) {
        let wire: Wire = Arc::default();
        let relays: Vec<Relay> = (0..NODES)
            .map(|node| {
                let seams = Seams {
                    streams: Arc::new(MemoryStreams::new(1 << 20)),
                    link: Arc::new(Linked { node, wire: wire.clone() }),
                    presence: Arc::new(MemoryPresence::default()),
                    hooks: Arc::new(NoHooks),
                };
                Relay::with_seams(config(), Arc::new(NoEvents), seams)
            })
            .collect();
        for session in 0..SESSIONS {
            relays[session % NODES].create_session(SessionOptions { session_id: Some(format!("s{session}")), ..Default::default() }, 0).unwrap();
        }
        deliver(&relays, &wire, usize::MAX);
        // Client `who` of each session is on node `who`: every session spans every node.
        let mut clients: HashMap<(usize, usize), (ConnId, Arc<RecordingOutbox>)> = HashMap::new();
        for session in 0..SESSIONS {
            for who in 0..CLIENTS {
                let outbox = RecordingOutbox::new();
                let conn = relays[who % NODES].open(Route::Session(format!("s{session}")), Identity::default(), outbox.clone(), 0).unwrap();
                clients.insert((session, who), (conn, outbox));
                deliver(&relays, &wire, usize::MAX);
            }
        }
        for (_, outbox) in clients.values() {
            outbox.take();
        }

        let mut sent: HashMap<(usize, usize), u64> = HashMap::new();
        let mut server_sent: HashMap<(usize, usize), u64> = HashMap::new();
        for op in ops {
            match op {
                Op::Send { session, who } => {
                    let n = sent.entry((session, who)).or_default();
                    let message = serde_json::json!({ "type": "m", "session": session, "who": who, "n": *n }).to_string();
                    *n += 1;
                    relays[who % NODES].receive(clients[&(session, who)].0, Frame::text(message), 0);
                }
                Op::Server { session, node } => {
                    let n = server_sent.entry((session, node)).or_default();
                    let message = serde_json::json!({ "type": "m", "session": session, "who": format!("server@{node}"), "n": *n }).to_string();
                    *n += 1;
                    relays[node].send(&Target { session_id: Some(&format!("s{session}")), ..Default::default() }, Frame::text(message), 0);
                }
                Op::Deliver(n) => deliver(&relays, &wire, n),
            }
        }
        deliver(&relays, &wire, usize::MAX);

        for ((session, who), (_, outbox)) in &clients {
            let mut heard: HashMap<String, Vec<u64>> = HashMap::new();
            for text in outbox.take_texts() {
                let message: Value = serde_json::from_str(&text).unwrap();
                prop_assert_eq!(message["type"].as_str(), Some("m"), "only messages: {}", text);
                prop_assert_eq!(message["session"].as_u64(), Some(*session as u64), "never another session's");
                let sender = message["who"].to_string();
                prop_assert_ne!(sender.clone(), who.to_string(), "never its own");
                heard.entry(sender).or_default().push(message["n"].as_u64().unwrap());
            }
            for other in (0..CLIENTS).filter(|other| other != who) {
                let count = sent.get(&(*session, other)).copied().unwrap_or(0);
                let got = heard.remove(&other.to_string()).unwrap_or_default();
                prop_assert_eq!(got, (0..count).collect::<Vec<_>>(), "client {} of s{} from client {}: once each, in order", who, session, other);
            }
            for node in 0..NODES {
                let count = server_sent.get(&(*session, node)).copied().unwrap_or(0);
                let got = heard.remove(&format!("\"server@{node}\"")).unwrap_or_default();
                prop_assert_eq!(got, (0..count).collect::<Vec<_>>(), "the server's on node {}, once each, in order", node);
            }
            prop_assert!(heard.is_empty(), "nothing else: {:?}", heard);
        }
    }
}
