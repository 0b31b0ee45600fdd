//! The one fan-out: every delivery the relay makes to a group goes to a [`Topic`] through
//! [`Relay::fan_out`]. Who is subscribed to a topic on this node is kept by the topic's own
//! map (a session's members, a channel's, a user's connections); this module only finds a
//! topic's subscribers and pushes into their outboxes. A publication to a topic with a
//! stream is numbered and kept by the broker first, under the topic's lock, so offsets
//! reach every subscriber in order, and subscribers with positions get it wrapped (built
//! once per publication). In a cluster, a delivery made here is then forwarded to the
//! other nodes, which fan it out to theirs.
//!
//! Notices that are part of a membership change (a session's `client_connected`, a
//! channel's `CHANNEL_MEMBER_JOINED`) are pushed by the change itself, under the lock it
//! holds, so nobody sees a member before it joined or after it left.

use std::sync::{Arc, OnceLock};
use std::sync::atomic::Ordering;

use crate::broker::{Delivery, Filter, Remote, Topic};
use crate::channels::{ChannelName, Subscriber};
use crate::event::Event;
use crate::ids::{ConnId, Millis};
use crate::session::{Member, Session};
use crate::streams::Publication;

use crate::registry::Connection;

use super::{Relay, SlowConsumers};

/// Whom a fan-out reaches.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Reach {
    /// The topic's subscribers on this node only: what another node sent, and notices
    /// about this node's own state.
    Here,
    /// On every node of a cluster.
    Everywhere,
}

/// What a fan-out did.
#[derive(Default)]
pub(super) struct FanOut {
    /// Subscribers here whose outbox took it.
    pub delivered: usize,
    /// Its offset in the topic's stream, when it was kept.
    pub offset: Option<u64>,
}

fn skips(delivery: &Delivery, conn: ConnId) -> bool {
    Some(conn) == delivery.from || Some(conn) == delivery.except
}

fn filter_admits(filter: &Filter, conn: &Connection) -> bool {
    filter.session.as_ref().is_none_or(|s| conn.session.as_ref() == Some(s))
        && filter.user.as_ref().is_none_or(|u| conn.user.get() == Some(u))
        && filter.organization.as_deref().is_none_or(|o| conn.identity.organization_id.as_deref() == Some(o))
        && filter.channel.as_ref().is_none_or(|c| conn.channels.lock().contains(c))
}

impl Relay {
    /// Delivers to every subscriber of the delivery's topic that it does not skip: here,
    /// and with `Reach::Everywhere` on the cluster's other nodes too.
    pub(super) fn fan_out(&self, delivery: Delivery, reach: Reach, now: Millis, slow: &mut SlowConsumers) -> FanOut {
        let done = match &delivery.topic {
            Topic::Session(id) => match self.sessions.get(id) {
                Some(session) => self.fan_out_in_session(&session, &delivery, now, slow),
                None => FanOut::default(),
            },
            Topic::Channel(name) => self.fan_out_in_channel(name, &delivery, now, slow),
            Topic::User(user) => {
                let conns = self.limiter.user_connections(user);
                self.fan_out_to(conns, &delivery, slow)
            }
            Topic::Organization(organization) => {
                let conns = self.registry.ids_where(|c| c.identity.organization_id.as_deref() == Some(&**organization));
                self.fan_out_to(conns, &delivery, slow)
            }
            Topic::Connection(conn) => self.fan_out_to(vec![*conn], &delivery, slow),
            Topic::Everyone => {
                let conns = self.registry.ids_where(|_| true);
                self.fan_out_to(conns, &delivery, slow)
            }
        };
        if reach == Reach::Everywhere {
            self.link.forward(Remote::Delivery(delivery));
        }
        done
    }

    /// A topic without a stream: the given connections, each checked against the filter.
    fn fan_out_to(&self, conns: Vec<ConnId>, delivery: &Delivery, slow: &mut SlowConsumers) -> FanOut {
        let mut delivered = 0;
        for id in conns.into_iter().filter(|id| !skips(delivery, *id)) {
            let outbox = match self.registry.get(id) {
                Some(conn) if filter_admits(&delivery.filter, &conn) => conn.outbox.clone(),
                _ => continue,
            };
            if self.push(id, &*outbox, delivery.frame.clone(), slow) {
                delivered += 1;
            }
        }
        FanOut { delivered, offset: None }
    }

    /// Whether a member of a session or channel gets a delivery: a filtered send looks
    /// the member's connection up; the relay's own path never does.
    fn admits(&self, conn: ConnId, delivery: &Delivery) -> bool {
        !skips(delivery, conn) && (delivery.filter.is_empty() || self.registry.get(conn).is_some_and(|c| filter_admits(&delivery.filter, &c)))
    }

    fn fan_out_in_session(&self, session: &Session, delivery: &Delivery, now: Millis, slow: &mut SlowConsumers) -> FanOut {
        session.last_activity.store(now, Ordering::Relaxed);
        let members = session.members.iter().filter(|m| self.admits(m.conn, delivery));
        let mut delivered = 0;
        let order = session.order.as_ref().filter(|_| delivery.publication);
        let Some(order) = order else {
            for member in members {
                if self.push(member.conn, &*member.outbox, delivery.frame.clone(), slow) {
                    delivered += 1;
                }
            }
            return FanOut { delivered, offset: None };
        };
        let _order = order.lock();
        if self.link.numbers_remotely(&delivery.topic) {
            // Delivered here too once the cluster's broker has numbered it.
            return FanOut::default();
        }
        let Some(publication) = self.streams.publish(&delivery.topic, delivery.publisher(), delivery.frame.clone(), now) else {
            return FanOut::default();
        };
        self.deliver_publication_in_session(session, members, delivery, &publication, slow)
    }

    /// Hands a numbered publication to a session's members (under its order lock).
    fn deliver_publication_in_session<'m>(
        &self,
        session: &Session,
        members: impl Iterator<Item = &'m Member>,
        delivery: &Delivery,
        publication: &Publication,
        slow: &mut SlowConsumers,
    ) -> FanOut {
        let mut delivered = 0;
        let wrapped = OnceLock::new();
        for member in members {
            let frame = if member.positions { wrapped.get_or_init(|| publication.wrapped(None)).clone() } else { delivery.frame.clone() };
            if self.push(member.conn, &*member.outbox, frame, slow) {
                delivered += 1;
            }
        }
        self.events.emit(Event::Published { session_id: session.id.clone(), offset: publication.offset });
        FanOut { delivered, offset: Some(publication.offset) }
    }

    /// A publication the cluster's broker numbered, for this node's subscribers: kept in
    /// the copy of the stream here, then delivered as a publication numbered here would be.
    pub(super) fn fan_out_numbered(&self, delivery: Delivery, epoch: &Arc<str>, offset: u64, timestamp: Millis, now: Millis, slow: &mut SlowConsumers) -> usize {
        let publication = Publication { offset, from: delivery.publisher(), timestamp, frame: delivery.frame.clone() };
        match &delivery.topic {
            Topic::Session(id) => {
                let Some(session) = self.sessions.get(id) else { return 0 };
                let Some(order) = &session.order else { return 0 };
                let _order = order.lock();
                session.last_activity.store(now, Ordering::Relaxed);
                self.streams.keep(&delivery.topic, epoch, publication.clone(), now);
                let members = session.members.iter().filter(|m| self.admits(m.conn, &delivery));
                self.deliver_publication_in_session(&session, members, &delivery, &publication, slow).delivered
            }
            Topic::Channel(name) => {
                if let Some(history) = self.config.channels.history {
                    self.streams.open_stream(&delivery.topic, history);
                }
                let delivered = self.channels.with_existing_members(name, |members| {
                    self.streams.keep(&delivery.topic, epoch, publication.clone(), now);
                    self.deliver_publication_in_channel(name, members, &delivery, Some(&publication), slow)
                });
                delivered.unwrap_or_else(|| {
                    self.streams.keep(&delivery.topic, epoch, publication, now);
                    0
                })
            }
            Topic::User(_) | Topic::Organization(_) | Topic::Connection(_) | Topic::Everyone => 0,
        }
    }

    fn fan_out_in_channel(&self, name: &ChannelName, delivery: &Delivery, now: Millis, slow: &mut SlowConsumers) -> FanOut {
        let mut delivered = 0;
        let history = self.config.channels.history.filter(|_| delivery.publication);
        let Some(history) = history else {
            self.channels.for_each_member(name, None, |member| {
                if self.admits(member.conn, delivery) && self.push(member.conn, &*member.outbox, delivery.frame.clone(), slow) {
                    delivered += 1;
                }
            });
            return FanOut { delivered, offset: None };
        };
        let publish = || {
            let topic = &delivery.topic;
            let publication = self.streams.publish(topic, delivery.publisher(), delivery.frame.clone(), now);
            publication.or_else(|| {
                self.streams.open_stream(topic, history);
                self.streams.publish(topic, delivery.publisher(), delivery.frame.clone(), now)
            })
        };
        if self.link.numbers_remotely(&delivery.topic) {
            self.streams.open_stream(&delivery.topic, history);
            return FanOut::default();
        }
        let reached = self.channels.with_existing_members(name, |members| {
            let publication = publish();
            delivered = self.deliver_publication_in_channel(name, members, delivery, publication.as_ref(), slow);
            publication.map(|p| p.offset)
        });
        // A channel with no members now still keeps the publication, for those who come back.
        let offset = reached.unwrap_or_else(|| publish().map(|p| p.offset));
        FanOut { delivered, offset }
    }

    /// Hands a publication to a channel's members (under its lock): wrapped for those
    /// with positions when it was numbered.
    fn deliver_publication_in_channel(&self, name: &ChannelName, members: &[Subscriber], delivery: &Delivery, publication: Option<&Publication>, slow: &mut SlowConsumers) -> usize {
        let mut delivered = 0;
        let wrapped = OnceLock::new();
        for member in members.iter().filter(|m| self.admits(m.conn, delivery)) {
            let frame = match (publication, member.positions) {
                (Some(publication), true) => wrapped.get_or_init(|| publication.wrapped(Some(name.as_str()))).clone(),
                _ => delivery.frame.clone(),
            };
            if self.push(member.conn, &*member.outbox, frame, slow) {
                delivered += 1;
            }
        }
        delivered
    }
}
