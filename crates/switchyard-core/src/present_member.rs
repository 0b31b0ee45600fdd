//! A member of a session as presence shows it: on this node, and as other nodes tell of
//! theirs.

use serde::Serialize;

use crate::ids::{ConnId, Millis};

/// A member of a session, as `presence` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PresentMember {
    /// The member's connection id, unique in the cluster.
    pub connection_id: ConnId,
    /// How the member is named to others (its `clientId`).
    pub client_id: String,
    /// The user its identity names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The organization its identity names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
    /// `"active"` for the member holding control, else `"passive"`.
    pub role: &'static str,
    /// When it joined the session.
    pub connected_at: Millis,
}
