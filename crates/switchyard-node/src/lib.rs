//! The `switchyard` Node.js addon: `RelaySessionManager` over the Switchyard core, and only
//! what is about JavaScript (what every host runs around a relay is `switchyard_server`'s).
//!
//! JavaScript calls land in `manager`, which drives a [`switchyard_core::Relay`] held by
//! `host`. The bridge transport (`bridge`) moves frames between the relay and `ws`
//! sockets on the JS thread; the native transport (`native`, `attach`) hands sockets
//! taken from Node to `switchyard_server` on its own threads. `options` reads the
//! arguments of each call. No Rust panic crosses into Node: every entry point runs under
//! `guard`, which turns a panic into a thrown `Error`.

mod attach;
mod authentication;
mod bridge;
mod events;
mod hooks;
mod persistent_object;
mod host;
mod js;
mod js_types;
mod manager;
mod native;
mod options;
mod request;

use std::panic::{catch_unwind, AssertUnwindSafe};

/// What the relay allocates, as in the `switchyard` binary: a connection's small,
/// long-lived allocations without glibc's overhead for each (Node's own heap is its own).
#[cfg(not(target_family = "wasm"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Runs `body`, turning a panic into an error JavaScript receives as an exception.
pub(crate) fn guard<T>(body: impl FnOnce() -> napi::Result<T>) -> napi::Result<T> {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|panic| {
        let detail = napi::bindgen_prelude::panic_to_error(panic).reason;
        Err(napi::Error::new(napi::Status::GenericFailure, format!("switchyard internal error: {detail}")))
    })
}

