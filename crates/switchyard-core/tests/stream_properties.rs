//! Property tests of streams through the streams seam: for random sends, server
//! publications, abrupt drops and reconnects with recovery, across sessions, a client with
//! positions sees each offset of its session's stream exactly once and in order (none of
//! its own, none of another session), and the offsets number every publication.

use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::Value;
use switchyard_core::testing::RecordingOutbox;
use switchyard_core::{
    Config, ConnId, Frame, HistoryConfig, Identity, MemoryStreams, NoEvents, Relay, Resume, Route, Seams, SessionOptions,
    Streams,
};

const SESSIONS: usize = 2;
const CLIENTS: usize = 3;

#[derive(Clone, Debug)]
enum Op {
    /// Client `who` of a session sends a message, if it is connected.
    Send { session: usize, who: usize },
    /// The server publishes to a session.
    Server { session: usize },
    /// Client `who` loses its network: what its connection receives from now on never
    /// reaches it, and the relay does not know yet.
    Drop { session: usize, who: usize },
    /// Client `who`, if it lost its network, reconnects from the last position it saw,
    /// naming the connections it had since.
    Reconnect { session: usize, who: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..SESSIONS, 0..CLIENTS).prop_map(|(session, who)| Op::Send { session, who }),
        1 => (0..SESSIONS).prop_map(|session| Op::Server { session }),
        2 => (0..SESSIONS, 0..CLIENTS).prop_map(|(session, who)| Op::Drop { session, who }),
        2 => (0..SESSIONS, 0..CLIENTS).prop_map(|(session, who)| Op::Reconnect { session, who }),
    ]
}

/// One client across its reconnects, as a browser client keeps it.
struct Client {
    conn: ConnId,
    outbox: Arc<RecordingOutbox>,
    epoch: String,
    /// Offsets seen, in the order they arrived, over every connection.
    seen: Vec<u64>,
    /// Its connections since the last publication it saw: its `previous`.
    since_seen: Vec<ConnId>,
    dropped: bool,
}

/// A new connection, its welcome, and what came after it (a replay).
fn open(relay: &Relay, session: usize, url: &str) -> (ConnId, Arc<RecordingOutbox>, Value, Vec<String>) {
    let outbox = RecordingOutbox::new();
    let identity = Identity { resume: Resume::from_url(url), ..Default::default() };
    let conn = relay.open(Route::Session(format!("s{session}")), identity, outbox.clone(), 0).unwrap();
    let mut texts = outbox.take_texts();
    let welcome: Value = serde_json::from_str(&texts.remove(0)).unwrap();
    (conn, outbox, welcome, texts)
}

/// Moves what a client's connection received into what it has seen.
fn read(client: &mut Client, session: usize) -> Result<(), TestCaseError> {
    if client.dropped {
        return Ok(());
    }
    let texts = client.outbox.take_texts();
    see(client, session, texts)
}

fn see(client: &mut Client, session: usize, texts: Vec<String>) -> Result<(), TestCaseError> {
    for text in texts {
        let frame: Value = serde_json::from_str(&text).unwrap();
        if frame["type"] == "publication" {
            prop_assert_eq!(frame["data"]["session"].as_u64(), Some(session as u64), "crossed sessions");
            client.seen.push(frame["offset"].as_u64().unwrap());
            client.since_seen = vec![client.conn];
        }
    }
    Ok(())
}

fn check_streams(streams: Arc<dyn Streams>, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let config = Config { history: Some(HistoryConfig { size: 10_000, ttl_ms: 60_000 }), max_clients_per_session: 10, ..Config::default() };
    let relay = Relay::with_seams(config, Arc::new(NoEvents), Seams { streams, ..Seams::alone(0) });
    let mut clients: Vec<Vec<Client>> = Vec::new();
    let mut published = [0u64; SESSIONS];
    // Each session's offsets, by the client that published them (None: the server).
    let mut publishers: Vec<HashMap<u64, Option<usize>>> = vec![HashMap::new(); SESSIONS];
    for session in 0..SESSIONS {
        relay.create_session(SessionOptions { session_id: Some(format!("s{session}")), ..Default::default() }, 0).unwrap();
        let joined = (0..CLIENTS)
            .map(|_| {
                let (conn, outbox, welcome, _) = open(&relay, session, "/session/s?positions=1");
                let epoch = welcome["epoch"].as_str().unwrap().into();
                Client { conn, outbox, epoch, seen: Vec::new(), since_seen: vec![conn], dropped: false }
            })
            .collect();
        clients.push(joined);
    }
    for op in ops {
        match op {
            Op::Send { session, who } if !clients[session][who].dropped => {
                published[session] += 1;
                publishers[session].insert(published[session], Some(who));
                let client = &clients[session][who];
                relay.receive(client.conn, Frame::text(format!(r#"{{"type":"m","session":{session}}}"#)), 0);
            }
            Op::Server { session } => {
                published[session] += 1;
                publishers[session].insert(published[session], None);
                relay.publish(&format!("s{session}"), Frame::text(format!(r#"{{"type":"s","session":{session}}}"#)), None, 0).unwrap();
            }
            Op::Drop { session, who } => {
                let client = &mut clients[session][who];
                read(client, session)?;
                client.dropped = true;
            }
            Op::Reconnect { session, who } if clients[session][who].dropped => {
                let client = &mut clients[session][who];
                let last = client.seen.last().copied().unwrap_or(0);
                let previous: Vec<String> = client.since_seen.iter().map(ConnId::to_string).collect();
                let url = format!("/session/s?since={}:{last}&previous={}", client.epoch, previous.join(","));
                let old = client.outbox.clone();
                let (conn, outbox, welcome, replay) = open(&relay, session, &url);
                prop_assert_eq!(&welcome["recovered"], &Value::Bool(true));
                prop_assert_eq!(old.closed(), Some((1000, "Replaced by a reconnect".to_owned())));
                client.conn = conn;
                client.outbox = outbox;
                client.since_seen.push(conn);
                client.dropped = false;
                see(client, session, replay)?;
            }
            _ => {}
        }
    }
    for (session, members) in clients.iter_mut().enumerate() {
        for (who, client) in members.iter_mut().enumerate() {
            read(client, session)?;
            let seen_up_to = if client.dropped { client.seen.last().copied().unwrap_or(0) } else { published[session] };
            let expected: Vec<u64> = (1..=seen_up_to).filter(|o| publishers[session][o] != Some(who)).collect();
            prop_assert_eq!(&client.seen, &expected, "each offset but its own, once, in order");
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn streams_keep_their_invariants_in_memory(ops in prop::collection::vec(op(), 1..150)) {
        check_streams(Arc::new(MemoryStreams::new(64 << 20)), ops)?;
    }
}
