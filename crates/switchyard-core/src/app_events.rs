//! What the app hears of the relay: every [`Event`] goes to its sink, and messages of the
//! types its `message` listeners watch are handed to it with their sender's ids. While no
//! type is watched, asking costs one atomic load.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::event::{Event, EventSink};

pub(crate) struct AppEvents {
    sink: Arc<dyn EventSink>,
    watched: RwLock<HashSet<Box<str>>>,
    /// Spares the lock while nothing is watched.
    any_watched: AtomicBool,
}

impl AppEvents {
    pub fn new(sink: Arc<dyn EventSink>) -> Self {
        Self { sink, watched: RwLock::default(), any_watched: AtomicBool::new(false) }
    }

    pub fn emit(&self, event: Event) {
        self.sink.emit(event);
    }

    pub fn watch(&self, kind: &str) {
        self.watched.write().insert(kind.into());
        self.any_watched.store(true, Ordering::Release);
    }

    pub fn watches(&self, kind: &str) -> bool {
        self.any_watched.load(Ordering::Acquire) && self.watched.read().contains(kind)
    }
}
