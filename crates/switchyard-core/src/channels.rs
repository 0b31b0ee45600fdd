//! Channels: named groups that connections join and publish to, across sessions, with
//! the rules of who may join which name.

use std::sync::Arc;

use dashmap::DashMap;

use crate::error::{ErrorCode, MessageRejection};
use crate::ids::ConnId;
use crate::outbox::Outbox;

const MAX_NAME_LEN: usize = 128;

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-' | '.' | '@')
}

/// A channel's name: 1 to 128 characters of `A-Z a-z 0-9 : _ - . @`.
#[derive(Clone, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct ChannelName(Arc<str>);

impl ChannelName {
    /// Checks a name a client sent; a bad one is refused with `INVALID_MESSAGE`.
    pub fn parse(name: &str) -> Result<Self, MessageRejection> {
        if name.is_empty() || name.len() > MAX_NAME_LEN || !name.chars().all(is_name_char) {
            return Err(MessageRejection::new(
                ErrorCode::InvalidMessage,
                "A channel name is 1 to 128 characters of A-Z a-z 0-9 : _ - . @",
            ));
        }
        Ok(Self(name.into()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether it is a `private:` channel, joined only with the application's yes or a
    /// subscription token.
    pub fn is_private(&self) -> bool {
        self.0.starts_with(PRIVATE_PREFIX)
    }
}

/// The prefix of private channels.
const PRIVATE_PREFIX: &str = "private:";

/// Who is asking to join: the identity the reserved channels and patterns look at.
pub struct Joiner<'a> {
    pub user_id: Option<&'a str>,
    pub organization_id: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    /// `*`: any run of characters.
    Any,
    UserId,
    OrganizationId,
}

/// One entry of `channels.allow`: literal text, `*`, `{userId}` and `{organizationId}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowPattern {
    pieces: Vec<Piece>,
}

impl AllowPattern {
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut rest = pattern;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('*') {
                pieces.push(Piece::Any);
                rest = after;
            } else if let Some(after) = rest.strip_prefix("{userId}") {
                pieces.push(Piece::UserId);
                rest = after;
            } else if let Some(after) = rest.strip_prefix("{organizationId}") {
                pieces.push(Piece::OrganizationId);
                rest = after;
            } else {
                let end = rest.find(['*', '{']).unwrap_or(rest.len());
                if end == 0 || !rest[..end].chars().all(is_name_char) {
                    return Err(format!(
                        "pattern {pattern:?} may hold only channel-name characters, *, {{userId}} and {{organizationId}}"
                    ));
                }
                pieces.push(Piece::Text(rest[..end].to_owned()));
                rest = &rest[end..];
            }
        }
        if pieces.is_empty() {
            return Err("a pattern must not be empty".into());
        }
        Ok(Self { pieces })
    }

    fn matches(&self, name: &str, joiner: &Joiner) -> bool {
        fn go(pieces: &[Piece], name: &str, joiner: &Joiner) -> bool {
            let Some((piece, rest)) = pieces.split_first() else { return name.is_empty() };
            let literal = match piece {
                Piece::Any => return (0..=name.len()).filter(|&i| name.is_char_boundary(i)).any(|i| go(rest, &name[i..], joiner)),
                Piece::Text(text) => text.as_str(),
                Piece::UserId => match joiner.user_id {
                    Some(id) => id,
                    None => return false,
                },
                Piece::OrganizationId => match joiner.organization_id {
                    Some(id) => id,
                    None => return false,
                },
            };
            name.strip_prefix(literal).is_some_and(|after| go(rest, after, joiner))
        }
        go(&self.pieces, name, joiner)
    }
}

/// Who may join what: `user:{id}` and `org:{id}` only their own user and organization,
/// and, when the app gave patterns, only names one of them matches.
pub struct AllowList {
    patterns: Option<Vec<AllowPattern>>,
}

impl AllowList {
    /// Patterns were checked by `Config::validate`; a bad one matches nothing.
    pub fn new(patterns: Option<&[String]>) -> Self {
        Self { patterns: patterns.map(|p| p.iter().filter_map(|p| AllowPattern::parse(p).ok()).collect()) }
    }

    pub fn check(&self, name: &ChannelName, joiner: &Joiner) -> Result<(), MessageRejection> {
        let name = name.as_str();
        let forbidden = || MessageRejection::new(ErrorCode::ChannelForbidden, "This channel may not be joined");
        if let Some(user) = name.strip_prefix("user:") {
            if joiner.user_id != Some(user) {
                return Err(MessageRejection::new(ErrorCode::ChannelForbidden, "Only that user may join a user: channel"));
            }
        }
        if let Some(org) = name.strip_prefix("org:") {
            if joiner.organization_id != Some(org) {
                return Err(MessageRejection::new(ErrorCode::ChannelForbidden, "Only that organization may join an org: channel"));
            }
        }
        match &self.patterns {
            // A private channel's members are whom the application says: no pattern names them.
            _ if name.starts_with(PRIVATE_PREFIX) => Ok(()),
            Some(patterns) if !patterns.iter().any(|p| p.matches(name, joiner)) => Err(forbidden()),
            _ => Ok(()),
        }
    }
}

pub(crate) struct Subscriber {
    pub conn: ConnId,
    pub outbox: Arc<dyn Outbox>,
    /// Receives publications with their positions (the channel keeps a stream).
    pub positions: bool,
    /// Is told of members joining and leaving.
    pub presence: bool,
    /// Who it is, as presence shows it: `{connectionId, clientId, userId, organizationId}`,
    /// taken when it joined.
    pub client: Arc<serde_json::Value>,
}

/// The members told of a change in a channel's membership, and their outboxes.
pub(crate) type Watchers = Vec<(ConnId, Arc<dyn Outbox>)>;

/// The members of every channel, and who may join which. A channel exists while it has
/// members.
pub(crate) struct Channels {
    members: DashMap<ChannelName, Vec<Subscriber>>,
    allow: AllowList,
}

impl Channels {
    /// Channels joined as `allow` says (`channelAllow`).
    pub fn new(allow: AllowList) -> Self {
        Self { members: DashMap::new(), allow }
    }

    /// Whether `joiner` may join (and so read) `name`.
    pub fn may_join(&self, name: &ChannelName, joiner: &Joiner) -> Result<(), MessageRejection> {
        self.allow.check(name, joiner)
    }

    /// Runs `f` on the channel's members (creating the channel), locked for writing: what
    /// it does happens between two publications of the channel, never during one.
    pub fn with_members<R>(&self, name: &ChannelName, f: impl FnOnce(&mut Vec<Subscriber>) -> R) -> R {
        f(&mut self.members.entry(name.clone()).or_default())
    }

    /// Runs `f` on the members of a channel that exists, locked for writing: a publication
    /// to a channel with a stream, numbered and handed to every member in one go.
    pub fn with_existing_members<R>(&self, name: &ChannelName, f: impl FnOnce(&mut Vec<Subscriber>) -> R) -> Option<R> {
        self.members.get_mut(name).map(|mut members| f(&mut members))
    }

    /// Removes the connection, and the channel if it was the last; returns the member as
    /// it was, and the members left who want to know.
    pub fn leave(&self, name: &ChannelName, conn: ConnId) -> Option<(Subscriber, Watchers)> {
        let mut left = None;
        self.members.remove_if_mut(name, |_, members| {
            if let Some(at) = members.iter().position(|m| m.conn == conn) {
                let watching = members.iter().filter(|m| m.presence && m.conn != conn).map(|m| (m.conn, m.outbox.clone())).collect();
                left = Some((members.remove(at), watching));
            }
            members.is_empty()
        });
        left
    }

    /// The members as presence shows them, in the order they joined.
    pub fn clients(&self, name: &ChannelName) -> Vec<Arc<serde_json::Value>> {
        self.members.get(name).map(|members| members.iter().map(|m| m.client.clone()).collect()).unwrap_or_default()
    }

    pub fn exists(&self, name: &ChannelName) -> bool {
        self.members.contains_key(name)
    }

    pub fn is_member(&self, name: &ChannelName, conn: ConnId) -> bool {
        self.members.get(name).is_some_and(|members| members.iter().any(|m| m.conn == conn))
    }

    /// Calls `each` with every member but `except`, while the channel is locked for
    /// reading (so `each` must only push to outboxes).
    pub fn for_each_member(&self, name: &ChannelName, except: Option<ConnId>, mut each: impl FnMut(&Subscriber)) {
        if let Some(members) = self.members.get(name) {
            members.iter().filter(|m| Some(m.conn) != except).for_each(&mut each);
        }
    }

    pub fn count(&self) -> usize {
        self.members.len()
    }

    /// The channels that have members.
    pub fn names(&self) -> Vec<ChannelName> {
        self.members.iter().map(|c| c.key().clone()).collect()
    }

    /// Each channel's name and member count, sorted by name.
    pub fn breakdown(&self) -> Vec<(String, usize)> {
        let mut breakdown: Vec<_> = self.members.iter().map(|c| (c.key().as_str().to_owned(), c.len())).collect();
        breakdown.sort();
        breakdown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: Joiner = Joiner { user_id: Some("alice"), organization_id: Some("acme") };
    const NOBODY: Joiner = Joiner { user_id: None, organization_id: None };

    fn name(n: &str) -> ChannelName {
        ChannelName::parse(n).unwrap()
    }

    #[test]
    fn names_follow_the_rules() {
        assert!(ChannelName::parse("notifications").is_ok());
        assert!(ChannelName::parse("chat:room-1_a.b@c").is_ok());
        assert!(ChannelName::parse(&"a".repeat(128)).is_ok());
        for bad in ["", "has space", "slash/no", "é", &"a".repeat(129)] {
            assert_eq!(ChannelName::parse(bad).unwrap_err().code, ErrorCode::InvalidMessage, "{bad:?}");
        }
    }

    #[test]
    fn user_and_org_channels_need_a_matching_identity() {
        let open = AllowList::new(None);
        assert!(open.check(&name("user:alice"), &ALICE).is_ok());
        assert!(open.check(&name("org:acme"), &ALICE).is_ok());
        for (channel, joiner) in [("user:bob", &ALICE), ("org:other", &ALICE), ("user:alice", &NOBODY), ("org:acme", &NOBODY)] {
            assert_eq!(open.check(&name(channel), joiner).unwrap_err().code, ErrorCode::ChannelForbidden, "{channel}");
        }
        assert!(open.check(&name("anything"), &NOBODY).is_ok());
    }

    #[test]
    fn patterns_allow_only_what_they_match() {
        let patterns: Vec<String> =
            ["notifications", "chat:*", "user:{userId}", "team-{organizationId}-*"].map(String::from).to_vec();
        let list = AllowList::new(Some(&patterns));
        for allowed in ["notifications", "chat:", "chat:lobby", "user:alice", "team-acme-sales"] {
            assert!(list.check(&name(allowed), &ALICE).is_ok(), "{allowed}");
        }
        // org:acme:sales would be the channel of an organization named "acme:sales".
        for refused in ["notification", "chatter", "news", "org:acme", "org:acme:sales", "user:bob", "team-other-x"] {
            assert!(list.check(&name(refused), &ALICE).is_err(), "{refused}");
        }
        assert!(list.check(&name("chat:x"), &NOBODY).is_ok());
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in ["", "has space", "{user}", "a/b"] {
            assert!(AllowPattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn empty_channels_are_deleted() {
        let channels = Channels::new(AllowList::new(None));
        let outbox: Arc<dyn Outbox> = crate::testing::RecordingOutbox::new();
        let join = |conn: u64| {
            let client = Arc::new(serde_json::json!({ "connectionId": ConnId(conn).to_string() }));
            let subscriber = Subscriber { conn: ConnId(conn), outbox: outbox.clone(), positions: false, presence: conn == 2, client };
            channels.with_members(&name("c"), |members| members.push(subscriber));
        };
        join(1);
        join(2);
        let (left, watchers) = channels.leave(&name("c"), ConnId(1)).unwrap();
        assert_eq!(left.conn, ConnId(1));
        assert_eq!(watchers.iter().map(|(conn, _)| *conn).collect::<Vec<_>>(), [ConnId(2)], "who asked for presence");
        assert_eq!(channels.breakdown(), vec![("c".to_owned(), 1)]);
        assert!(channels.leave(&name("c"), ConnId(2)).is_some());
        assert!(channels.leave(&name("c"), ConnId(2)).is_none());
        assert_eq!(channels.count(), 0);
        assert!(!channels.exists(&name("c")));
    }
}
