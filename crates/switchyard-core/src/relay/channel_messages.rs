//! Channel messages: `JOIN_CHANNEL` (with positions, recovery and presence),
//! `LEAVE_CHANNEL`, `PRESENCE`, publishing to a channel, and reading a channel's history
//! and members.

use std::sync::Arc;

use serde_json::Value;

use crate::broker::{Delivery, Filter, History, Recovery, Topic};
use crate::channels::{ChannelName, Joiner, Subscriber};
use crate::error::{ErrorCode, MessageRejection};
use crate::event::Event;
use crate::frame::Frame;
use crate::hooks::Verdict;
use crate::ids::{ConnId, Millis};
use crate::message::JoinChannel;
use crate::protocol;
use crate::protocol::WelcomePosition;
use crate::stats::Counters;
use crate::streams::Position;
use crate::registry::{Identity, Sender};

use super::{Outcome, Relay, SlowConsumers};
use super::fan_out::Reach;

impl Relay {
    pub(super) fn join_channel(&self, sender: &Sender, join: JoinChannel, frame: &Frame, verdict: Option<Verdict>, now: Millis, slow: &mut SlowConsumers) -> Outcome {
        let JoinChannel { channel: name, positions, presence, since, token } = join;
        if let Err(rejection) = self.channels.may_join(&name, &sender.joiner()) {
            return Outcome::Rejected(rejection);
        }
        if let Err(outcome) = self.join_verdict(sender, &name, token, frame, verdict, now) {
            return outcome;
        }
        {
            let Some(conn) = self.registry.get(sender.id) else { return Outcome::Done };
            let mut joined = conn.channels.lock();
            if !joined.contains(&name) {
                let max = self.config.max_channels_per_connection;
                if joined.len() >= max {
                    return Outcome::Rejected(MessageRejection::new(
                        ErrorCode::ChannelForbidden,
                        format!("A connection may be in at most {max} channels"),
                    ));
                }
                joined.push(name.clone());
            }
        }
        let topic = Topic::Channel(name.clone());
        let stream = self.config.channels.history.filter(|_| positions || since.is_some());
        let client = Arc::new(serde_json::json!({
            "connectionId": sender.id.to_string(),
            "clientId": sender.name.get(sender.id),
            "userId": sender.identity.user_id,
            "organizationId": sender.identity.organization_id,
        }));
        // The answer, the replay and the membership happen under the channel's lock, which
        // a publication to a channel with a stream takes: nothing is missed or doubled.
        let mut first = false;
        self.channels.with_members(&name, |members| {
            first = members.is_empty();
            let position = stream.and_then(|history| {
                self.streams.open_stream(&topic, history);
                self.streams.position(&topic)
            });
            let mut replay = Vec::new();
            let recovered = match (&position, &since) {
                (Some(_), Some(since)) => match self.streams.recover(&topic, since, now) {
                    Some(Recovery::Recovered(missed)) => {
                        replay = missed;
                        Some(true)
                    }
                    Some(Recovery::Lost) | None => Some(false),
                },
                _ => None,
            };
            let stream_position = position.as_ref().map(|position| WelcomePosition { position, recovered });
            self.push(sender.id, &*sender.outbox, protocol::channel_joined(name.as_str(), stream_position), slow);
            let me = sender.id.to_string();
            let own = |from: &str| from == me || sender.identity.resume.published(from);
            for publication in replay.iter().filter(|p| !own(&p.from)) {
                sender.outbox.push_replay(publication.wrapped(Some(name.as_str())));
            }
            match members.iter_mut().find(|m| m.conn == sender.id) {
                Some(member) => {
                    member.positions = position.is_some();
                    member.presence = presence;
                }
                None => {
                    let joined = protocol::channel_member(true, name.as_str(), &client);
                    for watcher in members.iter().filter(|m| m.presence) {
                        self.push(watcher.conn, &*watcher.outbox, joined.clone(), slow);
                    }
                    let outbox = sender.outbox.clone();
                    members.push(Subscriber { conn: sender.id, outbox, positions: position.is_some(), presence, client });
                }
            }
        });
        if first {
            self.link.subscribed(&topic);
            self.events.emit(Event::ChannelOccupied { channel: name.as_str().to_owned() });
        }
        // The connection may have closed meanwhile, after leaving its channels.
        if !self.registry.contains(sender.id) {
            self.leave_channel_as(&name, sender.id, slow);
        }
        Outcome::Answered
    }

    /// Takes a connection out of a channel, telling the members who asked.
    pub(super) fn leave_channel_as(&self, name: &ChannelName, conn: ConnId, slow: &mut SlowConsumers) {
        if let Some((left, watchers)) = self.channels.leave(name, conn) {
            let notice = protocol::channel_member(false, name.as_str(), &left.client);
            for (watcher, outbox) in watchers {
                self.push(watcher, &*outbox, notice.clone(), slow);
            }
            if !self.channels.exists(name) {
                self.link.subscribed(&Topic::Channel(name.clone()));
                self.events.emit(Event::ChannelVacated { channel: name.as_str().to_owned() });
            }
        }
    }

    pub(super) fn leave_channel(&self, sender: &Sender, name: ChannelName, slow: &mut SlowConsumers) -> Outcome {
        if let Some(conn) = self.registry.get(sender.id) {
            conn.channels.lock().retain(|joined| *joined != name);
        }
        self.leave_channel_as(&name, sender.id, slow);
        Outcome::Reply(protocol::channel_left(name.as_str()))
    }

    /// `PRESENCE`: a member asks who is in the channel.
    pub(super) fn channel_presence(&self, sender: &Sender, name: &ChannelName) -> Outcome {
        if !self.channels.is_member(name, sender.id) {
            return Outcome::Rejected(ErrorCode::NotInChannel.into());
        }
        Outcome::Reply(protocol::presence(name.as_str(), &self.channels.clients(name)))
    }

    /// Delivers `frame` byte for byte to the other members of a channel the sender is in.
    pub(super) fn publish_to_channel(&self, sender: &Sender, channel: &str, frame: &Frame, now: Millis, slow: &mut SlowConsumers) -> Outcome {
        let name = match ChannelName::parse(channel) {
            Ok(name) => name,
            Err(rejection) => return Outcome::Rejected(rejection),
        };
        if !self.channels.is_member(&name, sender.id) {
            return Outcome::Rejected(ErrorCode::NotInChannel.into());
        }
        let delivery = Delivery { topic: Topic::Channel(name), frame: frame.clone(), from: Some(sender.id), except: None, publication: true, filter: Filter::default() };
        let delivered = self.fan_out(delivery, Reach::Everywhere, now, slow).delivered;
        Counters::add(&self.counters.messages_relayed, delivered as u64);
        Outcome::Routed(delivered)
    }

    /// A channel's kept publications after `since` (all it keeps without one), at most
    /// `limit`; an empty history when the channel keeps none (channel history is off, or
    /// nothing was published to it lately).
    pub fn channel_history(&self, channel: &str, since: Option<&Position>, limit: usize, now: Millis) -> Result<History, MessageRejection> {
        let name = ChannelName::parse(channel)?;
        Ok(self.streams.read(&Topic::Channel(name), since, limit, now).unwrap_or_default())
    }

    /// Who is in a channel now, as `PRESENCE` answers.
    pub fn channel_presence_of(&self, channel: &str) -> Result<Vec<Arc<Value>>, MessageRejection> {
        Ok(self.channels.clients(&ChannelName::parse(channel)?))
    }

    /// Whether this identity may join (and so read) a channel: the rules `JOIN_CHANNEL`
    /// follows, for readers over HTTP. A `private:` channel is read by its members alone.
    pub fn may_join(&self, channel: &str, identity: &Identity) -> Result<(), MessageRejection> {
        let joiner = Joiner { user_id: identity.user_id.as_deref(), organization_id: identity.organization_id.as_deref() };
        let name = ChannelName::parse(channel)?;
        if name.is_private() {
            return Err(MessageRejection::new(ErrorCode::ChannelForbidden, "A private channel is read by joining it"));
        }
        self.channels.may_join(&name, &joiner)
    }
}
