//! Asking the application: a join or a member's message raises a question to the
//! [`Hooks`](crate::Hooks), whose answer comes now or through [`Relay::decide`]; the
//! connection's later messages wait behind it and are handled, in order, once it is
//! answered or given up on after `hookTimeoutMs`.

use crate::channels::ChannelName;
use crate::error::{ErrorCode, MessageRejection};
use crate::frame::Frame;
use crate::hooks::{Ask, Decides, Question, Verdict};
use crate::ids::{ConnId, Millis};
use crate::questions::Next;
use crate::registry::Sender;
use crate::stats::Counters;

use super::{Outcome, Relay, SlowConsumers};

impl Relay {
    /// The questions the application answers (its hooks, or its backend).
    pub fn decides(&self) -> Decides {
        self.questions.decides
    }

    /// Asks the application about the message `frame` from `sender`: its verdict, or
    /// `Err(Outcome::Asked)` when the answer comes later (the message is held till then).
    pub(super) fn ask(&self, sender: &Sender, frame: &Frame, ask: Ask, now: Millis) -> Result<Verdict, Outcome> {
        let questions = &self.questions;
        let id = questions.next_id();
        if questions.holding {
            questions.held.ask(sender.id, id, frame.clone(), now, self.config.hook_timeout_ms);
        }
        Counters::add(&self.counters.hook_questions, 1);
        match questions.hooks.ask(Question { id, connection: sender.info(), ask }) {
            Some(verdict) => {
                if questions.holding {
                    questions.held.withdraw(sender.id, id);
                }
                self.counters.hook_latency.record(0);
                Ok(verdict)
            }
            None if questions.holding => Err(Outcome::Asked),
            None => Ok(Verdict::Unavailable),
        }
    }

    /// Whether `sender` may join `channel`, when the application decides it: `None` when
    /// it does not (the channel rules alone apply), else its refusal or `Ok`.
    pub(super) fn join_verdict(&self, sender: &Sender, channel: &ChannelName, token: Option<String>, frame: &Frame, verdict: Option<Verdict>, now: Millis) -> Result<(), Outcome> {
        if verdict.is_none() && !(self.questions.decides.join || channel.is_private()) {
            return Ok(());
        }
        let verdict = match verdict {
            Some(verdict) => verdict,
            None => self.ask(sender, frame, Ask::Join { channel: channel.as_str().to_owned(), token }, now)?,
        };
        match verdict {
            Verdict::Allow | Verdict::Replace(_) | Verdict::Renew(_) => Ok(()),
            Verdict::Refuse(reason) => Err(self.refused(ErrorCode::ChannelForbidden, reason)),
            Verdict::Unavailable => Err(self.unanswered()),
        }
    }

    /// What is relayed of a member's message, when the application decides it: `Ok(None)`
    /// for the message itself, `Ok(Some(..))` for the application's replacement. A message
    /// the relay would refuse anyway (no session, not in the channel) is not asked about.
    pub(super) fn publish_verdict(&self, sender: &Sender, channel: Option<&str>, frame: &Frame, verdict: Option<Verdict>, now: Millis) -> Result<Option<Frame>, Outcome> {
        if !self.questions.decides.publish {
            return Ok(None);
        }
        let verdict = match verdict {
            Some(verdict) => verdict,
            None => {
                let deliverable = match channel {
                    Some(name) => ChannelName::parse(name).is_ok_and(|name| self.channels.is_member(&name, sender.id)),
                    None => sender.session.is_some(),
                };
                if !deliverable {
                    return Ok(None);
                }
                self.ask(sender, frame, Ask::Publish { channel: channel.map(str::to_owned), message: frame.payload.clone() }, now)?
            }
        };
        match verdict {
            Verdict::Allow | Verdict::Renew(_) => Ok(None),
            Verdict::Replace(message) => Ok(Some(Frame::text(message))),
            Verdict::Refuse(reason) => Err(self.refused(ErrorCode::PublishRefused, reason)),
            Verdict::Unavailable => Err(self.unanswered()),
        }
    }

    pub(super) fn refused(&self, code: ErrorCode, reason: Option<String>) -> Outcome {
        Counters::add(&self.counters.hook_refusals, 1);
        Outcome::Rejected(reason.map_or_else(|| code.into(), |reason| MessageRejection::new(code, reason)))
    }

    pub(super) fn unanswered(&self) -> Outcome {
        Counters::add(&self.counters.hook_failures, 1);
        Outcome::Rejected(MessageRejection::new(ErrorCode::Unavailable, "The application did not answer"))
    }

    /// The application's answer to question `question` about a message from `conn`: the
    /// message is handled as it says, then the messages that waited behind it. Returns
    /// false when the question is no longer out (it timed out, or its connection left).
    pub fn decide(&self, conn: ConnId, question: u64, verdict: Verdict, now: Millis) -> bool {
        let Some((asking, verdict)) = self.questions.held.answer(conn, question, verdict) else { return false };
        self.counters.hook_latency.record(now.saturating_sub(asking.asked_at).saturating_mul(1000));
        let mut slow = SlowConsumers::new();
        self.resume(conn, &asking.frame, verdict, now, &mut slow);
        self.close_slow_consumers(slow, now);
        true
    }

    fn resume(&self, conn: ConnId, frame: &Frame, verdict: Verdict, now: Millis, slow: &mut SlowConsumers) {
        match self.registry.sender(conn, now) {
            Some(sender) => {
                self.handle(&sender, frame, Some(verdict), now, slow);
                self.handle_held(conn, now, slow);
            }
            None => self.questions.held.forget(conn),
        }
    }

    /// Handles the messages waiting on `conn`, in order, until one raises a question.
    pub(super) fn handle_held(&self, conn: ConnId, now: Millis, slow: &mut SlowConsumers) {
        while let Some(next) = self.questions.held.next(conn) {
            let Some(sender) = self.registry.sender(conn, now) else {
                self.questions.held.forget(conn);
                return;
            };
            match next {
                Next::Message(frame) => self.handle(&sender, &frame, None, now, slow),
                Next::Answered(asking, verdict) => self.handle(&sender, &asking.frame, Some(verdict), now, slow),
            }
        }
    }

    /// Gives up on questions past `hookTimeoutMs`: their messages are refused `UNAVAILABLE`.
    pub(super) fn expire_questions(&self, now: Millis) {
        let mut slow = SlowConsumers::new();
        for (conn, asking) in self.questions.held.expire(now) {
            self.resume(conn, &asking.frame, Verdict::Unavailable, now, &mut slow);
        }
        self.close_slow_consumers(slow, now);
    }
}
