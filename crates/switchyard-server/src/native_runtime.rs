//! The tokio runtime native connections run on, for the binary and the addon alike: a
//! worker per CPU, or, on one CPU, a single-threaded runtime on a thread of its own.

use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::deflate::CompressionConfig;
use crate::Spawner;

/// The tokio runtime native connections run on.
pub struct NativeRuntime {
    driver: Option<Driver>,
    /// Starts native connections on this runtime.
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

    /// Makes a tokio stream of a socket accepted elsewhere (it must be registered with
    /// this runtime's reactor).
    pub fn stream(&self, socket: std::net::TcpStream) -> std::io::Result<TcpStream> {
        let _entered = self.spawner.runtime.enter();
        socket.set_nonblocking(true)?;
        let stream = TcpStream::from_std(socket)?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

impl Drop for NativeRuntime {
    fn drop(&mut self) {
        // Dropping a runtime blocks until its tasks stop; a host's thread must not wait.
        match self.driver.take() {
            Some(Driver::Workers(runtime)) => runtime.shutdown_background(),
            // Its thread sees the stop, and ends the runtime there.
            Some(Driver::Thread(stop)) => drop(stop),
            None => {}
        }
    }
}
