//! The npm launcher's life as the server's. `bin/switchyard.js` passes signals on, but a
//! launcher killed with SIGKILL passes nothing on, and the server it started would run on
//! as an orphan: keeping its port, and in a cluster renewing its lease, so that its
//! members never leave the others' presence. So the launcher gives the server the read
//! end of a pipe as a file descriptor named by `SWITCHYARD_LAUNCHER_FD` (and its own pid
//! in `SWITCHYARD_LAUNCHER_PID`); the pipe reaches end of file when the launcher is gone,
//! however it went, on every platform. On Linux the server also asks the kernel for a
//! signal when its parent dies (`PR_SET_PDEATHSIG`), which needs no thread to notice.
//!
//! Run directly, without those variables, the server watches nothing.

use std::future::pending;
use std::io::Read;

use tokio::sync::oneshot;
use tracing::warn;

const FD_VARIABLE: &str = "SWITCHYARD_LAUNCHER_FD";

/// The launcher's end of life: the pipe it handed over.
pub struct Launcher {
    pipe: std::fs::File,
}

/// Takes the launcher's pipe, if a launcher started this server: to be called first, while
/// the only descriptors open are those inherited, so that the number names the pipe and
/// not one this process opened since. An error says why there is none to watch.
pub fn claim() -> Result<Option<Launcher>, String> {
    let Ok(fd) = std::env::var(FD_VARIABLE) else { return Ok(None) };
    let number = fd.parse::<i32>().map_err(|_| format!("{FD_VARIABLE}={fd} is not a file descriptor"))?;
    pipe(number).map(|pipe| Some(Launcher { pipe })).ok_or_else(|| format!("{FD_VARIABLE}={fd} is not open"))
}

/// Resolves when the launcher is gone; never without one, or if it cannot be watched
/// (which is logged).
pub async fn gone(launcher: Option<Launcher>) {
    let Some(Launcher { pipe }) = launcher else { return pending().await };
    tokio::select! {
        () = parent_died() => {}
        () = pipe_closed(pipe) => {}
    }
}

/// Resolves at the end of the launcher's pipe; never if it cannot be read (logged).
async fn pipe_closed(mut pipe: std::fs::File) {
    let (closed, end) = oneshot::channel();
    let watcher = std::thread::Builder::new().name("launcher-watch".into()).spawn(move || {
        let mut scratch = [0u8; 64];
        loop {
            match pipe.read(&mut scratch) {
                Ok(0) => break,
                Ok(_) => {}
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => return warn!("cannot read the launcher's pipe ({err}): the server will not stop with its launcher"),
            }
        }
        let _ = closed.send(());
    });
    if let Err(err) = watcher {
        warn!("cannot watch the launcher's pipe ({err}): the server will not stop with its launcher");
    }
    if end.await.is_err() {
        pending::<()>().await;
    }
}

/// Resolves when the kernel says the parent died, or at once if it died while this was
/// being asked (one that died before sends nothing). Asked only of the launcher itself:
/// where something stands between them (a wrapper script as `SWITCHYARD_BINARY`), the
/// pipe alone tells. The signal is a real-time one of its own, so that a SIGTERM still
/// means someone sent SIGTERM, and it is handled before it is asked for, so that it never
/// finds the default action (exit).
#[cfg(target_os = "linux")]
async fn parent_died() {
    use tokio::signal::unix::{signal, SignalKind};
    let launcher = std::env::var("SWITCHYARD_LAUNCHER_PID").ok().and_then(|pid| pid.parse::<libc::pid_t>().ok());
    // SAFETY: getppid has no preconditions.
    let is_parent = || launcher == Some(unsafe { libc::getppid() });
    if !is_parent() {
        return pending().await;
    }
    let number = libc::SIGRTMIN();
    let mut died = match signal(SignalKind::from_raw(number)) {
        Ok(died) => died,
        Err(err) => {
            warn!("cannot handle signal {number} ({err}); the launcher's pipe alone tells of its end");
            return pending().await;
        }
    };
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and touches no memory of ours.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, number) } != 0 {
        warn!("PR_SET_PDEATHSIG failed ({}); the launcher's pipe alone tells of its end", std::io::Error::last_os_error());
        return pending().await;
    }
    if !is_parent() {
        return;
    }
    died.recv().await;
}

#[cfg(not(target_os = "linux"))]
async fn parent_died() {
    pending().await
}

#[cfg(unix)]
fn pipe(fd: i32) -> Option<std::fs::File> {
    use std::os::fd::FromRawFd;
    // SAFETY: fcntl(F_GETFD) only asks whether `fd` is open.
    if fd < 3 || unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return None;
    }
    // SAFETY: the launcher opened `fd` for this process alone, and nothing else here owns it.
    Some(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// Node's launcher hands the pipe over as a C runtime descriptor (libuv fills the table
/// that the C runtime reads at start), whose Windows handle the runtime gives back. The
/// runtime's own entry for it is never used again, so the file owns the handle.
#[cfg(windows)]
fn pipe(fd: i32) -> Option<std::fs::File> {
    use std::os::windows::io::{FromRawHandle, RawHandle};
    if fd < 3 {
        return None;
    }
    // SAFETY: only the launcher sets the variable, and it opens `fd` in this process; a
    // descriptor that is not open would reach the C runtime's invalid-parameter handler.
    let handle = unsafe { libc::get_osfhandle(fd) };
    if handle == -1 {
        return None;
    }
    // SAFETY: the launcher opened the handle for this process alone, and nothing else here owns it.
    Some(unsafe { std::fs::File::from_raw_handle(handle as RawHandle) })
}
