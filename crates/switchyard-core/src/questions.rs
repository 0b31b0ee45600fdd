//! The questions the relay asks the application ([`Hooks`]), and the messages held while
//! it decides: per connection, the message whose question is out and the messages that
//! came after it, handled in order once it is answered. A
//! connection has an entry only while something of its waits or is being handled, and the
//! entry says who handles it, so two threads never handle one connection's messages at
//! once (a transport's thread as they arrive, an answer's thread as it resumes them).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use crate::frame::Frame;
use crate::hooks::{Decides, Hooks, Verdict};
use crate::ids::{ConnId, Millis};

/// Messages one connection may have waiting for the application, the one asked about
/// included; the next is refused `RATE_LIMITED`.
pub(crate) const MAX_HELD_PER_CONNECTION: usize = 256;

/// Who the relay asks, what about, and what waits for the answers.
pub(crate) struct Questions {
    pub hooks: Arc<dyn Hooks>,
    /// What `hooks` decides, read once.
    pub decides: Decides,
    /// Whether an answer may come later, so that messages are held: `hooks` decides something.
    pub holding: bool,
    pub held: HeldMessages,
    next_id: AtomicU64,
}

impl Questions {
    pub fn new(hooks: Arc<dyn Hooks>) -> Self {
        let decides = hooks.decides();
        Self { hooks, decides, holding: decides.join || decides.publish, held: HeldMessages::new(MAX_HELD_PER_CONNECTION), next_id: AtomicU64::new(1) }
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// The message a question is out for.
pub(crate) struct Asking {
    pub question: u64,
    pub frame: Frame,
    pub asked_at: Millis,
    deadline: Millis,
}

#[derive(Default)]
struct Held {
    asking: Option<Asking>,
    /// The answer to `asking`, when it came before the thread that asked was done.
    answer: Option<Verdict>,
    queued: VecDeque<Frame>,
    /// A thread is handling this connection's messages, and takes the next queued one
    /// when it is done.
    handling: bool,
}

impl Held {
    /// Takes the question out for the caller to handle with `verdict`, or, while the thread
    /// that asked still runs, leaves `verdict` for it.
    fn settle(&mut self, verdict: Verdict) -> Option<(Asking, Verdict)> {
        if self.handling {
            self.answer = Some(verdict);
            return None;
        }
        self.handling = true;
        Some((self.asking.take()?, verdict))
    }
}

/// What became of a message that arrived.
pub(crate) enum Arrival {
    /// Handle it now: nothing of its connection waits.
    Handle(Frame),
    /// Queued behind a question or a message being handled.
    Queued,
    /// Refused: the most messages already wait on its connection.
    Full,
}

/// What the thread handling a connection does next.
pub(crate) enum Next {
    /// Handle a message that waited.
    Message(Frame),
    /// Handle the message a question was about, with its answer.
    Answered(Asking, Verdict),
}

pub(crate) struct HeldMessages {
    by_conn: DashMap<ConnId, Held>,
    /// Messages one connection may have waiting, the one asked about included.
    max_per_conn: usize,
}

impl HeldMessages {
    pub fn new(max_per_conn: usize) -> Self {
        Self { by_conn: DashMap::new(), max_per_conn }
    }

    pub fn arrive(&self, conn: ConnId, frame: Frame) -> Arrival {
        let mut held = self.by_conn.entry(conn).or_default();
        if !held.handling && held.asking.is_none() {
            held.handling = true;
            return Arrival::Handle(frame);
        }
        if held.queued.len() + usize::from(held.asking.is_some()) >= self.max_per_conn {
            return Arrival::Full;
        }
        held.queued.push_back(frame);
        Arrival::Queued
    }

    /// What the thread handling the connection does next; `None` once a question is out
    /// (the thread is then done) or nothing waits (the entry is then gone).
    pub fn next(&self, conn: ConnId) -> Option<Next> {
        let mut next = None;
        self.by_conn.remove_if_mut(&conn, |_, held| {
            if held.asking.is_some() {
                match held.answer.take() {
                    Some(verdict) => next = held.asking.take().map(|asking| Next::Answered(asking, verdict)),
                    None => held.handling = false,
                }
                return false;
            }
            next = held.queued.pop_front().map(Next::Message);
            next.is_none()
        });
        next
    }

    /// Holds the message being handled until `question` is answered.
    pub fn ask(&self, conn: ConnId, question: u64, frame: Frame, now: Millis, timeout_ms: u64) {
        if let Some(mut held) = self.by_conn.get_mut(&conn) {
            held.asking = Some(Asking { question, frame, asked_at: now, deadline: now.saturating_add(timeout_ms) });
        }
    }

    /// The question was answered as it was asked: nothing is held for it.
    pub fn withdraw(&self, conn: ConnId, question: u64) {
        if let Some(mut held) = self.by_conn.get_mut(&conn) {
            if held.asking.as_ref().is_some_and(|asking| asking.question == question) {
                held.asking = None;
            }
        }
    }

    /// The answer to `question`: the message it was about, for the caller to handle and
    /// then the messages queued behind it; `None` when the question is no longer out, or
    /// when the thread that asked is still running (it takes the answer then).
    pub fn answer(&self, conn: ConnId, question: u64, verdict: Verdict) -> Option<(Asking, Verdict)> {
        let mut held = self.by_conn.get_mut(&conn)?;
        if held.asking.as_ref()?.question != question {
            return None;
        }
        held.settle(verdict)
    }

    /// Gives up on every question out past its deadline, as if answered `Unavailable`.
    pub fn expire(&self, now: Millis) -> Vec<(ConnId, Asking)> {
        let mut expired = Vec::new();
        for mut held in self.by_conn.iter_mut() {
            if held.answer.is_none() && held.asking.as_ref().is_some_and(|asking| now >= asking.deadline) {
                if let Some((asking, _)) = held.settle(Verdict::Unavailable) {
                    expired.push((*held.key(), asking));
                }
            }
        }
        expired
    }

    pub fn forget(&self, conn: ConnId) {
        self.by_conn.remove(&conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: ConnId = ConnId(1);

    fn text(s: &str) -> Frame {
        Frame::text(s.as_bytes().to_vec())
    }

    fn payload(next: Option<Next>) -> Option<String> {
        let frame = match next? {
            Next::Message(frame) => frame,
            Next::Answered(asking, _) => asking.frame,
        };
        Some(String::from_utf8(frame.payload.to_vec()).unwrap())
    }

    fn answered(answer: Option<(Asking, Verdict)>) -> Option<String> {
        answer.map(|(asking, _)| String::from_utf8(asking.frame.payload.to_vec()).unwrap())
    }

    #[test]
    fn keeps_order_behind_a_question_and_resumes_on_its_answer() {
        let held = HeldMessages::new(3);
        assert!(matches!(held.arrive(C, text("a")), Arrival::Handle(_)));
        assert!(matches!(held.arrive(C, text("b")), Arrival::Queued), "a is being handled");
        held.ask(C, 7, text("a"), 100, 50);
        assert_eq!(payload(held.next(C)), None, "the handler stops at the question");
        assert!(matches!(held.arrive(C, text("c")), Arrival::Queued));
        assert!(matches!(held.arrive(C, text("d")), Arrival::Full), "a, b and c wait: three is the most");
        assert!(held.answer(C, 8, Verdict::Allow).is_none(), "another question's answer");
        assert_eq!(answered(held.answer(C, 7, Verdict::Allow)), Some("a".into()));
        assert!(held.answer(C, 7, Verdict::Allow).is_none(), "answered once");
        assert!(matches!(held.arrive(C, text("e")), Arrival::Queued), "the answer's thread is handling");
        assert_eq!(payload(held.next(C)), Some("b".into()));
        assert_eq!(payload(held.next(C)), Some("c".into()));
        assert_eq!(payload(held.next(C)), Some("e".into()));
        assert_eq!(payload(held.next(C)), None);
        assert!(matches!(held.arrive(C, text("f")), Arrival::Handle(_)), "nothing waits any more");
    }

    #[test]
    fn expires_questions_past_their_deadline() {
        let held = HeldMessages::new(256);
        let _ = held.arrive(C, text("a"));
        held.ask(C, 1, text("a"), 100, 50);
        assert!(held.next(C).is_none());
        assert!(held.expire(149).is_empty());
        let expired = held.expire(150);
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].1.question, 1);
        assert!(held.answer(C, 1, Verdict::Allow).is_none(), "a late answer finds nothing");
    }

    #[test]
    fn an_answer_that_overtakes_the_asking_thread_is_left_for_it() {
        let held = HeldMessages::new(256);
        let _ = held.arrive(C, text("a"));
        held.ask(C, 1, text("a"), 100, 50);
        assert!(held.answer(C, 1, Verdict::Refuse(None)).is_none(), "the asking thread still runs");
        assert!(matches!(held.next(C), Some(Next::Answered(asking, Verdict::Refuse(None))) if asking.question == 1));
        assert!(held.next(C).is_none());
        assert!(matches!(held.arrive(C, text("b")), Arrival::Handle(_)));
    }

    #[test]
    fn an_answer_given_at_once_holds_nothing() {
        let held = HeldMessages::new(256);
        let _ = held.arrive(C, text("a"));
        held.ask(C, 1, text("a"), 100, 50);
        held.withdraw(C, 1);
        assert!(held.next(C).is_none());
        assert!(held.expire(1_000).is_empty());
        assert!(matches!(held.arrive(C, text("b")), Arrival::Handle(_)));
    }
}
