//! Taking a socket from Node into the native runtime, and the runtime itself.

use bytes::Bytes;
use napi::bindgen_prelude::{JsObjectValue, Object, Unknown};
use napi::{Error, Result, Status};
use switchyard_server::deflate::CompressionConfig;
use switchyard_server::{handshake, Spawner};
use tokio::runtime::Runtime;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::respond_and_close;
use crate::js::call_method;
use crate::request::UpgradeRequest;

/// The tokio runtime native connections run on, started with the first of them.
pub struct NativeRuntime {
    driver: Option<Driver>,
    pub spawner: Spawner,
}

/// What runs the runtime's tasks.
enum Driver {
    /// A worker per CPU.
    Workers(Runtime),
    /// One CPU: a single-threaded runtime on a thread of its own, which stops when this
    /// is dropped. It serves many more messages a second than one worker of a
    /// multi-threaded runtime, and serves connections in turn, fairly.
    Thread(DropGuard),
}

impl NativeRuntime {
    /// `threads` workers, by default one per CPU this process may use (`taskset`
    /// narrows it).
    pub fn start(compression: Option<CompressionConfig>, threads: Option<usize>) -> std::io::Result<Self> {
        let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        if threads > 1 {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name("switchyard-io")
                .enable_all()
                .build()?;
            let spawner = Spawner::new(runtime.handle().clone(), compression);
            return Ok(Self { driver: Some(Driver::Workers(runtime)), spawner });
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let spawner = Spawner::new(runtime.handle().clone(), compression);
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        std::thread::Builder::new().name("switchyard-io".into()).spawn(move || {
            runtime.block_on(stopped.cancelled());
            runtime.shutdown_background();
        })?;
        Ok(Self { driver: Some(Driver::Thread(stop.drop_guard())), spawner })
    }

    /// Makes a tokio stream of a taken-over socket (it must be registered with this
    /// runtime's reactor).
    pub fn stream(&self, socket: std::net::TcpStream) -> std::io::Result<tokio::net::TcpStream> {
        let _entered = self.spawner.runtime.enter();
        socket.set_nonblocking(true)?;
        let stream = tokio::net::TcpStream::from_std(socket)?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

impl Drop for NativeRuntime {
    fn drop(&mut self) {
        // Dropping a runtime blocks until its tasks stop; the JS thread must not wait.
        match self.driver.take() {
            Some(Driver::Workers(runtime)) => runtime.shutdown_background(),
            // Its thread sees the stop, and ends the runtime there.
            Some(Driver::Thread(stop)) => drop(stop),
            None => {}
        }
    }
}

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
    let handle: Object = socket.get_named_property("_handle")?;
    call_method(&handle, "readStop")?;
    let fd: i32 = handle.get_named_property_unchecked("fd")?;
    if fd < 0 {
        return Err(Error::new(Status::InvalidArg, "The socket has no file descriptor (it is closed, or not a TCP socket)"));
    }
    let stream = duplicate(fd).map_err(|err| Error::new(Status::GenericFailure, format!("cannot take the socket over: {err}")))?;
    call_method(socket, "destroy")?;
    Ok(Takeover::Taken { stream, preface: handshake::switching_protocols(&accept, protocol, extensions), head })
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
