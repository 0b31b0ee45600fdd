//! The link's two ways into Redis, one Redis server or a Redis Cluster, behind one shape:
//! [`Commands`] for commands (a multiplexed connection, or the `redis` crate's cluster
//! client, which follows slot moves and failovers), a [`Subscriber`] for the channels
//! (pub/sub on one server, sharded pub/sub on a cluster), and a [`Batch`] of commands
//! sent together in as few round trips as the target allows.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::try_join_all;
use redis::aio::{ConnectionLike, MultiplexedConnection, PubSubSink, PubSubStream};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Cmd, ErrorKind, Pipeline, ProtocolVersion, PushInfo, PushKind, RedisError, RedisFuture, RedisResult, Value};
use tokio::sync::mpsc;

use crate::RedisConfigError;

/// Where the link connects: one Redis server, or the seed nodes of a Redis Cluster.
pub(crate) enum Target {
    Server(redis::Client),
    Cluster(Vec<redis::ConnectionInfo>),
}

impl Target {
    /// One URL is one server, unless it is `redis+cluster://host:port,host:port,...`;
    /// several URLs are seed nodes of one cluster.
    pub fn parse(urls: &[String]) -> Result<Self, RedisConfigError> {
        let seeds: Vec<String> = match urls {
            [] => return Err(RedisConfigError::NoUrl),
            [url] => match url.strip_prefix("redis+cluster://") {
                Some(rest) => cluster_seeds(rest)?,
                None => return Ok(Self::Server(redis::Client::open(url.as_str()).map_err(RedisConfigError::Url)?)),
            },
            urls => urls.to_vec(),
        };
        let seeds = seeds.iter().map(|seed| redis::IntoConnectionInfo::into_connection_info(seed.as_str()).map_err(RedisConfigError::Url)).collect::<Result<_, _>>()?;
        Ok(Self::Cluster(seeds))
    }

    /// Connects both ways: commands, and a subscriber. Each answer may take `timeout`.
    pub async fn connect(&self, timeout: Duration) -> RedisResult<(Commands, Subscriber)> {
        match self {
            Self::Server(client) => {
                let config = AsyncConnectionConfig::new().set_connection_timeout(Some(timeout)).set_response_timeout(Some(timeout));
                let commands = client.get_multiplexed_async_connection_with_config(&config).await?;
                let (sink, stream) = tokio::time::timeout(timeout, client.get_async_pubsub()).await.map_err(|_| timed_out("connecting the subscriber"))??.split();
                Ok((Commands::Server(commands), Subscriber::Server { sink, stream }))
            }
            Self::Cluster(seeds) => {
                // Made afresh for each connection: the pushes of one go to its own subscriber.
                let (pushes, heard) = mpsc::unbounded_channel();
                let client = ClusterClientBuilder::new(seeds.clone())
                    .use_protocol(ProtocolVersion::RESP3)
                    .push_sender(pushes)
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .overall_response_timeout(Some(timeout))
                    .build()?;
                let commands = tokio::time::timeout(timeout, client.get_async_connection()).await.map_err(|_| timed_out("connecting to the cluster"))??;
                Ok((Commands::Cluster(commands.clone()), Subscriber::Cluster { commands, heard }))
            }
        }
    }
}

/// A seed URL for each `host:port` of the list after `redis+cluster://`, each with the
/// credentials before the list and what follows it (a database, options).
fn cluster_seeds(rest: &str) -> Result<Vec<String>, RedisConfigError> {
    let (credentials, hosts) = rest.rsplit_once('@').unwrap_or(("", rest));
    let (hosts, tail) = hosts.find(['/', '?']).map_or((hosts, ""), |at| hosts.split_at(at));
    let credentials = if credentials.is_empty() { String::new() } else { format!("{credentials}@") };
    let seeds: Vec<String> = hosts.split(',').filter(|h| !h.is_empty()).map(|host| format!("redis://{credentials}{host}{tail}")).collect();
    if seeds.is_empty() {
        return Err(RedisConfigError::NoUrl);
    }
    Ok(seeds)
}

fn timed_out(what: &str) -> RedisError {
    RedisError::from((ErrorKind::Io, "timed out", what.to_owned()))
}

/// Commands to one Redis server, or to a cluster. A command or pipeline to a cluster
/// must keep to one slot: a [`Batch`] sees to that.
#[derive(Clone)]
pub(crate) enum Commands {
    Server(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Commands {
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// The command that publishes on a channel: on a cluster, sharded, so a message goes
    /// only to the shard of its channel's slot rather than to every node.
    pub fn publish(&self) -> &'static str {
        if self.is_cluster() { "SPUBLISH" } else { "PUBLISH" }
    }

    /// Runs `commands` at once, each answer in its command's place: reads over many
    /// keys, each in a slot of its own on a cluster.
    pub async fn each<T: redis::FromRedisValue>(&self, commands: impl IntoIterator<Item = Cmd>) -> RedisResult<Vec<T>> {
        try_join_all(commands.into_iter().map(|command| {
            let mut connection = self.clone();
            async move { command.query_async(&mut connection).await }
        }))
        .await
    }
}

impl ConnectionLike for Commands {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Server(connection) => connection.req_packed_command(cmd),
            Self::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(&'a mut self, pipeline: &'a Pipeline, offset: usize, count: usize) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Server(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Server(connection) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
        }
    }
}

/// What a [`Subscriber`] hears.
pub(crate) enum Heard {
    /// A message on a channel it is subscribed to.
    Message(Vec<u8>),
    /// A channel it is no longer subscribed to: the confirmation of its own unsubscribing,
    /// or, on a cluster, the shard's word that the channel's slot moved to another.
    Unsubscribed(String),
}

/// Hears the channels it is subscribed to.
pub(crate) enum Subscriber {
    /// A connection of its own, in RESP2's subscriber mode.
    Server { sink: PubSubSink, stream: PubSubStream },
    /// Sharded subscriptions on the cluster connection, whose messages come as RESP3 pushes.
    Cluster { commands: ClusterConnection, heard: mpsc::UnboundedReceiver<PushInfo> },
}

impl Subscriber {
    pub async fn subscribe(&mut self, channels: &[String]) -> RedisResult<()> {
        match self {
            Self::Server { sink, .. } => sink.subscribe(channels).await,
            Self::Cluster { commands, .. } => each_channel(commands, channels, |mut commands, channel| async move { commands.ssubscribe(channel).await }).await,
        }
    }

    pub async fn unsubscribe(&mut self, channels: &[String]) -> RedisResult<()> {
        match self {
            Self::Server { sink, .. } => sink.unsubscribe(channels).await,
            Self::Cluster { commands, .. } => each_channel(commands, channels, |mut commands, channel| async move { commands.sunsubscribe(channel).await }).await,
        }
    }

    /// What is heard next, or an error once the subscriber lost a connection (on a
    /// cluster, to any node: what was published meanwhile is gone, so the link starts
    /// afresh rather than carry on with a gap).
    pub async fn next(&mut self) -> RedisResult<Heard> {
        let lost = || RedisError::from((ErrorKind::Io, "the subscriber connection closed"));
        match self {
            Self::Server { stream, .. } => {
                use futures_util::StreamExt;
                stream.next().await.map(|message| Heard::Message(message.get_payload_bytes().to_vec())).ok_or_else(lost)
            }
            Self::Cluster { heard, .. } => loop {
                let push = heard.recv().await.ok_or_else(lost)?;
                let channel = |data: Vec<Value>| match data.into_iter().next() {
                    Some(Value::BulkString(channel)) => String::from_utf8(channel).ok(),
                    _ => None,
                };
                match push.kind {
                    PushKind::SMessage | PushKind::Message => {
                        if let Some(Value::BulkString(message)) = push.data.into_iter().nth(1) {
                            return Ok(Heard::Message(message));
                        }
                    }
                    PushKind::SUnsubscribe => {
                        if let Some(channel) = channel(push.data) {
                            return Ok(Heard::Unsubscribed(channel));
                        }
                    }
                    PushKind::Disconnection => return Err(lost()),
                    _ => {}
                }
            },
        }
    }
}

/// Runs `step` for each channel at once, each on its own: channels of two slots cannot
/// share an `SSUBSCRIBE` or `SUNSUBSCRIBE`.
async fn each_channel<Step, Done>(commands: &ClusterConnection, channels: &[String], step: Step) -> RedisResult<()>
where
    Step: Fn(ClusterConnection, String) -> Done,
    Done: std::future::Future<Output = RedisResult<()>>,
{
    try_join_all(channels.iter().map(|channel| step(commands.clone(), channel.clone()))).await.map(drop)
}

/// The part of a key Redis hashes to find its slot: what is between its first `{` and
/// the next `}`, when that is not empty, else the whole key.
fn hash_tag(key: &str) -> &str {
    key.find('{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.find('}').filter(|close| *close > 0).map(|close| &rest[..close])
        })
        .unwrap_or(key)
}

/// Commands sent together. To one server: one pipeline, in the order given, one round
/// trip. To a cluster, where a pipeline keeps to one slot: a pipeline per hash tag, each
/// in the order given, all sent at once, except those of `last_tag` (the channel every
/// node hears), sent once the rest are in, so no node reads news before what it tells of.
pub(crate) struct Batch {
    cluster: bool,
    last_tag: &'static str,
    pipes: HashMap<String, Pipeline>,
}

impl Batch {
    pub fn new(commands: &Commands, last_tag: &'static str) -> Self {
        Self { cluster: commands.is_cluster(), last_tag, pipes: HashMap::new() }
    }

    /// The pipeline for commands on `key` (or a channel, or a script's first key).
    pub fn on(&mut self, key: &str) -> &mut Pipeline {
        let tag = if self.cluster { hash_tag(key) } else { "" };
        if !self.pipes.contains_key(tag) {
            self.pipes.insert(tag.to_owned(), Pipeline::new());
        }
        self.pipes.get_mut(tag).expect("just made")
    }

    /// `name key`, for arguments to follow.
    pub fn cmd(&mut self, name: &str, key: &str) -> &mut Pipeline {
        self.on(key).cmd(name).arg(key)
    }

    pub fn is_empty(&self) -> bool {
        self.pipes.iter().all(|(_, pipe)| pipe.is_empty())
    }

    /// Sends every command (their answers ignored) and says how many pipelines went.
    pub async fn send(self, commands: &Commands) -> RedisResult<usize> {
        let (last, first): (Vec<_>, Vec<_>) = self.pipes.into_iter().filter(|(_, pipe)| !pipe.is_empty()).partition(|(tag, _)| self.cluster && *tag == self.last_tag);
        let sent = first.len() + last.len();
        for wave in [first, last] {
            try_join_all(wave.into_iter().map(|(_, pipe)| {
                let mut commands = commands.clone();
                async move { pipe.exec_async(&mut commands).await }
            }))
            .await?;
        }
        Ok(sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_tag_is_what_redis_hashes() {
        assert_eq!(hash_tag("switchyard:{s:abc}:members"), "s:abc");
        assert_eq!(hash_tag("switchyard:{nodes}"), "nodes");
        assert_eq!(hash_tag("plain"), "plain");
        assert_eq!(hash_tag("a{}b{c}"), "a{}b{c}", "an empty tag hashes the whole key");
        assert_eq!(hash_tag("a{b"), "a{b");
    }

    #[test]
    fn a_cluster_url_names_its_seeds() {
        let seeds = |url: &str| match Target::parse(&[url.to_owned()]).unwrap() {
            Target::Cluster(seeds) => seeds.iter().map(|s| s.addr().to_string()).collect::<Vec<_>>(),
            Target::Server(_) => panic!("one server"),
        };
        assert_eq!(seeds("redis+cluster://127.0.0.1:7000,127.0.0.1:7001"), ["127.0.0.1:7000", "127.0.0.1:7001"]);
        assert_eq!(seeds("redis+cluster://user:pw@h1:7000,h2:7001/"), ["h1:7000", "h2:7001"]);
        assert!(matches!(Target::parse(&["redis://127.0.0.1:6379".to_owned()]), Ok(Target::Server(_))));
        assert!(matches!(Target::parse(&["redis://a:1".to_owned(), "redis://b:2".to_owned()]), Ok(Target::Cluster(s)) if s.len() == 2));
        assert!(matches!(Target::parse(&["redis+cluster://".to_owned()]), Err(RedisConfigError::NoUrl)));
    }
}
