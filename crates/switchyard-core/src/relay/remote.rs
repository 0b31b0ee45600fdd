//! A node of a cluster: what the other nodes tell this one ([`Relay::handle_remote`], the
//! one entry point for them), and what a cluster broker asks of this node when it
//! (re)joins: which topics have subscribers here, and who its members are.

use crate::broker::{Remote, RemoteMember, SessionRecord, Topic};
use crate::envelope::Envelope;
use crate::ids::{Millis, SessionId};
use crate::present_member::PresentMember;
use crate::protocol;
use crate::session::Session;
use crate::stats::Counters;

use super::{Relay, SlowConsumers};
use super::fan_out::Reach;

impl Relay {
    /// Takes in what another node of the cluster sent.
    pub fn handle_remote(&self, remote: Remote, now: Millis) {
        let mut slow = SlowConsumers::new();
        match remote {
            Remote::Delivery(delivery) => {
                let delivered = self.fan_out(delivery, Reach::Here, now, &mut slow).delivered;
                Counters::add(&self.counters.messages_relayed, delivered as u64);
            }
            Remote::Numbered { delivery, epoch, offset, timestamp } => {
                let delivered = self.fan_out_numbered(delivery, &epoch, offset, timestamp, now, &mut slow);
                Counters::add(&self.counters.messages_relayed, delivered as u64);
            }
            Remote::Control { session, from, joined_at, step, frame } => {
                self.apply_control(&session, (from, joined_at), step, &frame, now, &mut slow);
            }
            Remote::Awareness { user, conn, step, frame } => {
                if let Err(rejection) = self.apply_awareness(&user, conn, &step, now, &mut slow) {
                    // Refused on every node alike; the sender's node answers it.
                    let outbox = self.registry.get(conn).map(|c| c.outbox.clone());
                    if let (Some(outbox), Ok(envelope)) = (outbox, Envelope::parse(&frame.payload)) {
                        let answer = self.refusal(&envelope, &frame, &rejection, now);
                        self.push(conn, &*outbox, answer, &mut slow);
                    }
                }
            }
            Remote::SessionCreated(record) => {
                if record.expires_at > now {
                    if let Some(history) = record.history {
                        self.streams.open_stream(&Topic::Session(record.id.clone()), history);
                    }
                    self.sessions.entry(record.id.clone()).or_insert_with(|| Session::from_record(record));
                }
            }
            Remote::SessionDeleted(id) => {
                self.end_session_here(&id, false, now);
            }
            Remote::MemberJoined { session, member, announce } => {
                let Some(mut local) = self.sessions.get_mut(&session) else { return };
                // A node with no member here does not follow the session's control steps:
                // it learns who is active from the members' records.
                if local.members.is_empty() {
                    let conn = member.present.connection_id;
                    match member.present.role {
                        "active" => local.control.hand_to(Some(conn)),
                        _ if local.control.active() == Some(conn) => local.control.hand_to(None),
                        _ => {}
                    }
                }
                let announcement = announce.then(|| protocol::client_connected(&member.present.client_id, &member.present.connection_id.to_string(), now));
                if !self.sessions.elsewhere.add(&session, member) {
                    return;
                }
                if let Some(announcement) = announcement {
                    for here in &local.members {
                        self.push(here.conn, &*here.outbox, announcement.clone(), &mut slow);
                    }
                }
            }
            Remote::MemberLeft { session, conn, was_active } => self.remote_member_left(&session, |m| m.present.connection_id == conn, was_active, now, &mut slow),
            Remote::NodeGone(node) => {
                for session in self.sessions.elsewhere.sessions() {
                    self.remote_member_left(&session, |m| m.node == node, false, now, &mut slow);
                }
            }
        }
        self.close_slow_consumers(slow, now);
    }

    /// Forgets the remote members of a session that `gone` picks, telling the members here.
    fn remote_member_left(&self, session: &SessionId, gone: impl Fn(&RemoteMember) -> bool, was_active: bool, now: Millis, slow: &mut SlowConsumers) {
        let left = self.sessions.elsewhere.remove(session, &gone);
        if left.is_empty() {
            return;
        }
        let Some(mut local) = self.sessions.get_mut(session) else { return };
        let Session { control, members, .. } = &mut *local;
        for member in left {
            let conn = member.present.connection_id;
            // Every node applies the leave to its copy of the control rules.
            let (active, sends) = control.left(conn, now);
            let farewell = protocol::client_disconnected(&member.present.client_id, &conn.to_string(), was_active || active, now);
            for here in members.iter() {
                self.push(here.conn, &*here.outbox, farewell.clone(), slow);
            }
            self.deliver(members, sends, slow);
        }
    }

    /// Whether this node has a subscriber to `topic`: a cluster broker asks, to keep its
    /// subscriptions to what the relay holds.
    pub fn has_subscribers(&self, topic: &Topic) -> bool {
        match topic {
            Topic::Session(id) => self.sessions.get(id).is_some_and(|s| !s.members.is_empty()),
            Topic::Channel(name) => self.channels.exists(name),
            Topic::User(_) | Topic::Organization(_) | Topic::Connection(_) | Topic::Everyone => false,
        }
    }

    /// The session and channel topics with subscribers here: what a cluster broker
    /// subscribes to when it (re)connects.
    pub fn subscribed_topics(&self) -> Vec<Topic> {
        let sessions = self.sessions.ids_where(|s| !s.members.is_empty()).into_iter().map(Topic::Session);
        let channels = self.channels.names().into_iter().map(Topic::Channel);
        sessions.chain(channels).collect()
    }

    /// Every session this node knows, and its members here: what a cluster broker
    /// registers again when it (re)connects.
    pub fn local_state(&self) -> Vec<(SessionRecord, Vec<RemoteMember>)> {
        let ids = self.sessions.ids_where(|_| true);
        ids.iter()
            .filter_map(|id| self.sessions.get(id))
            .map(|session| {
                let members = session.members.iter().map(|member| self.as_remote(self.present(&session, member))).collect();
                (session.record(), members)
            })
            .collect()
    }

    /// Forgets every member on other nodes, before a cluster broker loads them afresh.
    pub fn forget_remote_members(&self) {
        self.sessions.elsewhere.forget_all();
    }

    pub(super) fn as_remote(&self, present: PresentMember) -> RemoteMember {
        RemoteMember { node: self.link.status().map_or_else(|| "".into(), |cluster| cluster.node_id), present }
    }
}
