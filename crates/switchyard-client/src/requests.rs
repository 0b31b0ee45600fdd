//! Requests waiting for their `response`: ids to send, and matching what comes back.

use std::collections::HashMap;

/// Requests sent and not yet answered, each holding whatever settles it (in the browser,
/// the Promise's `resolve` and `reject`).
pub struct Requests<T> {
    next: u64,
    waiting: HashMap<String, T>,
}

impl<T> Default for Requests<T> {
    fn default() -> Self {
        Self { next: 0, waiting: HashMap::new() }
    }
}

impl<T> Requests<T> {
    /// A fresh `requestId`, now waiting with `settle`.
    pub fn start(&mut self, settle: T) -> String {
        self.next += 1;
        let id = format!("r{}", self.next);
        self.waiting.insert(id.clone(), settle);
        id
    }

    /// Takes the waiting request with this id: its response arrived, or it timed out.
    pub fn take(&mut self, id: &str) -> Option<T> {
        self.waiting.remove(id)
    }

    /// Takes every waiting request (the client is closing).
    pub fn take_all(&mut self) -> Vec<T> {
        self.waiting.drain().map(|(_, settle)| settle).collect()
    }

    /// How many requests wait for their response.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether no request waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_answers_by_id_in_any_order_and_once() {
        let mut requests = Requests::default();
        let first = requests.start("first");
        let second = requests.start("second");
        assert_ne!(first, second);
        assert_eq!(requests.take(&second), Some("second"));
        assert_eq!(requests.take(&second), None, "settled once");
        assert_eq!(requests.take("r999"), None);
        assert_eq!(requests.take(&first), Some("first"));
        requests.start("third");
        assert_eq!(requests.take_all(), ["third"]);
        assert!(requests.is_empty());
    }
}
