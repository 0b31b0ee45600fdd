//! Switchyard's browser client, built with wasm-bindgen into `@switchyard/client`:
//! `RelayClient`, a relay connection that survives bad networks, and
//! `FocusDeclarationProtocol`, the awareness client that warns when a user has more than
//! one case open.
//!
//! The connection's decisions (when to reconnect, what may wait, which answer belongs
//! to which request, how the HTTP fallback reads its event stream and batches its sends)
//! are plain Rust in [`backoff`], [`outgoing`], [`requests`] and [`eventstream`], tested
//! without a browser; the browser glue lives in `browser`, compiled for wasm32 only.

#![warn(missing_docs)]

pub mod backoff;
pub mod eventstream;
pub mod outgoing;
pub mod requests;

#[cfg(target_arch = "wasm32")]
mod browser;
