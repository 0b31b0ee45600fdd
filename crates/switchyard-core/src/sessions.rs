//! This node's sessions by id, with what is kept about each beyond its own record: its
//! members on the cluster's other nodes, and a forwarded `request_control` waiting for an
//! answer.
//!
//! Lock order: a session's guard is taken before its channel, stream or remote members'
//! guards, never after them.

use dashmap::mapref::entry::Entry;
use dashmap::mapref::one::{Ref, RefMut};
use dashmap::DashMap;

use std::sync::Arc;

use crate::broker::Presence;
use crate::ids::{Millis, SessionId};
use crate::session::Session;

pub(crate) struct Sessions {
    local: DashMap<SessionId, Session>,
    /// Members of these sessions connected to other nodes.
    pub elsewhere: Arc<dyn Presence>,
    /// Sessions whose forwarded `request_control` waits for an answer, with its deadline:
    /// one entry a session, so spamming requests grows nothing.
    transfers: DashMap<SessionId, Millis>,
}

impl Sessions {
    pub fn new(elsewhere: Arc<dyn Presence>) -> Self {
        Self { local: DashMap::new(), elsewhere, transfers: DashMap::new() }
    }

    pub fn get(&self, id: &SessionId) -> Option<Ref<'_, SessionId, Session>> {
        self.local.get(id)
    }

    pub fn get_mut(&self, id: &SessionId) -> Option<RefMut<'_, SessionId, Session>> {
        self.local.get_mut(id)
    }

    pub fn entry(&self, id: SessionId) -> Entry<'_, SessionId, Session> {
        self.local.entry(id)
    }

    pub fn contains(&self, id: &SessionId) -> bool {
        self.local.contains_key(id)
    }

    pub fn len(&self) -> usize {
        self.local.len()
    }

    /// Takes a session out, and forgets what was kept beside it.
    pub fn remove(&self, id: &SessionId) -> Option<Session> {
        self.remove_if(id, |_| true)
    }

    /// Takes a session out if `still` holds of it once its guard is taken.
    pub fn remove_if(&self, id: &SessionId, still: impl FnOnce(&Session) -> bool) -> Option<Session> {
        let removed = self.local.remove_if(id, |_, session| still(session)).map(|(_, session)| session);
        if removed.is_some() || !self.local.contains_key(id) {
            self.transfers.remove(id);
            self.elsewhere.forget(id);
        }
        removed
    }

    /// The ids of the sessions `keep` picks.
    pub fn ids_where(&self, keep: impl Fn(&Session) -> bool) -> Vec<SessionId> {
        self.local.iter().filter(|s| keep(s)).map(|s| s.key().clone()).collect()
    }

    /// Up to `limit` ids that sort after `after`, in order, and whether more follow. Only
    /// the ids are gathered while the map is walked, so a page costs relaying no more than
    /// a shared look at each shard.
    pub fn page(&self, after: Option<&str>, limit: usize) -> (Vec<SessionId>, bool) {
        let mut ids = self.ids_where(|s| after.is_none_or(|after| s.id.as_str() > after));
        let more = ids.len() > limit;
        if more {
            ids.select_nth_unstable(limit);
            ids.truncate(limit);
        }
        ids.sort_unstable();
        (ids, more)
    }

    /// Notes that a session's forwarded control request waits for an answer until `deadline`.
    pub fn await_transfer(&self, id: SessionId, deadline: Millis) {
        self.transfers.insert(id, deadline);
    }

    /// Takes out the sessions whose transfer's deadline has come.
    pub fn overdue_transfers(&self, now: Millis) -> Vec<SessionId> {
        let due: Vec<SessionId> = self.transfers.iter().filter(|entry| *entry.value() <= now).map(|entry| entry.key().clone()).collect();
        due.into_iter().filter(|id| self.transfers.remove_if(id, |_, deadline| *deadline <= now).is_some()).collect()
    }
}
