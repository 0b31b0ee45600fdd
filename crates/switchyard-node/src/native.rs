//! The native transport from Node: a socket from an HTTP server's `upgrade` event is
//! taken from Node and handed to the Rust transport, so its messages never enter the JS
//! thread.
//!
//! The takeover is synchronous, inside the caller's `upgrade` handler: libuv stops
//! reading (`_handle.readStop()`), Rust duplicates the file descriptor, and
//! `socket.destroy()` closes only Node's descriptor (no FIN goes out; `end()` would send
//! one). The request was parsed by Node; Rust checks its handshake headers and answers
//! `101` itself, or `400` through Node before letting go.
//!
//! [`takeover`] is the transport's side; a port of the relay's own (`listen()`, a
//! [`switchyard_server::relay_port`]) asks the app's `authenticate` through
//! [`authenticator`]. Only Unix descriptors can be taken over:
//! elsewhere (Windows, the WebAssembly build) [`available`] refuses the native transport
//! with an error that names bridge mode.

#[cfg(not(target_family = "wasm"))]
mod authenticator;
#[cfg(not(target_family = "wasm"))]
mod takeover;

use napi::bindgen_prelude::{Buffer, FnArgs, Function, JsObjectValue, Object, Unknown};
use napi::{Error, Result, Status, ValueType};

#[cfg(not(target_family = "wasm"))]
pub use authenticator::Authenticator;
#[cfg(not(target_family = "wasm"))]
pub use takeover::{take_over, take_socket, Takeover};

/// Whether this build can take sockets from Node; what `attach` and a native
/// `handleUpgrade` throw where it cannot.
pub fn available() -> Result<()> {
    let unavailable = if cfg!(target_family = "wasm") {
        "in the WebAssembly build of switchyard (a wasm module cannot be handed a socket)"
    } else if cfg!(unix) {
        return Ok(());
    } else {
        "on this platform (Node cannot hand a socket's descriptor over outside Unix)"
    };
    Err(Error::new(
        Status::GenericFailure,
        format!(
            "The native transport is not available {unavailable}: use bridge mode, accepting the upgrade \
             with ws and passing its WebSocket to handleUpgrade"
        ),
    ))
}

/// Whether `value` is a `net.Socket` whose descriptor can be taken: it has a libuv
/// handle with a file descriptor.
pub fn is_net_socket(value: &Unknown) -> bool {
    if value.get_type().ok() != Some(ValueType::Object) {
        return false;
    }
    // SAFETY: an object, checked above.
    let Ok(object) = (unsafe { value.cast::<Object>() }) else { return false };
    let handle_fd = object
        .get_named_property_unchecked::<Unknown>("_handle")
        .ok()
        .filter(|h| h.get_type().ok() == Some(ValueType::Object))
        // SAFETY: an object, checked by the filter.
        .and_then(|h| unsafe { h.cast::<Object>() }.ok())
        .and_then(|h| h.get_named_property_unchecked::<Unknown>("fd").ok())
        .and_then(|fd| fd.get_type().ok());
    handle_fd == Some(ValueType::Number)
}

/// Ends a socket Node still owns with a whole HTTP response, then destroys it once the
/// response is flushed: `end()` alone half-closes, and a client that never closes its side
/// would hold the socket (and `server.close()`) open for ever.
pub fn respond_and_close(socket: &Object, response: Vec<u8>) -> Result<()> {
    let destroy: Unknown = socket.get_named_property_unchecked("destroy")?;
    let once: Function<FnArgs<(String, Unknown)>, Unknown> = socket.get_named_property_unchecked("once")?;
    once.bind(socket)?.call(("finish".to_owned(), destroy).into())?;
    let end: Function<FnArgs<(Buffer,)>, Unknown> = socket.get_named_property_unchecked("end")?;
    end.bind(socket)?.call((Buffer::from(response),).into())?;
    Ok(())
}
