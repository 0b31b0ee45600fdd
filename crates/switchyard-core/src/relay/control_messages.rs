//! Control-role messages (`request_control`, `offer_control`, `accept_control`, ...),
//! passed on as the clients sent them, and the transfers that wait for an answer.

use std::sync::atomic::Ordering;

use crate::broker::{ClusterLink, Remote, RemoteMember};
use crate::error::ErrorCode;
use crate::frame::Frame;
use crate::ids::{ConnId, Millis, SessionId};
use crate::message::ControlStep;
use crate::roles::{Members, Send};
use crate::session::{Member, Session};
use crate::registry::{Sender};

use super::{Outcome, Relay, SlowConsumers};

/// A session's members here and on the cluster's other nodes, as the control rules see
/// them, in the order of joining the link defines.
pub(super) struct Everyone<'a> {
    pub here: &'a [Member],
    pub elsewhere: &'a [RemoteMember],
    pub link: &'a dyn ClusterLink,
    /// The sender of the step, and when it joined, as its message said.
    pub sender: Option<(ConnId, Millis)>,
}

impl Members for Everyone<'_> {
    fn client_id(&self, conn: ConnId) -> String {
        match self.here.iter().find(|m| m.conn == conn) {
            Some(member) => member.name.get(conn),
            None => self.elsewhere.iter().find(|m| m.present.connection_id == conn).map_or_else(|| conn.to_string(), |m| m.present.client_id.clone()),
        }
    }

    fn joined(&self, conn: ConnId) -> u64 {
        // Only members here were counted; the others are placed by when they joined.
        let elsewhere = |joined_at: Millis| self.link.join_order(joined_at, conn, u64::MAX);
        match self.here.iter().find(|m| m.conn == conn) {
            Some(member) => self.link.join_order(member.joined_at, conn, member.joined),
            None => match self.elsewhere.iter().find(|m| m.present.connection_id == conn) {
                Some(member) => elsewhere(member.present.connected_at),
                None => self.sender.filter(|(sender, _)| *sender == conn).map_or(u64::MAX, |(_, joined_at)| elsewhere(joined_at)),
            },
        }
    }
}

impl Relay {
    pub(super) fn is_active(&self, sender: &Sender) -> bool {
        let Some(session_id) = &sender.session else { return false };
        self.sessions.get(session_id).is_some_and(|s| s.control.active() == Some(sender.id))
    }

    /// A control-role message (docs/protocol.md, "Control roles"), handled by the session's
    /// [`Control`](crate::roles::Control): here at once, or in a cluster on every node
    /// once the shared broker has ordered it.
    pub(super) fn control(&self, sender: &Sender, step: ControlStep, frame: &Frame, now: Millis, slow: &mut SlowConsumers) -> Outcome {
        let Some(session_id) = &sender.session else { return Outcome::Rejected(ErrorCode::NoSession.into()) };
        if self.link.orders_steps() {
            let joined_at = self.sessions.get(session_id).and_then(|s| s.members.iter().find(|m| m.conn == sender.id).map(|m| m.joined_at));
            let control = Remote::Control { session: session_id.clone(), from: sender.id, joined_at: joined_at.unwrap_or(now), step, frame: frame.clone() };
            self.link.forward(control);
            return Outcome::Done;
        }
        self.apply_control(session_id, (sender.id, now), step, frame, now, slow);
        Outcome::Done
    }

    /// One step of a session's control rules, for a member here or on another node; the
    /// members here get what it sends them.
    pub(super) fn apply_control(&self, session_id: &SessionId, (from, joined_at): (ConnId, Millis), step: ControlStep, frame: &Frame, now: Millis, slow: &mut SlowConsumers) {
        let Some(mut session) = self.sessions.get_mut(session_id) else { return };
        session.last_activity.store(now, Ordering::Relaxed);
        let elsewhere = self.sessions.elsewhere.members(session_id);
        let was_active = session.control.active();
        let Session { control, members, conflict_resolution, .. } = &mut *session;
        let everyone = Everyone { here: members, elsewhere: &elsewhere, link: &*self.link, sender: Some((from, joined_at)) };
        let sends = match step {
            ControlStep::Request => {
                let timeout = self.config.control_request_timeout_ms;
                let sends = control.request(from, frame, *conflict_resolution, timeout, &everyone, now);
                if let Some(transfer) = control.transfer.filter(|t| t.requester == from) {
                    self.sessions.await_transfer(session_id.clone(), transfer.deadline);
                }
                sends
            }
            ControlStep::Accept => control.accept(from, frame, &everyone, now),
            ControlStep::Offer => control.offer(from, frame),
            ControlStep::Decline => control.decline(from, frame),
            ControlStep::Release => control.release(from, frame, now),
            ControlStep::RoleChanged(role) => control.role_changed(from, role, frame, &everyone, now),
        };
        self.deliver(members, sends, slow);
        if control.active() != was_active {
            self.announce_roles(&session, [was_active, session.control.active()]);
        }
    }

    /// In a cluster, the records of this node's members whose role changed, so that a
    /// node that did not follow the session's control steps still knows who is active.
    pub(super) fn announce_roles(&self, session: &Session, changed: [Option<ConnId>; 2]) {
        for member in session.members.iter().filter(|m| changed.contains(&Some(m.conn))) {
            let member_record = self.as_remote(self.present(session, member));
            self.link.forward(Remote::MemberJoined { session: session.id.clone(), member: member_record, announce: false });
        }
    }

    pub(super) fn deliver(&self, members: &[Member], sends: Vec<Send>, slow: &mut SlowConsumers) {
        for send in sends {
            match send {
                Send::To(conn, frame) => {
                    if let Some(member) = members.iter().find(|m| m.conn == conn) {
                        self.push(member.conn, &*member.outbox, frame, slow);
                    }
                }
                Send::AllBut(except, frame) => {
                    for member in members.iter().filter(|m| m.conn != except) {
                        self.push(member.conn, &*member.outbox, frame.clone(), slow);
                    }
                }
            }
        }
    }

    /// Declines the forwarded control requests nobody answered in time.
    pub(super) fn expire_transfers(&self, now: Millis) {
        let mut slow = SlowConsumers::new();
        for id in self.sessions.overdue_transfers(now) {
            if let Some(mut session) = self.sessions.get_mut(&id) {
                let Session { control, members, .. } = &mut *session;
                let sends = control.expire(now);
                self.deliver(members, sends, &mut slow);
            }
        }
        self.close_slow_consumers(slow, now);
    }
}
