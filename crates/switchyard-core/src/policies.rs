//! The named choices among the options (what a full outbox does, which messages are
//! acknowledged, how a control request is settled), with the names each surface spells
//! them by: the config and the option schema both use them.

use serde::{Serialize, Serializer};

/// Gives a choice its names, each written once beside its variant: `NAMES` (what the
/// schema, clap and the addon's reader accept), `as_str`, `from_name`, and a `Serialize`
/// that writes the name.
macro_rules! named_choice {
    ($choice:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $choice {
            /// The names users write, in the order of the variants.
            pub const NAMES: [&'static str; [$($name),+].len()] = [$($name),+];

            /// The name users write for this one.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($choice::$variant => $name,)+
                }
            }

            /// The one a name users write stands for; `None` for an unknown name.
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $($name => Some($choice::$variant),)+
                    _ => None,
                }
            }
        }

        impl Serialize for $choice {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }
    };
}

/// What the relay does when a recipient's outbox is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SlowConsumerPolicy {
    /// Close the slow connection with 1013 "Slow consumer"; everyone else keeps going.
    #[default]
    Close,
    /// Drop the frame for that recipient and count it.
    Drop,
}

named_choice!(SlowConsumerPolicy { Close => "close", Drop => "drop" });

/// Which messages are answered with `ACK` (or `NACK`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AckPolicy {
    /// Messages with a string `id` and `"ack": true`.
    #[default]
    Requested,
    /// Every message with a string `id`.
    Always,
    /// None: no message is acknowledged.
    Never,
}

named_choice!(AckPolicy { Requested => "requested", Always => "always", Never => "never" });

/// What `request_control` does while another member is active: the original
/// RelaySessionManager's strategies, by its names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
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

named_choice!(ConflictResolution {
    FirstComeFirstServed => "first-come-first-served",
    DenyBoth => "deny-both",
    UserChoice => "user-choice",
    ActiveWins => "active-wins",
    TimestampWins => "timestamp-wins",
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_choice_reads_back_its_names_and_serializes_as_them() {
        fn check<C: Copy + PartialEq + std::fmt::Debug + Serialize>(names: &[&str], from_name: fn(&str) -> Option<C>, as_str: fn(C) -> &'static str) {
            for name in names {
                let choice = from_name(name).expect("a listed name reads");
                assert_eq!(as_str(choice), *name);
                assert_eq!(serde_json::to_value(choice).unwrap(), serde_json::json!(name));
            }
            assert_eq!(from_name("nonsense"), None);
        }
        check(&SlowConsumerPolicy::NAMES, SlowConsumerPolicy::from_name, SlowConsumerPolicy::as_str);
        check(&AckPolicy::NAMES, AckPolicy::from_name, AckPolicy::as_str);
        check(&ConflictResolution::NAMES, ConflictResolution::from_name, ConflictResolution::as_str);
    }
}
