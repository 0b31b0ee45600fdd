//! The one fan-out: every delivery the relay makes to a group goes to a [`Topic`] through
//! [`Relay::fan_out`]. Who is subscribed to a topic on this node is kept by the topic's own
//! map (a session's members, a channel's, a user's connections); this module only finds a
//! topic's subscribers and pushes into their outboxes. A publication to a topic with a
//! stream is numbered and kept by the broker first, under the topic's lock, so offsets
//! reach every subscriber in order, and subscribers with positions get it wrapped (built
//! once per publication).
//!
//! Notices that are part of a membership change (a session's `client_connected`, a
//! channel's `CHANNEL_MEMBER_JOINED`) are pushed by the change itself, under the lock it
//! holds, so nobody sees a member before it joined or after it left.

use super::*;

/// How a server-side publication is named in its `from`.
const SERVER_PUBLISHER: &str = "server";

/// What [`Relay::fan_out`] delivers, and to which of the topic's subscribers.
pub(super) struct Delivery<'a> {
    pub frame: &'a Frame,
    /// The member that published it, which does not get it back; `None` for the server.
    pub from: Option<ConnId>,
    /// A subscriber that does not get it either.
    pub except: Option<ConnId>,
    /// A publication is numbered and kept where the topic has a stream; a notice is only
    /// delivered.
    pub publication: bool,
    /// What a subscriber must also match (a filtered send).
    pub filter: Filter,
}

/// Fields a connection must match, beyond subscribing to the topic: all that are given.
#[derive(Default)]
pub(super) struct Filter {
    pub session: Option<SessionId>,
    pub channel: Option<ChannelName>,
    pub user: Option<Arc<str>>,
    pub organization: Option<Arc<str>>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.session.is_none() && self.channel.is_none() && self.user.is_none() && self.organization.is_none()
    }

    fn admits(&self, conn: &Connection) -> bool {
        self.session.as_ref().is_none_or(|s| conn.session.as_ref() == Some(s))
            && self.user.as_ref().is_none_or(|u| conn.user.get() == Some(u))
            && self.organization.as_deref().is_none_or(|o| conn.identity.organization_id.as_deref() == Some(o))
            && self.channel.as_ref().is_none_or(|c| conn.channels.lock().contains(c))
    }
}

/// What a fan-out did.
#[derive(Default)]
pub(super) struct FanOut {
    /// Subscribers whose outbox took it.
    pub delivered: usize,
    /// Its offset in the topic's stream, when it was kept.
    pub offset: Option<u64>,
}

impl Delivery<'_> {
    fn skips(&self, conn: ConnId) -> bool {
        Some(conn) == self.from || Some(conn) == self.except
    }

    fn publisher(&self) -> Arc<str> {
        self.from.map_or_else(|| SERVER_PUBLISHER.into(), |conn| conn.to_string().into())
    }
}

impl Relay {
    /// Delivers to every subscriber of `topic` on this node that `delivery` does not skip.
    pub(super) fn fan_out(&self, topic: &Topic, delivery: &Delivery, now: Millis, slow: &mut SlowConsumers) -> FanOut {
        match topic {
            Topic::Session(id) => match self.sessions.get(id) {
                Some(session) => self.fan_out_in_session(&session, delivery, now, slow),
                None => FanOut::default(),
            },
            Topic::Channel(name) => self.fan_out_in_channel(name, delivery, now, slow),
            Topic::User(user) => {
                let conns = self.users.get(user).map(|conns| conns.clone()).unwrap_or_default();
                self.fan_out_to(conns, delivery, slow)
            }
            Topic::Organization(organization) => {
                let conns = self
                    .conns
                    .iter()
                    .filter(|c| c.identity.organization_id.as_deref() == Some(&**organization))
                    .map(|c| *c.key())
                    .collect();
                self.fan_out_to(conns, delivery, slow)
            }
            Topic::Connection(conn) => self.fan_out_to(vec![*conn], delivery, slow),
            Topic::Everyone => {
                let conns = self.conns.iter().map(|c| *c.key()).collect();
                self.fan_out_to(conns, delivery, slow)
            }
        }
    }

    /// A topic without a stream: the given connections, each checked against the filter.
    fn fan_out_to(&self, conns: Vec<ConnId>, delivery: &Delivery, slow: &mut SlowConsumers) -> FanOut {
        let mut delivered = 0;
        for id in conns.into_iter().filter(|id| !delivery.skips(*id)) {
            let outbox = match self.conns.get(&id) {
                Some(conn) if delivery.filter.admits(&conn) => conn.outbox.clone(),
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
        !delivery.skips(conn) && (delivery.filter.is_empty() || self.conns.get(&conn).is_some_and(|c| delivery.filter.admits(&c)))
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
        let topic = Topic::Session(session.id.clone());
        let Some(publication) = self.broker.publish(&topic, delivery.publisher(), delivery.frame.clone(), now) else {
            return FanOut::default();
        };
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

    fn fan_out_in_channel(&self, name: &ChannelName, delivery: &Delivery, now: Millis, slow: &mut SlowConsumers) -> FanOut {
        let mut delivered = 0;
        let history = self.config.channel_history.filter(|_| delivery.publication);
        let Some(history) = history else {
            self.channels.for_each_member(name, None, |member| {
                if self.admits(member.conn, delivery) && self.push(member.conn, &*member.outbox, delivery.frame.clone(), slow) {
                    delivered += 1;
                }
            });
            return FanOut { delivered, offset: None };
        };
        let topic = Topic::Channel(name.clone());
        let publish = || {
            let publisher = delivery.publisher();
            let publication = self.broker.publish(&topic, publisher.clone(), delivery.frame.clone(), now);
            publication.or_else(|| {
                self.broker.open_stream(&topic, history);
                self.broker.publish(&topic, publisher, delivery.frame.clone(), now)
            })
        };
        let reached = self.channels.with_existing_members(name, |members| {
            let publication = publish();
            let wrapped = OnceLock::new();
            for member in members.iter().filter(|m| self.admits(m.conn, delivery)) {
                let frame = match (&publication, member.positions) {
                    (Some(publication), true) => wrapped.get_or_init(|| publication.wrapped(Some(name.as_str()))).clone(),
                    _ => delivery.frame.clone(),
                };
                if self.push(member.conn, &*member.outbox, frame, slow) {
                    delivered += 1;
                }
            }
            publication.map(|p| p.offset)
        });
        // A channel with no members now still keeps the publication, for those who come back.
        let offset = reached.unwrap_or_else(|| publish().map(|p| p.offset));
        FanOut { delivered, offset }
    }
}
