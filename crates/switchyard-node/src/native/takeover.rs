//! Taking a socket from Node into the native runtime.

use bytes::Bytes;
use napi::bindgen_prelude::{JsObjectValue, Object, Unknown};
use napi::{Error, Result, Status};
use switchyard_server::handshake;

use super::respond_and_close;
use crate::js::call_method;
use crate::request::UpgradeRequest;

/// How a takeover went.
pub enum Takeover {
    /// The socket is Rust's now; the `101` answer (`preface`) is still to be written.
    Taken { stream: std::net::TcpStream, preface: Vec<u8>, head: Bytes },
    /// The handshake was refused with 400 and Node closes the socket.
    BadHandshake,
}

/// Checks the handshake and takes the socket from Node. A TLS socket is refused with an
/// error: Rust would write plaintext into it.
pub fn take_over(socket: &Object, request: &UpgradeRequest, head: Bytes, protocol: Option<&str>, extensions: Option<&str>) -> Result<Takeover> {
    let encrypted: Option<bool> = socket.get_named_property_unchecked::<Unknown>("encrypted").ok().and_then(|e| unsafe { e.cast().ok() });
    if encrypted == Some(true) {
        return Err(Error::new(
            Status::InvalidArg,
            "A TLS socket cannot be taken over by the native transport: use bridge mode (accept the \
             upgrade with ws and pass its WebSocket to handleUpgrade), or terminate TLS at a proxy",
        ));
    }
    let accept = match handshake::accept(&request.method, |name| request.header(name)) {
        Ok(accept) => accept,
        Err(error) => {
            respond_and_close(socket, handshake::bad_request(&error))?;
            return Ok(Takeover::BadHandshake);
        }
    };
    let stream = take_socket(socket)?;
    Ok(Takeover::Taken { stream, preface: handshake::switching_protocols(&accept, protocol, extensions), head })
}

/// Takes a plain TCP socket from Node: libuv stops reading it, Rust keeps a descriptor of
/// its own, and Node's is closed without a FIN.
pub fn take_socket(socket: &Object) -> Result<std::net::TcpStream> {
    let handle: Object = socket.get_named_property("_handle")?;
    call_method(&handle, "readStop")?;
    let fd: i32 = handle.get_named_property_unchecked("fd")?;
    if fd < 0 {
        return Err(Error::new(Status::InvalidArg, "The socket has no file descriptor (it is closed, or not a TCP socket)"));
    }
    let stream = duplicate(fd).map_err(|err| Error::new(Status::GenericFailure, format!("cannot take the socket over: {err}")))?;
    call_method(socket, "destroy")?;
    Ok(stream)
}

/// A descriptor of our own for the socket behind Node's `fd`.
#[cfg(unix)]
fn duplicate(fd: i32) -> std::io::Result<std::net::TcpStream> {
    use std::os::fd::BorrowedFd;
    // SAFETY: Node owns `fd` and keeps it open until the caller destroys its socket; the
    // duplicate is ours.
    Ok(unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()?.into())
}

/// Never reached: [`super::available`] refuses the native transport first.
#[cfg(not(unix))]
fn duplicate(_fd: i32) -> std::io::Result<std::net::TcpStream> {
    Err(std::io::ErrorKind::Unsupported.into())
}
