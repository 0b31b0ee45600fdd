//! Accepts TCP connections for the HTTP server, each holding a place among the
//! [`Waiting`] until it becomes a WebSocket or closes, and sending its request head within
//! the deadline and in at most [`MAX_HEAD_BYTES`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use switchyard_server::waiting::{Waiting, MAX_HEAD_BYTES};
use tower_service::Service;
use tracing::debug;

/// Serves `router` on `listener` until `stop` resolves, each request carrying the peer's
/// `ConnectInfo`. `refused` is called for each connection closed for a cap.
pub async fn serve(listener: TcpListener, router: Router, waiting: Arc<Waiting>, refused: impl Fn(), stop: impl std::future::Future) {
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of file descriptors, or a connection reset before it was accepted:
                // what is open goes on, and the next accept may succeed.
                Err(err) => {
                    debug!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = &mut stop => return,
        };
        let Some(slot) = waiting.admit(peer.ip()) else {
            debug!(%peer, "too many connections waiting for their handshake; closed");
            refused();
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            // The service lives as long as the HTTP connection, and the slot with it.
            let _held = &slot;
            request.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            let mut router = router.clone();
            // A Router is always ready: `call` needs no `poll_ready` first.
            async move { router.call(request.map(axum::body::Body::new)).await }
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(waiting.limits().deadline)
            .max_buf_size(MAX_HEAD_BYTES)
            .serve_connection(TokioIo::new(tcp), service)
            .with_upgrades();
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                debug!(%peer, %err, "HTTP connection ended");
            }
        });
    }
}
