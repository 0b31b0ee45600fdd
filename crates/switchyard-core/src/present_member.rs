//! A member of a session as presence shows it: on this node, and as other nodes tell of
//! theirs.

use serde::Serialize;

use crate::ids::{ConnId, Millis};

/// A member of a session, as `presence` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PresentMember {
    pub connection_id: ConnId,
    pub client_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
    /// `"active"` for the member holding control, else `"passive"`.
    pub role: &'static str,
    pub connected_at: Millis,
}
