//! What the relay produced for a host that drives it from an event loop of its own (the
//! Node addon's JavaScript thread) and that waits for that loop: events for the host's
//! listeners, questions for its hooks ([`LoopHooks`]), and outboxes (the bridge's, see
//! [`crate::bridge_outbox`]) to flush.
//!
//! The relay calls [`EventSink::emit`], [`Hooks::ask`] and
//! [`Outbox::push`](switchyard_core::Outbox) from whichever thread routed a frame,
//! possibly under its own locks, so all three only queue here. On the loop's thread, the call into the relay that caused them drains the
//! queue before returning. From any other thread (a native connection's), the first item
//! queued wakes the loop once, through the host's wake-up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{self, ThreadId};

use parking_lot::Mutex;
use switchyard_core::{Decides, Event, EventSink, Hooks, Question, Verdict};

type Wake = Box<dyn Fn() + Send + Sync>;

/// Made on the loop's thread, which is then the one that needs no waking.
pub struct HostQueue<Outbox> {
    events: Mutex<Vec<Event>>,
    questions: Mutex<Vec<Question>>,
    outboxes: Mutex<Vec<Arc<Outbox>>>,
    loop_thread: ThreadId,
    /// Set once other threads may queue: schedules a drain on the loop's thread.
    wake: OnceLock<Wake>,
    /// A wake is on its way and the loop has not started draining yet.
    woken: AtomicBool,
}

impl<Outbox> Default for HostQueue<Outbox> {
    fn default() -> Self {
        Self {
            events: Mutex::default(),
            questions: Mutex::default(),
            outboxes: Mutex::default(),
            loop_thread: thread::current().id(),
            wake: OnceLock::new(),
            woken: AtomicBool::new(false),
        }
    }
}

impl<Outbox> HostQueue<Outbox> {
    /// Sets how other threads wake the loop (`wake` schedules a drain on the loop's thread);
    /// only the first call counts.
    pub fn set_wake(&self, wake: Wake) {
        let _ = self.wake.set(wake);
    }

    fn wake_loop(&self) {
        if thread::current().id() == self.loop_thread {
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
        self.wake_loop();
    }

    /// Takes everything queued. Anything queued after this wakes the loop again.
    pub fn take(&self) -> Queued<Outbox> {
        self.woken.store(false, Ordering::Release);
        Queued {
            outboxes: std::mem::take(&mut *self.outboxes.lock()),
            events: std::mem::take(&mut *self.events.lock()),
            questions: std::mem::take(&mut *self.questions.lock()),
        }
    }
}

/// What [`HostQueue::take`] took, in the order the host deals with it.
pub struct Queued<Outbox> {
    /// Outboxes with frames to flush.
    pub outboxes: Vec<Arc<Outbox>>,
    /// Events for the listeners.
    pub events: Vec<Event>,
    /// Questions for the hooks, answered through `Relay::decide`.
    pub questions: Vec<Question>,
}

impl<Outbox> Queued<Outbox> {
    /// Whether nothing was queued.
    pub fn is_empty(&self) -> bool {
        self.outboxes.is_empty() && self.events.is_empty() && self.questions.is_empty()
    }
}

/// Hooks that run on the host's loop: each question is queued for it, and answered later.
pub struct LoopHooks<Outbox> {
    /// The hooks the host has.
    pub decides: Decides,
    /// Where the questions wait for the loop.
    pub queue: Arc<HostQueue<Outbox>>,
}

impl<Outbox: Send + Sync> Hooks for LoopHooks<Outbox> {
    fn decides(&self) -> Decides {
        self.decides
    }

    fn ask(&self, question: Question) -> Option<Verdict> {
        self.queue.questions.lock().push(question);
        self.queue.wake_loop();
        None
    }
}

impl<Outbox: Send + Sync> EventSink for HostQueue<Outbox> {
    fn emit(&self, event: Event) {
        // The app reads history when it wants it, hears of channels through webhooks, and
        // of tokens about to expire from its clients.
        if matches!(event, Event::Published { .. } | Event::ChannelOccupied { .. } | Event::ChannelVacated { .. } | Event::TokenExpiring { .. }) {
            return;
        }
        self.events.lock().push(event);
        self.wake_loop();
    }
}
