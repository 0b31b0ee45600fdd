//! Presence beyond this node kept in this process: the [`Presence`] a node uses, alone
//! (where it stays empty) or in a cluster, whose link fills it from what the other nodes
//! tell and, on joining, from the members the shared broker keeps.

use dashmap::DashMap;

use crate::broker::{Presence, RemoteMember};
use crate::ids::SessionId;

/// The members of this node's sessions on other nodes, by session, kept in a map.
#[derive(Default)]
pub struct MemoryPresence {
    members: DashMap<SessionId, Vec<RemoteMember>>,
}

impl Presence for MemoryPresence {
    fn add(&self, session: &SessionId, member: RemoteMember) -> bool {
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

    fn remove(&self, session: &SessionId, gone: &dyn Fn(&RemoteMember) -> bool) -> Vec<RemoteMember> {
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

    fn members(&self, session: &SessionId) -> Vec<RemoteMember> {
        self.members.get(session).map(|members| members.to_vec()).unwrap_or_default()
    }

    fn count(&self, session: &SessionId) -> usize {
        self.members.get(session).map_or(0, |members| members.len())
    }

    fn sessions(&self) -> Vec<SessionId> {
        self.members.iter().map(|entry| entry.key().clone()).collect()
    }

    fn forget(&self, session: &SessionId) {
        self.members.remove(session);
    }

    fn forget_all(&self) {
        self.members.clear();
    }
}
