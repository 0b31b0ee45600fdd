//! Switchyard's relay engine: sessions, connections and message routing, with no I/O.
//!
//! A transport (the Node bridge, the native tokio server, a test) hands each frame it
//! reads to [`Relay::receive`] together with the connection's id; the relay decides where
//! the frame goes and pushes the same bytes into each recipient's [`Outbox`]. Time is an
//! argument (`now`, milliseconds since the Unix epoch), never read from a clock, so expiry
//! and heartbeats are tested without sleeping.

mod config;
mod envelope;
mod error;
mod event;
mod frame;
mod ids;
mod outbox;
mod protocol;
mod relay;
mod session;
mod stats;
pub mod testing;

pub use config::{Config, ConfigError, SlowConsumerPolicy};
pub use error::{close_code, ErrorCode, Refusal, SessionError};
pub use event::{ConnectionInfo, Event, EventSink, NoEvents};
pub use frame::{Frame, FrameKind};
pub use ids::{ConnId, Millis, SessionId};
pub use outbox::{Outbox, Pushed};
pub use protocol::server_message;
pub use relay::{Identity, Relay, Route};
pub use session::{SessionInfo, SessionOptions};
pub use stats::Stats;
