//! What the relay produced for the JavaScript thread and that waits for it there:
//! events for listeners, and outboxes (the bridge's, holding frames for their `ws`
//! sockets) to flush.
//!
//! The relay calls [`EventSink::emit`] and [`Outbox::push`](switchyard_core::Outbox)
//! from whichever thread routed a frame, possibly under its own locks, so both only
//! queue here. On the JS thread, the call into the relay that caused them drains the
//! queue before returning. From a native connection's thread, the first item queued
//! wakes the JS thread once, through a thread-safe function.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{self, ThreadId};

use parking_lot::Mutex;
use switchyard_core::{Event, EventSink};

type Wake = Box<dyn Fn() + Send + Sync>;

pub struct JsQueue<Outbox> {
    events: Mutex<Vec<Event>>,
    outboxes: Mutex<Vec<Arc<Outbox>>>,
    js_thread: ThreadId,
    /// Set once native connections exist: schedules a drain on the JS thread.
    wake: OnceLock<Wake>,
    /// A wake is on its way and the JS thread has not started draining yet.
    woken: AtomicBool,
}

impl<Outbox> JsQueue<Outbox> {
    /// Made on the JS thread, which is then the one that needs no waking.
    pub fn new() -> Self {
        Self {
            events: Mutex::default(),
            outboxes: Mutex::default(),
            js_thread: thread::current().id(),
            wake: OnceLock::new(),
            woken: AtomicBool::new(false),
        }
    }

    #[cfg(not(target_family = "wasm"))]
    pub fn set_wake(&self, wake: Wake) {
        let _ = self.wake.set(wake);
    }

    fn wake_js_thread(&self) {
        if thread::current().id() == self.js_thread {
            return;
        }
        if let Some(wake) = self.wake.get() {
            if !self.woken.swap(true, Ordering::AcqRel) {
                wake();
            }
        }
    }

    /// Notes that `outbox` has something to flush. Each outbox is queued at most once
    /// until it is flushed (it tracks that itself).
    pub fn outbox_ready(&self, outbox: Arc<Outbox>) {
        self.outboxes.lock().push(outbox);
        self.wake_js_thread();
    }

    /// Takes everything queued. Anything queued after this wakes the JS thread again.
    pub fn take(&self) -> (Vec<Arc<Outbox>>, Vec<Event>) {
        self.woken.store(false, Ordering::Release);
        let outboxes = std::mem::take(&mut *self.outboxes.lock());
        let events = std::mem::take(&mut *self.events.lock());
        (outboxes, events)
    }
}

impl<Outbox: Send + Sync> EventSink for JsQueue<Outbox> {
    fn emit(&self, event: Event) {
        // The app reads history when it wants it; no listener waits for publications.
        if matches!(event, Event::Published { .. }) {
            return;
        }
        self.events.lock().push(event);
        self.wake_js_thread();
    }
}
