//! Control roles (`enableRoleManagement`): at most one member of a session is `active`;
//! the others are `passive` and ask for control, which the active member grants or
//! declines, or the server grants when nobody holds it.
//!
//! A pure state machine per session: each step returns the messages to send, and the
//! relay delivers them.

use serde_json::value::RawValue;
use serde_json::json;

use crate::config::ConflictResolution;
use crate::error::{ErrorCode, Rejection};
use crate::frame::Frame;
use crate::ids::{ConnId, Millis};
use crate::protocol::{self, SERVER_CLIENT_ID};

/// Where a control message goes.
#[derive(Debug, PartialEq)]
pub(crate) enum Send {
    To(ConnId, Frame),
    All(Frame),
}

#[derive(Default, Debug)]
pub(crate) struct Control {
    pub active: Option<ConnId>,
    /// A member asked the active one for control and waits for the answer.
    pub requester: Option<ConnId>,
}

fn data(value: serde_json::Value) -> Box<RawValue> {
    serde_json::value::to_raw_value(&value).expect("JSON values serialize")
}

/// Names a member by its `clientId`.
pub(crate) trait Names {
    fn client_id(&self, conn: ConnId) -> String;
}

impl Control {
    fn granted(&mut self, to: ConnId, by: &str, names: &dyn Names, now: Millis) -> Vec<Send> {
        let previous = self.active.replace(to);
        self.requester = None;
        vec![
            Send::To(to, protocol::control("accept_control", by, &data(json!({ "granted": true })), now)),
            Send::All(role_changed(Some(to), previous, names, now)),
        ]
    }

    /// `request_control` from `from`.
    pub fn request(&mut self, from: ConnId, body: Option<&RawValue>, policy: ConflictResolution, names: &dyn Names, now: Millis) -> Vec<Send> {
        let decline = |reason: &str| {
            vec![Send::To(
                from,
                protocol::control("decline_control", SERVER_CLIENT_ID, &data(json!({ "granted": false, "reason": reason })), now),
            )]
        };
        match self.active {
            None => self.granted(from, SERVER_CLIENT_ID, names, now),
            Some(active) if active == from => {
                vec![Send::To(from, protocol::control("accept_control", SERVER_CLIENT_ID, &data(json!({ "granted": true })), now))]
            }
            Some(_) if self.requester.is_some() => decline("transfer_in_progress"),
            Some(_) if policy == ConflictResolution::Deny => decline("control_held"),
            Some(active) => {
                self.requester = Some(from);
                let body = body.map_or_else(|| data(json!({})), ToOwned::to_owned);
                vec![Send::To(active, protocol::control("request_control", &names.client_id(from), &body, now))]
            }
        }
    }

    fn pending_transfer(&self, from: ConnId) -> Result<ConnId, Rejection> {
        if self.active != Some(from) {
            return Err(ErrorCode::NotActive.into());
        }
        self.requester.ok_or_else(|| Rejection::new(ErrorCode::InvalidMessage, "No control request is waiting"))
    }

    /// `accept_control` from the active member: the requester becomes active.
    pub fn accept(&mut self, from: ConnId, names: &dyn Names, now: Millis) -> Result<Vec<Send>, Rejection> {
        let requester = self.pending_transfer(from)?;
        Ok(self.granted(requester, &names.client_id(from), names, now))
    }

    /// `decline_control` from the active member: the requester is told, roles stay.
    pub fn decline(&mut self, from: ConnId, body: Option<&RawValue>, names: &dyn Names, now: Millis) -> Result<Vec<Send>, Rejection> {
        let requester = self.pending_transfer(from)?;
        self.requester = None;
        let body = body.map_or_else(|| data(json!({ "granted": false })), ToOwned::to_owned);
        Ok(vec![Send::To(requester, protocol::control("decline_control", &names.client_id(from), &body, now))])
    }

    /// `release_control` from the active member: a waiting requester gets control, else nobody holds it.
    pub fn release(&mut self, from: ConnId, names: &dyn Names, now: Millis) -> Result<Vec<Send>, Rejection> {
        if self.active != Some(from) {
            return Err(ErrorCode::NotActive.into());
        }
        Ok(self.vacate(names, now))
    }

    /// A member left; returns whether it was active, and what the others must hear.
    pub fn left(&mut self, conn: ConnId, names: &dyn Names, now: Millis) -> (bool, Vec<Send>) {
        if self.requester == Some(conn) {
            self.requester = None;
        }
        if self.active != Some(conn) {
            return (false, Vec::new());
        }
        (true, self.vacate(names, now))
    }

    fn vacate(&mut self, names: &dyn Names, now: Millis) -> Vec<Send> {
        match self.requester {
            Some(requester) => self.granted(requester, SERVER_CLIENT_ID, names, now),
            None => {
                let previous = self.active.take();
                vec![Send::All(role_changed(None, previous, names, now))]
            }
        }
    }
}

fn role_changed(active: Option<ConnId>, previous: Option<ConnId>, names: &dyn Names, now: Millis) -> Frame {
    let name = |conn: Option<ConnId>| conn.map(|c| names.client_id(c));
    let body = data(json!({ "activeClientId": name(active), "previousClientId": name(previous) }));
    protocol::control("role_changed", SERVER_CLIENT_ID, &body, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct ById;
    impl Names for ById {
        fn client_id(&self, conn: ConnId) -> String {
            format!("client-{}", conn.0)
        }
    }

    fn kinds(sends: &[Send]) -> Vec<(Option<u64>, String)> {
        sends
            .iter()
            .map(|send| {
                let (to, frame) = match send {
                    Send::To(conn, frame) => (Some(conn.0), frame),
                    Send::All(frame) => (None, frame),
                };
                let json: serde_json::Value = serde_json::from_slice(&frame.payload).unwrap();
                (to, format!("{} {} {}", json["type"].as_str().unwrap(), json["clientId"].as_str().unwrap(), json["data"]))
            })
            .collect()
    }

    const A: ConnId = ConnId(1);
    const B: ConnId = ConnId(2);
    const C: ConnId = ConnId(3);

    #[test]
    fn the_first_request_is_granted_by_the_server() {
        let mut control = Control::default();
        let sends = control.request(A, None, ConflictResolution::AskActive, &ById, 0);
        assert_eq!(
            kinds(&sends),
            vec![
                (Some(1), r#"accept_control relay-server {"granted":true}"#.into()),
                (None, r#"role_changed relay-server {"activeClientId":"client-1","previousClientId":null}"#.into()),
            ]
        );
        assert_eq!(control.active, Some(A));
    }

    #[test]
    fn a_transfer_asks_the_active_member_and_refuses_a_second_requester() {
        let mut control = Control { active: Some(A), requester: None };
        let body = RawValue::from_string(r#"{"why":"my turn"}"#.into()).unwrap();
        let forwarded = control.request(B, Some(&body), ConflictResolution::AskActive, &ById, 0);
        assert_eq!(kinds(&forwarded), vec![(Some(1), r#"request_control client-2 {"why":"my turn"}"#.into())]);
        let second = control.request(C, None, ConflictResolution::AskActive, &ById, 0);
        assert_eq!(
            kinds(&second),
            vec![(Some(3), r#"decline_control relay-server {"granted":false,"reason":"transfer_in_progress"}"#.into())]
        );
        assert_eq!(control.accept(B, &ById, 0).unwrap_err().code, ErrorCode::NotActive);
        let accepted = control.accept(A, &ById, 0).unwrap();
        assert_eq!(
            kinds(&accepted),
            vec![
                (Some(2), r#"accept_control client-1 {"granted":true}"#.into()),
                (None, r#"role_changed relay-server {"activeClientId":"client-2","previousClientId":"client-1"}"#.into()),
            ]
        );
        assert_eq!((control.active, control.requester), (Some(B), None));
    }

    #[test]
    fn a_decline_reaches_the_requester_and_roles_stay() {
        let mut control = Control { active: Some(A), requester: Some(B) };
        let declined = control.decline(A, None, &ById, 0).unwrap();
        assert_eq!(kinds(&declined), vec![(Some(2), r#"decline_control client-1 {"granted":false}"#.into())]);
        assert_eq!((control.active, control.requester), (Some(A), None));
        assert_eq!(control.decline(A, None, &ById, 0).unwrap_err().code, ErrorCode::InvalidMessage);
    }

    #[test]
    fn deny_declines_at_once() {
        let mut control = Control { active: Some(A), requester: None };
        let sends = control.request(B, None, ConflictResolution::Deny, &ById, 0);
        assert_eq!(kinds(&sends), vec![(Some(2), r#"decline_control relay-server {"granted":false,"reason":"control_held"}"#.into())]);
        assert_eq!(control.requester, None);
    }

    #[test]
    fn leaving_or_releasing_frees_the_role_or_hands_it_to_the_waiting_requester() {
        let mut control = Control { active: Some(A), requester: None };
        assert_eq!(control.release(B, &ById, 0).unwrap_err().code, ErrorCode::NotActive);
        let released = control.release(A, &ById, 0).unwrap();
        assert_eq!(kinds(&released), vec![(None, r#"role_changed relay-server {"activeClientId":null,"previousClientId":"client-1"}"#.into())]);

        let mut control = Control { active: Some(A), requester: Some(B) };
        let (was_active, sends) = control.left(A, &ById, 0);
        assert!(was_active);
        assert_eq!(kinds(&sends)[0], (Some(2), r#"accept_control relay-server {"granted":true}"#.into()));
        assert_eq!(control.active, Some(B));

        let mut control = Control { active: Some(A), requester: Some(B) };
        assert_eq!(control.left(B, &ById, 0), (false, vec![]));
        assert_eq!(control.requester, None);
    }
}
