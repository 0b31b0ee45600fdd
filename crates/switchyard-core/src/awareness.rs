//! Focus awareness (the focus declaration protocol): which case each window of a user has
//! open, and the warnings when a user has more than one case open.
//!
//! A registration is a (user, window) pair bound to the connection that registered it.
//! Every change returns what must be said and to whom; the relay delivers it.
//!
//! A user holds at most `maxWindowsPerUser` registrations. Every warning lists all
//! of them and goes to all of the user's connections, so without a cap one client
//! registering made-up windows would make each `register` cost more than the last.

use std::sync::Arc;

use dashmap::DashMap;
use serde::Serialize;

use crate::error::{ErrorCode, MessageRejection};
use crate::frame::Frame;
use crate::ids::{ConnId, Millis};

/// Who hears a notice.
#[derive(Debug, PartialEq)]
pub(crate) enum Audience {
    /// One connection.
    Conn(ConnId),
    /// Every connection of the user.
    User(Arc<str>),
}

pub(crate) type Notices = Vec<(Audience, Frame)>;

struct Window {
    id: String,
    case_id: String,
    conn: ConnId,
    last_heartbeat: Millis,
    /// Order of registration: the most recent is the highest.
    registered: u64,
}

#[derive(Default)]
struct UserWindows {
    windows: Vec<Window>,
    /// The window that last sent `focus`.
    focused: Option<String>,
}

impl UserWindows {
    fn distinct_cases(&self) -> usize {
        let mut cases: Vec<&str> = self.windows.iter().map(|w| w.case_id.as_str()).collect();
        cases.sort_unstable();
        cases.dedup();
        cases.len()
    }

    fn cases(&self) -> Vec<CaseWindow<'_>> {
        let mut windows: Vec<&Window> = self.windows.iter().collect();
        windows.sort_by_key(|w| w.registered);
        windows.into_iter().map(|w| CaseWindow { case_id: &w.case_id, window_id: &w.id }).collect()
    }
}

#[derive(Serialize)]
struct CaseWindow<'a> {
    #[serde(rename = "caseId")]
    case_id: &'a str,
    #[serde(rename = "windowId")]
    window_id: &'a str,
}

#[derive(Serialize)]
#[serde(tag = "type")]
enum Message<'a> {
    #[serde(rename = "registered")]
    Registered { payload: CaseWindow<'a> },
    #[serde(rename = "warning")]
    Warning { payload: Warning<'a> },
    #[serde(rename = "warning_cleared")]
    WarningCleared { payload: Cleared<'a> },
}

#[derive(Serialize)]
#[serde(tag = "type")]
enum Warning<'a> {
    #[serde(rename = "multi-case")]
    MultiCase { cases: Vec<CaseWindow<'a>>, message: &'static str },
    #[serde(rename = "case-mismatch")]
    CaseMismatch {
        #[serde(rename = "caseId")]
        case_id: &'a str,
        #[serde(rename = "windowId")]
        window_id: &'a str,
        cases: Vec<CaseWindow<'a>>,
        message: &'static str,
    },
}

#[derive(Serialize)]
struct Cleared<'a> {
    cases: Vec<CaseWindow<'a>>,
}

/// `warning_cleared`, with the cases the user has left.
fn cleared(windows: &UserWindows) -> Frame {
    frame(&Message::WarningCleared { payload: Cleared { cases: windows.cases() } })
}

fn frame(message: &Message) -> Frame {
    Frame::text(serde_json::to_vec(message).expect("awareness messages serialize"))
}

/// A window's registration, as `register` gives it.
pub(crate) struct Registration<'a> {
    pub user: &'a Arc<str>,
    pub window_id: &'a str,
    pub case_id: &'a str,
}

pub(crate) struct Awareness {
    users: DashMap<Arc<str>, UserWindows>,
    next_registration: std::sync::atomic::AtomicU64,
    max_windows_per_user: usize,
}

impl Awareness {
    pub fn new(max_windows_per_user: usize) -> Self {
        Self { users: DashMap::new(), next_registration: Default::default(), max_windows_per_user }
    }

    /// Stores or replaces the registration, bound to `conn`: answers `registered`, then
    /// the warnings it causes. A new window past the user's most is refused
    /// with `WINDOW_LIMIT`.
    pub fn register(&self, registration: Registration, conn: ConnId, now: Millis) -> Result<Notices, MessageRejection> {
        let Registration { user, window_id, case_id } = registration;
        let mut windows = self.users.entry(user.clone()).or_default();
        let count = windows.windows.len();
        let cases_before = windows.distinct_cases();
        windows.windows.retain(|w| w.id != window_id);
        if count == windows.windows.len() && count >= self.max_windows_per_user {
            return Err(ErrorCode::WindowLimit.into());
        }
        let order = self.next_registration.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        windows.windows.push(Window { id: window_id.into(), case_id: case_id.into(), conn, last_heartbeat: now, registered: order });

        let mut notices: Notices = vec![(
            Audience::Conn(conn),
            frame(&Message::Registered { payload: CaseWindow { case_id, window_id } }),
        )];
        let cases_after = windows.distinct_cases();
        if cases_after >= 2 {
            let warning = Warning::MultiCase { cases: windows.cases(), message: "Multiple cases are open in this session" };
            notices.push((Audience::User(user.clone()), frame(&Message::Warning { payload: warning })));
        } else if cases_before >= 2 {
            // The window switched to the case the others show: the user is back to one.
            notices.push((Audience::User(user.clone()), cleared(&windows)));
        }
        let focused = windows
            .focused
            .as_deref()
            .filter(|focused| *focused != window_id)
            .and_then(|focused| windows.windows.iter().find(|w| w.id == focused))
            .or_else(|| windows.windows.iter().filter(|w| w.id != window_id).max_by_key(|w| w.registered));
        if focused.is_some_and(|f| f.case_id != case_id) {
            let warning = frame(&Message::Warning {
                payload: Warning::CaseMismatch {
                    case_id,
                    window_id,
                    cases: windows.cases(),
                    message: "Another case was opened in a different window",
                },
            });
            let others = windows.windows.iter().filter(|w| w.id != window_id && w.case_id != case_id);
            notices.extend(others.map(|w| (Audience::Conn(w.conn), warning.clone())));
        }
        Ok(notices)
    }

    pub fn focus(&self, user: &str, window_id: &str) {
        if let Some(mut windows) = self.users.get_mut(user) {
            if windows.windows.iter().any(|w| w.id == window_id) {
                windows.focused = Some(window_id.to_owned());
            }
        }
    }

    pub fn heartbeat(&self, user: &str, window_id: &str, now: Millis) {
        if let Some(mut windows) = self.users.get_mut(user) {
            if let Some(window) = windows.windows.iter_mut().find(|w| w.id == window_id) {
                window.last_heartbeat = now;
            }
        }
    }

    pub fn deregister(&self, user: &str, window_id: &str) -> Notices {
        self.remove(user, |w| w.id == window_id)
    }

    /// Forgets every registration bound to a closed connection.
    pub fn connection_closed(&self, user: &str, conn: ConnId) -> Notices {
        self.remove(user, |w| w.conn == conn)
    }

    /// Forgets registrations whose last heartbeat is `timeout` old or older.
    pub fn expire(&self, now: Millis, timeout: Millis) -> Notices {
        let stale = |w: &Window| now.saturating_sub(w.last_heartbeat) >= timeout;
        // Runs every tick: a shared look first, so only users with a stale window are locked.
        let users: Vec<Arc<str>> = self.users.iter().filter(|u| u.windows.iter().any(stale)).map(|u| u.key().clone()).collect();
        users.iter().flat_map(|user| self.remove(user, stale)).collect()
    }

    /// Removes the user's windows that `gone` picks; tells the user when that ends a
    /// multi-case warning.
    fn remove(&self, user: &str, gone: impl Fn(&Window) -> bool) -> Notices {
        let mut notices = Notices::new();
        self.users.remove_if_mut(user, |key, windows| {
            let before = windows.distinct_cases();
            let count = windows.windows.len();
            windows.windows.retain(|w| !gone(w));
            if windows.windows.len() < count && before >= 2 && windows.distinct_cases() <= 1 {
                notices.push((Audience::User(key.clone()), cleared(windows)));
            }
            if windows.focused.as_deref().is_some_and(|f| !windows.windows.iter().any(|w| w.id == f)) {
                windows.focused = None;
            }
            windows.windows.is_empty()
        });
        notices
    }

    pub fn registrations(&self) -> usize {
        self.users.iter().map(|u| u.windows.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    const MAX_WINDOWS: usize = 64;

    fn user(name: &str) -> Arc<str> {
        name.into()
    }

    fn register(awareness: &Awareness, who: &Arc<str>, window: &str, case: &str, conn: u64, now: Millis) -> Vec<(String, Value)> {
        show(awareness.register(Registration { user: who, window_id: window, case_id: case }, ConnId(conn), now).unwrap())
    }

    fn show(notices: Notices) -> Vec<(String, Value)> {
        notices
            .into_iter()
            .map(|(audience, frame)| {
                let to = match audience {
                    Audience::Conn(c) => format!("conn {}", c.0),
                    Audience::User(u) => format!("user {u}"),
                };
                (to, serde_json::from_slice(&frame.payload).unwrap())
            })
            .collect()
    }

    #[test]
    fn a_first_registration_is_answered_and_warns_no_one() {
        let awareness = Awareness::new(MAX_WINDOWS);
        let alice = user("alice");
        assert_eq!(
            register(&awareness, &alice, "w1", "CASE-1", 1, 0),
            vec![("conn 1".into(), json!({"type":"registered","payload":{"caseId":"CASE-1","windowId":"w1"}}))]
        );
        assert_eq!(register(&awareness, &alice, "w2", "CASE-1", 2, 0).len(), 1, "the same case twice is fine");
    }

    #[test]
    fn a_second_case_warns_the_user_and_the_windows_showing_another_case() {
        let awareness = Awareness::new(MAX_WINDOWS);
        let alice = user("alice");
        register(&awareness, &alice, "w1", "CASE-1", 1, 0);
        let notices = register(&awareness, &alice, "w2", "CASE-2", 2, 0);
        let cases = json!([{"caseId":"CASE-1","windowId":"w1"},{"caseId":"CASE-2","windowId":"w2"}]);
        assert_eq!(notices[1], ("user alice".into(), json!({"type":"warning","payload":{"type":"multi-case","cases":cases,"message":"Multiple cases are open in this session"}})));
        assert_eq!(
            notices[2],
            ("conn 1".into(), json!({"type":"warning","payload":{"type":"case-mismatch","caseId":"CASE-2","windowId":"w2","cases":cases,"message":"Another case was opened in a different window"}}))
        );
        assert_eq!(notices.len(), 3);
    }

    #[test]
    fn case_mismatch_follows_the_focused_window() {
        let awareness = Awareness::new(MAX_WINDOWS);
        let alice = user("alice");
        register(&awareness, &alice, "w1", "CASE-1", 1, 0);
        register(&awareness, &alice, "w2", "CASE-2", 2, 0);
        awareness.focus("alice", "w2");
        // w3 opens CASE-2, the focused window's case: no mismatch, only multi-case.
        let notices = register(&awareness, &alice, "w3", "CASE-2", 3, 0);
        assert!(notices.iter().all(|(_, m)| m["payload"]["type"] != "case-mismatch"), "{notices:?}");
        // Focused on w1 (CASE-1), w3 switches to CASE-3: w1 and w2 show other cases and are told.
        awareness.focus("alice", "w1");
        let notices = register(&awareness, &alice, "w3", "CASE-3", 3, 0);
        let told: Vec<&str> =
            notices.iter().filter(|(_, m)| m["payload"]["type"] == "case-mismatch").map(|(to, _)| to.as_str()).collect();
        assert_eq!(told, ["conn 1", "conn 2"]);
    }

    #[test]
    fn removal_clears_the_warning_when_one_case_is_left() {
        let awareness = Awareness::new(MAX_WINDOWS);
        let alice = user("alice");
        register(&awareness, &alice, "w1", "CASE-1", 1, 0);
        register(&awareness, &alice, "w2", "CASE-2", 2, 0);
        register(&awareness, &alice, "w3", "CASE-3", 3, 0);
        assert!(awareness.deregister("alice", "w3").is_empty(), "two cases still open");
        let cleared = show(awareness.connection_closed("alice", ConnId(2)));
        assert_eq!(
            cleared,
            vec![("user alice".into(), json!({"type":"warning_cleared","payload":{"cases":[{"caseId":"CASE-1","windowId":"w1"}]}}))]
        );
        assert!(awareness.deregister("alice", "w1").is_empty(), "no warning was standing");
        assert_eq!(awareness.registrations(), 0);
    }

    #[test]
    fn stale_registrations_expire_by_their_last_heartbeat() {
        let awareness = Awareness::new(MAX_WINDOWS);
        let alice = user("alice");
        register(&awareness, &alice, "w1", "CASE-1", 1, 0);
        register(&awareness, &alice, "w2", "CASE-2", 2, 0);
        awareness.heartbeat("alice", "w1", 50);
        assert!(awareness.expire(99, 100).is_empty());
        let cleared = show(awareness.expire(100, 100));
        assert_eq!(cleared[0].1["type"], "warning_cleared", "w2 went stale");
        assert_eq!(awareness.registrations(), 1);
        assert!(awareness.expire(150, 100).is_empty());
        assert_eq!(awareness.registrations(), 0);
    }

    #[test]
    fn a_window_registering_again_replaces_its_registration() {
        let awareness = Awareness::new(MAX_WINDOWS);
        let alice = user("alice");
        register(&awareness, &alice, "w1", "CASE-1", 1, 0);
        register(&awareness, &alice, "w1", "CASE-2", 7, 0);
        assert_eq!(awareness.registrations(), 1);
        assert!(awareness.connection_closed("alice", ConnId(1)).is_empty());
        assert_eq!(awareness.registrations(), 1, "bound to the new connection now");
    }

    #[test]
    fn a_window_switching_to_the_other_windows_case_clears_the_warning() {
        let awareness = Awareness::new(MAX_WINDOWS);
        let alice = user("alice");
        register(&awareness, &alice, "w1", "CASE-1", 1, 0);
        register(&awareness, &alice, "w2", "CASE-2", 2, 0);
        assert_eq!(
            register(&awareness, &alice, "w2", "CASE-1", 2, 0),
            vec![
                ("conn 2".into(), json!({"type":"registered","payload":{"caseId":"CASE-1","windowId":"w2"}})),
                ("user alice".into(), json!({"type":"warning_cleared","payload":{"cases":[{"caseId":"CASE-1","windowId":"w1"},{"caseId":"CASE-1","windowId":"w2"}]}})),
            ]
        );
        assert_eq!(register(&awareness, &alice, "w1", "CASE-1", 1, 0).len(), 1, "one case before and after: nothing to clear");
    }

    #[test]
    fn a_user_past_the_window_limit_may_replace_a_window_but_not_add_one() {
        let awareness = Awareness::new(MAX_WINDOWS);
        let alice = user("alice");
        for i in 0..MAX_WINDOWS {
            register(&awareness, &alice, &format!("w{i}"), "CASE-1", 1, 0);
        }
        let one_more = Registration { user: &alice, window_id: "extra", case_id: "CASE-1" };
        assert_eq!(awareness.register(one_more, ConnId(1), 0).unwrap_err().code, ErrorCode::WindowLimit);
        assert_eq!(register(&awareness, &alice, "w0", "CASE-2", 1, 0)[0].1["type"], "registered", "w0 replaced");
        assert_eq!(awareness.registrations(), MAX_WINDOWS);
        register(&awareness, &user("bob"), "w0", "CASE-1", 2, 0);
        awareness.deregister("alice", "w1");
        assert_eq!(register(&awareness, &alice, "extra", "CASE-1", 1, 0)[0].1["type"], "registered");
    }
}
