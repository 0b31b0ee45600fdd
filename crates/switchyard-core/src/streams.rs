//! Streams: a session's last publications, each at a position (an epoch naming the
//! stream's life, and an offset counting its publications), kept so that a client that
//! reconnects receives what it missed, and so that HTTP clients can read them.
//!
//! Recovery is all or nothing: a stream either holds every publication after a position,
//! or the client is told it lost some. Memory is bounded three ways: publications per
//! stream, their age, and the bytes of every stream of a relay together ([`Budget`]).

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rand::distr::{Alphanumeric, SampleString};
use serde::Serialize;

use crate::frame::{Frame, FrameKind};
use crate::ids::Millis;

/// How much of a stream to keep: `size` publications at most, each `ttl_ms` at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryConfig {
    /// Most publications kept, 1 to [`HistoryConfig::MAX_SIZE`]; the oldest go first.
    pub size: usize,
    /// How long a publication is kept, in milliseconds.
    pub ttl_ms: u64,
}

impl HistoryConfig {
    /// The most publications one stream may keep.
    pub const MAX_SIZE: usize = 100_000;

    /// Checks the bounds, or says which is out of range.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=Self::MAX_SIZE).contains(&self.size) {
            return Err(format!("history.size must be 1 to {}", Self::MAX_SIZE));
        }
        if self.ttl_ms == 0 {
            return Err("history.ttlMs must be at least 1".into());
        }
        Ok(())
    }
}

/// A place in a stream: after the publication numbered `offset` (0: before the first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    /// Names the stream's life: a stream begun again has another epoch.
    pub epoch: Arc<str>,
    /// How many publications of the epoch it is after.
    pub offset: u64,
}

impl Position {
    /// Reads `<epoch>:<offset>`, as clients send it in `since`.
    pub fn parse(text: &str) -> Option<Position> {
        let (epoch, offset) = text.rsplit_once(':')?;
        if epoch.is_empty() || epoch.len() > 64 {
            return None;
        }
        Some(Position { epoch: epoch.into(), offset: offset.parse().ok()? })
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch, self.offset)
    }
}

/// What a connection asks of its session's stream, in the query of its upgrade URL:
/// `positions=1`, `since=<epoch>:<offset>`, `previous=<its previous connectionId>` (either
/// of the last two implies the first). `previous` may list several ids, comma-separated:
/// every connection the client had since the last publication it saw, so that none of
/// what it published through them comes back to it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resume {
    /// `positions`: publications come with their stream positions.
    pub positions: bool,
    /// `since`: replay what was published after this position.
    pub since: Option<Position>,
    /// `previous`: the client's earlier connection ids, at most [`Resume::MAX_PREVIOUS`].
    pub previous: Vec<String>,
}

impl Resume {
    /// The most connection ids `previous` may name.
    pub const MAX_PREVIOUS: usize = 16;

    /// Whether a publication from `from` was the client's own, through a connection it
    /// named as `previous`: a replay leaves those out.
    pub fn published(&self, from: &str) -> bool {
        self.previous.iter().any(|previous| previous == from)
    }
}

impl Resume {
    /// Reads the query of a request target (`/session/x?positions=1`); parameters it does
    /// not know, and values it cannot read, are left alone.
    pub fn from_url(url: &str) -> Resume {
        let mut resume = Resume::default();
        let Some((_, query)) = url.split_once('?') else { return resume };
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
            match key {
                "positions" => resume.positions |= matches!(&*value, "1" | "true"),
                "since" => resume.since = Position::parse(&value),
                "previous" => {
                    let ids = value.split(',').filter(|id| !id.is_empty() && id.len() <= 64);
                    resume.previous = ids.take(Self::MAX_PREVIOUS).map(str::to_owned).collect();
                }
                _ => {}
            }
        }
        resume.positions |= resume.since.is_some() || !resume.previous.is_empty();
        resume
    }
}

/// One publication, as kept.
#[derive(Clone, Debug, PartialEq)]
pub struct Publication {
    /// Its number in the stream: the first of an epoch is 1.
    pub offset: u64,
    /// The publisher's connection id, or `"server"`.
    pub from: Arc<str>,
    /// When it was published.
    pub timestamp: Millis,
    /// The message as it was published.
    pub frame: Frame,
}

/// As the app reads it (the addon's `PublicationData`): `offset`, `from`, `timestamp`,
/// and a text message parsed as `data` or a binary one's bytes as `binary` (a `Buffer` in
/// JavaScript, whose serializer makes one of bytes). Its whole numbers go as `i64`: that
/// serializer makes a `BigInt` of a `u64` past 2^32, and a timestamp is one.
impl Serialize for Publication {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        struct AsBytes<'a>(&'a [u8]);
        impl Serialize for AsBytes<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_bytes(self.0)
            }
        }
        let mut publication = serializer.serialize_struct("Publication", 4)?;
        publication.serialize_field("offset", &(self.offset as i64))?;
        publication.serialize_field("from", &*self.from)?;
        publication.serialize_field("timestamp", &(self.timestamp as i64))?;
        match self.frame.kind {
            FrameKind::Binary => publication.serialize_field("binary", &AsBytes(&self.frame.payload))?,
            FrameKind::Text | FrameKind::Ping => match serde_json::from_slice::<serde_json::Value>(&self.frame.payload) {
                Ok(data) => publication.serialize_field("data", &data)?,
                Err(_) => publication.skip_field("data")?,
            },
        }
        publication.end()
    }
}

impl Publication {
    /// The frame a connection with positions receives: a text message wrapped as
    /// `{"type":"publication","offset":N,"from":"...","data":<the message>}` (with the
    /// `channel` for a channel's), a binary one behind its offset in 8 bytes, big-endian.
    /// Built once per publication.
    pub fn wrapped(&self, channel: Option<&str>) -> Frame {
        match self.frame.kind {
            FrameKind::Binary => {
                let mut bytes = Vec::with_capacity(8 + self.frame.len());
                bytes.extend_from_slice(&self.offset.to_be_bytes());
                bytes.extend_from_slice(&self.frame.payload);
                Frame::binary(bytes)
            }
            FrameKind::Text | FrameKind::Ping => {
                let from = serde_json::to_string(&*self.from).expect("a string serializes");
                let channel = channel.map(|c| format!(r#""channel":{},"#, serde_json::to_string(c).expect("a string serializes")));
                let mut text = Vec::with_capacity(96 + self.frame.len());
                let head = format!(r#"{{"type":"publication",{}"offset":{},"from":{from},"data":"#, channel.unwrap_or_default(), self.offset);
                text.extend_from_slice(head.as_bytes());
                text.extend_from_slice(&self.frame.payload);
                text.push(b'}');
                Frame::text(text)
            }
        }
    }
}

/// The bytes every stream of a relay may keep together.
pub struct Budget {
    used: AtomicUsize,
    cap: usize,
}

impl Budget {
    pub fn new(cap: usize) -> Self {
        Self { used: AtomicUsize::new(0), cap }
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| used.checked_add(bytes).filter(|&total| total <= self.cap))
            .is_ok()
    }

    fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }
}

fn new_epoch() -> Arc<str> {
    Alphanumeric.sample_string(&mut rand::rng(), 8).into()
}

pub struct Stream {
    epoch: Arc<str>,
    config: HistoryConfig,
    /// The offset of the latest publication; 0 before the first.
    last: u64,
    kept: VecDeque<Publication>,
    bytes: usize,
    budget: Arc<Budget>,
    /// Whether this node numbers its publications. In a cluster the shared broker does,
    /// and the stream here is a copy: if this node must number one itself (its Redis
    /// unreachable), it starts a new epoch of its own, so that no position is ever read
    /// in the wrong stream.
    numbered_here: bool,
}

/// What one kept publication costs: its bytes and its bookkeeping.
fn cost(publication: &Publication) -> usize {
    publication.frame.len() + publication.from.len() + std::mem::size_of::<Publication>()
}

impl Stream {
    pub fn new(config: HistoryConfig, budget: Arc<Budget>) -> Self {
        Self { epoch: new_epoch(), config, last: 0, kept: VecDeque::new(), bytes: 0, budget, numbered_here: true }
    }

    fn clear(&mut self) {
        while self.drop_oldest() {}
    }

    pub fn config(&self) -> HistoryConfig {
        self.config
    }

    pub fn position(&self) -> Position {
        Position { epoch: self.epoch.clone(), offset: self.last }
    }

    /// Numbers a publication and keeps it. When the relay's budget has no room for it even
    /// with none of this stream's older ones kept, it goes unkept: nothing up to it can be
    /// recovered then, which [`Stream::since`] says.
    pub fn append(&mut self, from: Arc<str>, frame: Frame, now: Millis) -> Publication {
        if !self.numbered_here {
            self.clear();
            self.epoch = new_epoch();
            self.last = 0;
            self.numbered_here = true;
        }
        self.last += 1;
        let publication = Publication { offset: self.last, from, timestamp: now, frame };
        self.store(publication.clone(), now);
        publication
    }

    /// Keeps a publication the cluster's broker numbered. Right after the latest it
    /// extends the stream; after a gap (or in another epoch) the stream starts again at
    /// it, as nothing before it can be recovered here; one already kept is ignored.
    pub fn keep(&mut self, epoch: &Arc<str>, publication: Publication, now: Millis) {
        if !self.numbered_here && *epoch == self.epoch && publication.offset <= self.last {
            return;
        }
        if self.numbered_here || *epoch != self.epoch || publication.offset != self.last + 1 {
            self.clear();
            self.epoch = epoch.clone();
            self.numbered_here = false;
        }
        self.last = publication.offset;
        self.store(publication, now);
    }

    /// Becomes a copy of the cluster broker's stream: `epoch`, its latest offset, and
    /// the publications it keeps, oldest first.
    pub fn load(&mut self, epoch: Arc<str>, last: u64, publications: Vec<Publication>, now: Millis) {
        self.clear();
        self.epoch = epoch;
        self.last = last;
        self.numbered_here = false;
        for publication in publications.into_iter().filter(|p| p.offset <= last) {
            self.store(publication, now);
        }
    }

    /// Keeps a numbered publication, within the stream's size and the relay's budget.
    fn store(&mut self, publication: Publication, now: Millis) {
        self.expire(now);
        while self.kept.len() >= self.config.size {
            self.drop_oldest();
        }
        let needed = cost(&publication);
        loop {
            if self.budget.take(needed) {
                self.bytes += needed;
                self.kept.push_back(publication.clone());
                break;
            }
            if !self.drop_oldest() {
                break;
            }
        }
    }

    fn drop_oldest(&mut self) -> bool {
        let Some(oldest) = self.kept.pop_front() else { return false };
        let freed = cost(&oldest);
        self.bytes -= freed;
        self.budget.give_back(freed);
        true
    }

    /// Lets go of publications older than the history's time to live.
    pub fn expire(&mut self, now: Millis) {
        while self.kept.front().is_some_and(|p| p.timestamp.saturating_add(self.config.ttl_ms) <= now) {
            self.drop_oldest();
        }
    }

    /// Whether every publication it kept has expired (or it never kept one).
    pub fn holds_nothing(&mut self, now: Millis) -> bool {
        self.expire(now);
        self.kept.is_empty()
    }

    /// Whether the stream still holds every publication after `position`: same epoch,
    /// not from the future, and nothing after it let go.
    pub fn holds_after(&mut self, position: &Position, now: Millis) -> bool {
        self.expire(now);
        let first_kept = self.kept.front().map_or(self.last + 1, |p| p.offset);
        position.epoch == self.epoch && position.offset <= self.last && position.offset + 1 >= first_kept
    }

    /// Up to `limit` publications after `offset`, oldest first, for reading over HTTP.
    pub fn read(&mut self, after: u64, limit: usize, now: Millis) -> Vec<Publication> {
        self.expire(now);
        self.kept.iter().filter(|p| p.offset > after).take(limit).cloned().collect()
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(size: usize, ttl_ms: u64, cap: usize) -> (Stream, Arc<Budget>) {
        let budget = Arc::new(Budget::new(cap));
        (Stream::new(HistoryConfig { size, ttl_ms }, budget.clone()), budget)
    }

    /// What a reconnect from `position` would get: the offsets after it, or `None`.
    fn offsets(stream: &mut Stream, position: &Position, now: Millis) -> Option<Vec<u64>> {
        stream.holds_after(position, now).then(|| stream.read(position.offset, usize::MAX, now).iter().map(|p| p.offset).collect())
    }

    #[test]
    fn recovers_everything_after_a_position_or_nothing() {
        let (mut s, _) = stream(3, 1_000, 1 << 20);
        let start = s.position();
        assert_eq!(start.offset, 0);
        for i in 1..=5 {
            assert_eq!(s.append("c_1".into(), Frame::text(format!(r#"{{"type":"m","i":{i}}}"#)), 10).offset, i);
        }
        assert_eq!(offsets(&mut s, &Position { epoch: start.epoch.clone(), offset: 2 }, 10), Some(vec![3, 4, 5]));
        assert_eq!(offsets(&mut s, &Position { epoch: start.epoch.clone(), offset: 5 }, 10), Some(vec![]));
        assert_eq!(offsets(&mut s, &Position { epoch: start.epoch.clone(), offset: 1 }, 10), None, "2 is gone");
        assert_eq!(offsets(&mut s, &Position { epoch: start.epoch.clone(), offset: 6 }, 10), None, "from the future");
        assert_eq!(offsets(&mut s, &Position { epoch: "other".into(), offset: 4 }, 10), None, "another epoch");
        assert_eq!(offsets(&mut s, &Position { epoch: start.epoch, offset: 4 }, 1_010), None, "all expired");
    }

    #[test]
    fn a_copy_of_a_cluster_stream_keeps_what_arrives_in_order_and_starts_again_after_a_gap() {
        let (mut s, _) = stream(10, 1_000, 1 << 20);
        let epoch: Arc<str> = "remote".into();
        let publication = |offset| Publication { offset, from: "c_1".into(), timestamp: 10, frame: Frame::text("{}") };
        s.load(epoch.clone(), 3, vec![publication(2), publication(3)], 10);
        s.keep(&epoch, publication(4), 10);
        s.keep(&epoch, publication(3), 10);
        let at = |offset| Position { epoch: epoch.clone(), offset };
        assert_eq!(offsets(&mut s, &at(1), 10), Some(vec![2, 3, 4]), "loaded, then kept, the duplicate ignored");
        s.keep(&epoch, publication(7), 10);
        assert_eq!(offsets(&mut s, &at(4), 10), None, "5 and 6 never came");
        assert_eq!(offsets(&mut s, &at(6), 10), Some(vec![7]));
        let local = s.append("c_2".into(), Frame::text("{}"), 10);
        assert_ne!(s.position().epoch, epoch, "numbered here, it is another stream");
        assert_eq!((local.offset, offsets(&mut s, &at(6), 10)), (1, None));
    }

    #[test]
    fn the_relay_budget_bounds_every_stream_together() {
        let budget = Arc::new(Budget::new(3 * (100 + 3 + std::mem::size_of::<Publication>())));
        let config = HistoryConfig { size: 100, ttl_ms: 60_000 };
        let (mut a, mut b) = (Stream::new(config, budget.clone()), Stream::new(config, budget.clone()));
        let message = || Frame::text(vec![b'x'; 100]);
        for _ in 0..3 {
            a.append("c_1".into(), message(), 0);
        }
        b.append("c_2".into(), message(), 0);
        let epoch = b.position().epoch;
        assert_eq!(offsets(&mut b, &Position { epoch: epoch.clone(), offset: 0 }, 0), None, "b could not keep its first (a holds the budget): from before it, all is lost");
        assert_eq!(offsets(&mut b, &Position { epoch, offset: 1 }, 0), Some(vec![]));
        a.append("c_1".into(), message(), 0);
        assert_eq!(budget.used(), budget.cap, "a makes room by letting its oldest go");
        drop(a);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn wraps_text_and_binary_publications() {
        let publication = Publication { offset: 7, from: "c_5".into(), timestamp: 0, frame: Frame::text(r#"{"type":"x"}"#) };
        assert_eq!(&publication.wrapped(None).payload[..], br#"{"type":"publication","offset":7,"from":"c_5","data":{"type":"x"}}"#);
        assert_eq!(&publication.wrapped(Some("news")).payload[..], br#"{"type":"publication","channel":"news","offset":7,"from":"c_5","data":{"type":"x"}}"#);
        let binary = Publication { frame: Frame::binary(vec![1, 2]), ..publication };
        assert_eq!(&binary.wrapped(None).payload[..], &[0, 0, 0, 0, 0, 0, 0, 7, 1, 2]);
    }

    #[test]
    fn reads_what_a_reconnect_asks_for_from_its_url() {
        assert_eq!(Resume::from_url("/session/s"), Resume::default());
        assert!(Resume::from_url("/session/s?positions=1&token=x").positions);
        let resume = Resume::from_url("/session/s?since=Ab12%3A40&previous=c_7");
        assert_eq!(resume, Resume { positions: true, since: Some(Position { epoch: "Ab12".into(), offset: 40 }), previous: vec!["c_7".into()] });
        assert_eq!(Resume::from_url("/s?previous=c_7%2Cc_9,").previous, ["c_7", "c_9"]);
        assert_eq!(Resume::from_url("/s?since=garbage&positions=0"), Resume::default());
    }

    #[test]
    fn reads_positions_as_clients_write_them() {
        assert_eq!(Position::parse("aB3:17"), Some(Position { epoch: "aB3".into(), offset: 17 }));
        assert_eq!(Position::parse("a:b:2").map(|p| p.to_string()), Some("a:b:2".into()));
        for bad in ["", ":3", "abc", "abc:", "abc:-1", "abc:x"] {
            assert_eq!(Position::parse(bad), None, "{bad:?}");
        }
    }
}
