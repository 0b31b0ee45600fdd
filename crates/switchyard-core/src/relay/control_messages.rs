//! Control-role messages (`request_control`, `accept_control`, ...), passed on as the
//! clients sent them, and the transfers that wait for an answer.

use super::*;

impl Relay {
    pub(super) fn is_active(&self, sender: &Sender) -> bool {
        let Some(session_id) = &sender.session else { return false };
        self.sessions.get(session_id).is_some_and(|s| s.control.active == Some(sender.id))
    }

    /// A control-role message (docs/protocol.md, "Control roles"), handled by the session's
    /// [`Control`](crate::roles::Control).
    pub(super) fn control(&self, sender: &Sender, kind: &str, envelope: &Envelope, frame: &Frame, now: Millis, slow: &mut SlowConsumers) -> Outcome {
        let Some(session_id) = &sender.session else { return Outcome::Rejected(ErrorCode::NoSession.into()) };
        let Some(mut session) = self.sessions.get_mut(session_id) else { return Outcome::Done };
        session.last_activity.store(now, Ordering::Relaxed);
        let Session { control, members, conflict_resolution, .. } = &mut *session;
        let sends = match kind {
            "request_control" => {
                let timeout = self.config.control_request_timeout_ms;
                let sends = control.request(sender.id, frame, *conflict_resolution, timeout, &*members, now);
                if let Some(transfer) = control.transfer.filter(|t| t.requester == sender.id) {
                    self.transfers.insert(session_id.clone(), transfer.deadline);
                }
                sends
            }
            "accept_control" => control.accept(sender.id, frame, &*members, now),
            "decline_control" => control.decline(sender.id, frame),
            "release_control" => control.release(sender.id, frame, now),
            _ => {
                let announced = envelope.data.and_then(|raw| serde_json::from_str::<RoleAnnouncement>(raw.get()).ok());
                control.role_changed(sender.id, announced.as_ref().and_then(|a| a.role.as_deref()), frame, now)
            }
        };
        self.deliver(members, sends, slow);
        Outcome::Done
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
        let due: Vec<SessionId> = self.transfers.iter().filter(|entry| *entry.value() <= now).map(|entry| entry.key().clone()).collect();
        let mut slow = SlowConsumers::new();
        for id in due {
            self.transfers.remove_if(&id, |_, deadline| *deadline <= now);
            if let Some(mut session) = self.sessions.get_mut(&id) {
                let Session { control, members, .. } = &mut *session;
                let sends = control.expire(now);
                self.deliver(members, sends, &mut slow);
            }
        }
        self.close_slow_consumers(slow, now);
    }
}
