//! The named choices among the options (what a full outbox does, which messages are
//! acknowledged, how a control request is settled), with the names each surface spells
//! them by: the config and the option schema both use them.

use serde::Serialize;

/// What the relay does when a recipient's outbox is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlowConsumerPolicy {
    /// Close the slow connection with 1013 "Slow consumer"; everyone else keeps going.
    #[default]
    Close,
    /// Drop the frame for that recipient and count it.
    Drop,
}

impl SlowConsumerPolicy {
    /// The names users write, in `Close`, `Drop` order.
    pub const NAMES: [&'static str; 2] = ["close", "drop"];

    /// The name users write for this policy.
    pub fn as_str(self) -> &'static str {
        match self {
            SlowConsumerPolicy::Close => Self::NAMES[0],
            SlowConsumerPolicy::Drop => Self::NAMES[1],
        }
    }

    /// The policy a name users write stands for; `None` for an unknown name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "close" => Some(SlowConsumerPolicy::Close),
            "drop" => Some(SlowConsumerPolicy::Drop),
            _ => None,
        }
    }
}

/// Which messages are answered with `ACK` (or `NACK`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AckPolicy {
    /// Messages with a string `id` and `"ack": true`.
    #[default]
    Requested,
    /// Every message with a string `id`.
    Always,
    /// None: no message is acknowledged.
    Never,
}

impl AckPolicy {
    /// The names users write, in `Requested`, `Always`, `Never` order.
    pub const NAMES: [&'static str; 3] = ["requested", "always", "never"];

    /// The name users write for this policy.
    pub fn as_str(self) -> &'static str {
        match self {
            AckPolicy::Requested => Self::NAMES[0],
            AckPolicy::Always => Self::NAMES[1],
            AckPolicy::Never => Self::NAMES[2],
        }
    }

    /// The policy a name users write stands for; `None` for an unknown name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "requested" => Some(AckPolicy::Requested),
            "always" => Some(AckPolicy::Always),
            "never" => Some(AckPolicy::Never),
            _ => None,
        }
    }
}

/// What `request_control` does while another member is active: the original
/// RelaySessionManager's strategies, by its names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictResolution {
    /// Forward the request to the active member only when that member joined after the
    /// requester; otherwise decline it.
    #[default]
    FirstComeFirstServed,
    /// Decline every request while a member is active.
    DenyBoth,
    /// Forward every request to the active member, who accepts or declines.
    UserChoice,
    /// Accepted by the original and treated as `UserChoice`, as it treats it.
    ActiveWins,
    /// Accepted by the original and treated as `UserChoice`, as it treats it.
    TimestampWins,
}

impl ConflictResolution {
    /// The names users write, in the order of the variants.
    pub const NAMES: [&'static str; 5] = ["first-come-first-served", "deny-both", "user-choice", "active-wins", "timestamp-wins"];
    const ALL: [ConflictResolution; 5] = [
        ConflictResolution::FirstComeFirstServed,
        ConflictResolution::DenyBoth,
        ConflictResolution::UserChoice,
        ConflictResolution::ActiveWins,
        ConflictResolution::TimestampWins,
    ];

    /// The name users write for this strategy.
    pub fn as_str(self) -> &'static str {
        Self::NAMES[Self::ALL.iter().position(|c| *c == self).expect("every strategy is listed")]
    }

    /// The strategy a name users write stands for; `None` for an unknown name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::NAMES.iter().position(|n| *n == name).map(|i| Self::ALL[i])
    }
}
