//! How a message is answered under the `ack` policy: an `ACK` for what was routed, a
//! `NACK` or an `error` for what was refused.

use crate::policies::AckPolicy;
use crate::envelope::Envelope;
use crate::error::MessageRejection;
use crate::frame::Frame;
use crate::ids::Millis;
use crate::protocol::{self, Offending};
use crate::stats::Counters;

use super::Relay;

impl Relay {
    /// The id a message is acknowledged by, under the `ack` policy.
    pub(super) fn ack_to<'e>(&self, envelope: &'e Envelope) -> Option<&'e str> {
        let id = envelope.correlation_id.as_deref();
        match self.config.ack {
            AckPolicy::Never => None,
            AckPolicy::Always => id,
            AckPolicy::Requested => id.filter(|_| envelope.ack),
        }
    }

    /// The answer to a refused message: a `NACK` when it is acknowledged, else an `error`.
    pub(super) fn refusal(&self, envelope: &Envelope, frame: &Frame, rejection: &MessageRejection, now: Millis) -> Frame {
        match self.ack_to(envelope) {
            Some(id) => {
                Counters::add(&self.counters.nacks, 1);
                protocol::nack(id, rejection, now)
            }
            None => {
                let offending = Offending {
                    upper_case: protocol::is_upper_case(&envelope.kind),
                    request_id: envelope.request_id,
                    correlation_id: envelope.correlation_id.as_deref(),
                    original: Some(&frame.payload),
                };
                protocol::error(rejection, offending, now)
            }
        }
    }
}
