//! What nodes send each other through Redis: a [`Remote`] as one pub/sub message, a JSON
//! head line naming the sending node and what happened, then for a delivery the frame's
//! bytes verbatim (so a relayed message is never re-encoded on its way).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use switchyard_core::{
    AwarenessStep, ChannelName, ConflictResolution, ConnId, ControlStep, Delivery, Filter, Frame, HistoryConfig, PresentMember, Remote, RemoteMember, Role,
    SessionId, SessionRecord, Topic,
};

/// Why a message from another node could not be read: it is dropped, and counted.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// No line break ends the message's head.
    #[error("no head line")]
    NoHead,
    /// The head line is not the JSON expected.
    #[error("bad head: {0}")]
    Head(#[from] serde_json::Error),
    /// The field named could not be read, or a numbered message was not a delivery (`numbered`).
    #[error("bad field: {0}")]
    Field(&'static str),
}

#[derive(Serialize, Deserialize)]
struct Head<'a> {
    /// The sending node.
    #[serde(borrow)]
    node: &'a str,
    #[serde(flatten)]
    what: What,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
enum What {
    Delivery {
        topic: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        except: Option<u64>,
        publication: bool,
        binary: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        organization: Option<String>,
    },
    Control {
        session: String,
        from: u64,
        joined_at: u64,
        control: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<String>,
        binary: bool,
    },
    Awareness {
        user: String,
        conn: u64,
        step: Step,
        binary: bool,
    },
    SessionCreated(Record),
    SessionDeleted {
        session: String,
    },
    MemberJoined {
        session: String,
        member: Member,
        announce: bool,
    },
    MemberLeft {
        session: String,
        conn: u64,
        was_active: bool,
    },
    NodeGone {
        gone: String,
    },
}

/// An awareness step, as nodes send it.
#[derive(Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "camelCase")]
enum Step {
    Register { window: String, case: String },
    Deregister { window: String },
    Heartbeat { window: String },
    Focus { window: String },
    Closed,
}

impl From<&AwarenessStep> for Step {
    fn from(step: &AwarenessStep) -> Self {
        match step.clone() {
            AwarenessStep::Register { window, case } => Step::Register { window, case },
            AwarenessStep::Deregister { window } => Step::Deregister { window },
            AwarenessStep::Heartbeat { window } => Step::Heartbeat { window },
            AwarenessStep::Focus { window } => Step::Focus { window },
            AwarenessStep::Closed => Step::Closed,
        }
    }
}

impl From<Step> for AwarenessStep {
    fn from(step: Step) -> Self {
        match step {
            Step::Register { window, case } => AwarenessStep::Register { window, case },
            Step::Deregister { window } => AwarenessStep::Deregister { window },
            Step::Heartbeat { window } => AwarenessStep::Heartbeat { window },
            Step::Focus { window } => AwarenessStep::Focus { window },
            Step::Closed => AwarenessStep::Closed,
        }
    }
}

/// A session as the directory keeps it, under its own key and in messages.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Record {
    id: String,
    created_at: u64,
    expires_at: u64,
    max_clients: usize,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
    conflict_resolution: String,
    #[serde(default)]
    history: Option<(usize, u64)>,
}

/// A member as the directory keeps it.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Member {
    node: String,
    conn: u64,
    client_id: String,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    organization_id: Option<String>,
    active: bool,
    connected_at: u64,
}

impl From<&SessionRecord> for Record {
    fn from(r: &SessionRecord) -> Self {
        Record {
            id: r.id.to_string(),
            created_at: r.created_at,
            expires_at: r.expires_at,
            max_clients: r.max_clients,
            metadata: r.metadata.clone(),
            conflict_resolution: r.conflict_resolution.as_str().into(),
            history: r.history.map(|h| (h.size, h.ttl_ms)),
        }
    }
}

impl TryFrom<Record> for SessionRecord {
    type Error = WireError;

    fn try_from(r: Record) -> Result<Self, WireError> {
        Ok(SessionRecord {
            id: session(&r.id)?,
            created_at: r.created_at,
            expires_at: r.expires_at,
            max_clients: r.max_clients,
            metadata: r.metadata,
            conflict_resolution: ConflictResolution::from_name(&r.conflict_resolution).ok_or(WireError::Field("conflictResolution"))?,
            history: r.history.map(|(size, ttl_ms)| HistoryConfig { size, ttl_ms }),
        })
    }
}

impl From<&RemoteMember> for Member {
    fn from(m: &RemoteMember) -> Self {
        let p = &m.present;
        Member {
            node: m.node.to_string(),
            conn: p.connection_id.0,
            client_id: p.client_id.clone(),
            user_id: p.user_id.clone(),
            organization_id: p.organization_id.clone(),
            active: p.role == "active",
            connected_at: p.connected_at,
        }
    }
}

impl From<Member> for RemoteMember {
    fn from(m: Member) -> Self {
        RemoteMember {
            node: m.node.into(),
            present: PresentMember {
                connection_id: ConnId(m.conn),
                client_id: m.client_id,
                user_id: m.user_id,
                organization_id: m.organization_id,
                role: if m.active { "active" } else { "passive" },
                connected_at: m.connected_at,
            },
        }
    }
}

fn session(id: &str) -> Result<SessionId, WireError> {
    SessionId::parse(id).map_err(|_| WireError::Field("session"))
}

fn channel(name: &str) -> Result<ChannelName, WireError> {
    ChannelName::parse(name).map_err(|_| WireError::Field("channel"))
}

/// A channel's topic name, from its name as text.
pub fn channel_tag(name: &str) -> String {
    format!("c:{name}")
}

/// A topic as one string: the hash tag of its keys and channel.
pub fn topic_name(topic: &Topic) -> String {
    match topic {
        Topic::Session(id) => format!("s:{id}"),
        Topic::Channel(name) => channel_tag(name.as_str()),
        Topic::User(user) => format!("u:{user}"),
        Topic::Organization(organization) => format!("o:{organization}"),
        Topic::Connection(conn) => format!("n:{}", conn.0),
        Topic::Everyone => "*".into(),
    }
}

fn parse_topic(name: &str) -> Result<Topic, WireError> {
    let bad = WireError::Field("topic");
    if name == "*" {
        return Ok(Topic::Everyone);
    }
    let (kind, rest) = name.split_once(':').ok_or(bad)?;
    Ok(match kind {
        "s" => Topic::Session(session(rest)?),
        "c" => Topic::Channel(channel(rest)?),
        "u" => Topic::User(rest.into()),
        "o" => Topic::Organization(rest.into()),
        "n" => Topic::Connection(ConnId(rest.parse().map_err(|_| WireError::Field("topic"))?)),
        _ => return Err(WireError::Field("topic")),
    })
}

/// One message from `node`.
pub fn encode(node: &str, remote: &Remote) -> Vec<u8> {
    let (what, frame) = match remote {
        Remote::Delivery(d) | Remote::Numbered { delivery: d, .. } => (
            What::Delivery {
                topic: topic_name(&d.topic),
                from: d.from.map(|c| c.0),
                except: d.except.map(|c| c.0),
                publication: d.publication,
                binary: d.frame.kind == switchyard_core::FrameKind::Binary,
                session: d.filter.session.as_ref().map(|s| s.to_string()),
                channel: d.filter.channel.as_ref().map(|c| c.as_str().to_owned()),
                user: d.filter.user.as_deref().map(str::to_owned),
                organization: d.filter.organization.as_deref().map(str::to_owned),
            },
            Some(&d.frame),
        ),
        Remote::Control { session, from, joined_at, step, frame } => (
            What::Control {
                session: session.to_string(),
                from: from.0,
                joined_at: *joined_at,
                control: step.kind().to_owned(),
                role: match step {
                    ControlStep::RoleChanged(role) => role.map(|role| role.name().to_owned()),
                    _ => None,
                },
                binary: frame.kind == switchyard_core::FrameKind::Binary,
            },
            Some(frame),
        ),
        Remote::Awareness { user, conn, step, frame } => (
            What::Awareness { user: user.to_string(), conn: conn.0, step: step.into(), binary: frame.kind == switchyard_core::FrameKind::Binary },
            Some(frame),
        ),
        Remote::SessionCreated(record) => (What::SessionCreated(record.into()), None),
        Remote::SessionDeleted(id) => (What::SessionDeleted { session: id.to_string() }, None),
        Remote::MemberJoined { session, member, announce } => {
            (What::MemberJoined { session: session.to_string(), member: member.into(), announce: *announce }, None)
        }
        Remote::MemberLeft { session, conn, was_active } => {
            (What::MemberLeft { session: session.to_string(), conn: conn.0, was_active: *was_active }, None)
        }
        Remote::NodeGone(gone) => (What::NodeGone { gone: gone.to_string() }, None),
    };
    let mut out = serde_json::to_vec(&Head { node, what }).expect("a head serializes");
    out.push(b'\n');
    if let Some(frame) = frame {
        out.extend_from_slice(&frame.payload);
    }
    out
}

/// A numbered publication as the numbering script publishes it: `#<offset> <timestamp>
/// <epoch>` on a line before the delivery's own message.
pub fn decode_numbered(message: &[u8]) -> Result<(Arc<str>, Remote), WireError> {
    let at = message.iter().position(|&b| b == b'\n').ok_or(WireError::NoHead)?;
    let line = std::str::from_utf8(&message[1..at]).map_err(|_| WireError::Field("position"))?;
    let mut parts = line.split(' ');
    let mut number = || parts.next().and_then(|n| n.parse::<u64>().ok()).ok_or(WireError::Field("position"));
    let (offset, timestamp) = (number()?, number()?);
    let epoch: Arc<str> = parts.next().filter(|e| !e.is_empty()).ok_or(WireError::Field("epoch"))?.into();
    match decode(&message[at + 1..])? {
        (node, Remote::Delivery(delivery)) => Ok((node, Remote::Numbered { delivery, epoch, offset, timestamp })),
        _ => Err(WireError::Field("numbered")),
    }
}

/// Whether a message is a numbered publication.
pub fn is_numbered(message: &[u8]) -> bool {
    message.first() == Some(&b'#')
}

/// A message: the node that sent it, and what it says.
pub fn decode(message: &[u8]) -> Result<(Arc<str>, Remote), WireError> {
    let at = message.iter().position(|&b| b == b'\n').ok_or(WireError::NoHead)?;
    let head: Head = serde_json::from_slice(&message[..at])?;
    let body = &message[at + 1..];
    let remote = match head.what {
        What::Delivery { topic, from, except, publication, binary, session: s, channel: c, user, organization } => {
            let frame = if binary { Frame::binary(body.to_vec()) } else { Frame::text(body.to_vec()) };
            Remote::Delivery(Delivery {
                topic: parse_topic(&topic)?,
                frame,
                from: from.map(ConnId),
                except: except.map(ConnId),
                publication,
                filter: Filter {
                    session: s.as_deref().map(session).transpose()?,
                    channel: c.as_deref().map(channel).transpose()?,
                    user: user.map(Arc::from),
                    organization: organization.map(Arc::from),
                },
            })
        }
        What::Control { session: s, from, joined_at, control, role, binary } => Remote::Control {
            session: session(&s)?,
            from: ConnId(from),
            joined_at,
            step: ControlStep::from_type(&control, role.as_deref().and_then(Role::from_name)).ok_or(WireError::Field("control"))?,
            frame: if binary { Frame::binary(body.to_vec()) } else { Frame::text(body.to_vec()) },
        },
        What::Awareness { user, conn, step, binary } => Remote::Awareness {
            user: user.into(),
            conn: ConnId(conn),
            step: step.into(),
            frame: if binary { Frame::binary(body.to_vec()) } else { Frame::text(body.to_vec()) },
        },
        What::SessionCreated(record) => Remote::SessionCreated(record.try_into()?),
        What::SessionDeleted { session: s } => Remote::SessionDeleted(session(&s)?),
        What::MemberJoined { session: s, member, announce } => Remote::MemberJoined { session: session(&s)?, member: member.into(), announce },
        What::MemberLeft { session: s, conn, was_active } => Remote::MemberLeft { session: session(&s)?, conn: ConnId(conn), was_active },
        What::NodeGone { gone } => Remote::NodeGone(gone.into()),
    };
    Ok((head.node.into(), remote))
}

/// A directory entry read back.
pub(crate) fn record_from(json: &[u8]) -> Result<SessionRecord, WireError> {
    serde_json::from_slice::<Record>(json)?.try_into()
}

pub(crate) fn member_from(json: &[u8]) -> Result<RemoteMember, WireError> {
    Ok(serde_json::from_slice::<Member>(json)?.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_keeps_its_frame_byte_for_byte_and_its_filter() {
        let delivery = Delivery {
            topic: Topic::Channel(ChannelName::parse("news").unwrap()),
            frame: Frame::text(r#"{"type":"x","n":"line\nbreak"}"#),
            from: Some(ConnId(7)),
            except: None,
            publication: true,
            filter: Filter { user: Some("alice".into()), ..Filter::default() },
        };
        let (node, remote) = decode(&encode("node-a", &Remote::Delivery(delivery.clone()))).unwrap();
        assert_eq!(&*node, "node-a");
        let Remote::Delivery(back) = remote else { panic!("a delivery") };
        assert_eq!((back.topic, back.frame.payload, back.from, back.filter), (delivery.topic, delivery.frame.payload, delivery.from, delivery.filter));
    }

    #[test]
    fn binary_frames_and_every_topic_survive() {
        for topic in [Topic::Session(SessionId::parse("a:b.c").unwrap()), Topic::User("u:1".into()), Topic::Connection(ConnId(1 << 40)), Topic::Everyone] {
            let delivery = Delivery { topic: topic.clone(), frame: Frame::binary(vec![0, 10, 255]), from: None, except: Some(ConnId(3)), publication: false, filter: Filter::default() };
            let Remote::Delivery(back) = decode(&encode("n", &Remote::Delivery(delivery))).unwrap().1 else { panic!() };
            assert_eq!((back.topic, back.frame.kind, &back.frame.payload[..]), (topic, switchyard_core::FrameKind::Binary, &[0u8, 10, 255][..]));
        }
    }

    #[test]
    fn a_numbered_publication_carries_its_place_in_the_stream() {
        let delivery = Delivery { topic: Topic::Session(SessionId::parse("s").unwrap()), frame: Frame::text("{}"), from: Some(ConnId(9)), except: None, publication: true, filter: Filter::default() };
        let mut message = b"#12 1700000000000 Ep0ch\n".to_vec();
        message.extend(encode("n", &Remote::Delivery(delivery)));
        assert!(is_numbered(&message));
        let (_, Remote::Numbered { epoch, offset, timestamp, delivery }) = decode_numbered(&message).unwrap() else { panic!("numbered") };
        assert_eq!((&*epoch, offset, timestamp, delivery.from), ("Ep0ch", 12, 1_700_000_000_000, Some(ConnId(9))));
        assert!(decode_numbered(b"#x 1 e\n").is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [&b""[..], b"{}", b"not json\n", b"{\"node\":\"n\",\"kind\":\"delivery\",\"topic\":\"s:\"}\n"] {
            assert!(decode(bad).is_err());
        }
    }
}
