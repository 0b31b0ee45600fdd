//! Switchyard's native transport: WebSocket connections owned by Rust on a tokio runtime,
//! feeding a [`switchyard_core::Relay`].
//!
//! [`handshake`] answers the upgrade request, [`Spawner::spawn`] lets the connection into
//! the relay and starts its task, which decodes frames with [`codec`] and drains a
//! bounded [`NativeOutbox`]. The same pieces serve the `switchyard` binary
//! (behind hyper), sockets the Node addon takes over from Node's HTTP server, and the
//! addon's own port ([`listener`], which takes the upgrades a [`path_pattern`] matches);
//! [`waiting`] bounds the connections still in their handshake, and [`deflate`] is their
//! permessage-deflate. [`engine`] is what the binary and the addon both run around a
//! relay: its runtime, its cluster, and admission. A host that runs sockets on an event
//! loop of its own (the addon's bridge) takes the relay's output from a [`host_queue`]
//! and its frames from each [`bridge_outbox`]; [`hooks`] is what it puts in front of the app's hooks.
//! [`event_stream`] is the other way in, for networks that refuse the upgrade: members on a
//! Server-Sent Events stream who send with POST.

#![warn(missing_docs)]

pub mod admission;
pub mod auth;
pub mod bridge_outbox;
pub mod codec;
#[cfg(not(target_family = "wasm"))]
mod connection;
pub mod deflate;
pub mod engine;
pub mod event_stream;
pub mod handshake;
pub mod hooks;
pub mod host_queue;
#[cfg(not(target_family = "wasm"))]
pub mod listener;
pub mod metrics;
#[cfg(not(target_family = "wasm"))]
pub mod native_runtime;
pub mod options;
mod outbox;
pub mod path_pattern;
#[cfg(not(target_family = "wasm"))]
pub mod proxy;
#[cfg(not(target_family = "wasm"))]
pub mod relay_port;
pub mod settings;
#[cfg(not(target_family = "wasm"))]
pub mod socket;
#[cfg(not(target_family = "wasm"))]
pub mod tls;
pub mod waiting;
#[cfg(not(target_family = "wasm"))]
pub mod webhooks;

#[cfg(not(target_family = "wasm"))]
pub use connection::{Accepted, Spawner, CLOSE_TIMEOUT};
pub use outbox::{LatencySample, NativeOutbox};
pub use switchyard_core::now;
