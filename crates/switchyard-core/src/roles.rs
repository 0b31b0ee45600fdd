//! Control roles (`enableRoleManagement`): at most one member of a session is `active`;
//! the others are `passive`. The rules are the original RelaySessionManager's, with its
//! messages passed on as the clients sent them (docs/protocol.md, "Control roles"):
//! `request_control` is granted by the server when nobody holds control, else forwarded
//! to the active member or declined as the session's conflict resolution says;
//! `accept_control` from the active member during a transfer swaps the roles, and from
//! another member while the active one offers control (`offer_control`) takes it;
//! `role_changed` announcing `"active"` makes its sender the active member.
//!
//! A member that loses control without asking is told so with an `accept_control` in its
//! successor's name, the frame on which the original client turns passive: otherwise it
//! would go on believing itself active while its updates were dropped.
//!
//! A pure state machine per session: each step returns the messages to send, and the
//! relay delivers them. A control message that does not apply (an `accept_control` with
//! no transfer waiting and nothing offered, a `release_control` from a passive member) is
//! dropped without an answer, as the original drops it: its client turns every `error`
//! into an `error` event, which throws where nobody listens.

use serde_json::json;
use serde_json::value::RawValue;

use crate::policies::ConflictResolution;
use crate::frame::Frame;
use crate::ids::{ConnId, Millis};
use crate::message::Role;
use crate::protocol::{self, SERVER_CLIENT_ID};

/// Where a control message goes.
#[derive(Debug, PartialEq)]
pub(crate) enum Send {
    To(ConnId, Frame),
    /// To every member but this one.
    AllBut(ConnId, Frame),
}

/// A forwarded `request_control` waiting for the active member's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Transfer {
    pub requester: ConnId,
    /// Past this the requester is declined with `"timeout"`.
    pub deadline: Millis,
}

#[derive(Default, Debug)]
pub(crate) struct Control {
    active: Option<ConnId>,
    pub transfer: Option<Transfer>,
    /// The active member offered control to the others; a member's `accept_control`
    /// takes it. Ends when control changes hands.
    offered: bool,
}

/// What the control rules need to know of the members.
pub(crate) trait Members {
    /// How the member is named to others: its `clientId`.
    fn client_id(&self, conn: ConnId) -> String;
    /// The member's place in the order of joining the session (1 for the first).
    fn joined(&self, conn: ConnId) -> u64;
}

fn data(value: serde_json::Value) -> Box<RawValue> {
    serde_json::value::to_raw_value(&value).expect("JSON values serialize")
}

fn granted(now: Millis) -> Frame {
    protocol::control("accept_control", SERVER_CLIENT_ID, &data(json!({ "granted": true, "timestamp": now })), now)
}

fn declined(reason: &str, now: Millis) -> Frame {
    protocol::control("decline_control", SERVER_CLIENT_ID, &data(json!({ "reason": reason })), now)
}

/// Whether `policy` forwards `requester`'s request to `active` (rather than declining it).
fn forwards(policy: ConflictResolution, requester: ConnId, active: ConnId, members: &dyn Members) -> bool {
    match policy {
        ConflictResolution::FirstComeFirstServed => members.joined(active) > members.joined(requester),
        ConflictResolution::DenyBoth => false,
        ConflictResolution::UserChoice | ConflictResolution::ActiveWins | ConflictResolution::TimestampWins => true,
    }
}

impl Control {
    /// The member holding control.
    pub fn active(&self) -> Option<ConnId> {
        self.active
    }

    /// Gives control to `who` (or to nobody), as another node's news of a role says; any
    /// offer ends with the hand that made it.
    pub fn hand_to(&mut self, who: Option<ConnId>) {
        if self.active != who {
            self.offered = false;
        }
        self.active = who;
    }

    /// `request_control` (the client's `frame`) from `from`.
    pub fn request(
        &mut self,
        from: ConnId,
        frame: &Frame,
        policy: ConflictResolution,
        timeout_ms: u64,
        members: &dyn Members,
        now: Millis,
    ) -> Vec<Send> {
        match self.active {
            None => {
                self.hand_to(Some(from));
                self.transfer = None;
                vec![Send::To(from, granted(now))]
            }
            Some(active) if active == from => vec![Send::To(from, granted(now))],
            Some(_) if self.transfer.is_some() => vec![Send::To(from, declined("transfer_in_progress", now))],
            Some(active) if forwards(policy, from, active, members) => {
                self.transfer = Some(Transfer { requester: from, deadline: now.saturating_add(timeout_ms) });
                vec![Send::To(active, frame.clone())]
            }
            Some(_) => vec![Send::To(from, declined("conflict_resolution_denied", now))],
        }
    }

    /// `accept_control` from `from`: from the active member during a transfer, the
    /// requester becomes active, receives the accept, and everyone else is told. From
    /// another member while the active one offers control, `from` becomes active and the
    /// offerer receives the accept, on which the original client turns passive and
    /// confirms the transfer itself.
    pub fn accept(&mut self, from: ConnId, frame: &Frame, members: &dyn Members, now: Millis) -> Vec<Send> {
        match self.active {
            Some(offerer) if self.offered && offerer != from => {
                self.hand_to(Some(from));
                if self.transfer.is_some_and(|t| t.requester == from) {
                    self.transfer = None;
                }
                return vec![Send::To(offerer, frame.clone())];
            }
            _ => {}
        }
        let Some(transfer) = self.transfer.filter(|_| self.active == Some(from)) else { return Vec::new() };
        self.hand_to(Some(transfer.requester));
        self.transfer = None;
        let confirmation = data(json!({ "newActiveClient": members.client_id(transfer.requester) }));
        vec![
            Send::To(transfer.requester, frame.clone()),
            Send::AllBut(from, protocol::control("confirm_transfer", &members.client_id(from), &confirmation, now)),
        ]
    }

    /// `offer_control` from `from`: from the active member, an offer that a member's
    /// `accept_control` takes; relayed either way.
    pub fn offer(&mut self, from: ConnId, frame: &Frame) -> Vec<Send> {
        if self.active == Some(from) {
            self.offered = true;
        }
        vec![Send::AllBut(from, frame.clone())]
    }

    /// `decline_control` from `from`: it ends a transfer, and is relayed.
    pub fn decline(&mut self, from: ConnId, frame: &Frame) -> Vec<Send> {
        self.transfer = None;
        vec![Send::AllBut(from, frame.clone())]
    }

    /// `release_control` from the active member: relayed, and control goes to the member
    /// waiting for it, else to nobody.
    pub fn release(&mut self, from: ConnId, frame: &Frame, now: Millis) -> Vec<Send> {
        if self.active != Some(from) {
            return Vec::new();
        }
        let mut sends = vec![Send::AllBut(from, frame.clone())];
        sends.extend(self.vacate(now));
        sends
    }

    /// `role_changed` from `from`, announcing `role`: `"active"` makes it the active
    /// member, and a member it takes control from is told with an `accept_control` in
    /// its name; `"passive"` from the active member frees control, as a release does.
    /// Relayed either way.
    pub fn role_changed(&mut self, from: ConnId, role: Option<Role>, frame: &Frame, members: &dyn Members, now: Millis) -> Vec<Send> {
        let mut sends = vec![Send::AllBut(from, frame.clone())];
        match role {
            Some(Role::Active) => {
                if let Some(displaced) = self.active.filter(|&active| active != from) {
                    let handover = data(json!({ "fromClientId": members.client_id(displaced), "timestamp": now }));
                    sends.push(Send::To(displaced, protocol::control("accept_control", &members.client_id(from), &handover, now)));
                }
                self.hand_to(Some(from));
                if self.transfer.is_some_and(|t| t.requester == from) {
                    self.transfer = None;
                }
            }
            Some(Role::Passive) if self.active == Some(from) => sends.extend(self.vacate(now)),
            _ => {}
        }
        sends
    }

    /// A member left; returns whether it was active, and what the others must hear.
    pub fn left(&mut self, conn: ConnId, now: Millis) -> (bool, Vec<Send>) {
        if self.transfer.is_some_and(|t| t.requester == conn) {
            self.transfer = None;
        }
        if self.active != Some(conn) {
            return (false, Vec::new());
        }
        (true, self.vacate(now))
    }

    /// Declines a transfer the active member has not answered in time.
    pub fn expire(&mut self, now: Millis) -> Vec<Send> {
        match self.transfer {
            Some(transfer) if now >= transfer.deadline => {
                self.transfer = None;
                vec![Send::To(transfer.requester, declined("timeout", now))]
            }
            _ => Vec::new(),
        }
    }

    fn vacate(&mut self, now: Millis) -> Vec<Send> {
        self.hand_to(None);
        match self.transfer.take() {
            Some(transfer) => {
                self.hand_to(Some(transfer.requester));
                vec![Send::To(transfer.requester, granted(now))]
            }
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Members named `client-<n>`, joined in the order of their ids.
    struct ByJoinOrder;
    impl Members for ByJoinOrder {
        fn client_id(&self, conn: ConnId) -> String {
            format!("client-{}", conn.0)
        }
        fn joined(&self, conn: ConnId) -> u64 {
            conn.0
        }
    }

    fn kinds(sends: &[Send]) -> Vec<String> {
        sends
            .iter()
            .map(|send| {
                let (to, frame) = match send {
                    Send::To(conn, frame) => (format!("to {}", conn.0), frame),
                    Send::AllBut(conn, frame) => (format!("all but {}", conn.0), frame),
                };
                let json: serde_json::Value = serde_json::from_slice(&frame.payload).unwrap();
                let mut data = json["data"].clone();
                if let Some(data) = data.as_object_mut() {
                    data.remove("timestamp");
                }
                format!("{to}: {} {} {data}", json["type"].as_str().unwrap(), json["clientId"].as_str().unwrap())
            })
            .collect()
    }

    fn client_frame(kind: &str, from: ConnId) -> Frame {
        let text = format!(r#"{{"type":"{kind}","clientId":"client-{}","data":{{"why":"mine"}}}}"#, from.0);
        Frame::text(bytes::Bytes::from(text))
    }

    const A: ConnId = ConnId(1);
    const B: ConnId = ConnId(2);
    const C: ConnId = ConnId(3);
    const FCFS: ConflictResolution = ConflictResolution::FirstComeFirstServed;

    #[test]
    fn the_first_request_is_granted_by_the_server() {
        let mut control = Control::default();
        let sends = control.request(A, &client_frame("request_control", A), FCFS, 5000, &ByJoinOrder, 0);
        assert_eq!(kinds(&sends), vec![r#"to 1: accept_control relay-server {"granted":true}"#]);
        assert_eq!(control.active, Some(A));
    }

    #[test]
    fn first_come_first_served_forwards_only_to_a_later_joiner() {
        let mut control = Control { active: Some(A), ..Control::default() };
        let declined = control.request(B, &client_frame("request_control", B), FCFS, 5000, &ByJoinOrder, 0);
        assert_eq!(kinds(&declined), vec![r#"to 2: decline_control relay-server {"reason":"conflict_resolution_denied"}"#]);
        assert_eq!(control.transfer, None);

        let mut control = Control { active: Some(B), ..Control::default() };
        let request = client_frame("request_control", A);
        let forwarded = control.request(A, &request, FCFS, 5000, &ByJoinOrder, 10);
        assert_eq!(forwarded, vec![Send::To(B, request)], "the client's own frame, unchanged");
        assert_eq!(control.transfer, Some(Transfer { requester: A, deadline: 5010 }));
    }

    #[test]
    fn each_strategy_decides_as_the_original() {
        for (policy, forwarded) in [
            (ConflictResolution::DenyBoth, false),
            (ConflictResolution::UserChoice, true),
            (ConflictResolution::ActiveWins, true),
            (ConflictResolution::TimestampWins, true),
        ] {
            let mut control = Control { active: Some(A), ..Control::default() };
            let sends = control.request(B, &client_frame("request_control", B), policy, 5000, &ByJoinOrder, 0);
            assert_eq!(control.transfer.is_some(), forwarded, "{policy:?}");
            assert_eq!(matches!(sends[0], Send::To(A, _)), forwarded, "{policy:?}");
        }
    }

    #[test]
    fn a_transfer_refuses_a_second_requester_and_an_accept_swaps_the_roles() {
        let mut control = Control { active: Some(A), ..Control::default() };
        control.request(B, &client_frame("request_control", B), ConflictResolution::UserChoice, 5000, &ByJoinOrder, 0);
        let second = control.request(C, &client_frame("request_control", C), ConflictResolution::UserChoice, 5000, &ByJoinOrder, 0);
        assert_eq!(kinds(&second), vec![r#"to 3: decline_control relay-server {"reason":"transfer_in_progress"}"#]);

        assert_eq!(control.accept(B, &client_frame("accept_control", B), &ByJoinOrder, 0), vec![], "only the active member answers");
        let accept = client_frame("accept_control", A);
        let sends = control.accept(A, &accept, &ByJoinOrder, 0);
        assert_eq!(sends[0], Send::To(B, accept));
        assert_eq!(kinds(&sends[1..]), vec![r#"all but 1: confirm_transfer client-1 {"newActiveClient":"client-2"}"#]);
        assert_eq!((control.active, control.transfer), (Some(B), None));
        assert_eq!(control.accept(B, &client_frame("accept_control", B), &ByJoinOrder, 0), vec![], "no transfer waits");
    }

    #[test]
    fn a_decline_ends_the_transfer_and_is_relayed() {
        let mut control = Control { active: Some(A), transfer: Some(Transfer { requester: B, deadline: 9 }), ..Control::default() };
        let decline = client_frame("decline_control", A);
        assert_eq!(control.decline(A, &decline), vec![Send::AllBut(A, decline)]);
        assert_eq!((control.active, control.transfer), (Some(A), None));
    }

    #[test]
    fn an_unanswered_request_times_out() {
        let mut control = Control { active: Some(A), transfer: Some(Transfer { requester: B, deadline: 100 }), ..Control::default() };
        assert_eq!(control.expire(99), vec![]);
        assert_eq!(kinds(&control.expire(100)), vec![r#"to 2: decline_control relay-server {"reason":"timeout"}"#]);
        assert_eq!((control.active, control.transfer), (Some(A), None));
    }

    #[test]
    fn role_changed_to_active_takes_control_is_relayed_and_tells_the_member_it_took_it_from() {
        let mut control = Control { active: Some(A), ..Control::default() };
        let announcement = client_frame("role_changed", B);
        let sends = control.role_changed(B, Some(Role::Active), &announcement, &ByJoinOrder, 0);
        assert_eq!(sends[0], Send::AllBut(B, announcement.clone()));
        assert_eq!(kinds(&sends[1..]), vec![r#"to 1: accept_control client-2 {"fromClientId":"client-1"}"#], "the original client turns passive on it");
        assert_eq!(control.active, Some(B));
        assert_eq!(control.role_changed(B, Some(Role::Active), &announcement, &ByJoinOrder, 0), vec![Send::AllBut(B, announcement.clone())], "nobody to tell");
        control.role_changed(A, Some(Role::Passive), &client_frame("role_changed", A), &ByJoinOrder, 0);
        assert_eq!(control.active, Some(B), "a passive member saying so changes nothing");
        control.role_changed(B, Some(Role::Passive), &announcement, &ByJoinOrder, 0);
        assert_eq!(control.active, None, "the active member saying it is passive frees control");
    }

    #[test]
    fn an_offer_is_relayed_and_taken_by_an_accept_which_goes_to_the_offerer() {
        let mut control = Control { active: Some(A), ..Control::default() };
        assert_eq!(control.accept(B, &client_frame("accept_control", B), &ByJoinOrder, 0), vec![], "nothing offered");
        let offer = client_frame("offer_control", A);
        assert_eq!(control.offer(A, &offer), vec![Send::AllBut(A, offer)]);
        assert_eq!(control.accept(A, &client_frame("accept_control", A), &ByJoinOrder, 0), vec![], "not from the offerer");
        let accept = client_frame("accept_control", B);
        assert_eq!(control.accept(B, &accept, &ByJoinOrder, 0), vec![Send::To(A, accept)]);
        assert_eq!(control.active, Some(B));
        let announcement = client_frame("role_changed", B);
        assert_eq!(control.role_changed(B, Some(Role::Active), &announcement, &ByJoinOrder, 0), vec![Send::AllBut(B, announcement)], "the new holder's announcement takes nothing more");
        assert_eq!(control.accept(C, &client_frame("accept_control", C), &ByJoinOrder, 0), vec![], "the offer ended with the hand that made it");
    }

    #[test]
    fn an_offer_ends_when_control_changes_hands_and_only_the_holder_offers() {
        let mut control = Control { active: Some(B), ..Control::default() };
        control.offer(A, &client_frame("offer_control", A));
        assert_eq!(control.accept(C, &client_frame("accept_control", C), &ByJoinOrder, 0), vec![], "a passive member offers nothing");

        control.offer(B, &client_frame("offer_control", B));
        control.release(B, &client_frame("release_control", B), 0);
        control.request(B, &client_frame("request_control", B), FCFS, 5000, &ByJoinOrder, 0);
        assert_eq!(control.active, Some(B));
        assert_eq!(control.accept(C, &client_frame("accept_control", C), &ByJoinOrder, 0), vec![], "released with the role");
    }

    #[test]
    fn releasing_or_leaving_frees_the_role_or_hands_it_to_the_waiting_requester() {
        let mut control = Control { active: Some(A), ..Control::default() };
        assert_eq!(control.release(B, &client_frame("release_control", B), 0), vec![], "only the active member releases");
        let release = client_frame("release_control", A);
        assert_eq!(control.release(A, &release, 0), vec![Send::AllBut(A, release)]);
        assert_eq!(control.active, None);

        let mut control = Control { active: Some(A), transfer: Some(Transfer { requester: B, deadline: 9 }), ..Control::default() };
        let (was_active, sends) = control.left(A, 0);
        assert!(was_active);
        assert_eq!(kinds(&sends), vec![r#"to 2: accept_control relay-server {"granted":true}"#]);
        assert_eq!((control.active, control.transfer), (Some(B), None));

        let mut control = Control { active: Some(A), transfer: Some(Transfer { requester: B, deadline: 9 }), ..Control::default() };
        assert_eq!(control.left(B, 0), (false, vec![]));
        assert_eq!(control.transfer, None);
    }
}
