//! The hooks seam: where the application decides after the upgrade (docs/guide/hooks.md).
//! The relay asks a [`Hooks`] before a join it would allow and before a member's message
//! is relayed or published, and acts on its [`Verdict`]. An answer that takes time comes
//! back through [`Relay::decide`](crate::Relay::decide); meanwhile the asking connection's
//! later messages wait behind the question, so each connection's order is kept.
//!
//! Implementations: the addon's JavaScript hooks, the binary's backend proxy, and
//! [`NoHooks`], with which the relay asks nothing (a `private:` channel is then joined
//! with a subscription token or not at all).

use bytes::Bytes;
use serde::Serialize;

use crate::event::ConnectionInfo;
use crate::ids::Millis;

/// The questions a [`Hooks`] answers. Read once, when the relay is built: a question no
/// one answers costs the relay path nothing. Serialized as `hooks` in `getStats().config`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Decides {
    /// Joins of channels (`joinChannel`); `private:` channels are asked about whatever this says.
    #[serde(rename = "joinChannel")]
    pub join: bool,
    /// Members' messages to their session or a channel (`publish`).
    pub publish: bool,
}

/// What the relay asks, about whom.
#[derive(Clone, Debug, PartialEq)]
pub struct Question {
    /// Names this question in [`Relay::decide`](crate::Relay::decide).
    pub id: u64,
    /// The connection that sent the message.
    pub connection: ConnectionInfo,
    /// What it asks to do.
    pub ask: Ask,
}

/// What a connection asks to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Ask {
    /// Join a channel that the channel rules allow (or a `private:` one).
    Join {
        /// The channel's name.
        channel: String,
        /// The subscription token the join carried, unchecked.
        token: Option<String>,
    },
    /// Go on past its token's expiry with this fresh token (`refresh`).
    Refresh {
        /// The token the connection sent, unchecked.
        token: String,
    },
    /// Relay a message to its session, or publish it to a channel it is in.
    Publish {
        /// The channel it is for; `None` for the sender's session.
        channel: Option<String>,
        /// The message as the member sent it: a JSON object.
        message: Bytes,
    },
}

/// The application's answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Go on.
    Allow,
    /// Refuse, with the error message to send (the code's own when `None`).
    Refuse(Option<String>),
    /// Relay these bytes (a JSON value) instead of the member's message.
    Replace(Bytes),
    /// A refresh is taken: the connection lasts till then (ms since the epoch).
    Renew(Millis),
    /// No answer: the hook failed, timed out or could not be reached (`UNAVAILABLE`).
    Unavailable,
}

/// Where the relay asks the application. [`Hooks::ask`] is called from whichever thread
/// routed the message, with no lock of the relay's held; it answers at once or queues the
/// question and answers later through [`Relay::decide`](crate::Relay::decide). It must
/// never block: the relay routes other connections' messages on the same thread.
pub trait Hooks: Send + Sync {
    /// The questions it answers; asked once, when the relay is built.
    fn decides(&self) -> Decides;

    /// Answers now (`Some`), or later (`None`) through `Relay::decide(conn, question.id, ..)`.
    /// The relay gives up on a question after `hookTimeoutMs`, as if it were [`Verdict::Unavailable`].
    fn ask(&self, question: Question) -> Option<Verdict>;
}

/// No application in the path: nothing is asked, except who may join a `private:`
/// channel without a token (no one) and whether a refresh is taken (no).
pub struct NoHooks;

impl Hooks for NoHooks {
    fn decides(&self) -> Decides {
        Decides::default()
    }

    fn ask(&self, _: Question) -> Option<Verdict> {
        Some(Verdict::Refuse(None))
    }
}
