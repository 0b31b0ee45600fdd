//! What the relay produced for the JavaScript thread and that waits for it there:
//! events for listeners, and bridge outboxes holding frames for their `ws` sockets.
//!
//! The relay calls [`EventSink::emit`] and [`Outbox::push`](switchyard_core::Outbox)
//! from whichever thread routed a frame, possibly under its own locks, so both only
//! queue here. The JS thread drains the queue after each call it makes into the relay.

use std::sync::Arc;

use parking_lot::Mutex;
use switchyard_core::{Event, EventSink};

use crate::bridge::BridgeOutbox;

#[derive(Default)]
pub struct Pending {
    events: Mutex<Vec<Event>>,
    outboxes: Mutex<Vec<Arc<BridgeOutbox>>>,
}

impl Pending {
    /// Notes that `outbox` has something to flush. Each outbox is queued at most once
    /// until it is flushed (it tracks that itself).
    pub fn outbox_ready(&self, outbox: Arc<BridgeOutbox>) {
        self.outboxes.lock().push(outbox);
    }

    pub fn take_events(&self) -> Vec<Event> {
        std::mem::take(&mut *self.events.lock())
    }

    pub fn take_outboxes(&self) -> Vec<Arc<BridgeOutbox>> {
        std::mem::take(&mut *self.outboxes.lock())
    }
}

impl EventSink for Pending {
    fn emit(&self, event: Event) {
        self.events.lock().push(event);
    }
}
