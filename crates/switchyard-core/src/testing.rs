//! An [`Outbox`] and an [`EventSink`] that record, for tests of the relay and its transports.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::event::{Event, EventSink};
use crate::frame::Frame;
use crate::outbox::{Outbox, Pushed};

#[derive(Default)]
struct Recorded {
    frames: Vec<Frame>,
    queued_bytes: usize,
    closed: Option<(u16, String)>,
}

/// Keeps every frame pushed to it, up to `capacity` bytes (unbounded by default).
pub struct RecordingOutbox {
    capacity: usize,
    state: Mutex<Recorded>,
}

impl RecordingOutbox {
    /// An outbox with no bound: every push is queued.
    pub fn new() -> Arc<Self> {
        Self::with_capacity(usize::MAX)
    }

    /// An outbox that reports itself full past `capacity` queued bytes, until taken from.
    pub fn with_capacity(capacity: usize) -> Arc<Self> {
        Arc::new(Self { capacity, state: Mutex::new(Recorded::default()) })
    }

    /// Takes the frames received so far.
    pub fn take(&self) -> Vec<Frame> {
        let mut state = self.state.lock();
        state.queued_bytes = 0;
        std::mem::take(&mut state.frames)
    }

    /// Takes the text frames received so far, as strings.
    pub fn take_texts(&self) -> Vec<String> {
        self.take()
            .into_iter()
            .filter(|f| f.kind == crate::FrameKind::Text)
            .map(|f| String::from_utf8(f.payload.to_vec()).expect("text frames are UTF-8"))
            .collect()
    }

    /// The code and reason it was closed with; `None` while open.
    pub fn closed(&self) -> Option<(u16, String)> {
        self.state.lock().closed.clone()
    }
}

impl Outbox for RecordingOutbox {
    fn transport(&self) -> crate::Transport {
        crate::Transport::Native
    }

    fn push(&self, frame: Frame) -> Pushed {
        let mut state = self.state.lock();
        if state.closed.is_some() {
            return Pushed::Closed;
        }
        if state.queued_bytes.saturating_add(frame.len()) > self.capacity {
            return Pushed::Full;
        }
        state.queued_bytes += frame.len();
        state.frames.push(frame);
        Pushed::Queued
    }

    fn push_replay(&self, frame: Frame) {
        let mut state = self.state.lock();
        if state.closed.is_none() {
            state.queued_bytes += frame.len();
            state.frames.push(frame);
        }
    }

    fn close(&self, code: u16, reason: &str) {
        let mut state = self.state.lock();
        state.closed.get_or_insert_with(|| (code, reason.to_owned()));
    }
}

/// Keeps every event emitted.
#[derive(Default)]
pub struct RecordingEvents {
    events: Mutex<Vec<Event>>,
}

impl RecordingEvents {
    /// An empty recorder.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Takes the events emitted so far.
    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut self.events.lock())
    }
}

impl EventSink for RecordingEvents {
    fn emit(&self, event: Event) {
        self.events.lock().push(event);
    }
}
