//! Requests waiting for the app's answer: each has a deadline, after which the client is
//! told `REQUEST_TIMEOUT` and a late answer is dropped.

use std::sync::atomic::{AtomicBool, Ordering};

use dashmap::DashMap;

use crate::error::{ErrorCode, MessageRejection};
use crate::ids::{ConnId, Millis};

/// A request: its `requestId`, as raw JSON (`"abc"` or `42`), and its deadline.
struct Waiting {
    id: Box<str>,
    deadline: Millis,
}

pub(crate) struct Requests {
    by_conn: DashMap<ConnId, Vec<Waiting>>,
    /// Requests one connection may wait on at once; more are refused.
    max_per_conn: usize,
    /// Whether the app has a request handler; without one, requests get `NO_HANDLER`.
    answered: AtomicBool,
}

impl Requests {
    pub fn new(max_per_conn: usize) -> Self {
        Self { by_conn: DashMap::new(), max_per_conn, answered: AtomicBool::new(false) }
    }

    pub fn set_answered(&self, answered: bool) {
        self.answered.store(answered, Ordering::Relaxed);
    }

    pub fn answered(&self) -> bool {
        self.answered.load(Ordering::Relaxed)
    }

    pub fn start(&self, conn: ConnId, id: &str, deadline: Millis) -> Result<(), MessageRejection> {
        let mut waiting = self.by_conn.entry(conn).or_default();
        if waiting.iter().any(|w| &*w.id == id) {
            return Err(MessageRejection::new(ErrorCode::InvalidMessage, "A request with this requestId is already waiting"));
        }
        if waiting.len() >= self.max_per_conn {
            return Err(MessageRejection::new(ErrorCode::RequestFailed, "Too many requests are waiting on this connection"));
        }
        waiting.push(Waiting { id: id.into(), deadline });
        Ok(())
    }

    /// Takes the request off the waiting list; false when it timed out or its connection left.
    pub fn finish(&self, conn: ConnId, id: &str) -> bool {
        let mut found = false;
        self.by_conn.remove_if_mut(&conn, |_, waiting| {
            let before = waiting.len();
            waiting.retain(|w| &*w.id != id);
            found = waiting.len() < before;
            waiting.is_empty()
        });
        found
    }

    /// Takes every request past its deadline.
    pub fn expire(&self, now: Millis) -> Vec<(ConnId, Box<str>)> {
        let mut expired = Vec::new();
        self.by_conn.retain(|conn, waiting| {
            waiting.retain(|w| {
                let late = now >= w.deadline;
                if late {
                    expired.push((*conn, w.id.clone()));
                }
                !late
            });
            !waiting.is_empty()
        });
        expired
    }

    pub fn forget(&self, conn: ConnId) {
        self.by_conn.remove(&conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 256;

    #[test]
    fn finishes_once_and_expires_by_deadline() {
        let requests = Requests::new(MAX);
        requests.start(ConnId(1), "\"a\"", 100).unwrap();
        requests.start(ConnId(1), "7", 200).unwrap();
        assert_eq!(requests.start(ConnId(1), "7", 300).unwrap_err().code, ErrorCode::InvalidMessage);
        assert!(requests.finish(ConnId(1), "\"a\""));
        assert!(!requests.finish(ConnId(1), "\"a\""));
        assert_eq!(requests.expire(199), vec![]);
        assert_eq!(requests.expire(200), vec![(ConnId(1), "7".into())]);
        assert!(!requests.finish(ConnId(1), "7"), "a late answer finds nothing");
    }

    #[test]
    fn bounds_requests_per_connection() {
        let requests = Requests::new(MAX);
        for i in 0..MAX {
            requests.start(ConnId(1), &i.to_string(), 100).unwrap();
        }
        assert_eq!(requests.start(ConnId(1), "x", 100).unwrap_err().code, ErrorCode::RequestFailed);
        requests.forget(ConnId(1));
        assert!(requests.start(ConnId(1), "x", 100).is_ok());
    }
}
