//! Property tests: for random joins, leaves and sends, no message crosses sessions, none
//! reaches its sender, and none is lost while outboxes have room; a channel publish
//! reaches exactly the channel's other members.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use proptest::prelude::*;
use switchyard_core::testing::RecordingOutbox;
use switchyard_core::{Config, ConnId, Frame, FrameKind, Identity, NoEvents, Relay, Route, SessionOptions};

const SESSIONS: usize = 3;

#[derive(Clone, Debug)]
enum Op {
    Join(usize),
    Leave(usize),
    Send { from: usize, binary: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..SESSIONS).prop_map(Op::Join),
        1 => any::<usize>().prop_map(Op::Leave),
        4 => (any::<usize>(), any::<bool>()).prop_map(|(from, binary)| Op::Send { from, binary }),
    ]
}

struct Client {
    id: ConnId,
    session: usize,
    outbox: Arc<RecordingOutbox>,
}

proptest! {
    #[test]
    fn routing_keeps_its_invariants(ops in prop::collection::vec(op(), 1..120)) {
        let relay = Relay::new(Config { max_clients_per_session: 1000, ..Config::default() }, Arc::new(NoEvents));
        for s in 0..SESSIONS {
            relay.create_session(SessionOptions { session_id: Some(format!("s{s}")), ..Default::default() }, 0).unwrap();
        }
        let mut open: Vec<Client> = Vec::new();
        // message number -> (sender, session, who must receive it)
        let mut expected: HashMap<u64, (ConnId, usize, HashSet<ConnId>)> = HashMap::new();
        let mut received: HashMap<ConnId, Vec<u64>> = HashMap::new();
        let mut closed: Vec<Client> = Vec::new();
        let mut next_message = 0u64;

        for op in ops {
            match op {
                Op::Join(session) => {
                    let outbox = RecordingOutbox::new();
                    let id = relay.open(Route::Session(format!("s{session}")), Identity::default(), outbox.clone(), 0).unwrap();
                    open.push(Client { id, session, outbox });
                }
                Op::Leave(pick) if !open.is_empty() => {
                    let client = open.remove(pick % open.len());
                    relay.connection_closed(client.id, 1000, "bye", 0);
                    closed.push(client);
                }
                Op::Send { from, binary } if !open.is_empty() => {
                    let sender = &open[from % open.len()];
                    next_message += 1;
                    let body = format!(r#"{{"type":"m","n":{next_message}}}"#);
                    let frame = if binary { Frame::binary(body.into_bytes()) } else { Frame::text(body.into_bytes()) };
                    let recipients = open.iter().filter(|c| c.session == sender.session && c.id != sender.id).map(|c| c.id).collect();
                    expected.insert(next_message, (sender.id, sender.session, recipients));
                    relay.receive(sender.id, frame, 0);
                }
                _ => {}
            }
        }

        for client in open.iter().chain(closed.iter()) {
            for frame in client.outbox.take() {
                let value: serde_json::Value = serde_json::from_slice(&frame.payload).unwrap();
                if value["type"] == "m" {
                    prop_assert!(frame.kind != FrameKind::Ping);
                    received.entry(client.id).or_default().push(value["n"].as_u64().unwrap());
                }
            }
        }
        let session_of: HashMap<ConnId, usize> = open.iter().chain(closed.iter()).map(|c| (c.id, c.session)).collect();
        for (n, (sender, session, recipients)) in &expected {
            let got: HashSet<ConnId> = received.iter().filter(|(_, ns)| ns.contains(n)).map(|(id, _)| *id).collect();
            prop_assert!(!got.contains(sender), "message {} echoed to its sender", n);
            for id in &got {
                prop_assert_eq!(session_of[id], *session, "message {} crossed sessions", n);
            }
            prop_assert_eq!(&got, recipients, "message {} lost or misdelivered", n);
        }
        for ns in received.values() {
            let mut sorted = ns.clone();
            sorted.sort_unstable();
            prop_assert_eq!(&sorted, ns, "delivered out of order");
        }
    }

    #[test]
    fn a_channel_publish_reaches_exactly_the_other_members(ops in prop::collection::vec(channel_op(), 1..150)) {
        let relay = Relay::new(Config::default(), Arc::new(NoEvents));
        let clients: Vec<(ConnId, Arc<RecordingOutbox>)> = (0..CLIENTS)
            .map(|_| {
                let outbox = RecordingOutbox::new();
                (relay.open(Route::Sessionless, Identity::default(), outbox.clone(), 0).unwrap(), outbox)
            })
            .collect();
        let mut members: Vec<HashSet<usize>> = vec![HashSet::new(); CHANNELS];
        for op in ops {
            let (client, channel) = match op {
                ChannelOp::Join(c, ch) | ChannelOp::Leave(c, ch) | ChannelOp::Publish(c, ch) => (c, ch),
            };
            let (id, outbox) = &clients[client];
            outbox.take();
            let text = match op {
                ChannelOp::Join(..) => {
                    members[channel].insert(client);
                    format!(r#"{{"type":"JOIN_CHANNEL","channel":"c{channel}"}}"#)
                }
                ChannelOp::Leave(..) => {
                    members[channel].remove(&client);
                    format!(r#"{{"type":"LEAVE_CHANNEL","channel":"c{channel}"}}"#)
                }
                ChannelOp::Publish(..) => format!(r#"{{"type":"p","channel":"c{channel}"}}"#),
            };
            for (_, other) in &clients {
                other.take();
            }
            relay.receive(*id, Frame::text(text.clone()), 0);
            if let ChannelOp::Publish(..) = op {
                let got: HashSet<usize> = (0..CLIENTS).filter(|&i| clients[i].1.take_texts().contains(&text)).collect();
                let mut expected = members[channel].clone();
                expected.remove(&client);
                if !members[channel].contains(&client) {
                    expected.clear();
                }
                prop_assert_eq!(got, expected);
            }
        }
        let live: Vec<(String, usize)> = (0..CHANNELS)
            .filter(|&ch| !members[ch].is_empty())
            .map(|ch| (format!("c{ch}"), members[ch].len()))
            .collect();
        prop_assert_eq!(relay.channel_breakdown(), live, "empty channels are deleted");
    }
}

const CLIENTS: usize = 5;
const CHANNELS: usize = 3;

#[derive(Clone, Copy, Debug)]
enum ChannelOp {
    Join(usize, usize),
    Leave(usize, usize),
    Publish(usize, usize),
}

fn channel_op() -> impl Strategy<Value = ChannelOp> {
    let pick = (0..CLIENTS, 0..CHANNELS);
    prop_oneof![
        2 => pick.clone().prop_map(|(c, ch)| ChannelOp::Join(c, ch)),
        1 => pick.clone().prop_map(|(c, ch)| ChannelOp::Leave(c, ch)),
        3 => pick.prop_map(|(c, ch)| ChannelOp::Publish(c, ch)),
    ]
}
