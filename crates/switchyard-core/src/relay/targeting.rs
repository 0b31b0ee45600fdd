//! Server-side sends: the topic a [`Target`] names and what else it asks of a connection.

use std::sync::Arc;

use crate::broker::{Delivery, Filter, Topic};
use crate::channels::ChannelName;
use crate::frame::Frame;
use crate::ids::{ConnId, Millis, SessionId};

use super::{Relay, SlowConsumers};
use super::fan_out::Reach;

/// Which connections a server-side send reaches: all the given fields must match.
#[derive(Clone, Copy, Debug, Default)]
pub struct Target<'a> {
    /// The session a connection must be in.
    pub session_id: Option<&'a str>,
    /// A channel a connection must be a member of.
    pub channel: Option<&'a str>,
    /// The user a connection must be.
    pub user_id: Option<&'a str>,
    /// The organization a connection's identity must name.
    pub organization_id: Option<&'a str>,
    /// A connection left out.
    pub except: Option<ConnId>,
}

impl Target<'_> {
    /// The narrowest topic the target names (a session, a channel, a user, an
    /// organization, else everyone), and the other fields as a filter. `None` when a
    /// session id or channel name could not be one, so nobody matches.
    fn topic(&self) -> Option<(Topic, Filter)> {
        let mut filter = Filter {
            session: self.session_id.map(SessionId::parse).transpose().ok()?,
            channel: self.channel.map(ChannelName::parse).transpose().ok()?,
            user: self.user_id.map(Arc::from),
            organization: self.organization_id.map(Arc::from),
        };
        let topic = if let Some(id) = filter.session.take() {
            Topic::Session(id)
        } else if let Some(name) = filter.channel.take() {
            Topic::Channel(name)
        } else if let Some(user) = filter.user.take() {
            Topic::User(user)
        } else if let Some(organization) = filter.organization.take() {
            Topic::Organization(organization)
        } else {
            Topic::Everyone
        };
        Some((topic, filter))
    }
}

impl Relay {
    /// Sends `frame` from the server to every connection `target` matches. To a whole
    /// session or channel it is a publication, numbered and kept where the topic has a
    /// stream. Returns how many it reached.
    pub fn send(&self, target: &Target, frame: Frame, now: Millis) -> usize {
        let Some((topic, filter)) = target.topic() else { return 0 };
        let publication = filter.is_empty();
        let delivery = Delivery { topic, frame, from: None, except: target.except, publication, filter };
        let mut slow = SlowConsumers::new();
        let delivered = self.fan_out(delivery, Reach::Everywhere, now, &mut slow).delivered;
        self.close_slow_consumers(slow, now);
        delivered
    }
}
