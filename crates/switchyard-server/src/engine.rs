//! The embedding runtime: what the `switchyard` binary and the Node addon both run around
//! a relay. It builds the relay, alone or as a node of a Redis cluster; lets a native
//! connection in, to a session in a cluster only once this node holds one of the
//! session's places; and leaves the cluster when the host stops. Native connections run
//! on a [`NativeRuntime`](crate::native_runtime::NativeRuntime). The WebAssembly build has
//! neither clusters nor native connections: there an engine is its relay alone.

use std::sync::Arc;

use switchyard_core::{Config, EventSink, Hooks, Relay, Seams};

use crate::event_stream::SendTokens;
#[cfg(not(target_family = "wasm"))]
pub use cluster::Held;
#[cfg(not(target_family = "wasm"))]
use switchyard_redis::RedisBroker;

/// A relay and, with `redis` configured, its link to the cluster's other nodes.
pub struct Engine {
    /// The relay, shared with the connections' tasks.
    pub relay: Arc<Relay>,
    /// The link to the cluster's other nodes through Redis; `None` for a node alone.
    #[cfg(not(target_family = "wasm"))]
    pub cluster: Option<Arc<RedisBroker>>,
    /// The send tokens of the event-stream members open on this node.
    pub send_tokens: SendTokens,
}

impl Engine {
    /// A node by itself, whose app decides through `hooks`. `config` must have passed
    /// [`Config::validate`].
    pub fn alone(config: Config, events: Arc<dyn EventSink>, hooks: Arc<dyn Hooks>) -> Self {
        let seams = Seams { hooks, ..Seams::alone(config.history_max_bytes) };
        Self {
            relay: Arc::new(Relay::with_seams(config, events, seams)),
            #[cfg(not(target_family = "wasm"))]
            cluster: None,
            send_tokens: SendTokens::default(),
        }
    }
}

#[cfg(not(target_family = "wasm"))]
mod cluster;
