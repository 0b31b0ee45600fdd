//! The link task: one node's connections to Redis, one server or a Redis Cluster
//! (`connection`). Commands carry the node's publications in pipelined batches
//! (everything that queued meanwhile, in one round trip to one server, one per slot to a
//! cluster) and the directory (sessions with their expiry, members, node leases); a
//! subscriber hears the cluster-wide channel and the topics this node has subscribers to.
//! When either fails the node is degraded until it reconnects; then it resubscribes,
//! registers its sessions and members again and reloads the others'.
//!
//! Publications to a topic with a stream are numbered by Redis, not by a node: a script
//! appends each to the topic's Redis stream (its entry id is the offset) and publishes it
//! with its offset, and every node, the publisher's too, delivers it when it arrives, so
//! offsets are the same everywhere and a client recovers on any node. Each node keeps a
//! copy of the streams its subscribers need, loaded when it subscribes. A stream never
//! goes on past a gap under the same epoch: publications a node could not get to Redis,
//! and those a Redis lost (a failover to a replica that had not received them, a stream
//! that expired), start the stream again in a new epoch, so a client that missed them
//! recovers `false` rather than silently short.
//!
//! Keys and channels, under the prefix, each of a topic (`s:<session>`, `c:<channel>`)
//! under its hash tag, so that in a Redis Cluster they share one slot:
//! `{s:<id>}:session` (a session's record, expiring with it), `{s:<id>}:members` (a hash
//! of connection to member), `{s:<id>}:deleted` (when a session was deleted),
//! `{<topic>}:stream` and `{<topic>}:meta` (a stream, and its epoch and last offset),
//! `{c:<name>}:occupants` (the nodes with members of a channel); `{directory}:sessions`
//! (every session's id, what a joining node reads); `{nodes}` (a set of node ids),
//! `{nodes}:lease:<id>`, and `{nodes}:sessions:<id>` and `{nodes}:channels:<id>` (where a
//! node has members, for the node that finds it gone), in one slot. Nothing is found by
//! scanning the keyspace. Channels `{all}` (the directory's news,
//! and sends to users, organizations and everyone) and `{<topic>}:t` (a session's or
//! channel's deliveries), sharded on a cluster. No command, script or pipeline spans two
//! slots.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use redis::RedisResult;
use switchyard_core::{now, Millis, Publication, Relay, Remote, SessionId, Topic};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::connection::{Batch, Commands, Heard, Subscriber, Target};
use crate::wire::{self, topic_name};
use crate::{LinkState, Outgoing, RedisBroker};

fn new_epoch() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 8)
}

/// What XRANGE answers: each entry's id, and its fields with their values.
type StreamEntries = Vec<(String, Vec<(String, Vec<u8>)>)>;

/// How long a deleted session's id is remembered as deleted.
const TOMBSTONE_MS: u64 = 24 * 60 * 60 * 1000;

/// Most messages sent in one pipeline.
const BATCH: usize = 1024;
/// Most keys read at once.
const READ_AT_ONCE: usize = 500;
/// The hash tag of the channel every node hears.
const NEWS: &str = "all";
/// How long the link waits before connecting again, doubling from the least to the most.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// Holds one of a session's places, unless the members and holds fill them; holds past
/// their time are let go. KEYS: the session's members hash. ARGV: the places, the hold's
/// field, now (ms).
const RESERVE: &str = r"
local now = tonumber(ARGV[3])
local entries = redis.call('HGETALL', KEYS[1])
local taken = 0
for i = 1, #entries, 2 do
  local field = entries[i]
  if string.sub(field, 1, 2) == 'r:' and tonumber(entries[i + 1]) < now then
    redis.call('HDEL', KEYS[1], field)
  else
    taken = taken + 1
  end
end
if taken >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], now + 10000)
return 1
";

/// Numbers a publication in its topic's stream and publishes it with its place. The
/// stream starts again in a new epoch when Redis holds less of it than the publishing
/// node has seen (lost in a failover, or expired): never the same offsets twice.
/// KEYS: the stream's meta hash, the stream. ARGV: size, time to live (ms), now (ms), the
/// publishing node's epoch of the stream (or one for a new stream), the topic's channel,
/// the delivery's message, the command that publishes, the offset the node has seen in
/// its epoch, a new epoch.
const NUMBER: &str = r"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local seen = tonumber(ARGV[8])
if not epoch or (epoch == ARGV[4] and tonumber(redis.call('HGET', KEYS[1], 'offset') or '0') < seen) then
  if not epoch and seen == 0 then epoch = ARGV[4] else epoch = ARGV[9] end
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[1], offset .. '-0', 'm', ARGV[6], 't', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call(ARGV[7], ARGV[5], '#' .. offset .. ' ' .. ARGV[3] .. ' ' .. epoch .. '\n' .. ARGV[6])
return offset
";

/// Starts a topic's stream again in a new epoch, when Redis keeps one: publications to it
/// were lost on the way. KEYS: the stream's meta hash, the stream. ARGV: the new epoch.
const RESTART: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'offset', 0)
end
";

pub(crate) struct Link {
    pub target: Target,
    pub relay: Arc<Relay>,
    pub broker: Arc<RedisBroker>,
    pub node_id: Arc<str>,
    pub prefix: String,
    pub lease_ms: u64,
    /// For connecting and for each answer.
    pub timeout: Duration,
    pub state: Arc<LinkState>,
}

/// How a connected stretch ended.
enum End {
    Stopped,
    Lost(redis::RedisError),
}

struct Connections {
    commands: Commands,
    subscriber: Subscriber,
    /// Channels the subscriber connection is subscribed to.
    subscribed: HashSet<String>,
    /// The numbering script's SHA1, loaded on this connection's Redis.
    number: String,
    /// The other nodes alive at the last tick.
    peers: HashSet<String>,
}

impl Link {
    pub async fn run(self, mut queue: mpsc::Receiver<Outgoing>, mut stop: watch::Receiver<bool>) {
        let mut retry = RETRY_MIN;
        let mut reported = false;
        loop {
            match self.connect().await {
                Ok(mut connections) => {
                    retry = RETRY_MIN;
                    reported = false;
                    let end = self.serve(&mut connections, &mut queue, &mut stop).await;
                    self.state.connected.store(false, Ordering::Relaxed);
                    match end {
                        End::Stopped => {
                            self.leave(&mut connections, &mut queue).await;
                            return;
                        }
                        End::Lost(err) => warn!(node = %self.node_id, "lost Redis, relaying among this node's clients only: {err}"),
                    }
                }
                Err(err) if !reported => {
                    reported = true;
                    warn!(node = %self.node_id, "cannot reach Redis, relaying among this node's clients only: {err}");
                }
                Err(err) => debug!("still cannot reach Redis: {err}"),
            }
            // Degraded: what queues is dropped (and counted) until the next attempt.
            let wait = tokio::time::sleep(retry);
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    _ = &mut wait => break,
                    _ = stop.changed() => return,
                    item = queue.recv() => match item {
                        Some(Outgoing::Remote(remote)) => self.broker.drop_remote(&remote),
                        Some(_) => {}
                        None => return,
                    },
                }
            }
            retry = (retry * 2).min(RETRY_MAX);
        }
    }

    /// The channel every node hears: the directory's news, and sends to users,
    /// organizations and everyone. Tagged, as a cluster shards it as a key.
    fn news(&self) -> String {
        format!("{}{{{NEWS}}}", self.prefix)
    }

    /// A key of `topic`'s: `<prefix>{<topic>}:<what>`. Every key of a topic (a session's
    /// record, members and tombstone, a stream and its meta, a channel's occupants) and
    /// its channel share the hash tag `{<topic>}`, so in a Redis Cluster they share a
    /// slot, and a script or command over several of them never crosses two.
    fn topic_key(&self, topic: &Topic, what: &str) -> String {
        self.tagged_key(&topic_name(topic), what)
    }

    /// `<prefix>{<tag>}:<what>`.
    fn tagged_key(&self, tag: &str, what: &str) -> String {
        format!("{}{{{tag}}}:{what}", self.prefix)
    }

    /// A key of session `id`'s (see [`Link::topic_key`]).
    fn session_key(&self, id: &SessionId, what: &str) -> String {
        self.topic_key(&Topic::Session(id.clone()), what)
    }

    /// The set of node ids (`what` `None`), or a node's `lease`, or the `sessions` it has
    /// members in and the `channels` it has members of (what a node found gone leaves):
    /// all in the one slot `{nodes}`, so one pipeline reads every lease.
    fn node_key(&self, what: Option<(&str, &str)>) -> String {
        match what {
            Some((what, node)) => self.tagged_key("nodes", &format!("{what}:{node}")),
            None => format!("{}{{nodes}}", self.prefix),
        }
    }

    /// The set of every session's id: what a node joining reads the directory from.
    fn sessions_key(&self) -> String {
        self.tagged_key("directory", "sessions")
    }

    /// Deliveries to a session or channel, and a session's control steps, go on the
    /// topic's channel, in one order for every node subscribed to it; the rest (members
    /// too, which every node counts) on `all`.
    fn channel_of(&self, remote: &Remote) -> String {
        let topic = match remote {
            Remote::Delivery(d) if matches!(d.topic, Topic::Session(_) | Topic::Channel(_)) => d.topic.clone(),
            Remote::Control { session, .. } => Topic::Session(session.clone()),
            _ => return self.news(),
        };
        self.topic_channel(&topic)
    }

    /// The channel a session's or channel's deliveries go on, which nodes with
    /// subscribers to it subscribe to.
    fn topic_channel(&self, topic: &Topic) -> String {
        self.topic_key(topic, "t")
    }

    async fn connect(&self) -> RedisResult<Connections> {
        let (mut commands, mut subscriber) = self.target.connect(self.timeout).await?;
        subscriber.subscribe(&[self.news()]).await?;
        let number: String = redis::cmd("SCRIPT").arg("LOAD").arg(NUMBER).query_async(&mut commands).await?;
        let mut connections = Connections { commands: commands.clone(), subscriber, subscribed: HashSet::new(), number, peers: HashSet::new() };
        self.renew_lease(&mut commands).await?;
        self.restart_lost(&commands).await?;
        // Every topic is subscribed to afresh, so its copy is loaded: what was numbered here
        // while Redis was away is of another epoch.
        self.reconcile_all(&mut connections).await?;
        self.register(&commands).await?;
        self.load(&commands).await?;
        self.state.connected.store(true, Ordering::Relaxed);
        self.state.joined.store(true, Ordering::Relaxed);
        info!(node = %self.node_id, "joined the cluster through Redis");
        Ok(connections)
    }

    async fn serve(&self, connections: &mut Connections, queue: &mut mpsc::Receiver<Outgoing>, stop: &mut watch::Receiver<bool>) -> End {
        let mut lease = tokio::time::interval(Duration::from_millis(self.lease_ms / 4));
        loop {
            let result = tokio::select! {
                biased;
                _ = stop.changed() => return End::Stopped,
                heard = connections.subscriber.next() => match heard {
                    Ok(Heard::Message(message)) => {
                        self.incoming(&message);
                        Ok(())
                    }
                    Ok(Heard::Unsubscribed(channel)) => self.unsubscribed(connections, channel).await,
                    Err(err) => Err(err),
                },
                item = queue.recv() => match item {
                    Some(first) => self.send(connections, queue, first).await,
                    None => return End::Stopped,
                },
                _ = lease.tick() => self.tick(connections).await,
            };
            if let Err(err) = result {
                return End::Lost(err);
            }
        }
    }

    /// A channel this node no longer hears. When it still wants it, its slot moved to
    /// another shard: it subscribes there and catches up on what it missed, or, for the
    /// channel every node hears, starts afresh.
    async fn unsubscribed(&self, connections: &mut Connections, channel: String) -> RedisResult<()> {
        if channel == self.news() {
            return Err(redis::RedisError::from((redis::ErrorKind::Io, "the cluster moved the slot of the channel every node hears")));
        }
        if connections.subscribed.remove(&channel) {
            debug!(node = %self.node_id, %channel, "a channel's slot moved: subscribing again");
            self.reconcile_all(connections).await?;
        }
        Ok(())
    }

    fn incoming(&self, message: &[u8]) {
        if wire::is_numbered(message) {
            // Numbered in Redis: delivered here only now, the publisher's node included.
            match wire::decode_numbered(message) {
                Ok((_, remote)) => self.relay.handle_remote(remote, now()),
                Err(err) => debug!("dropped an unreadable publication from Redis: {err}"),
            }
            return;
        }
        match wire::decode(message) {
            // Steps are applied on every node when they come back, this one too.
            Ok((_, remote @ (Remote::Control { .. } | Remote::Awareness { .. }))) => self.relay.handle_remote(remote, now()),
            // Delivered here when it was made: never twice.
            Ok((node, _)) if node == self.node_id => {}
            Ok((_, remote)) => self.relay.handle_remote(remote, now()),
            Err(err) => debug!("dropped an unreadable message from Redis: {err}"),
        }
    }

    /// Sends `first` and whatever else is queued, in one batch.
    async fn send(&self, connections: &mut Connections, queue: &mut mpsc::Receiver<Outgoing>, first: Outgoing) -> RedisResult<()> {
        let mut batch = Batch::new(&connections.commands, NEWS);
        let mut topics = Vec::new();
        let mut item = Some(first);
        let mut sent = 0;
        let mut resync = false;
        let mut lookups = Vec::new();
        let mut loads = Vec::new();
        // Topics published to in the batch: should it fail, their publications are lost.
        let mut publishing = HashSet::new();
        // The epoch of a stream that starts in this batch (new, or started again).
        let fresh = new_epoch();
        let result = async {
            self.restart_lost(&connections.commands).await?;
            while let Some(outgoing) = item.take() {
                match outgoing {
                    Outgoing::Remote(remote) => {
                        self.directory(&mut batch, &remote);
                        let message = wire::encode(&self.node_id, &remote);
                        let channel = self.channel_of(&remote);
                        match self.broker.numbered_stream(&remote) {
                            Some((topic, config)) => {
                                let position = self.broker.position(topic);
                                let meta = self.topic_key(topic, "meta");
                                batch
                                    .cmd("EVALSHA", &connections.number)
                                    .arg(2)
                                    .arg(&meta)
                                    .arg(self.topic_key(topic, "stream"))
                                    .arg(config.size)
                                    .arg(config.ttl_ms)
                                    .arg(now())
                                    .arg(position.as_ref().map_or(fresh.as_str(), |p| &*p.epoch))
                                    .arg(&channel)
                                    .arg(message)
                                    .arg(connections.commands.publish())
                                    .arg(position.as_ref().map_or(0, |p| p.offset))
                                    .arg(&fresh)
                                    .ignore();
                                publishing.insert(topic.clone());
                            }
                            None => {
                                batch.cmd(connections.commands.publish(), &channel).arg(message).ignore();
                            }
                        }
                        sent += 1;
                    }
                    Outgoing::LoadStream(topic, answer) => loads.push((topic, answer)),
                    Outgoing::Claim(id, answer) => {
                        // What queued before the question is sent before it is asked.
                        self.flush(&connections.commands, &mut batch, &mut sent).await?;
                        let key = self.session_key(&id, "session");
                        let claimed: Option<String> = redis::cmd("SET").arg(key).arg("{}").arg("NX").arg("PX").arg(10_000).query_async(&mut connections.commands).await?;
                        let _ = answer.send(claimed.is_some());
                    }
                    Outgoing::Settle(answer) => {
                        self.flush(&connections.commands, &mut batch, &mut sent).await?;
                        let _ = answer.send(());
                    }
                    Outgoing::Reserve { session, hold, max, answer } => {
                        let key = self.session_key(&session, "members");
                        if max.is_some() {
                            self.flush(&connections.commands, &mut batch, &mut sent).await?;
                        }
                        let free = match max {
                            Some(max) => {
                                redis::cmd("EVAL").arg(RESERVE).arg(1).arg(key).arg(max).arg(&hold).arg(now()).query_async::<i64>(&mut connections.commands).await? == 1
                            }
                            None => {
                                // Sent with what queued before it, so after the member's entry.
                                batch.cmd("HDEL", &key).arg(&hold).ignore();
                                true
                            }
                        };
                        let _ = answer.send(free);
                    }
                    Outgoing::Occupancy { channel, here, answer } => {
                        self.flush(&connections.commands, &mut batch, &mut sent).await?;
                        let key = self.tagged_key(&wire::channel_tag(&channel), "occupants");
                        let mut occupancy = redis::pipe();
                        occupancy.atomic().cmd(if here { "SADD" } else { "SREM" }).arg(&key).arg(&*self.node_id).ignore().cmd("SCARD").arg(&key);
                        let (nodes,): (usize,) = occupancy.query_async(&mut connections.commands).await?;
                        batch.cmd(if here { "SADD" } else { "SREM" }, &self.node_key(Some(("channels", &self.node_id)))).arg(&channel).ignore();
                        let _ = answer.send(nodes);
                    }
                    Outgoing::Subscription(topic) => topics.push(topic),
                    Outgoing::Resync => resync = true,
                    Outgoing::Lookup(id, answer) => lookups.push((id, answer)),
                }
                if sent < BATCH {
                    item = queue.try_recv().ok();
                }
            }
            self.flush(&connections.commands, &mut batch, &mut sent).await
        }
        .await;
        if result.is_err() {
            self.broker.lost(publishing);
        }
        result?;
        for topic in topics {
            self.reconcile(connections, &topic).await?;
        }
        if resync {
            self.load(&connections.commands).await?;
        }
        for (topic, answer) in loads {
            // Subscribing loads the copy; a topic subscribed to already has it current.
            self.reconcile(connections, &topic).await?;
            let _ = answer.send(());
        }
        for (id, answer) in lookups {
            let json: Option<Vec<u8>> = redis::cmd("GET").arg(self.session_key(&id, "session")).query_async(&mut connections.commands).await?;
            let found = json.and_then(|json| wire::record_from(&json).ok());
            let exists = found.is_some();
            if let Some(record) = found {
                self.relay.handle_remote(Remote::SessionCreated(record), now());
            }
            let _ = answer.send(exists);
        }
        Ok(())
    }

    /// Sends what the batch holds and starts it afresh.
    async fn flush(&self, commands: &Commands, batch: &mut Batch, sent: &mut usize) -> RedisResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let pipelines = std::mem::replace(batch, Batch::new(commands, NEWS)).send(commands).await?;
        self.state.sent.fetch_add(std::mem::take(sent) as u64, Ordering::Relaxed);
        self.state.round_trips.fetch_add(pipelines as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Starts again, in a new epoch, the streams of topics whose publications this node
    /// could not get to Redis: a client that missed them then recovers `false`, not short.
    async fn restart_lost(&self, commands: &Commands) -> RedisResult<()> {
        let lost = self.broker.take_lost();
        if lost.is_empty() {
            return Ok(());
        }
        let restarted = commands
            .each::<()>(lost.iter().map(|topic| {
                let mut restart = redis::cmd("EVAL");
                restart.arg(RESTART).arg(2).arg(self.topic_key(topic, "meta")).arg(self.topic_key(topic, "stream")).arg(new_epoch());
                restart
            }))
            .await;
        if restarted.is_err() {
            self.broker.lost(lost.iter().cloned());
        }
        restarted.map(drop)
    }

    /// What a message changes in the directory, added to the pipeline before it.
    fn directory(&self, batch: &mut Batch, remote: &Remote) {
        match remote {
            Remote::Delivery(_) | Remote::Numbered { .. } | Remote::Control { .. } | Remote::Awareness { .. } | Remote::NodeGone(_) => {}
            Remote::SessionCreated(record) => {
                let json = serde_json::to_vec(&wire::Record::from(record)).expect("a record serializes");
                batch.cmd("SET", &self.session_key(&record.id, "session")).arg(json).arg("PXAT").arg(record.expires_at).ignore();
                batch.cmd("SADD", &self.sessions_key()).arg(record.id.as_str()).ignore();
                // The stream's epoch is the creating node's from the start, so the
                // positions its first members are welcomed with hold everywhere.
                let topic = Topic::Session(record.id.clone());
                if let (Some(history), Some(position)) = (record.history, self.broker.position(&topic)) {
                    let meta = self.topic_key(&topic, "meta");
                    batch.cmd("HSETNX", &meta).arg("epoch").arg(&*position.epoch).ignore();
                    batch.cmd("HSETNX", &meta).arg("offset").arg(0).ignore();
                    batch.cmd("PEXPIRE", &meta).arg(history.ttl_ms).ignore();
                }
            }
            Remote::SessionDeleted(id) => {
                batch.cmd("DEL", &self.session_key(id, "session")).arg(self.session_key(id, "members")).ignore();
                batch.cmd("SREM", &self.sessions_key()).arg(id.as_str()).ignore();
                batch.cmd("SREM", &self.node_key(Some(("sessions", &self.node_id)))).arg(id.as_str()).ignore();
                // Remembered a day, for nodes that were away: a session of this id
                // created before it is gone (see `register`).
                batch.cmd("SET", &self.session_key(id, "deleted")).arg(now()).arg("PX").arg(TOMBSTONE_MS).ignore();
            }
            Remote::MemberJoined { session, member, .. } => {
                let json = serde_json::to_vec(&wire::Member::from(member)).expect("a member serializes");
                let key = self.session_key(session, "members");
                batch.cmd("HSET", &key).arg(member.present.connection_id.0).arg(json).ignore();
                // Where to look for this node's members should it be found gone.
                batch.cmd("SADD", &self.node_key(Some(("sessions", &member.node)))).arg(session.as_str()).ignore();
                // The hash goes with its session, on whichever node it expires.
                if let Some(info) = self.relay.session(session.as_str()) {
                    batch.cmd("PEXPIREAT", &key).arg(info.expires_at).ignore();
                }
            }
            Remote::MemberLeft { session, conn, .. } => {
                batch.cmd("HDEL", &self.session_key(session, "members")).arg(conn.0).ignore();
                // This node's last member there gone: its note of the session goes too, so
                // the notes hold only where it has members now.
                if !self.relay.has_subscribers(&Topic::Session(session.clone())) {
                    batch.cmd("SREM", &self.node_key(Some(("sessions", &self.node_id)))).arg(session.as_str()).ignore();
                }
            }
        }
    }

    /// Subscribes to a topic's channel when this node has subscribers to it, else not.
    async fn reconcile(&self, connections: &mut Connections, topic: &Topic) -> RedisResult<()> {
        let channel = self.topic_channel(topic);
        let wanted = self.relay.has_subscribers(topic) || self.broker.watched(topic);
        match (wanted, connections.subscribed.contains(&channel)) {
            (true, false) => {
                connections.subscriber.subscribe(std::slice::from_ref(&channel)).await?;
                connections.subscribed.insert(channel);
                self.catch_up(&mut connections.commands, topic).await?;
            }
            (false, true) => {
                connections.subscriber.unsubscribe(std::slice::from_ref(&channel)).await?;
                connections.subscribed.remove(&channel);
            }
            _ => {}
        }
        Ok(())
    }

    /// Makes this node's copy of a topic's stream what Redis keeps (nothing when Redis
    /// keeps none, or this node keeps no stream for it).
    async fn load_copy(&self, commands: &mut Commands, topic: &Topic) -> RedisResult<()> {
        if self.broker.stream_config(topic).is_none() {
            return Ok(());
        }
        let (meta, entries): ((Option<String>, Option<u64>), StreamEntries) = redis::pipe()
            .cmd("HMGET")
            .arg(self.topic_key(topic, "meta"))
            .arg("epoch")
            .arg("offset")
            .cmd("XRANGE")
            .arg(self.topic_key(topic, "stream"))
            .arg("-")
            .arg("+")
            .query_async(commands)
            .await?;
        let (Some(epoch), Some(last)) = meta else { return Ok(()) };
        let publications = entries.into_iter().filter_map(|(id, fields)| {
            let offset = id.split('-').next()?.parse().ok()?;
            let field = |name: &str| fields.iter().find(|(f, _)| f == name).map(|(_, v)| v.as_slice());
            let timestamp = std::str::from_utf8(field("t")?).ok()?.parse().ok()?;
            let (_, Remote::Delivery(delivery)) = wire::decode(field("m")?).ok()? else { return None };
            Some(Publication { offset, from: delivery.publisher(), timestamp, frame: delivery.frame })
        });
        self.broker.load_copy(topic, epoch.into(), last, publications.collect(), now());
        Ok(())
    }

    /// Subscribes to the channels of every topic this node has subscribers to or watches,
    /// and to no other.
    async fn reconcile_all(&self, connections: &mut Connections) -> RedisResult<()> {
        let wanted: HashMap<String, Topic> = self
            .relay
            .subscribed_topics()
            .into_iter()
            .chain(self.broker.watchers.iter().map(|entry| entry.key().clone()))
            .map(|topic| (self.topic_channel(&topic), topic))
            .collect();
        let stale: Vec<String> = connections.subscribed.iter().filter(|channel| !wanted.contains_key(*channel)).cloned().collect();
        if !stale.is_empty() {
            connections.subscriber.unsubscribe(&stale).await?;
            for channel in &stale {
                connections.subscribed.remove(channel);
            }
        }
        let missing: Vec<(String, Topic)> = wanted.into_iter().filter(|(channel, _)| !connections.subscribed.contains(channel)).collect();
        if !missing.is_empty() {
            connections.subscriber.subscribe(&missing.iter().map(|(channel, _)| channel.clone()).collect::<Vec<_>>()).await?;
            for (channel, topic) in missing {
                connections.subscribed.insert(channel);
                self.catch_up(&mut connections.commands, &topic).await?;
            }
        }
        Ok(())
    }

    /// Makes what this node knows of a topic it has just subscribed to what Redis has:
    /// the copy of its stream, and a session's members elsewhere. Subscribed first, what
    /// is numbered or joins meanwhile arrives after.
    async fn catch_up(&self, commands: &mut Commands, topic: &Topic) -> RedisResult<()> {
        self.load_copy(commands, topic).await?;
        if let Topic::Session(session) = topic {
            self.load_members(commands, session, now()).await?;
        }
        Ok(())
    }

    async fn renew_lease(&self, commands: &mut Commands) -> RedisResult<()> {
        redis::pipe()
            .cmd("SET")
            .arg(self.node_key(Some(("lease", &self.node_id))))
            .arg(now())
            .arg("PX")
            .arg(self.lease_ms)
            .ignore()
            .cmd("SADD")
            .arg(self.node_key(None))
            .arg(&*self.node_id)
            .ignore()
            .query_async(commands)
            .await
    }

    /// Renews the lease, finds nodes whose lease ran out, and checks the subscriptions.
    async fn tick(&self, connections: &mut Connections) -> RedisResult<()> {
        self.renew_lease(&mut connections.commands).await?;
        let nodes: Vec<String> = redis::cmd("SMEMBERS").arg(self.node_key(None)).query_async(&mut connections.commands).await?;
        let others: Vec<&String> = nodes.iter().filter(|n| **n != *self.node_id).collect();
        let mut pipe = redis::pipe();
        for node in &others {
            pipe.cmd("EXISTS").arg(self.node_key(Some(("lease", node))));
        }
        let alive: Vec<bool> = if others.is_empty() { Vec::new() } else { pipe.query_async(&mut connections.commands).await? };
        self.state.peers.store(alive.iter().filter(|a| **a).count(), Ordering::Relaxed);
        for (node, _) in others.iter().zip(&alive).filter(|(_, alive)| !**alive) {
            info!(node = %self.node_id, gone = %node, "a node's lease ran out: its members left");
            self.relay.handle_remote(Remote::NodeGone((*node).as_str().into()), now());
            self.forget_node(&mut connections.commands, node).await?;
        }
        // A node alive at the last tick and no longer in `nodes` was found gone, and taken
        // out, by another node first: its members have left here too.
        let listed: HashSet<String> = others.iter().map(|node| (*node).clone()).collect();
        for node in connections.peers.difference(&listed) {
            info!(node = %self.node_id, gone = %node, "a node was found gone by another: its members left");
            self.relay.handle_remote(Remote::NodeGone(node.as_str().into()), now());
        }
        connections.peers = others.iter().zip(&alive).filter(|(_, alive)| **alive).map(|(node, _)| (*node).clone()).collect();
        self.reconcile_all(connections).await
    }

    /// Takes a gone node out of the directory: its members (in the sessions it noted),
    /// the channels it had members of (so the next first member anywhere is counted so),
    /// and its place in `nodes`. Places it held for joining clients end by themselves.
    async fn forget_node(&self, commands: &mut Commands, node: &str) -> RedisResult<()> {
        let (channels_key, sessions_key) = (self.node_key(Some(("channels", node))), self.node_key(Some(("sessions", node))));
        let (channels, sessions): (Vec<String>, Vec<String>) =
            redis::pipe().cmd("SMEMBERS").arg(&channels_key).cmd("SMEMBERS").arg(&sessions_key).query_async(commands).await?;
        let mut forget = Batch::new(commands, NEWS);
        for channel in &channels {
            forget.cmd("SREM", &self.tagged_key(&wire::channel_tag(channel), "occupants")).arg(node).ignore();
        }
        let sessions: Vec<SessionId> = sessions.iter().filter_map(|id| SessionId::parse(id).ok()).collect();
        for (session, members) in sessions.iter().zip(self.members_of(commands, &sessions).await?) {
            let gone: Vec<String> = members.into_iter().filter(|(_, json)| wire::member_from(json).is_ok_and(|m| &*m.node == node)).map(|(field, _)| field).collect();
            if !gone.is_empty() {
                forget.cmd("HDEL", &self.session_key(session, "members")).arg(gone).ignore();
            }
        }
        forget.cmd("DEL", &channels_key).arg(&sessions_key).ignore();
        forget.cmd("SREM", &self.node_key(None)).arg(node).ignore();
        forget.send(commands).await.map(drop)
    }

    /// The members hashes of `sessions`, in their order, read a few hundred at once.
    async fn members_of(&self, commands: &Commands, sessions: &[SessionId]) -> RedisResult<Vec<Vec<(String, Vec<u8>)>>> {
        let mut all = Vec::with_capacity(sessions.len());
        for chunk in sessions.chunks(READ_AT_ONCE) {
            all.extend(commands.each::<Vec<(String, Vec<u8>)>>(chunk.iter().map(|session| redis::cmd("HGETALL").arg(self.session_key(session, "members")).clone())).await?);
        }
        Ok(all)
    }

    /// Puts this node's sessions (unless the directory has them) and members in the
    /// directory, and tells the other nodes of both.
    async fn register(&self, commands: &Commands) -> RedisResult<()> {
        let mut batch = Batch::new(commands, NEWS);
        let state = self.relay.local_state();
        // A session deleted elsewhere while this node could not hear of it ends here now,
        // rather than coming back to the directory.
        let tombstones: Vec<Option<u64>> = commands.each(state.iter().map(|(record, _)| redis::cmd("GET").arg(self.session_key(&record.id, "deleted")).clone())).await?;
        for ((record, members), deleted_at) in state.into_iter().zip(tombstones) {
            if deleted_at.is_some_and(|at| record.created_at <= at) {
                self.relay.handle_remote(Remote::SessionDeleted(record.id), now());
                continue;
            }
            let json = serde_json::to_vec(&wire::Record::from(&record)).expect("a record serializes");
            batch.cmd("SET", &self.session_key(&record.id, "session")).arg(json).arg("PXAT").arg(record.expires_at).arg("NX").ignore();
            batch.cmd("SADD", &self.sessions_key()).arg(record.id.as_str()).ignore();
            let created = Remote::SessionCreated(record.clone());
            batch.cmd(commands.publish(), &self.news()).arg(wire::encode(&self.node_id, &created)).ignore();
            for member in members {
                let joined = Remote::MemberJoined { session: record.id.clone(), member, announce: false };
                self.directory(&mut batch, &joined);
                batch.cmd(commands.publish(), &self.news()).arg(wire::encode(&self.node_id, &joined)).ignore();
            }
        }
        batch.send(commands).await.map(drop)
    }

    /// Learns the sessions and the other nodes' members from the directory. Ids of
    /// sessions that expired are taken out of the set of sessions here.
    async fn load(&self, commands: &Commands) -> RedisResult<()> {
        let now = now();
        let ids: Vec<String> = redis::cmd("SMEMBERS").arg(self.sessions_key()).query_async(&mut commands.clone()).await?;
        let ids: Vec<SessionId> = ids.iter().filter_map(|id| SessionId::parse(id).ok()).collect();
        let mut live = Vec::new();
        let mut expired = Vec::new();
        for chunk in ids.chunks(READ_AT_ONCE) {
            let records: Vec<Option<Vec<u8>>> = commands.each(chunk.iter().map(|id| redis::cmd("GET").arg(self.session_key(id, "session")).clone())).await?;
            for (id, record) in chunk.iter().zip(records) {
                match record.and_then(|json| wire::record_from(&json).ok()) {
                    Some(record) => {
                        live.push(record.id.clone());
                        self.relay.handle_remote(Remote::SessionCreated(record), now);
                    }
                    None => expired.push(id.as_str()),
                }
            }
        }
        if !expired.is_empty() {
            redis::cmd("SREM").arg(self.sessions_key()).arg(expired).query_async::<()>(&mut commands.clone()).await?;
        }
        self.relay.forget_remote_members();
        for (session, members) in live.iter().zip(self.members_of(commands, &live).await?) {
            self.take_members(session, members, now);
        }
        Ok(())
    }

    /// Learns a session's members on the other nodes from the directory.
    async fn load_members(&self, commands: &mut Commands, session: &SessionId, now: Millis) -> RedisResult<()> {
        let members: Vec<(String, Vec<u8>)> = redis::cmd("HGETALL").arg(self.session_key(session, "members")).query_async(commands).await?;
        self.take_members(session, members, now);
        Ok(())
    }

    /// Hands the relay a session's members on the other nodes, from its members hash.
    fn take_members(&self, session: &SessionId, members: Vec<(String, Vec<u8>)>, now: Millis) {
        for member in members.into_iter().filter_map(|(_, json)| wire::member_from(&json).ok()).filter(|m| m.node != self.node_id) {
            self.relay.handle_remote(Remote::MemberJoined { session: session.clone(), member, announce: false }, now);
        }
    }

    /// Leaves the cluster on a graceful stop: sends what is queued (the members leaving),
    /// then the other nodes hear this node is gone, and its lease and entries go.
    async fn leave(&self, connections: &mut Connections, queue: &mut mpsc::Receiver<Outgoing>) {
        let gone = Remote::NodeGone(self.node_id.clone());
        let left = async {
            while let Ok(first) = queue.try_recv() {
                self.send(connections, queue, first).await?;
            }
            let commands = &mut connections.commands;
            self.forget_node(commands, &self.node_id).await?;
            let mut batch = Batch::new(commands, NEWS);
            batch.cmd("DEL", &self.node_key(Some(("lease", &self.node_id)))).ignore();
            batch.cmd(commands.publish(), &self.news()).arg(wire::encode(&self.node_id, &gone)).ignore();
            batch.send(commands).await.map(drop)
        };
        if let Err(err) = left.await {
            warn!(node = %self.node_id, "could not leave the cluster cleanly: {err}");
        }
    }
}
