//! Presence beyond this node: the members of this node's sessions connected to the
//! cluster's other nodes, as their nodes told of them, and the records this node gives
//! of its own members. A node alone has none.

use std::sync::Arc;

use dashmap::DashMap;

use crate::broker::RemoteMember;
use crate::ids::SessionId;
use crate::present_member::PresentMember;

pub(crate) struct Elsewhere {
    /// This node's name in the cluster; empty alone.
    node_id: Arc<str>,
    members: DashMap<SessionId, Vec<RemoteMember>>,
}

impl Elsewhere {
    pub fn new(node_id: Arc<str>) -> Self {
        Self { node_id, members: DashMap::new() }
    }

    /// A member of this node as the other nodes know it.
    pub fn record(&self, present: PresentMember) -> RemoteMember {
        RemoteMember { node: self.node_id.clone(), present }
    }

    /// What `look` makes of a session's members elsewhere; `None` when it has none.
    pub fn with<R>(&self, session: &SessionId, look: impl FnOnce(&[RemoteMember]) -> R) -> Option<R> {
        self.members.get(session).map(|members| look(&members))
    }

    /// A session's members elsewhere, copied.
    pub fn of(&self, session: &SessionId) -> Vec<RemoteMember> {
        self.with(session, <[RemoteMember]>::to_vec).unwrap_or_default()
    }

    pub fn count(&self, session: &SessionId) -> usize {
        self.with(session, <[RemoteMember]>::len).unwrap_or(0)
    }

    /// Notes a member's record; `true` when it is new, `false` when it replaced the one
    /// known.
    pub fn joined(&self, session: &SessionId, member: RemoteMember) -> bool {
        let mut members = self.members.entry(session.clone()).or_default();
        match members.iter_mut().find(|m| m.present.connection_id == member.present.connection_id) {
            Some(known) => {
                *known = member;
                false
            }
            None => {
                members.push(member);
                true
            }
        }
    }

    /// Takes out the members of a session that `gone` picks.
    pub fn left(&self, session: &SessionId, gone: impl Fn(&RemoteMember) -> bool) -> Vec<RemoteMember> {
        let left = match self.members.get_mut(session) {
            Some(mut members) => {
                let (left, stayed) = std::mem::take(&mut *members).into_iter().partition(|m| gone(m));
                *members = stayed;
                left
            }
            None => return Vec::new(),
        };
        self.members.remove_if(session, |_, members| members.is_empty());
        left
    }

    /// The sessions with members elsewhere.
    pub fn sessions(&self) -> Vec<SessionId> {
        self.members.iter().map(|entry| entry.key().clone()).collect()
    }

    pub fn forget_session(&self, session: &SessionId) {
        self.members.remove(session);
    }

    pub fn forget_all(&self) {
        self.members.clear();
    }
}
