//! Messages sent while the connection is down: they wait, in order, in a bounded queue
//! and go out when it is back.

use std::collections::VecDeque;

/// Messages waiting for the connection; at most `limit` of them.
pub struct Outgoing {
    waiting: VecDeque<String>,
    limit: usize,
}

/// The queue is full: the message was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub struct QueueFull {
    /// How many messages the queue holds at most.
    pub limit: usize,
}

impl std::fmt::Display for QueueFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the connection is down and {} messages already wait for it; this one was not sent", self.limit)
    }
}

impl Outgoing {
    /// An empty queue that holds at most `limit` messages.
    pub fn new(limit: usize) -> Self {
        Self { waiting: VecDeque::new(), limit }
    }

    /// Queues a message behind those waiting; refused when `limit` already wait.
    pub fn push(&mut self, message: String) -> Result<(), QueueFull> {
        if self.waiting.len() >= self.limit {
            return Err(QueueFull { limit: self.limit });
        }
        self.waiting.push_back(message);
        Ok(())
    }

    /// Puts `messages`, accepted earlier but not delivered (a connection ended with them
    /// unsent), back at the front, in order, ahead of everything waiting. They were
    /// accepted, so they are kept even past the limit: new messages are refused until the
    /// queue is below it again.
    pub fn requeue(&mut self, messages: Vec<String>) {
        for message in messages.into_iter().rev() {
            self.waiting.push_front(message);
        }
    }

    /// Takes everything waiting, oldest first.
    pub fn drain(&mut self) -> impl Iterator<Item = String> + '_ {
        self.waiting.drain(..)
    }

    /// Drops everything waiting (the connection is over for good).
    pub fn clear(&mut self) {
        self.waiting.clear();
    }

    /// How many messages wait.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether no message waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_refuses_past_its_limit() {
        let mut queue = Outgoing::new(2);
        queue.push("a".into()).unwrap();
        queue.push("b".into()).unwrap();
        assert_eq!(queue.push("c".into()), Err(QueueFull { limit: 2 }));
        assert_eq!(queue.drain().collect::<Vec<_>>(), ["a", "b"]);
        assert!(queue.is_empty());
        queue.push("d".into()).unwrap();
        assert_eq!(queue.len(), 1);
    }

    #[test]
    fn requeues_what_went_undelivered_first_even_past_its_limit() {
        let mut queue = Outgoing::new(2);
        queue.push("c".into()).unwrap();
        queue.requeue(vec!["a".into(), "b".into()]);
        assert_eq!(queue.push("d".into()), Err(QueueFull { limit: 2 }));
        assert_eq!(queue.drain().collect::<Vec<_>>(), ["a", "b", "c"]);
    }
}
