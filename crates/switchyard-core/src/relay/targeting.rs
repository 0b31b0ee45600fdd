//! Server-side sends: which connections a [`Target`] reaches, and sending to them.

use super::*;

/// Which connections a server-side send reaches: all the given fields must match.
#[derive(Clone, Copy, Debug, Default)]
pub struct Target<'a> {
    pub session_id: Option<&'a str>,
    pub channel: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub organization_id: Option<&'a str>,
    pub except: Option<ConnId>,
}

impl Relay {
    /// Sends `frame` from the server to every connection `target` matches. Returns how
    /// many it reached.
    pub fn send(&self, target: &Target, frame: Frame, now: Millis) -> usize {
        let channel = match target.channel.map(ChannelName::parse) {
            Some(Ok(name)) => Some(name),
            Some(Err(_)) => return 0,
            None => None,
        };
        let session = match target.session_id.map(SessionId::parse) {
            Some(Ok(id)) => Some(id),
            Some(Err(_)) => return 0,
            None => None,
        };
        if let (None, Some(name), None, None) = (&session, &channel, target.user_id, target.organization_id) {
            // To a whole channel: a publication, numbered and kept with channel history on.
            let mut slow = SlowConsumers::new();
            let delivered = self.publish_in_channel(name, target.except, &frame, now, &mut slow);
            self.close_slow_consumers(slow, now);
            return delivered;
        }
        if let (Some(id), None, None, None) = (&session, &channel, target.user_id, target.organization_id) {
            // To a whole session: a publication, numbered and kept when it has a stream.
            let mut slow = SlowConsumers::new();
            let delivered = match self.sessions.get(id) {
                Some(session) => self.publish_in_session(&session, None, target.except, &frame, now, &mut slow).0,
                None => 0,
            };
            self.close_slow_consumers(slow, now);
            return delivered;
        }
        let candidates: Vec<ConnId> = if let Some(name) = &channel {
            let mut members = Vec::new();
            self.channels.for_each_member(name, None, |m| members.push(m.conn));
            members
        } else if let Some(id) = &session {
            self.sessions.get(id).map(|s| s.members.iter().map(|m| m.conn).collect()).unwrap_or_default()
        } else if let Some(user) = target.user_id {
            self.users.get(user).map(|conns| conns.clone()).unwrap_or_default()
        } else {
            self.conns.iter().map(|c| *c.key()).collect()
        };
        let mut slow = SlowConsumers::new();
        let mut delivered = 0;
        for id in candidates.into_iter().filter(|id| Some(*id) != target.except) {
            let outbox = {
                let Some(conn) = self.conns.get(&id) else { continue };
                let matches = session.as_ref().is_none_or(|s| conn.session.as_ref() == Some(s))
                    && target.user_id.is_none_or(|u| conn.user.get().is_some_and(|user| **user == *u))
                    && target.organization_id.is_none_or(|o| conn.identity.organization_id.as_deref() == Some(o))
                    && channel.as_ref().is_none_or(|c| conn.channels.lock().contains(c));
                if !matches {
                    continue;
                }
                conn.outbox.clone()
            };
            if self.push(id, &*outbox, frame.clone(), &mut slow) {
                delivered += 1;
            }
        }
        self.close_slow_consumers(slow, now);
        delivered
    }
}
