//! The message types the app's `message` listeners watch: a watched message is handed to
//! the app with its sender's ids. While none is watched, asking costs one atomic load.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::RwLock;

#[derive(Default)]
pub(crate) struct WatchedTypes {
    types: RwLock<HashSet<Box<str>>>,
    /// Spares the lock while nothing is watched.
    any: AtomicBool,
}

impl WatchedTypes {
    pub fn watch(&self, kind: &str) {
        self.types.write().insert(kind.into());
        self.any.store(true, Ordering::Release);
    }

    pub fn contains(&self, kind: &str) -> bool {
        self.any.load(Ordering::Acquire) && self.types.read().contains(kind)
    }
}
