//! Switchyard's relay engine: sessions, channels, requests, acknowledgements and control
//! roles, with no I/O.
//!
//! A transport (the Node bridge, the native tokio server, a test) hands each frame it
//! reads to [`Relay::receive`] together with the connection's id; the relay decides where
//! the frame goes and pushes the same bytes into each recipient's [`Outbox`]. Time is an
//! argument (`now`, milliseconds since the Unix epoch), never read from a clock, so expiry
//! and heartbeats are tested without sleeping.

#![warn(missing_docs)]

mod app_events;
mod awareness;
mod broker;
mod channels;
mod config;
mod envelope;
mod error;
mod event;
mod frame;
mod hooks;
mod ids;
mod lifetimes;
mod limiter;
mod limits;
mod memory_presence;
mod message;
mod outbox;
mod policies;
mod present_member;
mod protocol;
mod questions;
mod registry;
mod relay;
pub mod report;
mod requests;
mod roles;
pub mod schema;
mod session;
mod sessions;
mod stats;
mod streams;
mod timers;

pub mod testing;

pub use channels::ChannelName;
pub use config::{ChannelOptions, Config, ConfigError, TokenExpiry};
pub use policies::{AckPolicy, ConflictResolution, SlowConsumerPolicy};
pub use envelope::{Envelope, Malformed, MAX_NESTING};
pub use error::{close_code, ErrorCode, ConnectionRefusal, MessageRejection, SessionError};
pub use event::{ConnectionInfo, Event, EventSink, NoEvents};
pub use frame::{Frame, FrameKind};
pub use hooks::{Ask, Decides, Hooks, NoHooks, Question, Verdict};
pub use ids::{now, ConnId, Millis, SessionId};
pub use outbox::{refuses, Outbox, Pushed, Transport, STALL_GRACE_MS};
pub use protocol::server_message;
pub use broker::{Alone, AwarenessStep, ClusterLink, ClusterStatus, Delivery, Filter, History, MemoryStreams, Presence, Recovery, Remote, RemoteMember, Seams, SessionRecord, Streams, Topic};
pub use memory_presence::MemoryPresence;
pub use present_member::PresentMember;
pub use registry::{Identity, Route};
pub use relay::{PublishError, Received, Relay, Target};
pub use report::{ConfigReport, HostSettings, ProxyReport, StatsReport, WebhooksReport};
pub use session::{SessionInfo, SessionOptions};
pub use limits::{Rate, RateLimits};
pub use message::{AwarenessKind, AwarenessMessage, ClientMessage, ControlStep, JoinChannel, Role};
pub use streams::{HistoryConfig, Position, Publication, Resume};
pub use stats::{Health, HistogramSnapshot, Stats, FRAME_SIZES, RELAY_LATENCY_MICROS};
