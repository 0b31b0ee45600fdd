//! `request` messages: handed to the app's handler, answered with `respond`, timed out.

use serde_json::value::RawValue;

use crate::error::{ErrorCode, MessageRejection};
use crate::event::Event;
use crate::ids::{ConnId, Millis};
use crate::protocol;
use crate::protocol::Offending;
use crate::stats::Counters;
use crate::registry::{Sender};

use super::{Outcome, Relay, SlowConsumers};

impl Relay {
    /// Whether the app has a request handler; without one, requests get `NO_HANDLER`.
    pub fn answer_requests(&self, answering: bool) {
        self.requests.set_answered(answering);
    }

    pub(super) fn request(&self, sender: &Sender, request_id: &RawValue, payload: Option<&RawValue>, now: Millis) -> Outcome {
        if !self.requests.answered() {
            return Outcome::Rejected(ErrorCode::NoHandler.into());
        }
        let deadline = now.saturating_add(self.config.request_timeout_ms);
        if let Err(rejection) = self.requests.start(sender.id, request_id.get(), deadline) {
            return Outcome::Rejected(rejection);
        }
        Counters::add(&self.counters.requests, 1);
        self.events.emit(Event::Request {
            connection: sender.info(),
            request_id: request_id.get().to_owned(),
            payload: payload.map_or("null", RawValue::get).to_owned(),
        });
        Outcome::Done
    }

    /// Answers a request: `Ok` with the result as JSON, or `Err` with why it failed.
    /// Returns false when the request is no longer waiting (it timed out, or its
    /// connection left).
    pub fn respond(&self, conn: ConnId, request_id: &str, outcome: Result<&RawValue, &MessageRejection>, now: Millis) -> bool {
        if !self.requests.finish(conn, request_id) {
            return false;
        }
        let Some(outbox) = self.registry.get(conn).map(|c| c.outbox.clone()) else { return false };
        let Ok(id) = RawValue::from_string(request_id.to_owned()) else { return false };
        let answer = match outcome {
            Ok(result) => protocol::response(&id, result, now),
            Err(rejection) => protocol::error(rejection, Offending { request_id: Some(&id), ..Default::default() }, now),
        };
        let mut slow = SlowConsumers::new();
        self.push(conn, &*outbox, answer, &mut slow);
        self.close_slow_consumers(slow, now);
        true
    }

    pub(super) fn expire_requests(&self, now: Millis) {
        let mut slow = SlowConsumers::new();
        for (conn, request_id) in self.requests.expire(now) {
            let Some(outbox) = self.registry.get(conn).map(|c| c.outbox.clone()) else { continue };
            let Ok(id) = RawValue::from_string(request_id.into()) else { continue };
            let timeout = protocol::error(&ErrorCode::RequestTimeout.into(), Offending { request_id: Some(&id), ..Default::default() }, now);
            self.push(conn, &*outbox, timeout, &mut slow);
        }
        self.close_slow_consumers(slow, now);
    }
}
