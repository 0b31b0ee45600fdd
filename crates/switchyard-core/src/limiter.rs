//! What the relay counts against its limits: the token buckets shared by a user's
//! connections and by the connections from one address, and the connections each user
//! holds (`maxConnectionsPerUser`). Time is passed in.

use std::net::IpAddr;
use std::sync::Arc;

use dashmap::DashMap;

use crate::ids::{ConnId, Millis};
use crate::limits::{Bucket, Rate};

#[derive(Default)]
pub(crate) struct Limiter {
    user_buckets: DashMap<Arc<str>, Bucket>,
    address_buckets: DashMap<IpAddr, Bucket>,
    /// Each user's connections.
    user_slots: DashMap<Arc<str>, Vec<ConnId>>,
}

impl Limiter {
    /// Takes a token from the user's bucket.
    pub fn take_user_token(&self, user: Arc<str>, rate: Rate, now: Millis) -> bool {
        self.user_buckets.entry(user).or_insert_with(|| Bucket::full(rate, now)).take(rate, now)
    }

    /// Takes a token from the address's bucket of connections.
    pub fn take_address_token(&self, address: IpAddr, rate: Rate, now: Millis) -> bool {
        self.address_buckets.entry(address).or_insert_with(|| Bucket::full(rate, now)).take(rate, now)
    }

    /// A full bucket says nothing a new one would not: dropping them bounds the maps.
    pub fn forget_full_buckets(&self, address_rate: Option<Rate>, user_rate: Option<Rate>, now: Millis) {
        if let Some(rate) = address_rate {
            self.address_buckets.retain(|_, bucket| !bucket.is_full(rate, now));
        }
        if let Some(rate) = user_rate {
            self.user_buckets.retain(|_, bucket| !bucket.is_full(rate, now));
        }
    }

    /// Counts `conn` among the user's connections, unless the user has `max` already.
    pub fn take_user_slot(&self, user: &Arc<str>, conn: ConnId, max: usize) -> bool {
        let mut conns = self.user_slots.entry(user.clone()).or_default();
        if conns.len() >= max {
            return false;
        }
        conns.push(conn);
        true
    }

    pub fn release_user_slot(&self, user: &str, conn: ConnId) {
        self.user_slots.remove_if_mut(user, |_, conns| {
            conns.retain(|c| *c != conn);
            conns.is_empty()
        });
    }

    /// The user's connections.
    pub fn user_connections(&self, user: &str) -> Vec<ConnId> {
        self.user_slots.get(user).map(|conns| conns.clone()).unwrap_or_default()
    }

    /// How many users hold a connection.
    pub fn users(&self) -> usize {
        self.user_slots.len()
    }
}
