//! A member of a session as presence shows it: on this node, and as other nodes tell of
//! theirs.

use crate::ids::{ConnId, Millis};

/// A member of a session, as `presence` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresentMember {
    pub connection_id: ConnId,
    pub client_id: String,
    pub user_id: Option<String>,
    pub organization_id: Option<String>,
    /// `"active"` for the member holding control, else `"passive"`.
    pub role: &'static str,
    pub connected_at: Millis,
}
