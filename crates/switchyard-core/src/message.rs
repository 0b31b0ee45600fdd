//! What a client's text message asks of the relay, decided in one place:
//! [`ClientMessage::read`] turns a parsed [`Envelope`] into one typed value, with the
//! payload of each kind the relay handles itself read and checked there, and the relay's
//! dispatch is one exhaustive match on it. Anything else is a publication, whose original
//! bytes go on without being parsed further.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::channels::ChannelName;
use crate::envelope::Envelope;
use crate::error::{ErrorCode, MessageRejection};
use crate::streams::Position;

/// Longest user, window and case id an awareness message may carry.
const MAX_AWARENESS_ID_LEN: usize = 256;

/// A client's text message, by what the relay does with it.
#[derive(Debug)]
pub enum ClientMessage<'a> {
    /// `ping`, answered with `pong`, or `PING`, answered with `PONG`.
    Ping {
        /// Whether it was `PING`, so the answer is `PONG`.
        upper_case: bool,
    },
    /// `JOIN_CHANNEL`: join a channel.
    JoinChannel(JoinChannel),
    /// `LEAVE_CHANNEL`: leave a channel.
    LeaveChannel(ChannelName),
    /// `PRESENCE`: who is in a channel the sender is in.
    ChannelPresence(ChannelName),
    /// `request`, for the app's request handler.
    Request {
        /// Its `requestId`, a JSON string or number as written.
        request_id: &'a RawValue,
        /// Its `payload`, as written; `None` when it has none.
        payload: Option<&'a RawValue>,
    },
    /// `register`, `deregister`, `heartbeat` or `focus`.
    Awareness(AwarenessMessage<'a>),
    /// A control-role step, while control roles are on (else it is a publication).
    Control(ControlStep),
    /// `state_update`, while control roles are on: only the active member's goes on.
    StateUpdate,
    /// `refresh` with a string `token`: the connection's fresh token.
    Refresh {
        /// The token, unchecked.
        token: String,
    },
    /// Anything else: relayed to the sender's session, or published to the channel the
    /// envelope names.
    Publish,
}

/// `JOIN_CHANNEL`: the channel, and what the joiner asks of it.
#[derive(Debug)]
pub struct JoinChannel {
    /// The channel to join.
    pub channel: ChannelName,
    /// Publications come with their stream positions.
    pub positions: bool,
    /// The joiner hears members come and go.
    pub presence: bool,
    /// Recover what was published after this position.
    pub since: Option<Position>,
    /// A subscription token for a `private:` channel.
    pub token: Option<String>,
}

/// What `JOIN_CHANNEL` may ask besides its channel, as it is written.
#[derive(Deserialize, Default)]
struct JoinOptions {
    #[serde(default)]
    positions: bool,
    #[serde(default)]
    presence: bool,
    since: Option<JoinSince>,
    token: Option<String>,
}

/// What `refresh` carries.
#[derive(Deserialize)]
struct RefreshToken {
    token: String,
}

#[derive(Deserialize)]
struct JoinSince {
    epoch: String,
    offset: u64,
}

/// `register`, `deregister`, `heartbeat` or `focus`, with the window it is about.
#[derive(Debug)]
pub struct AwarenessMessage<'a> {
    /// Which of the four messages it is.
    pub kind: AwarenessKind,
    /// The payload's `userId`: the user whose window it is.
    pub user_id: Cow<'a, str>,
    /// The payload's `windowId`: the window it is about.
    pub window_id: Cow<'a, str>,
    /// `register`'s case; checked when the window registers.
    pub case_id: Option<Cow<'a, str>>,
}

/// Which awareness message a client sent (docs/protocol.md, "Case awareness").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwarenessKind {
    /// `register`: the window shows a case.
    Register,
    /// `deregister`: the window's registration ends.
    Deregister,
    /// `heartbeat`: the window's registration is still alive.
    Heartbeat,
    /// `focus`: the window is the user's focused one.
    Focus,
}

/// The payload of an awareness message.
#[derive(Deserialize)]
struct FocusPayload<'a> {
    #[serde(rename = "userId", borrow)]
    user_id: Cow<'a, str>,
    #[serde(rename = "windowId", borrow)]
    window_id: Cow<'a, str>,
    #[serde(rename = "caseId", borrow, default)]
    case_id: Option<Cow<'a, str>>,
}

/// A control-role step (docs/protocol.md, "Control roles").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlStep {
    /// `request_control`: a member asks for control.
    Request,
    /// `offer_control`: the active member offers control.
    Offer,
    /// `accept_control`: a member grants a request or takes an offer.
    Accept,
    /// `decline_control`: a member refuses a request.
    Decline,
    /// `release_control`: the active member gives control up.
    Release,
    /// `role_changed`, with the role it announces when that is one the rules know.
    RoleChanged(Option<Role>),
}

/// A role a member announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `"active"`: holds control.
    Active,
    /// `"passive"`: does not hold control.
    Passive,
}

impl Role {
    /// The role as messages write it: `"active"` or `"passive"`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Active => "active",
            Role::Passive => "passive",
        }
    }

    /// The role a message names, if it is one of the two.
    pub fn from_name(name: &str) -> Option<Role> {
        match name {
            "active" => Some(Role::Active),
            "passive" => Some(Role::Passive),
            _ => None,
        }
    }
}

/// The `data` of `role_changed`.
#[derive(Deserialize)]
struct RoleAnnouncement<'a> {
    #[serde(borrow, default)]
    role: Option<Cow<'a, str>>,
}

impl ControlStep {
    /// The step a message `type` names, if it names one; a `role_changed` announces `role`.
    pub fn from_type(kind: &str, role: Option<Role>) -> Option<ControlStep> {
        Some(match kind {
            "request_control" => ControlStep::Request,
            "offer_control" => ControlStep::Offer,
            "accept_control" => ControlStep::Accept,
            "decline_control" => ControlStep::Decline,
            "release_control" => ControlStep::Release,
            "role_changed" => ControlStep::RoleChanged(role),
            _ => return None,
        })
    }

    /// The message `type` of this step.
    pub fn kind(self) -> &'static str {
        match self {
            ControlStep::Request => "request_control",
            ControlStep::Offer => "offer_control",
            ControlStep::Accept => "accept_control",
            ControlStep::Decline => "decline_control",
            ControlStep::Release => "release_control",
            ControlStep::RoleChanged(_) => "role_changed",
        }
    }
}

fn channel_of(envelope: &Envelope) -> Result<ChannelName, MessageRejection> {
    let name = envelope.channel.as_deref().ok_or_else(|| MessageRejection::new(ErrorCode::InvalidMessage, "A channel message needs a string channel"))?;
    ChannelName::parse(name)
}

impl<'a> ClientMessage<'a> {
    /// What the message whose envelope is `envelope` (read from `text`) asks; `roles`
    /// says whether control roles are on. A reserved type with a payload it cannot have
    /// is refused here, with the rejection its sender gets.
    pub fn read(envelope: &Envelope<'a>, text: &'a [u8], roles: bool) -> Result<Self, MessageRejection> {
        let kind = envelope.kind.as_ref();
        Ok(match kind {
            "ping" | "PING" => ClientMessage::Ping { upper_case: kind == "PING" },
            "JOIN_CHANNEL" => {
                let channel = channel_of(envelope)?;
                let options = serde_json::from_slice::<JoinOptions>(text).map_err(|_| {
                    MessageRejection::new(ErrorCode::InvalidMessage, "JOIN_CHANNEL's positions and presence are true or false, its since {\"epoch\":...,\"offset\":...}, its token a string")
                })?;
                let since = options.since.map(|since| Position { epoch: since.epoch.into(), offset: since.offset });
                ClientMessage::JoinChannel(JoinChannel { channel, positions: options.positions, presence: options.presence, since, token: options.token })
            }
            "LEAVE_CHANNEL" => ClientMessage::LeaveChannel(channel_of(envelope)?),
            "PRESENCE" => ClientMessage::ChannelPresence(channel_of(envelope)?),
            "request" => {
                let request_id = envelope.request_id.ok_or_else(|| MessageRejection::new(ErrorCode::InvalidMessage, "A request needs a requestId"))?;
                ClientMessage::Request { request_id, payload: envelope.payload }
            }
            // An app's own `refresh` message without a token stays its own.
            "refresh" => match serde_json::from_slice::<RefreshToken>(text) {
                Ok(RefreshToken { token }) => ClientMessage::Refresh { token },
                Err(_) => ClientMessage::Publish,
            },
            "register" | "deregister" | "heartbeat" | "focus" => ClientMessage::Awareness(AwarenessMessage::read(kind, envelope.payload)?),
            "state_update" if roles => ClientMessage::StateUpdate,
            _ if roles => {
                let role = || envelope.data.and_then(|raw| serde_json::from_str::<RoleAnnouncement>(raw.get()).ok()).and_then(|a| a.role.as_deref().and_then(Role::from_name));
                match ControlStep::from_type(kind, None) {
                    Some(ControlStep::RoleChanged(_)) => ClientMessage::Control(ControlStep::RoleChanged(role())),
                    Some(step) => ClientMessage::Control(step),
                    None => ClientMessage::Publish,
                }
            }
            _ => ClientMessage::Publish,
        })
    }
}

impl<'a> AwarenessMessage<'a> {
    fn read(kind: &str, payload: Option<&'a RawValue>) -> Result<Self, MessageRejection> {
        let kind = match kind {
            "register" => AwarenessKind::Register,
            "deregister" => AwarenessKind::Deregister,
            "heartbeat" => AwarenessKind::Heartbeat,
            _ => AwarenessKind::Focus,
        };
        let payload = payload
            .and_then(|raw| serde_json::from_str::<FocusPayload<'a>>(raw.get()).ok())
            .ok_or_else(|| MessageRejection::new(ErrorCode::InvalidMessage, "An awareness message needs a payload with userId and windowId"))?;
        if !is_awareness_id(&payload.user_id) || !is_awareness_id(&payload.window_id) {
            return Err(MessageRejection::new(ErrorCode::InvalidMessage, "userId and windowId are 1 to 256 characters"));
        }
        Ok(AwarenessMessage { kind, user_id: payload.user_id, window_id: payload.window_id, case_id: payload.case_id })
    }
}

/// Whether `id` may name a user, a window or a case.
pub(crate) fn is_awareness_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_AWARENESS_ID_LEN
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str, roles: bool) -> Result<String, String> {
        let envelope = Envelope::parse(text.as_bytes()).unwrap();
        ClientMessage::read(&envelope, text.as_bytes(), roles).map(|message| format!("{message:?}")).map_err(|rejection| rejection.message.into_owned())
    }

    #[test]
    fn reads_each_reserved_kind_with_its_payload() {
        assert_eq!(read(r#"{"type":"PING","id":1}"#, true).unwrap(), "Ping { upper_case: true }");
        assert!(read(r#"{"type":"JOIN_CHANNEL","channel":"c","presence":true,"since":{"epoch":"e","offset":3}}"#, true).unwrap().contains("presence: true, since: Some(Position { epoch: \"e\", offset: 3 })"));
        assert!(read(r#"{"type":"LEAVE_CHANNEL","channel":"c"}"#, true).unwrap().starts_with("LeaveChannel"));
        assert!(read(r#"{"type":"request","requestId":7,"payload":{"q":1}}"#, true).unwrap().starts_with("Request"));
        assert!(read(r#"{"type":"register","payload":{"userId":"u","windowId":"w","caseId":"c"}}"#, true).unwrap().contains("kind: Register"));
        assert_eq!(read(r#"{"type":"role_changed","data":{"role":"active"}}"#, true).unwrap(), "Control(RoleChanged(Some(Active)))");
        assert_eq!(read(r#"{"type":"role_changed","data":{"role":"observer"}}"#, true).unwrap(), "Control(RoleChanged(None))");
        assert_eq!(read(r#"{"type":"offer_control"}"#, true).unwrap(), "Control(Offer)");
        assert_eq!(read(r#"{"type":"state_update"}"#, true).unwrap(), "StateUpdate");
        assert_eq!(read(r#"{"type":"chat","channel":"c"}"#, true).unwrap(), "Publish");
        assert_eq!(read(r#"{"type":"refresh","token":"t"}"#, true).unwrap(), r#"Refresh { token: "t" }"#);
        assert_eq!(read(r#"{"type":"refresh","data":{}}"#, true).unwrap(), "Publish", "an app's own refresh");
    }

    #[test]
    fn control_types_are_publications_while_roles_are_off() {
        for kind in ["request_control", "role_changed", "state_update"] {
            assert_eq!(read(&format!(r#"{{"type":"{kind}"}}"#), false).unwrap(), "Publish", "{kind}");
        }
    }

    #[test]
    fn refuses_a_reserved_kind_without_what_it_needs() {
        assert_eq!(read(r#"{"type":"JOIN_CHANNEL"}"#, true).unwrap_err(), "A channel message needs a string channel");
        assert!(read(r#"{"type":"JOIN_CHANNEL","channel":"c","positions":"yes"}"#, true).unwrap_err().starts_with("JOIN_CHANNEL's positions"));
        assert_eq!(read(r#"{"type":"request"}"#, true).unwrap_err(), "A request needs a requestId");
        assert_eq!(read(r#"{"type":"focus","payload":{"userId":"u"}}"#, true).unwrap_err(), "An awareness message needs a payload with userId and windowId");
        assert_eq!(read(r#"{"type":"focus","payload":{"userId":"","windowId":"w"}}"#, true).unwrap_err(), "userId and windowId are 1 to 256 characters");
    }

    #[test]
    fn each_control_step_names_its_type() {
        for step in [ControlStep::Request, ControlStep::Offer, ControlStep::Accept, ControlStep::Decline, ControlStep::Release, ControlStep::RoleChanged(None)] {
            assert_eq!(ControlStep::from_type(step.kind(), None), Some(step));
        }
    }
}
