//! Case awareness messages: `register`, `deregister`, `heartbeat` and `focus`, and whose
//! user a connection speaks for.

use std::sync::Arc;

use crate::awareness::{Notices, Registration};
use crate::broker::{AwarenessStep, Remote};
use crate::error::{ConnectionRefusal, ErrorCode, MessageRejection};
use crate::frame::Frame;
use crate::ids::{ConnId, Millis};
use crate::message::{AwarenessKind, AwarenessMessage};
use crate::registry::{Sender};

use super::{Outcome, Relay, SlowConsumers};

impl Relay {
    /// `register`, `deregister`, `heartbeat` and `focus` (docs/protocol.md, "Case awareness").
    pub(super) fn awareness(&self, sender: &Sender, message: AwarenessMessage, frame: &Frame, now: Millis, slow: &mut SlowConsumers) -> Outcome {
        let user = match self.user_for(sender, &message.user_id, message.kind == AwarenessKind::Register, now) {
            Ok(user) => user,
            Err(outcome) => return outcome,
        };
        let window = message.window_id.into_owned();
        let step = match message.kind {
            AwarenessKind::Register => {
                let Some(case_id) = message.case_id.as_deref().filter(|c| crate::message::is_awareness_id(c)) else {
                    return Outcome::Rejected(MessageRejection::new(ErrorCode::InvalidMessage, "register needs a caseId of 1 to 256 characters"));
                };
                AwarenessStep::Register { window, case: case_id.to_owned() }
            }
            AwarenessKind::Deregister => AwarenessStep::Deregister { window },
            AwarenessKind::Heartbeat => AwarenessStep::Heartbeat { window },
            AwarenessKind::Focus => AwarenessStep::Focus { window },
        };
        if self.link.orders_steps() {
            self.link.forward(Remote::Awareness { user, conn: sender.id, step, frame: frame.clone() });
            return Outcome::Done;
        }
        match self.apply_awareness(&user, sender.id, &step, now, slow) {
            Ok(()) => Outcome::Done,
            Err(rejection) => Outcome::Rejected(rejection),
        }
    }

    /// One step of a user's windows, for its connection here or on another node; the
    /// user's connections here hear what it says.
    pub(super) fn apply_awareness(&self, user: &Arc<str>, conn: ConnId, step: &AwarenessStep, now: Millis, slow: &mut SlowConsumers) -> Result<(), MessageRejection> {
        let notices = match step {
            AwarenessStep::Register { window, case } => {
                let registration = Registration { user, window_id: window, case_id: case };
                self.awareness.register(registration, conn, now)?
            }
            AwarenessStep::Deregister { window } => self.awareness.deregister(user, window),
            AwarenessStep::Heartbeat { window } => {
                self.awareness.heartbeat(user, window, now);
                Notices::new()
            }
            AwarenessStep::Focus { window } => {
                self.awareness.focus(user, window);
                Notices::new()
            }
            AwarenessStep::Closed => self.awareness.connection_closed(user, conn),
        };
        self.notify(notices, now, slow);
        Ok(())
    }

    /// The user an awareness message acts for: the connection's, which the payload's
    /// `userId` must match (`FORBIDDEN`). A connection without one takes it from its first
    /// `register`, within `maxConnectionsPerUser` (else `CONNECTION_LIMIT` and 1008).
    pub(super) fn user_for(&self, sender: &Sender, claimed: &str, registering: bool, now: Millis) -> Result<Arc<str>, Outcome> {
        let Some(current) = self.registry.get(sender.id).map(|c| c.user.get().cloned()) else { return Err(Outcome::Done) };
        if let Some(user) = current {
            return if *user == *claimed {
                Ok(user)
            } else {
                Err(Outcome::Rejected(MessageRejection::new(ErrorCode::Forbidden, "The payload's userId is not this connection's user")))
            };
        }
        if !registering {
            return Err(Outcome::Rejected(MessageRejection::new(ErrorCode::Forbidden, "Register before sending for a user")));
        }
        if self.config.verified_users_only {
            return Err(Outcome::Rejected(MessageRejection::new(ErrorCode::Forbidden, "With token auth, a connection is the user its token names")));
        }
        let user: Arc<str> = claimed.into();
        if !self.take_user_slot(&user, sender.id) {
            let refusal = ConnectionRefusal::ConnectionLimit;
            if let Some(notice) = refusal.notice(now) {
                self.push(sender.id, &*sender.outbox, notice, &mut SlowConsumers::new());
            }
            self.end_connection(sender.id, refusal.close_code(), refusal.reason(), now);
            return Err(Outcome::Done);
        }
        // A connection's messages are routed one at a time, so nothing set its user meanwhile.
        let still_open = self.registry.get(sender.id).map(|c| c.user.set(user.clone())).is_some();
        if !still_open {
            self.limiter.release_user_slot(&user, sender.id);
            return Err(Outcome::Done);
        }
        Ok(user)
    }
}
